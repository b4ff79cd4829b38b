//! `ovl fetch`: the boot files a site serves but does not build, put at its root where the
//! boot script and the DHCP server name them.
//!
//! - Alpine's kernel, initramfs and modloop of `[alpine] flavor`, taken from the release's
//!   netboot tarball: `MIRROR/VERSION/releases/ARCH/latest-releases.yaml` (`release.rs`) names
//!   it and its SHA-256; the tarball is downloaded into `.ovl-tmp/fetch/NAME.part` (resumed
//!   with HTTP `Range` after a lost connection, in the same run or the next), checked against
//!   that SHA-256, and only then are the three files taken out (`extract.rs`) and renamed into
//!   place, so a kernel is never half-written at its final name.
//! - The iPXE binaries of `[fetch] ipxe_files`, copied from the system's iPXE package
//!   (`[fetch] ipxe_dir`, Debian's `/usr/lib/ipxe`) for x86, else downloaded from
//!   `[fetch] ipxe_url` (`ipxe.rs`).
//!
//! What was placed is recorded in `.ovl-state/fetch.json` (`state.rs`); a run whose release
//! index still names the same tarball, and whose files still hash as recorded, downloads
//! nothing but the index. [`boot_files()`] lists the files a site needs, for `ovl check` and
//! the server's `/status`.

pub mod boot_files;
mod extract;
mod http;
mod ipxe;
mod release;
mod state;

use std::fs::File;
use std::path::PathBuf;

use serde::Serialize;

pub use boot_files::{BootFile, BootFileProblem, BootRole, boot_files};

use crate::build::publish::Published;
use crate::error::{Error, IoContext, Result};
use crate::fetch::extract::Members;
use crate::fetch::http::{Client, Limit, remote};
use crate::fetch::state::{FetchState, NetbootRecord};
use crate::site::Site;

/// The largest release index accepted.
const MAX_INDEX: u64 = 1 << 20;
/// The largest netboot tarball accepted (x86_64's is about 300 MB).
const MAX_TARBALL: u64 = 4 << 30;
/// The folder of `.ovl-tmp/` holding partial downloads and the lock.
const FETCH_TMP: &str = "fetch";

/// What `ovl fetch` is asked for, with the command line's overrides applied.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Alpine mirror base URL (`--mirror`, else `[alpine] mirror`).
    pub mirror: String,
    /// Architecture (`--arch`, else `[alpine] arch`).
    pub arch: String,
    /// Download and place everything again, whatever matches.
    pub force: bool,
}

impl FetchOptions {
    /// The site's settings with `mirror` and `arch` overriding them; a mirror that is not
    /// an http(s) URL is an error naming `ovl.toml`.
    pub fn new(
        site: &Site,
        mirror: Option<String>,
        arch: Option<String>,
        force: bool,
    ) -> Result<Self> {
        let mirror = match mirror {
            Some(m) => m,
            None => {
                let m = site.config.alpine.mirror.clone();
                if !crate::site::config::is_http_url(&m) {
                    return Err(Error::at_path(
                        site.site_file(),
                        format!(
                            "[alpine] mirror = {m:?}: ovl fetch needs an http:// or https:// \
                             URL (or pass --mirror URL)"
                        ),
                    ));
                }
                m
            }
        };
        Ok(FetchOptions {
            mirror: mirror.trim_end_matches('/').to_string(),
            arch: arch.unwrap_or_else(|| site.config.alpine.arch.clone()),
            force,
        })
    }
}

/// Progress of downloads, drawn by the command line (a bar on a terminal).
pub trait Progress {
    /// A download of `url` starts, or resumes with `done` bytes already there, toward
    /// `total` bytes when known.
    fn start(&self, url: &str, done: u64, total: Option<u64>);
    /// `n` more bytes arrived.
    fn advance(&self, n: u64);
    /// The download ended, complete or not.
    fn finish(&self);
}

/// No progress shown.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _: &str, _: u64, _: Option<u64>) {}
    fn advance(&self, _: u64) {}
    fn finish(&self) {}
}

/// The release a fetch took its boot files from.
#[derive(Debug, Clone, Serialize)]
pub struct Release {
    /// Alpine version, e.g. `3.20.3`.
    pub version: String,
    /// Architecture.
    pub arch: String,
    /// Kernel flavor.
    pub flavor: String,
    /// The release index read.
    pub index: String,
    /// The netboot tarball's URL.
    pub url: String,
    /// The netboot tarball's SHA-256.
    pub sha256: String,
}

/// One file a fetch placed (or found already in place).
#[derive(Debug, Clone, Serialize)]
pub struct FetchedFile {
    /// Site-relative name, e.g. `vmlinuz-lts`.
    pub name: String,
    /// Full path.
    pub path: PathBuf,
    /// `created`, `updated`, or `unchanged`.
    pub state: Published,
    /// Size in bytes.
    pub size: u64,
    /// Lowercase hex SHA-256.
    pub sha256: String,
    /// The URL or local path it came from.
    pub source: String,
}

/// What a fetch did.
#[derive(Debug, Clone, Serialize)]
pub struct FetchReport {
    /// The Alpine release.
    pub release: Release,
    /// Every file of the fetch, Alpine's first.
    pub files: Vec<FetchedFile>,
    /// Bytes received over the network, the release index included.
    pub downloaded_bytes: u64,
}

/// Fetch the site's boot files (see the module documentation). Files are placed one by one,
/// each atomically; what was placed before an error stays, and is recorded.
pub fn fetch(site: &Site, opts: &FetchOptions, progress: &dyn Progress) -> Result<FetchReport> {
    let tmp = site.tmp_dir().join(FETCH_TMP);
    std::fs::create_dir_all(&tmp).at(&tmp)?;
    let _lock = lock(&tmp)?;
    let client = Client::new(std::time::Duration::from_secs(site.config.fetch.timeout));
    let mut state = FetchState::load(site);
    let mut report = alpine(site, opts, &client, &mut state, progress)?;
    state.save(site)?;
    let ipxe = ipxe::fetch(site, opts, &client, &mut state, progress);
    state.save(site)?;
    let (files, bytes) = ipxe?;
    report.files.extend(files);
    report.downloaded_bytes += bytes;
    Ok(report)
}

/// `vmlinuz-FLAVOR`, `initramfs-FLAVOR`, `modloop-FLAVOR`.
pub fn alpine_names(flavor: &str) -> [String; 3] {
    ["vmlinuz", "initramfs", "modloop"].map(|k| format!("{k}-{flavor}"))
}

/// Alpine's part: the index, then the tarball when the site's files do not match it.
fn alpine(
    site: &Site,
    opts: &FetchOptions,
    client: &Client,
    state: &mut FetchState,
    progress: &dyn Progress,
) -> Result<FetchReport> {
    let a = &site.config.alpine;
    let base = format!("{}/{}/releases/{}", opts.mirror, a.version, opts.arch);
    let index = format!("{base}/latest-releases.yaml");
    let yaml = client.get_small(&index, MAX_INDEX)?;
    let netboot = release::netboot(&yaml, &index)?;
    let url = format!("{base}/{}", netboot.file);
    let record = NetbootRecord {
        url: url.clone(),
        sha256: netboot.sha256.clone(),
        version: netboot.version.clone(),
        flavor: a.flavor.clone(),
    };
    let mut report = FetchReport {
        release: Release {
            version: netboot.version.clone(),
            arch: opts.arch.clone(),
            flavor: a.flavor.clone(),
            index,
            url: url.clone(),
            sha256: netboot.sha256.clone(),
        },
        files: Vec::new(),
        downloaded_bytes: yaml.len() as u64,
    };
    let names = alpine_names(&a.flavor);
    // The same tarball (from any mirror) and flavor: the files are checked, not downloaded.
    let same = |r: &NetbootRecord| r.sha256 == record.sha256 && r.flavor == record.flavor;
    if !opts.force
        && state.netboot.as_ref().is_some_and(same)
        && let Some(files) = in_place(site, state, &names)
    {
        report.files = files;
        return Ok(report);
    }
    let part = site.tmp_dir().join(FETCH_TMP).join(format!(
        "{}.{}.part",
        netboot.file,
        &netboot.sha256[..16]
    ));
    if opts.force {
        let _ = std::fs::remove_file(&part);
    }
    let index = &report.release.index;
    report.downloaded_bytes += download_verified(client, &url, &part, &netboot, index, progress)?;
    let members = match extract::members(&part, &names, &site.tmp_dir(), &url)? {
        Members::All(members) => members,
        Members::Missing { flavors } => {
            // The verified tarball stays: a run with another flavor extracts it at once.
            let f = &a.flavor;
            return Err(Error::at_path(
                site.site_file(),
                format!(
                    "[alpine] flavor = {f:?}: {url} holds no boot/vmlinuz-{f}, \
                     boot/initramfs-{f} and boot/modloop-{f}; its flavors: {}",
                    flavors.join(", ")
                ),
            ));
        }
    };
    for m in members {
        let dest = site.root.join(&m.name);
        let published = extract::place(m.tmp, &m.sha256, &dest)?;
        state.record(&m.name, &dest, &m.sha256, &url, Some(&netboot.version))?;
        report.files.push(FetchedFile {
            path: dest,
            state: published,
            size: m.size,
            sha256: m.sha256,
            source: url.clone(),
            name: m.name,
        });
    }
    state.netboot = Some(record);
    let _ = std::fs::remove_file(&part);
    Ok(report)
}

/// Download the tarball `url` into `part` and check it against the sha256 of the release
/// index `index`; the bytes received. A beginning kept from an earlier run that turns out
/// wrong is dropped and the whole file downloaded once more; a mismatch left is an error
/// naming `url`, and the part is removed.
fn download_verified(
    client: &Client,
    url: &str,
    part: &std::path::Path,
    netboot: &release::Netboot,
    index: &str,
    progress: &dyn Progress,
) -> Result<u64> {
    let limit = Limit {
        expected: netboot.size,
        max: MAX_TARBALL,
    };
    let resumed = std::fs::metadata(part).is_ok_and(|m| m.len() > 0);
    let mut bytes = client.download(url, part, limit, progress)?;
    let mut got = extract::sha256_file(part).at(part)?;
    if got != netboot.sha256 && resumed {
        std::fs::remove_file(part).at(part)?;
        bytes += client.download(url, part, limit, progress)?;
        got = extract::sha256_file(part).at(part)?;
    }
    if got != netboot.sha256 {
        let _ = std::fs::remove_file(part);
        let want = &netboot.sha256;
        return Err(remote(
            url,
            format!("sha256 {got} differs from {want} published in {index}; nothing was placed"),
        ));
    }
    Ok(bytes)
}

/// The files `names`, when every one is in the site with the SHA-256 `state` recorded.
fn in_place(site: &Site, state: &FetchState, names: &[String]) -> Option<Vec<FetchedFile>> {
    names
        .iter()
        .map(|name| {
            let r = state.files.get(name)?;
            let path = site.root.join(name);
            let sha256 = extract::sha256_file(&path).ok()?;
            (sha256 == r.sha256).then(|| FetchedFile {
                name: name.clone(),
                path,
                state: Published::Unchanged,
                size: r.size,
                sha256,
                source: r.source.clone(),
            })
        })
        .collect()
}

/// Hold `.ovl-tmp/fetch/lock` for the whole run: two fetches in one site would write the
/// same `.part` file.
fn lock(tmp: &std::path::Path) -> Result<File> {
    let p = tmp.join("lock");
    let f = File::create(&p).at(&p)?;
    f.try_lock().map_err(|e| match e {
        std::fs::TryLockError::WouldBlock => Error::Env(format!(
            "{}: another `ovl fetch` is running in this site",
            p.display()
        )),
        std::fs::TryLockError::Error(e) => Error::io(&p, e),
    })?;
    Ok(f)
}

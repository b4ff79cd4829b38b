//! The boot files a site needs and serves as they are, whatever put them there: the kernel,
//! initramfs and modloop of `[alpine] flavor` (named by the boot script), and, when the
//! site's DHCP server is on, the boot files it hands out (`[serve.dhcp] boot_files`). Each
//! with its size and, when `ovl fetch` placed it and it has not changed since, its SHA-256
//! and Alpine version; or what is wrong with it. Used by `ovl check` and `/status`.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde::{Serialize, Serializer};

use crate::fetch::alpine_names;
use crate::fetch::state::{FetchState, stamp};
use crate::serve::dhcp::default_boot_files;
use crate::site::{DhcpMode, Site};

/// What a boot file is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BootRole {
    /// `vmlinuz-FLAVOR`.
    Kernel,
    /// `initramfs-FLAVOR`.
    Initramfs,
    /// `modloop-FLAVOR`, the kernel modules' squashfs.
    Modloop,
    /// A file the DHCP server names for PXE firmware (an iPXE binary).
    Dhcp,
}

/// What is wrong with a boot file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootFileProblem {
    /// Nothing at its path (a dangling symlink included).
    Missing,
    /// A folder or another non-file.
    NotAFile,
    /// An empty file.
    Empty,
    /// The file cannot be opened; the system's reason.
    Unreadable(String),
}

impl std::fmt::Display for BootFileProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BootFileProblem::Missing => f.write_str("missing"),
            BootFileProblem::NotAFile => f.write_str("not a regular file"),
            BootFileProblem::Empty => f.write_str("empty"),
            BootFileProblem::Unreadable(why) => write!(f, "unreadable: {why}"),
        }
    }
}

impl Serialize for BootFileProblem {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// One boot file of the site.
#[derive(Debug, Clone, Serialize)]
pub struct BootFile {
    /// Site-relative name, as devices ask for it: `vmlinuz-lts`, `undionly.kpxe`.
    pub name: String,
    /// What it is for.
    pub role: BootRole,
    /// Full path.
    pub path: PathBuf,
    /// Size in bytes, when it is a file.
    pub size: Option<u64>,
    /// SHA-256 recorded by `ovl fetch`, while the file keeps the size and mtime it had then.
    pub sha256: Option<String>,
    /// Alpine release version recorded by `ovl fetch` (same condition).
    pub version: Option<String>,
    /// What is wrong with it, if anything.
    pub problem: Option<BootFileProblem>,
}

/// The names the site needs with their roles: Alpine's three of the flavor, then the DHCP
/// boot files (without repeats) when `[serve] dhcp` is `proxy` or `full`.
pub fn needed(site: &Site) -> Vec<(String, BootRole)> {
    let [kernel, initramfs, modloop] = alpine_names(&site.config.alpine.flavor);
    let mut v = vec![
        (kernel, BootRole::Kernel),
        (initramfs, BootRole::Initramfs),
        (modloop, BootRole::Modloop),
    ];
    if site.config.serve.dhcp.mode != DhcpMode::Off {
        let given = &site.config.serve.dhcp.boot_files;
        // By client architecture (0 BIOS first), each name once.
        let names: Vec<String> = match crate::serve::dhcp::site::boot_files(site) {
            Ok(map) => map.into_values().collect(),
            Err(_) if !given.is_empty() => given.values().cloned().collect(),
            Err(_) => default_boot_files().into_values().collect(),
        };
        let mut seen = BTreeSet::new();
        v.extend(
            names
                .into_iter()
                .filter(|n| seen.insert(n.clone()))
                .map(|n| (n, BootRole::Dhcp)),
        );
    }
    v
}

/// Every boot file the site needs ([`needed`]), as it is now.
pub fn boot_files(site: &Site) -> Vec<BootFile> {
    let state = FetchState::load(site);
    needed(site)
        .into_iter()
        .map(|(name, role)| {
            let path = site.root.join(name.trim_start_matches('/'));
            let mut f = BootFile {
                size: None,
                sha256: None,
                version: None,
                problem: None,
                name,
                role,
                path,
            };
            f.problem = inspect(&mut f, &state).err();
            f
        })
        .collect()
}

/// Fill in `f`'s size, and its checksum and version from `state` when still valid.
fn inspect(f: &mut BootFile, state: &FetchState) -> Result<(), BootFileProblem> {
    let meta = std::fs::metadata(&f.path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => BootFileProblem::Missing,
        _ => BootFileProblem::Unreadable(e.to_string()),
    })?;
    if !meta.is_file() {
        return Err(BootFileProblem::NotAFile);
    }
    f.size = Some(meta.len());
    if let Some(r) = state.files.get(&f.name)
        && stamp(&f.path).is_ok_and(|s| s == (r.size, r.mtime_ns))
    {
        f.sha256 = Some(r.sha256.clone());
        f.version = r.version.clone();
    }
    std::fs::File::open(&f.path).map_err(|e| BootFileProblem::Unreadable(e.to_string()))?;
    if meta.len() == 0 {
        return Err(BootFileProblem::Empty);
    }
    Ok(())
}

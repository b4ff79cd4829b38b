//! The iPXE binaries (`[fetch] ipxe_files`: `undionly.kpxe` for BIOS PXE ROMs, `ipxe.efi`
//! and `snponly.efi` for UEFI): copied from the system's iPXE package (`[fetch] ipxe_dir`,
//! Debian's `/usr/lib/ipxe`, whose binaries are x86 ones) when it holds them and the
//! architecture is x86, else downloaded from `[fetch] ipxe_url`/NAME. iPXE publishes no
//! checksums: a download is bounded in size, must not be empty, and its SHA-256 is recorded
//! so that the next run downloads it again only when the site's copy no longer matches.

use std::io::Read;
use std::path::Path;

use crate::build::publish::{Published, publish};
use crate::error::{IoContext, Result};
use crate::fetch::http::{Client, Limit, remote};
use crate::fetch::state::FetchState;
use crate::fetch::{FETCH_TMP, FetchOptions, FetchedFile, Progress, extract};
use crate::site::Site;

/// The largest iPXE binary accepted (they are 70 KB to 1 MB).
const MAX_IPXE: u64 = 32 << 20;

/// Architectures whose iPXE binaries Debian's package holds.
const X86: [&str; 2] = ["x86_64", "x86"];

/// Place every iPXE binary; the files and the bytes downloaded.
pub(crate) fn fetch(
    site: &Site,
    opts: &FetchOptions,
    client: &Client,
    state: &mut FetchState,
    progress: &dyn Progress,
) -> Result<(Vec<FetchedFile>, u64)> {
    let cfg = &site.config.fetch;
    let mut files = Vec::new();
    let mut downloaded = 0;
    for name in &cfg.ipxe_files {
        let dest = site.root.join(name);
        let local = Path::new(&cfg.ipxe_dir).join(name);
        let (bytes, source) = if X86.contains(&opts.arch.as_str()) && local.is_file() {
            (read_bounded(&local)?, local.display().to_string())
        } else {
            let url = format!("{}/{name}", cfg.ipxe_url.trim_end_matches('/'));
            if !opts.force
                && let Some(r) = state.files.get(name)
                && r.source == url
                && extract::sha256_file(&dest).is_ok_and(|h| h == r.sha256)
            {
                files.push(FetchedFile {
                    name: name.clone(),
                    path: dest,
                    state: Published::Unchanged,
                    size: r.size,
                    sha256: r.sha256.clone(),
                    source: url,
                });
                continue;
            }
            // Small files: never resumed across runs, where the remote file may have changed.
            let part = site.tmp_dir().join(FETCH_TMP).join(format!("{name}.part"));
            let _ = std::fs::remove_file(&part);
            let limit = Limit {
                expected: None,
                max: MAX_IPXE,
            };
            downloaded += client.download(&url, &part, limit, progress)?;
            let bytes = std::fs::read(&part).at(&part)?;
            let _ = std::fs::remove_file(&part);
            if bytes.is_empty() {
                return Err(remote(&url, "empty file"));
            }
            (bytes, url)
        };
        let sha256 = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
        let published = publish(&dest, &bytes)?;
        state.record(name, &dest, &sha256, &source, None)?;
        files.push(FetchedFile {
            name: name.clone(),
            path: dest,
            state: published,
            size: bytes.len() as u64,
            sha256,
            source,
        });
    }
    Ok((files, downloaded))
}

/// The file at `path`, at most [`MAX_IPXE`] bytes.
fn read_bounded(path: &Path) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_IPXE + 1).read_to_end(&mut bytes))
        .at(path)?;
    if bytes.len() as u64 > MAX_IPXE || bytes.is_empty() {
        return Err(crate::error::Error::Env(format!(
            "{}: expected an iPXE binary of 1 to {MAX_IPXE} bytes",
            path.display()
        )));
    }
    Ok(bytes)
}

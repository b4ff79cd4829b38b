//! The archive: a manifest written as a deterministic gzip-compressed tar (SPEC §4), its gzip
//! members made by the `runs` module, and a published archive read back (never through
//! a symlink, never from a fifo or device; all of its members).

use std::io::{Read, Write};
use std::path::Path;

use flate2::Compression;
use flate2::read::MultiGzDecoder;

use crate::build::layer;
use crate::build::lbu::PUBLISHED_LIMITS;
use crate::build::manifest::{Entry, Kind, Manifest};
use crate::error::{Error, Result};

/// Write `m` as an uncompressed tar: GNU headers, relative names, folders with a trailing
/// `/`, parents first, every entry with time `mtime`, ids and names from the manifest, and the
/// end-of-archive marker.
pub(crate) fn tar_bytes(m: &Manifest, mtime: u64) -> Result<Vec<u8>> {
    let entries: Vec<(&String, &Entry)> = m.entries.iter().collect();
    let mut out = entries_tar(&entries, mtime)?;
    out.extend_from_slice(&[0; 1024]);
    Ok(out)
}

/// The tar of `entries` (paths and entries in archive order), without the end-of-archive
/// marker: what [`tar_bytes`] writes for them, so the tars of consecutive stretches of a
/// manifest, put end to end and closed by the marker, are the manifest's tar.
pub(crate) fn entries_tar(entries: &[(&String, &Entry)], mtime: u64) -> Result<Vec<u8>> {
    let size: usize = entries
        .iter()
        .map(|(_, e)| match &e.kind {
            Kind::File(b) => 512 + b.len().div_ceil(512) * 512,
            _ => 512,
        })
        .sum();
    let mut b = tar::Builder::new(Vec::with_capacity(size + 2048));
    let bad = |path: &str, e: std::io::Error| Error::Device {
        mac: String::new(),
        message: format!("{path}: cannot be archived: {e}"),
    };
    for (path, e) in entries {
        let path = path.as_str();
        let mut h = tar::Header::new_gnu();
        h.set_mtime(mtime);
        h.set_uid(u64::from(e.uid));
        h.set_gid(u64::from(e.gid));
        h.set_mode(e.mode);
        h.set_username(&e.user).map_err(|x| bad(path, x))?;
        h.set_groupname(&e.group).map_err(|x| bad(path, x))?;
        match &e.kind {
            Kind::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                b.append_data(&mut h, format!("{path}/"), std::io::empty())
                    .map_err(|x| bad(path, x))?;
            }
            Kind::File(data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, path, &data[..])
                    .map_err(|x| bad(path, x))?;
            }
            Kind::Symlink(target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                b.append_link(&mut h, path, target)
                    .map_err(|x| bad(path, x))?;
            }
        }
    }
    // `into_inner` closes the tar with the two zero blocks of its end: taken off again.
    let mut out = b.into_inner().map_err(|x| bad("archive", x))?;
    out.truncate(out.len().saturating_sub(1024));
    Ok(out)
}

/// gzip `data` at `level` with a header that holds no name and no time.
pub(crate) fn gzip(data: &[u8], level: u32) -> Vec<u8> {
    let mut enc = flate2::GzBuilder::new().mtime(0).write(
        Vec::with_capacity(data.len() / 3 + 64),
        Compression::new(level),
    );
    // Writing into a Vec cannot fail.
    let _ = enc.write_all(data);
    enc.finish().unwrap_or_default()
}

/// The published archive at `path`, opened if it is a regular file; `None` when there is
/// none. A symlink, fifo or device node there is an error: it is never read.
pub(crate) fn open_published(path: &Path) -> Result<Option<std::fs::File>> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
        Ok(_) => layer::open_regular(path).map(Some),
    }
}

/// The uncompressed tar inside a published archive, if it exists and is readable: every
/// gzip member, read as one stream (ovl's archives hold several).
pub(crate) fn read_tar(path: &Path) -> Result<Option<Vec<u8>>> {
    let Some(f) = open_published(path)? else {
        return Ok(None);
    };
    let max = PUBLISHED_LIMITS.max_bytes * 2;
    let mut out = Vec::new();
    MultiGzDecoder::new(f)
        .take(max + 1)
        .read_to_end(&mut out)
        .map_err(|e| Error::at_path(path, format!("not a valid gzip file: {e}")))?;
    if out.len() as u64 > max {
        return Err(Error::at_path(
            path,
            format!("more than {max} bytes uncompressed"),
        ));
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn deterministic_and_unchanged_not_rewritten() {
        let mut m = Manifest::default();
        m.put(
            "etc/motd",
            Kind::File(Arc::from(&b"hello\n"[..])),
            0o644,
            None,
            "t",
        )
        .unwrap();
        m.put(
            "etc/runlevels/default/sshd",
            Kind::Symlink("/etc/init.d/sshd".into()),
            0o777,
            None,
            "t",
        )
        .unwrap();
        let a = gzip(&tar_bytes(&m, 1).unwrap(), 6);
        let b = gzip(&tar_bytes(&m, 1).unwrap(), 6);
        assert_eq!(a, b);
        // No name, no time in the gzip header.
        assert_eq!(&a[3..8], &[0, 0, 0, 0, 0]);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("configs/x.tar.gz");
        assert_eq!(
            crate::build::publish::publish(&p, &a).unwrap(),
            crate::build::publish::Published::Created
        );
        assert_eq!(
            crate::build::publish::publish(&p, &a).unwrap(),
            crate::build::publish::Published::Unchanged
        );
        assert_eq!(
            crate::build::publish::publish(&p, b"other").unwrap(),
            crate::build::publish::Published::Updated
        );
        // Nothing but the archive: no temporary left beside it.
        assert_eq!(
            std::fs::read_dir(dir.path().join("configs"))
                .unwrap()
                .count(),
            1
        );
    }
}

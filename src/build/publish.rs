//! Atomic publication: a hidden temporary file beside the target, fsync, rename, fsync of the
//! folder; an unchanged file is left alone. Used for archives, boot scripts and DHCP leases.
//!
//! The temporary is written in the target's own folder (`configs/.MAC.tar.gz.XXXXXX.ovl-tmp`),
//! so the rename is atomic wherever that folder lives: on the site's file system, on another
//! mount, or behind a symlink to another file system. Dot-files are private to the servers and
//! ignored by watch mode; the ones a killed process leaves are removed by the next build.
//!
//! A build of many devices publishes through a `Batch` (`publish/batch.rs`) instead: the same
//! guarantees for a bounded number of syncs, not two per file.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use crate::build::layer::open_regular;
use crate::error::{Error, IoContext, Result};
use crate::site::layout::TMP_SUFFIX;

mod batch;

pub(crate) use batch::{Batch, Step, Unit};
#[cfg(test)]
pub(crate) use batch::{PENDING, syncfs_reports_errors};

/// Write `bytes` to `path` atomically: a temporary file named `PREFIX…` + [`TMP_SUFFIX`] in
/// `tmp_dir` (which must be on `path`'s file system; the target's own folder always is),
/// written, given `mode` if any, fsynced, renamed over `path`, then the folder fsynced.
/// Readers see the old file or the new one, never a part.
pub(crate) fn write_atomic(
    path: &Path,
    bytes: &[u8],
    tmp_dir: &Path,
    prefix: &str,
    mode: Option<u32>,
) -> Result<()> {
    let tmp = temporary(tmp_dir, prefix, bytes, mode)?;
    tmp.as_file().sync_all().at(tmp.path())?;
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if let Ok(d) = std::fs::File::open(dir) {
        // Best effort: makes the rename itself durable.
        let _ = d.sync_all();
    }
    Ok(())
}

/// A hidden temporary `PREFIX…` + [`TMP_SUFFIX`] in `dir` (created if missing) holding
/// `bytes`, with `mode` if any; not yet synced.
pub(crate) fn temporary(
    dir: &Path,
    prefix: &str,
    bytes: &[u8],
    mode: Option<u32>,
) -> Result<tempfile::NamedTempFile> {
    std::fs::create_dir_all(dir).at(dir)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(prefix)
        .suffix(TMP_SUFFIX)
        .tempfile_in(dir)
        .at(dir)?;
    tmp.write_all(bytes).at(tmp.path())?;
    if let Some(mode) = mode {
        use std::os::unix::fs::PermissionsExt;
        let perm = std::fs::Permissions::from_mode(mode);
        tmp.as_file().set_permissions(perm).at(tmp.path())?;
    }
    Ok(tmp)
}

/// What publishing did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Published {
    /// There was no file before.
    Created,
    /// The file was replaced with different bytes (or was not a regular file).
    Updated,
    /// The file already held exactly these bytes and was not touched.
    Unchanged,
}

/// Publish `bytes` at `path` atomically: never a half-written or empty file at `path`, and an
/// identical file is left alone (its mtime and ETag stay). The temporary file is hidden beside
/// `path`, so even a `kill -9` leaves nothing but complete files under their real names.
///
/// `path` is ovl's own output: a symlink, fifo or device node found there is replaced by the
/// rename (the link itself, never its target), without being read. A folder there is an error.
pub(crate) fn publish(path: &Path, bytes: &[u8]) -> Result<Published> {
    let state = would_publish(path, bytes)?;
    if state == Published::Unchanged {
        return Ok(state);
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).at(dir)?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("archive");
    // Archives are served to anyone on the boot network; match what a web server expects.
    write_atomic(path, bytes, dir, &format!(".{name}."), Some(0o644))?;
    Ok(state)
}

/// What [`publish`] would do with `bytes` at `path`, nothing written: created when there is
/// no file, unchanged when a regular file holds exactly these bytes, updated otherwise (a
/// symlink, fifo or device node there is not read). A folder there is an error.
pub(crate) fn would_publish(path: &Path, bytes: &[u8]) -> Result<Published> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Published::Created),
        Err(e) => Err(Error::io(path, e)),
        Ok(m) if m.is_dir() => Err(Error::io(
            path,
            std::io::Error::new(
                std::io::ErrorKind::IsADirectory,
                "a folder stands where the file is published; remove it",
            ),
        )),
        Ok(m) if m.is_file() && same_bytes(path, bytes, m.len())? => Ok(Published::Unchanged),
        Ok(_) => Ok(Published::Updated),
    }
}

/// Does the regular file at `path`, of `len` bytes, hold exactly `bytes`?
fn same_bytes(path: &Path, bytes: &[u8], len: u64) -> Result<bool> {
    if len != bytes.len() as u64 {
        return Ok(false);
    }
    let mut old = Vec::with_capacity(bytes.len());
    open_regular(path)?
        .take(len + 1)
        .read_to_end(&mut old)
        .at(path)?;
    Ok(old == bytes)
}

/// Remove what a killed process left in `dir`: hidden temporaries (`.NAME.XXXXXX.ovl-tmp`)
/// older than `age`, or, with `every`, any file older than `age` (the old `.ovl-tmp/` folder).
pub(crate) fn clean_stale_temps(dir: &Path, age: Duration, every: bool) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        let ours = name.starts_with('.') && name.ends_with(TMP_SUFFIX);
        if !(every || ours) {
            continue;
        }
        let stale = e.metadata().is_ok_and(|m| {
            m.is_file()
                && m.modified()
                    .is_ok_and(|t| t.elapsed().is_ok_and(|el| el >= age))
        });
        if stale {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_regular_targets_are_replaced_unread() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.tar.gz");
        std::os::unix::fs::symlink("/dev/zero", &p).unwrap();
        assert_eq!(publish(&p, b"new").unwrap(), Published::Updated);
        assert!(std::fs::symlink_metadata(&p).unwrap().is_file());
        std::fs::remove_file(&p).unwrap();
        let st = std::process::Command::new("mkfifo")
            .arg(&p)
            .status()
            .unwrap();
        assert!(st.success());
        assert_eq!(publish(&p, b"new").unwrap(), Published::Updated);
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        std::fs::remove_file(&p).unwrap();
        std::fs::create_dir(&p).unwrap();
        let e = publish(&p, b"new").unwrap_err();
        assert_eq!(e.exit_code(), crate::error::EXIT_ENV);
    }

    #[test]
    fn only_stale_hidden_temporaries_are_cleaned() {
        let dir = tempfile::tempdir().unwrap();
        for n in [".a.tar.gz.XyZ123.ovl-tmp", "a.tar.gz", ".keep"] {
            std::fs::write(dir.path().join(n), b"x").unwrap();
        }
        clean_stale_temps(dir.path(), Duration::from_secs(3600), false);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3);
        clean_stale_temps(dir.path(), Duration::ZERO, false);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, [".keep", "a.tar.gz"]);
    }
}

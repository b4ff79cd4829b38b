//! Atomic publication: a temporary file on the same file system, fsync, rename, fsync of the
//! folder; an unchanged file is left alone. Used for archives, boot scripts and DHCP leases.

use std::io::Write;
use std::path::Path;

use crate::error::{Error, IoContext, Result};

/// Write `bytes` to `path` atomically: a temporary file named `PREFIX…` in `tmp_dir` (which
/// must be on `path`'s file system), written, given `mode` if any, fsynced, renamed over
/// `path`, then the folder fsynced. Readers see the old file or the new one, never a part.
pub(crate) fn write_atomic(
    path: &Path,
    bytes: &[u8],
    tmp_dir: &Path,
    prefix: &str,
    mode: Option<u32>,
) -> Result<()> {
    std::fs::create_dir_all(tmp_dir).at(tmp_dir)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(prefix)
        .tempfile_in(tmp_dir)
        .at(tmp_dir)?;
    tmp.write_all(bytes).at(tmp.path())?;
    tmp.as_file().sync_all().at(tmp.path())?;
    if let Some(mode) = mode {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(mode))
            .at(tmp.path())?;
    }
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

/// What publishing did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Published {
    /// There was no file before.
    Created,
    /// The file was replaced with different bytes.
    Updated,
    /// The file already held exactly these bytes and was not touched.
    Unchanged,
}

/// Publish `bytes` at `path` atomically: never a half-written or empty file at `path`, and an
/// identical file is left alone (its mtime and ETag stay). The temporary file is written in
/// `tmp_dir`, which must be on the same file system as `path` (the rename is then atomic), so
/// that even a `kill -9` never leaves anything but complete files in `path`'s folder.
pub(crate) fn publish(path: &Path, bytes: &[u8], tmp_dir: &Path) -> Result<Published> {
    let state = would_publish(path, bytes)?;
    if state == Published::Unchanged {
        return Ok(state);
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).at(dir)?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("archive");
    // Archives are served to anyone on the boot network; match what a web server expects.
    write_atomic(path, bytes, tmp_dir, &format!("{name}."), Some(0o644))?;
    Ok(state)
}

/// What [`publish`] would do with `bytes` at `path`, nothing written: created when there is
/// no file, unchanged when it holds exactly these bytes, updated otherwise.
pub(crate) fn would_publish(path: &Path, bytes: &[u8]) -> Result<Published> {
    match std::fs::read(path) {
        Ok(old) if old == bytes => Ok(Published::Unchanged),
        Ok(_) => Ok(Published::Updated),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Published::Created),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Remove temporary files older than `age` that a killed process left in `tmp_dir`.
pub(crate) fn clean_stale_temps(tmp_dir: &Path, age: std::time::Duration) {
    let Ok(rd) = std::fs::read_dir(tmp_dir) else {
        return;
    };
    for e in rd.flatten() {
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|el| el > age));
        if old {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

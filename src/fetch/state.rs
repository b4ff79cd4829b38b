//! What `ovl fetch` placed, kept in `SITE/.ovl-state/fetch.json`: the netboot tarball last
//! extracted and, for every file placed, its SHA-256, size, modification time, source and
//! release version. A later run compares the site's files with it to download nothing when
//! they still match; [`crate::fetch::boot_files`] reads versions and checksums from it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};

use crate::build::publish::write_atomic;
use crate::error::{Error, IoContext, Result};
use crate::site::Site;
use crate::site::layout::STATE_DIR;

/// The file name of the state in `.ovl-state/`.
pub(crate) const STATE_FILE: &str = "fetch.json";

/// The netboot tarball last extracted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct NetbootRecord {
    /// Where it was downloaded from.
    pub url: String,
    /// Its SHA-256, as the release index published it.
    pub sha256: String,
    /// The release version, e.g. `3.20.3`.
    pub version: String,
    /// The kernel flavor taken out of it.
    pub flavor: String,
}

/// A file placed in the site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FileRecord {
    /// Lowercase hex SHA-256.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// Modification time after placing, nanoseconds since the epoch: a file with another
    /// size or time has been changed since.
    pub mtime_ns: u128,
    /// The URL or local path it came from.
    pub source: String,
    /// The Alpine release it belongs to (none for iPXE binaries).
    pub version: Option<String>,
}

/// The whole state file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct FetchState {
    /// The netboot tarball last extracted.
    #[serde(default)]
    pub netboot: Option<NetbootRecord>,
    /// Placed files by site-relative name.
    #[serde(default)]
    pub files: BTreeMap<String, FileRecord>,
}

/// `SITE/.ovl-state/fetch.json`.
pub(crate) fn path(site: &Site) -> PathBuf {
    site.root.join(STATE_DIR).join(STATE_FILE)
}

impl FetchState {
    /// The site's state; a missing or unreadable one is empty (everything is then checked
    /// against the mirror again).
    pub(crate) fn load(site: &Site) -> FetchState {
        std::fs::read(path(site))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Write the state atomically.
    pub(crate) fn save(&self, site: &Site) -> Result<()> {
        let p = path(site);
        let dir = site.root.join(STATE_DIR);
        std::fs::create_dir_all(&dir).at(&dir)?;
        let bytes =
            serde_json::to_vec_pretty(self).map_err(|e| Error::io(&p, std::io::Error::other(e)))?;
        write_atomic(&p, &bytes, &site.tmp_dir(), "fetch.json.", Some(0o644))
    }

    /// Record the file now at `dest` (site-relative `name`).
    pub(crate) fn record(
        &mut self,
        name: &str,
        dest: &Path,
        sha256: &str,
        source: &str,
        version: Option<&str>,
    ) -> Result<()> {
        let (size, mtime_ns) = stamp(dest).at(dest)?;
        self.files.insert(
            name.to_string(),
            FileRecord {
                sha256: sha256.to_string(),
                size,
                mtime_ns,
                source: source.to_string(),
                version: version.map(str::to_string),
            },
        );
        Ok(())
    }
}

/// Size and modification time (ns) of the file at `path`.
pub(crate) fn stamp(path: &Path) -> std::io::Result<(u64, u128)> {
    let m = std::fs::metadata(path)?;
    let t = m
        .modified()?
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    Ok((m.len(), t))
}

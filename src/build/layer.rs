//! Layers: the trees mirrored onto a device's `/`. A layer is a folder under `overlays/` or
//! an lbu-made archive (a profile's reference config, or a device's capture, read by
//! [`lbu`]), read safely: nothing is ever written while reading one, a
//! layer reached through a symlink leading out of the site is refused, and only regular files
//! are opened, never following a final symlink and never blocking on a fifo (SPEC §3, §7).
//!
//! Modes of folder layers are the source's permission bits with group/other write and
//! setuid/setgid/sticky cleared (SPEC §4), so a 0600 key stays 0600 and copies made under
//! umask 002 or 022 build the same bytes.

use std::io::Read;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::build::lbu::{self, ArchiveLimits};
use crate::error::{Error, IoContext, Result};
use crate::site::Site;
use crate::site::layout::{OVERLAYS_DIR, TMP_DIR, TMP_SUFFIX};

/// The permission bits a folder layer keeps from its source: no group/other write, no
/// setuid/setgid/sticky (those only when declared in `[permissions]`).
pub const SOURCE_MODE_MASK: u32 = 0o755;

/// Where a layer comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LayerSource {
    /// A folder (absolute path), e.g. `SITE/overlays/xl`.
    Folder(PathBuf),
    /// An lbu-made `.tar.gz` (absolute path).
    Archive(PathBuf),
}

/// A layer as written in a profile or the inventory that names no layer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "layer {0:?}: use a folder name under overlays/ or a site-relative path to an lbu archive, without `..`"
)]
pub struct BadLayer(pub String);

impl LayerSource {
    /// Parse a layer as written in a profile or the inventory: a path ending in `.tar.gz` or
    /// `.tgz` is an archive relative to the site; anything else a folder under `overlays/`.
    pub(crate) fn parse(
        site_root: &Path,
        spec: &str,
    ) -> std::result::Result<LayerSource, BadLayer> {
        let s = spec.trim();
        if s.is_empty()
            || s.starts_with('/')
            || s.split('/').any(|c| c == ".." || c == "." || c.is_empty())
            || s.contains('\\')
        {
            return Err(BadLayer(spec.to_string()));
        }
        if s.ends_with(".tar.gz") || s.ends_with(".tgz") {
            Ok(LayerSource::Archive(site_root.join(s)))
        } else {
            Ok(LayerSource::Folder(site_root.join(OVERLAYS_DIR).join(s)))
        }
    }

    /// The path read.
    pub(crate) fn path(&self) -> &Path {
        match self {
            LayerSource::Folder(p) | LayerSource::Archive(p) => p,
        }
    }
}

/// Owner and mode stored in an archive layer, kept as they were.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMeta {
    /// Permission bits.
    pub mode: u32,
    /// Owner uid.
    pub uid: u32,
    /// Group gid.
    pub gid: u32,
    /// Owner name as stored (may be empty).
    pub user: String,
    /// Group name as stored (may be empty).
    pub group: String,
}

/// The content of one node of a layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A directory.
    Dir,
    /// A regular file's bytes.
    File(Arc<[u8]>),
    /// A `.j2` template's source (the entry's path has the suffix removed).
    Template(Arc<str>),
    /// A symbolic link and its target, as written.
    Symlink(String),
}

/// One path of a layer.
#[derive(Debug, Clone)]
pub struct LayerEntry {
    /// Relative path on the device, `/`-separated, no trailing slash.
    pub path: String,
    /// What it is.
    pub node: Node,
    /// Permission bits: for folder layers the source's, masked by [`SOURCE_MODE_MASK`] (so
    /// umask never changes an archive); for archive layers the stored ones.
    pub mode: u32,
    /// For archive layers: the owner and mode stored in the archive.
    pub stored: Option<StoredMeta>,
    /// The file it was read from (for error messages): the source file, or the archive.
    pub source: PathBuf,
}

/// A layer read into memory.
#[derive(Debug, Clone)]
pub struct LayerTree {
    /// Where it comes from.
    pub source: LayerSource,
    /// Its entries, parents before children.
    pub entries: Vec<LayerEntry>,
}

/// Layer trees read once per run and shared between devices (a failed read is shared too).
pub type LayerCache = std::collections::HashMap<LayerSource, Result<Arc<LayerTree>>>;

/// Is this file name an editor's or tool's temporary file, never part of a layer?
pub(crate) fn is_temporary_name(name: &str) -> bool {
    name.ends_with('~')
        || name.ends_with(".swp")
        || name.ends_with(".swx")
        || name.starts_with(".#")
        || name.starts_with(TMP_DIR)
        || (name.starts_with('.') && name.ends_with(TMP_SUFFIX))
        || (name.starts_with('#') && name.ends_with('#'))
}

impl LayerTree {
    /// Read a layer of `site` from disk. Its path must not lead out of the site through a
    /// symlink; archive layers are held to `[build] max_capture_bytes`.
    pub(crate) fn read(site: &Site, source: &LayerSource) -> Result<LayerTree> {
        let real = confined(&site.root, source.path())?;
        match source {
            LayerSource::Folder(p) => read_folder(source, p),
            LayerSource::Archive(p) => {
                let f = open_regular_as(&real, p)?;
                let limits = ArchiveLimits::new(site.config.build.max_capture_bytes);
                lbu::read_archive(source, p, f, limits)
            }
        }
    }
}

/// The real path of `path`, which must stay inside the site at `root` once every symlink on
/// the way is followed (devices write captures over NFS and can plant links). A path that does
/// not exist is returned as it is, for its reader to report.
pub(crate) fn confined(root: &Path, path: &Path) -> Result<PathBuf> {
    let real = match std::fs::canonicalize(path) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(path.to_path_buf()),
        Err(e) => return Err(Error::io(path, e)),
    };
    let real_root = std::fs::canonicalize(root).at(root)?;
    if !real.starts_with(&real_root) {
        return Err(Error::at_path(
            path,
            format!(
                "reached through a symlink leading out of the site (to {}); refusing it",
                real.display()
            ),
        ));
    }
    Ok(real)
}

/// Open `path` for reading only if it is a regular file: a final symlink is not followed,
/// and a fifo or device node is never read (nor waited on: the open does not block).
pub(crate) fn open_regular(path: &Path) -> Result<std::fs::File> {
    open_regular_as(path, path)
}

/// [`open_regular`] of `open`, naming `path` in errors (the path as the site names it, when
/// `open` is its real path).
fn open_regular_as(open: &Path, path: &Path) -> Result<std::fs::File> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(open)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                Error::at_path(path, "is a symlink, not a regular file; refusing it")
            } else {
                Error::io(path, e)
            }
        })?;
    let ft = f.metadata().at(path)?.file_type();
    if !ft.is_file() {
        return Err(Error::at_path(
            path,
            format!(
                "is a {}, not a regular file; refusing it",
                file_type_name(ft)
            ),
        ));
    }
    Ok(f)
}

/// `fifo`, `socket`, `device node`, `folder` or `symlink`, for messages.
pub(crate) fn file_type_name(ft: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_fifo() {
        "fifo"
    } else if ft.is_socket() {
        "socket"
    } else if ft.is_block_device() || ft.is_char_device() {
        "device node"
    } else if ft.is_dir() {
        "folder"
    } else if ft.is_symlink() {
        "symlink"
    } else {
        "regular file"
    }
}

/// The bytes of the regular file at `path` (see [`open_regular`]).
pub(crate) fn read_regular(path: &Path) -> Result<Vec<u8>> {
    let mut f = open_regular(path)?;
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes).at(path)?;
    Ok(bytes)
}

fn read_folder(source: &LayerSource, root: &Path) -> Result<LayerTree> {
    match std::fs::symlink_metadata(root) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(Error::at_path(root, "overlay is not a folder")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::at_path(root, "overlay folder does not exist"));
        }
        Err(e) => return Err(Error::io(root, e)),
    }
    let mut entries = Vec::new();
    let walker = walkdir::WalkDir::new(root)
        .follow_links(false)
        .sort_by_file_name()
        .min_depth(1);
    for item in walker
        .into_iter()
        .filter_entry(|e| !e.file_name().to_str().is_some_and(is_temporary_name))
    {
        let item = item.map_err(|e| {
            let path = e.path().unwrap_or(root).to_path_buf();
            match e.into_io_error() {
                Some(io) => Error::io(path, io),
                None => Error::at_path(path, "could not walk the overlay"),
            }
        })?;
        entries.push(folder_entry(root, &item)?);
    }
    // A template and a plain file landing on the same path in one layer is ambiguous.
    let mut seen = std::collections::HashMap::new();
    for e in &entries {
        if let Some(prev) = seen.insert(e.path.as_str(), &e.source) {
            return Err(Error::at_path(
                &e.source,
                format!(
                    "both {} and this template produce {}",
                    prev.display(),
                    e.path
                ),
            ));
        }
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(LayerTree {
        source: source.clone(),
        entries,
    })
}

/// One file, folder or symlink of a folder layer rooted at `root`.
fn folder_entry(root: &Path, item: &walkdir::DirEntry) -> Result<LayerEntry> {
    let path = item.path();
    let rel = path
        .strip_prefix(root)
        .map_err(|_| Error::at_path(path, "path outside its overlay"))?;
    let Some(rel) = rel.to_str() else {
        return Err(Error::at_path(path, "file name is not valid UTF-8"));
    };
    let rel = rel.replace(std::path::MAIN_SEPARATOR, "/");
    let meta = item.metadata().map_err(|e| {
        Error::io(
            path,
            e.into_io_error()
                .unwrap_or_else(|| std::io::Error::other("metadata")),
        )
    })?;
    let ft = meta.file_type();
    let mode = meta.permissions().mode() & SOURCE_MODE_MASK;
    let (rel, node, mode) = if ft.is_dir() {
        (rel, Node::Dir, mode)
    } else if ft.is_symlink() {
        let target = std::fs::read_link(path).at(path)?;
        let Some(t) = target.to_str() else {
            return Err(Error::at_path(path, "symlink target is not valid UTF-8"));
        };
        (rel, Node::Symlink(t.to_string()), 0o777)
    } else if ft.is_file() {
        let bytes = read_regular(path)?;
        match rel.strip_suffix(".j2") {
            Some(stem) if !stem.is_empty() && !stem.ends_with('/') => {
                let text = String::from_utf8(bytes)
                    .map_err(|_| Error::at_path(path, "template is not valid UTF-8"))?;
                (stem.to_string(), Node::Template(text.into()), mode)
            }
            _ => (rel, Node::File(bytes.into()), mode),
        }
    } else {
        return Err(Error::at_path(
            path,
            "special file (device, fifo or socket) in an overlay: only files, folders and symlinks can be archived",
        ));
    };
    Ok(LayerEntry {
        path: rel,
        node,
        mode,
        stored: None,
        source: path.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_hidden_temporaries_are_temporary_names() {
        assert!(is_temporary_name(
            ".52:54:00:12:34:56.tar.gz.Ab12Cd.ovl-tmp"
        ));
        assert!(is_temporary_name(".boot.ipxe.Ab12Cd.ovl-tmp"));
        assert!(is_temporary_name(".ovl-tmp"));
        assert!(!is_temporary_name("52:54:00:12:34:56.tar.gz"));
        assert!(!is_temporary_name(".profile"));
    }

    #[test]
    fn layer_specs() {
        let root = Path::new("/site");
        assert_eq!(
            LayerSource::parse(root, "xl").unwrap(),
            LayerSource::Folder("/site/overlays/xl".into())
        );
        assert_eq!(
            LayerSource::parse(root, "special/hall").unwrap(),
            LayerSource::Folder("/site/overlays/special/hall".into())
        );
        assert_eq!(
            LayerSource::parse(root, "captures/ref/ref.apkovl.tar.gz").unwrap(),
            LayerSource::Archive("/site/captures/ref/ref.apkovl.tar.gz".into())
        );
        for bad in ["", "../x", "/etc", "a/../b", "a//b", "a\\b"] {
            assert!(LayerSource::parse(root, bad).is_err(), "{bad}");
        }
    }
}

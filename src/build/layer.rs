//! Layers: the trees mirrored onto a device's `/`. A layer is a folder under `overlays/` or
//! an lbu-made archive (a profile's reference config, or a device's capture), read safely:
//! nothing is ever written while reading one (SPEC §3, §7).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use flate2::read::GzDecoder;

use crate::error::{Error, IoContext, Result};
use crate::site::layout::{OVERLAYS_DIR, TMP_DIR};

/// Total uncompressed bytes an lbu archive layer may hold.
pub(crate) const MAX_ARCHIVE_BYTES: u64 = 1 << 30;
/// Entries an lbu archive layer may hold.
pub(crate) const MAX_ARCHIVE_ENTRIES: usize = 200_000;

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
    /// Permission bits for folder layers (0755 or 0644, like git: only the executable bit of
    /// the source counts, so umask and NFS ownership never change an archive).
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
        || (name.starts_with('#') && name.ends_with('#'))
}

impl LayerTree {
    /// Read a layer from disk.
    pub(crate) fn read(source: &LayerSource) -> Result<LayerTree> {
        match source {
            LayerSource::Folder(p) => read_folder(source, p),
            LayerSource::Archive(p) => {
                let f = std::fs::File::open(p).at(p)?;
                read_archive(source, p, f)
            }
        }
    }
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
    let (rel, node, mode) = if ft.is_dir() {
        (rel, Node::Dir, 0o755)
    } else if ft.is_symlink() {
        let target = std::fs::read_link(path).at(path)?;
        let Some(t) = target.to_str() else {
            return Err(Error::at_path(path, "symlink target is not valid UTF-8"));
        };
        (rel, Node::Symlink(t.to_string()), 0o777)
    } else if ft.is_file() {
        use std::os::unix::fs::PermissionsExt;
        let mode = if meta.permissions().mode() & 0o111 != 0 {
            0o755
        } else {
            0o644
        };
        let bytes = std::fs::read(path).at(path)?;
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

/// Normalise an archive member name: strip `./`, refuse absolute names and `..`.
fn member_name(archive: &Path, raw: &[u8]) -> Result<Option<String>> {
    let Ok(name) = std::str::from_utf8(raw) else {
        return Err(Error::at_path(
            archive,
            format!(
                "member name {:?} is not valid UTF-8",
                String::from_utf8_lossy(raw)
            ),
        ));
    };
    if name.starts_with('/') {
        return Err(Error::at_path(
            archive,
            format!("member {name:?} has an absolute name"),
        ));
    }
    let mut parts = Vec::new();
    for c in name.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                return Err(Error::at_path(
                    archive,
                    format!("member {name:?} contains `..`"),
                ));
            }
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        Ok(None)
    } else {
        Ok(Some(parts.join("/")))
    }
}

/// Does a relative symlink target, resolved from the link's folder, climb above the root?
pub(crate) fn link_escapes(link_path: &str, target: &str) -> bool {
    if target.starts_with('/') {
        return false;
    }
    let mut depth: i64 = link_path.split('/').count() as i64 - 1;
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                depth -= 1;
                if depth < 0 {
                    return true;
                }
            }
            _ => depth += 1,
        }
    }
    false
}

/// Read an lbu archive (gzip-compressed tar) from `reader`.
pub(crate) fn read_archive(
    source: &LayerSource,
    path: &Path,
    reader: impl Read,
) -> Result<LayerTree> {
    let mut ar = tar::Archive::new(GzDecoder::new(reader));
    let bad = |e| unreadable(path, e);
    let mut entries: Vec<LayerEntry> = Vec::new();
    let mut total: u64 = 0;
    for item in ar.entries().map_err(bad)? {
        let mut item = item.map_err(bad)?;
        if entries.len() >= MAX_ARCHIVE_ENTRIES {
            return Err(Error::at_path(
                path,
                format!("more than {MAX_ARCHIVE_ENTRIES} entries"),
            ));
        }
        let raw = item.path_bytes().into_owned();
        let Some(name) = member_name(path, &raw)? else {
            continue;
        };
        let stored = stored_meta(path, &name, item.header())?;
        let node = member_node(path, &name, &mut item, &entries, &mut total)?;
        entries.push(LayerEntry {
            path: name,
            node,
            mode: stored.mode,
            stored: Some(stored),
            source: path.to_path_buf(),
        });
    }
    // The last occurrence of a name wins, as when tar extracts; keep parents first.
    let mut dedup: std::collections::BTreeMap<String, LayerEntry> =
        std::collections::BTreeMap::new();
    for e in entries {
        dedup.insert(e.path.clone(), e);
    }
    Ok(LayerTree {
        source: source.clone(),
        entries: dedup.into_values().collect(),
    })
}

/// The archive at `path` cannot be read as a gzip-compressed tar.
fn unreadable(path: &Path, e: std::io::Error) -> Error {
    Error::at_path(
        path,
        format!("not a readable gzip-compressed tar archive: {e}"),
    )
}

/// Owner and mode of the member `name`, as stored.
fn stored_meta(path: &Path, name: &str, h: &tar::Header) -> Result<StoredMeta> {
    let bad = |e| unreadable(path, e);
    Ok(StoredMeta {
        mode: h.mode().map_err(bad)? & 0o7777,
        uid: u32::try_from(h.uid().map_err(bad)?)
            .map_err(|_| Error::at_path(path, format!("member {name}: uid out of range")))?,
        gid: u32::try_from(h.gid().map_err(bad)?)
            .map_err(|_| Error::at_path(path, format!("member {name}: gid out of range")))?,
        user: h.username().ok().flatten().unwrap_or("").to_string(),
        group: h.groupname().ok().flatten().unwrap_or("").to_string(),
    })
}

/// The content of the member `name`: folders, files (counted into `total`), symlinks that
/// stay inside the root and hard links to `earlier` files; anything else is refused.
fn member_node<R: Read>(
    path: &Path,
    name: &str,
    item: &mut tar::Entry<'_, R>,
    earlier: &[LayerEntry],
    total: &mut u64,
) -> Result<Node> {
    let refuse = |what: String| Err(Error::at_path(path, format!("member {name}{what}")));
    match item.header().entry_type() {
        tar::EntryType::Directory => Ok(Node::Dir),
        tar::EntryType::Regular | tar::EntryType::Continuous => {
            let size = item.size();
            *total = total.saturating_add(size);
            if *total > MAX_ARCHIVE_BYTES {
                return Err(Error::at_path(
                    path,
                    format!("more than {MAX_ARCHIVE_BYTES} bytes uncompressed"),
                ));
            }
            let mut buf = Vec::with_capacity(usize::try_from(size.min(1 << 24)).unwrap_or(0));
            item.read_to_end(&mut buf)
                .map_err(|e| unreadable(path, e))?;
            Ok(Node::File(buf.into()))
        }
        tar::EntryType::Symlink => {
            let target = link_target(path, name, item)?;
            if link_escapes(name, &target) {
                return refuse(format!(": symlink to {target:?} escapes the root"));
            }
            Ok(Node::Symlink(target))
        }
        tar::EntryType::Link => {
            let target = link_target(path, name, item)?;
            let Some(t) = member_name(path, target.as_bytes())? else {
                return refuse(": hard link to the root".into());
            };
            match earlier.iter().rev().find(|e| e.path == t) {
                Some(LayerEntry {
                    node: Node::File(b),
                    ..
                }) => Ok(Node::File(b.clone())),
                _ => refuse(format!(
                    ": hard link to {t}, which is not an earlier regular file"
                )),
            }
        }
        tar::EntryType::Char | tar::EntryType::Block => {
            refuse(" is a device node; refusing it".into())
        }
        tar::EntryType::Fifo => refuse(" is a fifo; refusing it".into()),
        other => refuse(format!(" has an unsupported type {other:?}")),
    }
}

fn link_target<R: Read>(path: &Path, name: &str, item: &tar::Entry<'_, R>) -> Result<String> {
    let t = item
        .link_name_bytes()
        .ok_or_else(|| Error::at_path(path, format!("member {name}: link without a target")))?;
    String::from_utf8(t.into_owned()).map_err(|_| {
        Error::at_path(
            path,
            format!("member {name}: link target is not valid UTF-8"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes() {
        assert!(!link_escapes(
            "etc/runlevels/default/sshd",
            "/etc/init.d/sshd"
        ));
        assert!(!link_escapes("etc/a", "../usr/bin/x"));
        assert!(link_escapes("etc/a", "../../x"));
        assert!(link_escapes("a", "../x"));
        assert!(!link_escapes("etc/ssl/cert.pem", "certs/ca.pem"));
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

//! Comparing what a build would write for a device with the archive already published for it:
//! the archive's state (built, stale, missing) for `ovl list` and `ovl show`, and, for
//! `ovl diff`, the published archive read back into a manifest and compared path by path.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use crate::build::archive;
use crate::build::layer::{LayerSource, Node};
use crate::build::lbu;
use crate::build::manifest::{Kind, Listed, Manifest};
use crate::build::plan::DevicePlan;
use crate::build::project::Project;
use crate::error::{Error, Result};
use crate::mac::Mac;

/// The state of a device's published archive compared with what a build would write now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ArchiveState {
    /// The published archive holds exactly what a build would write.
    Built,
    /// The published archive differs from what a build would write (or cannot be read).
    Stale,
    /// No archive is published.
    Missing,
    /// An archive is published but the device cannot be planned now.
    Error,
}

impl ArchiveState {
    /// `built`, `stale`, `missing` or `error`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            ArchiveState::Built => "built",
            ArchiveState::Stale => "stale",
            ArchiveState::Missing => "missing",
            ArchiveState::Error => "error",
        }
    }
}

/// The state of `plan`'s published archive: built when its tar is byte for byte what a build
/// would write now, missing when there is none, stale otherwise (an unreadable archive too).
pub(crate) fn archive_state(p: &Project, plan: &DevicePlan) -> Result<ArchiveState> {
    let path = p.archive_path(&plan.mac);
    let Some(published) = archive::read_tar(&path).unwrap_or(Some(Vec::new())) else {
        return Ok(ArchiveState::Missing);
    };
    let now = archive::tar_bytes(&plan.manifest, p.site.mtime())?;
    Ok(if published == now {
        ArchiveState::Built
    } else {
        ArchiveState::Stale
    })
}

/// The state of the archive of a device that cannot be planned: error when one is published,
/// missing otherwise.
pub(crate) fn unplanned_state(p: &Project, mac: &Mac) -> ArchiveState {
    if p.archive_path(mac).exists() {
        ArchiveState::Error
    } else {
        ArchiveState::Missing
    }
}

/// A published archive read back.
#[derive(Debug, Clone, Default)]
pub(crate) struct PublishedArchive {
    /// Its members as a manifest (owners and modes as stored).
    pub(crate) manifest: Manifest,
    /// The content of every regular-file member, by path, as last stored.
    pub(crate) files: BTreeMap<String, Arc<[u8]>>,
}

/// Read the archive published at `path` back into a manifest; `None` when there is none.
pub(crate) fn read_published(path: &Path) -> Result<Option<PublishedArchive>> {
    let Some(f) = archive::open_published(path)? else {
        return Ok(None);
    };
    let source = LayerSource::Archive(path.to_path_buf());
    let tree = lbu::read_archive(&source, path, f, lbu::PUBLISHED_LIMITS)?;
    let mut out = PublishedArchive::default();
    for e in tree.entries {
        let kind = match e.node {
            Node::Dir => Kind::Dir,
            Node::File(b) => {
                out.files.insert(e.path.clone(), b.clone());
                Kind::File(b)
            }
            Node::Symlink(t) => Kind::Symlink(t),
            Node::Template(t) => Kind::File(t.as_bytes().into()),
        };
        out.manifest
            .put(&e.path, kind, e.mode, e.stored.as_ref(), "archive")
            .map_err(|msg| Error::at_path(path, msg))?;
    }
    Ok(Some(out))
}

/// One way a path differs between the published archive and a new build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Change {
    /// A folder, file or symlink became another of these.
    Type,
    /// A file's bytes.
    Content,
    /// A symlink's target.
    Target,
    /// Permission bits.
    Mode,
    /// Owner uid or group gid.
    Owner,
}

impl Change {
    /// `type`, `content`, `target`, `mode` or `owner`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Change::Type => "type",
            Change::Content => "content",
            Change::Target => "target",
            Change::Mode => "mode",
            Change::Owner => "owner",
        }
    }
}

/// A path present on both sides that a rebuild would change.
#[derive(Debug, Clone)]
pub(crate) struct Changed {
    /// The path.
    pub(crate) path: String,
    /// What changes, in the order type, content, target, mode, owner.
    pub(crate) what: Vec<Change>,
    /// The published file's bytes, when the content changes and it was a file.
    old: Option<Arc<[u8]>>,
    /// The new file's bytes, when the content changes and it is a file.
    new: Option<Arc<[u8]>>,
}

impl Changed {
    /// A unified diff (two lines of context) of a content change between two text files.
    pub(crate) fn unified_diff(&self) -> Option<String> {
        let (Some(old), Some(new)) = (&self.old, &self.new) else {
            return None;
        };
        let (Ok(old), Ok(new)) = (std::str::from_utf8(old), std::str::from_utf8(new)) else {
            return None;
        };
        let path = &self.path;
        Some(
            similar::TextDiff::from_lines(old, new)
                .unified_diff()
                .context_radius(2)
                .header(&format!("a/{path}"), &format!("b/{path}"))
                .to_string(),
        )
    }
}

/// What a rebuild would change in a device's published archive.
#[derive(Debug, Clone)]
pub(crate) struct ArchiveDiff {
    /// The published archive's path.
    pub(crate) archive: PathBuf,
    /// Whether it exists (when not, every path of the build counts as added).
    pub(crate) exists: bool,
    /// Entries a build writes.
    pub(crate) entries: usize,
    /// Paths only the build has, in order.
    pub(crate) added: Vec<String>,
    /// Paths only the published archive has, in order.
    pub(crate) removed: Vec<String>,
    /// Paths on both sides that differ, in order.
    pub(crate) changed: Vec<Changed>,
}

impl ArchiveDiff {
    /// Nothing added, removed or changed.
    pub(crate) fn identical(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// Compare `plan` with the archive published for its device.
pub(crate) fn diff(p: &Project, plan: &DevicePlan) -> Result<ArchiveDiff> {
    let archive = p.archive_path(&plan.mac);
    let new = by_path(&plan.manifest);
    let published = read_published(&archive)?;
    let exists = published.is_some();
    let published = published.unwrap_or_default();
    let old = by_path(&published.manifest);
    let added = new.keys().filter(|k| !old.contains_key(*k)).cloned();
    let removed = old.keys().filter(|k| !new.contains_key(*k)).cloned();
    let mut changed = Vec::new();
    for (k, n) in &new {
        let Some(o) = old.get(k) else { continue };
        let what = changes(o, n);
        if what.is_empty() {
            continue;
        }
        let content = what.contains(&Change::Content);
        changed.push(Changed {
            path: k.clone(),
            what,
            old: content.then(|| published.files.get(k).cloned()).flatten(),
            new: content
                .then(|| match plan.manifest.entries.get(k).map(|e| &e.kind) {
                    Some(Kind::File(b)) => Some(b.clone()),
                    _ => None,
                })
                .flatten(),
        });
    }
    Ok(ArchiveDiff {
        archive,
        exists,
        entries: new.len(),
        added: added.collect(),
        removed: removed.collect(),
        changed,
    })
}

/// A manifest's listing by path.
fn by_path(m: &Manifest) -> BTreeMap<String, Listed> {
    m.listing()
        .into_iter()
        .map(|l| (l.path.clone(), l))
        .collect()
}

/// How `new` differs from `old`, in the order type, content, target, mode, owner.
fn changes(old: &Listed, new: &Listed) -> Vec<Change> {
    let mut what = Vec::new();
    if old.kind != new.kind {
        what.push(Change::Type);
    }
    if old.sha256 != new.sha256 {
        what.push(Change::Content);
    }
    if old.target != new.target {
        what.push(Change::Target);
    }
    if old.mode != new.mode {
        what.push(Change::Mode);
    }
    if (old.uid, old.gid) != (new.uid, new.gid) {
        what.push(Change::Owner);
    }
    what
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(m: &Manifest, path: &str) -> Listed {
        by_path(m).remove(path).unwrap()
    }

    #[test]
    fn changes_are_named_in_a_fixed_order() {
        let mut old = Manifest::default();
        old.put(
            "etc/a",
            Kind::File(Arc::from(&b"1\n"[..])),
            0o644,
            None,
            "x",
        )
        .unwrap();
        let mut new = Manifest::default();
        new.put("etc/a", Kind::Symlink("b".into()), 0o777, None, "y")
            .unwrap();
        let what = changes(&listed(&old, "etc/a"), &listed(&new, "etc/a"));
        assert_eq!(
            what,
            [Change::Type, Change::Content, Change::Target, Change::Mode]
        );
        let names: Vec<_> = what.iter().map(|c| c.name()).collect();
        assert_eq!(
            serde_json::to_value(&what).unwrap(),
            serde_json::json!(names)
        );
        assert!(changes(&listed(&old, "etc"), &listed(&new, "etc")).is_empty());
    }

    #[test]
    fn only_text_files_get_a_unified_diff() {
        let c = |old: &[u8], new: &[u8]| Changed {
            path: "etc/motd".into(),
            what: vec![Change::Content],
            old: Some(Arc::from(old)),
            new: Some(Arc::from(new)),
        };
        let d = c(b"a\nb\n", b"a\nc\n").unified_diff().unwrap();
        assert!(d.starts_with("--- a/etc/motd\n+++ b/etc/motd\n"), "{d}");
        assert!(d.contains("-b\n+c\n"), "{d}");
        assert_eq!(c(b"\xff", b"a").unified_diff(), None);
    }
}

//! Comparing what a build would write for a device with the archive already published for it:
//! the archive's [state](ArchiveState) (built, stale, missing) for `ovl list` and `ovl show`,
//! the archives no inventory device owns (orphans), and, for `ovl diff`, the published archive
//! read back into a manifest and compared path by path.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rayon::prelude::*;
use serde::Serialize;

use crate::build::archive;
use crate::build::layer::{LayerSource, Node};
use crate::build::lbu;
use crate::build::manifest::{Entry, Kind, Manifest};
use crate::build::plan::{DevicePlan, DeviceSpec};
use crate::build::project::Project;
use crate::build::runs::RunCache;
pub(crate) use crate::build::state::ArchiveState;
use crate::build::state::PublishState;
use crate::error::{Error, IoContext, Result};
use crate::mac::Mac;
use crate::site::layout::IDENTITY_FILE;

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

/// The archives published in `configs/` for MACs the inventory does not hold (ad-hoc
/// `--profile --mac` builds, devices removed from `devices.toml`), in MAC order. Only files
/// named exactly as ovl names archives (`52:54:00:12:34:56.tar.gz`) count.
pub(crate) fn orphans(p: &Project) -> Result<Vec<(Mac, PathBuf)>> {
    let dir = p.site.configs_dir();
    let rd = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(&dir, e)),
    };
    let mut out = Vec::new();
    for e in rd {
        let e = e.map_err(|e| Error::io(&dir, e))?;
        let name = e.file_name();
        let Some(mac) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".tar.gz"))
            .and_then(|m| m.parse::<Mac>().ok())
            .filter(|m| m.archive_name() == name.to_string_lossy())
        else {
            continue;
        };
        if !p.inventory.devices.contains_key(&mac) && e.file_type().is_ok_and(|t| t.is_file()) {
            out.push((mac, e.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// The archive published at `path` (gzip bytes) read back into a manifest (owners and modes
/// as stored, every file's bytes).
fn read_published(path: &Path, gz: &[u8]) -> Result<Manifest> {
    let source = LayerSource::Archive(path.to_path_buf());
    let tree = lbu::read_archive(&source, path, gz, lbu::PUBLISHED_LIMITS)?;
    let mut m = Manifest::default();
    for e in tree.entries {
        let kind = match e.node {
            Node::Dir => Kind::Dir,
            Node::File(b) => Kind::File(b),
            Node::Symlink(t) => Kind::Symlink(t),
            Node::Template(t) => Kind::File(t.as_bytes().into()),
        };
        m.put(&e.path, kind, e.mode, e.stored.as_ref(), "archive")
            .map_err(|msg| Error::at_path(path, msg))?;
    }
    Ok(m)
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

impl ArchiveDiff {
    /// No file changes for the archive at `archive` of `entries` entries.
    fn same_files(archive: PathBuf, entries: usize) -> ArchiveDiff {
        ArchiveDiff {
            archive,
            entries,
            added: Vec::new(),
            removed: Vec::new(),
            changed: Vec::new(),
        }
    }
}

/// What building `plan` would do to its device's published archive, and the file changes:
/// created (no archive: every path added), unchanged (the same bytes), updated (other bytes;
/// compared path by path unless the tar inside is the same).
fn diff_device(
    p: &Project,
    plan: &DevicePlan,
    runs: &RunCache,
) -> Result<(PublishState, ArchiveDiff)> {
    let tar = archive::tar_bytes(&plan.manifest, p.site.mtime()).map_err(|e| match e {
        Error::Device { message, .. } => Error::device(plan.mac, message),
        e => e,
    })?;
    let gz = p.archive_bytes_with(plan, runs)?;
    let path = p.archive_path(&plan.mac);
    let entries = plan.manifest.entries.len();
    let Some(f) = archive::open_published(&path)? else {
        let d = compare_manifests(path, &plan.manifest, &Manifest::default());
        return Ok((PublishState::Created, d));
    };
    let mut old_gz = Vec::new();
    f.take(lbu::PUBLISHED_LIMITS.max_bytes + 1)
        .read_to_end(&mut old_gz)
        .at(&path)?;
    if old_gz == gz {
        return Ok((
            PublishState::Unchanged,
            ArchiveDiff::same_files(path, entries),
        ));
    }
    let mut old_tar = Vec::new();
    let same_tar = flate2::read::MultiGzDecoder::new(old_gz.as_slice())
        .take(tar.len() as u64 + 1)
        .read_to_end(&mut old_tar)
        .is_ok_and(|_| old_tar == tar);
    let d = if same_tar {
        ArchiveDiff::same_files(path, entries)
    } else {
        let old = read_published(&path, &old_gz)?;
        compare_manifests(path, &plan.manifest, &old)
    };
    Ok((PublishState::Updated, d))
}

/// How the manifest `new` differs from `old`, the one published at `archive`.
fn compare_manifests(archive: PathBuf, new: &Manifest, old: &Manifest) -> ArchiveDiff {
    let (new, old) = (&new.entries, &old.entries);
    let added = new.keys().filter(|k| !old.contains_key(*k)).cloned();
    let removed = old.keys().filter(|k| !new.contains_key(*k)).cloned();
    let mut changed = Vec::new();
    for (k, n) in new {
        let Some(o) = old.get(k) else { continue };
        let what = changes(o, n);
        // The build identity changes whenever anything else does: listing it would only say
        // that again (and set apart devices whose other changes are the same).
        if what.is_empty() || (k == IDENTITY_FILE && what == [Change::Content]) {
            continue;
        }
        let bytes = |e: &Entry| match &e.kind {
            Kind::File(b) if what.contains(&Change::Content) => Some(b.clone()),
            _ => None,
        };
        changed.push(Changed {
            path: k.clone(),
            old: bytes(o),
            new: bytes(n),
            what,
        });
    }
    ArchiveDiff {
        archive,
        entries: new.len(),
        added: added.collect(),
        removed: removed.collect(),
        changed,
    }
}

/// One device of `ovl diff`: what a build would do to its archive, and the file changes.
#[derive(Debug)]
pub(crate) struct DeviceDiff {
    /// The MAC.
    pub(crate) mac: Mac,
    /// The profile it is built with.
    pub(crate) profile: String,
    /// Created, updated, unchanged (the archive's bytes, as `ovl build` decides) or failed.
    pub(crate) state: PublishState,
    /// The planned hostname and the file changes; the error when the device fails.
    pub(crate) result: Result<(String, ArchiveDiff)>,
}

/// Compare the devices of `specs` with their published archives, in parallel, in MAC order.
pub(crate) fn diff_many(p: &Project, specs: &[DeviceSpec]) -> Vec<DeviceDiff> {
    let cache = p.read_layers(specs);
    let runs = RunCache::default();
    let mut out: Vec<DeviceDiff> = specs
        .par_iter()
        .map(|spec| {
            let r = (|| {
                let plan = p.plan(spec, &cache)?;
                let (state, d) = diff_device(p, &plan, &runs)?;
                Ok((state, plan.hostname.clone(), d))
            })();
            let (state, result) = match r {
                Ok((state, hostname, d)) => (state, Ok((hostname, d))),
                Err(e) => (PublishState::Failed, Err(e)),
            };
            DeviceDiff {
                mac: spec.mac,
                profile: spec.profile.clone(),
                state,
                result,
            }
        })
        .collect();
    out.sort_by_key(|d| d.mac);
    out
}

/// How `new` differs from `old`, in the order type, content, target, mode, owner.
fn changes(old: &Entry, new: &Entry) -> Vec<Change> {
    let mut what = Vec::new();
    if old.kind.name() != new.kind.name() {
        what.push(Change::Type);
    }
    let content = |e: &Entry| match &e.kind {
        Kind::File(b) => Some(b.clone()),
        _ => None,
    };
    if content(old) != content(new) {
        what.push(Change::Content);
    }
    let target = |e: &Entry| match &e.kind {
        Kind::Symlink(t) => Some(t.clone()),
        _ => None,
    };
    if target(old) != target(new) {
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

    fn entry<'a>(m: &'a Manifest, path: &str) -> &'a Entry {
        &m.entries[path]
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
        let what = changes(entry(&old, "etc/a"), entry(&new, "etc/a"));
        assert_eq!(
            what,
            [Change::Type, Change::Content, Change::Target, Change::Mode]
        );
        let names: Vec<_> = what.iter().map(|c| c.name()).collect();
        assert_eq!(
            serde_json::to_value(&what).unwrap(),
            serde_json::json!(names)
        );
        assert!(changes(entry(&old, "etc"), entry(&new, "etc")).is_empty());
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

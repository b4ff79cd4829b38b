//! The three-way merge of a device's lbu capture with the fleet (SPEC §5, README "Managing
//! the fleet"). Base = what the fleet gave the device in the build its capture names
//! ([`history`](crate::build::history)), device = the capture, fleet = the profile's current
//! result (the plan without the capture). Per path:
//!
//! - not changed by the device → the fleet's version;
//! - changed (or added) only by the device → the device's;
//! - changed by both, differently → a conflict, resolved by `[capture] conflicts` and always
//!   reported (a path the last merge resolved as a conflict stays one while the device keeps
//!   its version); `etc/apk/world` and `root/.ssh/authorized_keys` are merged line by line
//!   instead (packages and keys the device added or dropped, on top of the fleet's);
//! - deleted by the device → stays deleted unless the fleet changed it. A path the capture
//!   lacks counts as deleted only where lbu saves everything: a file or symlink the device was
//!   given under `etc/` (regular files under `etc/init.d/` excepted: apk protects only the
//!   links there) or under a `+` line of the capture's `etc/apk/protected_paths.d/lbu.list`,
//!   and not under a `-` line. lbu also skips a file equal to its package's copy: such a file
//!   counts as deleted too, and the device gets the package's copy — the same bytes;
//! - listed in the device's `discard` → the fleet's version;
//! - `etc/hostname` and the identity file always follow the fleet.
//!
//! Modes and owners count as changes. Folders are never deleted by a capture.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::Serialize;

use crate::build::compare::Change;
use crate::build::history::{FileState, Given, States};
use crate::build::layer::{LayerTree, Node};
use crate::build::manifest::{Entry, Kind, Manifest};
use crate::site::ConflictPolicy;
use crate::site::layout::{IDENTITY_DIR, IDENTITY_FILE};

/// Paths whose content always follows the fleet.
const FLEET_OWNED: [&str; 3] = ["etc/hostname", IDENTITY_DIR, IDENTITY_FILE];
/// Files merged line by line: sets of packages and of keys.
const LINE_MERGED: [&str; 2] = ["etc/apk/world", "root/.ssh/authorized_keys"];
/// lbu's include and exclude list, inside a capture.
const LBU_LIST: &str = "etc/apk/protected_paths.d/lbu.list";

/// What the device did to a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DriftChange {
    /// The device has it; its base (or, without one, the fleet) has not.
    Added,
    /// The device's differs from its base's (or, without one, the fleet's).
    Changed,
    /// The device dropped what it was given.
    Deleted,
}

/// Whose version the archive holds at a drifted path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Winner {
    /// The device's (or its deletion).
    Device,
    /// The fleet's.
    Fleet,
    /// Lines of both (`etc/apk/world`, `authorized_keys`), or the fleet's rules applied to
    /// the device's file (the NFS lines of `etc/fstab` and `etc/lbu/lbu.conf`).
    Merged,
}

/// One path where a device's capture differs from the fleet.
#[derive(Debug, Clone, Serialize)]
pub struct DriftItem {
    /// The path.
    pub path: String,
    /// What the device did.
    pub change: DriftChange,
    /// How the device's version differs from the fleet's (empty for deletions).
    pub(crate) what: Vec<Change>,
    /// The fleet changed the path since the device's base.
    pub fleet_changed: bool,
    /// Both changed it: resolved by `[capture] conflicts`.
    pub conflict: bool,
    /// Listed in the device's `discard`: the fleet's version wins.
    pub discarded: bool,
    /// Whose version the archive holds.
    pub winner: Winner,
    /// The device's state and bytes.
    #[serde(skip)]
    pub(crate) device: Option<(FileState, Option<Arc<[u8]>>)>,
    /// The fleet's state and bytes.
    #[serde(skip)]
    pub(crate) fleet: Option<(FileState, Option<Arc<[u8]>>)>,
}

impl DriftItem {
    /// A unified diff (two lines of context) from the fleet's text to the device's.
    pub(crate) fn unified_diff(&self) -> Option<String> {
        let old = self
            .fleet
            .as_ref()
            .map_or(Some(&b""[..]), |(_, b)| b.as_deref())?;
        let new = self
            .device
            .as_ref()
            .map_or(Some(&b""[..]), |(_, b)| b.as_deref())?;
        let (Ok(old), Ok(new)) = (std::str::from_utf8(old), std::str::from_utf8(new)) else {
            return None;
        };
        if old == new || old.contains('\0') || new.contains('\0') {
            return None;
        }
        let path = &self.path;
        Some(
            similar::TextDiff::from_lines(old, new)
                .unified_diff()
                .context_radius(2)
                .header(&format!("fleet/{path}"), &format!("device/{path}"))
                .to_string(),
        )
    }
}

/// What the merge needs.
pub(crate) struct Inputs<'a> {
    /// The manifest the device was given (its base).
    pub(crate) given: &'a Given,
    /// The capture.
    pub(crate) device: &'a LayerTree,
    /// The capture's label (site-relative path), the origin of the device's entries.
    pub(crate) label: &'a str,
    /// The fleet's manifest and states.
    pub(crate) fleet: (&'a Manifest, &'a States),
    /// `[capture] conflicts`.
    pub(crate) policy: ConflictPolicy,
    /// The device's `discard` paths.
    pub(crate) discard: &'a [String],
}

/// One path of the capture: its manifest entry and state.
struct Captured {
    entry: Entry,
    state: FileState,
}

/// The capture's paths (but the fleet-owned ones) as manifest entries with their states.
/// A file whose bytes equal the fleet's at the same path takes the fleet's digest: most of a
/// capture is what the fleet gave, and comparing bytes costs less than hashing them.
fn captured(
    tree: &LayerTree,
    label: &str,
    fleet: (&Manifest, &States),
) -> BTreeMap<String, Captured> {
    let mut out = BTreeMap::new();
    for e in &tree.entries {
        if is_fleet_owned(&e.path) {
            continue;
        }
        let kind = match &e.node {
            Node::Dir => Kind::Dir,
            Node::File(b) => Kind::File(b.clone()),
            Node::Symlink(t) => Kind::Symlink(t.clone()),
            Node::Template(t) => Kind::File(Arc::from(t.as_bytes())),
        };
        let (mode, uid, gid, user, group) = match &e.stored {
            Some(m) => (m.mode, m.uid, m.gid, m.user.clone(), m.group.clone()),
            None => (e.mode, 0, 0, String::new(), String::new()),
        };
        let known = match (&kind, fleet.0.entries.get(&e.path)) {
            (Kind::File(a), Some(f)) if matches!(&f.kind, Kind::File(b) if a == b) => {
                fleet.1.get(&e.path).and_then(|s| s.sha256.as_deref())
            }
            _ => None,
        };
        let state = FileState::with_digest(&kind, mode, (uid, gid), (&user, &group), known);
        let entry = Entry {
            kind,
            mode,
            uid,
            gid,
            user,
            group,
            origin: label.to_string(),
            explicit: true,
        };
        out.insert(e.path.clone(), Captured { entry, state });
    }
    out
}

/// Is `path` one of the fleet-owned paths?
fn is_fleet_owned(path: &str) -> bool {
    FLEET_OWNED.contains(&path)
}

/// Is `path` at or below one of `roots`?
pub(crate) fn under_any(path: &str, roots: &[String]) -> bool {
    roots.iter().any(|r| {
        path == r
            || path
                .strip_prefix(r.as_str())
                .is_some_and(|x| x.starts_with('/'))
    })
}

/// Where lbu saves everything a device holds (see the module's documentation).
struct Scope {
    include: Vec<String>,
    exclude: Vec<String>,
}

impl Scope {
    /// The scope of a capture with `lbu_list` (its `lbu.list`, if any).
    fn new(lbu_list: Option<&[u8]>) -> Scope {
        let mut s = Scope {
            include: Vec::new(),
            exclude: Vec::new(),
        };
        let text = lbu_list.map(String::from_utf8_lossy).unwrap_or_default();
        for line in text.lines() {
            let (list, rest) = match line.split_at_checked(1) {
                Some(("+", r)) => (&mut s.include, r),
                Some(("-", r)) => (&mut s.exclude, r),
                _ => continue,
            };
            if let Some(p) = crate::site::inventory::device_path(rest) {
                list.push(p);
            }
        }
        s
    }

    /// Would lbu have saved `path`, a file or symlink, had the device kept it?
    fn saves(&self, path: &str, state: &FileState) -> bool {
        if under_any(path, &self.exclude) {
            return false;
        }
        if under_any(path, &self.include) {
            return true;
        }
        path.starts_with("etc/") && (!path.starts_with("etc/init.d/") || state.kind == "symlink")
    }
}

/// Merge the capture into the fleet's manifest; returns the merged manifest and what the
/// device changes, each item's `winner` as decided here (the caller settles it against the
/// finished archive).
pub(crate) fn merge(i: &Inputs) -> (Manifest, Vec<DriftItem>) {
    let base = i.given.base();
    let dev = captured(i.device, i.label, i.fleet);
    let (fleet, _) = i.fleet;
    let lbu_list = i
        .device
        .entries
        .iter()
        .find(|e| e.path == LBU_LIST)
        .and_then(|e| match &e.node {
            Node::File(b) => Some(b.clone()),
            _ => None,
        })
        .or_else(|| file_bytes(&fleet.entries.get(LBU_LIST)?.kind));
    let mut m = Merger {
        i,
        base: &base,
        dev: &dev,
        scope: Scope::new(lbu_list.as_deref()),
        sticky: i.given.conflicts.iter().map(String::as_str).collect(),
        out: fleet.clone(),
        items: Vec::new(),
    };
    let paths: BTreeSet<&str> = base.keys().chain(dev.keys()).map(String::as_str).collect();
    for p in paths.into_iter().filter(|p| !is_fleet_owned(p)) {
        m.path(p);
    }
    repair_folders(&mut m.out, i.label);
    (m.out, m.items)
}

/// The merge under way.
struct Merger<'a> {
    i: &'a Inputs<'a>,
    base: &'a States,
    dev: &'a BTreeMap<String, Captured>,
    scope: Scope,
    /// The conflicts of the base's build.
    sticky: BTreeSet<&'a str>,
    /// The merged manifest so far (the fleet's to begin with).
    out: Manifest,
    items: Vec<DriftItem>,
}

impl Merger<'_> {
    /// What the device did to `p`, unless it did nothing or the fleet did the same.
    fn drift(&self, p: &str) -> Option<DriftItem> {
        let (fleet, fleet_states) = self.i.fleet;
        let (b, d, f) = (self.base.get(p), self.dev.get(p), fleet_states.get(p));
        let change = match (b, d) {
            (Some(b), Some(d)) if b.same(&d.state) => return None,
            (Some(_), Some(_)) => DriftChange::Changed,
            (None, Some(_)) => DriftChange::Added,
            (Some(b), None) if !b.is_dir() && self.scope.saves(p, b) => DriftChange::Deleted,
            _ => return None,
        };
        let agreed = match d {
            Some(d) => f.is_some_and(|f| f.same(&d.state)),
            None => f.is_none(),
        };
        (!agreed).then(|| DriftItem {
            path: p.to_string(),
            change,
            what: match (d, f) {
                (Some(d), Some(f)) => f.changes(&d.state),
                _ => Vec::new(),
            },
            fleet_changed: !same_opt(b, f),
            conflict: false,
            discarded: under_any(p, self.i.discard),
            winner: Winner::Fleet,
            device: d.map(|d| (d.state.clone(), file_bytes(&d.entry.kind))),
            fleet: f.map(|f| {
                let bytes = fleet.entries.get(p).and_then(|e| file_bytes(&e.kind));
                (f.clone(), bytes)
            }),
        })
    }

    /// Decide `p` by the rules of the module's documentation.
    fn path(&mut self, p: &str) {
        let Some(mut item) = self.drift(p) else {
            return;
        };
        let (fleet, _) = self.i.fleet;
        match self.dev.get(p) {
            _ if item.discarded => {}
            None => {
                // Deleted: stays deleted unless the fleet changed it.
                if !item.fleet_changed {
                    self.out.entries.remove(p);
                    item.winner = Winner::Device;
                }
            }
            Some(d)
                if d.entry.kind == Kind::Dir
                    && item.change == DriftChange::Added
                    && item.fleet.is_none() =>
            {
                // A folder only the device has: kept, not worth a line.
                self.out.entries.insert(p.to_string(), d.entry.clone());
                return;
            }
            Some(d) => {
                let merged = (item.fleet_changed && LINE_MERGED.contains(&p))
                    .then(|| merge_lines(p, self.i.given, self.base.get(p), d, fleet))
                    .flatten();
                if let Some(entry) = merged {
                    self.out.entries.insert(p.to_string(), entry);
                    item.winner = Winner::Merged;
                } else {
                    item.conflict = item.fleet_changed || self.sticky.contains(p);
                    if !item.conflict || self.i.policy == ConflictPolicy::Device {
                        take(&mut self.out, p, d.entry.clone());
                        item.winner = Winner::Device;
                    }
                }
            }
        }
        self.items.push(item);
    }
}

/// Neither or both present and the same.
fn same_opt(a: Option<&FileState>, b: Option<&FileState>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => a.same(b),
        _ => false,
    }
}

/// A file's bytes.
fn file_bytes(kind: &Kind) -> Option<Arc<[u8]>> {
    match kind {
        Kind::File(b) => Some(b.clone()),
        _ => None,
    }
}

/// Put the device's `entry` at `p`: a file replacing a folder takes the folder's contents
/// with it.
fn take(out: &mut Manifest, p: &str, entry: Entry) {
    let was_dir = matches!(out.entries.get(p), Some(e) if e.kind == Kind::Dir);
    if was_dir && entry.kind != Kind::Dir {
        out.remove(p);
    }
    out.entries.insert(p.to_string(), entry);
}

/// Give every entry a folder above it: a missing folder is created (0755, root), and an entry
/// below a file or symlink is dropped.
fn repair_folders(m: &mut Manifest, label: &str) {
    let paths: Vec<String> = m.entries.keys().cloned().collect();
    for p in paths {
        let mut at = 0;
        while let Some(i) = p[at..].find('/') {
            let parent = &p[..at + i];
            match m.entries.get(parent) {
                Some(e) if e.kind == Kind::Dir => {}
                Some(_) => {
                    m.entries.remove(&p);
                    break;
                }
                None => {
                    let dir = Entry {
                        kind: Kind::Dir,
                        mode: 0o755,
                        uid: 0,
                        gid: 0,
                        user: String::new(),
                        group: String::new(),
                        origin: label.to_string(),
                        explicit: false,
                    };
                    m.entries.insert(parent.to_string(), dir);
                }
            }
            at += i + 1;
        }
    }
}

/// `etc/apk/world` or `authorized_keys` both sides changed: the fleet's lines, without those
/// the device dropped from its base, with those it added; the device's mode and owner when it
/// changed them. `None` when a side is not a text file or the base's text was not kept.
fn merge_lines(
    p: &str,
    given: &Given,
    b: Option<&FileState>,
    d: &Captured,
    fleet: &Manifest,
) -> Option<Entry> {
    let lines = |bytes: &[u8]| -> Option<Vec<String>> {
        let text = std::str::from_utf8(bytes).ok()?;
        Some(
            text.lines()
                .map(str::to_string)
                .filter(|l| !l.trim().is_empty())
                .collect(),
        )
    };
    let base = match b {
        Some(b) => lines(given.text_of(b)?.as_bytes())?,
        None => Vec::new(),
    };
    let Kind::File(db) = &d.entry.kind else {
        return None;
    };
    let device = lines(db)?;
    let fe = fleet.entries.get(p)?;
    let Kind::File(fb) = &fe.kind else {
        return None;
    };
    let mut out: Vec<String> = lines(fb)?
        .into_iter()
        .filter(|l| !base.contains(l) || device.contains(l))
        .collect();
    for l in device {
        if !base.contains(&l) && !out.contains(&l) {
            out.push(l);
        }
    }
    if p == "etc/apk/world" {
        out.sort();
        out.dedup();
    }
    let text: String = out.iter().map(|l| format!("{l}\n")).collect();
    let meta_changed = b.is_some_and(|b| {
        (b.mode.as_str(), b.uid, b.gid) != (d.state.mode.as_str(), d.state.uid, d.state.gid)
    });
    let mut entry = if meta_changed {
        d.entry.clone()
    } else {
        fe.clone()
    };
    entry.kind = Kind::File(Arc::from(text.into_bytes()));
    Some(entry)
}

/// Without a known base, what the capture holds that the fleet has not or has otherwise
/// (the capture lies on top of the fleet's layers, as before the merge existed): every item
/// `added` or `changed`, none a deletion or a conflict.
pub(crate) fn compare(
    tree: &LayerTree,
    label: &str,
    fleet: (&Manifest, &States),
    discard: &[String],
) -> Vec<DriftItem> {
    let (fm, fs) = fleet;
    captured(tree, label, fleet)
        .into_iter()
        .filter(|(_, d)| d.entry.kind != Kind::Dir)
        .filter_map(|(p, d)| {
            let f = fs.get(&p);
            if f.is_some_and(|f| f.same(&d.state)) {
                return None;
            }
            Some(DriftItem {
                change: if f.is_some() {
                    DriftChange::Changed
                } else {
                    DriftChange::Added
                },
                what: f.map(|f| f.changes(&d.state)).unwrap_or_default(),
                fleet_changed: false,
                conflict: false,
                discarded: under_any(&p, discard),
                winner: Winner::Device,
                device: Some((d.state.clone(), file_bytes(&d.entry.kind))),
                fleet: f.map(|f| {
                    (
                        f.clone(),
                        fm.entries.get(&p).and_then(|e| file_bytes(&e.kind)),
                    )
                }),
                path: p,
            })
        })
        .collect()
}

/// Settle each item's winner against the finished archive's states.
pub(crate) fn settle(items: &mut [DriftItem], published: &States) {
    for it in items {
        let now = published.get(&it.path);
        let dev = it.device.as_ref().map(|(s, _)| s);
        let fleet = it.fleet.as_ref().map(|(s, _)| s);
        it.winner = if same_opt(now, dev) {
            Winner::Device
        } else if same_opt(now, fleet) {
            Winner::Fleet
        } else {
            Winner::Merged
        };
    }
}

#[cfg(test)]
mod tests;

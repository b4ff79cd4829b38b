//! Noticing changes to a site's inputs: stat snapshots and their differences, the file
//! system probe that chooses between inotify and polling, and the wait for the next change.
//!
//! This is the one change detector of ovl: `ovl watch` compares snapshots of every input,
//! `ovl serve` compares snapshots of the files a project is loaded from ([`project_inputs`],
//! through [`StableChange`]), and both use [`network_fs`] to tell which file systems hide
//! writes from inotify or make a `stat` wait on the network.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::io;
use std::mem::MaybeUninit;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::build::layer::{LayerSource, is_temporary_name};
use crate::build::project::Project;
use crate::error::{Error, Result};
use crate::site::layout::{self, DEVICES_FILE, SITE_FILE};

/// How changes are noticed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub(crate) enum Mode {
    /// inotify events wake a snapshot comparison.
    Inotify,
    /// A snapshot comparison every poll interval.
    Poll {
        /// Why: `--poll`, or the file system type (`nfs`, `cifs`, `smb2`, `fuse`).
        reason: String,
    },
}

/// The network or user-space file system `path` lives on (NFS, SMB, CIFS, SMB2, FUSE, 9P),
/// where inotify misses other clients' writes and a `stat` or a read may wait on the network;
/// `Ok(None)` for local file systems, `Err` when `statfs(2)` fails.
pub(crate) fn network_fs(path: &Path) -> io::Result<Option<&'static str>> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut st = MaybeUninit::<libc::statfs>::zeroed();
    // SAFETY: `c` is a NUL-terminated path and `st` a buffer of the size statfs(2) fills.
    if unsafe { libc::statfs(c.as_ptr(), st.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statfs succeeded, so it filled `st`.
    let st = unsafe { st.assume_init() };
    // Magic numbers from linux/magic.h and statfs(2); `f_type` is signed on some targets.
    #[allow(clippy::unnecessary_cast)]
    let magic = (st.f_type as u64 & 0xffff_ffff) as u32;
    Ok(match magic {
        0x6969 => Some("nfs"),
        0xFF53_4D42 => Some("cifs"),
        0xFE53_4D42 => Some("smb2"),
        0x517B => Some("smb"),
        0x6573_5546 => Some("fuse"),
        0x0102_1997 => Some("9p"),
        _ => None,
    })
}

/// Chooses inotify or polling for `root`: polling when asked to, or on a network or FUSE
/// file system; inotify elsewhere (also when the file system cannot be told).
pub(crate) fn detect_mode(root: &Path, force_poll: bool) -> Mode {
    if force_poll {
        return Mode::Poll {
            reason: "--poll".into(),
        };
    }
    match network_fs(root) {
        Ok(Some(fs)) => Mode::Poll { reason: fs.into() },
        Ok(None) | Err(_) => Mode::Inotify,
    }
}

/// The stat of one input path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stamp {
    mtime_ns: i128,
    ctime_ns: i128,
    size: u64,
    ino: u64,
    mode: u32,
}

impl Stamp {
    fn of(m: &std::fs::Metadata) -> Stamp {
        Stamp {
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
            ctime_ns: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
            size: m.size(),
            ino: m.ino(),
            mode: m.mode(),
        }
    }
}

/// A stat snapshot: every input path that exists, with its stamp.
pub(crate) type Stamps = BTreeMap<PathBuf, Stamp>;

/// The stamp of `path` itself (a symlink is not followed).
fn stamp(path: &Path) -> Option<Stamp> {
    std::fs::symlink_metadata(path).ok().map(|m| Stamp::of(&m))
}

/// The stamp of what `path` names (a symlink is followed: a settings file may be a link).
fn stamp_followed(path: &Path) -> Option<Stamp> {
    std::fs::metadata(path).ok().map(|m| Stamp::of(&m))
}

/// Is `path` one of the files a project is loaded from: `ovl.toml`, `devices.toml` or a
/// profile?
pub(crate) fn is_project_input(root: &Path, path: &Path) -> bool {
    path == root.join(SITE_FILE)
        || path == root.join(DEVICES_FILE)
        || path.parent() == Some(&root.join(layout::PROFILES_DIR))
}

/// Stats the files a project is loaded from: `ovl.toml`, `devices.toml`, `profiles/*.toml`.
pub(crate) fn project_inputs(root: &Path) -> Stamps {
    let mut snap = Stamps::new();
    for f in [SITE_FILE, DEVICES_FILE] {
        if let Some(s) = stamp_followed(&root.join(f)) {
            snap.insert(root.join(f), s);
        }
    }
    if let Ok(rd) = std::fs::read_dir(root.join(layout::PROFILES_DIR)) {
        for e in rd.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "toml")
                && let Some(s) = stamp_followed(&p)
            {
                snap.insert(p, s);
            }
        }
    }
    snap
}

/// The part of `snap` that [`project_inputs`] covers.
pub(crate) fn only_project_inputs(root: &Path, snap: &Stamps) -> Stamps {
    snap.iter()
        .filter(|(p, _)| is_project_input(root, p))
        .map(|(p, s)| (p.clone(), s.clone()))
        .collect()
}

/// Does a capture folder's file count as a capture (not `*.new`, a dated backup, or encrypted)?
fn is_capture_name(name: &str) -> bool {
    name.ends_with(".apkovl.tar.gz") && !name.starts_with('.')
}

fn walk_into(snap: &mut Stamps, dir: &Path, dirs: bool, keep: &dyn Fn(&str) -> bool) {
    for e in walkdir::WalkDir::new(dir)
        .follow_links(false)
        .into_iter()
        .filter_entry(|e| e.depth() == 0 || !e.file_name().to_str().is_some_and(is_temporary_name))
        .flatten()
    {
        let name = e.file_name().to_string_lossy();
        let is_dir = e.file_type().is_dir();
        if ((is_dir && dirs) || (!is_dir && keep(&name)))
            && let Some(s) = stamp(e.path())
        {
            snap.insert(e.path().to_path_buf(), s);
        }
    }
}

/// Stats every input of the site: settings, inventory, profiles, overlay trees, captures, and
/// the archive layers `project` names wherever they are.
pub(crate) fn snapshot(root: &Path, project: Option<&Project>) -> Stamps {
    let mut snap = project_inputs(root);
    walk_into(&mut snap, &root.join(layout::OVERLAYS_DIR), true, &|_| true);
    // Only capture files count there: not lbu's `*.new`, dated backups, encrypted copies, or
    // the folders `ovl build` creates.
    walk_into(
        &mut snap,
        &root.join(layout::CAPTURES_DIR),
        false,
        &is_capture_name,
    );
    if let Some(p) = project {
        let profile_layers = p
            .profiles
            .by_name
            .values()
            .flat_map(|prof| prof.overlays.iter().map(|o| o.value.as_str()));
        let device_layers = p
            .inventory
            .devices
            .values()
            .flat_map(|d| d.overlays.iter().map(String::as_str));
        for layer in profile_layers.chain(device_layers) {
            if let Ok(LayerSource::Archive(a)) = LayerSource::parse(root, layer)
                && let Some(s) = stamp(&a)
            {
                snap.insert(a, s);
            }
        }
    }
    snap
}

/// The paths whose stamp differs between `a` and `b`, including those only one of them has.
pub(crate) fn diff(a: &Stamps, b: &Stamps) -> BTreeSet<PathBuf> {
    let mut out: BTreeSet<PathBuf> = a
        .iter()
        .filter(|(k, v)| b.get(*k) != Some(v))
        .map(|(k, _)| k.clone())
        .collect();
    out.extend(b.keys().filter(|k| !a.contains_key(*k)).cloned());
    out
}

/// A change that counts only once it holds still: a snapshot that differs from the last
/// accepted one must be seen again, unchanged, on the next look (so a file caught
/// half-written, e.g. truncated, is not taken for the new one).
#[derive(Debug)]
pub(crate) struct StableChange {
    accepted: Stamps,
    pending: Option<Stamps>,
}

impl StableChange {
    /// Starts from `accepted`, the snapshot of what is in use now.
    pub(crate) fn new(accepted: Stamps) -> StableChange {
        StableChange {
            accepted,
            pending: None,
        }
    }

    /// Looks at `now`: true when it differs from the accepted snapshot and equals the
    /// previous look; it is then accepted.
    pub(crate) fn settled(&mut self, now: Stamps) -> bool {
        if self.accepted == now {
            self.pending = None;
            return false;
        }
        if self.pending.as_ref() != Some(&now) {
            self.pending = Some(now);
            return false;
        }
        self.accepted = now;
        self.pending = None;
        true
    }

    /// Accepts `now` (what was just loaded by someone else); false when it was accepted
    /// already.
    pub(crate) fn accept(&mut self, now: Stamps) -> bool {
        self.pending = None;
        if self.accepted == now {
            return false;
        }
        self.accepted = now;
        true
    }
}

/// Does an inotify event's path matter? Our own output and temporary files do not.
fn relevant(root: &Path, p: &Path) -> bool {
    let Ok(rel) = p.strip_prefix(root) else {
        return false;
    };
    let first = rel
        .components()
        .next()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .unwrap_or_default();
    // What ovl writes itself, and a repository's own folders, are never inputs.
    if layout::GENERATED.contains(&first.as_str()) || matches!(first.as_str(), ".git" | "target") {
        return false;
    }
    !p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| is_temporary_name(n) || n.ends_with(".new"))
}

/// What wakes the watch loop: inotify events on the site, or the poll timer.
pub(crate) struct Waker {
    root: PathBuf,
    mode: Mode,
    poll_interval: Duration,
    debounce: Duration,
    events: Receiver<notify::Result<notify::Event>>,
    /// Keeps the inotify watch alive (`None` when polling).
    _watcher: Option<notify::RecommendedWatcher>,
}

impl Waker {
    /// Starts watching `root` in `mode`; fails when inotify cannot be set up.
    pub(crate) fn new(
        root: &Path,
        mode: Mode,
        poll_interval: Duration,
        debounce: Duration,
    ) -> Result<Waker> {
        let (tx, events) = std::sync::mpsc::channel::<notify::Result<notify::Event>>();
        let watcher = match mode {
            Mode::Inotify => {
                use notify::Watcher;
                let mut w = notify::recommended_watcher(tx)
                    .map_err(|e| Error::Env(format!("inotify: {e}")))?;
                w.watch(root, notify::RecursiveMode::Recursive)
                    .map_err(|e| Error::Env(format!("inotify on {}: {e}", root.display())))?;
                Some(w)
            }
            Mode::Poll { .. } => None,
        };
        Ok(Waker {
            root: root.to_path_buf(),
            mode,
            poll_interval,
            debounce,
            events,
            _watcher: watcher,
        })
    }

    /// Blocks until something may have changed: an inotify burst has gone quiet, or the poll
    /// interval has passed. Returns early when `stop` is set.
    pub(crate) fn wait(&self, stop: &AtomicBool) {
        match self.mode {
            Mode::Poll { .. } => {
                let until = Instant::now() + self.poll_interval;
                while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK.min(until.saturating_duration_since(Instant::now())));
                }
            }
            Mode::Inotify => {
                if self.wait_for_event(stop) {
                    self.debounce(stop);
                }
            }
        }
    }

    /// Waits for a relevant inotify event; false when `stop` was set or the events ended
    /// (then after one poll interval).
    fn wait_for_event(&self, stop: &AtomicBool) -> bool {
        let is_relevant = |ev: &notify::Result<notify::Event>| match ev {
            // Reads (ours included) are not changes.
            Ok(e) if matches!(e.kind, notify::EventKind::Access(_)) => false,
            Ok(e) => e.paths.iter().any(|p| relevant(&self.root, p)),
            // Overflow or other trouble: compare snapshots to be sure.
            Err(_) => true,
        };
        loop {
            if stop.load(Ordering::Relaxed) {
                return false;
            }
            match self.events.recv_timeout(TICK) {
                Ok(ev) if is_relevant(&ev) => return true,
                Ok(_) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(self.poll_interval);
                    return false;
                }
            }
        }
    }

    /// Waits until the burst has been quiet for the debounce time, at most 2 s.
    fn debounce(&self, stop: &AtomicBool) {
        let cap = Instant::now() + Duration::from_secs(2);
        while Instant::now() < cap && !stop.load(Ordering::Relaxed) {
            if self.events.recv_timeout(self.debounce).is_err() {
                break;
            }
        }
    }
}

/// How often a wait looks at the stop flag.
const TICK: Duration = Duration::from_millis(50);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_disks_are_not_network_file_systems() {
        let dir = tempfile::tempdir().unwrap();
        // /tmp may be tmpfs or a disk, never NFS in a test run.
        assert_eq!(network_fs(dir.path()).unwrap(), None);
        assert!(network_fs(&dir.path().join("missing")).is_err());
        assert_eq!(detect_mode(dir.path(), false), Mode::Inotify);
        assert_eq!(
            detect_mode(dir.path(), true),
            Mode::Poll {
                reason: "--poll".into()
            }
        );
    }

    #[test]
    fn a_change_counts_once_it_holds_still() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let toml = root.join(SITE_FILE);
        std::fs::write(&toml, "a").unwrap();
        let mut c = StableChange::new(project_inputs(root));
        assert!(!c.settled(project_inputs(root)), "nothing changed");
        std::fs::write(&toml, "bb").unwrap();
        assert!(!c.settled(project_inputs(root)), "first sight waits");
        assert!(c.settled(project_inputs(root)), "stable");
        assert!(!c.settled(project_inputs(root)), "accepted");
        std::fs::create_dir(root.join("profiles")).unwrap();
        std::fs::write(root.join("profiles/S.toml"), "").unwrap();
        std::fs::write(root.join("profiles/notes.txt"), "").unwrap();
        let now = project_inputs(root);
        assert_eq!(now.len(), 2, "ovl.toml and the profile: {now:?}");
        assert!(c.accept(now.clone()));
        assert!(!c.accept(now));
    }

    #[test]
    fn diff_names_changed_new_and_gone_paths() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("overlays/a")).unwrap();
        std::fs::write(root.join("overlays/a/f"), "1").unwrap();
        std::fs::write(root.join("overlays/a/g"), "1").unwrap();
        let before = snapshot(root, None);
        std::fs::write(root.join("overlays/a/f"), "22").unwrap();
        std::fs::remove_file(root.join("overlays/a/g")).unwrap();
        std::fs::write(root.join("overlays/a/h"), "1").unwrap();
        let changed = diff(&before, &snapshot(root, None));
        let names: Vec<String> = changed
            .iter()
            .map(|p| p.strip_prefix(root).unwrap().display().to_string())
            .collect();
        assert!(names.contains(&"overlays/a/f".to_string()), "{names:?}");
        assert!(names.contains(&"overlays/a/g".to_string()), "{names:?}");
        assert!(names.contains(&"overlays/a/h".to_string()), "{names:?}");
    }
}

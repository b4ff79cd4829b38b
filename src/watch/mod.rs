//! `ovl watch`: one full build, then rebuilds of exactly the archives whose inputs changed
//! (SPEC §5). Changes are found by comparing stat snapshots of the site's inputs, woken by
//! inotify on local disks, or by a timer on NFS, CIFS/SMB and FUSE mounts, where inotify never
//! sees other clients' writes. Broken input is reported and the last good archives stay.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::build::layer::{LayerSource, is_temporary_name};
use crate::build::plan::{self, DeviceSpec};
use crate::build::project::{OutcomeResult, Project, Selection, millis};
use crate::build::publish::Published;
use crate::error::{Error, Result};
use crate::mac::Mac;
use crate::site::inventory::Device;
use crate::site::{DEVICES_FILE, SITE_FILE, Site};

/// How `ovl watch` runs.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// Poll even where inotify would work.
    pub force_poll: bool,
    /// Time between two polls.
    pub poll_interval: Duration,
    /// Quiet time that ends a burst of events (an editor's save, an lbu rename).
    pub debounce: Duration,
    /// Remove the archives of devices deleted from the inventory.
    pub prune: bool,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            force_poll: false,
            poll_interval: Duration::from_secs(1),
            debounce: Duration::from_millis(100),
            prune: false,
        }
    }
}

/// How changes are noticed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum Mode {
    /// inotify events wake a snapshot comparison.
    Inotify,
    /// A snapshot comparison every poll interval.
    Poll {
        /// Why: `--poll`, or the file system type (`nfs`, `cifs`, `smb2`, `fuse`).
        reason: String,
    },
}

/// The network or user-space file system `path` lives on, where inotify misses other
/// clients' writes; `None` for local file systems.
pub fn network_fs(path: &Path) -> Option<&'static str> {
    let st = rustix::fs::statfs(path).ok()?;
    // Magic numbers from linux/magic.h and statfs(2).
    match st.f_type as i64 as u32 {
        0x6969 => Some("nfs"),
        0xFF53_4D42 => Some("cifs"),
        0xFE53_4D42 => Some("smb2"),
        0x517B => Some("smb"),
        0x6573_5546 => Some("fuse"),
        0x0102_1997 => Some("9p"),
        _ => None,
    }
}

/// Choose inotify or polling for `root`.
pub fn detect_mode(root: &Path, force_poll: bool) -> Mode {
    if force_poll {
        return Mode::Poll {
            reason: "--poll".into(),
        };
    }
    match network_fs(root) {
        Some(fs) => Mode::Poll { reason: fs.into() },
        None => Mode::Inotify,
    }
}

/// What `ovl watch` reports, one per line (text) or JSON object.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum Report {
    /// Watching started.
    Start {
        /// The site.
        site: PathBuf,
        /// inotify or polling, and why.
        #[serde(flatten)]
        mode: Mode,
        /// Poll interval in milliseconds, when polling.
        poll_interval_ms: Option<u64>,
    },
    /// Archives were (re)built.
    Rebuild {
        /// The MACs rebuilt, with what happened to each.
        devices: Vec<DeviceResult>,
        /// What changed (site-relative paths).
        cause: Vec<String>,
        /// Wall time in milliseconds.
        duration_ms: u64,
    },
    /// Archives of devices gone from the inventory were removed (`--prune`).
    Pruned {
        /// Their MACs.
        macs: Vec<Mac>,
    },
    /// Input is broken; the last good archives stay published.
    Error {
        /// The error with its location.
        error: String,
        /// What changed.
        cause: Vec<String>,
    },
    /// Watching ended.
    Stop,
}

/// One device of a rebuild.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceResult {
    /// The MAC.
    pub mac: Mac,
    /// `created`, `updated`, `unchanged` or `failed`.
    pub state: String,
    /// The error, when failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |v: &[String]| {
            if v.len() > 5 {
                format!("{} and {} more", v[..5].join(", "), v.len() - 5)
            } else {
                v.join(", ")
            }
        };
        match self {
            Report::Start {
                site,
                mode,
                poll_interval_ms,
            } => match mode {
                Mode::Inotify => write!(f, "watching {} (inotify)", site.display()),
                Mode::Poll { reason } => write!(
                    f,
                    "watching {} (polling every {} ms: {reason})",
                    site.display(),
                    poll_interval_ms.unwrap_or(0)
                ),
            },
            Report::Rebuild {
                devices,
                cause,
                duration_ms,
            } => {
                let failed = devices.iter().filter(|d| d.state == "failed").count();
                let items: Vec<String> = devices
                    .iter()
                    .map(|d| format!("{} {}", d.mac, d.state))
                    .collect();
                write!(
                    f,
                    "rebuilt {} archive{} in {:.3}s ({}){}: {}",
                    devices.len(),
                    if devices.len() == 1 { "" } else { "s" },
                    *duration_ms as f64 / 1000.0,
                    list(cause),
                    if failed > 0 {
                        format!(", {failed} failed")
                    } else {
                        String::new()
                    },
                    list(&items)
                )
            }
            Report::Pruned { macs } => {
                let items: Vec<String> = macs.iter().map(Mac::to_string).collect();
                write!(f, "pruned {}", list(&items))
            }
            Report::Error { error, cause } => {
                write!(
                    f,
                    "error: {error} (after {}); the last good archives stay published",
                    list(cause)
                )
            }
            Report::Stop => write!(f, "stopped"),
        }
    }
}

/// The stat of one input path.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    mtime_ns: i128,
    ctime_ns: i128,
    size: u64,
    ino: u64,
    mode: u32,
}

type Snapshot = BTreeMap<PathBuf, Stamp>;

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::symlink_metadata(path).ok()?;
    Some(Stamp {
        mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        ctime_ns: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
        size: m.size(),
        ino: m.ino(),
        mode: m.mode(),
    })
}

/// Does a capture folder's file count as a capture (not `*.new`, a dated backup, or encrypted)?
fn is_capture_name(name: &str) -> bool {
    name.ends_with(".apkovl.tar.gz") && !name.starts_with('.')
}

fn walk_into(snap: &mut Snapshot, dir: &Path, dirs: bool, keep: &dyn Fn(&str) -> bool) {
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

/// Stat every input of the site: settings, inventory, profiles, overlay trees, captures, and
/// archive layers wherever they are.
fn snapshot(root: &Path, project: Option<&Project>) -> Snapshot {
    let mut snap = Snapshot::new();
    for f in [SITE_FILE, DEVICES_FILE] {
        if let Some(s) = stamp(&root.join(f)) {
            snap.insert(root.join(f), s);
        }
    }
    if let Ok(rd) = std::fs::read_dir(root.join("profiles")) {
        for e in rd.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "toml")
                && let Some(s) = stamp(&p)
            {
                snap.insert(p, s);
            }
        }
    }
    walk_into(&mut snap, &root.join("overlays"), true, &|_| true);
    // Only capture files count there: not lbu's `*.new`, dated backups, encrypted copies, or
    // the folders `ovl build` creates.
    walk_into(&mut snap, &root.join("captures"), false, &is_capture_name);
    if let Some(p) = project {
        for prof in p.profiles.by_name.values() {
            for o in &prof.overlays {
                if let Ok(LayerSource::Archive(a)) = LayerSource::parse(root, &o.value)
                    && let Some(s) = stamp(&a)
                {
                    snap.insert(a, s);
                }
            }
        }
        for d in p.inventory.devices.values() {
            for o in &d.overlays {
                if let Ok(LayerSource::Archive(a)) = LayerSource::parse(root, o)
                    && let Some(s) = stamp(&a)
                {
                    snap.insert(a, s);
                }
            }
        }
    }
    snap
}

fn diff(a: &Snapshot, b: &Snapshot) -> BTreeSet<PathBuf> {
    let mut out: BTreeSet<PathBuf> = a
        .iter()
        .filter(|(k, v)| b.get(*k) != Some(v))
        .map(|(k, _)| k.clone())
        .collect();
    out.extend(b.keys().filter(|k| !a.contains_key(*k)).cloned());
    out
}

fn same_device(a: &Device, b: &Device) -> bool {
    a.profile == b.profile
        && a.hostname == b.hostname
        && a.ip == b.ip
        && a.overlays == b.overlays
        && a.vars == b.vars
}

/// The devices whose archive depends on a changed path, with the causes, and the devices
/// that left the inventory.
pub fn affected(
    old: Option<&Project>,
    new: &Project,
    changed: &BTreeSet<PathBuf>,
) -> (BTreeMap<Mac, BTreeSet<String>>, Vec<Mac>) {
    let root = &new.site.root;
    let rel = |p: &Path| p.strip_prefix(root).unwrap_or(p).display().to_string();
    let mut out: BTreeMap<Mac, BTreeSet<String>> = BTreeMap::new();
    let all = || new.inventory.devices.keys().copied().collect::<Vec<_>>();
    let Some(old) = old else {
        for m in all() {
            out.entry(m).or_default().insert("initial build".into());
        }
        return (out, Vec::new());
    };
    let removed: Vec<Mac> = old
        .inventory
        .devices
        .keys()
        .filter(|m| !new.inventory.devices.contains_key(m))
        .copied()
        .collect();
    // Each device's capture folder and layers, worked out once (they read the captures
    // folder) and only when a layer path changed.
    let device_inputs = || -> BTreeMap<Mac, (PathBuf, Vec<LayerSource>)> {
        new.inventory
            .devices
            .iter()
            .map(|(mac, d)| {
                let spec = DeviceSpec {
                    mac: *mac,
                    profile: d.profile.clone(),
                    device: Some(d.clone()),
                };
                let sources = new
                    .profiles
                    .get(&d.profile)
                    .ok()
                    .and_then(|p| plan::layer_sources(&new.site, p, &spec).ok())
                    .unwrap_or_default();
                (
                    *mac,
                    (new.site.captures_dir().join(mac.to_string()), sources),
                )
            })
            .collect()
    };
    let mut inputs: Option<BTreeMap<Mac, (PathBuf, Vec<LayerSource>)>> = None;
    for path in changed {
        let cause = rel(path);
        if path == &root.join(SITE_FILE) {
            for m in all() {
                out.entry(m).or_default().insert(cause.clone());
            }
        } else if path == &root.join(DEVICES_FILE) {
            for (mac, d) in &new.inventory.devices {
                if old
                    .inventory
                    .devices
                    .get(mac)
                    .is_none_or(|o| !same_device(o, d))
                {
                    out.entry(*mac).or_default().insert(cause.clone());
                }
            }
        } else if path.parent() == Some(&root.join("profiles")) {
            let Some(name) = path.file_stem().and_then(|s| s.to_str()) else {
                continue;
            };
            let mut profiles = new.profiles.descendants_of(name);
            profiles.extend(old.profiles.descendants_of(name));
            for (mac, d) in &new.inventory.devices {
                if profiles.contains(&d.profile) {
                    out.entry(*mac).or_default().insert(cause.clone());
                }
            }
        } else {
            for (mac, (capture_dir, sources)) in inputs.get_or_insert_with(device_inputs) {
                let hit = path.starts_with(&*capture_dir)
                    || sources.iter().any(|s| match s {
                        LayerSource::Folder(f) => path.starts_with(f),
                        LayerSource::Archive(a) => path == a,
                    });
                if hit {
                    out.entry(*mac).or_default().insert(cause.clone());
                }
            }
        }
    }
    (out, removed)
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
    if matches!(
        first.as_str(),
        "configs" | ".ovl-tmp" | ".ovl-state" | ".git" | "target" | "gpxe-script" | "boot.ipxe"
    ) {
        return false;
    }
    !p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| is_temporary_name(n) || n.ends_with(".new"))
}

/// Run watch mode on the site at `root` until `stop` is set; every report goes to `report`.
/// Returns an error only when watching cannot start (e.g. inotify unavailable).
pub fn run(
    root: &Path,
    opts: &WatchOptions,
    stop: Arc<AtomicBool>,
    report: &mut dyn FnMut(Report),
) -> Result<()> {
    let mode = detect_mode(root, opts.force_poll);
    report(Report::Start {
        site: root.to_path_buf(),
        mode: mode.clone(),
        poll_interval_ms: matches!(mode, Mode::Poll { .. })
            .then(|| opts.poll_interval.as_millis() as u64),
    });
    let (tx, rx) = std::sync::mpsc::channel::<notify::Result<notify::Event>>();
    let _watcher = match mode {
        Mode::Inotify => {
            use notify::Watcher;
            let mut w =
                notify::recommended_watcher(tx).map_err(|e| Error::Env(format!("inotify: {e}")))?;
            w.watch(root, notify::RecursiveMode::Recursive)
                .map_err(|e| Error::Env(format!("inotify on {}: {e}", root.display())))?;
            Some(w)
        }
        Mode::Poll { .. } => None,
    };

    let mut project: Option<Project> = None;
    let mut snap = Snapshot::new();
    let mut pending: BTreeSet<PathBuf> = BTreeSet::new();
    let mut first = true;
    while !stop.load(Ordering::Relaxed) {
        if !first {
            wait_for_change(&mode, &rx, root, opts, &stop);
            if stop.load(Ordering::Relaxed) {
                break;
            }
        }
        let new_snap = snapshot(root, project.as_ref());
        let changed = diff(&snap, &new_snap);
        // A broken save waits for the next change; pending causes join it then.
        if !first && changed.is_empty() {
            continue;
        }
        let mut causes: BTreeSet<PathBuf> = std::mem::take(&mut pending);
        causes.extend(changed);
        snap = new_snap;
        let start = Instant::now();
        let rel_causes: Vec<String> = if first && project.is_none() {
            vec!["initial build".to_string()]
        } else {
            causes
                .iter()
                .map(|p| p.strip_prefix(root).unwrap_or(p).display().to_string())
                .collect()
        };
        let reload_needed = project.is_none()
            || causes.iter().any(|p| {
                p == &root.join(SITE_FILE)
                    || p == &root.join(DEVICES_FILE)
                    || p.parent() == Some(&root.join("profiles"))
            });
        let new_project = if reload_needed {
            match Site::open(root).and_then(Project::load) {
                Ok(p) => p,
                Err(e) => {
                    report(Report::Error {
                        error: e.to_string(),
                        cause: rel_causes,
                    });
                    pending = causes;
                    first = false;
                    continue;
                }
            }
        } else {
            match &project {
                Some(p) => p.clone(),
                None => continue,
            }
        };
        // Stat again with the new project's archive layers before building, so that anything
        // written from now on is seen by the next comparison.
        let with_layers = snapshot(root, Some(&new_project));
        causes.extend(diff(&snap, &with_layers));
        snap = with_layers;
        let (targets, removed) = if first {
            affected(None, &new_project, &causes)
        } else {
            affected(project.as_ref(), &new_project, &causes)
        };
        let specs: Vec<DeviceSpec> = new_project
            .select(&Selection {
                all: true,
                ..Default::default()
            })
            .unwrap_or_default()
            .into_iter()
            .filter(|s| targets.contains_key(&s.mac))
            .collect();
        let outcomes = new_project.build_until(&specs, &|| {}, &stop);
        if (first || causes.iter().any(|p| p == &root.join(SITE_FILE)))
            && let Err(e) = new_project.write_boot_scripts()
        {
            report(Report::Error {
                error: e.to_string(),
                cause: rel_causes.clone(),
            });
        }
        if !outcomes.is_empty() {
            let devices = outcomes
                .iter()
                .map(|o| match &o.result {
                    OutcomeResult::Built { state, .. } => DeviceResult {
                        mac: o.mac,
                        state: match state {
                            Published::Created => "created",
                            Published::Updated => "updated",
                            Published::Unchanged => "unchanged",
                        }
                        .into(),
                        error: None,
                    },
                    OutcomeResult::Failed { error, .. } => DeviceResult {
                        mac: o.mac,
                        state: "failed".into(),
                        error: Some(error.to_string()),
                    },
                })
                .collect();
            report(Report::Rebuild {
                devices,
                cause: rel_causes.clone(),
                duration_ms: millis(start),
            });
        }
        if opts.prune && !removed.is_empty() {
            let mut gone = Vec::new();
            for m in removed {
                let p = new_project.archive_path(&m);
                match std::fs::remove_file(&p) {
                    Ok(()) => gone.push(m),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => report(Report::Error {
                        error: Error::io(&p, e).to_string(),
                        cause: rel_causes.clone(),
                    }),
                }
            }
            if !gone.is_empty() {
                report(Report::Pruned { macs: gone });
            }
        }
        project = Some(new_project);
        first = false;
    }
    report(Report::Stop);
    Ok(())
}

/// Block until something may have changed: an inotify burst has gone quiet, or the poll
/// interval has passed. Returns early when `stop` is set.
fn wait_for_change(
    mode: &Mode,
    rx: &std::sync::mpsc::Receiver<notify::Result<notify::Event>>,
    root: &Path,
    opts: &WatchOptions,
    stop: &AtomicBool,
) {
    let tick = Duration::from_millis(50);
    match mode {
        Mode::Poll { .. } => {
            let until = Instant::now() + opts.poll_interval;
            while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                std::thread::sleep(tick.min(until.saturating_duration_since(Instant::now())));
            }
        }
        Mode::Inotify => {
            let is_relevant = |ev: &notify::Result<notify::Event>| match ev {
                // Reads (ours included) are not changes.
                Ok(e) if matches!(e.kind, notify::EventKind::Access(_)) => false,
                Ok(e) => e.paths.iter().any(|p| relevant(root, p)),
                // Overflow or other trouble: compare snapshots to be sure.
                Err(_) => true,
            };
            // Wait for a relevant event.
            loop {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                match rx.recv_timeout(tick) {
                    Ok(ev) if is_relevant(&ev) => break,
                    Ok(_) | Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                        std::thread::sleep(opts.poll_interval);
                        return;
                    }
                }
            }
            // Debounce: wait until the burst has been quiet for `debounce`, at most 2 s.
            let cap = Instant::now() + Duration::from_secs(2);
            while Instant::now() < cap && !stop.load(Ordering::Relaxed) {
                match rx.recv_timeout(opts.debounce) {
                    Ok(_) => continue,
                    Err(_) => break,
                }
            }
        }
    }
}

//! `ovl watch`: one full build, then rebuilds of exactly the archives whose inputs changed
//! (SPEC §5). Changes are found by comparing stat snapshots of the site's inputs, woken by
//! inotify on local disks, or by a timer on NFS, CIFS/SMB and FUSE mounts, where inotify never
//! sees other clients' writes. Broken input is reported and the last good archives stay.
//!
//! This module owns the loop (`run`); `changes` finds what changed (and is the change
//! detector `ovl serve` uses too), `affected` which devices that touches, `report` what is
//! said about it. Under `ovl serve --watch`, each project the loop loads is handed to the
//! server (`Feed`), so one detection and one reload serve both.

mod affected;
pub(crate) mod changes;
mod report;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::build::plan::DeviceSpec;
use crate::build::project::{Project, Selection, millis};
use crate::error::{Error, Result};
use crate::site::{SITE_FILE, Site};
use changes::{Stamps, Waker, detect_mode, diff, is_project_input, only_project_inputs, snapshot};

pub(crate) use changes::Mode;
pub(crate) use report::{DeviceResult, Report};

/// How `ovl watch` runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WatchOptions {
    /// Poll even where inotify would work.
    pub(crate) force_poll: bool,
    /// Time between two polls.
    pub(crate) poll_interval: Duration,
    /// Quiet time that ends a burst of events (an editor's save, an lbu rename).
    pub(crate) debounce: Duration,
    /// Remove the archives of devices deleted from the inventory.
    pub(crate) prune: bool,
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

/// Told about every project the loop loads after its files changed, and about every load
/// that failed: how `ovl serve --watch` keeps its live project current.
pub(crate) trait Feed {
    /// `project` was loaded from the files whose stamps are `inputs`.
    fn loaded(&self, project: &Project, inputs: Stamps);
    /// Loading failed with `error`; the last good project stays.
    fn failed(&self, error: &Error);
}

/// Run watch mode on the site at `root` until `stop` is set; every report goes to `report`.
/// Returns an error only when watching cannot start (e.g. inotify unavailable).
pub(crate) fn run(
    root: &Path,
    opts: &WatchOptions,
    stop: Arc<AtomicBool>,
    report: &mut dyn FnMut(Report),
) -> Result<()> {
    run_feeding(root, opts, &stop, report, None)
}

/// `run`, handing every project loaded after a change (and every failed load) to `feed`.
pub(crate) fn run_feeding(
    root: &Path,
    opts: &WatchOptions,
    stop: &AtomicBool,
    report: &mut dyn FnMut(Report),
    feed: Option<&dyn Feed>,
) -> Result<()> {
    let mode = detect_mode(root, opts.force_poll);
    report(Report::Start {
        site: root.to_path_buf(),
        mode: mode.clone(),
        poll_interval_ms: matches!(mode, Mode::Poll { .. })
            .then(|| opts.poll_interval.as_millis() as u64),
    });
    let waker = Waker::new(root, mode, opts.poll_interval, opts.debounce)?;
    let mut state = Loop {
        root,
        prune: opts.prune,
        stop,
        report,
        feed,
        project: None,
        snap: Stamps::new(),
        pending: BTreeSet::new(),
        first: true,
    };
    while !stop.load(Ordering::Relaxed) {
        if !state.first {
            waker.wait(stop);
            if stop.load(Ordering::Relaxed) {
                break;
            }
        }
        state.step();
    }
    (state.report)(Report::Stop);
    Ok(())
}

/// A flag for `run` that the first SIGINT or SIGTERM sets. The signals are caught from the
/// moment this returns, by a small thread waiting on them with its own tokio runtime.
pub(crate) fn stop_on_signals() -> Result<Arc<AtomicBool>> {
    use tokio::signal::unix::{SignalKind, signal};
    let env = |what: &str, e: std::io::Error| Error::Env(format!("signal handler ({what}): {e}"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| env("runtime", e))?;
    let (mut int, mut term) = {
        let _in_runtime = rt.enter();
        (
            signal(SignalKind::interrupt()).map_err(|e| env("SIGINT", e))?,
            signal(SignalKind::terminate()).map_err(|e| env("SIGTERM", e))?,
        )
    };
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    std::thread::Builder::new()
        .name("ovl-signals".into())
        .spawn(move || {
            rt.block_on(async {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
            });
            flag.store(true, Ordering::Relaxed);
        })
        .map_err(|e| env("thread", e))?;
    Ok(stop)
}

/// The state of the watch loop between two wake-ups.
struct Loop<'a> {
    root: &'a Path,
    prune: bool,
    stop: &'a AtomicBool,
    report: &'a mut dyn FnMut(Report),
    feed: Option<&'a dyn Feed>,
    /// The last good project (`None` until one loads).
    project: Option<Project>,
    /// The inputs as last compared.
    snap: Stamps,
    /// Causes of a broken save, joined to the next change.
    pending: BTreeSet<PathBuf>,
    first: bool,
}

impl Loop<'_> {
    /// Compares the inputs with the last snapshot and, when something changed (or on the
    /// first pass), reloads the project if needed and rebuilds what is affected.
    fn step(&mut self) {
        let root = self.root;
        let new_snap = snapshot(root, self.project.as_ref());
        let changed = diff(&self.snap, &new_snap);
        // A broken save waits for the next change; pending causes join it then.
        if !self.first && changed.is_empty() {
            return;
        }
        let mut causes: BTreeSet<PathBuf> = std::mem::take(&mut self.pending);
        causes.extend(changed);
        self.snap = new_snap;
        let start = Instant::now();
        let rel_causes: Vec<String> = if self.first && self.project.is_none() {
            vec!["initial build".to_string()]
        } else {
            causes
                .iter()
                .map(|p| p.strip_prefix(root).unwrap_or(p).display().to_string())
                .collect()
        };
        let Some(new_project) = self.load(&causes, &rel_causes) else {
            self.pending = causes;
            self.first = false;
            return;
        };
        // Stat again with the new project's archive layers before building, so that anything
        // written from now on is seen by the next comparison.
        let with_layers = snapshot(root, Some(&new_project));
        causes.extend(diff(&self.snap, &with_layers));
        self.snap = with_layers;
        self.rebuild(&new_project, &causes, &rel_causes, start);
        self.project = Some(new_project);
        self.first = false;
    }

    /// The project to build with: loaded again when its files changed (or none is loaded
    /// yet), else the last one. `None` when loading failed (reported).
    fn load(&mut self, causes: &BTreeSet<PathBuf>, rel_causes: &[String]) -> Option<Project> {
        let reload_needed =
            self.project.is_none() || causes.iter().any(|p| is_project_input(self.root, p));
        if !reload_needed {
            return self.project.clone();
        }
        match Site::open(self.root).and_then(Project::load) {
            Ok(p) => {
                if let Some(feed) = self.feed {
                    feed.loaded(&p, only_project_inputs(self.root, &self.snap));
                }
                Some(p)
            }
            Err(e) => {
                (self.report)(Report::Error {
                    error: e.clone(),
                    cause: rel_causes.to_vec(),
                });
                if let Some(feed) = self.feed {
                    feed.failed(&e);
                }
                None
            }
        }
    }

    /// Rebuilds the devices `causes` affect, rewrites the boot scripts when the settings
    /// changed, and prunes archives of devices that left the inventory (`--prune`).
    fn rebuild(
        &mut self,
        project: &Project,
        causes: &BTreeSet<PathBuf>,
        rel_causes: &[String],
        start: Instant,
    ) {
        let (targets, removed) = affected::affected(self.project.as_ref(), project, causes);
        let specs: Vec<DeviceSpec> = project
            .select(&Selection {
                all: true,
                ..Default::default()
            })
            .unwrap_or_default()
            .into_iter()
            .filter(|s| targets.contains_key(&s.mac))
            .collect();
        let outcomes = project.build_until(&specs, &|| {}, self.stop);
        // Fed to `ovl serve`'s HTTP server, the server writes the scripts: they name the
        // address it really listens on.
        if self.feed.is_none()
            && (self.first || causes.iter().any(|p| p == &self.root.join(SITE_FILE)))
            && let Err(e) = project.write_boot_scripts()
        {
            (self.report)(Report::Error {
                error: e,
                cause: rel_causes.to_vec(),
            });
        }
        if !outcomes.is_empty() {
            (self.report)(Report::Rebuild {
                devices: outcomes.iter().map(DeviceResult::from).collect(),
                cause: rel_causes.to_vec(),
                duration_ms: millis(start),
            });
        }
        if self.prune && !removed.is_empty() {
            self.prune_archives(project, removed, rel_causes);
        }
    }

    /// Removes the archives of `removed` devices; reports what went.
    fn prune_archives(
        &mut self,
        project: &Project,
        removed: Vec<crate::mac::Mac>,
        rel_causes: &[String],
    ) {
        let mut gone = Vec::new();
        for m in removed {
            let p = project.archive_path(&m);
            match std::fs::remove_file(&p) {
                Ok(()) => gone.push(m),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => (self.report)(Report::Error {
                    error: Error::io(&p, e),
                    cause: rel_causes.to_vec(),
                }),
            }
        }
        if !gone.is_empty() {
            (self.report)(Report::Pruned { macs: gone });
        }
    }
}

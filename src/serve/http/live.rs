//! The project as the server sees it, kept current while serving. Changes are noticed by
//! watch's change detector ([`crate::watch::changes`]) over the files a project is loaded
//! from (`ovl.toml`, `devices.toml`, `profiles/*.toml`):
//! - without `--watch`, [`LiveProject::check`] compares their stat snapshot once per reload
//!   interval and reloads the whole project through [`Project::load`] once the files have
//!   stayed the same for one more check (so a file caught half-written, e.g. truncated, is
//!   not taken for the new one);
//! - with `--watch`, the watch loop feeds every project it loads ([`Feed`]): one detection and
//!   one reload for both.
//!
//! A broken reload keeps the last good project and logs the error (and shows it in
//! `/status`); the next change tries again.
//!
//! One boot script everywhere: the server owns `boot.ipxe` and `gpxe-script` on disk while it
//! runs. [`LiveProject::keep_boot_scripts`] publishes them from the served project (whose
//! `[serve] http` is the address really listened on) at start, after every reload, and on
//! every reload tick, so TFTP, another web server and HTTP hand out the same script whatever
//! `--http` overrides; a script rewritten meanwhile (by `ovl build`, from `ovl.toml`'s port) is
//! put back within a tick, with a warning.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use crate::build::bootscript::ScriptExtras;
use crate::build::project::{Project, Selection};
use crate::build::publish::Published;
use crate::error::Result;
use crate::mac::Mac;
use crate::serve::access::{Policy, PolicySource};
use crate::site::Site;
use crate::watch::Feed;
use crate::watch::changes::{StableChange, Stamps, project_inputs};

/// What the server knows of one inventory device, computed once per load.
#[derive(Debug, Clone, Default)]
pub(crate) struct DeviceInfo {
    /// Effective hostname, when the device plans.
    pub hostname: Option<String>,
    /// Kernel arguments of its profile chain (site's first), when the device plans.
    pub kernel_args: Vec<String>,
    /// Its `modules=` list, when the device plans.
    pub modules: Option<Vec<String>>,
    /// Why the device does not plan (template error, unreadable layer, …).
    pub error: Option<String>,
}

/// One loaded project and what was derived from it.
#[derive(Debug)]
pub(crate) struct Snapshot {
    /// The project.
    pub project: Project,
    /// Counts successful loads, from 1; on-demand archives are cached per generation.
    pub generation: u64,
    /// When it was loaded.
    pub loaded: SystemTime,
    /// Every inventory device's planned settings.
    pub devices: BTreeMap<Mac, DeviceInfo>,
    /// What may be served, and to whom.
    pub policy: Arc<Policy>,
}

impl Snapshot {
    /// The script additions of `mac`: its profile's kernel args and modules with the literal
    /// MAC, when `mac` is an inventory device that plans; `None` otherwise.
    pub(crate) fn script_extras(&self, mac: &Mac) -> Option<ScriptExtras> {
        let info = self.devices.get(mac)?;
        info.error.is_none().then(|| ScriptExtras {
            kernel_args: info.kernel_args.clone(),
            modules: info.modules.clone(),
            mac: Some(mac.to_string()),
        })
    }
}

/// The current project, swapped atomically on reload.
#[derive(Debug)]
pub(crate) struct LiveProject {
    root: PathBuf,
    http_override: Option<String>,
    current: RwLock<Arc<Snapshot>>,
    /// The stamps of what was last loaded (or tried), and a change seen once but not yet
    /// stable.
    seen: Mutex<StableChange>,
    last_error: Mutex<Option<String>>,
    /// The last attempt to write them failed (logged once until one succeeds).
    scripts_failing: AtomicBool,
    /// Failed reloads since the start, for `/metrics`.
    reload_errors: AtomicU64,
}

impl LiveProject {
    /// Starts from an already loaded project. `http_override` replaces `[serve] http` of every
    /// load (the address actually listened on, so generated URLs name the right port).
    pub(crate) fn new(mut project: Project, http_override: Option<String>) -> LiveProject {
        let root = project.site.root.clone();
        if let Some(h) = &http_override {
            project.site.config.serve.http = h.clone();
        }
        let seen = StableChange::new(project_inputs(&root));
        let snapshot = derive(project, 1);
        let live = LiveProject {
            root,
            http_override,
            current: RwLock::new(Arc::new(snapshot)),
            seen: Mutex::new(seen),
            last_error: Mutex::new(None),
            scripts_failing: AtomicBool::new(false),
            reload_errors: AtomicU64::new(0),
        };
        live.publish_boot_scripts(true);
        live
    }

    /// Puts back `boot.ipxe` and `gpxe-script` on disk when something else rewrote them (a
    /// warning); see [`LiveProject::publish_boot_scripts`].
    pub(crate) fn keep_boot_scripts(&self) {
        self.publish_boot_scripts(false);
    }

    /// Publishes `boot.ipxe` and `gpxe-script` from the served project, so the files on disk
    /// are the script this server hands out (only when it serves HTTP: with `http_override`).
    /// Unchanged files are left alone; blocking (reads and, when they differ, writes). A
    /// change is `expected` after a (re)load; otherwise someone else wrote them.
    fn publish_boot_scripts(&self, expected: bool) {
        if self.http_override.is_none() {
            return;
        }
        let snap = self.snapshot();
        let base = snap.project.site.http_base();
        match snap.project.write_boot_scripts() {
            Ok(written) => {
                self.scripts_failing.store(false, Ordering::Relaxed);
                for (path, _) in written.iter().filter(|(_, s)| *s != Published::Unchanged) {
                    let path = path.display();
                    if !expected {
                        tracing::warn!(event = "boot_script_rewritten", path = %path, base = %base,
                            "the boot script on disk differed from the served one (written with \
                             another HTTP address, e.g. by `ovl build`); rewritten");
                    } else {
                        tracing::info!(event = "boot_script_written", path = %path, base = %base,
                            "boot script on disk follows the served one");
                    }
                }
            }
            Err(e) => {
                if !self.scripts_failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(event = "boot_script_write_failed", error = %e,
                        "cannot write the boot scripts on disk: they may name another HTTP \
                         address than the served ones");
                }
            }
        }
    }

    /// The site folder.
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// The project now.
    pub(crate) fn snapshot(&self) -> Arc<Snapshot> {
        let g = self.current.read().unwrap_or_else(|p| p.into_inner());
        Arc::clone(&g)
    }

    /// The error of the last reload, when it failed (cleared by the next good one).
    pub(crate) fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Failed reloads since the start.
    pub(crate) fn reload_errors(&self) -> u64 {
        self.reload_errors.load(Ordering::Relaxed)
    }

    /// Reloads now, changed or not (SIGHUP); blocking. On failure the last good project
    /// stays, and the error is logged, kept for `/status` and returned.
    pub(crate) fn reload_now(&self) -> std::result::Result<Arc<Snapshot>, String> {
        let inputs = project_inputs(&self.root);
        let loaded = self.load();
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .accept(inputs);
        match loaded {
            Ok(project) => {
                self.swap(project);
                Ok(self.snapshot())
            }
            Err(e) => {
                self.fail(&e);
                Err(e.to_string())
            }
        }
    }

    /// Reloads when the project's files changed and then stayed the same since the previous
    /// check; blocking (file system reads, planning every device). Returns true when a new
    /// project was swapped in.
    pub(crate) fn check(&self) -> bool {
        let now = project_inputs(&self.root);
        if !self
            .seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .settled(now)
        {
            return false;
        }
        match self.load() {
            Ok(project) => {
                self.swap(project);
                true
            }
            Err(e) => {
                self.fail(&e);
                false
            }
        }
    }

    /// Plans every device of `project` and serves it from now on.
    fn swap(&self, mut project: Project) {
        if let Some(h) = &self.http_override {
            project.site.config.serve.http = h.clone();
        }
        let generation = self.snapshot().generation + 1;
        let snapshot = derive(project, generation);
        let devices = snapshot.devices.len();
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(snapshot);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.publish_boot_scripts(true);
        tracing::info!(
            event = "project_reloaded",
            generation,
            devices,
            "project reloaded"
        );
    }

    /// Logs a failed reload and keeps it for `/status`; the last good project stays.
    fn fail(&self, e: &crate::error::Error) {
        self.reload_errors.fetch_add(1, Ordering::Relaxed);
        tracing::error!(event = "project_reload_failed", error = %e,
            "reload failed; serving the last good project");
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
    }

    fn load(&self) -> Result<Project> {
        Project::load(Site::open(&self.root)?)
    }
}

/// The servers' access policy follows the project.
impl PolicySource for LiveProject {
    fn policy(&self) -> Arc<Policy> {
        Arc::clone(&self.snapshot().policy)
    }
}

/// `ovl serve --watch`: the watch loop's projects are served as they load.
impl Feed for LiveProject {
    fn loaded(&self, project: &Project, inputs: Stamps) {
        // The first load of the loop reads the files this project was started from.
        if self
            .seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .accept(inputs)
        {
            self.swap(project.clone());
        }
    }

    fn failed(&self, error: &crate::error::Error) {
        self.fail(error);
    }
}

/// Resolves every inventory device's settings once (no layer read), for boot scripts and
/// `/status`.
fn derive(project: Project, generation: u64) -> Snapshot {
    let specs = project
        .select(&Selection {
            all: true,
            ..Default::default()
        })
        .unwrap_or_default();
    let devices = specs
        .iter()
        .map(|spec| {
            let info = match project.settings(spec) {
                Ok(settings) => DeviceInfo {
                    hostname: Some(settings.hostname),
                    kernel_args: settings.kernel_args,
                    modules: Some(settings.modules),
                    error: None,
                },
                Err(e) => DeviceInfo {
                    hostname: spec.device.as_ref().and_then(|d| d.hostname.clone()),
                    error: Some(e.to_string()),
                    ..Default::default()
                },
            };
            (spec.mac, info)
        })
        .collect();
    Snapshot {
        policy: Arc::new(Policy::of_site(&project.site)),
        project,
        generation,
        loaded: SystemTime::now(),
        devices,
    }
}

/// Every `interval` until cancelled: checks the project's files (unless watch mode feeds the
/// project: `check` false) and keeps the boot scripts on disk equal to the served ones.
pub(crate) async fn reload_loop(
    live: Arc<LiveProject>,
    interval: Duration,
    check: bool,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(interval.max(Duration::from_millis(50)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => {
                let l = Arc::clone(&live);
                let _ = tokio::task::spawn_blocking(move || {
                    if !check || !l.check() {
                        l.keep_boot_scripts();
                    }
                })
                .await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live() -> (tempfile::TempDir, LiveProject) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("site");
        crate::site::example::write_example(&root).unwrap();
        let p = Project::load(Site::open(&root).unwrap()).unwrap();
        (dir, LiveProject::new(p, Some("127.0.0.1:8080".into())))
    }

    #[test]
    fn plans_every_device_and_applies_the_override() {
        let (_d, l) = live();
        let s = l.snapshot();
        assert_eq!(s.generation, 1);
        assert_eq!(s.devices.len(), 5);
        assert_eq!(s.project.site.config.serve.http, "127.0.0.1:8080");
        let xl: Mac = "52:54:00:12:34:56".parse().unwrap();
        let extras = s.script_extras(&xl).unwrap();
        assert_eq!(extras.kernel_args, vec!["quiet".to_string()]);
        assert_eq!(extras.mac.as_deref(), Some("52:54:00:12:34:56"));
        assert!(
            s.script_extras(&"02:00:00:00:00:01".parse().unwrap())
                .is_none()
        );
    }

    #[test]
    fn reloads_once_the_change_is_stable_and_keeps_the_last_good_project() {
        let (_d, l) = live();
        assert!(!l.check(), "nothing changed");
        let toml = l.root().join("ovl.toml");
        let good = std::fs::read_to_string(&toml).unwrap();
        std::fs::write(&toml, format!("{good}default_profile = \"S\"\n")).unwrap();
        assert!(!l.check(), "first sight of a change waits one check");
        assert!(l.check(), "stable: reloaded");
        let s = l.snapshot();
        assert_eq!(s.generation, 2);
        assert_eq!(
            s.project.site.config.serve.default_profile.as_deref(),
            Some("S")
        );
        assert_eq!(s.project.site.config.serve.http, "127.0.0.1:8080");

        std::fs::write(&toml, "[alpine\n").unwrap();
        assert!(!l.check());
        assert!(!l.check(), "broken: not swapped");
        assert!(l.last_error().unwrap().contains("ovl.toml"));
        assert_eq!(l.snapshot().generation, 2);
        assert!(!l.check(), "a broken file is not retried until it changes");

        std::fs::write(&toml, &good).unwrap();
        assert!(!l.check());
        assert!(l.check());
        assert_eq!(l.last_error(), None);
        assert_eq!(l.snapshot().generation, 3);
    }

    #[test]
    fn watch_feeds_changed_projects_and_failed_loads() {
        let (_d, l) = live();
        let root = l.root().to_path_buf();
        let load = || Site::open(&root).and_then(Project::load);
        l.loaded(&load().unwrap(), project_inputs(&root));
        assert_eq!(l.snapshot().generation, 1, "the files it started from");

        let toml = root.join("ovl.toml");
        let good = std::fs::read_to_string(&toml).unwrap();
        std::fs::write(&toml, format!("{good}default_profile = \"S\"\n")).unwrap();
        l.loaded(&load().unwrap(), project_inputs(&root));
        let s = l.snapshot();
        assert_eq!(s.generation, 2, "fed: no second look needed");
        assert_eq!(s.project.site.config.serve.http, "127.0.0.1:8080");
        assert!(!l.check(), "what watch loaded is not loaded again");

        std::fs::write(&toml, "[alpine\n").unwrap();
        l.failed(&load().unwrap_err());
        assert!(l.last_error().unwrap().contains("ovl.toml"));
        assert_eq!(l.snapshot().generation, 2);
        std::fs::write(&toml, &good).unwrap();
        l.loaded(&load().unwrap(), project_inputs(&root));
        assert_eq!(l.last_error(), None);
        assert_eq!(l.snapshot().generation, 3);
    }

    #[test]
    fn the_watch_loop_keeps_the_live_project_current() {
        let (_d, l) = live();
        let root = l.root().to_path_buf();
        let stop = std::sync::atomic::AtomicBool::new(false);
        let opts = crate::watch::WatchOptions {
            force_poll: true,
            poll_interval: std::time::Duration::from_millis(50),
            ..Default::default()
        };
        let mut reports = Vec::new();
        std::thread::scope(|scope| {
            let watcher = scope.spawn(|| {
                crate::watch::run_feeding(
                    &root,
                    &opts,
                    &stop,
                    &mut |r| reports.push(r.to_string()),
                    Some(&l),
                )
            });
            let wait_for = |generation: u64| {
                let end = std::time::Instant::now() + std::time::Duration::from_secs(20);
                while l.snapshot().generation < generation && std::time::Instant::now() < end {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                l.snapshot().generation
            };
            // The initial build loads the files the live project came from: no reload.
            std::thread::sleep(std::time::Duration::from_millis(300));
            assert_eq!(l.snapshot().generation, 1);
            let toml = root.join("ovl.toml");
            let good = std::fs::read_to_string(&toml).unwrap();
            std::fs::write(&toml, format!("{good}default_profile = \"S\"\n")).unwrap();
            assert_eq!(wait_for(2), 2);
            let s = l.snapshot();
            assert_eq!(
                s.project.site.config.serve.default_profile.as_deref(),
                Some("S")
            );
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            watcher.join().unwrap().unwrap();
        });
        assert!(reports[0].starts_with("watching "), "{reports:?}");
        assert!(
            reports.iter().any(|r| r.contains("(initial build)")),
            "{reports:?}"
        );
        assert_eq!(reports.last().map(String::as_str), Some("stopped"));
    }
}

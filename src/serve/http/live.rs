//! The project as the server sees it, kept current while serving: `ovl.toml`, `devices.toml`
//! and `profiles/*` are checked (metadata only) once per reload interval; a change reloads
//! the whole project through [`Project::load`] once the files have stayed the same for one
//! more check (so a file caught half-written, e.g. truncated, is not taken for the new one). A broken reload keeps the last good
//! project and logs the error (and shows it in `/status`); the next change tries again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use crate::build::bootscript::ScriptExtras;
use crate::build::project::{Project, Selection};
use crate::error::Result;
use crate::mac::Mac;
use crate::site::Site;

/// What the server knows of one inventory device, computed once per load.
#[derive(Debug, Clone, Default)]
pub struct DeviceInfo {
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
pub struct Snapshot {
    /// The project.
    pub project: Project,
    /// Counts successful loads, from 1; on-demand archives are cached per generation.
    pub generation: u64,
    /// When it was loaded.
    pub loaded: SystemTime,
    /// Every inventory device's planned settings.
    pub devices: BTreeMap<Mac, DeviceInfo>,
}

impl Snapshot {
    /// The script additions of `mac`: its profile's kernel args and modules with the literal
    /// MAC, when `mac` is an inventory device that plans; `None` otherwise.
    pub fn script_extras(&self, mac: &Mac) -> Option<ScriptExtras> {
        let info = self.devices.get(mac)?;
        info.error.is_none().then(|| ScriptExtras {
            kernel_args: info.kernel_args.clone(),
            modules: info.modules.clone(),
            mac: Some(mac.to_string()),
        })
    }
}

/// Metadata of the files a project is read from: (path, modified, length).
type Fingerprint = Vec<(PathBuf, Option<(SystemTime, u64)>)>;

/// The current project, swapped atomically on reload.
#[derive(Debug)]
pub struct LiveProject {
    root: PathBuf,
    http_override: Option<String>,
    current: RwLock<Arc<Snapshot>>,
    /// What was last loaded (or tried), and a change seen once but not yet stable.
    seen: Mutex<(Fingerprint, Option<Fingerprint>)>,
    last_error: Mutex<Option<String>>,
}

impl LiveProject {
    /// Starts from an already loaded project. `http_override` replaces `[serve] http` of every
    /// load (the address actually listened on, so generated URLs name the right port).
    pub fn new(mut project: Project, http_override: Option<String>) -> LiveProject {
        let root = project.site.root.clone();
        if let Some(h) = &http_override {
            project.site.config.serve.http = h.clone();
        }
        let seen = fingerprint(&root);
        let snapshot = derive(project, 1);
        LiveProject {
            root,
            http_override,
            current: RwLock::new(Arc::new(snapshot)),
            seen: Mutex::new((seen, None)),
            last_error: Mutex::new(None),
        }
    }

    /// The site folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The project now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        let g = self.current.read().unwrap_or_else(|p| p.into_inner());
        Arc::clone(&g)
    }

    /// The error of the last reload, when it failed (cleared by the next good one).
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Reloads when the project's files changed and then stayed the same since the previous
    /// check; blocking (file system reads, planning every device). Returns true when a new
    /// project was swapped in.
    pub fn check(&self) -> bool {
        let now = fingerprint(&self.root);
        {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            let (loaded, pending) = &mut *seen;
            if *loaded == now {
                *pending = None;
                return false;
            }
            if pending.as_ref() != Some(&now) {
                *pending = Some(now);
                return false;
            }
            *loaded = now;
            *pending = None;
        }
        match self.load() {
            Ok(project) => {
                let generation = self.snapshot().generation + 1;
                let snapshot = derive(project, generation);
                let devices = snapshot.devices.len();
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(snapshot);
                *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
                tracing::info!(
                    event = "project_reloaded",
                    generation,
                    devices,
                    "project reloaded"
                );
                true
            }
            Err(e) => {
                tracing::error!(event = "project_reload_failed", error = %e,
                    "reload failed; serving the last good project");
                *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                false
            }
        }
    }

    fn load(&self) -> Result<Project> {
        let mut site = Site::open(&self.root)?;
        if let Some(h) = &self.http_override {
            site.config.serve.http = h.clone();
        }
        Project::load(site)
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
        project,
        generation,
        loaded: SystemTime::now(),
        devices,
    }
}

/// The metadata of `ovl.toml`, `devices.toml`, `profiles/` and every entry in it.
fn fingerprint(root: &Path) -> Fingerprint {
    let stat = |p: PathBuf| {
        let m = std::fs::metadata(&p)
            .ok()
            .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()));
        (p, m)
    };
    let profiles = root.join("profiles");
    let mut v = vec![
        stat(root.join(crate::site::SITE_FILE)),
        stat(root.join(crate::site::DEVICES_FILE)),
        stat(profiles.clone()),
    ];
    if let Ok(rd) = std::fs::read_dir(&profiles) {
        let mut entries: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        entries.sort();
        v.extend(entries.into_iter().map(stat));
    }
    v
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
}

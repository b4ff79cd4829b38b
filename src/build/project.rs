//! The build pipeline shared by every command: site files → [`Project`] → device plans →
//! archive bytes → atomic publish. Watch and serve reuse it; they never rebuild it their way.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rayon::prelude::*;

use crate::build::bootscript::{self, ScriptExtras};
use crate::build::history;
use crate::build::layer::{LayerCache, LayerSource, LayerTree};
use crate::build::plan::{self, DevicePlan};
use crate::build::publish::{self, Batch, Published, Step, Unit};
use crate::build::runs::{self, RunCache};
use crate::build::settings::{self, DeviceSettings, DeviceSpec};
use crate::build::state::PublishState;
use crate::build::template;
use crate::error::{Error, Result};
use crate::mac::Mac;
use crate::site::Site;
use crate::site::inventory::Inventory;
use crate::site::layout::BOOT_SCRIPTS;
use crate::site::profile::{Profile, Profiles};

/// A site with its profiles and inventory read and checked.
#[derive(Debug, Clone)]
pub struct Project {
    /// The site and its settings.
    pub site: Site,
    /// Resolved profiles.
    pub profiles: Profiles,
    /// The inventory.
    pub inventory: Inventory,
}

/// Which devices a command is about.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Every device of the inventory.
    pub all: bool,
    /// These MACs (with `profile`, built with that profile even when not in the inventory).
    pub macs: Vec<Mac>,
    /// A profile: alone, the inventory's devices of that profile or of profiles extending it.
    pub profile: Option<String>,
}

/// One device's build result (or, for a dry run, what a build would do).
#[derive(Debug)]
pub struct Outcome {
    /// The MAC.
    pub mac: Mac,
    /// Profile.
    pub profile: String,
    /// The archive's path.
    pub path: PathBuf,
    /// What happened.
    pub result: OutcomeResult,
}

impl Outcome {
    /// The state in the report vocabulary: created, updated, unchanged or failed.
    pub fn state(&self) -> PublishState {
        match &self.result {
            OutcomeResult::Built { state, .. } => (*state).into(),
            OutcomeResult::Failed { .. } => PublishState::Failed,
        }
    }

    /// The error, when the device failed.
    pub fn error(&self) -> Option<&Error> {
        match &self.result {
            OutcomeResult::Failed { error } => Some(error),
            OutcomeResult::Built { .. } => None,
        }
    }
}

/// Success or failure of one device.
#[derive(Debug)]
pub enum OutcomeResult {
    /// Built (and published or found unchanged).
    Built {
        /// Created, updated or unchanged.
        state: Published,
        /// Hostname.
        hostname: String,
        /// Archive size in bytes.
        bytes: usize,
        /// Entries in the archive.
        entries: usize,
        /// Paths where the device's capture and the fleet both changed (resolved by
        /// `[capture] conflicts`).
        conflicts: Vec<String>,
        /// Why the device's capture has no known base (it then lies on top of the layers).
        no_base: Option<String>,
    },
    /// Not built; the previous archive, if any, is untouched.
    Failed {
        /// The error, with its location.
        error: Error,
    },
}

impl Project {
    /// Read profiles and inventory of `site`, checking every cross-reference.
    pub fn load(site: Site) -> Result<Project> {
        template::forget_runaways();
        let profiles = Profiles::load(&site.profiles_dir())?;
        let inventory = Inventory::load(&site.devices_file(), &profiles)?;
        if let Some(p) = &site.config.serve.default_profile {
            profiles.get(p).map_err(|e| {
                Error::at_path(site.site_file(), format!("[serve] default_profile: {e}"))
            })?;
        }
        Ok(Project {
            site,
            profiles,
            inventory,
        })
    }

    /// What deserves an administrator's attention without stopping a build, one located
    /// message each: every place where a profile still holds the example's placeholder key.
    pub fn warnings(&self) -> Vec<String> {
        let mut places = BTreeSet::new();
        for p in self.profiles.by_name.values() {
            places.extend(p.placeholder_keys.iter().map(ToString::to_string));
        }
        places
            .into_iter()
            .map(|loc| {
                format!(
                    "{loc}: authorized_keys holds the example's placeholder, not a key: put your own public key here"
                )
            })
            .collect()
    }

    /// The spec of one MAC: its inventory entry, with `profile` overriding its profile (or
    /// naming the profile of a MAC the inventory does not know).
    pub fn spec(&self, mac: Mac, profile: Option<&str>) -> Result<DeviceSpec> {
        let device = self.inventory.devices.get(&mac).cloned();
        let profile = match (profile, &device) {
            (Some(p), _) => p.to_string(),
            (None, Some(d)) => d.profile.clone(),
            (None, None) => {
                return Err(Error::device(
                    mac,
                    format!(
                        "not in {}; give --profile to build it anyway",
                        self.inventory.file.display()
                    ),
                ));
            }
        };
        self.profile(&profile)?;
        Ok(DeviceSpec {
            mac,
            profile,
            device,
        })
    }

    /// The devices a selection names.
    pub fn select(&self, sel: &Selection) -> Result<Vec<DeviceSpec>> {
        if let Some(p) = &sel.profile {
            self.profile(p)?;
        }
        if !sel.macs.is_empty() {
            return sel
                .macs
                .iter()
                .map(|m| self.spec(*m, sel.profile.as_deref()))
                .collect();
        }
        let wanted: Option<BTreeSet<String>> = sel
            .profile
            .as_ref()
            .map(|p| self.profiles.descendants_of(p));
        Ok(self
            .inventory
            .devices
            .values()
            .filter(|d| sel.all || wanted.as_ref().is_some_and(|w| w.contains(&d.profile)))
            .map(|d| DeviceSpec {
                mac: d.mac,
                profile: d.profile.clone(),
                device: Some(d.clone()),
            })
            .collect())
    }

    /// Read every layer that more than one of the given devices uses, once each, in
    /// parallel. A layer only one device uses (its capture, its own overlay) is left out: it
    /// is read when that device is planned and dropped with its plan, so the memory held at
    /// once stays bounded by the jobs running, not by the size of the fleet.
    pub fn read_layers(&self, specs: &[DeviceSpec]) -> LayerCache {
        let mut uses: BTreeMap<LayerSource, usize> = BTreeMap::new();
        for s in specs {
            if let Ok(p) = self.profiles.get(&s.profile)
                && let Ok(list) = settings::declared_layer_sources(&self.site, p, s)
            {
                for src in list.into_iter().collect::<BTreeSet<_>>() {
                    *uses.entry(src).or_default() += 1;
                }
            }
        }
        let shared: Vec<_> = uses
            .into_iter()
            .filter(|(_, n)| *n > 1)
            .map(|(s, _)| s)
            .collect();
        shared
            .into_par_iter()
            .map(|s| {
                let tree = LayerTree::read(&self.site, &s).map(Arc::new);
                (s, tree)
            })
            .collect::<HashMap<_, _>>()
    }

    /// Inventory devices whose hostname (their own, or their profile's template rendered)
    /// another inventory device also has, each with an error naming the other MACs. Devices
    /// whose hostname cannot be rendered are left to the planning that reports it.
    pub fn hostname_clashes(&self) -> BTreeMap<Mac, Error> {
        let mut by_name: BTreeMap<String, Vec<(Mac, String)>> = BTreeMap::new();
        for d in self.inventory.devices.values() {
            let Ok(profile) = self.profiles.get(&d.profile) else {
                continue;
            };
            if let Ok(h) = settings::inventory_hostname(&self.site, profile, d) {
                by_name
                    .entry(h.to_ascii_lowercase())
                    .or_default()
                    .push((d.mac, h));
            }
        }
        let mut out = BTreeMap::new();
        for group in by_name.values().filter(|g| g.len() > 1) {
            for (mac, h) in group {
                let others: Vec<String> = group
                    .iter()
                    .filter(|(m, _)| m != mac)
                    .map(|(m, _)| m.to_string())
                    .collect();
                let message = format!(
                    "hostname {h} is also the hostname of {}; hostnames must be unique",
                    others.join(", ")
                );
                out.insert(*mac, Error::device(mac, message));
            }
        }
        out
    }

    /// The profile called `name`; an unknown name is a usage error.
    fn profile(&self, name: &str) -> Result<&Profile> {
        self.profiles
            .get(name)
            .map_err(|e| Error::Usage(e.to_string()))
    }

    /// Resolve one device's settings (hostname, layers, kernel line, …) without reading any
    /// layer or rendering any file template.
    pub fn settings(&self, spec: &DeviceSpec) -> Result<DeviceSettings> {
        settings::resolve(&self.site, self.profile(&spec.profile)?, spec)
    }

    /// Plan one device: its settings and its manifest, from layers read into `cache`.
    pub fn plan(&self, spec: &DeviceSpec, cache: &LayerCache) -> Result<DevicePlan> {
        let profile = self.profile(&spec.profile)?;
        let settings = settings::resolve(&self.site, profile, spec)?;
        plan::plan(&self.site, profile, settings, cache)
    }

    /// The archive bytes of a plan.
    pub fn archive_bytes(&self, plan: &DevicePlan) -> Result<Vec<u8>> {
        self.archive_bytes_with(plan, &RunCache::default())
    }

    /// The archive bytes of a plan, its shared runs taken from (or put in) `runs`, the cache
    /// of the build: the same bytes with any cache.
    pub(crate) fn archive_bytes_with(&self, plan: &DevicePlan, runs: &RunCache) -> Result<Vec<u8>> {
        let level = self.site.config.build.compression;
        runs::compress(
            &plan.manifest,
            &plan.shareable,
            self.site.mtime(),
            level,
            runs,
        )
        .map_err(|e| match e {
            Error::Device { message, .. } => Error::Device {
                mac: plan.mac.to_string(),
                message,
            },
            e => e,
        })
    }

    /// Where a MAC's archive is published.
    pub fn archive_path(&self, mac: &Mac) -> PathBuf {
        self.site.configs_dir().join(mac.archive_name())
    }

    /// Build and publish the archives of `specs` in parallel; `tick` is called after each.
    pub fn build(&self, specs: &[DeviceSpec], tick: &(dyn Fn() + Sync)) -> Vec<Outcome> {
        self.build_until(specs, tick, &AtomicBool::new(false))
    }

    /// Like [`Project::build`], but devices not started when `stop` becomes true are skipped
    /// (left out of the result); those already started finish and publish atomically.
    pub fn build_until(
        &self,
        specs: &[DeviceSpec],
        tick: &(dyn Fn() + Sync),
        stop: &AtomicBool,
    ) -> Vec<Outcome> {
        self.build_batch(specs, tick, stop).0
    }

    /// [`Project::build_until`], and the syncs its publication made. Every device's archive
    /// and kept manifest are written to temporaries in parallel, then published together
    /// ([`Batch`]): a bounded number of syncs, whatever the number of devices.
    pub(crate) fn build_batch(
        &self,
        specs: &[DeviceSpec],
        tick: &(dyn Fn() + Sync),
        stop: &AtomicBool,
    ) -> (Vec<Outcome>, usize) {
        self.clean_stale_temps();
        let clashes = self.clashes_of(specs);
        let cache = self.read_layers(specs);
        let runs = RunCache::default();
        let batch = Batch::default();
        let staged: Vec<(Outcome, Option<usize>)> = specs
            .par_iter()
            .filter_map(|spec| {
                if stop.load(Ordering::Relaxed) {
                    return None;
                }
                let clash = clash_of(&clashes, spec);
                let r = self.build_one(spec, (&cache, &runs), clash, Some(&batch));
                tick();
                Some(r)
            })
            .collect();
        let committed = batch.commit();
        let mut out: Vec<Outcome> = staged
            .into_iter()
            .map(|(mut outcome, unit)| {
                if let Some(Err(error)) = unit.and_then(|u| committed.results.get(u)) {
                    outcome.result = OutcomeResult::Failed {
                        error: error.clone(),
                    };
                }
                outcome
            })
            .collect();
        out.sort_by_key(|o| o.mac);
        (out, committed.syncs)
    }

    /// What [`Project::build`] would do for `specs`, nothing written: each archive is built in
    /// memory and compared with the published one.
    pub fn dry_build(&self, specs: &[DeviceSpec]) -> Vec<Outcome> {
        let clashes = self.clashes_of(specs);
        let cache = self.read_layers(specs);
        let runs = RunCache::default();
        let mut out: Vec<Outcome> = specs
            .par_iter()
            .map(|spec| {
                let clash = clash_of(&clashes, spec);
                self.build_one(spec, (&cache, &runs), clash, None).0
            })
            .collect();
        out.sort_by_key(|o| o.mac);
        out
    }

    /// The hostname clashes of the inventory, when `specs` hold inventory devices.
    fn clashes_of(&self, specs: &[DeviceSpec]) -> BTreeMap<Mac, Error> {
        if specs.iter().any(|s| s.device.is_some()) {
            self.hostname_clashes()
        } else {
            BTreeMap::new()
        }
    }

    /// Remove the temporaries a killed build left: hidden ones beside the archives and the
    /// boot scripts, and loose files in the `.ovl-tmp/` folder of earlier versions (its
    /// `fetch/` folder, where `ovl fetch` keeps partial downloads to resume, is left alone).
    fn clean_stale_temps(&self) {
        let age = Duration::from_secs(60);
        publish::clean_stale_temps(&self.site.configs_dir(), age, false);
        publish::clean_stale_temps(&self.site.root, age, false);
        let legacy = self.site.tmp_dir();
        publish::clean_stale_temps(&legacy, age, true);
        let _ = std::fs::remove_dir(&legacy);
    }

    /// The plan and archive bytes of one device; an empty archive is an error.
    fn planned_bytes(
        &self,
        spec: &DeviceSpec,
        (cache, runs): (&LayerCache, &RunCache),
    ) -> Result<(DevicePlan, Vec<u8>)> {
        let plan = self.plan(spec, cache)?;
        let bytes = self.archive_bytes_with(&plan, runs)?;
        if bytes.is_empty() {
            return Err(Error::device(spec.mac, "empty archive; not published"));
        }
        Ok((plan, bytes))
    }

    /// Build one device's archive and stage its publication in `batch` (the number of its
    /// unit returned), or, without a batch, only say what publishing would do; a device whose
    /// hostname `clash`es fails.
    fn build_one(
        &self,
        spec: &DeviceSpec,
        cache: (&LayerCache, &RunCache),
        clash: Option<&Error>,
        batch: Option<&Batch>,
    ) -> (Outcome, Option<usize>) {
        let path = self.archive_path(&spec.mac);
        let mut unit = None;
        let result = (|| {
            if let Some(e) = clash {
                return Err(e.clone());
            }
            let (plan, bytes) = self.planned_bytes(spec, cache)?;
            let state = publish::would_publish(&path, &bytes)?;
            if let Some(batch) = batch {
                unit = Some(self.stage(batch, &plan, &path, &bytes, state)?);
            }
            Ok(OutcomeResult::Built {
                state,
                hostname: plan.hostname.clone(),
                bytes: bytes.len(),
                entries: plan.manifest.entries.len(),
                conflicts: plan.conflicts().into_iter().map(str::to_string).collect(),
                no_base: plan.capture.as_ref().and_then(|c| c.no_base.clone()),
            })
        })();
        let result = result.unwrap_or_else(|error| OutcomeResult::Failed { error });
        let outcome = Outcome {
            mac: spec.mac,
            profile: spec.profile.clone(),
            path,
            result,
        };
        (outcome, unit)
    }

    /// Stage in `batch` what publishing `plan`'s archive `bytes` at `path` takes: its kept
    /// manifest, then, unless `state` is unchanged, the archive. Returns the unit's number.
    fn stage(
        &self,
        batch: &Batch,
        plan: &DevicePlan,
        path: &Path,
        bytes: &[u8],
        state: Published,
    ) -> Result<usize> {
        let mut unit = batch.unit();
        // Kept (a step) before the archive is published: a device never holds an archive
        // whose manifest ovl does not know.
        self.stage_manifest(plan, &mut unit)?;
        if state != Published::Unchanged {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("archive");
            // Archives are served to anyone on the boot network: 0644, as a web server expects.
            let prefix = format!(".{name}.");
            unit.write(Step::Publish, path, bytes, &prefix, Some(0o644))?;
        }
        if self.site.config.boot.nfs.is_some() {
            // lbu commits into this folder over NFS; it must exist.
            crate::build::nfs::ensure_capture_dir(&self.site, &plan.mac)?;
        }
        Ok(batch.add(unit))
    }

    /// Keep the manifest of `plan` in its device's history (`.ovl-state/manifests/MAC/`), the
    /// base of the next merge of its captures; only the last `[capture] history` are kept,
    /// and never the base of the device's current capture. A device without a capture gets
    /// the same manifest for the same build, so one already kept is left as it is.
    pub(crate) fn keep_manifest(&self, plan: &DevicePlan) -> Result<()> {
        let batch = Batch::default();
        let mut unit = batch.unit();
        self.stage_manifest(plan, &mut unit)?;
        batch.add(unit);
        batch.commit_one()
    }

    /// [`Project::keep_manifest`] staged in `unit`.
    fn stage_manifest(&self, plan: &DevicePlan, unit: &mut Unit<'_>) -> Result<()> {
        let keep = self.site.config.capture.history;
        if plan.capture.is_none() && history::record_path(&self.site, &plan.mac, &plan.id).is_file()
        {
            return Ok(());
        }
        let mac = plan.mac.to_string();
        let protect = plan
            .capture
            .as_ref()
            .and_then(|c| c.base.as_ref())
            .filter(|b| b.mac == mac)
            .map(|b| b.id.as_str());
        history::stage(&self.site, &plan.record().given(), keep, protect, unit)
    }

    /// Write `gpxe-script` and `boot.ipxe` (the static script, `${net0/mac}` for the MAC).
    pub fn write_boot_scripts(&self) -> Result<Vec<(PathBuf, Published)>> {
        self.boot_scripts(true)
    }

    /// Write the boot scripts (`write`), or only say what writing them would do.
    pub fn boot_scripts(&self, write: bool) -> Result<Vec<(PathBuf, Published)>> {
        let text = bootscript::script(&self.site, &ScriptExtras::default());
        BOOT_SCRIPTS
            .iter()
            .map(|n| {
                let p = self.site.root.join(n);
                let state = if write {
                    publish::publish(&p, text.as_bytes())
                } else {
                    publish::would_publish(&p, text.as_bytes())
                };
                state.map(|s| (p, s))
            })
            .collect()
    }
}

/// The hostname clash of `spec`'s device, when it is built with its own profile.
fn clash_of<'a>(clashes: &'a BTreeMap<Mac, Error>, spec: &DeviceSpec) -> Option<&'a Error> {
    clashes.get(&spec.mac).filter(|_| {
        spec.device
            .as_ref()
            .is_some_and(|d| d.profile == spec.profile)
    })
}

/// Time since `start` in milliseconds, for reports.
pub(crate) fn millis(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests;

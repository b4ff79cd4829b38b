//! Which devices a set of changed paths affects (SPEC §5): `ovl.toml` affects every device, a
//! `devices.toml` change the devices whose entries changed, a profile its devices and those
//! of profiles extending it, an overlay file, archive layer or capture the devices using it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::build::layer::LayerSource;
use crate::build::plan::{self, DeviceSpec};
use crate::build::project::Project;
use crate::mac::Mac;
use crate::site::inventory::Device;
use crate::site::{DEVICES_FILE, SITE_FILE};

/// The devices to rebuild, each with the site-relative paths that caused it.
pub(crate) type Targets = BTreeMap<Mac, BTreeSet<String>>;

fn same_device(a: &Device, b: &Device) -> bool {
    a.profile == b.profile
        && a.hostname == b.hostname
        && a.ip == b.ip
        && a.overlays == b.overlays
        && a.vars == b.vars
        && a.discard == b.discard
}

/// Each device's capture folder and layers.
type DeviceInputs = BTreeMap<Mac, (PathBuf, Vec<LayerSource>)>;

/// Works out every device's capture folder and layer sources (this reads the captures
/// folder, so it is done once per rebuild, and only when a layer path changed).
fn device_inputs(new: &Project) -> DeviceInputs {
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
}

/// The devices whose archive depends on a changed path, with the causes, and the devices
/// that left the inventory. Without `old` (the first build) every device is affected.
pub(crate) fn affected(
    old: Option<&Project>,
    new: &Project,
    changed: &BTreeSet<PathBuf>,
) -> (Targets, Vec<Mac>) {
    let root = &new.site.root;
    let mut out = Targets::new();
    let Some(old) = old else {
        for m in new.inventory.devices.keys() {
            out.entry(*m).or_default().insert("initial build".into());
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
    let mut inputs: Option<DeviceInputs> = None;
    for path in changed {
        let cause = path
            .strip_prefix(root)
            .unwrap_or(path)
            .display()
            .to_string();
        let mut hit = |mac: &Mac| {
            out.entry(*mac).or_default().insert(cause.clone());
        };
        if path == &root.join(SITE_FILE) {
            new.inventory.devices.keys().for_each(&mut hit);
        } else if path == &root.join(DEVICES_FILE) {
            new.inventory
                .devices
                .iter()
                .filter(|(mac, d)| {
                    old.inventory
                        .devices
                        .get(mac)
                        .is_none_or(|o| !same_device(o, d))
                })
                .for_each(|(mac, _)| hit(mac));
        } else if path.parent() == Some(&root.join(crate::site::layout::PROFILES_DIR)) {
            let Some(name) = path.file_stem().and_then(|s| s.to_str()) else {
                continue;
            };
            let mut profiles = new.profiles.descendants_of(name);
            profiles.extend(old.profiles.descendants_of(name));
            new.inventory
                .devices
                .iter()
                .filter(|(_, d)| profiles.contains(&d.profile))
                .for_each(|(mac, _)| hit(mac));
        } else {
            let inputs = inputs.get_or_insert_with(|| device_inputs(new));
            inputs
                .iter()
                .filter(|(_, (capture_dir, sources))| uses(path, capture_dir, sources))
                .for_each(|(mac, _)| hit(mac));
        }
    }
    (out, removed)
}

/// Does a device with this capture folder and these layers read `path`?
fn uses(path: &Path, capture_dir: &Path, sources: &[LayerSource]) -> bool {
    path.starts_with(capture_dir)
        || sources.iter().any(|s| match s {
            LayerSource::Folder(f) => path.starts_with(f),
            LayerSource::Archive(a) => path == a,
        })
}

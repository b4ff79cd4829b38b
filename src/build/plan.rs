//! One device's plan: its [settings](DeviceSettings), its [`Manifest`] and its build identity.
//! The fleet's part is assembled in SPEC §3's order by the steps of `builder.rs` (the profile
//! chain's layers, the device's own layers, then what the profile declares — hostname, world,
//! runlevels, network files, repositories, authorized keys, the NFS/lbu round trip, inline
//! files — and finally owners, modes and permissions); the device's capture is then merged
//! into it three ways ([`capture`]), or laid on top of its layers without a known base.

mod builder;

use std::collections::BTreeSet;
use std::sync::Arc;

use serde::Serialize;

use builder::Builder;

use crate::build::capture::{self, CaptureReport};
use crate::build::history::{self, Record, States};
use crate::build::layer::{LayerCache, LayerSource, LayerTree};
use crate::build::manifest::{Entry, Manifest};
use crate::build::merge;
use crate::build::nfs::NfsExport;
use crate::build::owners::Ids;
use crate::build::runs::Shareable;
use crate::build::settings::DeviceSettings;
use crate::error::{Error, Result};
use crate::site::Site;
use crate::site::profile::Profile;

pub use crate::build::settings::DeviceSpec;
pub(crate) use crate::build::settings::layer_sources;

/// The default `etc/network/interfaces`.
pub(crate) const DEFAULT_INTERFACES: &str =
    "auto lo\niface lo inet loopback\n\nauto eth0\niface eth0 inet dhcp\n";

/// A device resolved: settings, manifest and build identity, and what its capture does.
/// Serializes as its settings (`ovl show --json`); reads as its settings too
/// (`plan.hostname`).
#[derive(Debug, Clone, Serialize)]
pub struct DevicePlan {
    /// Profile, hostname, layers, kernel line, …
    #[serde(flatten)]
    pub settings: DeviceSettings,
    /// The files, the identity file included.
    #[serde(skip)]
    pub manifest: Manifest,
    /// The build identity (written in the archive's `etc/ovl/build`).
    #[serde(skip)]
    pub id: String,
    /// What every path of `manifest` holds.
    #[serde(skip)]
    pub(crate) states: States,
    /// The fleet's part (the plan without the capture), when the device has a capture.
    #[serde(skip)]
    pub(crate) fleet: Option<(Manifest, States)>,
    /// The device's capture: its base and what it changes against the fleet.
    #[serde(skip)]
    pub capture: Option<CaptureReport>,
    /// Which entries every device of the profile has too (compressed once per build).
    #[serde(skip)]
    pub(crate) shareable: Shareable,
}

impl std::ops::Deref for DevicePlan {
    type Target = DeviceSettings;

    fn deref(&self) -> &DeviceSettings {
        &self.settings
    }
}

impl DevicePlan {
    /// The conflicts its capture has with the fleet.
    pub fn conflicts(&self) -> Vec<&str> {
        self.capture
            .as_ref()
            .map(CaptureReport::conflicts)
            .unwrap_or_default()
    }

    /// What to keep in the device's history once its archive is published.
    pub(crate) fn record(&self) -> Record<'_> {
        Record {
            mac: self.mac,
            profile: &self.profile,
            hostname: &self.hostname,
            id: &self.id,
            published: (&self.manifest, &self.states),
            fleet: self.fleet.as_ref().map(|(m, s)| (m, s)),
            conflicts: self.conflicts().into_iter().map(str::to_string).collect(),
        }
    }
}

/// How the plan of a device treats its capture layer (read once, by the caller).
#[derive(Clone, Copy)]
pub(crate) enum CaptureUse<'a> {
    /// Left out: the fleet's part. What the capture brings still counts for the profile's
    /// `"!pkg"` and `"!svc"` removals (removing what only a capture brings is no error).
    Skip(Option<&'a LayerTree>),
    /// On top of the other layers (a capture without a known base), but for these paths.
    OnTop(&'a LayerTree, &'a [String]),
}

/// Build the manifest of a device with `settings` and `profile` from `layers` (read
/// beforehand; a layer missing from the cache is read now): the fleet's part, then the
/// device's capture merged into it (or laid on top, without a known base), then the build
/// identity.
pub(crate) fn plan(
    site: &Site,
    profile: &Profile,
    settings: DeviceSettings,
    layers: &LayerCache,
) -> Result<DevicePlan> {
    let tree = match &settings.capture {
        Some(src) => Some(layer_tree(site, layers, src)?),
        None => None,
    };
    let skip = CaptureUse::Skip(tree.as_deref());
    let (mut fleet, rendered) = assemble(site, profile, &settings, layers, skip)?;
    let shareable = Shareable {
        layers: settings
            .sources
            .iter()
            .take(profile.overlays.len())
            .map(|s| site.relative(s.path()))
            .collect(),
        rendered,
    };
    history::put_identity(&mut fleet).map_err(|e| Error::device(settings.mac, e))?;
    let fleet_states = history::states(&fleet, None);
    let (mut manifest, mut states, capture, fleet) = match &tree {
        None => (fleet, fleet_states, None, None),
        Some(tree) => {
            let parts = (&fleet, &fleet_states);
            let (m, report) = capture::with_capture(site, profile, &settings, layers, tree, parts)?;
            let states = history::states(&m, Some(parts));
            (m, states, Some(report), Some((fleet, fleet_states)))
        }
    };
    let id = history::finish_identity(&mut manifest, &mut states, settings.mac, &settings.profile);
    let mut plan = DevicePlan {
        id,
        settings,
        manifest,
        states,
        fleet,
        capture,
        shareable,
    };
    if let Some(c) = &mut plan.capture {
        merge::settle(&mut c.items, &plan.states);
    }
    Ok(plan)
}

/// A layer tree from the cache (read now when missing).
pub(crate) fn layer_tree(
    site: &Site,
    layers: &LayerCache,
    src: &LayerSource,
) -> Result<Arc<LayerTree>> {
    match layers.get(src) {
        Some(Ok(t)) => Ok(t.clone()),
        Some(Err(e)) => Err(e.clone()),
        None => Ok(Arc::new(LayerTree::read(site, src)?)),
    }
}

/// The manifest of the profile's declarations over `layers` (the capture used as `capture`
/// says), owners and modes finished; and the paths rendered from templates.
pub(crate) fn assemble(
    site: &Site,
    profile: &Profile,
    settings: &DeviceSettings,
    layers: &LayerCache,
    capture: CaptureUse,
) -> Result<(Manifest, BTreeSet<String>)> {
    let mut b = Builder::new(site, profile, settings);
    let world = b.layers(layers, capture)?;
    b.hostname()?;
    b.world(world)?;
    b.runlevels()?;
    b.network()?;
    b.repositories()?;
    b.authorized_keys()?;
    if let Some(export) = site.config.boot.nfs.as_deref().and_then(NfsExport::parse) {
        b.nfs(&export)?;
    }
    b.inline_files()?;
    b.ownership()?;
    b.check_links()?;
    Ok((b.m, b.rendered))
}

/// The rules of the fleet that hold whatever a capture says, applied to a merged manifest:
/// the profile's `"!pkg"` and `"!svc"` removals, the NFS round trip's lines (their files
/// keep their mode and owner), Alpine's owner names; no symlink loop.
pub(crate) fn after_merge(
    site: &Site,
    profile: &Profile,
    settings: &DeviceSettings,
    merged: Manifest,
) -> Result<Manifest> {
    let mut b = Builder::new(site, profile, settings);
    b.m = merged;
    b.drop_removed()?;
    if let Some(export) = site.config.boot.nfs.as_deref().and_then(NfsExport::parse) {
        let keep: Vec<(String, Entry)> = ["etc/fstab", "etc/lbu/lbu.conf"]
            .iter()
            .filter_map(|p| Some((p.to_string(), b.m.entries.get(*p)?.clone())))
            .collect();
        b.nfs(&export)?;
        for (p, old) in keep {
            if let Some(e) = b.m.entries.get_mut(&p) {
                (e.mode, e.uid, e.gid, e.explicit) = (old.mode, old.uid, old.gid, old.explicit);
                (e.user, e.group) = (old.user, old.group);
            }
        }
    }
    let text = |p| b.m.file(p).map(|x| String::from_utf8_lossy(x).into_owned());
    let ids = Ids::new(text("etc/passwd").as_deref(), text("etc/group").as_deref());
    b.m.finish_ownership(&ids);
    b.check_links()?;
    Ok(b.m)
}

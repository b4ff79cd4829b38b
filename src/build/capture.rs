//! A device's capture in its plan: the build it started from (its base, found through the
//! identity file inside it, [`history`]), and the report of what it changes against the
//! fleet ([`merge`]). A capture without a known base keeps the behaviour from before the
//! merge: it lies on top of the fleet's layers, below what the profile declares.

use serde::Serialize;

use crate::build::history::{self, Given, Identity, States};
use crate::build::layer::{LayerCache, LayerTree, Node};
use crate::build::manifest::Manifest;
use crate::build::merge::{self, DriftItem};
use crate::build::plan::{CaptureUse, after_merge, assemble};
use crate::build::settings::DeviceSettings;
use crate::error::{Error, Result};
use crate::site::Site;
use crate::site::layout::IDENTITY_FILE;
use crate::site::profile::Profile;

/// The base of a capture, or why there is none.
pub(crate) enum Base {
    /// The manifest the device was given, and the identity naming it.
    Known(Box<Given>, Identity),
    /// No known base: why.
    Unknown(String),
}

/// Look up the base of the capture `tree`: its identity file, then the manifest kept for that
/// build of that device (the identity's MAC: a capture copied from another device starts from
/// what that device was given).
pub(crate) fn base_of(site: &Site, tree: &LayerTree) -> Base {
    let Some(e) = tree.entries.iter().find(|e| e.path == IDENTITY_FILE) else {
        return Base::Unknown(format!(
            "the capture has no {IDENTITY_FILE} (made before ovl kept build identities, or the \
             file was removed on the device)"
        ));
    };
    let Node::File(bytes) = &e.node else {
        return Base::Unknown(format!("{IDENTITY_FILE} in the capture is not a file"));
    };
    let Some(identity) = Identity::parse(bytes) else {
        return Base::Unknown(format!(
            "{IDENTITY_FILE} in the capture is not an identity ovl wrote"
        ));
    };
    let short = &identity.id[..12];
    match history::load(site, &identity.mac, &identity.id) {
        Ok(Some(g)) => Base::Known(Box::new(g), identity),
        Ok(None) => Base::Unknown(format!(
            "build {short} of {} is not kept in .ovl-state/manifests (older than [capture] \
             history, or built elsewhere)",
            identity.mac
        )),
        Err(e) => Base::Unknown(format!("build {short} of {}: {e}", identity.mac)),
    }
}

/// The build a capture started from.
#[derive(Debug, Clone, Serialize)]
pub struct BaseRef {
    /// Its identity.
    pub id: String,
    /// The device it was built for (the capture's own device, unless copied from another).
    pub mac: String,
}

/// What a device's capture does in its plan.
#[derive(Debug, Clone, Serialize)]
pub struct CaptureReport {
    /// The capture file, site-relative.
    pub file: String,
    /// The build it started from; `null` when unknown.
    pub base: Option<BaseRef>,
    /// Why the base is unknown (then the capture lies on top of the fleet's layers); `null`
    /// when it is known.
    pub no_base: Option<String>,
    /// `[capture] conflicts` as applied.
    pub policy: &'static str,
    /// Every path where the capture differs from the fleet.
    pub items: Vec<DriftItem>,
}

impl CaptureReport {
    /// The conflicting paths.
    pub fn conflicts(&self) -> Vec<&str> {
        self.items
            .iter()
            .filter(|i| i.conflict)
            .map(|i| i.path.as_str())
            .collect()
    }
}

/// The manifest of a device with its capture `tree`, and the capture's report: merged three
/// ways with the fleet's part when its base is known, else laid on top as before.
pub(crate) fn with_capture(
    site: &Site,
    profile: &Profile,
    settings: &DeviceSettings,
    layers: &LayerCache,
    tree: &LayerTree,
    fleet: (&Manifest, &States),
) -> Result<(Manifest, CaptureReport)> {
    let label = site.relative(tree.source.path());
    let discard = settings.discard.as_slice();
    let policy = site.config.capture.conflicts;
    let mut report = CaptureReport {
        file: label.clone(),
        base: None,
        no_base: None,
        policy: policy.name(),
        items: Vec::new(),
    };
    match base_of(site, tree) {
        Base::Known(given, identity) => {
            let inputs = merge::Inputs {
                given: &given,
                device: tree,
                label: &label,
                fleet,
                policy,
                discard,
            };
            let (merged, items) = merge::merge(&inputs);
            report.base = Some(BaseRef {
                id: identity.id,
                mac: identity.mac.to_string(),
            });
            report.items = items;
            Ok((after_merge(site, profile, settings, merged)?, report))
        }
        Base::Unknown(why) => {
            let on_top = CaptureUse::OnTop(tree, discard);
            let (mut m, _) = assemble(site, profile, settings, layers, on_top)?;
            history::put_identity(&mut m).map_err(|e| Error::device(settings.mac, e))?;
            report.no_base = Some(why);
            report.items = merge::compare(tree, &label, fleet, discard);
            Ok((m, report))
        }
    }
}

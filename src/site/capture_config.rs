//! `[capture]` of `ovl.toml`: how devices' lbu captures are merged with the fleet (the
//! three-way merge of [`crate::build::merge`]).

use serde::Deserialize;

/// `[capture]`: the three-way merge of devices' lbu captures with the fleet (README,
/// "Managing the fleet").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CaptureConfig {
    /// Build manifests kept per device in `.ovl-state/manifests/MAC/` (the bases of merges).
    pub history: usize,
    /// Whose version a file both the device and the fleet changed gets.
    pub conflicts: ConflictPolicy,
}

/// The highest `[capture] history`.
pub(crate) const MAX_HISTORY: usize = 1000;

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            history: 10,
            conflicts: ConflictPolicy::Device,
        }
    }
}

/// `[capture] conflicts`: who wins a file both the device and the fleet changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ConflictPolicy {
    /// The device's version stays (the default).
    #[default]
    Device,
    /// The fleet's version wins.
    Fleet,
}

impl ConflictPolicy {
    /// `device` or `fleet`.
    pub fn name(self) -> &'static str {
        match self {
            ConflictPolicy::Device => "device",
            ConflictPolicy::Fleet => "fleet",
        }
    }
}

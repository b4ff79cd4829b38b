//! What `ovl watch` reports: one [`Report`] per event, printed as one line of text (its
//! `Display`) or as one JSON object, in the vocabulary of [`crate::build::state`].

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

use crate::build::project::{Outcome, OutcomeResult};
use crate::build::state::PublishState;
use crate::error::{Error, JsonError};
use crate::mac::Mac;
use crate::watch::Mode;

/// What `ovl watch` reports, one per line (text) or JSON object.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub(crate) enum Report {
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
        /// The error with its location (an error object in JSON).
        error: Error,
        /// What changed.
        cause: Vec<String>,
    },
    /// Watching ended.
    Stop,
}

/// One device of a rebuild.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct DeviceResult {
    /// The MAC.
    pub(crate) mac: Mac,
    /// `created`, `updated`, `unchanged` or `failed`.
    pub(crate) state: PublishState,
    /// The error object, when failed (else `null`).
    pub(crate) error: Option<JsonError>,
    /// The error itself, for the text output.
    #[serde(skip)]
    pub(crate) failure: Option<Error>,
    /// Paths where the device's capture and the fleet both changed (`[capture] conflicts`);
    /// `null` when failed.
    pub(crate) conflicts: Option<Vec<String>>,
}

impl From<&Outcome> for DeviceResult {
    fn from(o: &Outcome) -> DeviceResult {
        DeviceResult {
            mac: o.mac,
            state: o.state(),
            error: o.error().map(|e| JsonError::new(e, Some(&o.mac))),
            failure: o.error().cloned(),
            conflicts: match &o.result {
                OutcomeResult::Built { conflicts, .. } => Some(conflicts.clone()),
                OutcomeResult::Failed { .. } => None,
            },
        }
    }
}

/// Up to five items joined with commas, then how many more.
fn list(v: &[String]) -> String {
    if v.len() > 5 {
        format!("{} and {} more", v[..5].join(", "), v.len() - 5)
    } else {
        v.join(", ")
    }
}

/// `rebuilt N archive(s) in S.SSSs (CAUSES)[, F failed]: MAC STATE, …`.
fn write_rebuild(
    f: &mut fmt::Formatter<'_>,
    devices: &[DeviceResult],
    cause: &[String],
    duration_ms: u64,
) -> fmt::Result {
    let failed = devices
        .iter()
        .filter(|d| d.state == PublishState::Failed)
        .count();
    let items: Vec<String> = devices
        .iter()
        .map(|d| match d.conflicts.as_deref().unwrap_or_default() {
            [] => format!("{} {}", d.mac, d.state.name()),
            c => format!(
                "{} {} ({} conflict{} with its capture: {})",
                d.mac,
                d.state.name(),
                c.len(),
                if c.len() == 1 { "" } else { "s" },
                c.join(" ")
            ),
        })
        .collect();
    write!(
        f,
        "rebuilt {} archive{} in {:.3}s ({}){}: {}",
        devices.len(),
        if devices.len() == 1 { "" } else { "s" },
        duration_ms as f64 / 1000.0,
        list(cause),
        if failed > 0 {
            format!(", {failed} failed")
        } else {
            String::new()
        },
        list(&items)
    )
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Report::Start {
                site,
                mode: Mode::Inotify,
                ..
            } => write!(f, "watching {} (inotify)", site.display()),
            Report::Start {
                site,
                mode: Mode::Poll { reason },
                poll_interval_ms,
            } => write!(
                f,
                "watching {} (polling every {} ms: {reason})",
                site.display(),
                poll_interval_ms.unwrap_or(0)
            ),
            Report::Rebuild {
                devices,
                cause,
                duration_ms,
            } => write_rebuild(f, devices, cause, *duration_ms),
            Report::Pruned { macs } => {
                let items: Vec<String> = macs.iter().map(Mac::to_string).collect();
                write!(f, "pruned {}", list(&items))
            }
            Report::Error { error, cause } => write!(
                f,
                "error: {error} (after {}); the last good archives stay published",
                list(cause)
            ),
            Report::Stop => write!(f, "stopped"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_read_as_before() {
        let mac: Mac = "52:54:00:12:34:56".parse().unwrap();
        let start = Report::Start {
            site: "/s".into(),
            mode: Mode::Poll {
                reason: "nfs".into(),
            },
            poll_interval_ms: Some(1000),
        };
        assert_eq!(
            start.to_string(),
            "watching /s (polling every 1000 ms: nfs)"
        );
        let causes: Vec<String> = (0..7).map(|i| format!("f{i}")).collect();
        let rebuild = Report::Rebuild {
            devices: vec![
                DeviceResult {
                    mac,
                    state: PublishState::Updated,
                    error: None,
                    failure: None,
                    conflicts: Some(vec!["etc/motd".into()]),
                },
                DeviceResult {
                    mac,
                    state: PublishState::Failed,
                    error: Some(JsonError::new(&Error::Env("bad".into()), Some(&mac))),
                    failure: Some(Error::Env("bad".into())),
                    conflicts: None,
                },
            ],
            cause: causes,
            duration_ms: 1234,
        };
        assert_eq!(
            rebuild.to_string(),
            "rebuilt 2 archives in 1.234s (f0, f1, f2, f3, f4 and 2 more), 1 failed: \
             52:54:00:12:34:56 updated (1 conflict with its capture: etc/motd), \
             52:54:00:12:34:56 failed"
        );
        let json = serde_json::to_value(&rebuild).unwrap();
        assert_eq!(json["event"], "rebuild");
        assert_eq!(json["devices"][1]["state"], "failed");
        assert_eq!(json["devices"][1]["error"]["message"], "bad");
        assert_eq!(json["devices"][1]["error"]["mac"], "52:54:00:12:34:56");
        assert_eq!(json["devices"][0]["error"], serde_json::Value::Null);
        assert_eq!(json["devices"][0]["conflicts"][0], "etc/motd");
        assert_eq!(json["devices"][1]["conflicts"], serde_json::Value::Null);
        let json = serde_json::to_value(&start).unwrap();
        assert_eq!(json["mode"], "poll");
        assert_eq!(json["reason"], "nfs");
        assert_eq!(Report::Stop.to_string(), "stopped");
    }
}

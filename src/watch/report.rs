//! What `ovl watch` reports: one [`Report`] per event, printed as one line of text (its
//! `Display`) or as one JSON object.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

use crate::build::project::{Outcome, OutcomeResult};
use crate::build::publish::Published;
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
pub(crate) struct DeviceResult {
    /// The MAC.
    pub(crate) mac: Mac,
    /// `created`, `updated`, `unchanged` or `failed`.
    pub(crate) state: String,
    /// The error, when failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
    /// Paths where the device's capture and the fleet both changed (`[capture] conflicts`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) conflicts: Vec<String>,
}

impl From<&Outcome> for DeviceResult {
    fn from(o: &Outcome) -> DeviceResult {
        match &o.result {
            OutcomeResult::Built {
                state, conflicts, ..
            } => DeviceResult {
                mac: o.mac,
                state: match state {
                    Published::Created => "created",
                    Published::Updated => "updated",
                    Published::Unchanged => "unchanged",
                }
                .into(),
                error: None,
                conflicts: conflicts.clone(),
            },
            OutcomeResult::Failed { error, .. } => DeviceResult {
                mac: o.mac,
                state: "failed".into(),
                error: Some(error.to_string()),
                conflicts: Vec::new(),
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
    let failed = devices.iter().filter(|d| d.state == "failed").count();
    let items: Vec<String> = devices
        .iter()
        .map(|d| match d.conflicts.len() {
            0 => format!("{} {}", d.mac, d.state),
            n => format!(
                "{} {} ({n} conflict{} with its capture: {})",
                d.mac,
                d.state,
                if n == 1 { "" } else { "s" },
                d.conflicts.join(" ")
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
                    state: "updated".into(),
                    error: None,
                    conflicts: vec!["etc/motd".into()],
                },
                DeviceResult {
                    mac,
                    state: "failed".into(),
                    error: Some("bad".into()),
                    conflicts: Vec::new(),
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
        assert_eq!(json["devices"][1]["error"], "bad");
        assert!(json["devices"][0].get("error").is_none());
        assert_eq!(json["devices"][0]["conflicts"][0], "etc/motd");
        assert!(json["devices"][1].get("conflicts").is_none());
        let json = serde_json::to_value(&start).unwrap();
        assert_eq!(json["mode"], "poll");
        assert_eq!(json["reason"], "nfs");
        assert_eq!(Report::Stop.to_string(), "stopped");
    }
}

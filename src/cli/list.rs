//! `ovl list`: the inventory's devices with their archive's state and their capture's drift.

use std::net::Ipv4Addr;

use serde::Serialize;
use serde_json::json;

use crate::build::compare::{self, ArchiveState};
use crate::build::project::{Project, Selection};
use crate::cli::output;
use crate::error::{EXIT_INPUT, EXIT_OK, Result};
use crate::mac::Mac;

/// One device of the listing.
#[derive(Debug, Serialize)]
struct Row {
    /// The MAC.
    mac: Mac,
    /// Its profile.
    profile: String,
    /// The planned hostname (the inventory's, or empty, when planning fails).
    hostname: String,
    /// The inventory's fixed address.
    ip: Option<Ipv4Addr>,
    /// The archive's state.
    state: ArchiveState,
    /// What the device's capture changes against the fleet; `null` without a capture.
    drift: Option<Drift>,
    /// Why the device cannot be planned.
    error: Option<String>,
}

/// A capture's drift, counted.
#[derive(Debug, Serialize)]
struct Drift {
    /// The capture file, site-relative.
    capture: String,
    /// Whether the build it started from is known (else it lies on top of the layers).
    base: bool,
    /// Paths it changes against the fleet.
    changes: usize,
    /// Of which conflicts.
    conflicts: usize,
}

impl Drift {
    /// `none`, `3 files`, `3 files, 1 conflict`, `no base, 3 files`.
    fn text(d: Option<&Drift>) -> String {
        let Some(d) = d else {
            return "-".into();
        };
        let files = match d.changes {
            0 => "none".to_string(),
            1 => "1 file".to_string(),
            n => format!("{n} files"),
        };
        match (d.base, d.conflicts) {
            (false, _) => format!("no base, {files}"),
            (true, 0) => files,
            (true, 1) => format!("{files}, 1 conflict"),
            (true, n) => format!("{files}, {n} conflicts"),
        }
    }
}

/// List every device; exit code 1 when one cannot be planned.
pub(crate) fn run(p: &Project, json: bool) -> Result<i32> {
    let rows = rows(p)?;
    let code = if rows.iter().any(|r| r.error.is_some()) {
        EXIT_INPUT
    } else {
        EXIT_OK
    };
    if json {
        output::json(&json!({ "devices": rows }));
        return Ok(code);
    }
    let mut t = format!(
        "{:17}  {:10}  {:20}  {:15}  {:7}  {}\n",
        "MAC", "PROFILE", "HOSTNAME", "IP", "STATE", "DRIFT"
    );
    for r in &rows {
        t.push_str(&format!(
            "{:17}  {:10}  {:20}  {:15}  {:7}  {}\n",
            r.mac.to_string(),
            r.profile,
            r.hostname,
            r.ip.map_or_else(|| "-".to_string(), |ip| ip.to_string()),
            r.state.name(),
            Drift::text(r.drift.as_ref()),
        ));
    }
    output::text(&t);
    for e in rows.iter().filter_map(|r| r.error.as_ref()) {
        output::error(e);
    }
    Ok(code)
}

/// Plan every device of the inventory and compare it with its published archive.
fn rows(p: &Project) -> Result<Vec<Row>> {
    let specs = p.select(&Selection {
        all: true,
        ..Default::default()
    })?;
    let cache = p.read_layers(&specs);
    let mut rows = Vec::new();
    for spec in &specs {
        let (hostname, state, drift, error) = match p.plan(spec, &cache) {
            Ok(plan) => (
                plan.hostname.clone(),
                compare::archive_state(p, &plan)?,
                plan.capture.as_ref().map(|c| Drift {
                    capture: c.file.clone(),
                    base: c.base.is_some(),
                    changes: c.items.len(),
                    conflicts: c.conflicts().len(),
                }),
                None,
            ),
            Err(e) => (
                spec.device
                    .as_ref()
                    .and_then(|d| d.hostname.clone())
                    .unwrap_or_default(),
                compare::unplanned_state(p, &spec.mac),
                None,
                Some(e.to_string()),
            ),
        };
        rows.push(Row {
            mac: spec.mac,
            profile: spec.profile.clone(),
            hostname,
            ip: spec.device.as_ref().and_then(|d| d.ip),
            state,
            drift,
            error,
        });
    }
    Ok(rows)
}

//! `ovl list`: the inventory's devices with their archive's state and their capture's drift;
//! `--all` adds the archives of MACs the inventory does not hold (`orphan`).

use std::net::Ipv4Addr;

use clap::Args;
use serde::Serialize;
use serde_json::json;

use crate::build::compare::{self, ArchiveState};
use crate::build::project::{Project, Selection};
use crate::cli::output;
use crate::error::{EXIT_OK, Error, JsonError, Result};
use crate::mac::Mac;

/// `ovl list` options.
#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// Also list archives in configs/ of MACs the inventory does not hold (state `orphan`:
    /// ad-hoc `--profile --mac` builds, removed devices; `ovl prune` removes them).
    #[arg(long)]
    all: bool,
}

/// One device of the listing.
#[derive(Debug, Serialize)]
struct Row {
    /// The MAC.
    mac: Mac,
    /// Its profile (`null` for an orphan).
    profile: Option<String>,
    /// The planned hostname (the inventory's, or `null`, when planning fails).
    hostname: Option<String>,
    /// The inventory's fixed address.
    ip: Option<Ipv4Addr>,
    /// The archive's state.
    state: ArchiveState,
    /// Whether `configs/MAC.tar.gz` exists.
    published: bool,
    /// What the device's capture changes against the fleet; `null` without a capture (or a
    /// plan).
    drift: Option<Drift>,
    /// Why the device cannot be planned.
    error: Option<JsonError>,
    /// The error itself, for the text output.
    #[serde(skip)]
    failure: Option<Error>,
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
    /// `-` without a capture, else `none`, `3 files`, `3 files, 1 conflict`, `no base, 3 files`.
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
pub(crate) fn run(p: &Project, a: &ListArgs, json: bool) -> Result<i32> {
    let mut rows = rows(p)?;
    if a.all {
        rows.extend(compare::orphans(p)?.into_iter().map(|(mac, _)| Row {
            mac,
            profile: None,
            hostname: None,
            ip: None,
            state: ArchiveState::Orphan,
            published: true,
            drift: None,
            error: None,
            failure: None,
        }));
        rows.sort_by_key(|r| r.mac);
    }
    let groups = output::group_errors(
        rows.iter()
            .filter_map(|r| Some((Some(r.mac), r.failure.as_ref()?))),
    );
    let code = output::worst_exit(&groups).unwrap_or(EXIT_OK);
    if json {
        output::json(&json!({ "devices": rows, "errors": output::errors_json(&groups) }));
    } else {
        output::text(&text(&rows));
    }
    output::errors(&groups);
    Ok(code)
}

/// The table.
fn text(rows: &[Row]) -> String {
    let dash = |s: Option<String>| s.unwrap_or_else(|| "-".to_string());
    let mut t = format!(
        "{:17}  {:10}  {:20}  {:15}  {:7}  {}\n",
        "MAC", "PROFILE", "HOSTNAME", "IP", "STATE", "DRIFT"
    );
    for r in rows {
        t.push_str(&format!(
            "{:17}  {:10}  {:20}  {:15}  {:7}  {}\n",
            r.mac.to_string(),
            dash(r.profile.clone()),
            dash(r.hostname.clone()),
            dash(r.ip.map(|ip| ip.to_string())),
            r.state.name(),
            Drift::text(r.drift.as_ref()),
        ));
    }
    t
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
        let (hostname, state, drift, failure) = match p.plan(spec, &cache) {
            Ok(plan) => (
                Some(plan.hostname.clone()),
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
                spec.device.as_ref().and_then(|d| d.hostname.clone()),
                ArchiveState::Failed,
                None,
                Some(e),
            ),
        };
        rows.push(Row {
            mac: spec.mac,
            profile: Some(spec.profile.clone()),
            hostname,
            ip: spec.device.as_ref().and_then(|d| d.ip),
            state,
            published: p.archive_path(&spec.mac).is_file(),
            drift,
            error: failure.as_ref().map(|e| JsonError::new(e, Some(&spec.mac))),
            failure,
        });
    }
    Ok(rows)
}

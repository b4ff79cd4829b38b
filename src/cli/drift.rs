//! `ovl drift`: per device, what its lbu capture changes against the fleet — files added,
//! changed and deleted, text diffs, mode and owner changes — which of these are conflicts,
//! and which captures have no known base.

use clap::Args;
use rayon::prelude::*;
use serde_json::{Value, json};

use crate::build::capture::CaptureReport;
use crate::build::merge::{DriftChange, DriftItem, Winner};
use crate::build::project::{Project, Selection};
use crate::cli::output;
use crate::error::{EXIT_OK, JsonError, Result};
use crate::mac::Mac;
use crate::site::ConflictPolicy;

/// `ovl drift` selection (default: every device of the inventory).
#[derive(Debug, Args)]
pub(crate) struct DriftArgs {
    /// Every device of the inventory (the default).
    #[arg(long, conflicts_with_all = ["mac", "profile"])]
    all: bool,
    /// This device (repeatable).
    #[arg(long, value_name = "MAC")]
    mac: Vec<Mac>,
    /// The devices of this profile and of profiles extending it (with --mac: plan the MAC
    /// with this profile).
    #[arg(long, value_name = "NAME")]
    profile: Option<String>,
}

/// One device's drift (its hostname and capture report; the rest of its plan is dropped at
/// once), or why it cannot be planned.
struct Row {
    mac: Mac,
    profile: String,
    plan: Result<(String, Option<CaptureReport>)>,
}

/// Report the drift of the selected devices; exit code 1 when one cannot be planned.
pub(crate) fn run(p: &Project, a: &DriftArgs, json: bool) -> Result<i32> {
    let specs = p.select(&Selection {
        all: a.all || (a.mac.is_empty() && a.profile.is_none()),
        macs: a.mac.clone(),
        profile: a.profile.clone(),
    })?;
    let cache = p.read_layers(&specs);
    let rows: Vec<Row> = specs
        .par_iter()
        .map(|s| Row {
            mac: s.mac,
            profile: s.profile.clone(),
            plan: p
                .plan(s, &cache)
                .map(|plan| (plan.hostname.clone(), plan.capture)),
        })
        .collect();
    let groups = output::group_errors(
        rows.iter()
            .filter_map(|r| Some((Some(r.mac), r.plan.as_ref().err()?))),
    );
    if json {
        let devices: Vec<Value> = rows.iter().map(row_json).collect();
        output::json(&json!({
            "devices": devices,
            "summary": summary(&rows),
            "errors": output::errors_json(&groups),
        }));
    } else {
        let mut t = String::new();
        for r in &rows {
            if let Ok((hostname, Some(c))) = &r.plan {
                t.push_str(&device_text(r, hostname, c));
            }
        }
        let s = summary(&rows);
        t.push_str(&format!(
            "{}: {} with a capture ({} drifted, {} with conflicts, {} without a known base)\n",
            plural(rows.len(), "device"),
            s["captured"],
            s["drifted"],
            s["conflicting"],
            s["no_base"]
        ));
        output::text(&t);
    }
    output::errors(&groups);
    Ok(output::worst_exit(&groups).unwrap_or(EXIT_OK))
}

/// Counts over the rows.
fn summary(rows: &[Row]) -> Value {
    let captures: Vec<&CaptureReport> = rows
        .iter()
        .filter_map(|r| r.plan.as_ref().ok()?.1.as_ref())
        .collect();
    json!({
        "devices": rows.len(),
        "captured": captures.len(),
        "drifted": captures.iter().filter(|c| !c.items.is_empty()).count(),
        "conflicting": captures.iter().filter(|c| !c.conflicts().is_empty()).count(),
        "no_base": captures.iter().filter(|c| c.base.is_none()).count(),
        "failed": rows.iter().filter(|r| r.plan.is_err()).count(),
    })
}

/// One device as JSON: `mac`, `profile`, `hostname`, `capture` (with each item's diff; `null`
/// without a capture) and `error` (`null` unless it cannot be planned).
fn row_json(r: &Row) -> Value {
    let (hostname, capture, error) = match &r.plan {
        Ok((hostname, capture)) => (Some(hostname), capture.as_ref().map(capture_json), None),
        Err(e) => (None, None, Some(JsonError::new(e, Some(&r.mac)))),
    };
    json!({
        "mac": r.mac,
        "profile": r.profile,
        "hostname": hostname,
        "capture": capture,
        "error": error,
    })
}

/// A capture report as JSON, each changed item with its unified diff (fleet → device) when
/// both sides are text.
fn capture_json(c: &CaptureReport) -> Value {
    let mut v = serde_json::to_value(c).unwrap_or_default();
    if let Some(items) = v.get_mut("items").and_then(Value::as_array_mut) {
        for (j, item) in items.iter_mut().zip(&c.items) {
            let diff = item
                .unified_diff()
                .filter(|_| item.change == DriftChange::Changed);
            j["diff"] = diff.map_or(Value::Null, Value::from);
        }
    }
    v
}

/// The text block of one device with a capture.
fn device_text(r: &Row, hostname: &str, c: &CaptureReport) -> String {
    let mut t = format!("{} {hostname} ({}): {}\n", r.mac, r.profile, c.file);
    match (&c.base, &c.no_base) {
        (Some(b), _) if b.mac == r.mac.to_string() => {
            t.push_str(&format!("  base: build {}\n", &b.id[..12]));
        }
        (Some(b), _) => t.push_str(&format!("  base: build {} of {}\n", &b.id[..12], b.mac)),
        (None, why) => t.push_str(&format!(
            "  no known base: {}; the capture lies on top of the fleet's layers\n",
            why.as_deref().unwrap_or("unknown")
        )),
    }
    if c.items.is_empty() {
        t.push_str("  no drift: the capture holds what the fleet gives\n");
    }
    for i in &c.items {
        t.push_str(&item_line(i, c.policy));
        if let Some(d) = i
            .unified_diff()
            .filter(|_| i.change == DriftChange::Changed)
        {
            for line in d.lines() {
                t.push_str(&format!("    {line}\n"));
            }
        }
    }
    t
}

/// `  ~ PATH (what): verdict`.
fn item_line(i: &DriftItem, policy: &str) -> String {
    let sign = match (i.conflict, i.change) {
        (true, _) => '!',
        (_, DriftChange::Added) => '+',
        (_, DriftChange::Changed) => '~',
        (_, DriftChange::Deleted) => '-',
    };
    let what: Vec<&str> = i.what.iter().map(|w| w.name()).collect();
    let what = if what.is_empty() {
        String::new()
    } else {
        format!(" ({})", what.join(", "))
    };
    let did = match i.change {
        DriftChange::Added => "added by the device",
        DriftChange::Changed => "changed by the device",
        DriftChange::Deleted => "deleted by the device",
    };
    let verdict = match (i.winner, i.discarded, i.conflict) {
        (_, true, _) => "discarded (devices.toml): the fleet's version wins".to_string(),
        (Winner::Merged, ..) => "merged with the fleet's".to_string(),
        (w, _, true) => format!(
            "conflict: the fleet changed it too; the {}'s version wins ([capture] conflicts = \"{policy}\")",
            if w == Winner::Device {
                "device"
            } else {
                "fleet"
            }
        ),
        (Winner::Fleet, ..) if i.change == DriftChange::Deleted => {
            "the fleet changed it since: the fleet's version returns".to_string()
        }
        (Winner::Fleet, ..) => "the fleet's rules win".to_string(),
        (Winner::Device, ..) if i.change == DriftChange::Deleted => "stays deleted".into(),
        (Winner::Device, ..) => "the device's version stays".to_string(),
    };
    format!("  {sign} {}{what}: {did}; {verdict}\n", i.path)
}

/// The one-line warning about a device whose capture conflicts with the fleet (`ovl build`,
/// `ovl check`); `None` without conflicts.
pub(crate) fn conflict_warning(
    mac: &Mac,
    hostname: &str,
    conflicts: &[&str],
    policy: ConflictPolicy,
) -> Option<String> {
    if conflicts.is_empty() {
        return None;
    }
    Some(format!(
        "{mac} ({hostname}): its capture and the fleet both changed {} ({}); the {}'s \
         versions win ([capture] conflicts = \"{}\"); see `ovl drift --mac {mac}`",
        plural(conflicts.len(), "file"),
        conflicts.join(", "),
        policy.name(),
        policy.name(),
    ))
}

/// `1 file`, `2 files`.
fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

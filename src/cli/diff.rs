//! `ovl diff`: what a rebuild would change in the published archives of one or many devices
//! (`--mac`, repeated, `--profile`, `--all`), nothing written. Devices whose changes are the
//! same are shown once together; a summary counts what would be created, updated, left
//! unchanged or fail. `--exit-code` exits with 4 when anything would change.

use std::collections::HashMap;

use clap::Args;
use serde_json::{Value, json};

use crate::build::compare::{self, ArchiveDiff, DeviceDiff};
use crate::build::project::Project;
use crate::build::state::{PublishState, counts_text};
use crate::cli::{SelectArgs, output};
use crate::error::{EXIT_CHANGES, EXIT_OK, JsonError, Result};
use crate::mac::Mac;

/// The states a diff reports, in report order.
const DIFF_STATES: [PublishState; 4] = [
    PublishState::Created,
    PublishState::Updated,
    PublishState::Unchanged,
    PublishState::Failed,
];

/// `ovl diff` options.
#[derive(Debug, Args)]
pub(crate) struct DiffArgs {
    /// Which devices (--profile with --mac: those MACs with that profile, whatever the
    /// inventory says: what `build --profile P --mac M --force` would do).
    #[command(flatten)]
    pub(crate) select: SelectArgs,
    /// Exit with code 4 when an archive would be created or updated (0 when none would;
    /// a failed device's code wins).
    #[arg(long)]
    exit_code: bool,
}

/// Compare the selected devices with their published archives.
pub(crate) fn run(p: &Project, a: &DiffArgs, json: bool) -> Result<i32> {
    let specs = p.select(&a.select.selection())?;
    let diffs = compare::diff_many(p, &specs);
    let groups = output::group_errors(
        diffs
            .iter()
            .filter_map(|d| Some((Some(d.mac), d.result.as_ref().err()?))),
    );
    let changing = diffs.iter().filter(|d| d.state.is_change()).count();
    if json {
        output::json(&json!({
            "devices": diffs.iter().map(device_json).collect::<Vec<_>>(),
            "counts": output::counts_json(diffs.iter().map(|d| d.state), &DIFF_STATES, PublishState::name),
            "changing": changing,
            "errors": output::errors_json(&groups),
        }));
    } else {
        output::text(&text(&diffs, changing));
    }
    output::errors(&groups);
    let failed = output::worst_exit(&groups);
    Ok(match failed {
        Some(code) => code,
        None if a.exit_code && changing > 0 => EXIT_CHANGES,
        None => EXIT_OK,
    })
}

/// One device as JSON.
fn device_json(d: &DeviceDiff) -> Value {
    let (hostname, files, error) = match &d.result {
        Ok((h, f)) => (Some(h), Some(f), None),
        Err(e) => (None, None, Some(JsonError::new(e, Some(&d.mac)))),
    };
    json!({
        "mac": d.mac,
        "profile": d.profile,
        "hostname": hostname,
        "state": d.state,
        "archive": files.map(|f| &f.archive),
        "added": files.map(|f| &f.added),
        "removed": files.map(|f| &f.removed),
        "changed": files.map(|f| f.changed.iter().map(|c| json!({
            "path": c.path, "what": c.what, "diff": c.unified_diff(),
        })).collect::<Vec<_>>()),
        "error": error,
    })
}

/// What groups devices in the text: the state, the headline's detail and the body.
type GroupKey = (PublishState, String, String);

/// Devices grouped by what would happen to them, then the summary line.
fn text(diffs: &[DeviceDiff], changing: usize) -> String {
    // (state, headline detail, body) → devices, in the order of their first device.
    let mut index: HashMap<GroupKey, usize> = HashMap::new();
    let mut groups: Vec<(GroupKey, Vec<&DeviceDiff>)> = Vec::new();
    for d in diffs {
        let (detail, body) = match &d.result {
            Ok((_, f)) => describe(d.state, f),
            Err(_) => ("see the error below".to_string(), String::new()),
        };
        let key = (d.state, detail, body);
        let i = *index.entry(key.clone()).or_insert_with(|| {
            groups.push((key, Vec::new()));
            groups.len() - 1
        });
        groups[i].1.push(d);
    }
    groups.sort_by_key(|((state, ..), devices)| (*state, devices.first().map(|d| d.mac)));
    let mut t = String::new();
    for ((state, detail, body), devices) in &groups {
        let who = match devices.as_slice() {
            [d] => match &d.result {
                Ok((hostname, _)) => format!("{} {} {hostname}", d.mac, d.profile),
                Err(_) => format!("{} {}", d.mac, d.profile),
            },
            many => output::macs_text(&many.iter().map(|d| d.mac).collect::<Vec<Mac>>()),
        };
        t.push_str(&format!("{:9} {who}: {detail}\n{body}", state.name()));
    }
    let counts = counts_text(
        diffs.iter().map(|d| d.state),
        &DIFF_STATES,
        PublishState::name,
    );
    t.push_str(&format!(
        "{} device{}: {changing} would change ({counts}); nothing written\n",
        diffs.len(),
        if diffs.len() == 1 { "" } else { "s" },
    ));
    t
}

/// The headline detail and the body (file lines, unified diffs of text files) of a device
/// that could be planned.
fn describe(state: PublishState, f: &ArchiveDiff) -> (String, String) {
    match state {
        PublishState::Created => (
            format!(
                "the archive does not exist yet; a build creates it with {} entries",
                f.entries
            ),
            String::new(),
        ),
        PublishState::Unchanged => ("up to date".to_string(), String::new()),
        _ if f.identical() => (
            "same files, other archive bytes (entry times or compression)".to_string(),
            String::new(),
        ),
        _ => (
            format!(
                "{} added, {} removed, {} changed",
                f.added.len(),
                f.removed.len(),
                f.changed.len()
            ),
            body(f),
        ),
    }
}

/// `+ added`, `- removed`, `~ changed (what)` lines, text files' changes as unified diffs.
fn body(d: &ArchiveDiff) -> String {
    let mut t = String::new();
    for k in &d.added {
        t.push_str(&format!("+ {k}\n"));
    }
    for k in &d.removed {
        t.push_str(&format!("- {k}\n"));
    }
    for c in &d.changed {
        let what: Vec<&str> = c.what.iter().map(|w| w.name()).collect();
        t.push_str(&format!("~ {} ({})\n", c.path, what.join(", ")));
        if let Some(u) = c.unified_diff() {
            t.push_str(&u);
        }
    }
    t
}

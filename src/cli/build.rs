//! `ovl build`: build and publish the selected archives and the iPXE boot scripts, with a
//! progress bar on a terminal and one line per archive; `--dry-run` says what it would do and
//! writes nothing.

use std::io::IsTerminal;
use std::time::Instant;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use crate::build::project::{Outcome, OutcomeResult, Project, millis};
use crate::build::state::{PublishState, counts_text};
use crate::cli::drift::conflict_warning;
use crate::cli::{SelectArgs, output};
use crate::error::{EXIT_CHANGES, EXIT_OK, Error, Result};
use crate::site::ConflictPolicy;

/// Beyond this many archives, unchanged ones get no line of their own.
const LIST_UNCHANGED_UP_TO: usize = 20;

/// The states a build reports, in report order.
const BUILD_STATES: [PublishState; 4] = [
    PublishState::Created,
    PublishState::Updated,
    PublishState::Unchanged,
    PublishState::Failed,
];

/// `ovl build` options.
#[derive(Debug, Args)]
pub(crate) struct BuildArgs {
    /// Which devices.
    #[command(flatten)]
    select: SelectArgs,
    /// Parallel jobs (default: one per core).
    #[arg(long, short = 'j', value_name = "N")]
    jobs: Option<usize>,
    /// Say what would be created, updated or left unchanged; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// With --dry-run: exit with code 4 when an archive would be created or updated.
    #[arg(long, requires = "dry_run")]
    exit_code: bool,
    /// With --profile and --mac: build an inventory device with another profile than its own,
    /// replacing its archive.
    #[arg(long)]
    force: bool,
}

/// Build the selection; the exit code is the highest of the failed devices'.
pub(crate) fn run(p: &Project, a: &BuildArgs, json: bool) -> Result<i32> {
    let start = Instant::now();
    if let Some(j) = a.jobs {
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(j.max(1))
            .build_global();
    }
    if !a.force {
        refuse_other_profile(p, &a.select)?;
    }
    let specs = p.select(&a.select.selection())?;
    let outcomes = if a.dry_run {
        p.dry_build(&specs)
    } else {
        let bar = (a.select.all && !json && std::io::stderr().is_terminal() && specs.len() > 1)
            .then(|| progress_bar(specs.len()));
        let outcomes = p.build(&specs, &|| {
            if let Some(b) = &bar {
                b.inc(1);
            }
        });
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        outcomes
    };
    let scripts = p.boot_scripts(!a.dry_run)?;
    let mut warnings = p.warnings();
    warnings.extend(capture_warnings(&outcomes, p.site.config.capture.conflicts));
    for w in &warnings {
        output::warning(w);
    }
    let groups = output::group_errors(
        outcomes
            .iter()
            .filter_map(|o| Some((Some(o.mac), o.error()?))),
    );
    let ms = millis(start);
    if json {
        output::json(&json!({
            "dry_run": a.dry_run,
            "devices": outcomes.iter().map(outcome_json).collect::<Vec<_>>(),
            "warnings": warnings,
            "scripts": scripts.iter().map(|(p, s)| json!({"path": p, "state": PublishState::from(*s)})).collect::<Vec<_>>(),
            "counts": output::counts_json(outcomes.iter().map(Outcome::state), &BUILD_STATES, PublishState::name),
            "errors": output::errors_json(&groups),
            "duration_ms": ms,
        }));
    } else {
        output::text(&text(&outcomes, a.dry_run, ms));
    }
    output::errors(&groups);
    let failed = output::worst_exit(&groups);
    Ok(match failed {
        Some(code) => code,
        None if a.exit_code && outcomes.iter().any(|o| o.state().is_change()) => EXIT_CHANGES,
        None => EXIT_OK,
    })
}

/// `--profile P --mac M` for a device the inventory gives another profile would replace its
/// archive with P's: a usage error naming the device's own profile.
fn refuse_other_profile(p: &Project, s: &SelectArgs) -> Result<()> {
    let Some(profile) = &s.profile else {
        return Ok(());
    };
    let clashes: Vec<String> = s
        .mac
        .iter()
        .filter_map(|m| p.inventory.devices.get(m))
        .filter(|d| &d.profile != profile)
        .map(|d| format!("{} is of profile {}", d.mac, d.profile))
        .collect();
    if clashes.is_empty() {
        return Ok(());
    }
    Err(Error::Usage(format!(
        "{} in {}; building with profile {profile} would replace the archive it boots: \
         give --force to do so, or change its profile (`ovl device set MAC --profile {profile}`)",
        clashes.join(", "),
        p.inventory.file.display()
    )))
}

/// One device as JSON: `mac`, `profile`, `path`, `state`, and `hostname`, `bytes`,
/// `entries`, `conflicts` (paths its capture and the fleet both changed), `no_base` (why its
/// capture has no known base) (or `null`s) and `error` (or `null`).
pub(crate) fn outcome_json(o: &Outcome) -> Value {
    let (hostname, bytes, entries, conflicts, no_base) = match &o.result {
        OutcomeResult::Built {
            hostname,
            bytes,
            entries,
            conflicts,
            no_base,
            ..
        } => (
            Some(hostname),
            Some(bytes),
            Some(entries),
            Some(conflicts),
            no_base.as_ref(),
        ),
        OutcomeResult::Failed { .. } => (None, None, None, None, None),
    };
    json!({
        "mac": o.mac,
        "profile": o.profile,
        "path": o.path,
        "state": o.state(),
        "hostname": hostname,
        "bytes": bytes,
        "entries": entries,
        "conflicts": conflicts,
        "no_base": no_base,
        "error": o.error().map(|e| crate::error::JsonError::new(e, Some(&o.mac))),
    })
}

/// One warning per device whose capture conflicts with the fleet (resolved by `policy`),
/// and one naming the captures without a known base.
fn capture_warnings(outcomes: &[Outcome], policy: ConflictPolicy) -> Vec<String> {
    let mut out = Vec::new();
    let mut no_base = Vec::new();
    for o in outcomes {
        if let OutcomeResult::Built {
            hostname,
            conflicts,
            no_base: nb,
            ..
        } = &o.result
        {
            let conflicts: Vec<&str> = conflicts.iter().map(String::as_str).collect();
            out.extend(conflict_warning(&o.mac, hostname, &conflicts, policy));
            if nb.is_some() {
                no_base.push(o.mac.to_string());
            }
        }
    }
    if !no_base.is_empty() {
        out.push(format!(
            "{} no known base (older than the build identity, or its build is no longer \
             kept): each lies on top of its device's layers as before; see `ovl drift`: {}",
            if no_base.len() == 1 {
                "1 capture has".to_string()
            } else {
                format!("{} captures have", no_base.len())
            },
            no_base.join(", ")
        ));
    }
    out
}

/// A progress bar of `len` archives on stderr.
fn progress_bar(len: usize) -> ProgressBar {
    let b = ProgressBar::new(len as u64);
    b.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} archives {elapsed_precise}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    b
}

/// One line per archive built (unchanged ones only when there are few), then
/// `N archives: … in S.SSs`.
fn text(outcomes: &[Outcome], dry_run: bool, ms: u64) -> String {
    let mut t = String::new();
    for o in outcomes {
        if let OutcomeResult::Built {
            hostname, bytes, ..
        } = &o.result
        {
            let state = o.state();
            if state != PublishState::Unchanged || outcomes.len() <= LIST_UNCHANGED_UP_TO {
                t.push_str(&format!(
                    "{:9} {} {:10} {hostname} ({bytes} bytes)\n",
                    state.name(),
                    o.mac,
                    o.profile
                ));
            }
        }
    }
    let counts = counts_text(
        outcomes.iter().map(Outcome::state),
        &BUILD_STATES,
        PublishState::name,
    );
    t.push_str(&format!(
        "{} archives: {counts} in {:.2}s{}\n",
        outcomes.len(),
        ms as f64 / 1000.0,
        if dry_run {
            " (dry run: nothing written)"
        } else {
            ""
        }
    ));
    t
}

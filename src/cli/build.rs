//! `ovl build`: build and publish the selected archives and the iPXE boot scripts, with a
//! progress bar on a terminal and one line per archive.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::Instant;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::build::project::{Outcome, OutcomeResult, Project, Selection, millis};
use crate::build::publish::Published;
use crate::cli::drift::conflict_warning;
use crate::cli::output;
use crate::error::{EXIT_OK, Result};
use crate::mac::Mac;
use crate::site::ConflictPolicy;

/// Beyond this many archives, unchanged ones get no line of their own.
const LIST_UNCHANGED_UP_TO: usize = 20;

/// `ovl build` selection.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("what").required(true).multiple(true).args(["all", "mac", "profile"])))]
pub(crate) struct BuildArgs {
    /// Every device of the inventory.
    #[arg(long, conflicts_with_all = ["mac", "profile"])]
    all: bool,
    /// This device (repeatable). With --profile, any MAC, even one not in the inventory.
    #[arg(long, value_name = "MAC")]
    mac: Vec<Mac>,
    /// Alone: the devices of this profile and of profiles extending it. With --mac: build the
    /// MAC with this profile.
    #[arg(long, value_name = "NAME")]
    profile: Option<String>,
    /// Parallel jobs (default: one per core).
    #[arg(long, short = 'j', value_name = "N")]
    jobs: Option<usize>,
}

/// Build the selection; the exit code is the highest of the failed devices'.
pub(crate) fn run(p: &Project, a: &BuildArgs, json: bool) -> Result<i32> {
    let start = Instant::now();
    if let Some(j) = a.jobs {
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(j.max(1))
            .build_global();
    }
    let specs = p.select(&Selection {
        all: a.all,
        macs: a.mac.clone(),
        profile: a.profile.clone(),
    })?;
    let bar = (a.all && !json && std::io::stderr().is_terminal() && specs.len() > 1)
        .then(|| progress_bar(specs.len()));
    let outcomes = p.build(&specs, &|| {
        if let Some(b) = &bar {
            b.inc(1);
        }
    });
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let scripts = p.write_boot_scripts()?;
    let warnings = p.warnings();
    for w in &warnings {
        output::warning(w);
    }
    let summary = Summary::of(&outcomes, p.site.config.capture.conflicts);
    let ms = millis(start);
    if json {
        output::json(&json!({
            "devices": outcomes,
            "warnings": warnings,
            "scripts": scripts.iter().map(|(p, s)| json!({"path": p, "state": s})).collect::<Vec<_>>(),
            "counts": summary.counts,
            "duration_ms": ms,
        }));
    } else {
        output::text(&summary.text(outcomes.len(), ms));
    }
    Ok(summary.code)
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

/// What a build did, counted; failures are reported on stderr as they are counted.
struct Summary {
    /// `created`, `updated`, `unchanged`, `failed` → how many.
    counts: BTreeMap<&'static str, usize>,
    /// One line per archive built (unchanged ones only when there are few).
    lines: String,
    /// The highest exit code of the failures.
    code: i32,
}

impl Summary {
    /// Count `outcomes`, printing each failure's error on stderr, and a warning for each
    /// device whose capture conflicts with the fleet (`policy` resolved them), and one line
    /// for the captures without a known base.
    fn of(outcomes: &[Outcome], policy: ConflictPolicy) -> Summary {
        let mut no_base = Vec::new();
        let mut s = Summary {
            counts: BTreeMap::new(),
            lines: String::new(),
            code: EXIT_OK,
        };
        for o in outcomes {
            match &o.result {
                OutcomeResult::Built {
                    state,
                    hostname,
                    bytes,
                    conflicts,
                    no_base: nb,
                    ..
                } => {
                    let conflicts: Vec<&str> = conflicts.iter().map(String::as_str).collect();
                    if let Some(w) = conflict_warning(&o.mac, hostname, &conflicts, policy) {
                        output::warning(&w);
                    }
                    if nb.is_some() {
                        no_base.push(o.mac.to_string());
                    }
                    let name = published_name(*state);
                    *s.counts.entry(name).or_default() += 1;
                    if *state != Published::Unchanged || outcomes.len() <= LIST_UNCHANGED_UP_TO {
                        s.lines.push_str(&format!(
                            "{name:9} {} {:10} {hostname} ({bytes} bytes)\n",
                            o.mac, o.profile
                        ));
                    }
                }
                OutcomeResult::Failed { error } => {
                    *s.counts.entry("failed").or_default() += 1;
                    s.code = s.code.max(error.exit_code());
                    output::error(error);
                }
            }
        }
        if !no_base.is_empty() {
            eprintln!(
                "note: {} {} no known base (older than the build identity, or its build is \
                 no longer kept): each lies on top of its device's layers; see `ovl drift`: {}",
                no_base.len(),
                if no_base.len() == 1 {
                    "capture has"
                } else {
                    "captures have"
                },
                no_base.join(", ")
            );
        }
        s
    }

    /// The archive lines and the closing `N archives: … in S.SSs` line.
    fn text(&self, archives: usize, ms: u64) -> String {
        let counts: Vec<String> = self
            .counts
            .iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect();
        format!(
            "{}{archives} archives: {} in {:.2}s\n",
            self.lines,
            if counts.is_empty() {
                "none".to_string()
            } else {
                counts.join(", ")
            },
            ms as f64 / 1000.0
        )
    }
}

/// `created`, `updated` or `unchanged`.
fn published_name(state: Published) -> &'static str {
    match state {
        Published::Created => "created",
        Published::Updated => "updated",
        Published::Unchanged => "unchanged",
    }
}

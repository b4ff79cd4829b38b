//! `ovl prune`: remove the archives of MACs the inventory does not hold — devices removed
//! from `devices.toml`, ad-hoc `ovl build --profile P --mac M` builds — so that they are no
//! longer served. `--dry-run` only names them.

use clap::Args;
use serde_json::json;

use crate::build::compare;
use crate::build::project::Project;
use crate::build::state::{PublishState, counts_text};
use crate::cli::output;
use crate::error::{EXIT_OK, Error, JsonError, Result};
use crate::mac::Mac;

/// The states prune reports.
const PRUNE_STATES: [PublishState; 2] = [PublishState::Removed, PublishState::Failed];

/// `ovl prune` options.
#[derive(Debug, Args)]
pub(crate) struct PruneArgs {
    /// Name the archives that would be removed; remove nothing.
    #[arg(long)]
    dry_run: bool,
}

/// Remove (or name) every orphan archive; the exit code is the highest of the failures'.
pub(crate) fn run(p: &Project, a: &PruneArgs, json: bool) -> Result<i32> {
    let mut done: Vec<(Mac, std::path::PathBuf, Option<Error>)> = Vec::new();
    for (mac, path) in compare::orphans(p)? {
        let err = if a.dry_run {
            None
        } else {
            std::fs::remove_file(&path)
                .err()
                .filter(|e| e.kind() != std::io::ErrorKind::NotFound)
                .map(|e| Error::io(&path, e))
        };
        done.push((mac, path, err));
    }
    let state = |e: &Option<Error>| {
        if e.is_some() {
            PublishState::Failed
        } else {
            PublishState::Removed
        }
    };
    let groups = output::group_errors(
        done.iter()
            .filter_map(|(m, _, e)| Some((Some(*m), e.as_ref()?))),
    );
    if json {
        output::json(&json!({
            "dry_run": a.dry_run,
            "devices": done.iter().map(|(mac, path, e)| json!({
                "mac": mac,
                "path": path,
                "state": state(e),
                "error": e.as_ref().map(|e| JsonError::new(e, Some(mac))),
            })).collect::<Vec<_>>(),
            "counts": output::counts_json(done.iter().map(|(_, _, e)| state(e)), &PRUNE_STATES, PublishState::name),
            "errors": output::errors_json(&groups),
        }));
    } else {
        let mut t = String::new();
        for (mac, path, e) in &done {
            if e.is_none() {
                t.push_str(&format!("removed   {mac} {}\n", p.site.relative(path)));
            }
        }
        let counts = counts_text(
            done.iter().map(|(_, _, e)| state(e)),
            &PRUNE_STATES,
            PublishState::name,
        );
        t.push_str(&format!(
            "{} orphan archive{}: {counts}{}\n",
            done.len(),
            if done.len() == 1 { "" } else { "s" },
            if a.dry_run {
                " (dry run: nothing removed)"
            } else {
                ""
            }
        ));
        output::text(&t);
    }
    output::errors(&groups);
    Ok(output::worst_exit(&groups).unwrap_or(EXIT_OK))
}

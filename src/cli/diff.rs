//! `ovl diff --mac MAC`: what a rebuild would change in a device's published archive.

use serde_json::json;

use crate::build::compare::{self, ArchiveDiff};
use crate::build::project::Project;
use crate::cli::{DeviceArgs, output};
use crate::error::{EXIT_OK, Result};

/// Compare the device of `a` with its published archive.
pub(crate) fn run(p: &Project, a: &DeviceArgs, json: bool) -> Result<i32> {
    let plan = a.plan(p)?;
    let d = compare::diff(p, &plan)?;
    if json {
        output::json(&json!({
            "mac": plan.mac, "archive": d.archive, "exists": d.exists, "identical": d.identical(),
            "added": d.added, "removed": d.removed,
            "changed": d.changed.iter().map(|c| json!({"path": c.path, "what": c.what})).collect::<Vec<_>>(),
        }));
    } else {
        output::text(&text(&d));
    }
    Ok(EXIT_OK)
}

/// `+ added`, `- removed`, `~ changed (what)` lines, text files' changes as unified diffs.
fn text(d: &ArchiveDiff) -> String {
    let path = d.archive.display();
    if !d.exists {
        return format!(
            "{path} does not exist yet; a build creates it with {} entries\n",
            d.entries
        );
    }
    let mut t = String::new();
    if d.identical() {
        t.push_str(&format!("{path}: up to date\n"));
    }
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

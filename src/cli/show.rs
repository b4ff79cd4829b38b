//! `ovl show --mac MAC`: a device's resolved settings and its file tree, with the layer each
//! file comes from.

use std::path::Path;

use serde_json::json;

use crate::build::compare::{self, ArchiveState};
use crate::build::manifest::Listed;
use crate::build::plan::DevicePlan;
use crate::build::project::Project;
use crate::cli::{DeviceArgs, output};
use crate::error::{EXIT_OK, Error, Result};

/// Show the device of `a`.
pub(crate) fn run(p: &Project, a: &DeviceArgs, json: bool) -> Result<i32> {
    let plan = a.plan(p)?;
    let files = plan.manifest.listing();
    let state = compare::archive_state(p, &plan)?;
    let archive = p.archive_path(&plan.mac);
    if json {
        let mut v = serde_json::to_value(&plan).map_err(|e| Error::Env(e.to_string()))?;
        v["archive"] = json!({ "path": archive, "state": state });
        v["files"] = serde_json::to_value(&files).map_err(|e| Error::Env(e.to_string()))?;
        v["capture"] =
            serde_json::to_value(&plan.capture).map_err(|e| Error::Env(e.to_string()))?;
        v["id"] = json!(plan.id);
        output::json(&v);
        return Ok(EXIT_OK);
    }
    let mut t = settings_text(&plan, &archive, state);
    if let Some(c) = &plan.capture {
        let how = match (&c.base, &c.no_base) {
            (Some(b), _) => format!("merged, base build {}", &b.id[..12]),
            (None, why) => format!("on top, no known base: {}", why.as_deref().unwrap_or("-")),
        };
        // Before the empty line that ends the settings block.
        t.pop();
        t.push_str(&format!(
            "capture:     {} ({how}; {} drifted, {} conflicts; see ovl drift)\n\n",
            c.file,
            c.items.len(),
            c.conflicts().len()
        ));
    }
    for f in &files {
        t.push_str(&file_line(f));
    }
    output::text(&t);
    Ok(EXIT_OK)
}

/// The settings block, ending with an empty line.
fn settings_text(plan: &DevicePlan, archive: &Path, state: ArchiveState) -> String {
    let or_dash = |list: &[String], sep: &str| {
        if list.is_empty() {
            "-".to_string()
        } else {
            list.join(sep)
        }
    };
    format!(
        "mac:         {}\nprofile:     {} ({})\nhostname:    {}\nip:          {}\nin inventory: {}\nlayers:      {}\nkernel args: {}\nmodules:     {}\narchive:     {} ({})\n\n",
        plan.mac,
        plan.profile,
        plan.chain.join(" → "),
        plan.hostname,
        plan.ip.map(|i| i.to_string()).unwrap_or_else(|| "-".into()),
        if plan.known { "yes" } else { "no" },
        or_dash(&plan.layers, ", "),
        or_dash(&plan.kernel_args, " "),
        plan.modules.join(","),
        archive.display(),
        state.name(),
    )
}

/// One file of the tree: mode, owner, size, path and layer.
fn file_line(f: &Listed) -> String {
    let name = match &f.target {
        Some(t) => format!("{} -> {t}", f.path),
        None if f.kind == "dir" => format!("{}/", f.path),
        None => f.path.clone(),
    };
    let owner = format!(
        "{}:{}",
        display_id(&f.user, f.uid),
        display_id(&f.group, f.gid)
    );
    format!(
        "{} {:14} {:>8}  {:50}  {}\n",
        f.mode,
        owner,
        f.size.map(|s| s.to_string()).unwrap_or_default(),
        name,
        f.layer
    )
}

/// An owner or group: its name, else its number.
fn display_id(name: &str, id: u32) -> String {
    if name.is_empty() {
        id.to_string()
    } else {
        name.to_string()
    }
}

//! `ovl discard --mac MAC PATH…`: the fleet's version wins for these paths on that device,
//! whatever its capture holds. Recorded in the device's `devices.toml` entry (`discard =
//! [...]`), so it survives the device's next `lbu commit`; the file is edited in place as
//! `ovl device` edits it (comments, order and formatting kept, under the inventory lock),
//! checked whole, then written atomically.

use clap::Args;
use serde_json::json;

use crate::build::project::Project;
use crate::cli::{device, output};
use crate::error::{EXIT_OK, Error, Result};
use crate::mac::Mac;
use crate::site::Site;
use crate::site::inventory::{Inventory, device_path};
use crate::site::inventory_edit::InventoryDoc;

/// `ovl discard` arguments.
#[derive(Debug, Args)]
pub(crate) struct DiscardArgs {
    /// The device (in the inventory).
    #[arg(long, value_name = "MAC")]
    mac: Mac,
    /// Paths on the device (files or folders, e.g. etc/motd) where the fleet's version wins.
    #[arg(value_name = "PATH", required = true)]
    paths: Vec<String>,
}

/// Record the paths in the device's entry, then report what its capture loses.
pub(crate) fn run(p: &Project, a: &DiscardArgs, json: bool) -> Result<i32> {
    let mut paths = Vec::new();
    for raw in &a.paths {
        let path = device_path(raw).ok_or_else(|| {
            Error::Usage(format!(
                "{raw:?} is not a path on the device such as etc/motd"
            ))
        })?;
        if !paths.contains(&path) {
            paths.push(path);
        }
    }
    let device = p.inventory.devices.get(&a.mac).ok_or_else(|| {
        Error::device(
            a.mac,
            format!(
                "not in {}; only inventory devices can discard",
                p.inventory.file.display()
            ),
        )
    })?;
    let added: Vec<String> = paths
        .iter()
        .filter(|x| !device.discard.contains(x))
        .cloned()
        .collect();
    if !added.is_empty() {
        write_discard(p, &a.mac, &added)?;
    }
    let p = Project::load(Site::open(&p.site.root)?)?;
    let spec = p.spec(a.mac, None)?;
    let plan = p.plan(&spec, &p.read_layers(std::slice::from_ref(&spec)))?;
    let dropped: Vec<&str> = plan
        .capture
        .iter()
        .flat_map(|c| &c.items)
        .filter(|i| i.discarded && paths.iter().any(|x| covers(x, &i.path)))
        .map(|i| i.path.as_str())
        .collect();
    if json {
        output::json(&json!({
            "mac": a.mac,
            "added": added,
            "discard": plan.discard,
            "dropped": dropped,
        }));
        return Ok(EXIT_OK);
    }
    let mut t = String::new();
    let file = p.site.relative(&p.inventory.file);
    for x in &paths {
        let what = if added.contains(x) {
            "recorded in"
        } else {
            "already in"
        };
        t.push_str(&format!(
            "{} {x}: the fleet's version wins ({what} {file})\n",
            a.mac
        ));
    }
    if dropped.is_empty() {
        t.push_str("its capture does not differ from the fleet there now\n");
    } else {
        t.push_str(&format!(
            "the next build drops the device's version of {}\n",
            dropped.join(", ")
        ));
    }
    output::text(&t);
    Ok(EXIT_OK)
}

/// Is `path` at or below `root`?
fn covers(root: &str, path: &str) -> bool {
    crate::build::merge::under_any(path, std::slice::from_ref(&root.to_string()))
}

/// Add `paths` to the `discard` list of `mac`'s entry in `devices.toml` under the inventory
/// lock, keeping the rest of the file byte for byte; the new file is checked whole before it
/// replaces the old one.
fn write_discard(p: &Project, mac: &Mac, paths: &[String]) -> Result<()> {
    let _lock = device::lock(&p.site)?;
    let file = &p.inventory.file;
    let mut doc = InventoryDoc::read(file)?;
    doc.add_discard(*mac, paths)?;
    let text = doc.text();
    Inventory::parse(file, &text, &p.profiles)?;
    device::write_inventory(file, &text)
}

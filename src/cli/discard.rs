//! `ovl discard --mac MAC PATH…`: the fleet's version wins for these paths on that device,
//! whatever its capture holds. Recorded in the device's `devices.toml` entry (`discard =
//! [...]`), so it survives the device's next `lbu commit`; the file is edited in place with
//! `toml_edit` (comments, order and formatting kept), checked whole, then written atomically.

use std::path::Path;

use clap::Args;
use serde_json::json;
use toml_edit::{Array, DocumentMut, Item, Value};

use crate::build::project::Project;
use crate::build::publish;
use crate::cli::output;
use crate::error::{EXIT_OK, Error, IoContext, Result};
use crate::mac::Mac;
use crate::site::Site;
use crate::site::inventory::{Inventory, device_path};

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

/// Append `paths` to the `discard` list of `mac`'s entry in `devices.toml`, keeping the rest
/// of the file byte for byte; the new file is checked whole before it replaces the old one.
fn write_discard(p: &Project, mac: &Mac, paths: &[String]) -> Result<()> {
    let file = &p.inventory.file;
    let text = std::fs::read_to_string(file).at(file)?;
    let new = with_discard(file, &text, mac, paths)?;
    Inventory::parse(file, &new, &p.profiles)?;
    let mode = std::fs::metadata(file).at(file)?.permissions();
    use std::os::unix::fs::PermissionsExt;
    // A hidden temporary beside devices.toml, renamed over it.
    let dir = file.parent().unwrap_or(&p.site.root);
    publish::write_atomic(
        file,
        new.as_bytes(),
        dir,
        ".devices.toml.",
        Some(mode.mode() & 0o7777),
    )
}

/// `text` with `paths` appended to the `discard` array of the `[[device]]` whose `mac` is
/// `mac` (created when missing).
fn with_discard(file: &Path, text: &str, mac: &Mac, paths: &[String]) -> Result<String> {
    let mut doc: DocumentMut = text
        .parse()
        .map_err(|e| Error::at_path(file, format!("cannot be edited: {e}")))?;
    let devices = doc
        .get_mut("device")
        .and_then(Item::as_array_of_tables_mut)
        .ok_or_else(|| Error::at_path(file, "no [[device]] entries"))?;
    let entry = devices
        .iter_mut()
        .find(|t| {
            t.get("mac")
                .and_then(Item::as_str)
                .and_then(|m| m.parse::<Mac>().ok())
                == Some(*mac)
        })
        .ok_or_else(|| Error::device(mac, format!("no [[device]] entry in {}", file.display())))?;
    let list = entry
        .entry("discard")
        .or_insert(Item::Value(Value::Array(Array::new())))
        .as_array_mut()
        .ok_or_else(|| {
            Error::at_path(
                file,
                format!("{mac}: discard is not an array of paths; fix it by hand"),
            )
        })?;
    for x in paths {
        list.push(x.as_str());
    }
    Ok(doc.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEVICES: &str = r#"# The fleet.
[[device]]
mac = "52:54:00:12:34:56"   # hall kiosk
profile = "XL"
[device.vars]
screen = "portrait"

[[device]]
mac = "52-54-00-AB-CD-01"
profile = "S"
discard = ["etc/issue"]  # keep ours
"#;

    #[test]
    fn discard_is_added_and_the_rest_kept_byte_for_byte() {
        let f = Path::new("devices.toml");
        let mac: Mac = "52:54:00:12:34:56".parse().unwrap();
        let new = with_discard(f, DEVICES, &mac, &["etc/motd".into()]).unwrap();
        assert_eq!(
            new,
            DEVICES.replace(
                "profile = \"XL\"\n",
                "profile = \"XL\"\ndiscard = [\"etc/motd\"]\n"
            )
        );
        let mac: Mac = "52:54:00:ab:cd:01".parse().unwrap();
        let new = with_discard(f, DEVICES, &mac, &["etc/motd".into()]).unwrap();
        assert_eq!(
            new,
            DEVICES.replace("[\"etc/issue\"]", "[\"etc/issue\", \"etc/motd\"]")
        );
        let unknown: Mac = "02:00:00:00:00:01".parse().unwrap();
        assert!(with_discard(f, DEVICES, &unknown, &["x".into()]).is_err());
    }
}

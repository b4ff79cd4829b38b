//! `ovl device add|set|rm`: the inventory edited from scripts. `devices.toml` keeps its
//! comments, order and formatting outside the edited entry; the whole edited inventory is
//! checked (and the device planned) before anything is written; the file is replaced
//! atomically; then the device's archive is rebuilt (`add`, `set`) or removed (`rm`).

use std::net::Ipv4Addr;
use std::path::Path;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::build::project::{OutcomeResult, Project};
use crate::build::publish;
use crate::build::state::PublishState;
use crate::cli::output;
use crate::error::{EXIT_OK, Error, IoContext, Result};
use crate::mac::Mac;
use crate::site::Site;
use crate::site::inventory::{Device, Inventory};
use crate::site::inventory_edit::{DeviceEdit, InventoryDoc, valid_var_name};
use crate::site::layout::STATE_DIR;
use crate::site::profile::Profiles;

/// `ovl device` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum DeviceCommand {
    /// Add a device to devices.toml and build its archive.
    Add(AddArgs),
    /// Change a device of devices.toml and rebuild its archive.
    Set(SetArgs),
    /// Remove a device from devices.toml and its archive (its captures stay).
    Rm(RmArgs),
}

/// Settings `add` and `set` share.
#[derive(Debug, Args)]
pub(crate) struct EntryArgs {
    /// Its hostname (wins over the profile's template).
    #[arg(long, value_name = "NAME")]
    hostname: Option<String>,
    /// Its fixed DHCP address.
    #[arg(long, value_name = "IPV4")]
    ip: Option<Ipv4Addr>,
    /// Its own extra layer (repeatable; with `set`, the list replaces the device's).
    #[arg(long, value_name = "LAYER")]
    overlay: Vec<String>,
    /// A template value, `vars.KEY` (repeatable; the value is a string).
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_var)]
    var: Vec<(String, String)>,
}

/// `ovl device add`.
#[derive(Debug, Args)]
pub(crate) struct AddArgs {
    /// The device's MAC (any common spelling; written lowercase with colons).
    #[arg(value_name = "MAC")]
    mac: Mac,
    /// Its profile.
    #[arg(long, value_name = "NAME")]
    profile: String,
    /// Its other settings.
    #[command(flatten)]
    entry: EntryArgs,
}

/// `ovl device set`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("change").required(true).multiple(true)
    .args(["profile", "hostname", "ip", "overlay", "var", "no_hostname", "no_ip", "no_overlays", "unset_var"])))]
pub(crate) struct SetArgs {
    /// The device's MAC (any spelling).
    #[arg(value_name = "MAC")]
    mac: Mac,
    /// Its new profile.
    #[arg(long, value_name = "NAME")]
    profile: Option<String>,
    /// Its new settings.
    #[command(flatten)]
    entry: EntryArgs,
    /// Remove its hostname (the profile's template applies again).
    #[arg(long, conflicts_with = "hostname")]
    no_hostname: bool,
    /// Remove its fixed address.
    #[arg(long, conflicts_with = "ip")]
    no_ip: bool,
    /// Remove its own layers.
    #[arg(long, conflicts_with = "overlay")]
    no_overlays: bool,
    /// Remove a template value (repeatable).
    #[arg(long, value_name = "KEY", value_parser = parse_var_name)]
    unset_var: Vec<String>,
}

/// `ovl device rm`.
#[derive(Debug, Args)]
pub(crate) struct RmArgs {
    /// The device's MAC (any spelling).
    #[arg(value_name = "MAC")]
    mac: Mac,
    /// Leave configs/MAC.tar.gz published (it becomes an orphan; `ovl prune` removes it).
    #[arg(long)]
    keep_archive: bool,
}

/// `KEY=VALUE`, KEY a bare TOML key.
fn parse_var(s: &str) -> std::result::Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected KEY=VALUE"))?;
    Ok((parse_var_name(k)?, v.to_string()))
}

/// A bare TOML key: letters, digits, `_` and `-`.
fn parse_var_name(k: &str) -> std::result::Result<String, String> {
    if valid_var_name(k) {
        Ok(k.to_string())
    } else {
        Err(format!(
            "{k:?}: a variable name is letters, digits, '_' and '-'"
        ))
    }
}

impl DeviceCommand {
    /// The MAC, the verb for messages, and the edit.
    fn parts(&self) -> (Mac, &'static str, DeviceEdit) {
        let edit = |e: &EntryArgs| DeviceEdit {
            hostname: e.hostname.clone().map(Some),
            ip: e.ip.map(Some),
            overlays: (!e.overlay.is_empty()).then(|| e.overlay.clone()),
            set_vars: e.var.clone(),
            ..Default::default()
        };
        match self {
            DeviceCommand::Add(a) => (a.mac, "add", edit(&a.entry)),
            DeviceCommand::Set(a) => {
                let mut ed = edit(&a.entry);
                ed.profile = a.profile.clone();
                if a.no_hostname {
                    ed.hostname = Some(None);
                }
                if a.no_ip {
                    ed.ip = Some(None);
                }
                if a.no_overlays {
                    ed.overlays = Some(Vec::new());
                }
                ed.unset_vars = a.unset_var.clone();
                (a.mac, "set", ed)
            }
            DeviceCommand::Rm(a) => (a.mac, "rm", DeviceEdit::default()),
        }
    }
}

/// Edit the inventory, check it, write it, then rebuild or remove the device's archive.
pub(crate) fn run(site: &Site, c: &DeviceCommand, json: bool) -> Result<i32> {
    let _lock = lock(site)?;
    let profiles = Profiles::load(&site.profiles_dir())?;
    let path = site.devices_file();
    let mut doc = InventoryDoc::read(&path)?;
    let (mac, verb, edit) = c.parts();
    match c {
        DeviceCommand::Add(a) => doc.add(mac, &a.profile, &edit)?,
        DeviceCommand::Set(_) => doc.set(mac, &edit)?,
        DeviceCommand::Rm(_) => doc.remove(mac)?,
    }
    let text = doc.text();
    let inventory = Inventory::parse(&path, &text, &profiles)
        .map_err(|e| unwritten(e, "in the edited file; nothing written"))?;
    let p = Project {
        site: site.clone(),
        profiles,
        inventory,
    };
    let device = p.inventory.devices.get(&mac).cloned();
    if device.is_some() {
        let spec = p
            .spec(mac, None)
            .map_err(|e| unwritten(e, "nothing written"))?;
        let tried = p.dry_build(std::slice::from_ref(&spec));
        if let Some(e) = tried.first().and_then(|o| o.error()) {
            return Err(unwritten(e.clone(), "nothing written"));
        }
    }
    let written = text != doc.original();
    if written {
        write_inventory(&path, &text)?;
    }
    let (archive, code, line) = match (c, &device) {
        (DeviceCommand::Rm(a), _) => remove_archive(&p, mac, a.keep_archive)?,
        (_, Some(_)) => rebuild(&p, mac)?,
        (_, None) => return Err(Error::device(mac, "not in the edited inventory")),
    };
    if json {
        output::json(&json!({
            "action": verb,
            "mac": mac,
            "file": path,
            "written": written,
            "device": device.as_ref().map(device_json),
            "archive": archive,
        }));
    } else {
        let what = match (verb, written) {
            (_, false) => format!("{mac}: {} unchanged", path.display()),
            ("add", _) => format!("added {mac} to {}", path.display()),
            ("set", _) => format!("changed {mac} in {}", path.display()),
            _ => format!("removed {mac} from {}", path.display()),
        };
        output::text(&format!("{what}; {line}\n"));
    }
    Ok(code)
}

/// An error met before writing, with `note` (`nothing written`) added to its message.
fn unwritten(e: Error, note: &str) -> Error {
    match e {
        Error::Input { loc, message } => Error::Input {
            loc,
            message: format!("{message} ({note})"),
        },
        Error::Device { mac, message } => Error::Device {
            mac,
            message: format!("{message} ({note})"),
        },
        e => e,
    }
}

/// Hold the site's inventory lock (`.ovl-state/devices.lock`, where no clean-up of
/// temporaries reaches) until dropped, so that two edits do not lose one another.
pub(crate) fn lock(site: &Site) -> Result<std::fs::File> {
    let dir = site.root.join(STATE_DIR);
    std::fs::create_dir_all(&dir).at(&dir)?;
    let path = dir.join("devices.lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .at(&path)?;
    f.lock().at(&path)?;
    Ok(f)
}

/// Replace `devices.toml` atomically, keeping its permission bits and, where allowed, owner.
/// A symlinked `devices.toml` is replaced where it points; the link stays.
pub(crate) fn write_inventory(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let target = match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => std::fs::canonicalize(path).at(path)?,
        _ => path.to_path_buf(),
    };
    let old = std::fs::metadata(&target).ok();
    let mode = old
        .as_ref()
        .map_or(0o644, |m| m.permissions().mode() & 0o7777);
    // Hidden beside the file, as archives are: the rename stays atomic wherever it lives.
    let dir = target.parent().unwrap_or(Path::new("."));
    publish::write_atomic(&target, text.as_bytes(), dir, ".devices.toml.", Some(mode))?;
    if let Some(m) = old {
        // Best effort: an administrator's `sudo ovl device …` keeps the site's owner.
        let _ = std::os::unix::fs::chown(&target, Some(m.uid()), Some(m.gid()));
    }
    Ok(())
}

/// Build and publish the device's archive: its JSON, the exit code and the text.
fn rebuild(p: &Project, mac: Mac) -> Result<(Value, i32, String)> {
    let spec = p.spec(mac, None)?;
    let outcomes = p.build(std::slice::from_ref(&spec), &|| {});
    let Some(o) = outcomes.first() else {
        return Err(Error::device(mac, "not built"));
    };
    let rel = p.site.relative(&o.path);
    let (code, line) = match &o.result {
        OutcomeResult::Built {
            hostname, bytes, ..
        } => (
            EXIT_OK,
            format!("{} {rel} ({hostname}, {bytes} bytes)", o.state().name()),
        ),
        OutcomeResult::Failed { error } => {
            output::error(error);
            (error.exit_code(), format!("failed to build {rel}"))
        }
    };
    Ok((crate::cli::build::outcome_json(o), code, line))
}

/// Remove the device's archive unless `keep`: its JSON, the exit code and the text.
fn remove_archive(p: &Project, mac: Mac, keep: bool) -> Result<(Value, i32, String)> {
    let path = p.archive_path(&mac);
    let rel = p.site.relative(&path);
    let existed = path.is_file();
    let state = if keep || !existed {
        PublishState::Unchanged
    } else {
        std::fs::remove_file(&path).at(&path)?;
        PublishState::Removed
    };
    let line = match (state, existed) {
        (PublishState::Removed, _) => format!("removed {rel}"),
        (_, true) => format!("kept {rel} (an orphan now: `ovl prune` removes it)"),
        _ => format!("{rel} was not published"),
    };
    let v = json!({
        "mac": mac,
        "path": path,
        "state": state,
        "published": existed && keep,
    });
    Ok((v, EXIT_OK, line))
}

/// An inventory entry as JSON.
fn device_json(d: &Device) -> Value {
    json!({
        "mac": d.mac,
        "profile": d.profile,
        "hostname": d.hostname,
        "ip": d.ip,
        "overlays": d.overlays,
        "vars": d.vars,
    })
}

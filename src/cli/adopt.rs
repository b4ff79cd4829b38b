//! `ovl adopt --mac MAC PATH… --into overlays/NAME`: copy a device's version of files (from
//! its lbu capture) into an overlay folder, so that the fleet gives them to every device
//! using that overlay. Folders are created as needed; symlinks in the overlay are never
//! followed (a symlink where a folder is needed is an error, one where a file goes is
//! replaced); modes are kept; the devices now getting the files are listed.

use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::json;

use crate::build::layer::{LayerEntry, LayerSource, LayerTree, Node};
use crate::build::merge::under_any;
use crate::build::plan::{DeviceSpec, layer_sources};
use crate::build::project::Project;
use crate::build::publish;
use crate::build::settings::find_capture;
use crate::cli::output;
use crate::error::{EXIT_OK, Error, IoContext, Result};
use crate::mac::Mac;
use crate::site::inventory::device_path;
use crate::site::layout::{IDENTITY_DIR, IDENTITY_FILE, OVERLAYS_DIR, TMP_DIR};

/// `ovl adopt` arguments.
#[derive(Debug, Args)]
pub(crate) struct AdoptArgs {
    /// The device whose capture holds the files.
    #[arg(long, value_name = "MAC")]
    mac: Mac,
    /// Paths on the device (files or folders, e.g. etc/motd).
    #[arg(value_name = "PATH", required = true)]
    paths: Vec<String>,
    /// The overlay folder to copy them into, e.g. overlays/base (created when missing).
    #[arg(long, value_name = "overlays/NAME")]
    into: String,
}

/// Copy the capture's entries into the overlay; list them and the overlay's users.
pub(crate) fn run(p: &Project, a: &AdoptArgs, json: bool) -> Result<i32> {
    let name = a
        .into
        .trim_start_matches(&format!("{OVERLAYS_DIR}/"))
        .to_string();
    let dir = match LayerSource::parse(&p.site.root, &name) {
        Ok(LayerSource::Folder(d)) => d,
        _ => {
            return Err(Error::Usage(format!(
                "--into {:?}: expected an overlay folder such as overlays/base",
                a.into
            )));
        }
    };
    let hostname = p
        .inventory
        .devices
        .get(&a.mac)
        .and_then(|d| d.hostname.as_deref());
    let capture = find_capture(&p.site, &a.mac, hostname)?.ok_or_else(|| {
        Error::device(
            a.mac,
            format!(
                "no capture in {}/{}",
                p.site.relative(&p.site.captures_dir()),
                a.mac
            ),
        )
    })?;
    let tree = LayerTree::read(&p.site, &LayerSource::Archive(capture.clone()))?;
    let entries = selected(&tree, &a.paths, &p.site.relative(&capture))?;
    ensure_folder(&p.site.root.join(OVERLAYS_DIR), &name)?;
    for e in &entries {
        write_entry(&dir, e)?;
    }
    let files: Vec<&str> = entries
        .iter()
        .filter(|e| !matches!(e.node, Node::Dir))
        .map(|e| e.path.as_str())
        .collect();
    let users = users(p, &dir, &files);
    let done = Adopted {
        mac: a.mac,
        capture: p.site.relative(&capture),
        rel: p.site.relative(&dir),
        name,
        entries,
        users,
    };
    if json {
        output::json(&done.json());
    } else {
        output::text(&done.text());
    }
    Ok(EXIT_OK)
}

/// What `adopt` did.
struct Adopted {
    mac: Mac,
    /// The capture, site-relative.
    capture: String,
    /// The overlay folder, site-relative.
    rel: String,
    /// The overlay's name.
    name: String,
    entries: Vec<LayerEntry>,
    users: Vec<User>,
}

impl Adopted {
    /// `{"mac", "capture", "into", "adopted": [{"path", "type", "mode"}], "users": [{"mac",
    /// "hostname", "profile", "overridden": [{"path", "by"}]}]}`.
    fn json(&self) -> serde_json::Value {
        let adopted: Vec<_> = self
            .entries
            .iter()
            .map(|e| json!({"path": e.path, "type": kind(&e.node), "mode": format!("{:04o}", e.mode)}))
            .collect();
        let users: Vec<_> = self
            .users
            .iter()
            .map(|(m, h, pr, o)| {
                let o: Vec<_> = o
                    .iter()
                    .map(|(x, by)| json!({"path": x, "by": by}))
                    .collect();
                json!({"mac": m, "hostname": h, "profile": pr, "overridden": o})
            })
            .collect();
        json!({
            "mac": self.mac, "capture": self.capture, "into": self.rel,
            "adopted": adopted, "users": users,
        })
    }

    /// For people: each path, owners not kept, the overlay's users.
    fn text(&self) -> String {
        let (rel, name, users) = (&self.rel, &self.name, &self.users);
        let mut t = format!(
            "adopted from {}'s capture ({}) into {rel}:\n",
            self.mac, self.capture
        );
        for e in &self.entries {
            t.push_str(&format!(
                "  {} ({}, {:04o})\n",
                e.path,
                kind(&e.node),
                e.mode
            ));
            if let Some(m) = e.stored.as_ref().filter(|m| (m.uid, m.gid) != (0, 0)) {
                t.push_str(&format!(
                "    owner {}:{} is not kept in a folder: declare it with [permissions.\"{}\"]\n",
                m.uid, m.gid, e.path
            ));
            }
        }
        if users.is_empty() {
            t.push_str(&format!(
                "no device uses {rel} yet: add \"{name}\" to a profile's (or a device's) overlays\n"
            ));
        } else {
            t.push_str(&format!(
                "{rel} is a layer of {} device(s); their next build gets these files:\n",
                users.len()
            ));
            for (m, h, pr, overridden) in users {
                t.push_str(&format!("  {m} {h} ({pr})\n"));
                for (x, by) in overridden {
                    t.push_str(&format!("    but not {x}: {by} wins there\n"));
                }
            }
        }
        t
    }
}

/// `dir`, `file` or `symlink`.
fn kind(n: &Node) -> &'static str {
    match n {
        Node::Dir => "dir",
        Node::Symlink(_) => "symlink",
        _ => "file",
    }
}

/// The capture's entries at or below each of `paths` (parents first), the identity file
/// aside; a path the capture does not hold is an error.
fn selected(tree: &LayerTree, paths: &[String], label: &str) -> Result<Vec<LayerEntry>> {
    let mut roots = Vec::new();
    for raw in paths {
        let p = device_path(raw).ok_or_else(|| {
            Error::Usage(format!(
                "{raw:?} is not a path on the device such as etc/motd"
            ))
        })?;
        if !tree
            .entries
            .iter()
            .any(|e| under_any(&e.path, std::slice::from_ref(&p)))
        {
            return Err(Error::at_path(label, format!("{p}: not in this capture")));
        }
        roots.push(p);
    }
    let own = [IDENTITY_DIR.to_string(), IDENTITY_FILE.to_string()];
    Ok(tree
        .entries
        .iter()
        .filter(|e| under_any(&e.path, &roots) && !own.contains(&e.path))
        .cloned()
        .collect())
}

/// Make sure `base/rel` is a folder, creating what is missing (0755); a component that is a
/// symlink or a file is an error.
fn ensure_folder(base: &Path, rel: &str) -> Result<()> {
    let mut at = base.to_path_buf();
    std::fs::create_dir_all(&at).at(&at)?;
    for c in rel.split('/') {
        at.push(c);
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(Error::at_path(
                    &at,
                    "not a folder (a symlink or a file): ovl never follows links out of an overlay",
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir(&at).at(&at)?;
            }
            Err(e) => return Err(Error::io(&at, e)),
        }
    }
    Ok(())
}

/// Write one capture entry into the overlay folder `dir`, its mode kept.
fn write_entry(dir: &Path, e: &LayerEntry) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some((parent, _)) = e.path.rsplit_once('/') {
        ensure_folder(dir, parent)?;
    }
    let target: PathBuf = dir.join(&e.path);
    let template = PathBuf::from(format!("{}.j2", target.display()));
    if !matches!(e.node, Node::Dir) && template.exists() {
        return Err(Error::at_path(
            &template,
            format!(
                "a template makes {} in this overlay: change it instead",
                e.path
            ),
        ));
    }
    let existing = std::fs::symlink_metadata(&target).ok();
    let mode = std::fs::Permissions::from_mode(e.mode & 0o7777);
    match &e.node {
        Node::Dir => {
            ensure_folder(dir, &e.path)?;
            std::fs::set_permissions(&target, mode).at(&target)?;
        }
        Node::File(_) | Node::Symlink(_) | Node::Template(_)
            if existing.as_ref().is_some_and(|m| m.is_dir()) =>
        {
            return Err(Error::at_path(
                &target,
                "a folder stands where the device has a file",
            ));
        }
        Node::File(bytes) => {
            if existing.is_some_and(|m| m.file_type().is_symlink()) {
                std::fs::remove_file(&target).at(&target)?;
            }
            let tmp = target.parent().unwrap_or(dir);
            let prefix = format!("{TMP_DIR}.adopt.");
            publish::write_atomic(&target, bytes, tmp, &prefix, Some(e.mode & 0o7777))?;
        }
        Node::Template(text) => {
            let prefix = format!("{TMP_DIR}.adopt.");
            let tmp = target.parent().unwrap_or(dir);
            publish::write_atomic(
                &target,
                text.as_bytes(),
                tmp,
                &prefix,
                Some(e.mode & 0o7777),
            )?;
        }
        Node::Symlink(to) => {
            if existing.is_some() {
                std::fs::remove_file(&target).at(&target)?;
            }
            std::os::unix::fs::symlink(to, &target).at(&target)?;
        }
    }
    Ok(())
}

/// A device using the overlay: MAC, hostname, profile, and the adopted paths that a later
/// layer or a declaration of its profile overrides (with where from).
type User = (Mac, String, String, Vec<(String, String)>);

/// The inventory's devices whose layers include the folder `dir`, each planned to tell
/// which of the adopted `paths` it really gets from there.
fn users(p: &Project, dir: &Path, paths: &[&str]) -> Vec<User> {
    let layer = LayerSource::Folder(dir.to_path_buf());
    let label = p.site.relative(dir);
    let specs: Vec<DeviceSpec> = p
        .inventory
        .devices
        .values()
        .map(|d| DeviceSpec {
            mac: d.mac,
            profile: d.profile.clone(),
            device: Some(d.clone()),
        })
        .filter(|spec| {
            p.profiles
                .get(&spec.profile)
                .ok()
                .and_then(|pr| layer_sources(&p.site, pr, spec).ok())
                .is_some_and(|s| s.contains(&layer))
        })
        .collect();
    let cache = p.read_layers(&specs);
    specs
        .iter()
        .map(|spec| {
            let Ok(plan) = p.plan(spec, &cache) else {
                return (spec.mac, String::new(), spec.profile.clone(), Vec::new());
            };
            let overridden = paths
                .iter()
                .filter_map(|x| {
                    let origin = &plan.manifest.entries.get(*x)?.origin;
                    (*origin != label).then(|| (x.to_string(), origin.clone()))
                })
                .collect();
            (
                spec.mac,
                plan.hostname.clone(),
                spec.profile.clone(),
                overridden,
            )
        })
        .collect()
}

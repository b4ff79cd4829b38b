//! `ovl show --mac MAC`: a device's resolved settings — vars, packages, services, network —
//! and its file tree, with the layer each file comes from.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;
use serde_json::json;

use crate::build::compare::{self, ArchiveState};
use crate::build::manifest::{Kind, Listed};
use crate::build::plan::DevicePlan;
use crate::build::project::Project;
use crate::cli::{DeviceArgs, output};
use crate::error::{EXIT_OK, Error, Result};
use crate::site::profile::RUNLEVELS;

/// Show the device of `a`.
pub(crate) fn run(p: &Project, a: &DeviceArgs, json: bool) -> Result<i32> {
    let plan = a.plan(p)?;
    let files = plan.manifest.listing();
    let state = compare::archive_state(p, &plan)?;
    let archive = p.archive_path(&plan.mac);
    let resolved = Resolved::of(&plan);
    if json {
        let mut v = serde_json::to_value(&plan).map_err(|e| Error::Env(e.to_string()))?;
        v["archive"] = json!({ "path": archive, "state": state });
        v["vars"] = serde_json::to_value(&resolved.vars).map_err(|e| Error::Env(e.to_string()))?;
        v["packages"] = json!(resolved.packages);
        v["services"] = json!(resolved.services);
        v["network"] = json!(resolved.network);
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
    t.push_str(&resolved.text());
    for f in &files {
        t.push_str(&file_line(f));
    }
    output::text(&t);
    Ok(EXIT_OK)
}

/// What the device gets, read from its manifest: the template values, `etc/apk/world`, the
/// runlevel links and the network files.
#[derive(Debug, Serialize)]
struct Resolved {
    /// Template values (`vars.*`): the profile chain's, then the device's own.
    vars: toml::Table,
    /// `etc/apk/world`, in order.
    packages: Vec<String>,
    /// Services per runlevel (`etc/runlevels/LEVEL/SVC`), every runlevel present.
    services: BTreeMap<&'static str, Vec<String>>,
    /// `etc/network/interfaces`, `etc/resolv.conf` and the fixed address.
    network: Network,
}

/// The device's network settings.
#[derive(Debug, Serialize)]
struct Network {
    /// The inventory's fixed address (served by DHCP), if any.
    ip: Option<std::net::Ipv4Addr>,
    /// `etc/network/interfaces` as the device gets it.
    interfaces: Option<String>,
    /// `etc/resolv.conf`, when the device gets one.
    resolv_conf: Option<String>,
}

impl Resolved {
    /// Read from the plan.
    fn of(plan: &DevicePlan) -> Resolved {
        let m = &plan.manifest;
        let text = |p: &str| m.file(p).map(|b| String::from_utf8_lossy(b).into_owned());
        let packages = text("etc/apk/world")
            .map(|w| w.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default();
        let mut services = BTreeMap::new();
        for level in RUNLEVELS {
            let prefix = format!("etc/runlevels/{level}/");
            let list: Vec<String> = m
                .entries
                .iter()
                .filter(|(p, e)| {
                    matches!(e.kind, Kind::Symlink(_))
                        && p.strip_prefix(&prefix).is_some_and(|s| !s.contains('/'))
                })
                .map(|(p, _)| p[prefix.len()..].to_string())
                .collect();
            services.insert(level, list);
        }
        Resolved {
            vars: plan.vars.clone(),
            packages,
            services,
            network: Network {
                ip: plan.ip,
                interfaces: text("etc/network/interfaces"),
                resolv_conf: text("etc/resolv.conf"),
            },
        }
    }

    /// The text block: vars, packages, services, then the network files indented; ends with
    /// an empty line.
    fn text(&self) -> String {
        let vars: Vec<String> = self
            .vars
            .iter()
            .map(|(k, v)| format!("{k} = {v}"))
            .collect();
        let mut t = format!(
            "vars:        {}
packages:    {}
",
            if vars.is_empty() {
                "-".to_string()
            } else {
                vars.join(", ")
            },
            if self.packages.is_empty() {
                "-".to_string()
            } else {
                self.packages.join(" ")
            },
        );
        for (level, list) in &self.services {
            t.push_str(&format!(
                "services {level:8} {}
",
                if list.is_empty() {
                    "-".to_string()
                } else {
                    list.join(" ")
                }
            ));
        }
        for (name, body) in [
            ("etc/network/interfaces", &self.network.interfaces),
            ("etc/resolv.conf", &self.network.resolv_conf),
        ] {
            if let Some(b) = body {
                t.push_str(&format!(
                    "{name}:
"
                ));
                for line in b.lines() {
                    t.push_str(&format!(
                        "    {line}
"
                    ));
                }
            }
        }
        t.push('\n');
        t
    }
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
        "mac:         {}\nprofile:     {} ({})\nhostname:    {}\nip:          {}\nin inventory: {}\nlayers:      {}\nkernel args: {}\nmodules:     {}\narchive:     {} ({})\n",
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

//! One device's plan: its resolved settings (profile, hostname, variables, layers, kernel
//! arguments) and its [`Manifest`], assembled in SPEC §3's layer order: the profile chain's
//! layers, the device's own layers, its capture, then what the TOML declares.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use minijinja::Value;
use serde::Serialize;

use crate::build::layer::{LayerSource, LayerTree, Node};
use crate::build::manifest::{Kind, Manifest};
use crate::build::owners::Ids;
use crate::build::template;
use crate::error::{Error, Result};
use crate::mac::Mac;
use crate::site::Site;
use crate::site::inventory::{Device, valid_hostname};
use crate::site::profile::{Declared, PermDecl, Profile, RUNLEVELS};

/// Where a device's `lbu commit` lands on the NFS share, seen from the device.
pub const NFS_MOUNTPOINT: &str = "media/pxe";

/// The default `etc/network/interfaces`.
pub const DEFAULT_INTERFACES: &str =
    "auto lo\niface lo inet loopback\n\nauto eth0\niface eth0 inet dhcp\n";

/// What to build for one MAC: an inventory entry, or a profile given on the command line.
#[derive(Debug, Clone)]
pub struct DeviceSpec {
    /// The MAC.
    pub mac: Mac,
    /// Profile name.
    pub profile: String,
    /// The inventory entry, when the MAC is in `devices.toml`.
    pub device: Option<Device>,
}

/// Layer trees read once per run and shared between devices.
pub type LayerCache = HashMap<LayerSource, std::result::Result<Arc<LayerTree>, Arc<Error>>>;

/// A device resolved: settings and manifest.
#[derive(Debug, Clone, Serialize)]
pub struct DevicePlan {
    /// The MAC.
    pub mac: Mac,
    /// Profile name.
    pub profile: String,
    /// Profile chain, root first.
    pub chain: Vec<String>,
    /// Effective hostname.
    pub hostname: String,
    /// Fixed address, if any.
    pub ip: Option<Ipv4Addr>,
    /// In the inventory?
    pub known: bool,
    /// Layers in order, lowest first (site-relative).
    pub layers: Vec<String>,
    /// Kernel arguments added for this device (site's, then the profile chain's).
    pub kernel_args: Vec<String>,
    /// Kernel modules (`modules=`).
    pub modules: Vec<String>,
    /// The files.
    #[serde(skip)]
    pub manifest: Manifest,
}

/// A device's capture: the newest `*.apkovl.tar.gz` in `captures/MAC/`, ignoring lbu's `*.new`,
/// dated backups (`HOST.YYYYMMDDhhmmss.tar.gz`) and encrypted `*.apkovl.tar.gz.CIPHER`.
pub fn find_capture(site: &Site, mac: &Mac, hostname: Option<&str>) -> Option<PathBuf> {
    let dir = site.captures_dir().join(mac.to_string());
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(&dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.ends_with(".apkovl.tar.gz")
                && !n.starts_with('.')
                && e.file_type().is_ok_and(|t| t.is_file())
        })
        .map(|e| {
            (
                e.metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(std::time::UNIX_EPOCH),
                e.path(),
            )
        })
        .collect();
    if let Some(h) = hostname {
        let own = dir.join(format!("{h}.apkovl.tar.gz"));
        if found.iter().any(|(_, p)| *p == own) {
            return Some(own);
        }
    }
    found.sort();
    found.pop().map(|(_, p)| p)
}

/// The layers of one device, in order, as sources.
pub fn layer_sources(
    site: &Site,
    profile: &Profile,
    spec: &DeviceSpec,
) -> Result<Vec<LayerSource>> {
    let mut out = Vec::new();
    for o in &profile.overlays {
        out.push(LayerSource::parse(&site.root, &o.value).map_err(|m| Error::at_path(&o.file, m))?);
    }
    if let Some(d) = &spec.device {
        for o in &d.overlays {
            out.push(
                LayerSource::parse(&site.root, o)
                    .map_err(|m| Error::input(d.location.clone(), m))?,
            );
        }
    }
    let explicit = spec.device.as_ref().and_then(|d| d.hostname.as_deref());
    if let Some(c) = find_capture(site, &spec.mac, explicit) {
        out.push(LayerSource::Archive(c));
    }
    Ok(out)
}

fn rel(site: &Site, p: &Path) -> String {
    p.strip_prefix(&site.root)
        .unwrap_or(p)
        .display()
        .to_string()
}

fn toml_to_value(t: &toml::Table) -> Value {
    Value::from(minijinja::value::Serde(t))
}

/// The template context of a device, without `hostname` when `hostname` is `None`.
fn context(site: &Site, spec: &DeviceSpec, vars: &toml::Table, hostname: Option<&str>) -> Value {
    let c = &site.config;
    let site_v = minijinja::context! {
        alpine => minijinja::context! { version => &c.alpine.version, flavor => &c.alpine.flavor, mirror => &c.alpine.mirror },
        boot => minijinja::context! { server => &c.boot.server, nfs => &c.boot.nfs },
        http => site.http_base(),
    };
    let ip = spec
        .device
        .as_ref()
        .and_then(|d| d.ip)
        .map(|i| i.to_string());
    let base = minijinja::context! {
        mac => spec.mac.to_string(),
        mac_suffix => spec.mac.suffix(),
        profile => &spec.profile,
        ip => ip,
        vars => toml_to_value(vars),
        site => site_v,
    };
    match hostname {
        Some(h) => minijinja::context! { hostname => h, ..base },
        None => base,
    }
}

/// Resolve one device: settings, then its manifest from `layers` (read beforehand).
pub fn plan(
    site: &Site,
    profile: &Profile,
    spec: &DeviceSpec,
    layers: &LayerCache,
) -> Result<DevicePlan> {
    let dev_err = |m: String| Error::Device {
        mac: spec.mac.to_string(),
        message: m,
    };
    let mut vars = profile.vars.clone();
    if let Some(d) = &spec.device {
        for (k, v) in &d.vars {
            vars.insert(k.clone(), v.clone());
        }
    }
    let hostname = match (
        spec.device.as_ref().and_then(|d| d.hostname.clone()),
        &profile.hostname,
    ) {
        (Some(h), _) => h,
        (None, Some(t)) => {
            let ctx = context(site, spec, &vars, None);
            let h = template::render(&t.file, Some("hostname"), &t.value, &ctx)?
                .trim()
                .to_string();
            if !valid_hostname(&h) {
                return Err(Error::at_path(
                    &t.file,
                    format!(
                        "hostname template gives {h:?} for {}, not a valid hostname",
                        spec.mac
                    ),
                ));
            }
            h
        }
        (None, None) => format!("alpine-{}", spec.mac.suffix()),
    };
    let ctx = context(site, spec, &vars, Some(&hostname));
    let sources = layer_sources(site, profile, spec)?;
    let mut m = Manifest::default();
    let mut world: BTreeSet<String> = BTreeSet::new();

    for src in &sources {
        let tree = match layers.get(src) {
            Some(Ok(t)) => t.clone(),
            Some(Err(e)) => return Err(clone_error(e)),
            None => Arc::new(LayerTree::read(src)?),
        };
        let label = rel(site, src.path());
        for e in &tree.entries {
            let kind = match &e.node {
                Node::Dir => Kind::Dir,
                Node::File(b) => Kind::File(b.clone()),
                Node::Symlink(t) => Kind::Symlink(t.clone()),
                Node::Template(src) => Kind::File(
                    template::render(&e.source, None, src, &ctx)?
                        .into_bytes()
                        .into(),
                ),
            };
            if e.path == "etc/apk/world"
                && let Kind::File(b) = &kind
            {
                world.extend(
                    String::from_utf8_lossy(b)
                        .split_whitespace()
                        .map(str::to_string),
                );
            }
            m.put(&e.path, kind, e.mode, e.stored.as_ref(), &label)
                .map_err(dev_err)?;
        }
    }

    let origin = format!("profile {} ({})", profile.name, rel(site, &profile.file));
    let file = |b: String| Kind::File(Arc::from(b.into_bytes()));
    let nfs = site.config.boot.nfs.clone();

    m.put(
        "etc/hostname",
        file(format!("{hostname}\n")),
        0o644,
        None,
        &origin,
    )
    .map_err(dev_err)?;

    world.extend(profile.packages.iter().cloned());
    if nfs.is_some() {
        world.insert("nfs-utils".into());
    }
    for r in &profile.removed_packages {
        world.remove(r);
    }
    let world_text: String = world.iter().map(|p| format!("{p}\n")).collect();
    m.put("etc/apk/world", file(world_text), 0o644, None, &origin)
        .map_err(dev_err)?;

    let mut services = profile.services.clone();
    if nfs.is_some() {
        let d = services.entry("default".into()).or_default();
        if !d.iter().any(|s| s == "netmount") {
            d.push("netmount".into());
        }
    }
    for level in RUNLEVELS {
        m.put(
            &format!("etc/runlevels/{level}"),
            Kind::Dir,
            0o755,
            None,
            &origin,
        )
        .map_err(dev_err)?;
        for svc in services.get(level).into_iter().flatten() {
            m.put(
                &format!("etc/runlevels/{level}/{svc}"),
                Kind::Symlink(format!("/etc/init.d/{svc}")),
                0o777,
                None,
                &origin,
            )
            .map_err(dev_err)?;
        }
        for svc in profile.removed_services.get(level).into_iter().flatten() {
            m.remove(&format!("etc/runlevels/{level}/{svc}"));
        }
    }

    match &profile.interfaces {
        Some(Declared { value, file: f }) => {
            let text = template::render(f, Some("[network] interfaces"), value, &ctx)?;
            m.put("etc/network/interfaces", file(text), 0o644, None, &origin)
                .map_err(dev_err)?;
        }
        None if m.file("etc/network/interfaces").is_none() => {
            m.put(
                "etc/network/interfaces",
                file(DEFAULT_INTERFACES.into()),
                0o644,
                None,
                "default",
            )
            .map_err(dev_err)?;
        }
        None => {}
    }
    if let Some(Declared { value, file: f }) = &profile.resolv_conf {
        let text = template::render(f, Some("[network] resolv_conf"), value, &ctx)?;
        m.put("etc/resolv.conf", file(text), 0o644, None, &origin)
            .map_err(dev_err)?;
    }
    if let Some(Declared { value, file: f }) = &profile.repositories {
        let mut text = String::new();
        for line in value {
            text.push_str(template::render(f, Some("repositories"), line, &ctx)?.trim());
            text.push('\n');
        }
        m.put("etc/apk/repositories", file(text), 0o644, None, &origin)
            .map_err(dev_err)?;
    }
    if !profile.authorized_keys.is_empty() {
        let path = "root/.ssh/authorized_keys";
        let mut lines: Vec<String> = m
            .file(path)
            .map(|b| {
                String::from_utf8_lossy(b)
                    .lines()
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        for k in &profile.authorized_keys {
            if !lines.contains(k) {
                lines.push(k.clone());
            }
        }
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        m.put(path, file(text), 0o600, None, &origin)
            .map_err(dev_err)?;
    }
    if let Some(export) = &nfs {
        let mount = format!("/{NFS_MOUNTPOINT}");
        let line = format!("{export} {mount} nfs rw,nolock,_netdev 0 0");
        let mut fstab: Vec<String> = m
            .file("etc/fstab")
            .map(|b| {
                String::from_utf8_lossy(b)
                    .lines()
                    .filter(|l| l.split_whitespace().nth(1).is_none_or(|p| p != mount))
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        fstab.push(line);
        m.put(
            "etc/fstab",
            file(fstab.iter().map(|l| format!("{l}\n")).collect()),
            0o644,
            None,
            &origin,
        )
        .map_err(dev_err)?;
        m.put(NFS_MOUNTPOINT, Kind::Dir, 0o755, None, &origin)
            .map_err(dev_err)?;
        let mut lbu: Vec<String> = m
            .file("etc/lbu/lbu.conf")
            .map(|b| {
                String::from_utf8_lossy(b)
                    .lines()
                    .filter(|l| {
                        !l.trim_start().starts_with("LBU_BACKUPDIR=")
                            && !l.trim_start().starts_with("LBU_MEDIA=")
                    })
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        lbu.push(format!("LBU_BACKUPDIR={mount}/captures/{}", spec.mac));
        m.put(
            "etc/lbu/lbu.conf",
            file(lbu.iter().map(|l| format!("{l}\n")).collect()),
            0o644,
            None,
            &origin,
        )
        .map_err(dev_err)?;
    }
    for (path, d) in &profile.files {
        let text = if d.value.template {
            template::render(
                &d.file,
                Some(&format!("[files.\"{path}\"]")),
                &d.value.content,
                &ctx,
            )?
        } else {
            d.value.content.clone()
        };
        m.put(path, file(text), 0o644, None, &origin)
            .map_err(dev_err)?;
    }

    let ids = Ids::new(
        m.file("etc/passwd")
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .as_deref(),
        m.file("etc/group")
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .as_deref(),
    );
    m.finish_ownership(&ids);
    let mut perms: BTreeMap<&String, Declared<PermDecl>> = BTreeMap::new();
    for (path, d) in &profile.files {
        perms.insert(
            path,
            Declared {
                value: PermDecl::from(&d.value),
                file: d.file.clone(),
            },
        );
    }
    for (path, d) in &profile.permissions {
        perms.insert(path, d.clone());
    }
    for (path, d) in perms {
        apply_permission(&mut m, &ids, path, &d)?;
    }
    if let Some(cycle) = m.find_link_loop() {
        let origin = m
            .entries
            .get(&cycle[0])
            .map(|e| e.origin.clone())
            .unwrap_or_default();
        return Err(dev_err(format!(
            "symlink loop in {origin}: {}",
            cycle.join(" → ")
        )));
    }

    let mut kernel_args = site.config.boot.kernel_args.clone();
    kernel_args.extend(profile.kernel_args.iter().cloned());
    let mut modules = site.config.boot.modules.clone();
    for x in &profile.modules {
        if !modules.contains(x) {
            modules.push(x.clone());
        }
    }
    Ok(DevicePlan {
        mac: spec.mac,
        profile: profile.name.clone(),
        chain: profile.chain.clone(),
        hostname,
        ip: spec.device.as_ref().and_then(|d| d.ip),
        known: spec.device.is_some(),
        layers: sources.iter().map(|s| rel(site, s.path())).collect(),
        kernel_args,
        modules,
        manifest: m,
    })
}

fn apply_permission(m: &mut Manifest, ids: &Ids, path: &str, d: &Declared<PermDecl>) -> Result<()> {
    let p = &d.value;
    let uid = match (&p.user, p.uid) {
        (Some(name), _) => Some(ids.users.id(name).ok_or_else(|| {
            Error::at_path(&d.file, format!("permissions for {path}: unknown user `{name}` (not in Alpine's base users nor the archive's etc/passwd; give `uid`)"))
        })?),
        (None, uid) => uid,
    };
    let gid = match (&p.group, p.gid) {
        (Some(name), _) => Some(ids.groups.id(name).ok_or_else(|| {
            Error::at_path(&d.file, format!("permissions for {path}: unknown group `{name}` (not in Alpine's base groups nor the archive's etc/group; give `gid`)"))
        })?),
        (None, gid) => gid,
    };
    let Some(e) = m.entries.get_mut(path) else {
        return Err(Error::at_path(
            &d.file,
            format!("permissions for {path}: no layer provides this path"),
        ));
    };
    if let Some(mode) = p.mode {
        e.mode = mode.0;
    }
    if let Some(u) = uid {
        e.uid = u;
        e.user = p.user.clone().unwrap_or_else(|| ids.users.name(u));
    }
    if let Some(g) = gid {
        e.gid = g;
        e.group = p.group.clone().unwrap_or_else(|| ids.groups.name(g));
    }
    e.explicit = true;
    Ok(())
}

/// Errors are shared between devices through the layer cache; give each device its own copy.
pub fn clone_error(e: &Error) -> Error {
    match e {
        Error::Input { loc, message } => Error::Input {
            loc: loc.clone(),
            message: message.clone(),
        },
        Error::Device { mac, message } => Error::Device {
            mac: mac.clone(),
            message: message.clone(),
        },
        Error::Io { path, source } => Error::Io {
            path: path.clone(),
            source: std::io::Error::new(source.kind(), source.to_string()),
        },
        Error::Env(s) => Error::Env(s.clone()),
        Error::Usage(s) => Error::Usage(s.clone()),
    }
}

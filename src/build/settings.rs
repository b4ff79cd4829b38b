//! One device's settings: everything the profile chain, the inventory and `ovl.toml` say about
//! it that needs no overlay file read and no file template rendered — profile and chain,
//! hostname (its template is rendered), fixed address, variables, the list of its layers,
//! kernel arguments and modules. Boot scripts, DHCP and `/status` need only these; the
//! [manifest](crate::build::plan) is built from them.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use minijinja::Value;
use serde::Serialize;

use crate::build::layer::{LayerSource, confined};
use crate::build::template;
use crate::error::{Error, Result};
use crate::mac::Mac;
use crate::site::Site;
use crate::site::inventory::{Device, valid_hostname};
use crate::site::layout::CAPTURE_SUFFIX;
use crate::site::profile::Profile;

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

/// A device's resolved settings. Serializes to the head of `ovl show --json`.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceSettings {
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
    /// Paths where the fleet's version wins over the device's capture (`discard` in
    /// `devices.toml`).
    pub discard: Vec<String>,
    /// Template values: the profile chain's, then the device's own.
    #[serde(skip)]
    pub vars: toml::Table,
    /// The layers as sources, in the order of `layers` (the capture last, if any).
    #[serde(skip)]
    pub sources: Vec<LayerSource>,
    /// The device's capture (`captures/MAC/…`), the last of `sources`, if it has one.
    #[serde(skip)]
    pub capture: Option<LayerSource>,
}

/// Resolve the settings of `spec`, whose profile is `profile`.
pub(crate) fn resolve(site: &Site, profile: &Profile, spec: &DeviceSpec) -> Result<DeviceSettings> {
    let mut vars = profile.vars.clone();
    if let Some(d) = &spec.device {
        for (k, v) in &d.vars {
            vars.insert(k.clone(), v.clone());
        }
    }
    let hostname = hostname(site, profile, spec, &vars)?;
    let (mut sources, capture) = sources_and_capture(site, profile, spec)?;
    sources.extend(capture.clone());
    let mut kernel_args = site.config.boot.kernel_args.clone();
    kernel_args.extend(profile.kernel_args.iter().cloned());
    let mut modules = site.config.boot.modules.clone();
    for x in &profile.modules {
        if !modules.contains(x) {
            modules.push(x.clone());
        }
    }
    Ok(DeviceSettings {
        mac: spec.mac,
        profile: profile.name.clone(),
        chain: profile.chain.clone(),
        hostname,
        ip: spec.device.as_ref().and_then(|d| d.ip),
        known: spec.device.is_some(),
        layers: sources.iter().map(|s| site.relative(s.path())).collect(),
        kernel_args,
        modules,
        discard: spec
            .device
            .as_ref()
            .map(|d| d.discard.clone())
            .unwrap_or_default(),
        vars,
        sources,
        capture,
    })
}

impl DeviceSettings {
    /// The template context of the device's files: `mac`, `mac_suffix`, `profile`, `ip`,
    /// `hostname`, `vars` and `site`.
    pub(crate) fn context(&self, site: &Site) -> Value {
        context(
            site,
            self.mac,
            &self.profile,
            self.ip,
            &self.vars,
            Some(&self.hostname),
        )
    }
}

/// The hostname of the inventory device `d`, whose profile is `profile` (see [`resolve`]).
pub(crate) fn inventory_hostname(site: &Site, profile: &Profile, d: &Device) -> Result<String> {
    if let Some(h) = &d.hostname {
        return Ok(h.clone());
    }
    let mut vars = profile.vars.clone();
    for (k, v) in &d.vars {
        vars.insert(k.clone(), v.clone());
    }
    let spec = DeviceSpec {
        mac: d.mac,
        profile: profile.name.clone(),
        device: None,
    };
    hostname_with_ip(site, profile, &spec, d.ip, &vars)
}

/// The device's own hostname, else its profile's template rendered (without `hostname` in
/// the context), else `alpine-MACSUFFIX`.
fn hostname(
    site: &Site,
    profile: &Profile,
    spec: &DeviceSpec,
    vars: &toml::Table,
) -> Result<String> {
    if let Some(h) = spec.device.as_ref().and_then(|d| d.hostname.clone()) {
        return Ok(h);
    }
    let ip = spec.device.as_ref().and_then(|d| d.ip);
    hostname_with_ip(site, profile, spec, ip, vars)
}

/// The profile's hostname template rendered for `spec` with `ip` and `vars`, else
/// `alpine-MACSUFFIX`.
fn hostname_with_ip(
    site: &Site,
    profile: &Profile,
    spec: &DeviceSpec,
    ip: Option<Ipv4Addr>,
    vars: &toml::Table,
) -> Result<String> {
    let Some(t) = &profile.hostname else {
        return Ok(format!("alpine-{}", spec.mac.suffix()));
    };
    let ctx = context(site, spec.mac, &spec.profile, ip, vars, None);
    let h = template::render_value(&t.file, &["hostname"], &t.value, &ctx)?
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
    Ok(h)
}

/// A template context, without `hostname` when `hostname` is `None`.
fn context(
    site: &Site,
    mac: Mac,
    profile: &str,
    ip: Option<Ipv4Addr>,
    vars: &toml::Table,
    hostname: Option<&str>,
) -> Value {
    let c = &site.config;
    let site_v = minijinja::context! {
        alpine => minijinja::context! { version => &c.alpine.version, flavor => &c.alpine.flavor, mirror => &c.alpine.mirror },
        boot => minijinja::context! { server => &c.boot.server, nfs => &c.boot.nfs },
        http => site.http_base(),
    };
    let base = minijinja::context! {
        mac => mac.to_string(),
        mac_suffix => mac.suffix(),
        profile => profile,
        ip => ip.map(|i| i.to_string()),
        vars => Value::from(minijinja::value::Serde(vars)),
        site => site_v,
    };
    match hostname {
        Some(h) => minijinja::context! { hostname => h, ..base },
        None => base,
    }
}

/// The layers of one device, in order, as sources: the profile chain's, the device's own,
/// then its capture.
pub(crate) fn layer_sources(
    site: &Site,
    profile: &Profile,
    spec: &DeviceSpec,
) -> Result<Vec<LayerSource>> {
    let (mut out, capture) = sources_and_capture(site, profile, spec)?;
    out.extend(capture);
    Ok(out)
}

/// The layers of one device but its capture, in order, and its capture.
pub(crate) fn sources_and_capture(
    site: &Site,
    profile: &Profile,
    spec: &DeviceSpec,
) -> Result<(Vec<LayerSource>, Option<LayerSource>)> {
    let out = declared_layer_sources(site, profile, spec)?;
    let explicit = spec.device.as_ref().and_then(|d| d.hostname.as_deref());
    let capture = find_capture(site, &spec.mac, explicit)?.map(LayerSource::Archive);
    Ok((out, capture))
}

/// The layers the profile chain and the inventory name for one device, in order (its capture,
/// found in its own folder, aside).
pub(crate) fn declared_layer_sources(
    site: &Site,
    profile: &Profile,
    spec: &DeviceSpec,
) -> Result<Vec<LayerSource>> {
    let mut out = Vec::new();
    for o in &profile.overlays {
        out.push(LayerSource::parse(&site.root, &o.value).map_err(|e| Error::at_path(&o.file, e))?);
    }
    if let Some(d) = &spec.device {
        for o in &d.overlays {
            out.push(
                LayerSource::parse(&site.root, o)
                    .map_err(|e| Error::input(d.location.clone(), e))?,
            );
        }
    }
    Ok(out)
}

/// A device's capture: the newest `*.apkovl.tar.gz` in `captures/MAC/` (the one named after
/// `hostname`, when there is one), ignoring lbu's `*.new`, dated backups
/// (`HOST.YYYYMMDDhhmmss.tar.gz`) and encrypted `*.apkovl.tar.gz.CIPHER`. Symlinks are never
/// captures, and a capture folder that is a symlink leading out of the site is an error.
pub(crate) fn find_capture(
    site: &Site,
    mac: &Mac,
    hostname: Option<&str>,
) -> Result<Option<PathBuf>> {
    let dir = site.captures_dir().join(mac.to_string());
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return Ok(None);
    };
    if std::fs::symlink_metadata(&dir).is_ok_and(|m| m.file_type().is_symlink()) {
        confined(&site.root, &dir)?;
    }
    let mut found: Vec<(SystemTime, PathBuf)> = rd
        .filter_map(|e| e.ok())
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.ends_with(CAPTURE_SUFFIX)
                && !n.starts_with('.')
                && e.file_type().is_ok_and(|t| t.is_file())
        })
        .map(|e| {
            let modified = e.metadata().and_then(|m| m.modified());
            (modified.unwrap_or(UNIX_EPOCH), e.path())
        })
        .collect();
    if let Some(h) = hostname {
        let own = dir.join(format!("{h}{CAPTURE_SUFFIX}"));
        if found.iter().any(|(_, p)| *p == own) {
            return Ok(Some(own));
        }
    }
    found.sort();
    Ok(found.pop().map(|(_, p)| p))
}

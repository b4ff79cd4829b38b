//! Profiles (`profiles/NAME.toml`): what a class of device gets, with `extends` chains
//! resolved into one [`Profile`] per name (SPEC §3).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};

use crate::error::{Error, IoContext, Result};
use crate::site::layout::PROFILE_EXTENSION;
use crate::site::toml_file;

/// The runlevels a profile can name, in boot order.
pub const RUNLEVELS: [&str; 4] = ["sysinit", "boot", "default", "shutdown"];

/// Alpine's own diskless defaults for each runlevel.
pub fn default_services(level: &str) -> &'static [&'static str] {
    match level {
        "sysinit" => &["devfs", "dmesg", "mdev", "hwdrivers", "modloop"],
        "boot" => &[
            "hwclock",
            "modules",
            "sysctl",
            "hostname",
            "bootmisc",
            "syslog",
            "networking",
        ],
        "shutdown" => &["mount-ro", "killprocs", "savecache"],
        _ => &[],
    }
}

/// A file mode written as an octal string (`"0644"`) or a TOML integer (`0o644`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode(pub u32);

impl<'de> Deserialize<'de> for Mode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            S(String),
            I(i64),
        }
        let v = match Raw::deserialize(d)? {
            Raw::S(s) => u32::from_str_radix(s.trim_start_matches("0o"), 8).map_err(|_| {
                serde::de::Error::custom(format!(
                    "mode {s:?} is not an octal number such as \"0644\""
                ))
            })?,
            Raw::I(i) => u32::try_from(i)
                .map_err(|_| serde::de::Error::custom(format!("mode {i} out of range")))?,
        };
        if v > 0o7777 {
            return Err(serde::de::Error::custom(format!(
                "mode {v:o} out of range (at most 7777)"
            )));
        }
        Ok(Mode(v))
    }
}

/// `[services]`: runlevel lists; `"!svc"` drops an inherited or default service.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServicesDecl {
    /// `sysinit` runlevel.
    pub sysinit: Vec<String>,
    /// `boot` runlevel.
    pub boot: Vec<String>,
    /// `default` runlevel.
    pub default: Vec<String>,
    /// `shutdown` runlevel.
    pub shutdown: Vec<String>,
}

impl ServicesDecl {
    fn level(&self, level: &str) -> &[String] {
        match level {
            "sysinit" => &self.sysinit,
            "boot" => &self.boot,
            "default" => &self.default,
            _ => &self.shutdown,
        }
    }
}

/// `[network]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkDecl {
    /// Contents of `etc/network/interfaces` (template).
    pub interfaces: Option<String>,
    /// Contents of `etc/resolv.conf` (template).
    pub resolv_conf: Option<String>,
}

/// `[files."PATH"]`: an inline file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDecl {
    /// The file's text; rendered as a template unless `template = false`.
    pub content: String,
    /// Render `content` with the device's variables (default true).
    #[serde(default = "yes")]
    pub template: bool,
    /// Permission bits (default 0644).
    pub mode: Option<Mode>,
    /// Owner uid.
    pub uid: Option<u32>,
    /// Group gid.
    pub gid: Option<u32>,
    /// Owner name (resolved with the archive's etc/passwd or Alpine's).
    pub user: Option<String>,
    /// Group name (resolved with the archive's etc/group or Alpine's).
    pub group: Option<String>,
}

fn yes() -> bool {
    true
}

/// `[permissions."PATH"]`: owner and mode of a path some layer provides.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PermDecl {
    /// Permission bits.
    pub mode: Option<Mode>,
    /// Owner uid.
    pub uid: Option<u32>,
    /// Group gid.
    pub gid: Option<u32>,
    /// Owner name.
    pub user: Option<String>,
    /// Group name.
    pub group: Option<String>,
}

impl From<&FileDecl> for PermDecl {
    fn from(f: &FileDecl) -> Self {
        PermDecl {
            mode: f.mode,
            uid: f.uid,
            gid: f.gid,
            user: f.user.clone(),
            group: f.group.clone(),
        }
    }
}

/// One profile file as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProfileFile {
    /// Free text shown by `ovl list`/`show`.
    pub description: Option<String>,
    /// Parent profile.
    pub extends: Option<String>,
    /// Layers in order, later wins: folders under `overlays/` or site paths to lbu archives.
    pub overlays: Vec<String>,
    /// Packages for `etc/apk/world`; `"!name"` drops an inherited one.
    pub packages: Vec<String>,
    /// Hostname template, e.g. `"xl-{{ mac_suffix }}"`.
    pub hostname: Option<String>,
    /// Lines of `etc/apk/repositories` (templates); unset: not written (`alpine_repo=` applies).
    pub repositories: Option<Vec<String>>,
    /// Keys for `root/.ssh/authorized_keys`.
    pub authorized_keys: Vec<String>,
    /// Extra kernel arguments for this profile's devices.
    pub kernel_args: Vec<String>,
    /// Extra kernel modules (`modules=`) for this profile's devices.
    pub modules: Vec<String>,
    /// Runlevels.
    pub services: ServicesDecl,
    /// Network files.
    pub network: NetworkDecl,
    /// Inline files by path.
    pub files: BTreeMap<String, FileDecl>,
    /// Owner/mode overrides by path.
    pub permissions: BTreeMap<String, PermDecl>,
    /// Free template values.
    pub vars: toml::Table,
}

/// A declaration together with the profile file that made it.
#[derive(Debug, Clone)]
pub struct Declared<T> {
    /// The value.
    pub value: T,
    /// The profile file it comes from.
    pub file: PathBuf,
}

/// A profile with its `extends` chain folded in.
#[derive(Debug, Clone)]
pub struct Profile {
    /// The name (file stem).
    pub name: String,
    /// The file.
    pub file: PathBuf,
    /// Description, nearest in the chain.
    pub description: Option<String>,
    /// The chain, root ancestor first, this profile last.
    pub chain: Vec<String>,
    /// Layers, root ancestor's first.
    pub overlays: Vec<Declared<String>>,
    /// Packages added (after `!` removals along the chain).
    pub packages: BTreeSet<String>,
    /// Packages removed and not re-added later in the chain.
    pub removed_packages: BTreeSet<String>,
    /// Hostname template.
    pub hostname: Option<Declared<String>>,
    /// `etc/apk/repositories` lines.
    pub repositories: Option<Declared<Vec<String>>>,
    /// Authorized keys, in order, without duplicates.
    pub authorized_keys: Vec<String>,
    /// Kernel arguments.
    pub kernel_args: Vec<String>,
    /// Kernel modules.
    pub modules: Vec<String>,
    /// Services per runlevel (defaults applied), in order.
    pub services: BTreeMap<String, Vec<String>>,
    /// Services removed per runlevel (also dropped from captured layers).
    pub removed_services: BTreeMap<String, BTreeSet<String>>,
    /// `etc/network/interfaces`.
    pub interfaces: Option<Declared<String>>,
    /// `etc/resolv.conf`.
    pub resolv_conf: Option<Declared<String>>,
    /// Inline files.
    pub files: BTreeMap<String, Declared<FileDecl>>,
    /// Permission overrides.
    pub permissions: BTreeMap<String, Declared<PermDecl>>,
    /// Template values, descendants winning.
    pub vars: toml::Table,
}

/// A profile name that no `profiles/NAME.toml` defines.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown profile `{name}`{} (known: {})",
    near.as_ref().map(|n| format!("; did you mean `{n}`?")).unwrap_or_default(),
    known.join(", ")
)]
pub struct UnknownProfile {
    /// The name asked for.
    pub name: String,
    /// A known name close to it.
    pub near: Option<String>,
    /// Every known name, sorted.
    pub known: Vec<String>,
}

/// All profiles of a site, resolved.
#[derive(Debug, Clone, Default)]
pub struct Profiles {
    /// By name.
    pub by_name: BTreeMap<String, Profile>,
}

impl Profiles {
    /// Read and resolve every `profiles/*.toml`.
    pub fn load(dir: &Path) -> Result<Profiles> {
        let mut raw: BTreeMap<String, (PathBuf, ProfileFile)> = BTreeMap::new();
        if dir.is_dir() {
            let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
                .at(dir)?
                .map(|e| e.map(|e| e.path()))
                .collect::<std::io::Result<_>>()
                .at(dir)?;
            paths.sort();
            for path in paths {
                if path.extension().is_none_or(|e| e != PROFILE_EXTENSION) {
                    continue;
                }
                let Some(name) = path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .map(str::to_string)
                else {
                    return Err(Error::at_path(
                        &path,
                        "profile file name is not valid UTF-8",
                    ));
                };
                if name.starts_with('.') {
                    continue;
                }
                validate_name(&path, &name)?;
                let file: ProfileFile = toml_file::load(&path)?;
                raw.insert(name, (path, file));
            }
        }
        let mut by_name = BTreeMap::new();
        for name in raw.keys() {
            by_name.insert(name.clone(), resolve(name, &raw)?);
        }
        Ok(Profiles { by_name })
    }

    /// The profile called `name`, or an error listing the known ones.
    pub fn get(&self, name: &str) -> std::result::Result<&Profile, UnknownProfile> {
        self.by_name.get(name).ok_or_else(|| {
            let known: Vec<String> = self.by_name.keys().cloned().collect();
            let near = known
                .iter()
                .find(|k| strsim::jaro_winkler(k, name) > 0.8 || k.eq_ignore_ascii_case(name))
                .cloned();
            UnknownProfile {
                name: name.to_string(),
                near,
                known,
            }
        })
    }

    /// Names of profiles whose chain includes `name` (itself included).
    pub fn descendants_of(&self, name: &str) -> BTreeSet<String> {
        self.by_name
            .values()
            .filter(|p| p.chain.iter().any(|c| c == name))
            .map(|p| p.name.clone())
            .collect()
    }
}

fn validate_name(path: &Path, name: &str) -> Result<()> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(Error::at_path(
            path,
            format!("profile name {name:?}: use letters, digits, '-', '_' and '.'"),
        ));
    }
    Ok(())
}

fn resolve(name: &str, raw: &BTreeMap<String, (PathBuf, ProfileFile)>) -> Result<Profile> {
    // Walk up the chain, detecting cycles and unknown parents.
    let mut chain = vec![name.to_string()];
    let mut cur = name;
    while let Some(parent) = raw.get(cur).and_then(|(_, f)| f.extends.as_deref()) {
        if let Some(pos) = chain.iter().position(|c| c == parent) {
            let mut cycle: Vec<&str> = chain[pos..].iter().map(String::as_str).collect();
            cycle.push(parent);
            let (path, _) = &raw[cur];
            return Err(Error::at_path(
                path,
                format!("`extends` cycle: {}", cycle.join(" → ")),
            ));
        }
        if !raw.contains_key(parent) {
            let (path, _) = &raw[cur];
            let known: Vec<&str> = raw.keys().map(String::as_str).collect();
            return Err(Error::at_path(
                path,
                format!(
                    "extends unknown profile `{parent}` (known: {})",
                    known.join(", ")
                ),
            ));
        }
        chain.push(parent.to_string());
        cur = parent;
    }
    chain.reverse();

    let (own_path, _) = &raw[name];
    let mut p = Profile {
        name: name.to_string(),
        file: own_path.clone(),
        description: None,
        chain: chain.clone(),
        overlays: Vec::new(),
        packages: BTreeSet::new(),
        removed_packages: BTreeSet::new(),
        hostname: None,
        repositories: None,
        authorized_keys: Vec::new(),
        kernel_args: Vec::new(),
        modules: Vec::new(),
        services: RUNLEVELS
            .iter()
            .map(|l| {
                (
                    l.to_string(),
                    default_services(l).iter().map(|s| s.to_string()).collect(),
                )
            })
            .collect(),
        removed_services: BTreeMap::new(),
        interfaces: None,
        resolv_conf: None,
        files: BTreeMap::new(),
        permissions: BTreeMap::new(),
        vars: toml::Table::new(),
    };
    for link in &chain {
        let (path, f) = &raw[link];
        let decl = |v| Declared {
            value: v,
            file: path.clone(),
        };
        if f.description.is_some() {
            p.description.clone_from(&f.description);
        }
        for o in &f.overlays {
            p.overlays.push(decl(o.clone()));
        }
        for pkg in &f.packages {
            let pkg = pkg.trim();
            if let Some(drop) = pkg.strip_prefix('!') {
                check_word(path, "packages", drop)?;
                p.packages.remove(drop);
                p.removed_packages.insert(drop.to_string());
            } else {
                check_word(path, "packages", pkg)?;
                p.removed_packages.remove(pkg);
                p.packages.insert(pkg.to_string());
            }
        }
        if let Some(h) = &f.hostname {
            p.hostname = Some(decl(h.clone()));
        }
        if let Some(r) = &f.repositories {
            p.repositories = Some(Declared {
                value: r.clone(),
                file: path.clone(),
            });
        }
        for k in &f.authorized_keys {
            let k = k.trim().to_string();
            if k.contains('\n') {
                return Err(Error::at_path(
                    path,
                    "authorized_keys: one key per list item, without newlines",
                ));
            }
            if !p.authorized_keys.contains(&k) {
                p.authorized_keys.push(k);
            }
        }
        p.kernel_args.extend(f.kernel_args.iter().cloned());
        for m in &f.modules {
            if !p.modules.contains(m) {
                p.modules.push(m.clone());
            }
        }
        for level in RUNLEVELS {
            let list = p.services.entry(level.to_string()).or_default();
            for svc in f.services.level(level) {
                let svc = svc.trim();
                if let Some(drop) = svc.strip_prefix('!') {
                    check_word(path, "services", drop)?;
                    list.retain(|s| s != drop);
                    p.removed_services
                        .entry(level.to_string())
                        .or_default()
                        .insert(drop.to_string());
                } else {
                    check_word(path, "services", svc)?;
                    if let Some(r) = p.removed_services.get_mut(level) {
                        r.remove(svc);
                    }
                    if !list.iter().any(|s| s == svc) {
                        list.push(svc.to_string());
                    }
                }
            }
        }
        if let Some(i) = &f.network.interfaces {
            p.interfaces = Some(decl(i.clone()));
        }
        if let Some(r) = &f.network.resolv_conf {
            p.resolv_conf = Some(decl(r.clone()));
        }
        for (k, v) in &f.files {
            let k = check_rel_path(path, "files", k)?;
            p.files.insert(
                k,
                Declared {
                    value: v.clone(),
                    file: path.clone(),
                },
            );
        }
        for (k, v) in &f.permissions {
            let k = check_rel_path(path, "permissions", k)?;
            p.permissions.insert(
                k,
                Declared {
                    value: v.clone(),
                    file: path.clone(),
                },
            );
        }
        for (k, v) in &f.vars {
            p.vars.insert(k.clone(), v.clone());
        }
    }
    Ok(p)
}

fn check_word(path: &Path, what: &str, w: &str) -> Result<()> {
    if w.is_empty()
        || w.chars()
            .any(|c| c.is_whitespace() || c == '/' && what == "services")
    {
        return Err(Error::at_path(
            path,
            format!("{what}: {w:?} is not a valid name"),
        ));
    }
    Ok(())
}

/// Normalise a device path as written in a profile (`/etc/motd` or `etc/motd`) to the
/// archive's relative form, refusing `..`, `.` and empty components.
pub fn check_rel_path(file: &Path, what: &str, p: &str) -> Result<String> {
    let rel = p.trim_start_matches('/').trim_end_matches('/');
    if rel.is_empty()
        || rel
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
        || rel.contains('\0')
    {
        return Err(Error::at_path(
            file,
            format!(
                "{what}: {p:?} is not a valid path inside the device (no `..`, `.` or empty parts)"
            ),
        ));
    }
    Ok(rel.to_string())
}

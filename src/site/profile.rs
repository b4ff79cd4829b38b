//! Profiles (`profiles/NAME.toml`): what a class of device gets, with `extends` chains
//! resolved into one [`Profile`] per name (SPEC §3). The files as written are in
//! [`profile_file`](crate::site::profile_file).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Location, Result};
use crate::site::example::PLACEHOLDER_KEY;
use crate::site::layout::PROFILE_EXTENSION;
use crate::site::toml_file;

use crate::site::profile_file::{FileDecl, PermDecl, ProfileFile};

/// The runlevels a profile can name, in boot order.
pub const RUNLEVELS: [&str; 4] = ["sysinit", "boot", "default", "shutdown"];

/// Alpine's own diskless defaults for each runlevel.
pub(crate) fn default_services(level: &str) -> &'static [&'static str] {
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

/// A `"!name"` removal (of a package or a service) that removes nothing the profile chain
/// declared before it: it must remove something a layer brings (a package of a layer's
/// `etc/apk/world`, a runlevel link of a layer), or it is a mistake, reported at `loc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removal {
    /// The name removed, without `!`.
    pub name: String,
    /// The runlevel, for a service.
    pub level: Option<&'static str>,
    /// Where the removal is written.
    pub loc: Location,
}

/// The known name nearest to `word` (a did-you-mean), if one is close enough.
pub(crate) fn nearest<'a>(word: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let mut best: Option<(f64, &str)> = None;
    for k in known {
        let score = if k.eq_ignore_ascii_case(word) {
            1.0
        } else {
            strsim::jaro_winkler(word, k)
        };
        if score >= 0.8 && best.is_none_or(|(b, _)| score > b) {
            best = Some((score, k));
        }
    }
    best.map(|(_, k)| k)
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
    /// Every package the chain adds somewhere (also those removed later), for did-you-mean.
    pub declared_packages: BTreeSet<String>,
    /// Package removals that removed nothing the chain declared (see [`Removal`]).
    pub package_removals: Vec<Removal>,
    /// Hostname template.
    pub hostname: Option<Declared<String>>,
    /// `etc/apk/repositories` lines.
    pub repositories: Option<Declared<Vec<String>>>,
    /// Authorized keys, in order, without duplicates.
    pub authorized_keys: Vec<String>,
    /// Where the chain's `authorized_keys` still hold the example's placeholder
    /// (the example's `PLACEHOLDER_KEY`).
    pub placeholder_keys: Vec<Location>,
    /// Kernel arguments.
    pub kernel_args: Vec<String>,
    /// Kernel modules.
    pub modules: Vec<String>,
    /// Services per runlevel (defaults applied), in order.
    pub services: BTreeMap<String, Vec<String>>,
    /// Services removed per runlevel (also dropped from captured layers).
    pub removed_services: BTreeMap<String, BTreeSet<String>>,
    /// Service removals that removed nothing the chain (or Alpine's defaults) declared.
    pub service_removals: Vec<Removal>,
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
    pub(crate) fn load(dir: &Path) -> Result<Profiles> {
        let mut raw: RawProfiles = BTreeMap::new();
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
                let text = toml_file::read_text(&path)?;
                let file: ProfileFile = toml_file::parse(&path, &text)?;
                raw.insert(name, RawProfile { path, text, file });
            }
        }
        let mut by_name = BTreeMap::new();
        for name in raw.keys() {
            by_name.insert(name.clone(), resolve(name, &raw)?);
        }
        Ok(Profiles { by_name })
    }

    /// The profile called `name`, or an error listing the known ones.
    pub(crate) fn get(&self, name: &str) -> std::result::Result<&Profile, UnknownProfile> {
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
    pub(crate) fn descendants_of(&self, name: &str) -> BTreeSet<String> {
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

/// One profile file as read: its path, its text (to locate declarations) and its contents.
struct RawProfile {
    path: PathBuf,
    text: String,
    file: ProfileFile,
}

/// Profile files as read, by name.
type RawProfiles = BTreeMap<String, RawProfile>;

fn resolve(name: &str, raw: &RawProfiles) -> Result<Profile> {
    let chain = chain_of(name, raw)?;
    let mut p = Profile::root(name, &raw[name].path, chain.clone());
    for link in &chain {
        p.fold(&raw[link])?;
    }
    Ok(p)
}

/// The `extends` chain of `name`, root ancestor first; refuses cycles and unknown parents.
fn chain_of(name: &str, raw: &RawProfiles) -> Result<Vec<String>> {
    let mut chain = vec![name.to_string()];
    let mut cur = name;
    while let Some(parent) = raw.get(cur).and_then(|r| r.file.extends.as_deref()) {
        if let Some(pos) = chain.iter().position(|c| c == parent) {
            let mut cycle: Vec<&str> = chain[pos..].iter().map(String::as_str).collect();
            cycle.push(parent);
            return Err(Error::at_path(
                &raw[cur].path,
                format!("`extends` cycle: {}", cycle.join(" → ")),
            ));
        }
        if !raw.contains_key(parent) {
            let known: Vec<&str> = raw.keys().map(String::as_str).collect();
            return Err(Error::at_path(
                &raw[cur].path,
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
    Ok(chain)
}

impl Profile {
    /// A profile with nothing declared yet: Alpine's default services only.
    fn root(name: &str, file: &Path, chain: Vec<String>) -> Profile {
        Profile {
            name: name.to_string(),
            file: file.to_path_buf(),
            description: None,
            chain,
            overlays: Vec::new(),
            packages: BTreeSet::new(),
            removed_packages: BTreeSet::new(),
            declared_packages: BTreeSet::new(),
            package_removals: Vec::new(),
            hostname: None,
            repositories: None,
            authorized_keys: Vec::new(),
            placeholder_keys: Vec::new(),
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
            service_removals: Vec::new(),
            interfaces: None,
            resolv_conf: None,
            files: BTreeMap::new(),
            permissions: BTreeMap::new(),
            vars: toml::Table::new(),
        }
    }

    /// Fold in the profile file `raw`, the next link of the chain.
    fn fold(&mut self, raw: &RawProfile) -> Result<()> {
        let (path, f) = (raw.path.as_path(), &raw.file);
        let decl = |value| Declared {
            value,
            file: path.to_path_buf(),
        };
        if f.description.is_some() {
            self.description.clone_from(&f.description);
        }
        for o in &f.overlays {
            self.overlays.push(decl(o.clone()));
        }
        self.fold_packages(raw)?;
        if let Some(h) = &f.hostname {
            self.hostname = Some(decl(h.clone()));
        }
        if let Some(r) = &f.repositories {
            self.repositories = Some(Declared {
                value: r.clone(),
                file: path.to_path_buf(),
            });
        }
        self.fold_keys(raw)?;
        self.kernel_args.extend(f.kernel_args.iter().cloned());
        for m in &f.modules {
            if !self.modules.contains(m) {
                self.modules.push(m.clone());
            }
        }
        self.fold_services(raw)?;
        if let Some(i) = &f.network.interfaces {
            self.interfaces = Some(decl(i.clone()));
        }
        if let Some(r) = &f.network.resolv_conf {
            self.resolv_conf = Some(decl(r.clone()));
        }
        for (k, v) in &f.files {
            let k = check_rel_path(path, "files", k)?;
            self.files.insert(
                k,
                Declared {
                    value: v.clone(),
                    file: path.to_path_buf(),
                },
            );
        }
        for (k, v) in &f.permissions {
            let k = check_rel_path(path, "permissions", k)?;
            self.permissions.insert(
                k,
                Declared {
                    value: v.clone(),
                    file: path.to_path_buf(),
                },
            );
        }
        for (k, v) in &f.vars {
            self.vars.insert(k.clone(), v.clone());
        }
        Ok(())
    }

    /// Packages added, or dropped with `!`; a drop of nothing declared before is kept as a
    /// [`Removal`] for the device's layers to match.
    fn fold_packages(&mut self, raw: &RawProfile) -> Result<()> {
        let path = raw.path.as_path();
        for spanned in &raw.file.packages {
            let pkg = spanned.get_ref().trim();
            if let Some(drop) = pkg.strip_prefix('!') {
                check_word(path, "packages", drop)?;
                let removed = self.packages.remove(drop) || self.removed_packages.contains(drop);
                if !removed {
                    self.package_removals.push(Removal {
                        name: drop.to_string(),
                        level: None,
                        loc: Location::at_offset(path, &raw.text, spanned.span().start),
                    });
                }
                self.removed_packages.insert(drop.to_string());
            } else {
                check_word(path, "packages", pkg)?;
                self.removed_packages.remove(pkg);
                self.packages.insert(pkg.to_string());
                self.declared_packages.insert(pkg.to_string());
            }
        }
        Ok(())
    }

    /// Authorized keys, one line each, without duplicates; the example's placeholder noted.
    fn fold_keys(&mut self, raw: &RawProfile) -> Result<()> {
        for spanned in &raw.file.authorized_keys {
            let k = spanned.get_ref().trim().to_string();
            if k.contains('\n') {
                return Err(Error::at_path(
                    &raw.path,
                    "authorized_keys: one key per list item, without newlines",
                ));
            }
            if k.contains(PLACEHOLDER_KEY) {
                let loc = Location::at_offset(&raw.path, &raw.text, spanned.span().start);
                self.placeholder_keys.push(loc);
            }
            if !self.authorized_keys.contains(&k) {
                self.authorized_keys.push(k);
            }
        }
        Ok(())
    }

    /// Services added to each runlevel, or dropped with `!`; a drop of nothing declared
    /// before (nor one of Alpine's defaults) is kept as a [`Removal`] for the layers to match.
    fn fold_services(&mut self, raw: &RawProfile) -> Result<()> {
        let path = raw.path.as_path();
        for level in RUNLEVELS {
            let list = self.services.entry(level.to_string()).or_default();
            let removed = self.removed_services.entry(level.to_string()).or_default();
            for spanned in raw.file.services.level(level) {
                let svc = spanned.get_ref().trim();
                if let Some(drop) = svc.strip_prefix('!') {
                    check_word(path, "services", drop)?;
                    let before = list.len();
                    list.retain(|s| s != drop);
                    if list.len() == before && !removed.contains(drop) {
                        self.service_removals.push(Removal {
                            name: drop.to_string(),
                            level: Some(level),
                            loc: Location::at_offset(path, &raw.text, spanned.span().start),
                        });
                    }
                    removed.insert(drop.to_string());
                } else {
                    check_word(path, "services", svc)?;
                    removed.remove(svc);
                    if !list.iter().any(|s| s == svc) {
                        list.push(svc.to_string());
                    }
                }
            }
        }
        self.removed_services.retain(|_, r| !r.is_empty());
        Ok(())
    }
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
pub(crate) fn check_rel_path(file: &Path, what: &str, p: &str) -> Result<String> {
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

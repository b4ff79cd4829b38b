//! The steps of a device's manifest, one per declaration of its profile (SPEC §3's order:
//! layers, hostname, world, runlevels, network files, repositories, authorized keys, the NFS
//! round trip, inline files, owners and permissions), on a [`Builder`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use minijinja::Value;

use super::{CaptureUse, DEFAULT_INTERFACES, layer_tree};
use crate::build::layer::{LayerCache, LayerTree, Node, StoredMeta};
use crate::build::manifest::{Collision, Kind, Manifest};
use crate::build::merge;
use crate::build::nfs::{self, NfsExport};
use crate::build::owners::Ids;
use crate::build::settings::DeviceSettings;
use crate::build::template;
use crate::error::{Error, Result};
use crate::site::Site;
use crate::site::profile::{Declared, Profile, RUNLEVELS, Removal, default_services, nearest};
use crate::site::profile_file::PermDecl;

/// The manifest being built, and what every step needs.
pub(super) struct Builder<'a> {
    site: &'a Site,
    profile: &'a Profile,
    settings: &'a DeviceSettings,
    /// The template context of the device.
    ctx: Value,
    /// The origin of what the profile declares, e.g. `profile xl (profiles/xl.toml)`.
    origin: String,
    pub(super) m: Manifest,
    /// Packages and runlevel links a capture left out of the fleet's part brings.
    captured: BTreeSet<String>,
    /// Paths whose content a template rendered (different on every device).
    pub(super) rendered: BTreeSet<String>,
}

impl<'a> Builder<'a> {
    /// An empty manifest for the device of `settings`.
    pub(super) fn new(site: &'a Site, profile: &'a Profile, settings: &'a DeviceSettings) -> Self {
        Builder {
            site,
            profile,
            settings,
            ctx: settings.context(site),
            origin: format!(
                "profile {} ({})",
                profile.name,
                site.relative(&profile.file)
            ),
            m: Manifest::default(),
            captured: BTreeSet::new(),
            rendered: BTreeSet::new(),
        }
    }

    /// A collision in this device's manifest.
    fn collision(&self, e: Collision) -> Error {
        Error::device(self.settings.mac, e)
    }

    /// Put a declared path (origin: the profile). A declared folder that a layer already
    /// has keeps the layer's mode and owner.
    fn put(&mut self, path: &str, kind: Kind, mode: u32) -> Result<()> {
        if matches!(kind, Kind::Dir)
            && matches!(self.m.entries.get(path), Some(e) if matches!(e.kind, Kind::Dir))
        {
            return Ok(());
        }
        let r = self.m.put(path, kind, mode, None, &self.origin);
        r.map_err(|e| self.collision(e))
    }

    /// Put a declared file with `text`.
    fn put_text(&mut self, path: &str, text: String, mode: u32) -> Result<()> {
        self.put(path, Kind::File(Arc::from(text.into_bytes())), mode)
    }

    /// The lines of the file at `path` so far, none when there is no such file.
    fn lines(&self, path: &str) -> Vec<String> {
        self.m
            .file(path)
            .map(|b| {
                String::from_utf8_lossy(b)
                    .lines()
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every layer in order, templates rendered, the device's capture as `capture` says;
    /// returns the packages of the layers' `etc/apk/world` files.
    pub(super) fn layers(
        &mut self,
        layers: &LayerCache,
        capture: CaptureUse,
    ) -> Result<BTreeSet<String>> {
        let mut world = BTreeSet::new();
        for src in &self.settings.sources {
            let is_capture = self.settings.capture.as_ref() == Some(src);
            let read;
            let (tree, skip): (&LayerTree, &[String]) = match capture {
                CaptureUse::Skip(tree) if is_capture => {
                    self.captured
                        .extend(tree.iter().flat_map(|t| captured_names(t)));
                    continue;
                }
                CaptureUse::OnTop(tree, discard) if is_capture => (tree, discard),
                _ => {
                    read = layer_tree(self.site, layers, src)?;
                    (&read, &[])
                }
            };
            let label = self.site.relative(src.path());
            for e in tree
                .entries
                .iter()
                .filter(|e| !merge::under_any(&e.path, skip))
            {
                let kind = match &e.node {
                    Node::Dir => Kind::Dir,
                    Node::File(b) => Kind::File(b.clone()),
                    Node::Symlink(t) => Kind::Symlink(t.clone()),
                    Node::Template(src) => {
                        let text = template::render(&e.source, src, &self.ctx)?;
                        self.rendered.insert(e.path.clone());
                        Kind::File(text.into_bytes().into())
                    }
                };
                if e.path == "etc/apk/world"
                    && let Kind::File(b) = &kind
                {
                    let text = String::from_utf8_lossy(b);
                    world.extend(text.split_whitespace().map(str::to_string));
                }
                // setuid, setgid and sticky only when `[permissions]` declares them.
                let stored = e.stored.as_ref().map(|m| StoredMeta {
                    mode: m.mode & 0o777,
                    ..m.clone()
                });
                let r = self
                    .m
                    .put(&e.path, kind, e.mode & 0o777, stored.as_ref(), &label);
                r.map_err(|e| self.collision(e))?;
            }
        }
        Ok(world)
    }

    /// The profile's package and service removals, applied to a merged manifest (what the
    /// device added is removed too): `etc/apk/world` lines and runlevel links.
    pub(super) fn drop_removed(&mut self) -> Result<()> {
        let removed = &self.profile.removed_packages;
        if let Some(e) = self.m.entries.get_mut("etc/apk/world")
            && let Kind::File(b) = &e.kind
        {
            let text = String::from_utf8_lossy(b);
            let kept: Vec<&str> = text
                .split_whitespace()
                .filter(|p| !removed.contains(*p))
                .collect();
            if kept.len() != text.split_whitespace().count() {
                let out: String = kept.iter().map(|p| format!("{p}\n")).collect();
                e.kind = Kind::File(Arc::from(out.into_bytes()));
            }
        }
        for (level, services) in &self.profile.removed_services {
            for svc in services {
                self.m.remove(&format!("etc/runlevels/{level}/{svc}"));
            }
        }
        Ok(())
    }

    /// `etc/hostname`.
    pub(super) fn hostname(&mut self) -> Result<()> {
        let text = format!("{}\n", self.settings.hostname);
        self.put_text("etc/hostname", text, 0o644)
    }

    /// `etc/apk/world`: the layers' packages and the profile's, `nfs-utils` with NFS, minus
    /// the profile's removals.
    pub(super) fn world(&mut self, mut world: BTreeSet<String>) -> Result<()> {
        if self.site.config.boot.nfs.is_some() {
            world.insert("nfs-utils".into());
        }
        for r in &self.profile.package_removals {
            if !world.contains(&r.name) && !self.captured.contains(&r.name) {
                let known = self.profile.declared_packages.iter().chain(&world);
                return Err(removes_nothing(r, "package", known));
            }
        }
        world.extend(self.profile.packages.iter().cloned());
        for r in &self.profile.removed_packages {
            world.remove(r);
        }
        let text: String = world.iter().map(|p| format!("{p}\n")).collect();
        self.put_text("etc/apk/world", text, 0o644)
    }

    /// `etc/runlevels/LEVEL/SERVICE` links (`netmount` in `default` with NFS); removed
    /// services are dropped, also when a layer brought them.
    pub(super) fn runlevels(&mut self) -> Result<()> {
        let mut services = self.profile.services.clone();
        if self.site.config.boot.nfs.is_some() {
            let d = services.entry("default".into()).or_default();
            if !d.iter().any(|s| s == "netmount") {
                d.push("netmount".into());
            }
        }
        for r in &self.profile.service_removals {
            let level = r.level.unwrap_or("default");
            let added = services.get(level).is_some_and(|l| l.contains(&r.name));
            let link = format!("etc/runlevels/{level}/{}", r.name);
            if !added && !self.m.entries.contains_key(&link) && !self.captured.contains(&link) {
                return Err(removes_nothing(r, "service", &self.service_names()));
            }
        }
        for level in RUNLEVELS {
            self.put(&format!("etc/runlevels/{level}"), Kind::Dir, 0o755)?;
            for svc in services.get(level).into_iter().flatten() {
                let link = Kind::Symlink(format!("/etc/init.d/{svc}"));
                self.put(&format!("etc/runlevels/{level}/{svc}"), link, 0o777)?;
            }
            for svc in self
                .profile
                .removed_services
                .get(level)
                .into_iter()
                .flatten()
            {
                self.m.remove(&format!("etc/runlevels/{level}/{svc}"));
            }
        }
        Ok(())
    }

    /// Every service name the profile chain, Alpine's defaults or a layer's runlevel links
    /// know, in any runlevel (did-you-mean candidates).
    fn service_names(&self) -> BTreeSet<String> {
        let mut names: BTreeSet<String> = RUNLEVELS
            .iter()
            .flat_map(|l| default_services(l).iter().map(|s| s.to_string()))
            .collect();
        names.extend(self.profile.services.values().flatten().cloned());
        names.extend(self.profile.removed_services.values().flatten().cloned());
        for path in self.m.entries.keys() {
            if let Some(rest) = path.strip_prefix("etc/runlevels/")
                && let Some((_, svc)) = rest.split_once('/')
            {
                names.insert(svc.to_string());
            }
        }
        names
    }

    /// `etc/network/interfaces` (declared, else the default when no layer has one) and
    /// `etc/resolv.conf` (when declared).
    pub(super) fn network(&mut self) -> Result<()> {
        match &self.profile.interfaces {
            Some(Declared { value, file }) => {
                let text =
                    template::render_value(file, &["network", "interfaces"], value, &self.ctx)?;
                self.put_text("etc/network/interfaces", text, 0o644)?;
            }
            None if self.m.file("etc/network/interfaces").is_none() => {
                let kind = Kind::File(Arc::from(DEFAULT_INTERFACES.as_bytes()));
                let r = self
                    .m
                    .put("etc/network/interfaces", kind, 0o644, None, "default");
                r.map_err(|e| self.collision(e))?;
            }
            None => {}
        }
        if let Some(Declared { value, file }) = &self.profile.resolv_conf {
            let text = template::render_value(file, &["network", "resolv_conf"], value, &self.ctx)?;
            self.put_text("etc/resolv.conf", text, 0o644)?;
        }
        Ok(())
    }

    /// `etc/apk/repositories`, when declared: one rendered line each.
    pub(super) fn repositories(&mut self) -> Result<()> {
        let Some(Declared { value, file }) = &self.profile.repositories else {
            return Ok(());
        };
        let mut text = String::new();
        for (i, line) in value.iter().enumerate() {
            let key = ["repositories", &i.to_string()];
            text.push_str(template::render_value(file, &key, line, &self.ctx)?.trim());
            text.push('\n');
        }
        self.put_text("etc/apk/repositories", text, 0o644)
    }

    /// `root/.ssh/authorized_keys`: the layers' keys, then the profile's not already there.
    pub(super) fn authorized_keys(&mut self) -> Result<()> {
        if self.profile.authorized_keys.is_empty() {
            return Ok(());
        }
        let path = "root/.ssh/authorized_keys";
        let mut lines = self.lines(path);
        for k in &self.profile.authorized_keys {
            if !lines.contains(k) {
                lines.push(k.clone());
            }
        }
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        self.put_text(path, text, 0o600)
    }

    /// The lbu round trip over NFS (SPEC §5, [`nfs`]): the device's own capture folder in
    /// `etc/fstab`, its mount point, and `LBU_BACKUPDIR` pointing at it.
    pub(super) fn nfs(&mut self, export: &NfsExport) -> Result<()> {
        let mac = self.settings.mac;
        let mount = nfs::mount_point(&mac);
        let mut fstab: Vec<String> = self.lines("etc/fstab");
        fstab.retain(|l| l.split_whitespace().nth(1).is_none_or(|p| p != mount));
        fstab.push(export.fstab_line(&mac));
        let text = fstab.iter().map(|l| format!("{l}\n")).collect();
        self.put_text("etc/fstab", text, 0o644)?;
        self.put(nfs::MOUNT_BASE, Kind::Dir, 0o755)?;
        self.put(&mount[1..], Kind::Dir, 0o755)?;
        let mut lbu: Vec<String> = self.lines("etc/lbu/lbu.conf");
        lbu.retain(|l| {
            let l = l.trim_start();
            !l.starts_with("LBU_BACKUPDIR=") && !l.starts_with("LBU_MEDIA=")
        });
        lbu.push(format!("LBU_BACKUPDIR={mount}"));
        let text = lbu.iter().map(|l| format!("{l}\n")).collect();
        self.put_text("etc/lbu/lbu.conf", text, 0o644)
    }

    /// `[files."PATH"]`, rendered unless `template = false`.
    pub(super) fn inline_files(&mut self) -> Result<()> {
        for (path, d) in &self.profile.files {
            let text = if d.value.template {
                let key = ["files", path.as_str(), "content"];
                template::render_value(&d.file, &key, &d.value.content, &self.ctx)?
            } else {
                d.value.content.clone()
            };
            self.put_text(path, text, 0o644)?;
        }
        Ok(())
    }

    /// Alpine's owners and modes, then the owners and modes of inline files and
    /// `[permissions]` (the latter winning for a path both name).
    pub(super) fn ownership(&mut self) -> Result<()> {
        let text = |p| {
            self.m
                .file(p)
                .map(|b| String::from_utf8_lossy(b).into_owned())
        };
        let ids = Ids::new(text("etc/passwd").as_deref(), text("etc/group").as_deref());
        self.m.finish_ownership(&ids);
        let mut perms: BTreeMap<&String, Declared<PermDecl>> = BTreeMap::new();
        for (path, d) in &self.profile.files {
            let value = PermDecl::from(&d.value);
            perms.insert(
                path,
                Declared {
                    value,
                    file: d.file.clone(),
                },
            );
        }
        for (path, d) in &self.profile.permissions {
            perms.insert(path, d.clone());
        }
        for (path, d) in perms {
            apply_permission(&mut self.m, &ids, path, &d)?;
        }
        Ok(())
    }

    /// A symlink loop inside the manifest is an error.
    pub(super) fn check_links(&self) -> Result<()> {
        let Some(cycle) = self.m.find_link_loop() else {
            return Ok(());
        };
        let origin = self
            .m
            .entries
            .get(&cycle[0])
            .map(|e| e.origin.clone())
            .unwrap_or_default();
        Err(Error::device(
            self.settings.mac,
            format!("symlink loop in {origin}: {}", cycle.join(" → ")),
        ))
    }
}

/// The packages of a capture's `etc/apk/world` and the paths of its runlevel links.
fn captured_names(tree: &LayerTree) -> Vec<String> {
    let mut out = Vec::new();
    for e in &tree.entries {
        match &e.node {
            Node::File(b) if e.path == "etc/apk/world" => {
                out.extend(
                    String::from_utf8_lossy(b)
                        .split_whitespace()
                        .map(str::to_string),
                );
            }
            Node::Symlink(_) if e.path.starts_with("etc/runlevels/") => out.push(e.path.clone()),
            _ => {}
        }
    }
    out
}

/// The error of a `"!name"` removal that removes nothing, with the nearest `known` name.
fn removes_nothing<'a>(
    r: &Removal,
    what: &str,
    known: impl IntoIterator<Item = &'a String>,
) -> Error {
    let list = if what == "package" {
        "packages"
    } else {
        "services"
    };
    let level = r
        .level
        .map(|l| format!(" from runlevel {l}"))
        .unwrap_or_default();
    let known = known
        .into_iter()
        .map(String::as_str)
        .filter(|k| *k != r.name);
    let near = nearest(&r.name, known)
        .map(|n| format!("; did you mean \"!{n}\"?"))
        .unwrap_or_default();
    Error::input(
        r.loc.clone(),
        format!(
            "{list}: \"!{}\" removes nothing: no profile of the chain and no layer brings {what} {}{level}{near}",
            r.name, r.name
        ),
    )
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

//! What the site serves: an explicit public set, the one path rule of the HTTP and TFTP
//! servers (SPEC §2 "Only public files are served").
//!
//! [`PublicSet::of_site`] lists what a site makes public:
//! - the boot scripts `boot.ipxe` and `gpxe-script`;
//! - `configs/MAC.tar.gz` with `MAC` in canonical form (lowercase, colons), and nothing else
//!   of `configs/`;
//! - the boot files the site names: `vmlinuz-`, `initramfs-` and `modloop-` of `[alpine]
//!   flavor`, every `[serve.dhcp] boot_files` value (the DHCP defaults `undionly.kpxe` and
//!   `ipxe.efi` when the map is not set), and the `[boot] ssh_key` file;
//! - what `[serve] public` lists: a name is one file, a name ending in `/` a folder whose
//!   every file is public.
//!
//! Names whose first component is private (`ovl.toml`, `devices.toml`, `profiles`,
//! `overlays`, `captures`, compared ASCII-case-insensitively) or `configs` never enter the
//! set, whatever the settings say.
//!
//! [`resolve`] turns a request (percent-decoded, with or without a leading `/`) into the
//! real path of a regular file, or says why not. In order:
//!
//! 1. A backslash or a NUL byte anywhere → [`Denied::InvalidCharacter`].
//! 2. The request is split on `/`; empty components collapse (`/configs//x` is `configs/x`).
//! 3. A `.` or `..` component → [`Denied::Traversal`]; a component starting with `.` →
//!    [`Denied::Hidden`]; an editor leftover or backup name (`x~`, `#x#`, `x.bak`, `x.orig`,
//!    `x.rej`, `x.swp`, `x.swo`, `x.tmp`, `x.old`) → [`Denied::Backup`], also inside public
//!    folders.
//! 4. A name outside the public set → [`Denied::NotPublic`], before the file system is asked.
//! 5. Symlinks are followed. The real path must itself pass rules 3 and 4 inside the site,
//!    or lie under the real location of the public folder the request named (so `configs/`,
//!    or a listed folder, may be a symlink to another file system); anything else, e.g. a
//!    public name linking to `overlays/…`, to `devices.toml~` or out of the site, →
//!    [`Denied::LeavesPublic`]. Missing → [`Denied::NotFound`].
//! 6. Only regular files: directories, FIFOs, sockets, devices → [`Denied::NotRegularFile`].
//!
//! Every refusal but [`Denied::Unreadable`] is answered as "not found" (HTTP 404, TFTP
//! error 1), so a client cannot tell a private file from a missing one. A symlink swapped in
//! between [`resolve`] and the caller's `open` is not guarded against (the public places
//! are written by the site's administrators; devices write only `captures/`).

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};

use crate::mac::Mac;
use crate::serve::dhcp::default_boot_files;
use crate::site::Site;
use crate::site::layout::{BOOT_SCRIPTS, CONFIGS_DIR, PRIVATE_TOP};

/// Why a request path is not served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// The request holds a backslash or a NUL byte.
    #[error("invalid character {0:?} in path")]
    InvalidCharacter(char),
    /// The request holds a `.` or `..` component.
    #[error("path traversal")]
    Traversal,
    /// A component starts with `.` (hidden files are private).
    #[error("hidden path")]
    Hidden,
    /// A component is an editor leftover or a backup (`x~`, `#x#`, `x.bak`, …).
    #[error("editor backup name")]
    Backup,
    /// The name is not in the site's public set.
    #[error("not public")]
    NotPublic,
    /// The real path (symlinks followed) leaves the public places of the site.
    #[error("symlink to a place that is not public")]
    LeavesPublic,
    /// Nothing exists at that path.
    #[error("not found")]
    NotFound,
    /// The path exists but is not a regular file.
    #[error("not a regular file")]
    NotRegularFile,
    /// The file system refused to look a public path up (permissions, I/O error).
    #[error("cannot read path: {0}")]
    Unreadable(io::ErrorKind),
}

impl Denied {
    /// True when the refusal is answered as "there is no such file" (HTTP 404, TFTP error
    /// 1): every refusal but an unreadable public file, so nothing tells a private file
    /// from a missing one.
    pub fn is_not_found(&self) -> bool {
        !matches!(self, Denied::Unreadable(_))
    }
}

/// What a public request names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Named<'a> {
    /// A public file of the site.
    File,
    /// A device's archive, `configs/MAC.tar.gz`.
    Archive(Mac),
    /// A file under the listed public folder (its site-relative name, without `/`).
    InFolder(&'a str),
}

/// The names a site serves (see the module documentation).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublicSet {
    /// Site-relative file names, `/`-separated.
    files: BTreeSet<String>,
    /// Site-relative folder names (no trailing `/`) whose every file is public.
    folders: BTreeSet<String>,
}

impl PublicSet {
    /// The public set of `site` (boot scripts, archives, the boot files it names, `[boot]
    /// ssh_key` and `[serve] public`).
    pub fn of_site(site: &Site) -> PublicSet {
        let c = &site.config;
        let flavor = &c.alpine.flavor;
        let mut files: Vec<String> = BOOT_SCRIPTS.iter().map(|s| s.to_string()).collect();
        files.extend(["vmlinuz", "initramfs", "modloop"].map(|k| format!("{k}-{flavor}")));
        if c.serve.dhcp.boot_files.is_empty() {
            files.extend(default_boot_files().into_values());
        } else {
            files.extend(c.serve.dhcp.boot_files.values().cloned());
        }
        files.extend(c.boot.ssh_key.iter().cloned());
        let mut folders = Vec::new();
        for entry in &c.serve.public {
            match entry.strip_suffix('/') {
                Some(folder) => folders.push(folder.to_owned()),
                None => files.push(entry.clone()),
            }
        }
        PublicSet::new(files, folders)
    }

    /// A set of the given file and folder names (site-relative, `/`-separated). Names that
    /// could never be served (empty, traversal, hidden or backup components, a private or
    /// `configs` first component) are left out.
    pub fn new(
        files: impl IntoIterator<Item = String>,
        folders: impl IntoIterator<Item = String>,
    ) -> PublicSet {
        PublicSet {
            files: files.into_iter().filter_map(|f| normalise(&f)).collect(),
            folders: folders.into_iter().filter_map(|f| normalise(&f)).collect(),
        }
    }

    /// What `components` (non-empty, already free of `.`, hidden and backup names) name in
    /// this set, if anything.
    pub(crate) fn named<'a>(&'a self, components: &[&str]) -> Option<Named<'a>> {
        if let [dir, name] = components
            && *dir == CONFIGS_DIR
        {
            return archive_mac(name).map(Named::Archive);
        }
        let joined = components.join("/");
        if self.files.contains(&joined) {
            return Some(Named::File);
        }
        self.folders
            .iter()
            .find(|f| {
                joined.len() > f.len()
                    && joined.starts_with(f.as_str())
                    && joined.as_bytes().get(f.len()) == Some(&b'/')
            })
            .map(|f| Named::InFolder(f.as_str()))
    }
}

/// The MAC of a canonical archive name `52:54:00:12:34:56.tar.gz`, else `None`.
pub(crate) fn archive_mac(name: &str) -> Option<Mac> {
    Mac::parse_canonical(name.strip_suffix(".tar.gz")?)
}

/// A listed name made site-relative (`/`-separated, empty components dropped), or `None`
/// when it can never be served.
fn normalise(name: &str) -> Option<String> {
    let components: Vec<&str> = name.split('/').filter(|c| !c.is_empty()).collect();
    let first = components.first()?;
    if check_components(&components).is_err()
        || name.contains(['\\', '\0'])
        || *first == CONFIGS_DIR
        || PRIVATE_TOP.iter().any(|p| p.eq_ignore_ascii_case(first))
    {
        return None;
    }
    Some(components.join("/"))
}

/// Is `c` an editor leftover or a backup copy (`x~`, `#x#`, `x.bak`, `x.orig`, …)?
pub(crate) fn is_backup_name(c: &str) -> bool {
    const SUFFIXES: [&str; 7] = [".bak", ".orig", ".rej", ".swp", ".swo", ".tmp", ".old"];
    let lower = c.to_ascii_lowercase();
    c.ends_with('~')
        || (c.len() > 1 && c.starts_with('#') && c.ends_with('#'))
        || SUFFIXES.iter().any(|s| lower.ends_with(s))
}

/// Rule 3 on a list of non-empty components.
fn check_components(components: &[&str]) -> Result<(), Denied> {
    for c in components {
        if *c == "." || *c == ".." {
            return Err(Denied::Traversal);
        }
        if c.starts_with('.') {
            return Err(Denied::Hidden);
        }
        if is_backup_name(c) {
            return Err(Denied::Backup);
        }
    }
    Ok(())
}

/// The non-empty components of a request, checked by rules 1 to 3.
pub(crate) fn components(request: &str) -> Result<Vec<&str>, Denied> {
    if let Some(c) = request.chars().find(|&c| c == '\\' || c == '\0') {
        return Err(Denied::InvalidCharacter(c));
    }
    let components: Vec<&str> = request.split('/').filter(|c| !c.is_empty()).collect();
    check_components(&components)?;
    Ok(components)
}

/// A request that may be served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The real path of the file, symlinks resolved.
    pub path: PathBuf,
    /// The device whose archive the real file is (`configs/MAC.tar.gz`, however it was
    /// reached), for the owner rule.
    pub archive: Option<Mac>,
}

/// Resolves `request` against the site at `site_root` and its public set (see the module
/// documentation for the rules).
pub fn resolve(site_root: &Path, set: &PublicSet, request: &str) -> Result<Resolved, Denied> {
    let components = components(request)?;
    let named = set.named(&components).ok_or(Denied::NotPublic)?;
    let root = site_root.canonicalize().map_err(io_denied)?;
    let mut joined = root.clone();
    joined.extend(&components);
    let real = joined.canonicalize().map_err(io_denied)?;
    let archive = real_place(&root, set, named, &real)?;
    let meta = std::fs::metadata(&real).map_err(io_denied)?;
    if !meta.is_file() {
        return Err(Denied::NotRegularFile);
    }
    Ok(Resolved {
        path: real,
        archive,
    })
}

/// Rule 5: is `real` a public place for a request that named `named`? Returns the device
/// whose archive it is, if any.
fn real_place(
    root: &Path,
    set: &PublicSet,
    named: Named<'_>,
    real: &Path,
) -> Result<Option<Mac>, Denied> {
    if let Ok(inside) = real.strip_prefix(root) {
        let real_components = utf8_components(inside).ok_or(Denied::LeavesPublic)?;
        check_components(&real_components).map_err(|_| Denied::LeavesPublic)?;
        match set.named(&real_components) {
            Some(Named::Archive(mac)) => return Ok(Some(mac)),
            Some(Named::File | Named::InFolder(_)) => return Ok(None),
            None => {}
        }
        // Not public itself: only a public folder's real location may be there, and
        // never in a private place of the site.
        let first = real_components.first().copied().unwrap_or("");
        if first == CONFIGS_DIR || PRIVATE_TOP.iter().any(|p| p.eq_ignore_ascii_case(first)) {
            return Err(Denied::LeavesPublic);
        }
    }
    // The real location of the public folder the request went through.
    let folder = match named {
        Named::File => return Err(Denied::LeavesPublic),
        Named::Archive(_) => CONFIGS_DIR,
        Named::InFolder(f) => f,
    };
    let base = root.join(folder).canonicalize().map_err(io_denied)?;
    if root.starts_with(&base) {
        // A public folder that is the site itself or one of its parents.
        return Err(Denied::LeavesPublic);
    }
    let below = real.strip_prefix(&base).map_err(|_| Denied::LeavesPublic)?;
    let below = utf8_components(below).ok_or(Denied::LeavesPublic)?;
    check_components(&below).map_err(|_| Denied::LeavesPublic)?;
    match (named, below.as_slice()) {
        (Named::Archive(_), [name]) => archive_mac(name).map(Some).ok_or(Denied::LeavesPublic),
        (Named::Archive(_), _) => Err(Denied::LeavesPublic),
        _ if below.is_empty() => Err(Denied::NotRegularFile),
        _ => Ok(None),
    }
}

/// The components of a relative path as strings, or `None` when one is not UTF-8.
fn utf8_components(path: &Path) -> Option<Vec<&str>> {
    path.iter().map(|c| c.to_str()).collect()
}

fn io_denied(e: io::Error) -> Denied {
    // A symlink loop or an over-long name cannot name a servable file either.
    if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENAMETOOLONG)) {
        return Denied::NotFound;
    }
    match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => Denied::NotFound,
        kind => Denied::Unreadable(kind),
    }
}

#[cfg(test)]
#[path = "public_tests.rs"]
mod tests;

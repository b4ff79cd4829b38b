//! The manifest of one device: every path its archive holds, with type, content, mode,
//! owner and the layer it came from. Built layer by layer (later wins), checked for
//! file/folder collisions and symlink loops, then finished with Alpine's ownership rules.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::build::layer::StoredMeta;
use crate::build::owners::{Ids, SHADOW_GID};

/// What a path is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A directory.
    Dir,
    /// A regular file.
    File(Arc<[u8]>),
    /// A symbolic link to the target, as written.
    Symlink(String),
}

impl Kind {
    /// `dir`, `file` or `symlink`.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Kind::Dir => "dir",
            Kind::File(_) => "file",
            Kind::Symlink(_) => "symlink",
        }
    }
}

/// Two layers (or declarations) disagree on whether a path is a folder.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Collision {
    /// A path put below something that is not a folder.
    #[error("{origin} puts {path} under {parent}, which is a {parent_kind} from {parent_origin}")]
    UnderNonFolder {
        /// The layer putting `path`.
        origin: String,
        /// The path put.
        path: String,
        /// Its parent, already in the manifest.
        parent: String,
        /// What the parent is (`file` or `symlink`).
        parent_kind: &'static str,
        /// The layer the parent came from.
        parent_origin: String,
    },
    /// A folder replaced by a file or link, or the reverse.
    #[error("{path} is a {old_kind} in {old_origin} but a {new_kind} in {origin}")]
    KindChange {
        /// The path.
        path: String,
        /// What it was.
        old_kind: &'static str,
        /// The layer it came from.
        old_origin: String,
        /// What it would become.
        new_kind: &'static str,
        /// The layer putting it.
        origin: String,
    },
}

/// One path of the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Type and content.
    pub kind: Kind,
    /// Permission bits (`0o7777` at most).
    pub mode: u32,
    /// Owner uid.
    pub uid: u32,
    /// Group gid.
    pub gid: u32,
    /// Owner name written in the archive (empty when the uid has none).
    pub user: String,
    /// Group name written in the archive.
    pub group: String,
    /// The layer or declaration it came from.
    pub origin: String,
    /// Owner and mode were stored in an lbu archive or declared: Alpine's default rules do not
    /// apply.
    pub explicit: bool,
}

/// Every path of one device's archive, in archive order (parents before children).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    /// Relative paths without trailing slash → entries.
    pub entries: BTreeMap<String, Entry>,
}

impl Manifest {
    /// Put `kind` at `path` (later wins), creating missing parent folders. A file or link where
    /// a folder is, or the reverse, is a collision between layers: the error names both.
    pub(crate) fn put(
        &mut self,
        path: &str,
        kind: Kind,
        mode: u32,
        stored: Option<&StoredMeta>,
        origin: &str,
    ) -> Result<(), Collision> {
        let mut at = 0;
        while let Some(i) = path[at..].find('/') {
            let parent = &path[..at + i];
            match self.entries.get(parent) {
                Some(Entry {
                    kind: Kind::Dir, ..
                }) => {}
                Some(e) => {
                    return Err(Collision::UnderNonFolder {
                        origin: origin.to_string(),
                        path: path.to_string(),
                        parent: parent.to_string(),
                        parent_kind: e.kind.name(),
                        parent_origin: e.origin.clone(),
                    });
                }
                None => {
                    self.entries
                        .insert(parent.to_string(), Entry::root(Kind::Dir, 0o755, origin));
                }
            }
            at += i + 1;
        }
        let entry = match stored {
            Some(m) => Entry {
                kind,
                mode: m.mode,
                uid: m.uid,
                gid: m.gid,
                user: m.user.clone(),
                group: m.group.clone(),
                origin: origin.to_string(),
                explicit: true,
            },
            None => Entry::root(kind, mode, origin),
        };
        if let Some(old) = self.entries.get(path) {
            let old_dir = matches!(old.kind, Kind::Dir);
            let new_dir = matches!(entry.kind, Kind::Dir);
            if old_dir && new_dir && stored.is_none() {
                // A folder layer has nothing to say about an existing folder's owner; its mode
                // wins, as when the layers are extracted one after the other.
                if let Some(old) = self.entries.get_mut(path) {
                    old.mode = mode;
                    old.origin = origin.to_string();
                }
                return Ok(());
            }
            if old_dir != new_dir {
                return Err(Collision::KindChange {
                    path: path.to_string(),
                    old_kind: old.kind.name(),
                    old_origin: old.origin.clone(),
                    new_kind: entry.kind.name(),
                    origin: origin.to_string(),
                });
            }
        }
        self.entries.insert(path.to_string(), entry);
        Ok(())
    }

    /// Remove `path` (and, for a folder, everything below it).
    pub(crate) fn remove(&mut self, path: &str) {
        let prefix = format!("{path}/");
        self.entries
            .retain(|k, _| k != path && !k.starts_with(&prefix));
    }

    /// The content of a regular file at `path`.
    pub(crate) fn file(&self, path: &str) -> Option<&[u8]> {
        match self.entries.get(path) {
            Some(Entry {
                kind: Kind::File(b),
                ..
            }) => Some(b),
            _ => None,
        }
    }

    /// Apply Alpine's ownership and mode conventions to entries that did not come with their
    /// own (SPEC §4) — a convention's mode only narrows the source's, never widens it — and
    /// give every entry the names that match its ids.
    pub(crate) fn finish_ownership(&mut self, ids: &Ids) {
        for (path, e) in self.entries.iter_mut() {
            if !e.explicit
                && let Some((mode, gid)) = alpine_default(path, &e.kind)
            {
                e.mode = if matches!(e.kind, Kind::Symlink(_)) {
                    mode
                } else {
                    e.mode & mode
                };
                e.gid = gid;
            }
            if e.user.is_empty() || !e.explicit {
                e.user = ids.users.name(e.uid);
            }
            if e.group.is_empty() || !e.explicit {
                e.group = ids.groups.name(e.gid);
            }
        }
    }

    /// Find a symlink that, following links inside this manifest, comes back to itself.
    pub(crate) fn find_link_loop(&self) -> Option<Vec<String>> {
        for (start, e) in &self.entries {
            if !matches!(e.kind, Kind::Symlink(_)) {
                continue;
            }
            let mut seen = vec![start.clone()];
            let mut cur = start.clone();
            for _ in 0..64 {
                let Some(Entry {
                    kind: Kind::Symlink(t),
                    ..
                }) = self.entries.get(&cur)
                else {
                    break;
                };
                let next = resolve_link(&cur, t);
                if seen.contains(&next) {
                    seen.push(next);
                    return Some(seen);
                }
                seen.push(next.clone());
                cur = next;
            }
        }
        None
    }

    /// A listing of every entry, for `ovl show` and the tests that compare it with what
    /// busybox tar extracts.
    pub(crate) fn listing(&self) -> Vec<Listed> {
        self.entries
            .iter()
            .map(|(path, e)| Listed {
                path: path.clone(),
                kind: e.kind.name(),
                mode: format!("{:04o}", e.mode),
                uid: e.uid,
                gid: e.gid,
                user: e.user.clone(),
                group: e.group.clone(),
                size: match &e.kind {
                    Kind::File(b) => Some(b.len() as u64),
                    _ => None,
                },
                sha256: match &e.kind {
                    Kind::File(b) => Some(hex::encode(Sha256::digest(b))),
                    _ => None,
                },
                target: match &e.kind {
                    Kind::Symlink(t) => Some(t.clone()),
                    _ => None,
                },
                layer: e.origin.clone(),
            })
            .collect()
    }
}

impl Entry {
    fn root(kind: Kind, mode: u32, origin: &str) -> Entry {
        Entry {
            kind,
            mode,
            uid: 0,
            gid: 0,
            user: String::new(),
            group: String::new(),
            origin: origin.to_string(),
            explicit: false,
        }
    }
}

/// One line of `ovl show`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Listed {
    /// Relative path.
    pub path: String,
    /// `dir`, `file` or `symlink`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Octal permission bits, e.g. `0644`.
    pub mode: String,
    /// Owner uid.
    pub uid: u32,
    /// Group gid.
    pub gid: u32,
    /// Owner name.
    pub user: String,
    /// Group name.
    pub group: String,
    /// File size in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// SHA-256 of a file's content.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// A symlink's target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The layer or declaration it came from.
    pub layer: String,
}

/// Resolve a link target lexically to a manifest path (absolute targets from the device's
/// root, relative ones from the link's folder).
fn resolve_link(link: &str, target: &str) -> String {
    let mut parts: Vec<&str> = if target.starts_with('/') {
        Vec::new()
    } else {
        link.split('/')
            .collect::<Vec<_>>()
            .split_last()
            .map(|(_, p)| p.to_vec())
            .unwrap_or_default()
    };
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    parts.join("/")
}

/// Alpine's mode (the widest allowed) and group for a path whose source said nothing about
/// them.
fn alpine_default(path: &str, kind: &Kind) -> Option<(u32, u32)> {
    let name = path.rsplit('/').next().unwrap_or(path);
    match kind {
        Kind::Dir => {
            if path == "root" || name == ".ssh" {
                Some((0o700, 0))
            } else {
                None
            }
        }
        Kind::File(_) => {
            if path == "etc/shadow" || path == "etc/shadow-" {
                Some((0o640, SHADOW_GID))
            } else if path.ends_with(".ssh/authorized_keys")
                || (path.starts_with("etc/ssh/ssh_host_") && path.ends_with("_key"))
            {
                Some((0o600, 0))
            } else if path == "etc/sudoers" || path.starts_with("etc/sudoers.d/") {
                Some((0o440, 0))
            } else {
                None
            }
        }
        Kind::Symlink(_) => Some((0o777, 0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_are_created_and_collisions_named() {
        let mut m = Manifest::default();
        m.put(
            "etc/motd",
            Kind::File(Arc::from(&b"hi"[..])),
            0o644,
            None,
            "overlays/a",
        )
        .unwrap();
        assert!(matches!(m.entries["etc"].kind, Kind::Dir));
        let e = m
            .put(
                "etc/motd/x",
                Kind::File(Arc::from(&b""[..])),
                0o644,
                None,
                "overlays/b",
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("overlays/b") && e.contains("overlays/a"), "{e}");
        let e = m
            .put(
                "etc",
                Kind::File(Arc::from(&b""[..])),
                0o644,
                None,
                "overlays/b",
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("dir"), "{e}");
    }

    #[test]
    fn loops_found() {
        let mut m = Manifest::default();
        m.put("etc/a", Kind::Symlink("b".into()), 0o777, None, "x")
            .unwrap();
        m.put("etc/b", Kind::Symlink("/etc/a".into()), 0o777, None, "x")
            .unwrap();
        assert!(m.find_link_loop().is_some());
        let mut m = Manifest::default();
        m.put(
            "etc/a",
            Kind::Symlink("/etc/init.d/sshd".into()),
            0o777,
            None,
            "x",
        )
        .unwrap();
        assert!(m.find_link_loop().is_none());
    }

    #[test]
    fn alpine_rules() {
        let mut m = Manifest::default();
        m.put(
            "etc/shadow",
            Kind::File(Arc::from(&b""[..])),
            0o644,
            None,
            "x",
        )
        .unwrap();
        m.put(
            "root/.ssh/authorized_keys",
            Kind::File(Arc::from(&b""[..])),
            0o644,
            None,
            "x",
        )
        .unwrap();
        m.finish_ownership(&Ids::new(None, None));
        assert_eq!(
            (
                m.entries["etc/shadow"].mode,
                m.entries["etc/shadow"].group.as_str()
            ),
            (0o640, "shadow")
        );
        assert_eq!(m.entries["root"].mode, 0o700);
        assert_eq!(m.entries["root/.ssh"].mode, 0o700);
        assert_eq!(m.entries["root/.ssh/authorized_keys"].mode, 0o600);
    }

    #[test]
    fn conventions_only_narrow() {
        let mut m = Manifest::default();
        let empty = || Kind::File(Arc::from(&b""[..]));
        m.put("etc/shadow", empty(), 0o600, None, "x").unwrap();
        m.put("etc/sudoers", empty(), 0o755, None, "x").unwrap();
        m.put("etc/wpa.conf", empty(), 0o600, None, "x").unwrap();
        m.finish_ownership(&Ids::new(None, None));
        assert_eq!(m.entries["etc/shadow"].mode, 0o600);
        assert_eq!(m.entries["etc/shadow"].gid, SHADOW_GID);
        assert_eq!(m.entries["etc/sudoers"].mode, 0o440);
        assert_eq!(m.entries["etc/wpa.conf"].mode, 0o600);
    }

    #[test]
    fn a_later_folder_layer_sets_the_mode() {
        let mut m = Manifest::default();
        m.put("etc/wpa", Kind::Dir, 0o755, None, "a").unwrap();
        m.put("etc/wpa", Kind::Dir, 0o700, None, "b").unwrap();
        assert_eq!(m.entries["etc/wpa"].mode, 0o700);
        assert_eq!(m.entries["etc/wpa"].origin, "b");
    }
}

//! What each device was given. Every archive carries its build identity
//! ([`IDENTITY_FILE`], `etc/ovl/build`: under `etc/`, so lbu saves it with the rest of the
//! device's configuration), and ovl keeps, per device, the manifests of the archives it
//! published (`.ovl-state/manifests/MAC/ID.json.gz`, the last `[capture] history`): paths,
//! types, modes, owners, content hashes and the contents of small text files. A capture's
//! identity file leads back to the manifest its device was given: the base of the three-way
//! merge ([`crate::build::merge`]).
//!
//! The identity is the sha256 of the archive's manifest without the identity file itself, so
//! archives stay byte-reproducible: no clock time, no counter.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

mod store;

use crate::build::compare::Change;
use crate::build::manifest::{Collision, Kind, Manifest};
use crate::build::owners::Ids;
use crate::mac::Mac;
use crate::site::layout::{IDENTITY_DIR, IDENTITY_FILE};

/// The version of the manifest files' format.
pub(crate) const SCHEMA: u32 = 1;
/// A text file's content is kept in a manifest only up to this size.
pub(crate) const TEXT_FILE_CAP: usize = 64 * 1024;
/// The text contents kept in one manifest, in all.
pub(crate) const TEXT_RECORD_CAP: usize = 256 * 1024;

/// What a path holds, as compared between the base, the device and the fleet: type, content
/// digest or link target, mode and owner (names are informative only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileState {
    /// `dir`, `file` or `symlink`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Permission bits, in octal (`0644`).
    pub mode: String,
    /// Owner uid.
    pub uid: u32,
    /// Group gid.
    pub gid: u32,
    /// Owner name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    /// Group name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group: String,
    /// A file's size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// A file's sha256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// A symlink's target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// Paths → what they hold.
pub type States = BTreeMap<String, FileState>;

impl FileState {
    /// The state of `kind` with `mode` and owner (a file is hashed).
    pub(crate) fn new(kind: &Kind, mode: u32, ids: (u32, u32), names: (&str, &str)) -> Self {
        FileState::with_digest(kind, mode, ids, names, None)
    }

    /// Like [`FileState::new`], with a file's digest when it is already known.
    pub(crate) fn with_digest(
        kind: &Kind,
        mode: u32,
        ids: (u32, u32),
        names: (&str, &str),
        sha256: Option<&str>,
    ) -> Self {
        FileState {
            kind: kind.name().to_string(),
            mode: format!("{:04o}", mode),
            uid: ids.0,
            gid: ids.1,
            user: names.0.to_string(),
            group: names.1.to_string(),
            size: match kind {
                Kind::File(b) => Some(b.len() as u64),
                _ => None,
            },
            sha256: match (kind, sha256) {
                (Kind::File(_), Some(known)) => Some(known.to_string()),
                (Kind::File(b), None) => Some(hex::encode(Sha256::digest(b))),
                _ => None,
            },
            target: match kind {
                Kind::Symlink(t) => Some(t.clone()),
                _ => None,
            },
        }
    }

    /// Same type, content or target, mode and owner ids (names and sizes aside).
    pub(crate) fn same(&self, other: &FileState) -> bool {
        self.changes(other).is_empty()
    }

    /// How `new` differs from `self`, in the order type, content, target, mode, owner.
    pub(crate) fn changes(&self, new: &FileState) -> Vec<Change> {
        let mut what = Vec::new();
        if self.kind != new.kind {
            what.push(Change::Type);
        }
        if self.sha256 != new.sha256 {
            what.push(Change::Content);
        }
        if self.target != new.target {
            what.push(Change::Target);
        }
        if self.mode != new.mode {
            what.push(Change::Mode);
        }
        if (self.uid, self.gid) != (new.uid, new.gid) {
            what.push(Change::Owner);
        }
        what
    }

    /// A folder?
    pub(crate) fn is_dir(&self) -> bool {
        self.kind == "dir"
    }
}

/// The states of every entry of `m`. Contents shared with `reuse` (the same bytes in memory,
/// as a merged manifest shares them with the fleet's) are not hashed again.
pub(crate) fn states(m: &Manifest, reuse: Option<(&Manifest, &States)>) -> States {
    m.entries
        .iter()
        .map(|(path, e)| {
            let shared = reuse.and_then(|(rm, rs)| {
                let old = rm.entries.get(path)?;
                let same_bytes = match (&old.kind, &e.kind) {
                    (Kind::File(a), Kind::File(b)) => Arc::ptr_eq(a, b),
                    (a, b) => a == b,
                };
                let same_meta = (old.mode, old.uid, old.gid) == (e.mode, e.uid, e.gid)
                    && (&old.user, &old.group) == (&e.user, &e.group);
                (same_bytes && same_meta).then(|| rs.get(path).cloned())?
            });
            let st = shared.unwrap_or_else(|| {
                FileState::new(&e.kind, e.mode, (e.uid, e.gid), (&e.user, &e.group))
            });
            (path.clone(), st)
        })
        .collect()
}

/// The build identity of a manifest: the sha256 of every entry but the identity file (path,
/// type, mode, owner ids and names, content digest or link target), in path order.
pub(crate) fn identity(states: &States) -> String {
    let mut h = Sha256::new();
    for (path, s) in states.iter().filter(|(p, _)| p.as_str() != IDENTITY_FILE) {
        let content = s.sha256.as_deref().or(s.target.as_deref()).unwrap_or("");
        let line = format!(
            "{path}\0{}\0{}\0{}\0{}\0{}\0{}\0{content}\n",
            s.kind, s.mode, s.uid, s.gid, s.user, s.group
        );
        h.update(line.as_bytes());
    }
    hex::encode(h.finalize())
}

/// Put the identity file (empty until the identity is known; root, 0644), replacing any a
/// layer brought; its folder and it get the names of their owners.
pub(crate) fn put_identity(m: &mut Manifest) -> std::result::Result<(), Collision> {
    m.entries.remove(IDENTITY_FILE);
    m.put(
        IDENTITY_FILE,
        Kind::File(Arc::from(&b""[..])),
        0o644,
        None,
        "ovl",
    )?;
    let text = |p| m.file(p).map(|x| String::from_utf8_lossy(x).into_owned());
    let ids = Ids::new(text("etc/passwd").as_deref(), text("etc/group").as_deref());
    for p in [IDENTITY_DIR, IDENTITY_FILE] {
        if let Some(e) = m.entries.get_mut(p)
            && e.user.is_empty()
        {
            (e.user, e.group) = (ids.users.name(e.uid), ids.groups.name(e.gid));
        }
    }
    Ok(())
}

/// Compute the identity of `m` (whose `states` are known) and write it into its identity
/// file; returns it.
pub(crate) fn finish_identity(
    m: &mut Manifest,
    states: &mut States,
    mac: Mac,
    profile: &str,
) -> String {
    let id = identity(states);
    let text = Identity {
        id: id.clone(),
        mac,
        profile: profile.to_string(),
    }
    .text();
    if let Some(e) = m.entries.get_mut(IDENTITY_FILE) {
        e.kind = Kind::File(Arc::from(text.into_bytes()));
        let st = FileState::new(&e.kind, e.mode, (e.uid, e.gid), (&e.user, &e.group));
        states.insert(IDENTITY_FILE.to_string(), st);
    }
    id
}

/// The content of the identity file of an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The build identity (64 hex digits).
    pub id: String,
    /// The device it was built for.
    pub mac: Mac,
    /// Its profile.
    pub profile: String,
}

impl Identity {
    /// The file's text: a comment and `key=value` lines, no time (archives stay reproducible).
    pub(crate) fn text(&self) -> String {
        format!(
            "# Written by ovl: the build this device was given. lbu saves it with /etc, so the\n\
             # next capture says what the device started from (see `ovl drift`).\n\
             id={}\nmac={}\nprofile={}\n",
            self.id, self.mac, self.profile
        )
    }

    /// Read an identity file; `None` when it is not one ovl wrote.
    pub(crate) fn parse(bytes: &[u8]) -> Option<Identity> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut fields: BTreeMap<&str, &str> = BTreeMap::new();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            if let Some((k, v)) = line.split_once('=') {
                fields.insert(k.trim(), v.trim());
            }
        }
        let id = *fields.get("id")?;
        let valid_id = id.len() == 64 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        Some(Identity {
            id: valid_id.then(|| id.to_string())?,
            mac: fields.get("mac")?.parse().ok()?,
            profile: fields.get("profile")?.to_string(),
        })
    }
}

/// One published archive as kept in `.ovl-state/manifests/MAC/ID.json.gz`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Given {
    /// The format's version (1).
    pub schema: u32,
    /// The build identity.
    pub id: String,
    /// The device's MAC.
    pub mac: String,
    /// Its profile.
    pub profile: String,
    /// Its hostname.
    pub hostname: String,
    /// Every entry of the archive but the identity file.
    pub entries: States,
    /// Where the fleet's part differs from the archive (the device's own changes kept in it):
    /// the fleet's state, or `null` where the fleet has nothing. The base of the next merge
    /// is `entries` with these applied.
    #[serde(default)]
    pub fleet: BTreeMap<String, Option<FileState>>,
    /// Paths both the device and the fleet had changed, resolved by `[capture] conflicts`.
    #[serde(default)]
    pub conflicts: Vec<String>,
    /// Text contents by sha256: small text files only (at most 64 KiB each, 256 KiB in all),
    /// kept beside the manifest (`ID.text.gz`) and read only when a merge needs them.
    #[serde(skip)]
    pub(crate) text: Texts,
}

/// The text contents of a kept manifest: given, or read from their file on first use.
#[derive(Debug, Clone, Default)]
pub(crate) struct Texts {
    /// Where they are kept, when not given.
    pub(crate) file: Option<PathBuf>,
    /// Sha256 → content.
    pub(crate) map: std::sync::OnceLock<BTreeMap<String, String>>,
}

impl Texts {
    /// Contents given in memory.
    pub(crate) fn given(map: BTreeMap<String, String>) -> Texts {
        Texts {
            file: None,
            map: std::sync::OnceLock::from(map),
        }
    }

    /// The map, read now if it is kept in a file (an unreadable file holds none).
    fn get(&self) -> &BTreeMap<String, String> {
        self.map.get_or_init(|| {
            self.file
                .as_deref()
                .and_then(|f| store::read_texts(f).ok())
                .unwrap_or_default()
        })
    }
}

impl Given {
    /// What the fleet gave this device: the archive without the device's own changes.
    pub(crate) fn base(&self) -> States {
        let mut base = self.entries.clone();
        for (path, s) in &self.fleet {
            match s {
                Some(s) => base.insert(path.clone(), s.clone()),
                None => base.remove(path),
            };
        }
        base
    }

    /// The kept text of a file state, if any.
    pub(crate) fn text_of(&self, s: &FileState) -> Option<&str> {
        self.text
            .get()
            .get(s.sha256.as_deref()?)
            .map(String::as_str)
    }
}

/// The manifests of one device's build, to be kept.
pub(crate) struct Record<'a> {
    /// The device.
    pub(crate) mac: Mac,
    /// Its profile.
    pub(crate) profile: &'a str,
    /// Its hostname.
    pub(crate) hostname: &'a str,
    /// The build identity.
    pub(crate) id: &'a str,
    /// The archive's manifest and states.
    pub(crate) published: (&'a Manifest, &'a States),
    /// The fleet's part, when a capture was merged into the archive.
    pub(crate) fleet: Option<(&'a Manifest, &'a States)>,
    /// Conflicts resolved in this build.
    pub(crate) conflicts: Vec<String>,
}

impl Record<'_> {
    /// The [`Given`] to keep: states, the fleet's differences, and small text contents
    /// (smallest first, files under `etc/` before others, up to [`TEXT_RECORD_CAP`]).
    pub(crate) fn given(&self) -> Given {
        let (pm, ps) = self.published;
        let mut entries = ps.clone();
        entries.remove(IDENTITY_FILE);
        let mut fleet = BTreeMap::new();
        let mut texts: Vec<(&str, &[u8])> = Vec::new();
        candidates(pm, ps, &mut texts);
        if let Some((fm, fs)) = self.fleet {
            for path in ps.keys().chain(fs.keys()) {
                let (a, b) = (ps.get(path), fs.get(path));
                if path != IDENTITY_FILE && a != b {
                    fleet.insert(path.clone(), b.cloned());
                }
            }
            candidates(fm, fs, &mut texts);
        }
        Given {
            schema: SCHEMA,
            id: self.id.to_string(),
            mac: self.mac.to_string(),
            profile: self.profile.to_string(),
            hostname: self.hostname.to_string(),
            entries,
            fleet,
            conflicts: self.conflicts.clone(),
            text: Texts::given(pick_texts(texts)),
        }
    }
}

/// Every file of `m` with its digest, added to `out`.
fn candidates<'a>(m: &'a Manifest, s: &'a States, out: &mut Vec<(&'a str, &'a [u8])>) {
    for (path, e) in &m.entries {
        if let (Kind::File(b), Some(sha)) = (&e.kind, s.get(path).and_then(|x| x.sha256.as_deref()))
        {
            out.push((sha, b));
        }
    }
}

/// The text contents to keep: each once, text only, each at most [`TEXT_FILE_CAP`], smallest
/// first up to [`TEXT_RECORD_CAP`] in all.
fn pick_texts(mut candidates: Vec<(&str, &[u8])>) -> BTreeMap<String, String> {
    candidates.sort_by_key(|(sha, b)| (b.len(), *sha));
    candidates.dedup_by_key(|(sha, _)| *sha);
    let mut out = BTreeMap::new();
    let mut total = 0;
    for (sha, b) in candidates {
        if b.len() > TEXT_FILE_CAP || total + b.len() > TEXT_RECORD_CAP {
            continue;
        }
        let Ok(text) = std::str::from_utf8(b) else {
            continue;
        };
        if text.contains('\0') {
            continue;
        }
        total += b.len();
        out.insert(sha.to_string(), text.to_string());
    }
    out
}

pub(crate) use store::{load, record_path, stage};

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(files: &[(&str, &str)]) -> Manifest {
        let mut m = Manifest::default();
        for (p, c) in files {
            let kind = Kind::File(Arc::from(c.as_bytes()));
            m.put(p, kind, 0o644, None, "t").unwrap();
        }
        m
    }

    #[test]
    fn identity_ignores_the_identity_file_and_sees_everything_else() {
        let a = manifest(&[("etc/motd", "hi\n"), (IDENTITY_FILE, "placeholder")]);
        let id = identity(&states(&a, None));
        let b = manifest(&[("etc/motd", "hi\n"), (IDENTITY_FILE, "id=…")]);
        assert_eq!(id, identity(&states(&b, None)));
        let mut c = a.clone();
        c.entries.get_mut("etc/motd").unwrap().mode = 0o600;
        assert_ne!(id, identity(&states(&c, None)));
        let mut d = a.clone();
        d.remove("etc/motd");
        assert_ne!(id, identity(&states(&d, None)));
    }

    #[test]
    fn identity_files_round_trip_and_reject_garbage() {
        let i = Identity {
            id: "a".repeat(64),
            mac: "52:54:00:12:34:56".parse().unwrap(),
            profile: "XL".into(),
        };
        assert_eq!(Identity::parse(i.text().as_bytes()), Some(i.clone()));
        assert_eq!(
            Identity::parse(b"id=zz\nmac=52:54:00:12:34:56\nprofile=S\n"),
            None
        );
        assert_eq!(Identity::parse(b"\xff"), None);
        let no_mac = i.text().replace("mac=", "mac=bad");
        assert_eq!(Identity::parse(no_mac.as_bytes()), None);
    }

    #[test]
    fn states_reuse_shared_bytes_only() {
        let a = manifest(&[("etc/a", "1\n"), ("etc/b", "2\n")]);
        let sa = states(&a, None);
        let mut b = a.clone();
        b.entries.get_mut("etc/b").unwrap().kind = Kind::File(Arc::from(&b"3\n"[..]));
        let sb = states(&b, Some((&a, &sa)));
        assert_eq!(sb["etc/a"], sa["etc/a"]);
        assert_ne!(sb["etc/b"].sha256, sa["etc/b"].sha256);
        assert_eq!(sb, states(&b, None));
    }

    #[test]
    fn texts_are_capped_and_binary_skipped() {
        let big = vec![b'a'; TEXT_FILE_CAP + 1];
        let picked = pick_texts(vec![
            ("1", b"small\n"),
            ("2", b"bin\0ary"),
            ("3", &big),
            ("4", b"\xff\xfe"),
        ]);
        assert_eq!(picked.keys().collect::<Vec<_>>(), ["1"]);
    }
}

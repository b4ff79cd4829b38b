//! File trees as the tests compare them: what `ovl show --json` lists for a device, what a
//! folder holds on disk, what a VM recorded. One [`Entry`] per relative path.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::proc::sha256;
use super::site::TestSite;

/// One entry as compared.
#[derive(Clone, PartialEq, Eq)]
pub struct Entry {
    /// `dir`, `file`, `symlink` (or `other`).
    pub kind: String,
    /// Permission bits, special bits included; none for symlinks (Linux ignores theirs).
    pub mode: Option<u32>,
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// A file's sha256, a symlink's target, empty for the rest.
    pub content: String,
}

impl Entry {
    /// An entry from its parts (`mode` in octal text, ignored for symlinks).
    pub fn new(kind: &str, mode: &str, uid: u32, gid: u32, content: &str) -> Entry {
        let mode = u32::from_str_radix(mode, 8)
            .unwrap_or_else(|e| panic!("mode {mode:?} is not octal: {e}"));
        Entry {
            kind: kind.to_string(),
            mode: (kind != "symlink").then_some(mode),
            uid,
            gid,
            content: match kind {
                "file" | "symlink" => content.to_string(),
                _ => String::new(),
            },
        }
    }
}

/// `kind mode uid:gid content`, the mode in octal as `ls` and `ovl show` write it.
impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = self.mode.map_or("-".to_string(), |m| format!("{m:04o}"));
        write!(
            f,
            "{} {mode} {}:{} {}",
            self.kind, self.uid, self.gid, self.content
        )
    }
}

/// Relative path → entry.
pub type Tree = BTreeMap<String, Entry>;

/// What `ovl show --json --mac MAC` lists: the tree, each entry's owner names, the document.
pub struct Shown {
    /// The entries.
    pub tree: Tree,
    /// Path → (user name, group name).
    pub names: BTreeMap<String, (String, String)>,
    /// The whole JSON document.
    pub json: serde_json::Value,
}

/// Runs `ovl show --json --mac MAC` on `site`.
pub fn ovl_show(site: &TestSite, mac: &str) -> Shown {
    let out = site
        .command()
        .args(["--json", "show", "--mac", mac])
        .output()
        .expect("ovl show");
    assert!(out.status.success(), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("show JSON");
    let mut tree = Tree::new();
    let mut names = BTreeMap::new();
    for f in json["files"].as_array().expect("files") {
        let text = |k: &str| f[k].as_str().unwrap_or_default().to_string();
        let id = |k: &str| u32::try_from(f[k].as_u64().expect("numeric id")).expect("u32 id");
        let kind = text("type");
        let content = match kind.as_str() {
            "file" => text("sha256"),
            "symlink" => text("target"),
            _ => String::new(),
        };
        let path = text("path");
        let entry = Entry::new(&kind, &text("mode"), id("uid"), id("gid"), &content);
        names.insert(path.clone(), (text("user"), text("group")));
        tree.insert(path, entry);
    }
    Shown { tree, names, json }
}

/// The entries at `paths` (relative) under `root`, as the folder holds them (`lstat`);
/// missing paths are left out.
pub fn on_disk<'a>(root: &Path, paths: impl IntoIterator<Item = &'a String>) -> Tree {
    let mut tree = Tree::new();
    for rel in paths {
        let path = root.join(rel);
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        let ft = meta.file_type();
        let (kind, content) = if ft.is_symlink() {
            let target = fs::read_link(&path).expect("readlink");
            ("symlink", target.to_string_lossy().into_owned())
        } else if ft.is_dir() {
            ("dir", String::new())
        } else if ft.is_file() {
            ("file", sha256(&fs::read(&path).expect("read file")))
        } else {
            ("other", String::new())
        };
        let mode = format!("{:o}", meta.mode() & 0o7777);
        tree.insert(
            rel.clone(),
            Entry::new(kind, &mode, meta.uid(), meta.gid(), &content),
        );
    }
    tree
}

/// Asserts that `actual` holds every entry of `expected`, equal, and that every other entry
/// of `actual` is one `extra_ok` accepts; `what` names the two sides in the message.
pub fn assert_holds(expected: &Tree, actual: &Tree, extra_ok: impl Fn(&str) -> bool, what: &str) {
    let missing: Vec<&String> = expected
        .keys()
        .filter(|k| !actual.contains_key(*k))
        .collect();
    let differ: Vec<_> = expected
        .iter()
        .filter_map(|(k, v)| actual.get(k).filter(|w| *w != v).map(|w| (k, v, w)))
        .collect();
    let unexpected: Vec<&String> = actual
        .keys()
        .filter(|k| !expected.contains_key(*k) && !extra_ok(k))
        .collect();
    assert!(
        missing.is_empty() && differ.is_empty() && unexpected.is_empty(),
        "{what}\nmissing: {missing:?}\nunexpected extra entries: {unexpected:?}\n\
         differing (path, expected, actual): {differ:#?}"
    );
    assert!(
        expected.len() > 10,
        "a real tree: {} entries",
        expected.len()
    );
}

//! Every archive, extracted by busybox `tar -zxvf` as Alpine's initramfs does, gives exactly
//! the tree `ovl show --json` lists: names, types, modes, owners, link targets, contents.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use crate::harness::proc::{require_root, sha256};
use crate::harness::site::{MAC, TestSite};

/// (type, mode, uid, gid, sha256 or target) by path.
pub(crate) type Tree = BTreeMap<String, (String, String, u32, u32, String)>;

/// The tree extracted into `dir`.
pub(crate) fn extracted(dir: &Path) -> Tree {
    let mut t = Tree::new();
    for e in walkdir::WalkDir::new(dir).min_depth(1).sort_by_file_name() {
        let e = e.unwrap();
        let rel = e
            .path()
            .strip_prefix(dir)
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        let m = std::fs::symlink_metadata(e.path()).unwrap();
        let ft = m.file_type();
        let (kind, extra) = if ft.is_dir() {
            ("dir", String::new())
        } else if ft.is_symlink() {
            (
                "symlink",
                std::fs::read_link(e.path())
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_string(),
            )
        } else {
            ("file", sha256(&std::fs::read(e.path()).unwrap()))
        };
        let mode = if ft.is_symlink() {
            "0777".to_string()
        } else {
            format!("{:04o}", m.mode() & 0o7777)
        };
        t.insert(rel, (kind.to_string(), mode, m.uid(), m.gid(), extra));
    }
    t
}

/// The tree `ovl show --json` lists.
pub(crate) fn listed(v: &serde_json::Value) -> Tree {
    let mut t = Tree::new();
    for f in v["files"].as_array().unwrap() {
        let extra = f["sha256"]
            .as_str()
            .or(f["target"].as_str())
            .unwrap_or("")
            .to_string();
        t.insert(
            f["path"].as_str().unwrap().to_string(),
            (
                f["type"].as_str().unwrap().to_string(),
                f["mode"].as_str().unwrap().to_string(),
                f["uid"].as_u64().unwrap() as u32,
                f["gid"].as_u64().unwrap() as u32,
                extra,
            ),
        );
    }
    t
}

/// Extract with busybox as root and compare with `ovl show --json`.
fn assert_busybox_matches_show(site: &TestSite, mac: &str, extra: &[&str]) {
    require_root("busybox tar restores the archive's owners only as root");
    let mut args = vec!["show", "--json", "--mac", mac];
    args.extend_from_slice(extra);
    let show = site.ovl(&args).ok().json();
    assert_eq!(show["archive"]["state"], "built", "{show}");
    let out = tempfile::tempdir().unwrap();
    let st = Command::new("busybox")
        .args(["tar", "-zxvf"])
        .arg(site.archive(mac))
        .arg("-C")
        .arg(out.path())
        .output()
        .expect("busybox (Debian busybox-static) is installed");
    assert!(
        st.status.success(),
        "busybox tar failed: {}",
        String::from_utf8_lossy(&st.stderr)
    );
    let got = extracted(out.path());
    let want = listed(&show);
    for (k, v) in &want {
        assert_eq!(
            got.get(k),
            Some(v),
            "{mac}: {k} differs (extracted vs show)"
        );
    }
    for k in got.keys() {
        assert!(
            want.contains_key(k),
            "{mac}: busybox extracted {k}, which show does not list"
        );
    }
    // `tar -v` lists exactly the members, parents first, no leading / or ./.
    let names = String::from_utf8_lossy(&st.stdout);
    let mut seen = std::collections::BTreeSet::new();
    for n in names.lines() {
        assert!(
            !n.starts_with('/') && !n.starts_with("./") && !n.contains(".."),
            "bad member name {n}"
        );
        let n = n.trim_end_matches('/');
        if let Some((parent, _)) = n.rsplit_once('/') {
            assert!(seen.contains(parent), "{n} comes before its parent");
        }
        seen.insert(n.to_string());
    }
}

#[test]
#[ignore = "needs root: busybox tar restores owners only as root"]
fn example_site_archives_extract_as_listed() {
    let site = TestSite::example();
    let built = site.ovl(&["build", "--all", "--json"]).ok().json();
    let devices = built["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 5);
    for d in devices {
        assert_eq!(d["state"], "created", "{d}");
        assert_busybox_matches_show(&site, d["mac"].as_str().unwrap(), &[]);
    }
    // A MAC not in the inventory, with an explicit profile.
    site.ovl(&["build", "--profile", "XL", "--mac", "02-00-00-00-00-99"])
        .ok();
    assert_busybox_matches_show(&site, "02:00:00:00:00:99", &["--profile", "XL"]);
}

#[test]
#[ignore = "needs root: busybox tar restores owners only as root"]
fn test_site_with_archive_layer_links_long_names_and_owners() {
    let site = TestSite::new();
    let long = site.add_links_owners_and_long_names();
    site.write(
        "profiles/S.toml",
        "overlays = [\"base\", \"captures/ref/ref.apkovl.tar.gz\"]\npackages = [\"openssh\", \"!htop\", \"vim\"]\n\
         [permissions.\"usr/local/bin/tool\"]\nmode = \"0700\"\nuser = \"kiosk\"\ngroup = \"kiosk\"\n",
    );
    site.ovl(&["build", "--all"]).ok();
    assert_busybox_matches_show(&site, MAC, &[]);
    let show = site.ovl(&["show", "--json", "--mac", MAC]).ok().json();
    let f = |p: &str| {
        show["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["path"] == p)
            .unwrap()
            .clone()
    };
    assert_eq!(f("etc/chrony/chrony.keys")["uid"], 100);
    assert_eq!(f("etc/chrony/chrony.keys")["mode"], "0640");
    assert_eq!(f("etc/chrony")["mode"], "0750");
    assert_eq!(f("etc/shadow")["gid"], 42);
    assert_eq!(f("etc/shadow")["mode"], "0640");
    assert_eq!(f("etc/ssh/ssh_host_ed25519_key")["mode"], "0600");
    assert_eq!(f("etc/ssh/ssh_host_ed25519_key.pub")["mode"], "0644");
    assert_eq!(f("usr/local/bin/tool")["mode"], "0700");
    assert_eq!(f("usr/local/bin/tool")["uid"], 1234);
    assert_eq!(f("usr/local/bin/tool")["gid"], 1235);
    assert_eq!(
        f("etc/localtime")["target"],
        "/usr/share/zoneinfo/Europe/Paris"
    );
    assert_eq!(f(&long)["type"], "file");
    assert_eq!(
        f("etc/runlevels/default/chronyd")["layer"],
        "captures/ref/ref.apkovl.tar.gz"
    );
    // World: declared ∪ archive's, minus removals, sorted.
    assert_eq!(site.archive_member(MAC, "etc/apk/world"), "openssh\nvim\n");
}

//! Multi-member archives (issue #12 item 3): the runs of entries a profile's layers give every
//! device are compressed once per build and their gzip member reused; the device's own entries
//! are members of their own. Archives with per-device entries between and after shared runs,
//! with a device layer overriding a shared file and adding one in the middle of a run, and with
//! a capture on top, must hold several gzip members and read as one stream everywhere: listed
//! alike by GNU tar, busybox and Python's `tarfile` (`r:gz`, and `r|` over `gzip.open`: its
//! own `r|gz` stream mode stops after the first member), extracted
//! (as root) by Alpine's own busybox `tar` in a chroot of the minirootfs, GNU tar and Python
//! to exactly the tree `ovl show --json` lists.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use crate::harness::alpine::Device;
use crate::harness::proc::{must, require_root, sha256};
use crate::harness::site::{TestSite, python_tar};
use crate::oracle::{Tree, extracted, listed};

/// A plain device of profile `F`.
const PLAIN: &str = "52:54:00:00:00:01";
/// A device whose own layer overrides a shared file and adds one, mid-run.
const OWN: &str = "52:54:00:00:00:02";
/// A device with a capture (no known base: laid on top of the layers).
const CAPTURED: &str = "52:54:00:00:00:03";
/// Every device.
const ALL: [&str; 3] = [PLAIN, OWN, CAPTURED];

/// `lines` lines of configuration text named after `name`.
fn text(name: &str, lines: usize) -> String {
    (0..lines)
        .map(|i| format!("{name}.setting{i} = value {} # {name}\n", i * 37 % 101))
        .collect()
}

/// Profile `F` over overlay `fleet` (60 files in `etc/app`, a template among them, 20 in
/// `usr/share/fleet`: about 480 KB), three devices as above.
fn site() -> TestSite {
    let s = TestSite::empty();
    s.write("ovl.toml", "[boot]\nserver = \"10.9.0.1\"\n");
    s.write(
        "profiles/F.toml",
        "overlays = [\"fleet\"]\npackages = [\"openssh\"]\nhostname = \"f-{{ mac_suffix }}\"\n\
         [services]\ndefault = [\"sshd\"]\n",
    );
    for i in 0..60 {
        let name = format!("a{i:02}");
        s.write(
            &format!("overlays/fleet/etc/app/{name}.conf"),
            &text(&name, 150),
        );
    }
    s.write(
        "overlays/fleet/etc/app/a45.motd.j2",
        "welcome to {{ hostname }}\n",
    );
    for i in 0..20 {
        let name = format!("u{i:02}");
        s.write(
            &format!("overlays/fleet/usr/share/fleet/{name}"),
            &text(&name, 150),
        );
    }
    s.write("overlays/own/etc/app/a30.conf", "the device's own a30\n");
    s.write("overlays/own/etc/app/a31-own.conf", "only this device\n");
    python_tar(
        &s.path(&format!("captures/{CAPTURED}/f-000003.apkovl.tar.gz")),
        r#"[("etc/", "d", "", 0o755, 0, 0, ""),
        ("etc/app/", "d", "", 0o755, 0, 0, ""),
        ("etc/app/a10.conf", "f", "changed on the device\n", 0o644, 0, 0, ""),
        ("root/", "d", "", 0o700, 0, 0, ""),
        ("root/notes", "f", "a note\n", 0o600, 0, 0, "")]"#,
    );
    s.write(
        "devices.toml",
        &format!(
            "[[device]]\nmac = \"{PLAIN}\"\nprofile = \"F\"\n\n\
             [[device]]\nmac = \"{OWN}\"\nprofile = \"F\"\noverlays = [\"own\"]\n\n\
             [[device]]\nmac = \"{CAPTURED}\"\nprofile = \"F\"\n"
        ),
    );
    s
}

/// The gzip members of `gz`, each with the number of bytes it holds.
fn members(gz: &[u8]) -> Vec<(Vec<u8>, u64)> {
    let mut rest = gz;
    let mut out = Vec::new();
    while !rest.is_empty() {
        assert_eq!(&rest[..3], &[0x1f, 0x8b, 8], "a gzip member header");
        let mut d = flate2::bufread::GzDecoder::new(rest);
        let n = std::io::copy(&mut d, &mut std::io::sink()).expect("a valid gzip member");
        let left = d.into_inner();
        out.push((rest[..rest.len() - left.len()].to_vec(), n));
        rest = left;
    }
    out
}

/// `ovl show --json` of `mac`, its archive built.
fn show(site: &TestSite, mac: &str) -> serde_json::Value {
    let v = site.ovl(&["show", "--json", "--mac", mac]).ok().json();
    assert_eq!(v["archive"]["state"], "built", "{v}");
    v
}

/// The tree Python's `tarfile` reads from `archive`: with `stream`, from `gzip.open` in stream
/// mode (`r|`), else random access (`r:gz`). (Python's own `r|gz` stops after the first gzip
/// member, a CPython limitation: its stream decompressor does not go on to the next.)
fn python_tree(archive: &Path, stream: bool) -> Tree {
    let open = if stream {
        format!("tarfile.open(fileobj=gzip.open({archive:?}), mode='r|')")
    } else {
        format!("tarfile.open({archive:?}, 'r:gz')")
    };
    let script = format!(
        r#"
import gzip, hashlib, json, tarfile
out = {{}}
with {open} as t:
    for m in t:
        if m.isdir():
            v = ["dir", "%04o" % (m.mode & 0o7777), m.uid, m.gid, ""]
        elif m.issym():
            v = ["symlink", "0777", m.uid, m.gid, m.linkname]
        else:
            data = t.extractfile(m).read()
            v = ["file", "%04o" % (m.mode & 0o7777), m.uid, m.gid, hashlib.sha256(data).hexdigest()]
        out[m.name.rstrip("/")] = v
print(json.dumps(out))
"#
    );
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON from python");
    v.as_object()
        .expect("an object")
        .iter()
        .map(|(k, v)| {
            let s = |i: usize| v[i].as_str().unwrap_or_default().to_string();
            let n = |i: usize| v[i].as_u64().unwrap_or(u64::MAX) as u32;
            (k.clone(), (s(0), s(1), n(2), n(3), s(4)))
        })
        .collect()
}

/// The member names `args` (a `tar -tzf` of GNU tar or busybox) prints, trailing `/` off.
fn names(args: &[&str], archive: &Path) -> BTreeSet<String> {
    let mut all: Vec<&str> = args.to_vec();
    let archive = archive.to_str().expect("UTF-8 path");
    all.push(archive);
    let out = must(&all);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim_end_matches('/').to_string())
        .collect()
}

#[test]
fn multi_member_archives_read_as_one_stream_everywhere() {
    let site = site();
    let built = site.ovl(&["build", "--all", "--json"]).ok().json();
    assert_eq!(built["counts"]["created"], 3, "{built}");
    let mut all_members = Vec::new();
    for mac in ALL {
        let path = site.archive(mac);
        let gz = std::fs::read(&path).unwrap();
        let m = members(&gz);
        assert!(m.len() >= 4, "{mac}: {} gzip members", m.len());
        all_members.push(m);
        let want = listed(&show(&site, mac));
        let want_names: BTreeSet<String> = want.keys().cloned().collect();
        for stream in [false, true] {
            let got = python_tree(&path, stream);
            assert_eq!(got, want, "{mac}: Python (stream {stream}) vs show");
        }
        assert_eq!(names(&["tar", "-tzf"], &path), want_names, "{mac}: GNU tar");
        let busybox = names(&["busybox", "tar", "-tzf"], &path);
        assert_eq!(busybox, want_names, "{mac}: busybox tar");
    }
    // The devices share members byte for byte (compressed once), each holding more than a
    // piece's minimum: the plain device's pieces reappear in the two others, but for the
    // pieces their own entries land in.
    let [plain, own, captured] = &all_members[..] else {
        unreachable!()
    };
    for other in [own, captured] {
        let shared: Vec<u64> = plain
            .iter()
            .filter(|m| m.1 >= 16 * 1024 && other.iter().any(|o| o.0 == m.0))
            .map(|m| m.1)
            .collect();
        assert!(!shared.is_empty(), "no member in common");
        let held: u64 = other.iter().map(|m| m.1).sum();
        assert!(
            shared.iter().sum::<u64>() * 2 > held,
            "shared {shared:?} of {held} bytes"
        );
    }
    // The own device's a30.conf is its own; the captured device's a10.conf is the capture's.
    assert_eq!(
        site.archive_member(OWN, "etc/app/a30.conf"),
        "the device's own a30\n"
    );
    assert_eq!(
        site.archive_member(CAPTURED, "etc/app/a10.conf"),
        "changed on the device\n"
    );
    // Read back by ovl: built, nothing to diff, nothing rewritten.
    let list = site.ovl(&["list", "--json"]).ok().json();
    for d in list["devices"].as_array().unwrap() {
        assert_eq!(d["state"], "built", "{d}");
    }
    let diff = site.ovl(&["diff", "--all", "--json"]).ok().json();
    assert_eq!(diff["counts"]["unchanged"], 3, "{diff}");
    let before = site.snapshot();
    let again = site.ovl(&["build", "--all", "--json"]).ok().json();
    assert_eq!(again["counts"]["unchanged"], 3, "{again}");
    assert_eq!(before, site.snapshot());
    // Byte for byte the same built alone: the cuts depend on the device only.
    for mac in ALL {
        std::fs::remove_file(site.archive(mac)).unwrap();
        site.ovl(&["build", "--mac", mac]).ok();
    }
    let alone: Vec<_> = site
        .snapshot()
        .into_iter()
        .map(|(p, b, _)| (p, b))
        .collect();
    let fleet: Vec<_> = before.into_iter().map(|(p, b, _)| (p, b)).collect();
    assert_eq!(alone, fleet);
}

#[test]
fn multi_member_archives_are_byte_identical_to_the_recorded_ones() {
    let site = site();
    site.ovl(&["build", "--all"]).ok();
    let got: Vec<String> = ALL
        .iter()
        .map(|mac| {
            format!(
                "{mac} {}",
                sha256(&std::fs::read(site.archive(mac)).unwrap())
            )
        })
        .collect();
    assert_eq!(got, RECORDED, "archive bytes changed:\n{}", got.join("\n"));
}

/// The digests of the three archives, recorded when multi-member archives came (checked: each
/// extracts to what `ovl show` lists, see the tests above).
const RECORDED: [&str; 3] = [
    "52:54:00:00:00:01 d031bd4c42182dd68a67b8509c7616f8c1a47c785e45d9fa35337a343ef41c09",
    "52:54:00:00:00:02 174322e2c71d159e3ee9c767fdb5f5d58fcb25b36b6bb95ce2018085ed4a91f1",
    "52:54:00:00:00:03 b2da1405bf732751578b6c2726f1100c657c1c0d71a880316d1a6c00ef939f77",
];

/// Extracts `archive` into a fresh folder with `args` (the archive's path and `-C DIR` added
/// by the caller's closure) and returns the tree.
fn host_extract(archive: &Path, run: impl Fn(&str, &str)) -> Tree {
    let out = tempfile::tempdir().unwrap();
    run(
        archive.to_str().expect("UTF-8 path"),
        out.path().to_str().expect("UTF-8 path"),
    );
    extracted(out.path())
}

#[test]
#[ignore = "needs root: Alpine's minirootfs in a chroot, owners restored only as root"]
fn multi_member_archives_extract_alike_with_alpine_busybox_gnu_tar_and_python() {
    require_root("extracting with owners, in a chroot of Alpine's minirootfs");
    let site = site();
    site.ovl(&["build", "--all"]).ok();
    let device = Device::new();
    for mac in ALL {
        let want = listed(&show(&site, mac));
        let archive = site.archive(mac);
        // Alpine's own busybox, as its initramfs runs it (`tar -C DIR -zxvf`).
        let inside = "/tmp/ovl-members.tar.gz";
        std::fs::copy(&archive, device.path(inside)).unwrap();
        device.must_sh(&format!(
            "rm -rf /x && mkdir /x && tar -C /x -zxvf {inside} && rm -f {inside}"
        ));
        assert_eq!(extracted(&device.path("x")), want, "{mac}: Alpine busybox");
        let gnu = host_extract(&archive, |a, d| {
            must(&["tar", "--numeric-owner", "-xzf", a, "-C", d]);
        });
        assert_eq!(gnu, want, "{mac}: GNU tar");
        let python = host_extract(&archive, |a, d| {
            must(&[
                "python3",
                "-c",
                "import gzip, sys, tarfile\n\
                 with tarfile.open(sys.argv[1], 'r:gz') as t:\n    t.extractall(sys.argv[2], numeric_owner=True)",
                a,
                d,
            ]);
        });
        assert_eq!(python, want, "{mac}: Python tarfile");
    }
}

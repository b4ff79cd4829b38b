//! Alpine's own parts and an Alpine device made from them.
//!
//! The parts (Alpine 3.20.3's minirootfs, mkinitfs's `initramfs-init.in`, alpine-conf's `lbu`)
//! live outside the repository: in the folder named by `OVL_ALPINE_DIR`, else in
//! `../shared/alpine` beside the repository. Every file is checked against the sha256 pinned
//! here before it is used, so a test never runs on something else by accident.
//!
//! A [`Device`] is the minirootfs unpacked into a temporary folder with the real `lbu`
//! installed: archives are applied in it by Alpine's busybox `tar` and saved by `lbu commit`,
//! each in a `chroot` with its own UTS namespace (the hostname a device would have) and its own
//! mount namespace (host folders shared into it vanish with the command). Needs root.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;

use super::proc::{bounded, must, require_root, sha256_file};

/// The environment variable naming the folder with Alpine's parts.
pub const DIR_VAR: &str = "OVL_ALPINE_DIR";

/// Alpine 3.20.3's official minirootfs (Alpine's busybox, apk-tools 2.14, musl).
pub const MINIROOTFS: &str = "alpine-minirootfs-3.20.3-x86_64.tar.gz";
/// mkinitfs's `initramfs-init.in`: the `/init` of Alpine's initramfs, `@VERSION@` unset.
pub const INITRAMFS_INIT: &str = "initramfs-init.in";
/// alpine-conf 3.22.0's `lbu` (built from `lbu.in`).
pub const LBU: &str = "lbu";
/// alpine-conf's `libalpine.sh`, which `lbu` sources from `/usr/lib`.
pub const LIBALPINE: &str = "libalpine.sh";
/// alpine-conf's default `/etc/lbu/lbu.conf`.
pub const LBU_CONF: &str = "lbu.conf";

/// The sha256 of every part, as published in the folder's `SHA256SUMS`.
const PINNED: &[(&str, &str)] = &[
    (
        MINIROOTFS,
        "d4e6fd67dcf75e40c451560ac7265166c2b72a0f38ddc9aae756a7de3d1efa0c",
    ),
    (
        INITRAMFS_INIT,
        "1458abc64ff2ae1f99df2d4a046803192c271700e6e600e994ed1ab6c3535ae8",
    ),
    (
        LBU,
        "5024b4372eca2da3be212d1709d17cacf27cdc92e3819991711ac19e291999b1",
    ),
    (
        LBU_CONF,
        "9d5ea5a00a91c676cce9c10861ebe467dda1eb35354911fa0daee60cd4e761cd",
    ),
    (
        LIBALPINE,
        "7232977f556e7a525209a8c09d79c4f718b78cf7e159de479ba8c87a54dcf6c3",
    ),
];

/// The folder with Alpine's parts: `OVL_ALPINE_DIR`, else `../shared/alpine` beside the
/// repository.
pub fn dir() -> PathBuf {
    match std::env::var_os(DIR_VAR) {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/alpine"),
    }
}

/// The path of one of Alpine's parts (a name from this module), its checksum verified once
/// per test run; fails the test when the file is missing or differs.
pub fn part(name: &str) -> PathBuf {
    static VERIFIED: OnceLock<PathBuf> = OnceLock::new();
    let dir = VERIFIED.get_or_init(|| {
        let dir = dir();
        for (file, want) in PINNED {
            let path = dir.join(file);
            assert!(
                path.is_file(),
                "{} is missing: Alpine's parts are taken from ${DIR_VAR} or ../shared/alpine \
                 beside the repository (see README, \"Boot chain test\")",
                path.display()
            );
            let got = sha256_file(&path);
            assert_eq!(
                &got,
                want,
                "{}: sha256 differs from the pinned Alpine part",
                path.display()
            );
        }
        dir
    });
    assert!(
        PINNED.iter().any(|(f, _)| *f == name),
        "{name} is not one of Alpine's pinned parts"
    );
    dir.join(name)
}

/// Unpacks the minirootfs into `dest` (created), owners and modes kept: needs root.
pub fn unpack_minirootfs(dest: &Path) {
    require_root("unpacking Alpine's minirootfs with its owners");
    fs::create_dir_all(dest).expect("create the root folder");
    let archive = part(MINIROOTFS);
    must(&[
        "tar",
        "--same-owner",
        "-xzf",
        archive.to_str().expect("UTF-8 path"),
        "-C",
        dest.to_str().expect("UTF-8 path"),
    ]);
}

/// Alpine's own user and group ids (the minirootfs's `/etc/passwd` and `/etc/group`), as
/// busybox resolves owner names on a device before an apkovl replaces those files.
#[derive(Debug, Clone)]
pub struct Ids {
    /// User name → uid.
    pub users: BTreeMap<String, u32>,
    /// Group name → gid.
    pub groups: BTreeMap<String, u32>,
}

impl Ids {
    /// The ids of the unpacked root at `root`.
    pub fn of_root(root: &Path) -> Ids {
        let read = |rel: &str| {
            fs::read_to_string(root.join(rel))
                .unwrap_or_else(|e| panic!("read {rel} of {}: {e}", root.display()))
        };
        Ids::parse(&read("etc/passwd"), &read("etc/group"))
    }

    /// The ids of the minirootfs itself (read from the archive, no root needed).
    pub fn of_minirootfs() -> Ids {
        let file = fs::File::open(part(MINIROOTFS)).expect("open the minirootfs");
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
        let (mut passwd, mut group) = (String::new(), String::new());
        for entry in archive.entries().expect("read the minirootfs") {
            let mut entry = entry.expect("a minirootfs member");
            let path = entry.path().expect("member name").into_owned();
            let into = match path.to_str() {
                Some("./etc/passwd" | "etc/passwd") => &mut passwd,
                Some("./etc/group" | "etc/group") => &mut group,
                _ => continue,
            };
            std::io::Read::read_to_string(&mut entry, into).expect("read a member");
        }
        assert!(
            !passwd.is_empty() && !group.is_empty(),
            "passwd and group in the minirootfs"
        );
        Ids::parse(&passwd, &group)
    }

    /// The ids of `passwd` and `group` texts (name:x:id:...).
    pub fn parse(passwd: &str, group: &str) -> Ids {
        let table = |text: &str| -> BTreeMap<String, u32> {
            text.lines()
                .filter_map(|l| {
                    let f: Vec<&str> = l.split(':').collect();
                    Some((f.first()?.to_string(), f.get(2)?.parse().ok()?))
                })
                .collect()
        };
        Ids {
            users: table(passwd),
            groups: table(group),
        }
    }
}

/// An Alpine device: the minirootfs with the real `lbu`, in a temporary folder (removed on
/// drop). Commands run in it with `chroot`, with the device's hostname (`/etc/hostname`).
pub struct Device {
    dir: tempfile::TempDir,
    root: PathBuf,
    shares: Vec<(PathBuf, String)>,
}

impl Device {
    /// A fresh device (needs root): the minirootfs, `lbu` in `/sbin`, `libalpine.sh` in
    /// `/usr/lib` and alpine-conf's default `/etc/lbu/lbu.conf`.
    pub fn new() -> Device {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        unpack_minirootfs(&root);
        let install = |name: &str, rel: &str, mode: &str| {
            let to = root.join(rel);
            must(&[
                "install",
                "-D",
                "-m",
                mode,
                part(name).to_str().expect("UTF-8 path"),
                to.to_str().expect("UTF-8 path"),
            ]);
        };
        install(LBU, "sbin/lbu", "0755");
        install(LIBALPINE, "usr/lib/libalpine.sh", "0644");
        install(LBU_CONF, "etc/lbu/lbu.conf", "0644");
        Device {
            dir,
            root,
            shares: Vec::new(),
        }
    }

    /// The device's root folder on the host.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A path inside the device (`rel` without a leading `/`).
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel.trim_start_matches('/'))
    }

    /// Scratch space on the host outside the device.
    pub fn scratch(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Alpine's ids as the device has them now (its `/etc/passwd` and `/etc/group`).
    pub fn ids(&self) -> Ids {
        Ids::of_root(&self.root)
    }

    /// Shares the host folder `host` at `at` inside the device (an NFS export such as
    /// `/media/pxe`) for every later command; the bind mount lives only in each command's own
    /// mount namespace, so nothing stays mounted on the host.
    pub fn share(&mut self, host: &Path, at: &str) -> &mut Self {
        assert!(
            at.starts_with('/'),
            "absolute mount point in the device: {at}"
        );
        fs::create_dir_all(self.path(at)).expect("mount point in the device");
        self.shares.push((host.to_path_buf(), at.to_string()));
        self
    }

    /// Runs `script` with the device's `/bin/sh` in a chroot, its hostname taken from
    /// `/etc/hostname`; bounded by 60 s. Returns the output whatever the status.
    pub fn sh(&self, script: &str) -> Output {
        let mut outer = String::from("set -e\n");
        for (host, at) in &self.shares {
            outer.push_str(&format!(
                "mount --bind {} {}\n",
                quote(&host.to_string_lossy()),
                quote(&self.path(at).to_string_lossy())
            ));
        }
        let inner = format!("[ -s /etc/hostname ] && hostname -F /etc/hostname\n{script}");
        outer.push_str(&format!(
            "exec chroot {} /bin/sh -c {}\n",
            quote(&self.root.to_string_lossy()),
            quote(&inner)
        ));
        bounded(60, "unshare")
            .args(["--uts", "--mount", "--propagation", "private", "sh", "-c"])
            .arg(outer)
            .output()
            .expect("unshare runs")
    }

    /// Like [`Device::sh`], failing the test unless the script succeeds; its stdout.
    pub fn must_sh(&self, script: &str) -> String {
        let out = self.sh(script);
        assert!(
            out.status.success(),
            "on the device: {script}\n{}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Applies an apkovl the way Alpine's initramfs does, `tar -C / -zxvf` with the device's
    /// busybox (owner names resolved with the device's `/etc/passwd` and `/etc/group` at that
    /// moment); returns tar's list of members, the list the init hands to
    /// `apk add --overlay-from-stdin`.
    pub fn apply(&self, archive: &Path) -> Vec<String> {
        let inside = "/tmp/ovl-apply.tar.gz";
        fs::copy(archive, self.path(inside))
            .unwrap_or_else(|e| panic!("copy {} into the device: {e}", archive.display()));
        let list = self.must_sh(&format!(
            "rc=0\ntar -C / -zxvf {inside} || rc=$?\nrm -f {inside}\nexit $rc"
        ));
        list.lines().map(str::to_string).collect()
    }

    /// Runs the real `lbu commit` in the device; `LBU_BACKUPDIR` or `LBU_MEDIA` come from its
    /// `/etc/lbu/lbu.conf` (an archive's, with `[boot] nfs`) or from `env`, shell assignments
    /// put before the command (`"LBU_BACKUPDIR=/backup"`, or `""`). Its output, whatever the
    /// status.
    pub fn lbu_commit(&self, env: &str) -> Output {
        self.sh(&format!("{env} lbu commit"))
    }
}

/// `s` quoted for `sh`.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

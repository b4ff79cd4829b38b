//! The test initramfs, made of Alpine's own parts (see `harness::alpine`):
//!
//! - Alpine 3.20.3's minirootfs as it is: its busybox (`sh`, `udhcpc` with
//!   `/usr/share/udhcpc/default.script`, `wget`, `tar`, `modprobe`, `depmod`), apk-tools 2.14,
//!   musl, `/etc/passwd` and `/etc/group`;
//! - mkinitfs's `initramfs-init.in` as `/init`, only `@VERSION@` substituted;
//! - the kernel's modules under `/lib/modules/RELEASE/` with the `modules.*` files that
//!   Alpine's busybox `depmod` writes (run in a chroot of this tree);
//! - two stand-ins, each saying so in its first lines: `/sbin/nlplug-findfs`
//!   (`standin/nlplug-findfs`) and `/sbin/apk` (`standin/apk`, Alpine's apk moved to
//!   `/sbin/apk.alpine`).
//!
//! Written as a gzipped `newc` cpio (owners and modes as unpacked, times 0), cached in
//! `target/e2e-cache/` by the digest of its inputs.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

use crate::harness::alpine::{self, INITRAMFS_INIT, MINIROOTFS};
use crate::harness::proc::must;
use crate::kernel::{Kernel, cache_dir};

/// What `@VERSION@` of `initramfs-init.in` becomes (the init prints `Alpine Init VERSION`).
const INIT_VERSION: &str = "ovl-test";
/// STAND-IN for `nlplug-findfs` (see the file).
const NLPLUG_FINDFS: &str = include_str!("standin/nlplug-findfs");
/// STAND-IN for `apk` (see the file).
const APK: &str = include_str!("standin/apk");
/// Changes whenever the layout made by [`build_tree`] changes, so the cache key does too.
const LAYOUT: &str = "alpine-initramfs-1";

/// The kernel and the test initramfs, prepared once per test run.
pub struct BootFiles {
    /// The kernel, `boot/vmlinuz-*` of the package.
    pub vmlinuz: PathBuf,
    /// The test initramfs (gzipped `newc` cpio) in the cache.
    pub initramfs: PathBuf,
}

/// The kernel and initramfs, fetched and built on the first call (and cached on disk).
pub fn boot_files() -> &'static BootFiles {
    static FILES: OnceLock<BootFiles> = OnceLock::new();
    FILES.get_or_init(|| {
        let kernel = Kernel::get();
        let modules = kernel.modules();
        let init = fs::read_to_string(alpine::part(INITRAMFS_INIT)).expect("read the init");
        let init = init.replace("@VERSION@", INIT_VERSION);
        let mut key = Sha256::new();
        key.update(LAYOUT);
        key.update(fs::read(alpine::part(MINIROOTFS)).expect("read the minirootfs"));
        key.update(&init);
        key.update(NLPLUG_FINDFS);
        key.update(APK);
        key.update(&kernel.release);
        for (rel, bytes) in &modules {
            key.update(rel);
            key.update(bytes);
        }
        let key = hex::encode(&key.finalize()[..8]);
        let initramfs = cache_dir().join(format!("initramfs-{key}.gz"));
        if !initramfs.exists() {
            let work = tempfile::tempdir().expect("tempdir");
            let root = work.path().join("root");
            build_tree(&root, &kernel, &modules, &init);
            publish(&initramfs, &cpio_of(&root));
        }
        BootFiles {
            vmlinuz: kernel.vmlinuz,
            initramfs,
        }
    })
}

/// Writes the initramfs tree at `root` (needs root: the minirootfs keeps its owners, and
/// `depmod` runs in a chroot).
fn build_tree(root: &Path, kernel: &Kernel, modules: &[(String, Vec<u8>)], init: &str) {
    alpine::unpack_minirootfs(root);
    let write = |rel: &str, bytes: &[u8], mode: u32| {
        let path = root.join(rel);
        fs::create_dir_all(path.parent().expect("a parent")).expect("create folders");
        fs::write(&path, bytes).unwrap_or_else(|e| panic!("write {rel}: {e}"));
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
    };
    fs::rename(root.join("sbin/apk"), root.join("sbin/apk.alpine")).expect("move Alpine's apk");
    write("sbin/apk", APK.as_bytes(), 0o755);
    write("sbin/nlplug-findfs", NLPLUG_FINDFS.as_bytes(), 0o755);
    write("init", init.as_bytes(), 0o755);
    let mods = format!("lib/modules/{}", kernel.release);
    for (rel, bytes) in modules {
        write(&format!("{mods}/{rel}"), bytes, 0o644);
    }
    for f in [
        "modules.builtin",
        "modules.builtin.modinfo",
        "modules.order",
    ] {
        let from = kernel.modules_dir.join(f);
        if from.exists() {
            write(
                &format!("{mods}/{f}"),
                &fs::read(&from).expect("read"),
                0o644,
            );
        }
    }
    // Alpine's busybox depmod: modules.dep and modules.alias as Alpine's modprobe reads them.
    must(&[
        "chroot",
        root.to_str().expect("UTF-8 path"),
        "/sbin/depmod",
        &kernel.release,
    ]);
}

/// One `newc` member.
struct Member {
    name: String,
    /// `st_mode`: file type and permission bits.
    mode: u32,
    uid: u32,
    gid: u32,
    data: Vec<u8>,
    /// Major and minor device numbers of a device node.
    rdev: (u32, u32),
}

/// Every entry under `root` (sorted, parents first), then `/dev/console` and `/dev/null`,
/// which the kernel needs before the init mounts devtmpfs; gzipped.
fn cpio_of(root: &Path) -> Vec<u8> {
    let mut members = Vec::new();
    for e in walkdir::WalkDir::new(root).min_depth(1).sort_by_file_name() {
        let e = e.expect("walk the initramfs tree");
        let name = e
            .path()
            .strip_prefix(root)
            .expect("under the root")
            .to_string_lossy()
            .into_owned();
        let meta = e.path().symlink_metadata().expect("lstat");
        let ft = meta.file_type();
        let data = if ft.is_symlink() {
            let target = fs::read_link(e.path()).expect("readlink");
            target.to_string_lossy().into_owned().into_bytes()
        } else if ft.is_file() {
            fs::read(e.path()).expect("read")
        } else {
            Vec::new()
        };
        members.push(Member {
            name,
            mode: meta.mode(),
            uid: meta.uid(),
            gid: meta.gid(),
            data,
            rdev: (0, 0),
        });
    }
    for (name, mode, rdev) in [("dev/console", 0o600, (5, 1)), ("dev/null", 0o666, (1, 3))] {
        members.push(Member {
            name: name.to_string(),
            mode: 0o020_000 | mode,
            uid: 0,
            gid: 0,
            data: Vec::new(),
            rdev,
        });
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&newc(&members)).expect("gzip");
    gz.finish().expect("gzip")
}

/// The `newc` archive of `members` (times 0, one link each), with its trailer.
fn newc(members: &[Member]) -> Vec<u8> {
    fn pad(out: &mut Vec<u8>) {
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
    }
    let mut out = Vec::new();
    let trailer = Member {
        name: "TRAILER!!!".to_string(),
        mode: 0,
        uid: 0,
        gid: 0,
        data: Vec::new(),
        rdev: (0, 0),
    };
    for (i, m) in members.iter().chain([&trailer]).enumerate() {
        let last = i == members.len();
        let fields = [
            if last {
                0
            } else {
                u32::try_from(i + 1).expect("few members")
            },
            m.mode,
            m.uid,
            m.gid,
            1,
            0,
            u32::try_from(m.data.len()).expect("small file"),
            0,
            0,
            m.rdev.0,
            m.rdev.1,
            u32::try_from(m.name.len() + 1).expect("short name"),
            0,
        ];
        out.extend_from_slice(b"070701");
        for f in fields {
            out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        out.extend_from_slice(m.name.as_bytes());
        out.push(0);
        pad(&mut out);
        out.extend_from_slice(&m.data);
        pad(&mut out);
    }
    out
}

/// Writes `bytes` to `path` by rename, and removes older initramfs images from the cache.
fn publish(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    fs::write(&tmp, bytes).expect("write initramfs");
    fs::rename(&tmp, path).expect("publish initramfs");
    for e in fs::read_dir(cache_dir()).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("initramfs-") && e.path() != path {
            let _ = fs::remove_file(e.path());
        }
    }
}

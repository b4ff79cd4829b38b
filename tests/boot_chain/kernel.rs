//! The test kernel and initramfs. The kernel is Debian's newest
//! `linux-image-6.1.0-*-amd64` (`apt-get download`, `dpkg -x`), cached in
//! `target/e2e-cache/` by package name. The initramfs is made here: busybox-static and an
//! `/init` doing what Alpine's initramfs does with `apkovl=` (see [`INIT`]), plus the NIC
//! drivers and their dependencies (read from each module's `depends=`), as a gzipped `newc`
//! cpio, cached by content.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;

use sha2::{Digest, Sha256};

use crate::harness::proc::{bounded, must, run};

fn cache_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/e2e-cache");
    fs::create_dir_all(&dir).expect("create target/e2e-cache");
    dir
}

/// ABI number of `linux-image-6.1.0-ABI-amd64`.
fn abi(pkg: &str) -> Option<u32> {
    pkg.strip_prefix("linux-image-6.1.0-")?
        .strip_suffix("-amd64")?
        .parse()
        .ok()
}

/// The newest `linux-image-6.1.0-*-amd64` apt knows, else the newest already cached.
fn kernel_package() -> String {
    let search = || {
        let out = run(
            60,
            &[
                "apt-cache",
                "search",
                "--names-only",
                "^linux-image-6\\.1\\.0-[0-9]+-amd64$",
            ],
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|p| abi(p).is_some())
            .max_by_key(|p| abi(p))
            .map(str::to_string)
    };
    let cached = fs::read_dir(cache_dir())
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join(".complete").exists())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|p| abi(p).is_some())
        .max_by_key(|p| abi(p));
    // Nothing cached and apt knows no kernel yet (a fresh machine): read the lists once.
    let from_apt = search().or_else(|| {
        if cached.is_some() {
            return None;
        }
        run(300, &["apt-get", "update", "-qq"]);
        search()
    });
    from_apt
        .or(cached)
        .expect("no linux-image-6.1.0-*-amd64 in apt's lists (run apt-get update) and none cached")
}

/// The unpacked kernel package (`boot/vmlinuz-*`, `lib/modules/*`), downloaded if missing.
fn kernel_tree() -> PathBuf {
    let pkg = kernel_package();
    let dir = cache_dir().join(&pkg);
    if dir.join(".complete").exists() {
        return dir;
    }
    let started = Instant::now();
    let work = cache_dir().join(format!(".download-{}", std::process::id()));
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).expect("download folder");
    let out = bounded(900, "apt-get")
        .args(["download", &pkg])
        .current_dir(&work)
        .output()
        .expect("apt-get download");
    assert!(
        out.status.success(),
        "apt-get download {pkg}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deb = fs::read_dir(&work)
        .expect("read download folder")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .expect("the downloaded .deb");
    let tree = work.join("tree");
    must(&["dpkg", "-x", deb.to_str().unwrap(), tree.to_str().unwrap()]);
    fs::write(tree.join(".complete"), &pkg).expect("mark complete");
    let _ = fs::remove_dir_all(&dir);
    fs::rename(&tree, &dir).expect("move the kernel into the cache");
    let _ = fs::remove_dir_all(&work);
    eprintln!(
        "fetched {pkg} in {:.1}s into {}",
        started.elapsed().as_secs_f64(),
        dir.display()
    );
    dir
}

/// The modules the VM needs: the NIC drivers (and the virtio PCI bus driver).
const MODULES: &[&str] = &["e1000", "virtio_pci", "virtio_net"];

/// A module's contents, decompressed (busybox insmod reads plain ELF only).
fn module_bytes(path: &Path) -> Vec<u8> {
    let name = path.to_string_lossy();
    let tool = if name.ends_with(".xz") {
        Some("xz")
    } else if name.ends_with(".zst") {
        Some("zstd")
    } else {
        None
    };
    match tool {
        None => fs::read(path).expect("read module"),
        Some(t) => {
            let out = run(60, &[t, "-dc", &name]);
            assert!(out.status.success(), "{t} -dc {name}");
            out.stdout
        }
    }
}

/// `depends=` of a module's `.modinfo`.
fn depends(ko: &[u8]) -> Vec<String> {
    ko.split(|b| *b == 0)
        .find_map(|s| s.strip_prefix(b"depends="))
        .map(|d| {
            String::from_utf8_lossy(d)
                .split(',')
                .filter(|s| !s.is_empty())
                .map(|s| s.replace('-', "_"))
                .collect()
        })
        .unwrap_or_default()
}

/// The modules in load order (dependencies first), as (name, ELF bytes).
fn modules(tree: &Path) -> Vec<(String, Vec<u8>)> {
    let mut index = BTreeMap::new();
    for e in walkdir::WalkDir::new(tree.join("lib/modules"))
        .into_iter()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(stem) = [".ko", ".ko.xz", ".ko.zst"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
        {
            index.insert(stem.replace('-', "_"), e.path().to_path_buf());
        }
    }
    fn visit(
        name: &str,
        index: &BTreeMap<String, PathBuf>,
        out: &mut Vec<(String, Vec<u8>)>,
        depth: usize,
    ) {
        assert!(depth < 20, "module dependency loop at {name}");
        if out.iter().any(|(n, _)| n == name) {
            return;
        }
        let path = index
            .get(name)
            .unwrap_or_else(|| panic!("module {name} is not in the kernel package"));
        let bytes = module_bytes(path);
        for dep in depends(&bytes) {
            visit(&dep, index, out, depth + 1);
        }
        if !out.iter().any(|(n, _)| n == name) {
            out.push((name.to_string(), bytes));
        }
    }
    let mut out = Vec::new();
    for m in MODULES {
        visit(m, &index, &mut out, 0);
    }
    out
}

/// `/init` of the test initramfs: what Alpine's `initramfs-init` does with `apkovl=` (DHCP,
/// busybox `wget`, busybox `tar -zxvf` into `/newroot`), then the extracted tree on the
/// console between markers, one `OVL-E2E-ENTRY|type|mode|uid|gid|sha256-or-target|path`
/// line per entry, and power off.
const INIT: &str = r#"#!/bin/sh
/bin/busybox mkdir -p /sbin /usr/bin /usr/sbin /proc /sys /dev /tmp /newroot
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
echo 1 > /proc/sys/kernel/printk
echo "OVL-E2E: init"
echo "OVL-E2E: cmdline $(cat /proc/cmdline)"
for m in $(cat /lib/modules/order); do
  insmod "/lib/modules/$m.ko" || echo "OVL-E2E: insmod $m failed"
done
ip link set lo up
n=0
while [ ! -e /sys/class/net/eth0 ] && [ $n -lt 100 ]; do sleep 0.1; n=$((n+1)); done
ip link set eth0 up
if ! udhcpc -i eth0 -f -q -n -t 10 -T 2 -s /udhcpc.script; then
  echo "OVL-E2E: no DHCP lease"
  echo "OVL-E2E: done"
  poweroff -f
fi
url=""
for a in $(cat /proc/cmdline); do
  case "$a" in apkovl=*) url="${a#apkovl=}" ;; esac
done
echo "OVL-E2E: apkovl $url"
# busybox 1.35's wget -T segfaults: bound it with timeout instead.
timeout 60 wget -q -O /tmp/ovl.tar.gz "$url" 2>/tmp/wget.err
rc=$?
if grep -q ' 404' /tmp/wget.err; then
  echo "OVL-E2E: apkovl 404"
elif [ $rc -ne 0 ]; then
  echo "OVL-E2E: apkovl error rc=$rc $(cat /tmp/wget.err)"
else
  if tar -C /newroot -zxvf /tmp/ovl.tar.gz >/tmp/tar.out 2>&1; then
    echo "OVL-E2E: extracted $(wc -l < /tmp/tar.out) entries"
  else
    echo "OVL-E2E: tar failed: $(tail -n 3 /tmp/tar.out)"
  fi
  echo "OVL-E2E: listing begin"
  cd /newroot
  find . -mindepth 1 | sort | while read -r p; do
    if [ -L "$p" ]; then t=symlink; x="$(readlink "$p")"
    elif [ -d "$p" ]; then t=dir; x=-
    else t=file; x="$(sha256sum "$p" | cut -d' ' -f1)"; fi
    echo "OVL-E2E-ENTRY|$t|$(stat -c '%a|%u|%g' "$p")|$x|${p#./}"
  done
  cd /
  echo "OVL-E2E: listing end"
fi
echo "OVL-E2E: done"
sync
poweroff -f
"#;

/// udhcpc's script: configure the address, report it.
const UDHCPC_SCRIPT: &str = r#"#!/bin/sh
case "$1" in
  deconfig) ip addr flush dev "$interface"; ip link set "$interface" up ;;
  bound|renew)
    ip addr add "$ip/${mask:-24}" dev "$interface"
    echo "OVL-E2E: lease $ip from $serverid"
    ;;
esac
exit 0
"#;

/// One `newc` cpio member.
enum Member<'a> {
    Dir(&'a str),
    File(&'a str, u32, &'a [u8]),
    Symlink(&'a str, &'a str),
    CharDev(&'a str, u32, u32),
}

fn cpio(members: &[Member]) -> Vec<u8> {
    fn pad(out: &mut Vec<u8>) {
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
    }
    let mut out = Vec::new();
    let mut put = |ino: u32, name: &str, mode: u32, data: &[u8], rdev: (u32, u32)| {
        let fields = [
            ino,
            mode,
            0,
            0,
            1,
            0,
            u32::try_from(data.len()).expect("small file"),
            0,
            0,
            rdev.0,
            rdev.1,
            u32::try_from(name.len() + 1).expect("short name"),
            0,
        ];
        out.extend_from_slice(b"070701");
        for f in fields {
            out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        pad(&mut out);
        out.extend_from_slice(data);
        pad(&mut out);
    };
    for (i, m) in members.iter().enumerate() {
        let ino = u32::try_from(i + 1).expect("few members");
        match m {
            Member::Dir(n) => put(ino, n, 0o040_755, &[], (0, 0)),
            Member::File(n, mode, data) => put(ino, n, 0o100_000 | mode, data, (0, 0)),
            Member::Symlink(n, t) => put(ino, n, 0o120_777, t.as_bytes(), (0, 0)),
            Member::CharDev(n, major, minor) => put(ino, n, 0o020_600, &[], (*major, *minor)),
        }
    }
    put(0, "TRAILER!!!", 0, &[], (0, 0));
    out
}

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
        let tree = kernel_tree();
        let vmlinuz = fs::read_dir(tree.join("boot"))
            .expect("boot/ of the kernel package")
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
            })
            .expect("boot/vmlinuz-*");
        let busybox = fs::read("/bin/busybox").expect("busybox-static at /bin/busybox");
        let mods = modules(&tree);
        let mut key = Sha256::new();
        key.update(INIT);
        key.update(UDHCPC_SCRIPT);
        key.update(&busybox);
        for (name, bytes) in &mods {
            key.update(name);
            key.update(bytes);
        }
        let key = hex::encode(&key.finalize()[..8]);
        let initramfs = cache_dir().join(format!("initramfs-{key}.gz"));
        if !initramfs.exists() {
            let order: String = mods.iter().map(|(n, _)| format!("{n}\n")).collect();
            let names: Vec<String> = mods
                .iter()
                .map(|(n, _)| format!("lib/modules/{n}.ko"))
                .collect();
            let mut members = vec![
                Member::Dir("bin"),
                Member::Dir("dev"),
                Member::CharDev("dev/console", 5, 1),
                Member::CharDev("dev/null", 1, 3),
                Member::Dir("proc"),
                Member::Dir("sys"),
                Member::Dir("tmp"),
                Member::Dir("newroot"),
                Member::Dir("lib"),
                Member::Dir("lib/modules"),
                Member::File("bin/busybox", 0o755, &busybox),
                Member::Symlink("bin/sh", "busybox"),
                Member::File("init", 0o755, INIT.as_bytes()),
                Member::File("udhcpc.script", 0o755, UDHCPC_SCRIPT.as_bytes()),
                Member::File("lib/modules/order", 0o644, order.as_bytes()),
            ];
            for ((_, bytes), name) in mods.iter().zip(&names) {
                members.push(Member::File(name, 0o644, bytes));
            }
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(&cpio(&members)).expect("gzip");
            let bytes = gz.finish().expect("gzip");
            let tmp = initramfs.with_extension(format!("tmp{}", std::process::id()));
            fs::write(&tmp, bytes).expect("write initramfs");
            fs::rename(&tmp, &initramfs).expect("publish initramfs");
            // Older initramfs images (another /init, another kernel) are not needed again.
            for e in fs::read_dir(cache_dir()).into_iter().flatten().flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with("initramfs-") && e.path() != initramfs {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        BootFiles { vmlinuz, initramfs }
    })
}

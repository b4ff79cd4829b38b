//! The whole boot chain in QEMU, served by the built `ovl` binary (SPEC §1, §6):
//!
//! firmware PXE ─DHCP→ boot file ─TFTP→ iPXE ─DHCP (user class iPXE)→ script URL
//! ─HTTP (or TFTP)→ `boot.ipxe` ─HTTP→ kernel + initramfs ─(in the VM) DHCP, busybox `wget`
//! of `apkovl=`, busybox `tar -zxvf`→ the extracted tree, printed on the serial console.
//!
//! The lab: one network namespace per test (`ovlboot-PID-N`, unique per run) holding a
//! bridge with the server's address (10.214.0.1/24, only inside the namespace) and a tap
//! port; `ovl serve --dhcp full --interface BRIDGE` runs on the bridge and QEMU (TCG, no KVM)
//! on the tap, both started with `ip netns exec`. Everything is removed in `Drop`, even when a
//! test panics. The VMs run one at a time (a lock): TCG on two cores is slow enough.
//!
//! The kernel is Debian's newest `linux-image-6.1.0-*-amd64` (`apt-get download`, `dpkg -x`),
//! cached in `target/e2e-cache/` by package name. The initramfs is made here: busybox-static
//! and an `/init` doing what Alpine's initramfs does with `apkovl=` (see [`INIT`]), plus the
//! NIC drivers and their dependencies (read from each module's `depends=`), as a gzipped
//! `newc` cpio, cached by content.
//!
//! Needs root and `/dev/net/tun` (else it prints `SKIPPED:` and passes); everything else
//! (`qemu-system-x86`, `ipxe-qemu`, `ipxe`, `ovmf`, `busybox-static`, apt with Debian's
//! mirror) is required.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

const OVL: &str = env!("CARGO_BIN_EXE_ovl");
const SERVER: &str = "10.214.0.1";
/// Inventory device booted with SeaBIOS + iPXE's e1000 ROM (profile XL, fixed address).
const BIOS_MAC: &str = "52:54:00:e2:e0:01";
/// Inventory device booted with OVMF's own PXE client on virtio-net (profile special).
const UEFI_MAC: &str = "52:54:00:e2:e0:02";
/// A MAC the inventory does not know.
const UNKNOWN_MAC: &str = "52:54:00:e2:e0:99";

static NEXT: AtomicUsize = AtomicUsize::new(0);
/// One VM at a time.
static VM: Mutex<()> = Mutex::new(());

fn can_run() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: the boot chain test needs root (ip netns, bridge, tap)");
        return false;
    }
    if !Path::new("/dev/net/tun").exists() {
        eprintln!("SKIPPED: /dev/net/tun is missing (QEMU's tap networking)");
        return false;
    }
    true
}

/// Runs a command bounded by `secs`.
fn run(secs: u32, args: &[&str]) -> Output {
    Command::new("timeout")
        .arg(secs.to_string())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("spawn {args:?}: {e}"))
}

fn must(args: &[&str]) -> Output {
    let out = run(60, args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

// ---------------------------------------------------------------------------------------
// Kernel and initramfs
// ---------------------------------------------------------------------------------------

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
    let out = Command::new("timeout")
        .args(["900", "apt-get", "download", &pkg])
        .current_dir(&work)
        .stdin(Stdio::null())
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
struct BootFiles {
    vmlinuz: PathBuf,
    initramfs: PathBuf,
}

fn boot_files() -> &'static BootFiles {
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

// ---------------------------------------------------------------------------------------
// The lab
// ---------------------------------------------------------------------------------------

/// A child process killed (by its pid) when dropped.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A namespace with a bridge (the server's address) and a tap port for QEMU.
struct Lab {
    ns: String,
    bridge: String,
    tap: String,
    dir: tempfile::TempDir,
    serve: Option<KillOnDrop>,
}

impl Lab {
    fn new() -> Lab {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let lab = Lab {
            ns: format!("ovlboot-{pid}-{n}"),
            bridge: format!("ob{}-{n}", pid % 1_000_000),
            tap: format!("ot{}-{n}", pid % 1_000_000),
            dir: tempfile::tempdir().expect("tempdir"),
            serve: None,
        };
        must(&["ip", "netns", "add", &lab.ns]);
        let ns = lab.ns.as_str();
        must(&["ip", "-n", ns, "link", "add", &lab.bridge, "type", "bridge"]);
        must(&[
            "ip",
            "-n",
            ns,
            "addr",
            "add",
            &format!("{SERVER}/24"),
            "dev",
            &lab.bridge,
        ]);
        must(&[
            "ip", "netns", "exec", ns, "ip", "tuntap", "add", &lab.tap, "mode", "tap",
        ]);
        must(&[
            "ip",
            "-n",
            ns,
            "link",
            "set",
            &lab.tap,
            "master",
            &lab.bridge,
        ]);
        for dev in [lab.bridge.as_str(), lab.tap.as_str(), "lo"] {
            must(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        lab
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A site from `ovl init` with the lab's addresses, the test kernel and initramfs as
    /// `vmlinuz-lts`/`initramfs-lts`, Debian's iPXE binaries, `extra` appended to
    /// `[serve.dhcp]`; built.
    fn site(&self, extra_dhcp: &str) -> PathBuf {
        let site = self.path("site");
        let out = Command::new(OVL)
            .arg("init")
            .arg(&site)
            .output()
            .expect("ovl init");
        assert!(out.status.success(), "{out:?}");
        fs::write(
            site.join("ovl.toml"),
            format!(
                "[boot]\nkernel_args = [\"console=ttyS0\", \"panic=-1\"]\n\
                 [serve]\nhttp = \"{SERVER}:80\"\ntftp = \"{SERVER}:69\"\n\
                 [serve.dhcp]\nrange = [\"10.214.0.100\", \"10.214.0.150\"]\n\
                 netmask = \"255.255.255.0\"\nlease_time = 600\n\
                 boot_files = {{ \"0\" = \"undionly.kpxe\", \"7\" = \"snponly.efi\" }}\n{extra_dhcp}"
            ),
        )
        .expect("ovl.toml");
        fs::write(
            site.join("devices.toml"),
            format!(
                "[[device]]\nmac = \"{BIOS_MAC}\"\nprofile = \"XL\"\nhostname = \"kiosk-bios\"\n\
                 ip = \"10.214.0.50\"\noverlays = [\"special/hall\"]\n\
                 [device.vars]\nscreen = \"portrait\"\n\n\
                 [[device]]\nmac = \"{UEFI_MAC}\"\nprofile = \"special\"\n"
            ),
        )
        .expect("devices.toml");
        let files = boot_files();
        fs::copy(&files.vmlinuz, site.join("vmlinuz-lts")).expect("kernel");
        fs::copy(&files.initramfs, site.join("initramfs-lts")).expect("initramfs");
        fs::copy("/usr/lib/ipxe/undionly.kpxe", site.join("undionly.kpxe"))
            .expect("undionly.kpxe (Debian ipxe)");
        fs::copy("/usr/lib/ipxe/snponly.efi", site.join("snponly.efi"))
            .expect("snponly.efi (Debian ipxe)");
        let out = Command::new(OVL)
            .arg("--site")
            .arg(&site)
            .args(["build", "--all"])
            .output()
            .expect("ovl build");
        assert!(out.status.success(), "{out:?}");
        site
    }

    /// Starts `ovl serve --dhcp full` on the bridge; returns its log file.
    fn serve(&mut self, site: &Path) -> PathBuf {
        let log = self.path("serve.log");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns, OVL, "--site"])
            .arg(site)
            .args(["serve", "--dhcp", "full", "--interface", &self.bridge])
            .args(["--http", &format!("{SERVER}:80")])
            .args(["--tftp", &format!("{SERVER}:69")])
            .args(["--log-format", "json"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).expect("serve.log"))
            .spawn()
            .expect("spawn ovl serve");
        self.serve = Some(KillOnDrop(child));
        wait_for(&log, "\"service\":\"dhcp\"", Duration::from_secs(20), None);
        log
    }

    /// Boots a VM until the initramfs says it is done; returns the serial console text.
    fn boot(&self, firmware: Firmware, mac: &str, budget: Duration) -> (String, Duration) {
        let serial = self.path(&format!("serial-{}.log", mac.replace(':', "")));
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns, "qemu-system-x86_64"])
            .args(["-nographic", "-monitor", "none", "-no-reboot", "-m", "256"])
            .arg("-serial")
            .arg(format!("file:{}", serial.display()))
            .arg("-netdev")
            .arg(format!(
                "tap,id=n0,ifname={},script=no,downscript=no",
                self.tap
            ));
        match firmware {
            Firmware::Bios => {
                cmd.args(["-boot", "n", "-device"]).arg(format!(
                    "e1000,netdev=n0,mac={mac},romfile=/usr/lib/ipxe/qemu/pxe-e1000.rom"
                ));
            }
            Firmware::Uefi => {
                let vars = self.path("OVMF_VARS.fd");
                fs::copy("/usr/share/OVMF/OVMF_VARS_4M.fd", &vars).expect("OVMF vars (ovmf)");
                cmd.args([
                    "-drive",
                    "if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd",
                ])
                .arg("-drive")
                .arg(format!("if=pflash,format=raw,file={}", vars.display()))
                .arg("-device")
                .arg(format!("virtio-net-pci,netdev=n0,mac={mac},romfile="));
            }
        }
        let started = Instant::now();
        let mut vm = KillOnDrop(
            cmd.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn qemu-system-x86_64 (qemu-system-x86)"),
        );
        let text = wait_for(&serial, "OVL-E2E: done", budget, Some(&mut vm));
        let took = started.elapsed();
        // `poweroff -f` ends QEMU (-no-reboot); give it a moment, then kill it anyway.
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && matches!(vm.0.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(100));
        }
        (text, took)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.serve = None;
        if std::thread::panicking() {
            let log = fs::read_to_string(self.path("serve.log")).unwrap_or_default();
            eprintln!("--- ovl serve's log ---\n{log}");
        }
        // Anything still running in the lab's namespace was started by this test.
        let out = run(20, &["ip", "netns", "pids", &self.ns]);
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<i32>() {
                // SAFETY: kill(2) of a process inside this test's own namespace.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        let _ = run(20, &["ip", "netns", "del", &self.ns]);
    }
}

#[derive(Debug, Clone, Copy)]
enum Firmware {
    Bios,
    Uefi,
}

/// Waits until `file` contains `needle`; on timeout (or when `vm` exits first) fails with
/// the file's text.
fn wait_for(
    file: &Path,
    needle: &str,
    budget: Duration,
    mut vm: Option<&mut KillOnDrop>,
) -> String {
    let deadline = Instant::now() + budget;
    loop {
        let text = String::from_utf8_lossy(&fs::read(file).unwrap_or_default()).replace('\r', "");
        if text.contains(needle) {
            return text;
        }
        let exited = vm
            .as_mut()
            .and_then(|v| v.0.try_wait().ok().flatten())
            .is_some();
        assert!(
            Instant::now() < deadline && !exited,
            "{needle:?} {} in {}:\n{text}",
            if exited {
                "never came before the VM exited"
            } else {
                "did not come in time"
            },
            file.display()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

// ---------------------------------------------------------------------------------------
// Listings
// ---------------------------------------------------------------------------------------

/// One entry as compared: type, mode (none for symlinks: Linux ignores their permission
/// bits), uid, gid, and the content's sha256 or the link target.
type Entry = (String, Option<u32>, u32, u32, String);

/// The tree the VM printed.
fn vm_listing(serial: &str) -> BTreeMap<String, Entry> {
    assert!(
        serial.contains("OVL-E2E: listing end"),
        "no complete listing on the console:\n{serial}"
    );
    serial
        .lines()
        .filter_map(|l| l.split_once("OVL-E2E-ENTRY|").map(|(_, rest)| rest))
        .map(|rest| {
            let f: Vec<&str> = rest.splitn(6, '|').collect();
            assert_eq!(f.len(), 6, "bad listing line {rest:?}");
            let mode = u32::from_str_radix(f[1], 8).expect("octal mode");
            let kind = f[0].to_string();
            let mode = (kind != "symlink").then_some(mode);
            let x = if kind == "dir" {
                String::new()
            } else {
                f[4].to_string()
            };
            (
                f[5].to_string(),
                (
                    kind,
                    mode,
                    f[2].parse().expect("uid"),
                    f[3].parse().expect("gid"),
                    x,
                ),
            )
        })
        .collect()
}

/// The tree `ovl show --json --mac MAC` lists.
fn ovl_listing(site: &Path, mac: &str) -> BTreeMap<String, Entry> {
    let out = Command::new(OVL)
        .arg("--site")
        .arg(site)
        .args(["--json", "show", "--mac", mac])
        .output()
        .expect("ovl show");
    assert!(out.status.success(), "{out:?}");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("show JSON");
    doc["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| {
            let kind = f["type"].as_str().unwrap_or_default().to_string();
            let mode =
                u32::from_str_radix(f["mode"].as_str().unwrap_or_default(), 8).expect("mode");
            let x = match kind.as_str() {
                "file" => f["sha256"].as_str().unwrap_or_default().to_string(),
                "symlink" => f["target"].as_str().unwrap_or_default().to_string(),
                _ => String::new(),
            };
            (
                f["path"].as_str().unwrap_or_default().to_string(),
                (
                    kind.clone(),
                    (kind != "symlink").then_some(mode),
                    u32::try_from(f["uid"].as_u64().unwrap_or(u64::MAX)).expect("uid"),
                    u32::try_from(f["gid"].as_u64().unwrap_or(u64::MAX)).expect("gid"),
                    x,
                ),
            )
        })
        .collect()
}

fn assert_same_tree(site: &Path, mac: &str, serial: &str) {
    let vm = vm_listing(serial);
    let ovl = ovl_listing(site, mac);
    let only_vm: Vec<_> = vm.keys().filter(|k| !ovl.contains_key(*k)).collect();
    let only_ovl: Vec<_> = ovl.keys().filter(|k| !vm.contains_key(*k)).collect();
    let differ: Vec<_> = ovl
        .iter()
        .filter_map(|(k, v)| vm.get(k).filter(|w| *w != v).map(|w| (k, v, w)))
        .collect();
    assert!(
        only_vm.is_empty() && only_ovl.is_empty() && differ.is_empty(),
        "{mac}: the VM's tree differs from ovl show\nonly in the VM: {only_vm:?}\n\
         only in ovl show: {only_ovl:?}\ndiffering (ovl, VM): {differ:#?}"
    );
    assert!(ovl.len() > 10, "a real tree: {} entries", ovl.len());
}

/// The JSON log lines of `ovl serve` with this `event`.
fn log_events(log: &Path, event: &str) -> Vec<serde_json::Value> {
    fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == event)
        .collect()
}

fn tftp_files(log: &Path) -> Vec<String> {
    log_events(log, "tftp_transfer")
        .iter()
        .map(|v| v["file"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn http_files(log: &Path) -> Vec<String> {
    log_events(log, "http_request")
        .iter()
        .map(|v| v["file"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn lock() -> std::sync::MutexGuard<'static, ()> {
    VM.lock().unwrap_or_else(|p| p.into_inner())
}

// ---------------------------------------------------------------------------------------
// The boots
// ---------------------------------------------------------------------------------------

/// SeaBIOS → iPXE option ROM (its DHCP already says user class `iPXE`) → boot.ipxe over
/// HTTP → kernel, initramfs → the apkovl of an inventory device (its fixed address from
/// `devices.toml`), extracted exactly as `ovl show` lists it.
#[test]
fn bios_pxe_boots_a_known_device_to_its_apkovl() {
    if !can_run() {
        return;
    }
    let _vm = lock();
    let mut lab = Lab::new();
    let site = lab.site("");
    let log = lab.serve(&site);
    let (serial, took) = lab.boot(Firmware::Bios, BIOS_MAC, Duration::from_secs(150));
    eprintln!(
        "TIMING: BIOS boot of a known device: {:.1}s",
        took.as_secs_f64()
    );
    assert!(
        serial.contains(&format!("OVL-E2E: lease 10.214.0.50 from {SERVER}")),
        "the fixed address from devices.toml:\n{serial}"
    );
    assert!(serial.contains(&format!(
        "OVL-E2E: apkovl http://{SERVER}/configs/{BIOS_MAC}.tar.gz"
    )));
    assert_same_tree(&site, BIOS_MAC, &serial);
    // Debian's QEMU option ROM is iPXE itself: its first DHCP already carries user class
    // "iPXE", so it is sent to the script straight away (no undionly.kpxe in between).
    let acks = log_events(&log, "dhcp_ack");
    assert_eq!(
        acks.first().map(|a| a["boot_file"].clone()),
        Some(format!("http://{SERVER}/boot.ipxe?mac={BIOS_MAC}").into()),
        "{acks:?}"
    );
    let http = http_files(&log);
    for f in ["/boot.ipxe", "/vmlinuz-lts", "/initramfs-lts"] {
        assert!(
            http.iter().any(|h| h == f),
            "{f} not fetched over HTTP: {http:?}"
        );
    }
    let served = log_events(&log, "http_request")
        .into_iter()
        .find(|v| v["file"] == format!("/configs/{BIOS_MAC}.tar.gz"))
        .expect("the config request in the log");
    assert_eq!(served["status"], 200, "{served}");
    assert_eq!(served["complete"], true, "{served}");
    // /status shows the device's lease from ovl's own DHCP server.
    let out = run(
        20,
        &[
            "ip",
            "netns",
            "exec",
            &lab.ns,
            "curl",
            "-sf",
            &format!("http://{SERVER}/status"),
        ],
    );
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("/status JSON");
    let dev = status["devices"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["mac"] == BIOS_MAC))
        .expect("the device in /status");
    assert_eq!(dev["lease"], "10.214.0.50", "{dev}");
    for f in ["/vmlinuz-lts", "/initramfs-lts"] {
        let done = log_events(&log, "http_request")
            .into_iter()
            .find(|v| v["file"] == f)
            .expect("logged");
        assert_eq!(done["complete"], true, "{done}");
    }
}

/// A MAC the inventory does not know gets a real 404 for its apkovl (a stock Alpine boot);
/// here iPXE is sent to `tftp://SERVER/boot.ipxe` (`[serve.dhcp] script_url`), so the
/// script comes over ovl's TFTP instead of HTTP.
#[test]
fn bios_pxe_of_an_unknown_device_gets_404_and_the_script_over_tftp() {
    if !can_run() {
        return;
    }
    let _vm = lock();
    let mut lab = Lab::new();
    let site = lab.site(&format!("script_url = \"tftp://{SERVER}/boot.ipxe\"\n"));
    let log = lab.serve(&site);
    let (serial, took) = lab.boot(Firmware::Bios, UNKNOWN_MAC, Duration::from_secs(150));
    eprintln!(
        "TIMING: BIOS boot of an unknown device (script over TFTP): {:.1}s",
        took.as_secs_f64()
    );
    assert!(serial.contains("OVL-E2E: apkovl 404"), "{serial}");
    assert!(!serial.contains("OVL-E2E: listing begin"));
    let lease = serial
        .lines()
        .find_map(|l| l.split_once("OVL-E2E: lease ").map(|(_, r)| r.to_string()))
        .expect("a lease");
    assert!(
        lease.starts_with("10.214.0.1") && lease.contains(SERVER),
        "pool address: {lease}"
    );
    let tftp = tftp_files(&log);
    assert!(
        tftp.iter().any(|f| f == "boot.ipxe"),
        "boot.ipxe over TFTP: {tftp:?}"
    );
    let http = http_files(&log);
    assert!(!http.iter().any(|h| h == "/boot.ipxe"), "{http:?}");
    assert!(http.iter().any(|h| h == "/vmlinuz-lts"), "{http:?}");
    let refused = log_events(&log, "http_request")
        .into_iter()
        .find(|v| v["file"] == format!("/configs/{UNKNOWN_MAC}.tar.gz"))
        .expect("the config request in the log");
    assert_eq!(refused["status"], 404, "{refused}");
}

/// OVMF's own PXE client (option 93 = 7) on virtio-net → snponly.efi over TFTP → the same
/// chain; the kernel line's `initrd=initramfs-lts` lets the EFI stub find the initramfs.
#[test]
fn uefi_pxe_boots_a_known_device_to_its_apkovl() {
    if !can_run() {
        return;
    }
    let _vm = lock();
    let mut lab = Lab::new();
    let site = lab.site("");
    let log = lab.serve(&site);
    let (serial, took) = lab.boot(Firmware::Uefi, UEFI_MAC, Duration::from_secs(180));
    eprintln!(
        "TIMING: UEFI boot of a known device: {:.1}s",
        took.as_secs_f64()
    );
    assert_same_tree(&site, UEFI_MAC, &serial);
    let tftp = tftp_files(&log);
    assert!(tftp.iter().any(|f| f == "snponly.efi"), "{tftp:?}");
    let acks = log_events(&log, "dhcp_ack");
    assert!(
        acks.iter().any(|a| a["boot_file"] == "snponly.efi"),
        "the firmware's DHCP got the UEFI boot file: {acks:?}"
    );
    let script = format!("http://{SERVER}/boot.ipxe?mac={UEFI_MAC}");
    assert!(
        acks.iter().any(|a| a["boot_file"] == script.as_str()),
        "iPXE's own DHCP got the script URL: {acks:?}"
    );
    assert!(
        serial
            .lines()
            .any(|l| l.starts_with("OVL-E2E: cmdline") && l.contains("initrd=initramfs-lts")),
        "the kernel line names its initrd:\n{serial}"
    );
}

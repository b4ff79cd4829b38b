//! The boot lab: one network namespace (`ovlboot-PID-N`) with a bridge holding the server's
//! address (10.214.0.1/24, only inside the namespace) and a tap port for QEMU;
//! `ovl serve --dhcp full` on the bridge; a site made for the boots.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::harness::netns::{Netns, unique_name};
use crate::harness::proc::{KillOnDrop, require_file, wait_for_text};
use crate::harness::qemu::{self, Firmware, require_qemu};
use crate::harness::site::{OVL, TestSite};
use crate::initramfs::boot_files;
use crate::record::Record;
use crate::{BIOS_MAC, SERVER, UEFI_MAC};

/// The bridge, holding [`SERVER`] and the tap port.
const BRIDGE: &str = "br0";
/// QEMU's port on the bridge.
const TAP: &str = "tap0";

/// A namespace with a bridge (the server's address) and a tap port for QEMU; everything in
/// it is removed on drop, also when a test fails.
pub struct Lab {
    serve: Option<KillOnDrop>,
    /// The namespace holding the bridge, the server and the VM.
    pub ns: Netns,
    dir: tempfile::TempDir,
}

impl Lab {
    /// The namespace with its bridge and tap port (needs root and `/dev/net/tun`).
    pub fn new() -> Lab {
        require_file("/dev/net/tun");
        let ns = Netns::new(&unique_name("ovlboot"));
        ns.bridge(BRIDGE);
        ns.addr(&format!("{SERVER}/24"), BRIDGE);
        ns.tap(TAP);
        ns.enslave(TAP, BRIDGE);
        for dev in [BRIDGE, TAP] {
            ns.up(dev);
        }
        Lab {
            serve: None,
            ns,
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// A path in the lab's scratch folder.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Starts `ovl serve --dhcp full` on the bridge; returns its log file.
    pub fn serve(&mut self, site: &TestSite) -> PathBuf {
        self.serve_with(site, &[], &[])
    }

    /// Starts `WRAPPER… ovl --site SITE serve --dhcp full … EXTRA…` on the bridge (a wrapper
    /// such as `setpriv` drops privileges); returns its log file.
    pub fn serve_with(&mut self, site: &TestSite, wrapper: &[&str], extra: &[&str]) -> PathBuf {
        let log = self.path("serve.log");
        let mut cmd = match wrapper.split_first() {
            None => self.ns.command(OVL),
            Some((program, args)) => {
                let mut c = self.ns.command(program);
                c.args(args).arg(OVL);
                c
            }
        };
        let child = KillOnDrop::spawn(
            cmd.arg("--site")
                .arg(site.root())
                .args(["serve", "--dhcp", "full", "--interface", BRIDGE])
                .args(["--http", &format!("{SERVER}:80")])
                .args(["--tftp", &format!("{SERVER}:69")])
                .args(["--log-format", "json"])
                .args(extra)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(File::create(&log).expect("serve.log")),
        );
        self.serve = Some(child);
        wait_for_text(&log, "\"service\":\"dhcp\"", Duration::from_secs(20), None);
        log
    }

    /// Boots a VM until Alpine's init reaches its final `apk add` and the `apk` stand-in has
    /// recorded the new root on the second serial port; fails (with the console) when the VM
    /// stops first or `budget` runs out.
    pub fn boot(&self, firmware: Firmware, mac: &str, budget: Duration) -> Boot {
        require_qemu(firmware);
        let name = mac.replace(':', "");
        let console = self.path(&format!("console-{name}.log"));
        let record = self.path(&format!("record-{name}.log"));
        let mut cmd = qemu::command(
            &self.ns,
            TAP,
            firmware,
            mac,
            &console,
            &self.path("OVMF_VARS.fd"),
        );
        // The second serial port (ttyS1) is the stand-in's alone.
        cmd.arg("-serial").arg(format!("file:{}", record.display()));
        cmd.arg("-no-reboot");
        let started = Instant::now();
        let mut vm = qemu::spawn(&mut cmd);
        let deadline = started + budget;
        let mut applied = None;
        let text = loop {
            let text = read_text(&record);
            if applied.is_none() && text.contains("OVL-REC: begin") {
                applied = Some(started.elapsed());
            }
            if text.contains("OVL-REC: end") {
                break text;
            }
            let exited = vm.exited();
            assert!(
                !exited && Instant::now() < deadline,
                "{mac}: no complete record {}\n--- console ---\n{}\n--- record ---\n{text}",
                if exited {
                    "before the VM stopped"
                } else {
                    "in time"
                },
                read_text(&console)
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        // The stand-in powers off (`poweroff -f`, -no-reboot); give it a moment, then kill.
        let _ = vm.wait_exit(Duration::from_secs(10));
        Boot {
            console: read_text(&console),
            record: Record::parse(&text),
            applied: applied.expect("the record began"),
        }
    }
}

/// One boot through the lab.
pub struct Boot {
    /// The first serial port: firmware, iPXE, kernel, Alpine's init.
    pub console: String,
    /// What the `apk` stand-in recorded.
    pub record: Record,
    /// From QEMU's start (power-on) to the start of the final `apk add`, which Alpine's init
    /// runs once the apkovl is applied.
    pub applied: Duration,
}

/// A file's text, `\r` removed (empty when missing).
fn read_text(path: &Path) -> String {
    String::from_utf8_lossy(&fs::read(path).unwrap_or_default()).replace('\r', "")
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.serve = None;
        if std::thread::panicking() {
            let log = fs::read_to_string(self.path("serve.log")).unwrap_or_default();
            eprintln!("--- ovl serve's log ---\n{log}");
        }
        // The namespace goes next (field order), with anything still running in it.
    }
}

/// A site from `ovl init` with the lab's addresses, the test kernel and initramfs as
/// `vmlinuz-lts`/`initramfs-lts`, Debian's iPXE binaries, `extra_dhcp` appended to
/// `[serve.dhcp]`, and 96 more shared files in the XL profile's layer (so its archives are
/// several gzip members); built.
pub fn site(extra_dhcp: &str) -> TestSite {
    let site = TestSite::example();
    site.write(
        "ovl.toml",
        &format!(
            "[boot]\nkernel_args = [\"console=ttyS0\", \"panic=-1\"]\n\
             [serve]\nhttp = \"{SERVER}:80\"\ntftp = \"{SERVER}:69\"\n\
             [serve.dhcp]\nrange = [\"10.214.0.100\", \"10.214.0.150\"]\n\
             netmask = \"255.255.255.0\"\nlease_time = 600\n\
             boot_files = {{ \"0\" = \"undionly.kpxe\", \"7\" = \"snponly.efi\" }}\n{extra_dhcp}"
        ),
    );
    site.write(
        "devices.toml",
        &format!(
            "[[device]]\nmac = \"{BIOS_MAC}\"\nprofile = \"XL\"\nhostname = \"kiosk-bios\"\n\
             ip = \"10.214.0.50\"\noverlays = [\"special/hall\"]\n\
             [device.vars]\nscreen = \"portrait\"\n\n\
             [[device]]\nmac = \"{UEFI_MAC}\"\nprofile = \"special\"\n"
        ),
    );
    // Enough shared text (the XL profile's layers) that the archives are several gzip
    // members: shared pieces compressed once, the device's own entries in members of their
    // own. Alpine's init unpacks them with its busybox tar.
    for i in 0..96 {
        let line = format!("setting{i} = value {i} of the shared kiosk configuration\n");
        site.write(
            &format!("overlays/xl/etc/kiosk/shared/part{i:02}.conf"),
            &line.repeat(40),
        );
    }
    let files = boot_files();
    fs::copy(&files.vmlinuz, site.path("vmlinuz-lts")).expect("kernel");
    fs::copy(&files.initramfs, site.path("initramfs-lts")).expect("initramfs");
    fs::copy("/usr/lib/ipxe/undionly.kpxe", site.path("undionly.kpxe"))
        .expect("undionly.kpxe (Debian ipxe)");
    fs::copy("/usr/lib/ipxe/snponly.efi", site.path("snponly.efi"))
        .expect("snponly.efi (Debian ipxe)");
    site.ovl(&["build", "--all"]).ok();
    site
}

/// The gzip members of `path` (a published archive): each one's decompressed size.
pub fn gzip_members(path: &Path) -> Vec<u64> {
    let gz = fs::read(path).expect("archive");
    let mut rest = &gz[..];
    let mut sizes = Vec::new();
    while !rest.is_empty() {
        assert_eq!(
            &rest[..2],
            &[0x1f, 0x8b],
            "a gzip member header in {}",
            path.display()
        );
        let mut d = flate2::bufread::GzDecoder::new(rest);
        sizes.push(std::io::copy(&mut d, &mut std::io::sink()).expect("a gzip member"));
        rest = d.into_inner();
    }
    sizes
}

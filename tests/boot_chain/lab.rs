//! The boot lab: one network namespace (`ovlboot-PID-N`) with a bridge holding the server's
//! address (10.214.0.1/24, only inside the namespace) and a tap port for QEMU;
//! `ovl serve --dhcp full` on the bridge; a site made for the boots.

use std::fs::{self, File};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::harness::netns::{Netns, unique_name};
use crate::harness::proc::{KillOnDrop, require_file, wait_for_text};
use crate::harness::qemu::{self, Firmware, require_qemu};
use crate::harness::site::{OVL, TestSite};
use crate::initramfs::boot_files;
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

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Starts `ovl serve --dhcp full` on the bridge; returns its log file.
    pub fn serve(&mut self, site: &TestSite) -> PathBuf {
        let log = self.path("serve.log");
        let child = KillOnDrop::spawn(
            self.ns
                .command(OVL)
                .arg("--site")
                .arg(site.root())
                .args(["serve", "--dhcp", "full", "--interface", BRIDGE])
                .args(["--http", &format!("{SERVER}:80")])
                .args(["--tftp", &format!("{SERVER}:69")])
                .args(["--log-format", "json"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(File::create(&log).expect("serve.log")),
        );
        self.serve = Some(child);
        wait_for_text(&log, "\"service\":\"dhcp\"", Duration::from_secs(20), None);
        log
    }

    /// Boots a VM until the initramfs says it is done; returns the serial console text.
    pub fn boot(&self, firmware: Firmware, mac: &str, budget: Duration) -> (String, Duration) {
        require_qemu(firmware);
        let serial = self.path(&format!("serial-{}.log", mac.replace(':', "")));
        let mut cmd = qemu::command(
            &self.ns,
            TAP,
            firmware,
            mac,
            &serial,
            &self.path("OVMF_VARS.fd"),
        );
        cmd.arg("-no-reboot");
        let started = Instant::now();
        let mut vm = qemu::spawn(&mut cmd);
        let text = wait_for_text(&serial, "OVL-E2E: done", budget, Some(&mut vm));
        let took = started.elapsed();
        // `poweroff -f` ends QEMU (-no-reboot); give it a moment, then kill it anyway.
        let _ = vm.wait_exit(Duration::from_secs(10));
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
        // The namespace goes next (field order), with anything still running in it.
    }
}

/// A site from `ovl init` with the lab's addresses, the test kernel and initramfs as
/// `vmlinuz-lts`/`initramfs-lts`, Debian's iPXE binaries, `extra_dhcp` appended to
/// `[serve.dhcp]`; built.
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

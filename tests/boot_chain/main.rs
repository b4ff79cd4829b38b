//! The whole boot chain in QEMU, served by the built `ovl` binary (SPEC §1, §6), into
//! Alpine's own initramfs init:
//!
//! firmware PXE ─DHCP→ boot file ─TFTP→ iPXE ─DHCP (user class iPXE)→ script URL
//! ─HTTP (or TFTP)→ `boot.ipxe` ─HTTP→ kernel + initramfs ─(in the VM) mkinitfs's
//! `initramfs-init`: `udhcpc` for `ip=dhcp`, busybox `wget` of `apkovl=`, busybox `tar -zxvf`
//! into `/sysroot`, `apk add --overlay-from-stdin`, where the `apk` stand-in records the new
//! root on the second serial port and powers off.
//!
//! The lab: one network namespace per test (`ovlboot-PID-N`, unique per run) holding a
//! bridge with the server's address (10.214.0.1/24, only inside the namespace) and a tap
//! port; `ovl serve --dhcp full --interface BRIDGE` runs on the bridge and QEMU (TCG, no KVM)
//! on the tap, both started with `ip netns exec`. Everything is removed in `Drop`, even when a
//! test panics. The VMs run one at a time (a lock): TCG on two cores is slow enough.
//!
//! The kernel is Debian's newest `linux-image-6.1.0-*-amd64` ([`kernel`]); the initramfs is
//! Alpine's minirootfs with Alpine's init and two named stand-ins ([`initramfs`]); [`lab`]
//! holds the namespace and the server, [`record`] what the stand-in recorded, [`checks`] what
//! it is compared with. [`device`] makes Alpine devices in a chroot from the same parts.
//!
//! The tests need root and `/dev/net/tun`, so they are ignored unless asked for
//! (`cargo test --test boot_chain -- --include-ignored` as root); everything else
//! (`qemu-system-x86`, `ipxe-qemu`, `ipxe`, `ovmf`, apt with Debian's mirror, Alpine's parts
//! in `$OVL_ALPINE_DIR` or `../shared/alpine`) is required: a test fails, never skips, when
//! something is missing.

#[path = "../harness/mod.rs"]
mod harness;

mod checks;
mod device;
mod fallback;
mod initramfs;
mod kernel;
mod lab;
mod record;
mod serve_log;
mod zero;

use std::sync::Mutex;
use std::time::Duration;

use checks::{assert_applied, assert_kernel_line_parsed, assert_stock_boot, script_args};
use harness::alpine::Ids;
use harness::qemu::Firmware;
use lab::{Lab, site};
use serve_log::{http_files, log_events, tftp_files};

const SERVER: &str = "10.214.0.1";
/// Inventory device booted with SeaBIOS + iPXE's e1000 ROM (profile XL, fixed address).
const BIOS_MAC: &str = "52:54:00:e2:e0:01";
/// Inventory device booted with OVMF's own PXE client on virtio-net (profile special).
const UEFI_MAC: &str = "52:54:00:e2:e0:02";
/// A MAC the inventory does not know.
const UNKNOWN_MAC: &str = "52:54:00:e2:e0:99";

/// One VM at a time.
static VM: Mutex<()> = Mutex::new(());

fn lock() -> std::sync::MutexGuard<'static, ()> {
    VM.lock().unwrap_or_else(|p| p.into_inner())
}

/// The profile's kernel arguments of `mac`, from `ovl show --json`.
fn profile_args(shown: &harness::tree::Shown) -> Vec<String> {
    shown.json["kernel_args"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// SeaBIOS → iPXE option ROM (its DHCP already says user class `iPXE`) → boot.ipxe over
/// HTTP → kernel, initramfs → Alpine's init parses the kernel line, gets the fixed address
/// from `devices.toml`, fetches and applies the apkovl: the new root is what `ovl show` lists.
#[test]
#[ignore = "needs root and QEMU: a network namespace with a tap port, a VM booting under TCG"]
fn bios_pxe_boots_a_known_device_into_alpines_init() {
    let _vm = lock();
    let mut lab = Lab::new();
    let site = site("");
    let members = lab::gzip_members(&site.archive(BIOS_MAC));
    assert!(
        members.len() >= 3,
        "the archive is several gzip members (shared pieces, the device's own): {members:?}"
    );
    let log = lab.serve(&site);
    let boot = lab.boot(Firmware::Bios, BIOS_MAC, Duration::from_secs(180));
    eprintln!(
        "TIMING: BIOS power-on to applied apkovl: {:.1}s (kernel uptime {:.1}s)",
        boot.applied.as_secs_f64(),
        boot.record.uptime
    );
    let rec = &boot.record;
    let shown = assert_applied(&site, BIOS_MAC, rec, &Ids::of_minirootfs());
    let script = format!("http://{SERVER}/boot.ipxe?mac={BIOS_MAC}");
    let served = script_args(&lab, &script, BIOS_MAC);
    assert_kernel_line_parsed(rec, &served, &profile_args(&shown));
    assert!(rec.modules.contains("e1000"), "{:?}", rec.modules);
    assert!(
        rec.addrs
            .iter()
            .any(|a| a.contains("eth0") && a.contains("inet 10.214.0.50/24")),
        "udhcpc got the fixed address from devices.toml: {:?}",
        rec.addrs
    );
    assert!(
        served.contains(&format!("apkovl=http://{SERVER}/configs/{BIOS_MAC}.tar.gz")),
        "{served:?}"
    );
    // Debian's QEMU option ROM is iPXE itself: its first DHCP already carries user class
    // "iPXE", so it is sent to the script straight away (no undionly.kpxe in between).
    let acks = log_events(&log, "dhcp_ack");
    assert_eq!(
        acks.first().map(|a| a["boot_file"].clone()),
        Some(script.clone().into()),
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
    let out = lab
        .ns
        .run(20, &["curl", "-sf", &format!("http://{SERVER}/status")]);
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

/// A MAC the inventory does not know gets a real 404 for its apkovl and Alpine's init goes
/// on without one (a stock boot); here iPXE is sent to `tftp://SERVER/boot.ipxe`
/// (`[serve.dhcp] script_url`), so the script comes over ovl's TFTP instead of HTTP.
#[test]
#[ignore = "needs root and QEMU: a network namespace with a tap port, a VM booting under TCG"]
fn bios_pxe_of_an_unknown_device_gets_404_and_a_stock_boot() {
    let _vm = lock();
    let mut lab = Lab::new();
    let script = format!("tftp://{SERVER}/boot.ipxe");
    let site = site(&format!("script_url = \"{script}\"\n"));
    let log = lab.serve(&site);
    let boot = lab.boot(Firmware::Bios, UNKNOWN_MAC, Duration::from_secs(180));
    eprintln!(
        "TIMING: BIOS power-on to the final apk add without apkovl: {:.1}s",
        boot.applied.as_secs_f64()
    );
    let rec = &boot.record;
    assert_stock_boot(rec);
    let served = script_args(&lab, &script, UNKNOWN_MAC);
    assert_kernel_line_parsed(rec, &served, &[]);
    assert!(
        boot.console.contains("404"),
        "busybox wget reports the 404:\n{}",
        boot.console
    );
    assert!(
        rec.addrs
            .iter()
            .any(|a| a.contains("inet 10.214.0.1") && !a.contains("10.214.0.1/")),
        "a pool address: {:?}",
        rec.addrs
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
/// chain; the kernel line's `initrd=initramfs-lts` lets the EFI stub find the initramfs, and
/// Alpine's init applies the apkovl of profile `special`.
#[test]
#[ignore = "needs root and QEMU: a network namespace with a tap port, a VM booting under TCG"]
fn uefi_pxe_boots_a_known_device_into_alpines_init() {
    let _vm = lock();
    let mut lab = Lab::new();
    let site = site("");
    let log = lab.serve(&site);
    let boot = lab.boot(Firmware::Uefi, UEFI_MAC, Duration::from_secs(210));
    eprintln!(
        "TIMING: UEFI power-on to applied apkovl: {:.1}s (kernel uptime {:.1}s)",
        boot.applied.as_secs_f64(),
        boot.record.uptime
    );
    let rec = &boot.record;
    let shown = assert_applied(&site, UEFI_MAC, rec, &Ids::of_minirootfs());
    let script = format!("http://{SERVER}/boot.ipxe?mac={UEFI_MAC}");
    let served = script_args(&lab, &script, UEFI_MAC);
    assert!(
        served.iter().any(|a| a == "initrd=initramfs-lts"),
        "{served:?}"
    );
    // iPXE's EFI loader puts the image name first in the load options, which Linux's EFI
    // stub passes on.
    let cmdline: Vec<String> = ["vmlinuz-lts".to_string()]
        .into_iter()
        .chain(served)
        .collect();
    assert_kernel_line_parsed(rec, &cmdline, &profile_args(&shown));
    assert!(rec.modules.contains("virtio_net"), "{:?}", rec.modules);
    let tftp = tftp_files(&log);
    assert!(tftp.iter().any(|f| f == "snponly.efi"), "{tftp:?}");
    let acks = log_events(&log, "dhcp_ack");
    assert!(
        acks.iter().any(|a| a["boot_file"] == "snponly.efi"),
        "the firmware's DHCP got the UEFI boot file: {acks:?}"
    );
    assert!(
        acks.iter().any(|a| a["boot_file"] == script.as_str()),
        "iPXE's own DHCP got the script URL: {acks:?}"
    );
}

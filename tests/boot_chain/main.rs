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
//! The kernel is Debian's newest `linux-image-6.1.0-*-amd64` and the initramfs is made here
//! (see [`initramfs`]); [`lab`] holds the namespace and the server, [`listing`] what is
//! compared.
//!
//! The tests need root and `/dev/net/tun`, so they are ignored unless asked for
//! (`cargo test --test boot_chain -- --include-ignored` as root); everything else
//! (`qemu-system-x86`, `ipxe-qemu`, `ipxe`, `ovmf`, `busybox-static`, apt with Debian's
//! mirror) is required: a test fails, never skips, when something is missing.

#[path = "../harness/mod.rs"]
mod harness;

mod fallback;
mod initramfs;
mod lab;
mod listing;

use std::sync::Mutex;
use std::time::Duration;

use harness::qemu::Firmware;
use lab::{Lab, site};
use listing::{assert_same_tree, http_files, log_events, tftp_files};

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

/// SeaBIOS → iPXE option ROM (its DHCP already says user class `iPXE`) → boot.ipxe over
/// HTTP → kernel, initramfs → the apkovl of an inventory device (its fixed address from
/// `devices.toml`), extracted exactly as `ovl show` lists it.
#[test]
#[ignore = "needs root and QEMU: a network namespace with a tap port, a VM booting under TCG"]
fn bios_pxe_boots_a_known_device_to_its_apkovl() {
    let _vm = lock();
    let mut lab = Lab::new();
    let site = site("");
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

/// A MAC the inventory does not know gets a real 404 for its apkovl (a stock Alpine boot);
/// here iPXE is sent to `tftp://SERVER/boot.ipxe` (`[serve.dhcp] script_url`), so the
/// script comes over ovl's TFTP instead of HTTP.
#[test]
#[ignore = "needs root and QEMU: a network namespace with a tap port, a VM booting under TCG"]
fn bios_pxe_of_an_unknown_device_gets_404_and_the_script_over_tftp() {
    let _vm = lock();
    let mut lab = Lab::new();
    let site = site(&format!("script_url = \"tftp://{SERVER}/boot.ipxe\"\n"));
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
#[ignore = "needs root and QEMU: a network namespace with a tap port, a VM booting under TCG"]
fn uefi_pxe_boots_a_known_device_to_its_apkovl() {
    let _vm = lock();
    let mut lab = Lab::new();
    let site = site("");
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

//! Firmware in QEMU asking for its boot files: Debian's iPXE option ROM (BIOS) and OVMF's
//! own PXE client (UEFI), with ovl in full mode, and in proxy mode beside the site's own
//! DHCP server (dnsmasq handing out addresses only).

use ovl::mac::Mac;
use std::net::{Ipv4Addr, UdpSocket};
use std::path::Path;
use std::thread::JoinHandle;
use std::time::Duration;

use ovl::serve::dhcp::Mode;

use super::lab::{Lab, SERVER_IP, Server};
use crate::harness::proc::{KillOnDrop, require, wait_for_text};
use crate::harness::qemu::{Firmware, require_qemu};

/// Waits (at most `secs`) until `log` contains `needle`; the log's text.
fn wait_log(log: &Path, needle: &str, secs: u64) -> String {
    wait_for_text(log, needle, Duration::from_secs(secs), None)
}

#[test]
#[ignore = "needs root and QEMU: network namespaces, a VM on a tap port"]
fn qemu_ipxe_gets_its_script_url_in_full_mode() {
    require_qemu(Firmware::Bios);
    let lab = Lab::new();
    lab.add_bridge();
    let server = Server::start(&lab, lab.config(Mode::Full));
    let log = lab.path("qemu.log");
    let _vm = lab.qemu(Firmware::Bios, "52:54:00:27:00:01", &log);
    // iPXE (the NIC's ROM) asks with user class "iPXE" and fetches the script URL.
    let text = wait_log(
        &log,
        "http://10.213.1.1/boot.ipxe?mac=52:54:00:27:00:01",
        120,
    );
    assert!(
        text.contains("net0: 10.213.1.100/255.255.255.0 gw 10.213.1.1"),
        "{text}"
    );
    assert!(text.contains("Next server: 10.213.1.1"), "{text}");
    assert_eq!(
        server
            .leases
            .lease_for_mac(&Mac([0x52, 0x54, 0x00, 0x27, 0x00, 0x01])),
        Some(Ipv4Addr::new(10, 213, 1, 100))
    );
    server.stop();
}

#[test]
#[ignore = "needs root and QEMU: network namespaces, a VM on a tap port"]
fn qemu_ipxe_boots_through_the_proxy_next_to_the_site_dhcp_server() {
    require_qemu(Firmware::Bios);
    require("dnsmasq");
    let mut lab = Lab::new();
    lab.add_bridge();
    // The site's own DHCP server: addresses only, no boot information.
    let _dnsmasq = site_dnsmasq(&mut lab);
    let server = Server::start(&lab, lab.config(Mode::Proxy));
    let log = lab.path("qemu.log");
    let _vm = lab.qemu(Firmware::Bios, "52:54:00:28:00:01", &log);
    let text = wait_log(
        &log,
        "http://10.213.1.1/boot.ipxe?mac=52:54:00:28:00:01",
        120,
    );
    assert!(
        text.contains("net0: 10.213.1.20"),
        "address from the site server:\n{text}"
    );
    assert!(text.contains("Next server: 10.213.1.1"), "{text}");
    let stats = server.stats.snapshot();
    eprintln!("{stats:?}");
    assert!(stats.offers >= 1, "{stats:?}");
    assert!(server.leases.list().is_empty(), "the proxy leases nothing");
    server.stop();
}

/// Listens on the server's TFTP port and returns the file name of the first read request.
fn tftp_rrq_listener(lab: &Lab, secs: u64) -> JoinHandle<Option<String>> {
    lab.server_ns.thread(move || {
        let sock = UdpSocket::bind((SERVER_IP, 69)).ok()?;
        sock.set_read_timeout(Some(Duration::from_secs(secs)))
            .ok()?;
        let mut buf = [0u8; 600];
        let (len, _) = sock.recv_from(&mut buf).ok()?;
        // RRQ: opcode 1, file name, NUL, mode, NUL, options.
        let body = buf.get(2..len)?;
        let name = body.split(|b| *b == 0).next()?;
        (buf[..2] == [0, 1]).then(|| String::from_utf8_lossy(name).into_owned())
    })
}

#[test]
#[ignore = "needs root and QEMU: network namespaces, a VM on a tap port"]
fn ovmf_uefi_pxe_gets_ipxe_efi_in_full_mode() {
    require_qemu(Firmware::Uefi);
    let lab = Lab::new();
    lab.add_bridge();
    let server = Server::start(&lab, lab.config(Mode::Full));
    let rrq = tftp_rrq_listener(&lab, 150);
    let log = lab.path("ovmf.log");
    let _vm = lab.qemu(Firmware::Uefi, "52:54:00:29:00:01", &log);
    // The firmware's PXE client (option 93 = 7) fetches the boot file it was given.
    let file = rrq.join().expect("listener");
    assert_eq!(
        file.as_deref(),
        Some("ipxe.efi"),
        "serial log:\n{}",
        String::from_utf8_lossy(&std::fs::read(&log).unwrap_or_default())
    );
    assert_eq!(
        server
            .leases
            .lease_for_mac(&Mac([0x52, 0x54, 0x00, 0x29, 0x00, 0x01])),
        Some(Ipv4Addr::new(10, 213, 1, 100))
    );
    server.stop();
}

#[test]
#[ignore = "needs root and QEMU: network namespaces, a VM on a tap port"]
fn ovmf_uefi_pxe_gets_ipxe_efi_through_the_proxy() {
    require_qemu(Firmware::Uefi);
    require("dnsmasq");
    let mut lab = Lab::new();
    lab.add_bridge();
    let _dnsmasq = site_dnsmasq(&mut lab);
    let server = Server::start(&lab, lab.config(Mode::Proxy));
    let rrq = tftp_rrq_listener(&lab, 150);
    let log = lab.path("ovmf.log");
    let _vm = lab.qemu(Firmware::Uefi, "52:54:00:2a:00:01", &log);
    let file = rrq.join().expect("listener");
    let stats = server.stats.snapshot();
    assert_eq!(
        file.as_deref(),
        Some("ipxe.efi"),
        "{stats:?} serial log:\n{}",
        String::from_utf8_lossy(&std::fs::read(&log).unwrap_or_default())
    );
    eprintln!("{stats:?}");
    server.stop();
}

/// Adds the site namespace with dnsmasq handing out addresses only (10.213.1.200-210).
fn site_dnsmasq(lab: &mut Lab) -> KillOnDrop {
    let leases = format!("--dhcp-leasefile={}", lab.path("dnsmasq.leases").display());
    let pid = format!("--pid-file={}", lab.path("dnsmasq.pid").display());
    let site = lab.add_site();
    site.spawn(
        &[
            "dnsmasq",
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--port=0",
            "--user=root",
            "--interface=veth2",
            "--bind-interfaces",
            "--no-ping",
            "--dhcp-range=10.213.1.200,10.213.1.210,255.255.255.0,600",
            &leases,
            &pid,
        ],
        &[],
    )
}

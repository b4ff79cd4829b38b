//! The exported configurations (`ovl export`) run by the real servers in the server
//! namespace (dnsmasq, ISC dhcpd, Kea), each asked by udhcpc as a plain, a BIOS PXE, a UEFI
//! PXE and an iPXE client: the same answers as ovl's own server.

use ovl::mac::Mac;
use std::net::Ipv4Addr;

use super::lab::{Lab, SERVER_IF, SERVER_IP};
use super::{last_event, udhcpc, udhcpc_script};
use crate::harness::proc::require;

fn export_site() -> ovl::serve::dhcp::export::DhcpExport {
    ovl::serve::dhcp::export::DhcpExport {
        server_ip: SERVER_IP,
        subnet: Ipv4Addr::new(10, 213, 1, 0),
        netmask: Ipv4Addr::new(255, 255, 255, 0),
        range: Some((
            Ipv4Addr::new(10, 213, 1, 100),
            Ipv4Addr::new(10, 213, 1, 150),
        )),
        router: Some(SERVER_IP),
        dns: vec![SERVER_IP],
        lease_time: 600,
        hosts: vec![ovl::serve::dhcp::export::ExportHost {
            mac: Mac([0x52, 0x54, 0x00, 0x2b, 0x00, 0x01]),
            hostname: "kiosk-hall".into(),
            ip: Some(Ipv4Addr::new(10, 213, 1, 50)),
        }],
        boot_files: ovl::serve::dhcp::default_boot_files(),
        ipxe_script_url: "http://10.213.1.1/boot.ipxe".into(),
    }
}

/// Runs udhcpc as a plain, a BIOS PXE, a UEFI PXE and an iPXE client against whatever
/// server runs in the lab, and checks what each is told.
fn check_exported_behaviour(lab: &Lab, who: &str) {
    lab.set_client_mac("52:54:00:2b:00:01");
    let cases: [(&str, &[&str], &str); 4] = [
        ("plain", &[], ""),
        (
            "bios",
            &["-V", "PXEClient:Arch:00000:UNDI:002001", "-x", "0x5d:0000"],
            "undionly.kpxe",
        ),
        (
            "uefi",
            &["-V", "PXEClient:Arch:00007:UNDI:003016", "-x", "0x5d:0007"],
            "ipxe.efi",
        ),
        (
            "ipxe",
            &[
                "-V",
                "PXEClient:Arch:00007:UNDI:003010",
                "-x",
                "0x5d:0007",
                "-x",
                "0x4d:69505845",
            ],
            "http://10.213.1.1/boot.ipxe",
        ),
    ];
    for (name, extra, file) in cases {
        let (script, log) = udhcpc_script(lab, &format!("{who}-{name}"));
        let out = udhcpc(lab, &script, extra);
        assert!(
            out.status.success(),
            "{who} {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let bound = last_event(&log, "bound");
        eprintln!("{who} {name}: {bound:?}");
        assert_eq!(bound["ip"], "10.213.1.50", "{who} {name}: the reservation");
        assert_eq!(bound["router"], "10.213.1.1", "{who} {name}");
        assert_eq!(bound["boot_file"], file, "{who} {name}: file field");
        if !file.is_empty() {
            assert_eq!(bound["siaddr"], "10.213.1.1", "{who} {name}: next-server");
        }
    }
}

#[test]
#[ignore = "needs root: network namespaces"]
fn exported_dnsmasq_config_serves_like_ovl() {
    require("dnsmasq");
    let lab = Lab::new();
    let conf = lab.path("dnsmasq.conf");
    std::fs::write(&conf, ovl::serve::dhcp::export::dnsmasq(&export_site())).unwrap();
    let leases = lab.path("dnsmasq.leases");
    let pid = lab.path("dnsmasq.pid");
    let _server = lab.server_ns.spawn(
        &[
            "dnsmasq",
            "--keep-in-foreground",
            &format!("--conf-file={}", conf.display()),
            "--port=0",
            "--user=root",
            "--interface=veth0",
            "--bind-interfaces",
            "--no-ping",
            &format!("--dhcp-leasefile={}", leases.display()),
            &format!("--pid-file={}", pid.display()),
        ],
        &[],
    );
    check_exported_behaviour(&lab, "dnsmasq");
}

#[test]
#[ignore = "needs root: network namespaces"]
fn exported_isc_dhcpd_config_serves_like_ovl() {
    require("dhcpd");
    let lab = Lab::new();
    let conf = lab.path("dhcpd.conf");
    std::fs::write(&conf, ovl::serve::dhcp::export::isc_dhcpd(&export_site())).unwrap();
    let leases = lab.path("dhcpd.leases");
    std::fs::write(&leases, "").unwrap();
    let pid = lab.path("dhcpd.pid");
    let _server = lab.server_ns.spawn(
        &[
            "dhcpd",
            "-4",
            "-f",
            "-cf",
            conf.to_str().unwrap(),
            "-lf",
            leases.to_str().unwrap(),
            "-pf",
            pid.to_str().unwrap(),
            SERVER_IF,
        ],
        &[],
    );
    check_exported_behaviour(&lab, "dhcpd");
}

#[test]
#[ignore = "needs root: network namespaces"]
fn exported_kea_config_serves_like_ovl() {
    require("kea-dhcp4");
    let lab = Lab::new();
    // Keep Kea's files in the test folder: leases, lock and pid files.
    let mut doc: serde_json::Value =
        serde_json::from_str(&ovl::serve::dhcp::export::kea(&export_site())).unwrap();
    doc["Dhcp4"]["lease-database"]["name"] =
        lab.path("kea-leases4.csv").display().to_string().into();
    doc["Dhcp4"]["interfaces-config"]["interfaces"] = serde_json::json!([SERVER_IF]);
    let conf = lab.path("kea-dhcp4.conf");
    std::fs::write(&conf, doc.to_string()).unwrap();
    let dir = lab.dir.path().to_path_buf();
    let _server = lab.server_ns.spawn(
        &["kea-dhcp4", "-c", conf.to_str().unwrap()],
        &[("KEA_LOCKFILE_DIR", &dir), ("KEA_PIDFILE_DIR", &dir)],
    );
    check_exported_behaviour(&lab, "kea");
}

//! The exported configurations (`ovl export`) run by the real servers in the server
//! namespace (dnsmasq, ISC dhcpd, Kea), each asked by udhcpc as a plain, a BIOS PXE, a UEFI
//! PXE and an iPXE client: the same answers as ovl's own server, the script URL with
//! `?mac=${net0/mac}` for iPXE to expand. The `--snippet` form merged into a dnsmasq
//! configuration of the subnet's own pool: leases from that pool, PXE answers from ovl's.

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
        ipxe_script_url: "http://10.213.1.1/boot.ipxe?mac=${net0/mac}".into(),
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
            "http://10.213.1.1/boot.ipxe?mac=${net0/mac}",
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

/// dnsmasq with `text` as its configuration in the server namespace, until dropped.
fn dnsmasq(lab: &Lab, text: &str) -> crate::harness::proc::KillOnDrop {
    require("dnsmasq");
    let conf = lab.path("dnsmasq.conf");
    std::fs::write(&conf, text).unwrap();
    let leases = lab.path("dnsmasq.leases");
    let pid = lab.path("dnsmasq.pid");
    lab.server_ns.spawn(
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
    )
}

#[test]
#[ignore = "needs root: network namespaces"]
fn exported_dnsmasq_config_serves_like_ovl() {
    let lab = Lab::new();
    let _server = dnsmasq(&lab, &ovl::serve::dhcp::export::dnsmasq(&export_site()));
    check_exported_behaviour(&lab, "dnsmasq");
}

/// The site's own dnsmasq (its pool, router, DNS) with ovl's `--snippet` appended: the
/// reserved device gets its address and, as iPXE, the script URL with `?mac=`; a device the
/// inventory does not know still gets a lease from the site's pool.
#[test]
#[ignore = "needs root: network namespaces"]
fn dnsmasq_with_the_snippet_merged_in_leases_and_sends_the_mac_script_url() {
    let lab = Lab::new();
    let own = "dhcp-range=10.213.1.100,10.213.1.150,255.255.255.0,600\n\
               dhcp-option=option:router,10.213.1.1\n";
    let snippet = ovl::serve::dhcp::export::export_snippet(
        ovl::serve::dhcp::export::ExportFormat::Dnsmasq,
        &export_site(),
    );
    let _server = dnsmasq(&lab, &format!("{own}{snippet}"));
    check_exported_behaviour(&lab, "dnsmasq-snippet");
    lab.set_client_mac("52:54:00:2b:00:99");
    let (script, log) = udhcpc_script(&lab, "dnsmasq-snippet-unknown");
    let out = udhcpc(&lab, &script, &["-x", "0x4d:69505845"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bound = last_event(&log, "bound");
    let ip: Ipv4Addr = bound["ip"].parse().unwrap();
    assert!(
        (Ipv4Addr::new(10, 213, 1, 100)..=Ipv4Addr::new(10, 213, 1, 150)).contains(&ip),
        "{bound:?}"
    );
    assert_eq!(
        bound["boot_file"],
        "http://10.213.1.1/boot.ipxe?mac=${net0/mac}"
    );
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

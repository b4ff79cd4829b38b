//! `ovl serve --dhcp full` as users run it, in the server namespace.

use std::fs::File;
use std::net::Ipv4Addr;
use std::process::Stdio;
use std::time::Duration;

use super::lab::{Lab, SERVER_IF};
use super::{last_event, udhcpc, udhcpc_script};
use crate::harness::proc::{KillOnDrop, wait_for_text};
use crate::harness::site::{OVL, TestSite};

/// `ovl serve --dhcp full` as users run it: the built binary in the server namespace, its
/// settings from `ovl.toml` and the fixed address from `devices.toml`.
#[test]
#[ignore = "needs root: network namespaces"]
fn the_ovl_binary_serves_full_dhcp_with_fixed_addresses_from_the_inventory() {
    let lab = Lab::new();
    let site = TestSite::example();
    // No [boot] server: the address comes from --interface.
    site.write(
        "ovl.toml",
        "[serve]\nconfigs_access = \"owner\"\n\
         [serve.dhcp]\nrange = [\"10.213.1.100\", \"10.213.1.150\"]\n\
         netmask = \"255.255.255.0\"\nrouter = \"10.213.1.1\"\nlease_time = 300\n",
    );
    site.write(
        "devices.toml",
        "[[device]]\nmac = \"52:54:00:2c:00:01\"\nprofile = \"S\"\nhostname = \"fixed-one\"\n\
         ip = \"10.213.1.50\"\n\n[[device]]\nmac = \"52:54:00:2c:00:02\"\nprofile = \"S\"\n",
    );
    site.ovl(&["build", "--all"]).ok();

    let log = lab.path("serve.log");
    let mut server = KillOnDrop::spawn(
        lab.server_ns
            .command(OVL)
            .arg("--site")
            .arg(site.root())
            .args([
                "serve",
                "--dhcp",
                "full",
                "--interface",
                SERVER_IF,
                "--http",
                "10.213.1.1:8080",
                "--tftp",
                "10.213.1.1:69",
                "--log-format",
                "json",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap()),
    );
    let listening = wait_for_text(&log, "\"service\":\"dhcp\"", Duration::from_secs(15), None);
    assert!(
        listening.contains("\"script_url\":\"http://10.213.1.1:8080/boot.ipxe\""),
        "{listening}"
    );

    // The known MAC gets its fixed address, the other one a pool address.
    lab.set_client_mac("52:54:00:2c:00:01");
    let (script, ulog) = udhcpc_script(&lab, "fixed");
    let out = udhcpc(&lab, &script, &[]);
    assert!(
        out.status.success(),
        "{out:?}\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let bound = last_event(&ulog, "bound");
    assert_eq!(bound["ip"], "10.213.1.50");
    assert_eq!(bound["router"], "10.213.1.1");
    assert_eq!(bound["lease"], "300");

    // The lease is a neighbour source: the owner gets its archive, /status shows the lease.
    let curl = |url: &str| -> String {
        let out = lab.client(
            10,
            &["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", url],
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(
        curl("http://10.213.1.1:8080/configs/52:54:00:2c:00:01.tar.gz"),
        "200"
    );
    assert_eq!(
        curl("http://10.213.1.1:8080/configs/52:54:00:2c:00:02.tar.gz"),
        "403"
    );
    let status = lab.client(10, &["curl", "-s", "http://10.213.1.1:8080/status"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status JSON");
    let dev = status["devices"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["mac"] == "52:54:00:2c:00:01"))
        .expect("device in /status")
        .clone();
    assert_eq!(dev["lease"], "10.213.1.50", "{dev}");

    lab.set_client_mac("52:54:00:2c:00:02");
    let (script, ulog) = udhcpc_script(&lab, "pool");
    let out = udhcpc(&lab, &script, &[]);
    assert!(out.status.success(), "{out:?}");
    let ip: Ipv4Addr = last_event(&ulog, "bound")["ip"].parse().unwrap();
    assert!(
        (Ipv4Addr::new(10, 213, 1, 100)..=Ipv4Addr::new(10, 213, 1, 150)).contains(&ip),
        "{ip}"
    );

    // SIGTERM: a clean exit with the leases on disk, in the site's private state folder.
    server.signal(libc::SIGTERM);
    let status = server
        .wait_exit(Duration::from_secs(15))
        .expect("ovl serve did not stop");
    assert!(status.success(), "{status:?}");
    let leases = std::fs::read_to_string(site.path(".ovl-state/dhcp-leases.json")).unwrap();
    assert!(
        leases.contains("10.213.1.50") && leases.contains(&ip.to_string()),
        "{leases}"
    );
}

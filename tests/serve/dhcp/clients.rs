//! Real clients in full mode: ISC dhclient (fixed and pool addresses, INIT-REBOOT), busybox
//! udhcpc (renewal, release, a restarted server keeping its leases, PXE and iPXE boot files
//! by architecture).

use ovl::mac::Mac;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use ovl::serve::dhcp::Mode;

use super::lab::{CLIENT_IF, Lab, Server};
use super::{events, last_event, udhcpc, udhcpc_script, wait_event, write_script};

#[test]
#[ignore = "needs root: network namespaces"]
fn dhclient_gets_fixed_and_pool_addresses_and_keeps_them_on_reboot() {
    let lab = Lab::new();
    let mut cfg = lab.config(Mode::Full);
    cfg.fixed.insert(
        Mac([0x52, 0x54, 0x00, 0x21, 0x00, 0x01]),
        Ipv4Addr::new(10, 213, 1, 50),
    );
    let server = Server::start(&lab, cfg);

    let script = lab.path("dhclient.sh");
    let log = lab.path("dhclient.log");
    write_script(
        &script,
        &format!(
            r#"echo "reason=$reason ip=$new_ip_address mask=$new_subnet_mask routers=$new_routers dns=$new_domain_name_servers lease=$new_dhcp_lease_time server=$new_dhcp_server_identifier" >> {log}
case "$reason" in BOUND|RENEW|REBIND|REBOOT) ip addr replace "$new_ip_address/$new_subnet_mask" dev "$interface" ;; esac
exit 0
"#,
            log = log.display()
        ),
    );
    let conf = lab.path("dhclient.conf");
    std::fs::write(&conf, "timeout 15;\nretry 1;\n").unwrap();
    let dhclient = |mac: &str, leasefile: &str| {
        let pidfile = lab.path(&format!("{leasefile}.pid"));
        let lf = lab.path(leasefile);
        let out = lab.client(
            25,
            &[
                "dhclient",
                "-1",
                "-v",
                "-cf",
                conf.to_str().unwrap(),
                "-sf",
                script.to_str().unwrap(),
                "-lf",
                lf.to_str().unwrap(),
                "-pf",
                pidfile.to_str().unwrap(),
                CLIENT_IF,
            ],
        );
        assert!(
            out.status.success(),
            "dhclient for {mac}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // dhclient stays in the background to renew: stop it (by its pid file).
        if let Ok(pid) = std::fs::read_to_string(&pidfile)
            && let Ok(pid) = pid.trim().parse::<i32>()
        {
            // SAFETY: kill(2) of the dhclient this test started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        events(&log).pop().expect("dhclient ran the script")
    };

    lab.set_client_mac("52:54:00:21:00:01");
    let fixed = dhclient("52:54:00:21:00:01", "fixed.leases");
    assert_eq!(fixed["reason"], "BOUND");
    assert_eq!(fixed["ip"], "10.213.1.50");
    assert_eq!(fixed["mask"], "255.255.255.0");
    assert_eq!(fixed["routers"], "10.213.1.1");
    assert_eq!(fixed["dns"], "10.213.1.1");
    assert_eq!(fixed["lease"], "600");
    assert_eq!(fixed["server"], "10.213.1.1");

    lab.set_client_mac("52:54:00:21:00:02");
    let pool = dhclient("52:54:00:21:00:02", "pool.leases");
    assert_eq!(pool["reason"], "BOUND");
    assert_eq!(pool["ip"], "10.213.1.100");
    let mac2 = Mac([0x52, 0x54, 0x00, 0x21, 0x00, 0x02]);
    assert_eq!(
        server.leases.lease_for_mac(&mac2),
        Some(Ipv4Addr::new(10, 213, 1, 100))
    );
    assert_eq!(
        server.leases.mac_for_ip(Ipv4Addr::new(10, 213, 1, 100)),
        Some(mac2)
    );

    // With its lease file, dhclient asks for its address again (INIT-REBOOT): same one.
    lab.set_client_mac("52:54:00:21:00:02");
    let again = dhclient("52:54:00:21:00:02", "pool.leases");
    assert_eq!(again["reason"], "REBOOT");
    assert_eq!(again["ip"], "10.213.1.100");
    let stats = server.stats.snapshot();
    assert!(stats.offers >= 2 && stats.acks >= 3, "{stats:?}");
    server.stop();
}

#[test]
#[ignore = "needs root: network namespaces"]
fn udhcpc_renews_and_a_restarted_server_keeps_the_lease() {
    let lab = Lab::new();
    let cfg = lab.config(Mode::Full);
    let server = Server::start(&lab, cfg.clone());
    lab.set_client_mac("52:54:00:22:00:01");
    let (script, log) = udhcpc_script(&lab, "renew");
    // udhcpc stays in the foreground; SIGUSR1 makes it renew now (its T1 is at least 61 s),
    // SIGUSR2 makes it release.
    let s = script.display().to_string();
    let child = lab.client_ns.spawn(
        &[
            "busybox", "udhcpc", "-i", CLIENT_IF, "-f", "-s", &s, "-t", "5", "-T", "1",
        ],
        &[],
    );
    let bound = wait_event(&log, "bound", 1);
    assert_eq!(bound["ip"], "10.213.1.100");
    assert_eq!(bound["lease"], "600");
    child.signal(libc::SIGUSR1);
    let renew = wait_event(&log, "renew", 1);
    assert_eq!(renew["ip"], "10.213.1.100", "renewal keeps the address");
    child.signal(libc::SIGUSR1);
    assert_eq!(wait_event(&log, "renew", 2)["ip"], "10.213.1.100");
    let acks = server.stats.snapshot().acks;
    assert!(acks >= 3, "renewals are acknowledged: {acks}");
    let mac = Mac([0x52, 0x54, 0x00, 0x22, 0x00, 0x01]);
    assert_eq!(
        server.leases.lease_for_mac(&mac),
        Some(Ipv4Addr::new(10, 213, 1, 100))
    );
    // SIGUSR2: udhcpc releases its lease (DHCPRELEASE, unicast to the server).
    child.signal(libc::SIGUSR2);
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.stats.snapshot().releases == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(server.stats.snapshot().releases, 1);
    assert_eq!(server.leases.lease_for_mac(&mac), None, "released");
    drop(child);

    // Another client takes the next address, then the server restarts.
    lab.set_client_mac("52:54:00:22:00:02");
    let (script2, log2) = udhcpc_script(&lab, "other");
    assert!(udhcpc(&lab, &script2, &[]).status.success());
    assert_eq!(last_event(&log2, "bound")["ip"], "10.213.1.101");
    server.stop();
    let saved = std::fs::read_to_string(lab.path("leases.json")).unwrap();
    assert!(
        saved.contains("52:54:00:22:00:01") && saved.contains("10.213.1.101"),
        "{saved}"
    );

    let server = Server::start(&lab, cfg);
    // The first client comes back without asking for any address: it gets its own.
    lab.set_client_mac("52:54:00:22:00:01");
    let (script3, log3) = udhcpc_script(&lab, "after-restart");
    assert!(udhcpc(&lab, &script3, &[]).status.success());
    assert_eq!(last_event(&log3, "bound")["ip"], "10.213.1.100");
    server.stop();
}

#[test]
#[ignore = "needs root: network namespaces"]
fn udhcpc_as_pxe_and_ipxe_client_gets_boot_file_by_architecture() {
    let lab = Lab::new();
    let server = Server::start(&lab, lab.config(Mode::Full));
    lab.set_client_mac("52:54:00:23:00:01");
    let cases: [(&str, &[&str], &str); 4] = [
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
        ("noarch", &["-V", "PXEClient"], "undionly.kpxe"),
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
            "http://10.213.1.1/boot.ipxe?mac=52:54:00:23:00:01",
        ),
    ];
    for (name, extra, file) in cases {
        let (script, log) = udhcpc_script(&lab, name);
        let out = udhcpc(&lab, &script, extra);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let bound = last_event(&log, "bound");
        assert_eq!(bound["ip"], "10.213.1.100", "{name}");
        assert_eq!(bound["boot_file"], file, "{name}: file field");
        assert_eq!(bound["siaddr"], "10.213.1.1", "{name}");
    }
    // A plain client gets an address and no boot file.
    let (script, log) = udhcpc_script(&lab, "plain");
    assert!(udhcpc(&lab, &script, &[]).status.success());
    let bound = last_event(&log, "bound");
    assert_eq!(bound["ip"], "10.213.1.100");
    assert_eq!(bound["boot_file"], "");
    server.stop();
}

//! The scale-out set-up of README "Scale-out", in network namespaces: one LAN (a bridge in
//! its own namespace) joining two `ovl serve --dhcp proxy` nodes on the same site folder, the
//! two Kea peers of `ovl export kea --ha` (hot-standby, each in its own namespace: Kea and a
//! proxyDHCP node cannot share one network stack, both need UDP port 67) and two client
//! namespaces of scripted devices ([`device`]); one `ovl watch` builds the archives. A device
//! boots with everything up (both nodes answer, the primary gives the address); then a storm
//! of devices, during which the Kea primary and one node are killed (SIGKILL): every device
//! still completes, the late ones through the standby and the surviving node.
//!
//! Namespaces are named `so-<pid>-<n>-…`, addresses are 10.214.0.0/24 inside them only,
//! every wait is bounded, and everything is removed on drop, also when the test fails.

mod device;

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::netns::{Netns, unique_name};
use crate::harness::proc::{KillOnDrop, noise, require, require_file, wait_for_text};
use crate::harness::site::{OVL, TestSite};
use device::{Booted, Device, Files};

/// The proxy nodes' addresses.
const NODES: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 214, 0, 11), Ipv4Addr::new(10, 214, 0, 12)];
/// The Kea peers' addresses (primary, standby); the HA listeners are on port [`HA_PORT`].
const KEAS: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 214, 0, 21), Ipv4Addr::new(10, 214, 0, 22)];
const HA_PORT: u16 = 8001;
/// Devices of the storm (besides the first one).
const STORM: usize = 40;
/// Devices with a reservation (the first ones).
const FIXED: usize = 10;
/// Devices working at once: per client namespace.
const WORKERS: usize = 4;
/// Completed storm devices before the kill.
const KILL_AFTER: usize = 8;

/// The LAN: a switch namespace with a bridge, and members joined to it by veth pairs
/// (`eth0` inside each). Members are removed before the switch.
struct Lan {
    members: Vec<Netns>,
    switch: Netns,
    base: String,
}

impl Lan {
    fn new() -> Lan {
        let base = unique_name("so");
        let switch = Netns::new(&format!("{base}-lan"));
        switch.bridge("br0");
        switch.up("br0");
        Lan {
            members: Vec::new(),
            switch,
            base,
        }
    }

    /// A member namespace named `…-ROLE` with `cidr` on its `eth0`; its index.
    fn join(&mut self, role: &str, cidr: &str) -> usize {
        let ns = Netns::new(&format!("{}-{role}", self.base));
        let port = format!("p-{role}");
        self.switch.veth(&port, &ns, device::CLIENT_IF);
        self.switch.enslave(&port, "br0");
        self.switch.up(&port);
        ns.addr(cidr, device::CLIENT_IF);
        ns.up(device::CLIENT_IF);
        self.members.push(ns);
        self.members.len() - 1
    }
}

/// The example site with the scale-out settings: the HTTP and TFTP servers on the
/// unspecified address and no `[boot] server` (so the script names `${next-server}`, the
/// node a device took its answer from), the pool of the Kea pair, and the inventory of the
/// storm; stand-ins for the boot files.
fn scale_site(devices: &[Device]) -> TestSite {
    let site = TestSite::example();
    site.write(
        "ovl.toml",
        "[serve]\nhttp = \"0.0.0.0:80\"\ntftp = \"0.0.0.0:69\"\n\
         [serve.dhcp]\nrange = [\"10.214.0.100\", \"10.214.0.199\"]\n\
         netmask = \"255.255.255.0\"\nrouter = \"10.214.0.1\"\nlease_time = 600\n",
    );
    let mut inventory = String::new();
    for d in devices {
        inventory.push_str(&format!(
            "[[device]]\nmac = \"{}\"\nprofile = \"S\"\n",
            d.mac_text()
        ));
        if let Some(ip) = d.fixed {
            inventory.push_str(&format!("ip = \"{ip}\"\n"));
        }
        inventory.push('\n');
    }
    site.write("devices.toml", &inventory);
    for (name, len, seed) in [
        ("undionly.kpxe", 70_000, 1),
        ("ipxe.efi", 90_000, 2),
        ("vmlinuz-lts", 2 << 20, 3),
        ("initramfs-lts", 4 << 20, 4),
    ] {
        site.write_bytes(name, &noise(len, seed));
    }
    site
}

fn devices() -> Vec<Device> {
    (0..=STORM)
        .map(|i| Device {
            mac: [
                0x52,
                0x54,
                0x00,
                0x5c,
                0x00,
                u8::try_from(i + 1).expect("few devices"),
            ],
            fixed: (i < FIXED)
                .then(|| Ipv4Addr::new(10, 214, 0, 50 + u8::try_from(i).unwrap_or(0))),
        })
        .collect()
}

/// `ovl export kea --ha --out DIR`, each file checked by `kea-dhcp4 -t` as written; the
/// parsed configurations (primary, standby).
fn export_ha(site: &TestSite, dir: &Path) -> Vec<Value> {
    let peers: Vec<String> = KEAS
        .iter()
        .enumerate()
        .map(|(i, ip)| format!("kea{}=http://{ip}:{HA_PORT}/", i + 1))
        .collect();
    let out = dir.join("kea");
    let run = site.ovl(&[
        "export",
        "kea",
        "--ha",
        "--ha-peer",
        &peers[0],
        "--ha-peer",
        &peers[1],
        "--out",
        out.to_str().expect("utf-8 path"),
    ]);
    let run = run.ok();
    (1..=2)
        .map(|i| {
            let file = out.join(format!("kea-dhcp4-kea{i}.conf"));
            assert!(
                run.stdout.contains(&file.display().to_string()),
                "{}",
                run.stdout
            );
            let check = std::process::Command::new("kea-dhcp4")
                .arg("-t")
                .arg(&file)
                .output()
                .expect("kea-dhcp4 -t");
            assert!(
                check.status.success(),
                "kea-dhcp4 -t {}: {}{}",
                file.display(),
                String::from_utf8_lossy(&check.stdout),
                String::from_utf8_lossy(&check.stderr)
            );
            let text = std::fs::read_to_string(&file).expect("config");
            let json: String = text
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            serde_json::from_str(&json).expect("the configuration is JSON after its comments")
        })
        .collect()
}

/// Runs a peer's configuration in `ns`: files in `dir`, the lab's interface, and HA timers
/// short enough for a test (heartbeat 1 s, the partner is down after 3 s without an answer
/// and without waiting for unanswered clients; the export's values are minutes-safe
/// production ones).
fn start_kea(ns: &Netns, mut doc: Value, name: &str, dir: &Path) -> KillOnDrop {
    let d = &mut doc["Dhcp4"];
    d["interfaces-config"]["interfaces"] = json!([device::CLIENT_IF]);
    d["lease-database"]["name"] = json!(dir.join(format!("{name}-leases4.csv")));
    d["loggers"] = json!([{
        "name": "kea-dhcp4",
        "output_options": [{"output": dir.join(format!("{name}.log"))}],
        "severity": "INFO",
    }]);
    let ha = &mut d["hooks-libraries"][1]["parameters"]["high-availability"][0];
    assert_eq!(ha["this-server-name"], json!(name), "{ha}");
    ha["heartbeat-delay"] = json!(1000);
    ha["max-response-delay"] = json!(3000);
    ha["max-ack-delay"] = json!(1000);
    ha["max-unacked-clients"] = json!(0);
    let conf = dir.join(format!("{name}.json"));
    std::fs::write(&conf, doc.to_string()).expect("kea config");
    let mut cmd = ns.command("kea-dhcp4");
    cmd.arg("-c")
        .arg(&conf)
        .env("KEA_LOCKFILE_DIR", dir)
        .env("KEA_PIDFILE_DIR", dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    KillOnDrop::spawn(&mut cmd)
}

/// The HA state a peer reports (`ha-heartbeat` to its listener), asked from `from`.
fn ha_state(from: &Netns, peer: Ipv4Addr) -> String {
    let out = from.run(
        5,
        &[
            "curl",
            "-s",
            "--max-time",
            "2",
            "-H",
            "Content-Type: application/json",
            "-d",
            r#"{"command": "ha-heartbeat", "service": ["dhcp4"]}"#,
            &format!("http://{peer}:{HA_PORT}/"),
        ],
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    v[0]["arguments"]["state"]
        .as_str()
        .unwrap_or("unreachable")
        .to_string()
}

/// Waits at most `secs` until `peer` reports `state`.
fn wait_state(from: &Netns, peer: Ipv4Addr, state: &str, secs: u64, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let now = ha_state(from, peer);
        if now == state {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "Kea {peer} is {now}, not {state}, after {secs} s:\n{}",
            tail(log)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// `ovl serve --dhcp proxy` on `eth0` of `ns`, logging to `log`; waits for its DHCP socket.
fn start_node(ns: &Netns, site: &TestSite, log: &Path) -> KillOnDrop {
    let mut node = KillOnDrop::spawn(
        ns.command(OVL)
            .arg("--site")
            .arg(site.root())
            .args(["serve", "--dhcp", "proxy", "--interface", device::CLIENT_IF])
            .args(["--http", "0.0.0.0:80", "--tftp", "0.0.0.0:69"])
            .args(["--log-format", "json"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).expect("log")),
    );
    wait_for_text(
        log,
        "\"service\":\"dhcp\"",
        Duration::from_secs(20),
        Some(&mut node),
    );
    node
}

/// `ovl watch` on the site (the one builder); waits until every device's archive exists.
fn start_builder(site: &TestSite, devices: &[Device], log: &Path) -> KillOnDrop {
    let mut watch = KillOnDrop::spawn(
        site.command()
            .arg("watch")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(log).expect("log"))
            .stderr(Stdio::null()),
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    while !devices
        .iter()
        .all(|d| site.archive(&d.mac_text()).is_file())
    {
        assert!(
            Instant::now() < deadline && !watch.exited(),
            "ovl watch did not build every archive:\n{}",
            tail(log)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    watch
}

type Outcome = (usize, Result<Booted, Vec<String>>);

/// Boots `devices[index]` for every index the shared counter hands out, in `ns`.
fn worker(
    ns: &Netns,
    devices: Arc<Vec<Device>>,
    files: Files,
    next: Arc<AtomicUsize>,
    results: Arc<Mutex<Vec<Outcome>>>,
    done: Arc<AtomicUsize>,
) -> std::thread::JoinHandle<()> {
    ns.thread(move || {
        loop {
            let i = next.fetch_add(1, Ordering::SeqCst);
            let Some(dev) = devices.get(i) else { return };
            let deadline = Instant::now() + Duration::from_secs(90);
            let r = device::boot(dev, &files, deadline);
            results.lock().expect("results").push((i, r));
            done.fetch_add(1, Ordering::SeqCst);
        }
    })
}

#[test]
#[ignore = "needs root: network namespaces, Kea"]
fn two_proxy_nodes_and_a_kea_ha_pair_boot_every_device_when_one_of_each_dies_mid_storm() {
    require("kea-dhcp4");
    require("curl");
    let hooks = ovl::serve::dhcp::kea_ha::default_hooks_dir();
    require_file(&hooks.join("libdhcp_ha.so").display().to_string());
    let devices = devices();
    let site = scale_site(&devices);
    let dir = tempfile::tempdir().expect("tempdir");
    let configs = export_ha(&site, dir.path());

    let mut lan = Lan::new();
    let [na, nb] = NODES.map(|ip| ip.to_string());
    let [k1, k2] = KEAS.map(|ip| ip.to_string());
    let node_ns = [
        lan.join("na", &format!("{na}/24")),
        lan.join("nb", &format!("{nb}/24")),
    ];
    let kea_ns = [
        lan.join("k1", &format!("{k1}/24")),
        lan.join("k2", &format!("{k2}/24")),
    ];
    let client_ns = [
        lan.join("c1", "10.214.0.251/24"),
        lan.join("c2", "10.214.0.252/24"),
    ];
    let m = |i: usize| &lan.members[i];

    let builder = start_builder(&site, &devices, &dir.path().join("watch.log"));
    let mut keas: Vec<KillOnDrop> = configs
        .iter()
        .enumerate()
        .map(|(i, doc)| {
            start_kea(
                m(kea_ns[i]),
                doc.clone(),
                &format!("kea{}", i + 1),
                dir.path(),
            )
        })
        .collect();
    let kea_log = |i: usize| dir.path().join(format!("kea{}.log", i + 1));
    wait_state(m(client_ns[0]), KEAS[0], "hot-standby", 60, &kea_log(0));
    wait_state(m(client_ns[0]), KEAS[1], "hot-standby", 60, &kea_log(1));
    let node_logs: Vec<PathBuf> = ["na", "nb"]
        .iter()
        .map(|n| dir.path().join(format!("{n}.log")))
        .collect();
    let mut nodes: Vec<KillOnDrop> = (0..2)
        .map(|i| start_node(m(node_ns[i]), &site, &node_logs[i]))
        .collect();

    let files = |n: usize| {
        let scratch = dir.path().join(format!("dl-{n}"));
        std::fs::create_dir_all(&scratch).expect("scratch");
        Files {
            site: site.root().to_path_buf(),
            scratch,
        }
    };

    // One device with everything up: both nodes answer, the primary gives the address.
    let first = devices[0].clone();
    let f0 = files(0);
    let booted = m(client_ns[0])
        .thread(move || device::boot(&first, &f0, Instant::now() + Duration::from_secs(60)))
        .join()
        .expect("device thread");
    let booted = booted.unwrap_or_else(|e| panic!("the first device did not boot: {e:#?}"));
    eprintln!("first device: {booted:?}");
    let answering: HashSet<Ipv4Addr> = booted.answering_nodes.iter().copied().collect();
    assert_eq!(answering, HashSet::from(NODES), "both nodes answer PXE");
    assert_eq!(booted.kea, KEAS[0], "the primary gives the addresses");
    assert_eq!(
        booted.lease,
        Ipv4Addr::new(10, 214, 0, 50),
        "the reservation"
    );
    assert_eq!(booted.attempts, 1);

    // The storm: the rest, WORKERS at a time in each client namespace.
    let all = Arc::new(devices.clone());
    let next = Arc::new(AtomicUsize::new(1));
    let done = Arc::new(AtomicUsize::new(0));
    let results = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let handles: Vec<_> = (0..2 * WORKERS)
        .map(|w| {
            worker(
                m(client_ns[w % 2]),
                all.clone(),
                files(w + 1),
                next.clone(),
                results.clone(),
                done.clone(),
            )
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    while done.load(Ordering::SeqCst) < KILL_AFTER {
        assert!(Instant::now() < deadline, "the storm does not progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    let killed_at = Instant::now();
    let in_flight = next.load(Ordering::SeqCst).min(STORM + 1) - 1 - done.load(Ordering::SeqCst);
    keas[0].signal(libc::SIGKILL);
    nodes[1].signal(libc::SIGKILL);
    eprintln!(
        "killed Kea {} and node {} after {} of {STORM} devices ({in_flight} in flight), {:?} into the storm",
        KEAS[0],
        NODES[1],
        done.load(Ordering::SeqCst),
        killed_at - started
    );
    for h in handles {
        h.join().expect("worker");
    }
    let elapsed = started.elapsed();

    let results = results.lock().expect("results");
    let failed: Vec<_> = results.iter().filter(|(_, r)| r.is_err()).collect();
    assert!(failed.is_empty(), "devices that never booted: {failed:#?}");
    let booted: Vec<(usize, &Booted)> = results
        .iter()
        .filter_map(|(i, r)| r.as_ref().ok().map(|b| (*i, b)))
        .collect();
    assert_eq!(booted.len(), STORM, "every device of the storm");
    let after: Vec<&(usize, &Booted)> = booted.iter().filter(|(_, b)| b.done > killed_at).collect();
    let restarted = booted.iter().filter(|(_, b)| b.attempts > 1).count();
    let by_standby = booted.iter().filter(|(_, b)| b.kea == KEAS[1]).count();
    let from_b = booted
        .iter()
        .filter(|(_, b)| b.tftp_node == NODES[1] || b.http_node == NODES[1])
        .count();
    eprintln!(
        "storm of {STORM}: {:?}; {} completed after the kill, {restarted} restarted, {by_standby} \
         leased by the standby, {from_b} used node {} for TFTP or HTTP",
        elapsed,
        after.len(),
        NODES[1]
    );
    for (i, b) in &booted {
        if b.done <= killed_at {
            assert_eq!(b.kea, KEAS[0], "device {i} before the kill: the primary");
        }
        if let Some(fixed) = devices[*i].fixed {
            assert_eq!(b.lease, fixed, "device {i}: its reservation");
        }
    }
    for (i, b) in &after {
        assert_eq!(
            b.http_node, NODES[0],
            "device {i} finished after the kill: {b:?}"
        );
    }
    assert!(!after.is_empty(), "the kill came mid-storm");
    assert!(by_standby > 0, "the standby took over");
    let leases: HashSet<Ipv4Addr> = booted.iter().map(|(_, b)| b.lease).collect();
    assert_eq!(leases.len(), booted.len(), "no address given twice");
    wait_state(m(client_ns[0]), KEAS[1], "partner-down", 10, &kea_log(1));
    let log = std::fs::read_to_string(&node_logs[0]).unwrap_or_default();
    assert!(
        !log.contains("boot_script_rewritten"),
        "the nodes agree on the boot script:\n{log}"
    );

    // Recovery: the killed peer and node start again; the pair returns to hot-standby and
    // a device sees both nodes and the primary again.
    keas[0] = start_kea(m(kea_ns[0]), configs[0].clone(), "kea1", dir.path());
    nodes[1] = start_node(m(node_ns[1]), &site, &dir.path().join("nb-again.log"));
    wait_state(m(client_ns[0]), KEAS[0], "hot-standby", 60, &kea_log(0));
    wait_state(m(client_ns[0]), KEAS[1], "hot-standby", 60, &kea_log(1));
    let again = devices[1].clone();
    let f = files(99);
    let booted = m(client_ns[1])
        .thread(move || device::boot(&again, &f, Instant::now() + Duration::from_secs(60)))
        .join()
        .expect("device thread")
        .unwrap_or_else(|e| panic!("no boot after the recovery: {e:#?}"));
    eprintln!("after the recovery: {booted:?}");
    let answering: HashSet<Ipv4Addr> = booted.answering_nodes.iter().copied().collect();
    assert_eq!(answering, HashSet::from(NODES), "both nodes answer again");
    assert_eq!(booted.kea, KEAS[0], "the primary answers again");
    assert_eq!(
        booted.lease,
        Ipv4Addr::new(10, 214, 0, 51),
        "the reservation"
    );
    drop(nodes);
    drop(keas);
    drop(builder);
}

//! The lab of the scale-out tests: the LAN, the site, the Kea pair from `ovl export kea
//! --ha`, the proxy nodes and the builder, started in that order ([`ScaleOut::start`]).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::device::{self, Device};
use crate::harness::netns::{Netns, unique_name};
use crate::harness::proc::{KillOnDrop, noise, require, require_file, wait_for_text};
use crate::harness::site::{OVL, TestSite};

/// The proxy nodes' addresses.
pub const NODES: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 214, 0, 11), Ipv4Addr::new(10, 214, 0, 12)];
/// The Kea peers' addresses (primary, standby); the HA listeners are on port [`HA_PORT`].
pub const KEAS: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 214, 0, 21), Ipv4Addr::new(10, 214, 0, 22)];
pub const HA_PORT: u16 = 8001;
/// Devices of the storm (besides the first one).
pub const STORM: usize = 40;
/// Devices with a reservation (the first ones).
pub const FIXED: usize = 10;

/// The LAN: a switch namespace with a bridge, and members joined to it by veth pairs
/// (`eth0` inside each). Members are removed before the switch.
pub struct Lan {
    /// The members, in the order they joined.
    pub members: Vec<Netns>,
    /// The switch.
    pub switch: Netns,
    base: String,
}

impl Lan {
    pub fn new() -> Lan {
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
    pub fn join(&mut self, role: &str, cidr: &str) -> usize {
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
pub fn scale_site(devices: &[Device]) -> TestSite {
    let site = TestSite::example();
    site.write(
        "ovl.toml",
        "[serve]\nhttp = \"0.0.0.0:80\"\ntftp = \"0.0.0.0:69\"\n\
         [serve.dhcp]\nrange = [\"10.214.0.100\", \"10.214.0.199\"]\n\
         netmask = \"255.255.255.0\"\nrouter = \"10.214.0.1\"\nlease_time = 600\n\
         [boot]\ntries = 2\nretry_delay = 1\n",
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

pub fn devices() -> Vec<Device> {
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
pub fn export_ha(site: &TestSite, dir: &Path) -> Vec<Value> {
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

/// Runs a peer's configuration in `ns`: files in `dir`, the lab's interface, and with
/// `short` HA timers short enough for a storm (heartbeat 1 s, the partner is down after 3 s
/// without an answer, without waiting for unanswered clients) instead of the exported ones.
pub fn start_kea(ns: &Netns, mut doc: Value, name: &str, dir: &Path, short: bool) -> KillOnDrop {
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
    if short {
        ha["heartbeat-delay"] = json!(1000);
        ha["max-response-delay"] = json!(3000);
        ha["max-ack-delay"] = json!(1000);
        ha["max-unacked-clients"] = json!(0);
    }
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
pub fn ha_state(from: &Netns, peer: Ipv4Addr) -> String {
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
pub fn wait_state(from: &Netns, peer: Ipv4Addr, state: &str, secs: u64, log: &Path) {
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

pub fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// `ovl serve --dhcp proxy` on `eth0` of `ns`, logging to `log`; waits for its DHCP socket.
pub fn start_node(ns: &Netns, site: &TestSite, log: &Path) -> KillOnDrop {
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
pub fn start_builder(site: &TestSite, devices: &[Device], log: &Path) -> KillOnDrop {
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

/// The whole set-up, running: processes first in the field order, so they are killed before
/// their namespaces go.
pub struct ScaleOut {
    /// The Kea peers (primary, standby).
    pub keas: Vec<KillOnDrop>,
    /// The proxy nodes.
    pub nodes: Vec<KillOnDrop>,
    /// `ovl watch`.
    pub builder: KillOnDrop,
    /// The LAN and its namespaces.
    pub lan: Lan,
    /// Member indexes of the nodes, the Kea peers and the client namespaces.
    pub node_ns: [usize; 2],
    /// See `node_ns`.
    pub kea_ns: [usize; 2],
    /// See `node_ns`.
    pub client_ns: [usize; 2],
    /// The peers' configurations as exported.
    pub configs: Vec<Value>,
    /// Whether the Kea peers run the test's short HA timers (else the exported ones).
    pub short_timers: bool,
    /// Every device of the tests, the inventory.
    pub devices: Vec<Device>,
    /// Logs, Kea's files, downloads.
    pub dir: tempfile::TempDir,
    /// The shared site folder.
    pub site: TestSite,
}

impl ScaleOut {
    /// Site, export (checked by `kea-dhcp4 -t`), LAN, builder, Kea pair (both in
    /// hot-standby), nodes (both listening); `extra` devices join the inventory.
    pub fn start(extra: &[Device]) -> ScaleOut {
        ScaleOut::start_with(extra, true)
    }

    /// [`ScaleOut::start`], with the exported HA timers unless `short_timers`.
    pub fn start_with(extra: &[Device], short_timers: bool) -> ScaleOut {
        require("kea-dhcp4");
        require("curl");
        let hooks = ovl::serve::dhcp::kea_ha::default_hooks_dir();
        require_file(&hooks.join("libdhcp_ha.so").display().to_string());
        let mut devices = devices();
        devices.extend_from_slice(extra);
        let site = scale_site(&devices);
        let dir = tempfile::tempdir().expect("tempdir");
        let configs = export_ha(&site, dir.path());
        let mut lan = Lan::new();
        let [na, nb] = NODES.map(|ip| format!("{ip}/24"));
        let [k1, k2] = KEAS.map(|ip| format!("{ip}/24"));
        let node_ns = [lan.join("na", &na), lan.join("nb", &nb)];
        let kea_ns = [lan.join("k1", &k1), lan.join("k2", &k2)];
        let client_ns = [
            lan.join("c1", "10.214.0.251/24"),
            lan.join("c2", "10.214.0.252/24"),
        ];
        let builder = start_builder(&site, &devices, &dir.path().join("watch.log"));
        let mut s = ScaleOut {
            keas: Vec::new(),
            nodes: Vec::new(),
            builder,
            lan,
            node_ns,
            kea_ns,
            client_ns,
            configs,
            short_timers,
            devices,
            dir,
            site,
        };
        for i in 0..2 {
            let kea = s.start_kea(i);
            s.keas.push(kea);
        }
        s.wait_state(0, "hot-standby", 60);
        s.wait_state(1, "hot-standby", 60);
        for i in 0..2 {
            let node = s.start_node(i, &format!("n{i}"));
            s.nodes.push(node);
        }
        s
    }

    /// The member namespace `index`.
    pub fn ns(&self, index: usize) -> &Netns {
        &self.lan.members[index]
    }

    /// Kea peer `i` (0: primary) started from its exported configuration.
    pub fn start_kea(&self, i: usize) -> KillOnDrop {
        let name = format!("kea{}", i + 1);
        start_kea(
            self.ns(self.kea_ns[i]),
            self.configs[i].clone(),
            &name,
            self.dir.path(),
            self.short_timers,
        )
    }

    /// Node `i` started, logging to `NAME.log`.
    pub fn start_node(&self, i: usize, name: &str) -> KillOnDrop {
        let log = self.node_log(name);
        start_node(self.ns(self.node_ns[i]), &self.site, &log)
    }

    /// A node's log file.
    pub fn node_log(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.log"))
    }

    /// Waits at most `secs` until Kea peer `i` reports `state`.
    pub fn wait_state(&self, i: usize, state: &str, secs: u64) {
        let log = self.dir.path().join(format!("kea{}.log", i + 1));
        wait_state(self.ns(self.client_ns[0]), KEAS[i], state, secs, &log);
    }

    /// Download folder `n` of the scripted devices.
    pub fn files(&self, n: usize) -> device::Files {
        let scratch = self.dir.path().join(format!("dl-{n}"));
        std::fs::create_dir_all(&scratch).expect("scratch");
        device::Files {
            site: self.site.root().to_path_buf(),
            scratch,
            linger: Duration::from_millis(150),
        }
    }
}

//! End-to-end DHCP tests with real clients (ISC dhclient, busybox udhcpc) and crafted
//! packets, in network namespaces this test creates and removes itself.
//!
//! Each test gets two namespaces named `ovlt-<pid>-<n>-s` (server) and `-c` (client),
//! joined by a veth pair created directly inside them, with addresses in 10.213.0.0/16 only
//! inside them. The server runs in-process on a thread that `setns()`es into the server
//! namespace. Every wait is bounded. Needs root and `ip`; skips loudly otherwise.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dhcproto::v4::{Architecture, DhcpOption, Flags, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Encodable};
use ovl::mac::Mac;
use ovl::serve::dhcp::{DhcpConfig, DhcpServer, DhcpStats, LeaseTable, Mode, Pool};
use tokio_util::sync::CancellationToken;

const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 213, 1, 1);
const SERVER_IF: &str = "veth0";
const CLIENT_IF: &str = "veth1";

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// Returns false (and says so) when the test cannot run here.
fn can_run() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: DHCP namespace tests need root (ip netns, veth)");
        return false;
    }
    true
}

fn run(args: &[&str]) -> Output {
    Command::new("timeout")
        .arg("20")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("spawn")
}

fn must(args: &[&str]) {
    let out = run(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two namespaces joined by a veth pair; removed on drop, even on panic.
struct Lab {
    server_ns: String,
    client_ns: String,
    /// A third namespace (the site's own DHCP server), when a test adds one.
    site_ns: Option<String>,
    dir: tempfile::TempDir,
}

impl Lab {
    fn new() -> Lab {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let base = format!("ovlt-{}-{n}", std::process::id());
        let lab = Lab {
            server_ns: format!("{base}-s"),
            client_ns: format!("{base}-c"),
            site_ns: None,
            dir: tempfile::tempdir().expect("tempdir"),
        };
        must(&["ip", "netns", "add", &lab.server_ns]);
        must(&["ip", "netns", "add", &lab.client_ns]);
        let (s, c) = (lab.server_ns.as_str(), lab.client_ns.as_str());
        must(&[
            "ip", "-n", s, "link", "add", SERVER_IF, "type", "veth", "peer", "name", CLIENT_IF,
            "netns", c,
        ]);
        must(&[
            "ip",
            "-n",
            s,
            "addr",
            "add",
            "10.213.1.1/24",
            "dev",
            SERVER_IF,
        ]);
        for (ns, dev) in [(s, SERVER_IF), (s, "lo"), (c, CLIENT_IF), (c, "lo")] {
            must(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        lab
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Turns the client namespace into a switch: bridge `br0` holding the veth to the
    /// server and a tap port `tap0` for QEMU.
    fn add_bridge(&self) {
        let c = self.client_ns.as_str();
        must(&["ip", "-n", c, "link", "add", "br0", "type", "bridge"]);
        must(&["ip", "-n", c, "link", "set", CLIENT_IF, "master", "br0"]);
        must(&[
            "ip", "netns", "exec", c, "ip", "tuntap", "add", "tap0", "mode", "tap",
        ]);
        must(&["ip", "-n", c, "link", "set", "tap0", "master", "br0"]);
        for dev in ["br0", "tap0"] {
            must(&["ip", "-n", c, "link", "set", dev, "up"]);
        }
    }

    /// Adds the site namespace, joined to the bridge by `veth2`/`veth3`, with 10.213.1.3.
    fn add_site(&mut self) -> String {
        let site = format!("{}-d", self.server_ns.trim_end_matches("-s"));
        must(&["ip", "netns", "add", &site]);
        self.site_ns = Some(site.clone());
        let c = self.client_ns.as_str();
        must(&[
            "ip", "-n", &site, "link", "add", "veth2", "type", "veth", "peer", "name", "veth3",
            "netns", c,
        ]);
        must(&[
            "ip",
            "-n",
            &site,
            "addr",
            "add",
            "10.213.1.3/24",
            "dev",
            "veth2",
        ]);
        must(&["ip", "-n", &site, "link", "set", "veth2", "up"]);
        must(&["ip", "-n", &site, "link", "set", "lo", "up"]);
        must(&["ip", "-n", c, "link", "set", "veth3", "master", "br0"]);
        must(&["ip", "-n", c, "link", "set", "veth3", "up"]);
        site
    }

    /// Starts QEMU on `tap0`, serial console to `log`: BIOS with an e1000 and Debian's
    /// iPXE option ROM, or UEFI (OVMF) with virtio-net and the firmware's own PXE client.
    fn qemu(&self, uefi: bool, mac: &str, log: &Path) -> KillOnDrop {
        let serial = format!("file:{}", log.display());
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.client_ns, "qemu-system-x86_64"])
            .args([
                "-nographic",
                "-serial",
                &serial,
                "-monitor",
                "none",
                "-m",
                "256",
            ])
            .args(["-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no"]);
        if uefi {
            let vars = self.path("OVMF_VARS.fd");
            std::fs::copy("/usr/share/OVMF/OVMF_VARS_4M.fd", &vars).expect("copy OVMF vars");
            cmd.args([
                "-drive",
                "if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd",
            ])
            .arg("-drive")
            .arg(format!("if=pflash,format=raw,file={}", vars.display()))
            .arg("-device")
            .arg(format!("virtio-net-pci,netdev=n0,mac={mac},romfile="));
        } else {
            cmd.args(["-boot", "n", "-device"]).arg(format!(
                "e1000,netdev=n0,mac={mac},romfile=/usr/lib/ipxe/qemu/pxe-e1000.rom"
            ));
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn qemu");
        KillOnDrop(child)
    }

    /// Gives the client interface another MAC (and drops its addresses).
    fn set_client_mac(&self, mac: &str) {
        let c = self.client_ns.as_str();
        must(&["ip", "-n", c, "addr", "flush", "dev", CLIENT_IF]);
        must(&["ip", "-n", c, "link", "set", CLIENT_IF, "down"]);
        must(&["ip", "-n", c, "link", "set", CLIENT_IF, "address", mac]);
        must(&["ip", "-n", c, "link", "set", CLIENT_IF, "up"]);
    }

    /// Runs a command inside the client namespace, bounded by `secs`.
    fn client(&self, secs: u32, args: &[&str]) -> Output {
        let secs = secs.to_string();
        let mut all = vec![secs.as_str(), "ip", "netns", "exec", &self.client_ns];
        all.extend_from_slice(args);
        Command::new("timeout")
            .args(&all)
            .stdin(Stdio::null())
            .output()
            .expect("spawn client")
    }

    fn config(&self, mode: Mode) -> DhcpConfig {
        let mut cfg = DhcpConfig::new(mode, SERVER_IP, self.path("leases.json"));
        cfg.interface = Some(SERVER_IF.to_string());
        if mode == Mode::Full {
            cfg.pools = vec![Pool {
                start: Ipv4Addr::new(10, 213, 1, 100),
                end: Ipv4Addr::new(10, 213, 1, 150),
                netmask: Ipv4Addr::new(255, 255, 255, 0),
                router: Some(SERVER_IP),
                dns: vec![SERVER_IP],
                lease_time: 600,
            }];
        }
        cfg
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Clients left running (daemonized dhclient, udhcpc) live only in our namespace.
        let site = self.site_ns.clone();
        for ns in [Some(&self.client_ns), site.as_ref(), Some(&self.server_ns)]
            .into_iter()
            .flatten()
        {
            let out = run(&["ip", "netns", "pids", ns]);
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse::<i32>() {
                    // SAFETY: plain kill(2) on a process of our own test namespace.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
            let _ = run(&["ip", "netns", "del", ns]);
        }
    }
}

/// Runs `f` on a fresh thread inside network namespace `ns`.
fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = File::open(&path).expect("open netns");
        // SAFETY: setns on a valid namespace fd only affects this thread.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", io::Error::last_os_error());
        f()
    })
}

/// The in-process server; stopped (and its leases flushed) on drop.
struct Server {
    token: CancellationToken,
    thread: Option<JoinHandle<io::Result<()>>>,
    leases: Arc<LeaseTable>,
    stats: Arc<DhcpStats>,
}

impl Server {
    fn start(lab: &Lab, cfg: DhcpConfig) -> Server {
        let token = CancellationToken::new();
        let (tx, rx) = mpsc::channel();
        let stop = token.clone();
        let thread = in_netns(&lab.server_ns, move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let server = match DhcpServer::bind(cfg).await {
                    Ok(server) => server,
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                        return Err(e);
                    }
                };
                let _ = tx.send(Ok((server.leases(), server.stats())));
                server.run(stop).await
            })
        });
        let (leases, stats) = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("server started")
            .expect("server bound");
        Server {
            token,
            thread: Some(thread),
            leases,
            stats,
        }
    }

    fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.token.cancel();
        if let Some(t) = self.thread.take() {
            let result = t.join().expect("server thread");
            if !std::thread::panicking() {
                result.expect("server run");
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Parses the `key=value …` lines our client scripts write.
fn events(log: &Path) -> Vec<HashMap<String, String>> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .map(|line| {
            line.split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

fn write_script(path: &Path, body: &str) {
    std::fs::write(path, format!("#!/bin/sh\n{body}")).expect("script");
    Command::new("chmod")
        .arg("755")
        .arg(path)
        .status()
        .expect("chmod");
}

/// Records udhcpc's events and configures the address it got (inside the namespace).
fn udhcpc_script(lab: &Lab, name: &str) -> (PathBuf, PathBuf) {
    let script = lab.path(&format!("{name}.sh"));
    let log = lab.path(&format!("{name}.log"));
    write_script(
        &script,
        &format!(
            r#"echo "event=$1 ip=$ip mask=$mask subnet=$subnet router=$router dns=$dns lease=$lease serverid=$serverid siaddr=$siaddr boot_file=$boot_file bootfile=$bootfile tftp=$tftp" >> {log}
case "$1" in bound|renew) ip addr replace "$ip/$mask" dev "$interface" ;; esac
exit 0
"#,
            log = log.display()
        ),
    );
    (script, log)
}

fn udhcpc(lab: &Lab, script: &Path, extra: &[&str]) -> Output {
    let script = script.display().to_string();
    let mut args = vec![
        "busybox", "udhcpc", "-i", CLIENT_IF, "-n", "-q", "-f", "-s", &script, "-t", "5", "-T", "1",
    ];
    args.extend_from_slice(extra);
    lab.client(30, &args)
}

fn last_event(log: &Path, event: &str) -> HashMap<String, String> {
    events(log)
        .into_iter()
        .rev()
        .find(|e| e.get("event").map(String::as_str) == Some(event))
        .unwrap_or_else(|| {
            panic!(
                "no {event} in {}",
                std::fs::read_to_string(log).unwrap_or_default()
            )
        })
}

/// A child process killed (by its pid) when dropped.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal(child: &KillOnDrop, sig: i32) {
    let pid = i32::try_from(child.0.id()).expect("pid");
    // SAFETY: kill(2) of a child this test spawned (`ip netns exec` execs into udhcpc).
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
}

/// Waits (at most 15 s) until the log holds `count` events named `event`; returns the last.
fn wait_event(log: &Path, event: &str, count: usize) -> HashMap<String, String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let found: Vec<_> = events(log)
            .into_iter()
            .filter(|e| e.get("event").map(String::as_str) == Some(event))
            .collect();
        if found.len() >= count {
            return found.into_iter().next_back().unwrap_or_default();
        }
        assert!(
            Instant::now() < deadline,
            "no {event} #{count} in {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn dhclient_gets_fixed_and_pool_addresses_and_keeps_them_on_reboot() {
    if !can_run() {
        return;
    }
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
fn udhcpc_renews_and_a_restarted_server_keeps_the_lease() {
    if !can_run() {
        return;
    }
    let lab = Lab::new();
    let cfg = lab.config(Mode::Full);
    let server = Server::start(&lab, cfg.clone());
    lab.set_client_mac("52:54:00:22:00:01");
    let (script, log) = udhcpc_script(&lab, "renew");
    // udhcpc stays in the foreground; SIGUSR1 makes it renew now (its T1 is at least 61 s),
    // SIGUSR2 makes it release.
    let s = script.display().to_string();
    let child = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.client_ns,
            "busybox",
            "udhcpc",
            "-i",
            CLIENT_IF,
            "-f",
            "-s",
            &s,
            "-t",
            "5",
            "-T",
            "1",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn udhcpc");
    let child = KillOnDrop(child);
    let bound = wait_event(&log, "bound", 1);
    assert_eq!(bound["ip"], "10.213.1.100");
    assert_eq!(bound["lease"], "600");
    signal(&child, libc::SIGUSR1);
    let renew = wait_event(&log, "renew", 1);
    assert_eq!(renew["ip"], "10.213.1.100", "renewal keeps the address");
    signal(&child, libc::SIGUSR1);
    assert_eq!(wait_event(&log, "renew", 2)["ip"], "10.213.1.100");
    let acks = server.stats.snapshot().acks;
    assert!(acks >= 3, "renewals are acknowledged: {acks}");
    let mac = Mac([0x52, 0x54, 0x00, 0x22, 0x00, 0x01]);
    assert_eq!(
        server.leases.lease_for_mac(&mac),
        Some(Ipv4Addr::new(10, 213, 1, 100))
    );
    // SIGUSR2: udhcpc releases its lease (DHCPRELEASE, unicast to the server).
    signal(&child, libc::SIGUSR2);
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
fn udhcpc_as_pxe_and_ipxe_client_gets_boot_file_by_architecture() {
    if !can_run() {
        return;
    }
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

// ---- crafted packets ----

fn discover(mac: [u8; 6], opts: Vec<DhcpOption>) -> Message {
    let mut m = Message::default();
    m.set_opcode(Opcode::BootRequest)
        .set_chaddr(&mac)
        .set_flags(Flags::default().set_broadcast());
    m.opts_mut()
        .insert(DhcpOption::MessageType(MessageType::Discover));
    for o in opts {
        m.opts_mut().insert(o);
    }
    m
}

fn pxe_opts(arch: u16) -> Vec<DhcpOption> {
    vec![
        DhcpOption::ClassIdentifier(b"PXEClient:Arch:00007:UNDI:003016".to_vec()),
        DhcpOption::ClientSystemArchitecture(Architecture::from(arch)),
        DhcpOption::ClientMachineIdentifier(vec![0, 0x11, 0x22, 0x33]),
    ]
}

/// Sends `msg` from `bind` (bound to the client interface) to `to` and collects the replies
/// with the request's xid until `wait` has passed.
fn exchange(
    lab: &Lab,
    bind: SocketAddrV4,
    to: SocketAddrV4,
    msg: &Message,
    wait: Duration,
) -> Vec<(Message, SocketAddrV4)> {
    let bytes = msg.to_vec().unwrap();
    let xid = msg.xid();
    in_netns(&lab.client_ns, move || {
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
        sock.set_reuse_address(true).unwrap();
        sock.set_broadcast(true).unwrap();
        sock.bind_device(Some(CLIENT_IF.as_bytes())).unwrap();
        sock.bind(&bind.into()).unwrap();
        let sock: UdpSocket = sock.into();
        sock.send_to(&bytes, to).unwrap();
        let deadline = Instant::now() + wait;
        let mut replies = Vec::new();
        let mut buf = [0u8; 1500];
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            match sock.recv_from(&mut buf) {
                Ok((len, std::net::SocketAddr::V4(from))) => {
                    assert!(len >= 300, "reply of {len} bytes is not padded to 300");
                    let m = Message::from_bytes(&buf[..len]).unwrap();
                    if m.xid() == xid && m.opcode() == Opcode::BootReply {
                        replies.push((m, from));
                    }
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        replies
    })
    .join()
    .unwrap()
}

fn fname(m: &Message) -> String {
    String::from_utf8_lossy(m.fname().unwrap_or_default())
        .trim_end_matches('\0')
        .to_string()
}

#[test]
fn proxy_mode_answers_pxe_clients_only_without_addresses() {
    if !can_run() {
        return;
    }
    let lab = Lab::new();
    let server = Server::start(&lab, lab.config(Mode::Proxy));
    lab.set_client_mac("52:54:00:24:00:01");
    let mac = [0x52, 0x54, 0x00, 0x24, 0x00, 0x01];
    let any68 = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68);
    let bcast67 = SocketAddrV4::new(Ipv4Addr::BROADCAST, 67);

    let replies = exchange(
        &lab,
        any68,
        bcast67,
        &discover(mac, pxe_opts(7)),
        Duration::from_secs(3),
    );
    assert_eq!(replies.len(), 1, "one proxy offer");
    let (offer, from) = &replies[0];
    assert_eq!(offer.opts().msg_type(), Some(MessageType::Offer));
    assert_eq!(
        offer.yiaddr(),
        Ipv4Addr::UNSPECIFIED,
        "proxyDHCP gives no address"
    );
    assert_eq!(offer.siaddr(), SERVER_IP);
    assert_eq!(fname(offer), "ipxe.efi");
    assert_eq!(*from, SocketAddrV4::new(SERVER_IP, 67));
    assert_eq!(
        offer.opts().get(OptionCode::ClassIdentifier),
        Some(&DhcpOption::ClassIdentifier(b"PXEClient".to_vec()))
    );
    assert_eq!(
        offer.opts().get(OptionCode::ClientMachineIdentifier),
        Some(&DhcpOption::ClientMachineIdentifier(vec![
            0, 0x11, 0x22, 0x33
        ]))
    );
    assert!(offer.opts().get(OptionCode::AddressLeaseTime).is_none());

    // A plain client, crafted or real, gets nothing.
    assert!(
        exchange(
            &lab,
            any68,
            bcast67,
            &discover(mac, vec![]),
            Duration::from_secs(2)
        )
        .is_empty()
    );
    let (script, log) = udhcpc_script(&lab, "plain-proxy");
    let s = script.display().to_string();
    let out = lab.client(
        15,
        &[
            "busybox", "udhcpc", "-i", CLIENT_IF, "-n", "-q", "-f", "-s", &s, "-t", "2", "-T", "1",
        ],
    );
    assert!(!out.status.success(), "udhcpc got a lease from a proxy");
    assert!(
        events(&log)
            .iter()
            .all(|e| e.get("event").map(String::as_str) != Some("bound"))
    );

    // Boot-server exchange on 4011, once the client has its address from the site server:
    // the ACK comes back unicast to the client's address and port.
    must(&[
        "ip",
        "-n",
        &lab.client_ns,
        "addr",
        "add",
        "10.213.1.77/24",
        "dev",
        CLIENT_IF,
    ]);
    let mut req = discover(mac, pxe_opts(0));
    req.opts_mut()
        .insert(DhcpOption::MessageType(MessageType::Request));
    req.set_flags(Flags::default())
        .set_ciaddr(Ipv4Addr::new(10, 213, 1, 77));
    let client = SocketAddrV4::new(Ipv4Addr::new(10, 213, 1, 77), 68);
    let replies = exchange(
        &lab,
        client,
        SocketAddrV4::new(SERVER_IP, 4011),
        &req,
        Duration::from_secs(3),
    );
    assert_eq!(replies.len(), 1);
    let (ack, from) = &replies[0];
    assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));
    assert_eq!(fname(ack), "undionly.kpxe");
    assert_eq!(*from, SocketAddrV4::new(SERVER_IP, 4011));
    assert!(server.leases.list().is_empty());
    let stats = server.stats.snapshot();
    assert_eq!((stats.offers, stats.acks), (1, 1), "{stats:?}");
    server.stop();
}

#[test]
fn relayed_requests_get_the_relay_pool_and_go_back_to_the_relay() {
    if !can_run() {
        return;
    }
    let lab = Lab::new();
    let mut cfg = lab.config(Mode::Full);
    cfg.pools.push(Pool {
        start: Ipv4Addr::new(10, 213, 2, 100),
        end: Ipv4Addr::new(10, 213, 2, 110),
        netmask: Ipv4Addr::new(255, 255, 255, 0),
        router: Some(Ipv4Addr::new(10, 213, 2, 1)),
        dns: vec![],
        lease_time: 300,
    });
    let server = Server::start(&lab, cfg);
    // The client namespace plays the relay: 10.213.1.2 on the server's link, 10.213.2.1 on
    // the relayed subnet; the server routes that subnet through it.
    let c = lab.client_ns.as_str();
    must(&[
        "ip",
        "-n",
        c,
        "addr",
        "add",
        "10.213.1.2/24",
        "dev",
        CLIENT_IF,
    ]);
    must(&[
        "ip",
        "-n",
        c,
        "addr",
        "add",
        "10.213.2.1/24",
        "dev",
        CLIENT_IF,
    ]);
    must(&[
        "ip",
        "-n",
        &lab.server_ns,
        "route",
        "add",
        "10.213.2.0/24",
        "via",
        "10.213.1.2",
    ]);

    let mut msg = discover([0x52, 0x54, 0x00, 0x25, 0x00, 0x01], vec![]);
    msg.set_giaddr(Ipv4Addr::new(10, 213, 2, 1))
        .set_hops(1)
        .set_flags(Flags::default());
    let relay = SocketAddrV4::new(Ipv4Addr::new(10, 213, 2, 1), 67);
    let replies = exchange(
        &lab,
        relay,
        SocketAddrV4::new(SERVER_IP, 67),
        &msg,
        Duration::from_secs(3),
    );
    assert_eq!(replies.len(), 1, "the offer reaches the relay's port 67");
    let (offer, _) = &replies[0];
    assert_eq!(offer.yiaddr(), Ipv4Addr::new(10, 213, 2, 100));
    assert_eq!(offer.giaddr(), Ipv4Addr::new(10, 213, 2, 1));
    assert_eq!(
        offer.opts().get(OptionCode::Router),
        Some(&DhcpOption::Router(vec![Ipv4Addr::new(10, 213, 2, 1)]))
    );
    server.stop();
}

#[test]
fn perfdhcp_as_a_relay_gets_offers_and_acks_from_the_relay_pool() {
    if !can_run() || !have("perfdhcp") {
        return;
    }
    let lab = Lab::new();
    let mut cfg = lab.config(Mode::Full);
    cfg.pools.push(Pool {
        start: Ipv4Addr::new(10, 213, 2, 100),
        end: Ipv4Addr::new(10, 213, 2, 199),
        netmask: Ipv4Addr::new(255, 255, 255, 0),
        router: Some(Ipv4Addr::new(10, 213, 2, 1)),
        dns: vec![],
        lease_time: 300,
    });
    let server = Server::start(&lab, cfg);
    let c = lab.client_ns.as_str();
    must(&[
        "ip",
        "-n",
        c,
        "addr",
        "add",
        "10.213.1.2/24",
        "dev",
        CLIENT_IF,
    ]);
    must(&[
        "ip",
        "-n",
        c,
        "addr",
        "add",
        "10.213.2.1/24",
        "dev",
        CLIENT_IF,
    ]);
    must(&[
        "ip",
        "-n",
        &lab.server_ns,
        "route",
        "add",
        "10.213.2.0/24",
        "via",
        "10.213.1.2",
    ]);
    // perfdhcp relays from its local address (giaddr 10.213.2.1) to the server: 20
    // simulated clients, each DISCOVER-OFFER-REQUEST-ACK; -W waits for the last replies.
    let out = lab.client(
        40,
        &[
            "perfdhcp",
            "-4",
            "-l",
            "10.213.2.1",
            "-r",
            "10",
            "-n",
            "20",
            "-R",
            "20",
            "-p",
            "10",
            "-W",
            "2000000",
            "10.213.1.1",
        ],
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Exit 0: every 4-way exchange completed.
    assert!(out.status.success(), "perfdhcp: {:?}\n{text}", out.status);
    let leases = server.leases.list();
    assert_eq!(leases.len(), 20, "{leases:?}");
    assert!(
        leases
            .iter()
            .all(|l| (100..=199).contains(&l.ip.octets()[3]) && l.ip.octets()[2] == 2),
        "{leases:?}"
    );
    let stats = server.stats.snapshot();
    assert_eq!(
        (stats.offers, stats.acks, stats.naks),
        (20, 20, 0),
        "{stats:?}\n{text}"
    );
    server.stop();
}

/// Waits (at most `secs`) until `log` contains `needle`.
fn wait_log(log: &Path, needle: &str, secs: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let text = String::from_utf8_lossy(&std::fs::read(log).unwrap_or_default()).into_owned();
        if text.contains(needle) {
            eprintln!("--- {} ---\n{text}", log.display());
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{needle:?} never appeared in:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn qemu_ipxe_gets_its_script_url_in_full_mode() {
    if !can_run()
        || !have("qemu-system-x86_64")
        || !Path::new("/usr/lib/ipxe/qemu/pxe-e1000.rom").exists()
    {
        return;
    }
    let lab = Lab::new();
    lab.add_bridge();
    let server = Server::start(&lab, lab.config(Mode::Full));
    let log = lab.path("qemu.log");
    let _vm = lab.qemu(false, "52:54:00:27:00:01", &log);
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
fn qemu_ipxe_boots_through_the_proxy_next_to_the_site_dhcp_server() {
    if !can_run()
        || !have("qemu-system-x86_64")
        || !have("dnsmasq")
        || !Path::new("/usr/lib/ipxe/qemu/pxe-e1000.rom").exists()
    {
        return;
    }
    let mut lab = Lab::new();
    lab.add_bridge();
    // The site's own DHCP server: addresses only, no boot information.
    let _dnsmasq = site_dnsmasq(&mut lab);
    let server = Server::start(&lab, lab.config(Mode::Proxy));
    let log = lab.path("qemu.log");
    let _vm = lab.qemu(false, "52:54:00:28:00:01", &log);
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
    in_netns(&lab.server_ns, move || {
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

fn have_ovmf() -> bool {
    let found = Path::new("/usr/share/OVMF/OVMF_CODE_4M.fd").exists() && have("qemu-system-x86_64");
    if !found {
        eprintln!("SKIPPED: OVMF or QEMU is not installed");
    }
    found
}

#[test]
fn ovmf_uefi_pxe_gets_ipxe_efi_in_full_mode() {
    if !can_run() || !have_ovmf() {
        return;
    }
    let lab = Lab::new();
    lab.add_bridge();
    let server = Server::start(&lab, lab.config(Mode::Full));
    let rrq = tftp_rrq_listener(&lab, 150);
    let log = lab.path("ovmf.log");
    let _vm = lab.qemu(true, "52:54:00:29:00:01", &log);
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
fn ovmf_uefi_pxe_gets_ipxe_efi_through_the_proxy() {
    if !can_run() || !have_ovmf() || !have("dnsmasq") {
        return;
    }
    let mut lab = Lab::new();
    lab.add_bridge();
    let _dnsmasq = site_dnsmasq(&mut lab);
    let server = Server::start(&lab, lab.config(Mode::Proxy));
    let rrq = tftp_rrq_listener(&lab, 150);
    let log = lab.path("ovmf.log");
    let _vm = lab.qemu(true, "52:54:00:2a:00:01", &log);
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
    let site = lab.add_site();
    let leases = lab.path("dnsmasq.leases");
    let pid = lab.path("dnsmasq.pid");
    let dnsmasq = Command::new("ip")
        .args([
            "netns",
            "exec",
            &site,
            "dnsmasq",
            "--keep-in-foreground",
            "--conf-file=/dev/null",
        ])
        .args([
            "--port=0",
            "--user=root",
            "--interface=veth2",
            "--bind-interfaces",
            "--no-ping",
        ])
        .args(["--dhcp-range=10.213.1.200,10.213.1.210,255.255.255.0,600"])
        .arg(format!("--dhcp-leasefile={}", leases.display()))
        .arg(format!("--pid-file={}", pid.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn dnsmasq");
    KillOnDrop(dnsmasq)
}

fn have(program: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        eprintln!("SKIPPED: {program} is not installed");
    }
    found
}

#[test]
fn garbage_is_dropped_and_counted() {
    if !can_run() {
        return;
    }
    let lab = Lab::new();
    let server = Server::start(&lab, lab.config(Mode::Full));
    must(&[
        "ip",
        "-n",
        &lab.client_ns,
        "addr",
        "add",
        "10.213.1.9/24",
        "dev",
        CLIENT_IF,
    ]);
    in_netns(&lab.client_ns, || {
        let sock = UdpSocket::bind("10.213.1.9:6800").unwrap();
        for len in [0usize, 1, 100, 239, 240, 300, 1400] {
            sock.send_to(&vec![0xff; len], (SERVER_IP, 67)).unwrap();
        }
    })
    .join()
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.stats.snapshot().malformed < 7 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(server.stats.snapshot().malformed, 7);
    // Still serving.
    lab.set_client_mac("52:54:00:26:00:01");
    let (script, log) = udhcpc_script(&lab, "after-garbage");
    assert!(udhcpc(&lab, &script, &[]).status.success());
    assert_eq!(last_event(&log, "bound")["ip"], "10.213.1.100");
    server.stop();
}

#[test]
fn bind_refuses_an_invalid_configuration() {
    let dir = tempfile::tempdir().unwrap();
    // Full mode without a pool for the server's subnet.
    let cfg = DhcpConfig::new(Mode::Full, SERVER_IP, dir.path().join("leases.json"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let err = rt.block_on(DhcpServer::bind(cfg)).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("10.213.1.1"), "{err}");
    // A corrupt lease file is reported with its path, not silently emptied.
    let leases = dir.path().join("bad.json");
    std::fs::write(&leases, "{not json").unwrap();
    let mut cfg = DhcpConfig::new(Mode::Full, SERVER_IP, leases.clone());
    cfg.pools = vec![Pool {
        start: Ipv4Addr::new(10, 213, 1, 100),
        end: Ipv4Addr::new(10, 213, 1, 150),
        netmask: Ipv4Addr::new(255, 255, 255, 0),
        router: None,
        dns: vec![],
        lease_time: 600,
    }];
    let err = rt.block_on(DhcpServer::bind(cfg)).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert!(err.to_string().contains("bad.json"), "{err}");
}

// ---- the exported configurations, run by the real servers ----

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

fn spawn_in(ns: &str, args: &[&str], envs: &[(&str, &Path)]) -> KillOnDrop {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns]).args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn server");
    KillOnDrop(child)
}

#[test]
fn exported_dnsmasq_config_serves_like_ovl() {
    if !can_run() || !have("dnsmasq") {
        return;
    }
    let lab = Lab::new();
    let conf = lab.path("dnsmasq.conf");
    std::fs::write(&conf, ovl::serve::dhcp::export::dnsmasq(&export_site())).unwrap();
    let leases = lab.path("dnsmasq.leases");
    let pid = lab.path("dnsmasq.pid");
    let _server = spawn_in(
        &lab.server_ns,
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
fn exported_isc_dhcpd_config_serves_like_ovl() {
    if !can_run() || !have("dhcpd") {
        return;
    }
    let lab = Lab::new();
    let conf = lab.path("dhcpd.conf");
    std::fs::write(&conf, ovl::serve::dhcp::export::isc_dhcpd(&export_site())).unwrap();
    let leases = lab.path("dhcpd.leases");
    std::fs::write(&leases, "").unwrap();
    let pid = lab.path("dhcpd.pid");
    let _server = spawn_in(
        &lab.server_ns,
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
fn exported_kea_config_serves_like_ovl() {
    if !can_run() || !have("kea-dhcp4") {
        return;
    }
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
    let _server = spawn_in(
        &lab.server_ns,
        &["kea-dhcp4", "-c", conf.to_str().unwrap()],
        &[("KEA_LOCKFILE_DIR", &dir), ("KEA_PIDFILE_DIR", &dir)],
    );
    check_exported_behaviour(&lab, "kea");
}

/// `ovl serve --dhcp full` as users run it: the built binary in the server namespace, its
/// settings from `ovl.toml` and the fixed address from `devices.toml`.
#[test]
fn the_ovl_binary_serves_full_dhcp_with_fixed_addresses_from_the_inventory() {
    if !can_run() {
        return;
    }
    let lab = Lab::new();
    let site = lab.path("site");
    let ovl = env!("CARGO_BIN_EXE_ovl");
    let out = Command::new(ovl).arg("init").arg(&site).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    // No [boot] server: the address comes from --interface.
    std::fs::write(
        site.join("ovl.toml"),
        "[serve]\nconfigs_access = \"owner\"\n\
         [serve.dhcp]\nrange = [\"10.213.1.100\", \"10.213.1.150\"]\n\
         netmask = \"255.255.255.0\"\nrouter = \"10.213.1.1\"\nlease_time = 300\n",
    )
    .unwrap();
    std::fs::write(
        site.join("devices.toml"),
        "[[device]]\nmac = \"52:54:00:2c:00:01\"\nprofile = \"S\"\nhostname = \"fixed-one\"\n\
         ip = \"10.213.1.50\"\n\n[[device]]\nmac = \"52:54:00:2c:00:02\"\nprofile = \"S\"\n",
    )
    .unwrap();
    let out = Command::new(ovl)
        .arg("--site")
        .arg(&site)
        .args(["build", "--all"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");

    let log = lab.path("serve.log");
    let child = Command::new("ip")
        .args(["netns", "exec", &lab.server_ns, ovl, "--site"])
        .arg(&site)
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
        .stderr(File::create(&log).unwrap())
        .spawn()
        .expect("spawn ovl serve");
    let server = KillOnDrop(child);
    let listening = wait_log(&log, "\"service\":\"dhcp\"", 15);
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
    signal(&server, libc::SIGTERM);
    let mut server = server;
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = server.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "ovl serve did not stop");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status:?}");
    let leases = std::fs::read_to_string(site.join(".ovl-state/dhcp-leases.json")).unwrap();
    assert!(
        leases.contains("10.213.1.50") && leases.contains(&ip.to_string()),
        "{leases}"
    );
}

//! The DHCP lab: a server and a client namespace joined by a veth pair, optionally a bridge
//! with a tap port (QEMU) and a third namespace for the site's own DHCP server; and ovl's
//! DHCP server running in-process inside the server namespace.

use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use ovl::serve::dhcp::{DhcpConfig, DhcpServer, DhcpStats, LeaseTable, Mode, Pool};
use tokio_util::sync::CancellationToken;

use crate::harness::netns::{Netns, unique_name};
use crate::harness::proc::KillOnDrop;
use crate::harness::qemu::{self, Firmware};

/// The server's address, on [`SERVER_IF`].
pub const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 213, 1, 1);
/// The server's end of the veth pair.
pub const SERVER_IF: &str = "veth0";
/// The client's end of the veth pair.
pub const CLIENT_IF: &str = "veth1";

/// Two namespaces joined by a veth pair and a scratch folder; removed on drop, even on
/// panic (the client side first).
pub struct Lab {
    /// The client namespace (`veth1`), a switch once [`Lab::add_bridge`] ran.
    pub client_ns: Netns,
    /// A third namespace (the site's own DHCP server), when a test adds one.
    pub site_ns: Option<Netns>,
    /// The server namespace (`veth0`, [`SERVER_IP`]).
    pub server_ns: Netns,
    /// Scratch space: scripts, logs, lease files, configurations.
    pub dir: tempfile::TempDir,
}

impl Lab {
    /// The two namespaces, joined and addressed.
    pub fn new() -> Lab {
        let base = unique_name("ovlt");
        let server_ns = Netns::new(&format!("{base}-s"));
        let client_ns = Netns::new(&format!("{base}-c"));
        server_ns.veth(SERVER_IF, &client_ns, CLIENT_IF);
        server_ns.addr("10.213.1.1/24", SERVER_IF);
        server_ns.up(SERVER_IF);
        client_ns.up(CLIENT_IF);
        Lab {
            client_ns,
            site_ns: None,
            server_ns,
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// A path in the lab's scratch folder.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Turns the client namespace into a switch: bridge `br0` holding the veth to the
    /// server and a tap port `tap0` for QEMU.
    pub fn add_bridge(&self) {
        let c = &self.client_ns;
        c.bridge("br0");
        c.enslave(CLIENT_IF, "br0");
        c.tap("tap0");
        c.enslave("tap0", "br0");
        for dev in ["br0", "tap0"] {
            c.up(dev);
        }
    }

    /// Adds the site namespace, joined to the bridge by `veth2`/`veth3`, with 10.213.1.3.
    pub fn add_site(&mut self) -> &Netns {
        let name = format!("{}-d", self.server_ns.name().trim_end_matches("-s"));
        let site = Netns::new(&name);
        site.veth("veth2", &self.client_ns, "veth3");
        site.addr("10.213.1.3/24", "veth2");
        site.up("veth2");
        self.client_ns.enslave("veth3", "br0");
        self.client_ns.up("veth3");
        self.site_ns.insert(site)
    }

    /// Starts QEMU on `tap0`, serial console to `log`.
    pub fn qemu(&self, firmware: Firmware, mac: &str, log: &Path) -> KillOnDrop {
        qemu::spawn(&mut qemu::command(
            &self.client_ns,
            "tap0",
            firmware,
            mac,
            log,
            &self.path("OVMF_VARS.fd"),
        ))
    }

    /// Gives the client interface another MAC (and drops its addresses).
    pub fn set_client_mac(&self, mac: &str) {
        let c = &self.client_ns;
        c.ip(&["addr", "flush", "dev", CLIENT_IF]);
        c.ip(&["link", "set", CLIENT_IF, "down"]);
        c.ip(&["link", "set", CLIENT_IF, "address", mac]);
        c.ip(&["link", "set", CLIENT_IF, "up"]);
    }

    /// Runs a command inside the client namespace, bounded by `secs`.
    pub fn client(&self, secs: u64, args: &[&str]) -> Output {
        self.client_ns.run(secs, args)
    }

    /// The server's settings in `mode`: on [`SERVER_IF`], leases in the scratch folder, and
    /// in full mode a pool 10.213.1.100-150 with the server as router and DNS.
    pub fn config(&self, mode: Mode) -> DhcpConfig {
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

/// The in-process server; stopped (and its leases flushed) on drop.
pub struct Server {
    token: CancellationToken,
    thread: Option<JoinHandle<io::Result<()>>>,
    /// The server's lease table.
    pub leases: Arc<LeaseTable>,
    /// The server's counters.
    pub stats: Arc<DhcpStats>,
}

impl Server {
    /// Binds the server inside the lab's server namespace and runs it on its own thread.
    pub fn start(lab: &Lab, cfg: DhcpConfig) -> Server {
        let token = CancellationToken::new();
        let (tx, rx) = mpsc::channel();
        let stop = token.clone();
        let thread = lab.server_ns.thread(move || {
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

    /// Stops the server; it must have run without error.
    pub fn stop(mut self) {
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

//! The thin tokio layer: sockets in, [`Engine`] decisions out, leases flushed to disk.

use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::Arc;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use super::config::{DhcpConfig, Mode};
use super::engine::{Engine, Listener, Reply};
use super::leases::{LeaseTable, unix_now};
use super::stats::DhcpStats;

/// Largest datagram read; larger ones are truncated and then fail to decode.
const MAX_DATAGRAM: usize = 65_535;
/// Receive buffer asked for each socket.
const RECV_BUFFER: usize = 4 << 20;
/// Requests already waiting that are decided together before one lease save.
const MAX_BATCH: usize = 255;

/// Called with every reply just before it is sent (boot events of `/status`).
#[derive(Clone)]
pub struct ReplyHook(pub Arc<dyn Fn(&Reply) + Send + Sync>);

impl std::fmt::Debug for ReplyHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReplyHook")
    }
}

/// A bound DHCP server, ready to [`run`](DhcpServer::run).
#[derive(Debug)]
pub struct DhcpServer {
    on_reply: Option<ReplyHook>,
    engine: Engine,
    cfg: Arc<DhcpConfig>,
    leases: Arc<LeaseTable>,
    stats: Arc<DhcpStats>,
    server_sock: UdpSocket,
    boot_sock: UdpSocket,
}

impl DhcpServer {
    /// Validates `cfg`, loads the lease file and binds the sockets: the server port and
    /// the PXE boot-server port (4011); each with `SO_BROADCAST`, `SO_REUSEADDR`
    /// and, when an interface is named, `SO_BINDTODEVICE`.
    ///
    /// Errors: `InvalidInput` for a configuration that does not validate, `InvalidData`
    /// for a lease file that does not parse (full mode), others from the sockets.
    pub async fn bind(cfg: DhcpConfig) -> io::Result<Self> {
        let leases = if cfg.mode == Mode::Full {
            LeaseTable::load(&cfg.lease_file)?
        } else {
            LeaseTable::new()
        };
        Self::bind_with(cfg, leases).await
    }

    /// [`DhcpServer::bind`] with a lease table already loaded (the proxy mode keeps none).
    pub async fn bind_with(cfg: DhcpConfig, leases: LeaseTable) -> io::Result<Self> {
        cfg.validate()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let leases = Arc::new(leases);
        let server_sock = bind_udp(&cfg, cfg.server_port)?;
        let boot_sock = bind_udp(&cfg, cfg.proxy_port)?;
        let cfg = Arc::new(cfg);
        let stats = Arc::new(DhcpStats::default());
        Ok(DhcpServer {
            on_reply: None,
            engine: Engine::new(cfg.clone(), leases.clone(), stats.clone()),
            cfg,
            leases,
            stats,
            server_sock,
            boot_sock,
        })
    }

    /// The shared lease table (for the HTTP server's `owner` access check and `/status`).
    pub fn leases(&self) -> Arc<LeaseTable> {
        self.leases.clone()
    }

    /// The shared counters.
    pub fn stats(&self) -> Arc<DhcpStats> {
        self.stats.clone()
    }

    /// Calls `hook` with every reply before it is sent.
    pub fn on_reply(&mut self, hook: ReplyHook) {
        self.on_reply = Some(hook);
    }

    /// Answers requests until `shutdown` is cancelled, then flushes the leases and returns.
    pub async fn run(self, shutdown: CancellationToken) -> io::Result<()> {
        tracing::info!(
            event = "dhcp_listening",
            mode = %self.cfg.mode,
            port = self.cfg.server_port,
            interface = self.cfg.interface.as_deref().unwrap_or("*"),
        );
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut proxy_buf = vec![0u8; MAX_DATAGRAM];
        let mut replies: Vec<(Reply, Listener)> = Vec::new();
        loop {
            let (listener, len, src) = tokio::select! {
                () = shutdown.cancelled() => break,
                r = self.server_sock.recv_from(&mut buf) => match r {
                    Ok((len, src)) => (Listener::Server, len, src),
                    Err(e) => { transient(e)?; continue; }
                },
                r = self.boot_sock.recv_from(&mut proxy_buf) => match r {
                    Ok((len, src)) => (Listener::ProxyBoot, len, src),
                    Err(e) => { transient(e)?; continue; }
                },
            };
            self.decide(&buf, &proxy_buf, listener, len, src, &mut replies);
            // Group commit: decide on every request already waiting (up to a bound), save
            // the leases once, then answer them all. Under load one fsync covers hundreds
            // of leases; an idle server still saves before each answer.
            for _ in 0..MAX_BATCH {
                let (listener, len, src) = match self.server_sock.try_recv_from(&mut buf) {
                    Ok((len, src)) => (Listener::Server, len, src),
                    Err(_) => match self.boot_sock.try_recv_from(&mut proxy_buf) {
                        Ok((len, src)) => (Listener::ProxyBoot, len, src),
                        Err(_) => break,
                    },
                };
                self.decide(&buf, &proxy_buf, listener, len, src, &mut replies);
            }
            // Leases reach the disk before the clients hear of them.
            self.flush().await;
            for (reply, listener) in replies.drain(..) {
                if let Some(hook) = &self.on_reply {
                    (hook.0)(&reply);
                }
                let sock = match listener {
                    Listener::Server => &self.server_sock,
                    Listener::ProxyBoot => &self.boot_sock,
                };
                if let Err(e) = sock.send_to(&reply.bytes, reply.dest).await {
                    DhcpStats::bump(&self.stats.send_errors);
                    tracing::warn!(event = "dhcp_send_failed", dest = %reply.dest, error = %e);
                }
            }
        }
        self.flush().await;
        tracing::info!(event = "dhcp_stopped");
        Ok(())
    }

    /// Runs the decision core on one received datagram, queueing its reply.
    fn decide(
        &self,
        buf: &[u8],
        proxy_buf: &[u8],
        listener: Listener,
        len: usize,
        src: SocketAddr,
        replies: &mut Vec<(Reply, Listener)>,
    ) {
        let SocketAddr::V4(src) = src else { return };
        let bytes = match listener {
            Listener::Server => &buf[..len],
            Listener::ProxyBoot => &proxy_buf[..len],
        };
        if let Some(reply) = self.engine.handle(bytes, src, listener, unix_now()) {
            replies.push((reply, listener));
        }
    }

    /// Saves the lease table if it changed; on failure it stays marked as changed.
    async fn flush(&self) {
        if self.cfg.mode != Mode::Full || !self.leases.take_dirty() {
            return;
        }
        let leases = self.leases.clone();
        let path = self.cfg.lease_file.clone();
        let result = tokio::task::spawn_blocking(move || leases.save(&path)).await;
        let failed = match result {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(e) => Some(e.to_string()),
        };
        if let Some(error) = failed {
            self.leases.lock().dirty = true;
            tracing::warn!(event = "dhcp_lease_save_failed",
                path = %self.cfg.lease_file.display(), %error);
        }
    }
}

/// Errors a UDP receive can return without the socket being broken (ICMP feedback).
fn transient(e: io::Error) -> io::Result<()> {
    match e.kind() {
        io::ErrorKind::ConnectionRefused
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::Interrupted
        | io::ErrorKind::WouldBlock => Ok(()),
        _ if e.raw_os_error() == Some(libc::ENETUNREACH)
            || e.raw_os_error() == Some(libc::EHOSTUNREACH) =>
        {
            Ok(())
        }
        _ => Err(e),
    }
}

fn bind_udp(cfg: &DhcpConfig, port: u16) -> io::Result<UdpSocket> {
    let sock = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    sock.set_reuse_address(true)?;
    sock.set_broadcast(true)?;
    // Room for the requests that arrive while one batch's leases are being saved (a boot
    // storm after a power cut); the kernel caps it at net.core.rmem_max.
    let _ = sock.set_recv_buffer_size(RECV_BUFFER);
    if let Some(ifname) = &cfg.interface {
        sock.bind_device(Some(ifname.as_bytes()))
            .map_err(|e| io::Error::new(e.kind(), format!("SO_BINDTODEVICE {ifname}: {e}")))?;
    }
    sock.set_nonblocking(true)?;
    let addr = SocketAddrV4::new(cfg.bind_ip, port);
    sock.bind(&addr.into())
        .map_err(|e| io::Error::new(e.kind(), format!("bind {addr}: {e}")))?;
    UdpSocket::from_std(sock.into())
}

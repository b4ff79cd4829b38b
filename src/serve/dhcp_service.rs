//! The DHCP service of `ovl serve`: configured from the site (`dhcp::site`), its lease file
//! loaded (a corrupt one is reported as such, exit 1), bound, its replies made boot events and
//! its counters part of `/metrics`.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::{Settings, bind_error, dhcp, events, metrics, neighbours};
use crate::build::project::Project;
use crate::error::{Error, Result};

/// A bound DHCP server and what its `listening` line says.
pub(super) struct BoundDhcp {
    server: dhcp::DhcpServer,
    addr: SocketAddr,
    mode: dhcp::Mode,
    server_ip: std::net::Ipv4Addr,
    url: String,
    /// Addresses in its pools.
    pool_size: u64,
}

/// The DHCP server configured from the site, sending iPXE to `http_addr`; its lease table
/// fills `leases`.
pub(super) async fn bind_dhcp(
    settings: &Settings,
    project: &Project,
    http_addr: Option<SocketAddr>,
    leases: &neighbours::LateLeases,
) -> Result<BoundDhcp> {
    let cfg = dhcp::site::dhcp_config(
        project,
        settings.dhcp,
        settings.interface.as_deref(),
        http_addr,
    )?;
    let addr = SocketAddr::from((cfg.bind_ip, cfg.server_port));
    let (mode, server_ip, url) = (cfg.mode, cfg.server_ip, cfg.ipxe_script_url.clone());
    let pool_size = cfg
        .pools
        .iter()
        .map(|p| u64::from(u32::from(p.end).saturating_sub(u32::from(p.start))) + 1)
        .sum();
    let table = if mode == dhcp::Mode::Full {
        load_leases(&cfg.lease_file)?
    } else {
        dhcp::LeaseTable::new()
    };
    let server = dhcp::DhcpServer::bind_with(cfg, table)
        .await
        .map_err(|e| bind_error("dhcp", addr, e))?;
    leases.set(server.leases());
    Ok(BoundDhcp {
        server,
        addr,
        mode,
        server_ip,
        url,
        pool_size,
    })
}

/// The lease file of full mode: missing is empty; unreadable is an environment error (exit
/// 3); a file that does not parse is reported as the corrupt input it is (exit 1), never as
/// a failure to listen.
fn load_leases(path: &std::path::Path) -> Result<dhcp::LeaseTable> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(dhcp::LeaseTable::new()),
        Err(e) => return Err(Error::io(path, e)),
    };
    dhcp::LeaseTable::parse(&bytes).map_err(|e| {
        Error::at_path(
            path,
            format!(
                "corrupt DHCP lease file: {e}; repair it or move it aside to start with no \
                 leases"
            ),
        )
    })
}

/// The device a DHCP reply is for: its `chaddr` (bytes 28..34 of the BOOTP header).
fn reply_mac(reply: &dhcp::Reply) -> Option<crate::mac::Mac> {
    let b: [u8; 6] = reply.bytes.get(28..34)?.try_into().ok()?;
    Some(crate::mac::Mac(b))
}

/// An ACK of a lease renewal (or rebinding): the client already had the address (`ciaddr`,
/// bytes 12..16, copied from its request) and got one (`yiaddr`; proxy replies give none).
/// Not a boot event: a running device renews its lease every half lease time.
fn is_renewal(reply: &dhcp::Reply) -> bool {
    let had = reply.bytes.get(12..16).is_some_and(|c| c != [0, 0, 0, 0]);
    reply.kind == dhcproto::v4::MessageType::Ack && had && !reply.ip.is_unspecified()
}

impl BoundDhcp {
    /// Makes its replies boot events (offer, ack, nak) and its counters part of `/metrics`.
    pub(super) fn observe(
        &mut self,
        events: Option<Arc<events::BootEvents>>,
        metrics: Option<&metrics::Metrics>,
    ) {
        if let Some(m) = metrics {
            let _ = m.dhcp.set(metrics::DhcpMetrics {
                stats: self.server.stats(),
                leases: self.server.leases(),
                pool_size: self.pool_size,
            });
        }
        let Some(events) = events else { return };
        self.server.on_reply(dhcp::ReplyHook(Arc::new(move |r| {
            use dhcproto::v4::MessageType;
            if is_renewal(r) {
                return;
            }
            let kind = match r.kind {
                MessageType::Offer => events::EventKind::DhcpOffer,
                MessageType::Ack => events::EventKind::DhcpAck,
                MessageType::Nak => events::EventKind::DhcpNak,
                _ => return,
            };
            let name = events::EventKind::name(kind);
            let ip = std::net::IpAddr::V4(r.ip);
            events.record(
                reply_mac(r),
                events::BootEvent::now(kind, format!("dhcp:{name} {}", r.ip), ip, 0, 0, 0),
            );
        })));
    }

    /// Logs the `listening` line and serves on `tasks` until `shutdown`.
    pub(super) fn spawn(
        self,
        settings: &Settings,
        tasks: &mut tokio::task::JoinSet<()>,
        shutdown: CancellationToken,
    ) {
        tracing::info!(event = "listening", service = "dhcp", addr = %self.addr,
            mode = %self.mode, server_ip = %self.server_ip, script_url = %self.url,
            interface = settings.interface.as_deref().unwrap_or("*"), "listening");
        let server = self.server;
        tasks.spawn(async move {
            if let Err(e) = server.run(shutdown).await {
                tracing::error!(event = "dhcp_server_error", error = %e);
            }
        });
    }
}

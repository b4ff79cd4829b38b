//! The DHCP side of a simulated device: DISCOVER/OFFER/REQUEST/ACK as the PXE firmware,
//! iPXE and Linux's udhcpc send them, over one shared socket on port 68.
//!
//! Packets are built and read by hand (RFC 2131 header, RFC 2132 options): the client only
//! needs a few fields, and a load generator should not share its codec with the server it
//! measures. Every request sets the broadcast flag (as iPXE does), so both servers answer by
//! broadcast and one socket bound to `0.0.0.0:68` hears every device's replies; they are
//! handed to the waiting device by transaction id.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout_at};

/// Which client of the boot chain is asking: they differ in their options.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// The NIC's PXE firmware (options 60 `PXEClient`, 93, 94, 97).
    Rom,
    /// iPXE after the chainload (the same, plus user class `iPXE` and option 175).
    Ipxe,
    /// Alpine's initramfs (`ip=dhcp`: busybox udhcpc, vendor class `udhcp …`).
    Linux,
}

/// What a finished DORA gave the device.
#[derive(Clone, Debug)]
pub struct Lease {
    /// The leased address (yiaddr of the ACK).
    pub ip: Ipv4Addr,
    /// The TFTP server: siaddr, else the server identifier.
    pub next_server: Ipv4Addr,
    /// The boot file name: option 67, else the BOOTP file field ("" when none).
    pub file: String,
}

/// One decoded server reply.
#[derive(Debug)]
struct Reply {
    msg_type: u8,
    yiaddr: Ipv4Addr,
    siaddr: Ipv4Addr,
    server_id: Option<Ipv4Addr>,
    file: String,
}

/// The shared port-68 socket and the devices waiting for replies, by transaction id.
pub struct Dhcp {
    socket: UdpSocket,
    waiting: Mutex<HashMap<u32, mpsc::UnboundedSender<Reply>>>,
    /// DISCOVERs and REQUESTs sent again after a timeout.
    pub retransmits: AtomicU64,
    /// Firmware exchanges that needed a fifth DISCOVER: real PXE firmware gives up after the
    /// fourth (PXE-E51, about 60 s); the simulated device goes on until the deadline.
    pub rom_over_limit: AtomicU64,
}

/// The PXE retransmission schedule for DISCOVER (PXE 2.1 §2.2.1: 4, 8, 16, 32 s).
const DISCOVER_WAITS: [u64; 4] = [4, 8, 16, 32];
/// How long a REQUEST waits for its ACK before the exchange starts over.
const REQUEST_WAIT: Duration = Duration::from_secs(4);

impl Dhcp {
    /// Binds `0.0.0.0:68` on `iface` (broadcast allowed) and starts the reply dispatcher.
    pub fn start(iface: &str) -> std::io::Result<Arc<Dhcp>> {
        let sock = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )?;
        sock.set_reuse_address(true)?;
        sock.set_broadcast(true)?;
        sock.bind_device(Some(iface.as_bytes()))?;
        sock.set_recv_buffer_size(8 << 20)?;
        sock.set_nonblocking(true)?;
        sock.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68).into())?;
        let socket = UdpSocket::from_std(sock.into())?;
        let dhcp = Arc::new(Dhcp {
            socket,
            waiting: Mutex::new(HashMap::new()),
            retransmits: AtomicU64::new(0),
            rom_over_limit: AtomicU64::new(0),
        });
        tokio::spawn(Arc::clone(&dhcp).dispatch());
        Ok(dhcp)
    }

    /// Hands every reply to the device waiting on its transaction id; others are dropped.
    async fn dispatch(self: Arc<Self>) {
        let mut buf = vec![0u8; 2048];
        loop {
            let Ok((n, _)) = self.socket.recv_from(&mut buf).await else {
                continue;
            };
            let Some((xid, reply)) = parse(&buf[..n]) else {
                continue;
            };
            let waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(tx) = waiting.get(&xid) {
                let _ = tx.send(reply);
            }
        }
    }

    /// Runs DISCOVER → OFFER → REQUEST → ACK for `mac` until `deadline`; a NAK or a missing
    /// ACK starts over with a new DISCOVER.
    pub async fn dora(
        &self,
        mac: [u8; 6],
        xid: u32,
        kind: Kind,
        deadline: Instant,
    ) -> Result<Lease, String> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        self.lock().insert(xid, tx);
        let result = self.exchange(mac, xid, kind, deadline, &mut rx).await;
        self.lock().remove(&xid);
        result
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, mpsc::UnboundedSender<Reply>>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn exchange(
        &self,
        mac: [u8; 6],
        xid: u32,
        kind: Kind,
        deadline: Instant,
        rx: &mut mpsc::UnboundedReceiver<Reply>,
    ) -> Result<Lease, String> {
        let mut attempt = 0usize;
        loop {
            let wait = DISCOVER_WAITS[attempt.min(DISCOVER_WAITS.len() - 1)];
            if attempt > 0 {
                self.retransmits.fetch_add(1, Ordering::Relaxed);
            }
            if attempt == DISCOVER_WAITS.len() && matches!(kind, Kind::Rom) {
                self.rom_over_limit.fetch_add(1, Ordering::Relaxed);
            }
            attempt += 1;
            self.send(&request(1, mac, xid, kind, None)).await?;
            let until = (Instant::now() + Duration::from_secs(wait)).min(deadline);
            let Some(offer) = wait_for(rx, 2, until).await else {
                if Instant::now() >= deadline {
                    return Err(format!("no OFFER after {attempt} DISCOVERs"));
                }
                continue;
            };
            let server = offer.server_id.unwrap_or(offer.siaddr);
            let req = request(3, mac, xid, kind, Some((server, offer.yiaddr)));
            self.send(&req).await?;
            let until = (Instant::now() + REQUEST_WAIT).min(deadline);
            match wait_for(rx, 0, until).await {
                Some(ack) if ack.msg_type == 5 => {
                    let next_server = match ack.siaddr {
                        Ipv4Addr::UNSPECIFIED => ack.server_id.unwrap_or(server),
                        s => s,
                    };
                    return Ok(Lease {
                        ip: ack.yiaddr,
                        next_server,
                        file: ack.file,
                    });
                }
                _ if Instant::now() >= deadline => {
                    return Err(format!("no ACK after {attempt} exchanges"));
                }
                _ => self.retransmits.fetch_add(1, Ordering::Relaxed),
            };
        }
    }

    async fn send(&self, packet: &[u8]) -> Result<(), String> {
        let to = SocketAddrV4::new(Ipv4Addr::BROADCAST, 67);
        self.socket
            .send_to(packet, to)
            .await
            .map(|_| ())
            .map_err(|e| format!("sending a DHCP request: {e}"))
    }
}

/// Waits for a reply of `msg_type` (0: ACK or NAK) until `until`.
async fn wait_for(
    rx: &mut mpsc::UnboundedReceiver<Reply>,
    msg_type: u8,
    until: Instant,
) -> Option<Reply> {
    loop {
        let reply = timeout_at(until, rx.recv()).await.ok()??;
        let wanted = match msg_type {
            0 => reply.msg_type == 5 || reply.msg_type == 6,
            t => reply.msg_type == t,
        };
        if wanted {
            return Some(reply);
        }
    }
}

/// A DISCOVER (1) or REQUEST (3) of `kind`, with `(server id, address)` for a REQUEST.
fn request(
    msg_type: u8,
    mac: [u8; 6],
    xid: u32,
    kind: Kind,
    selected: Option<(Ipv4Addr, Ipv4Addr)>,
) -> Vec<u8> {
    let mut p = vec![0u8; 236];
    p[0] = 1; // BOOTREQUEST
    p[1] = 1; // Ethernet
    p[2] = 6;
    p[4..8].copy_from_slice(&xid.to_be_bytes());
    p[10] = 0x80; // broadcast flag, as iPXE sets it
    p[28..34].copy_from_slice(&mac);
    p.extend_from_slice(&[99, 130, 83, 99]);
    let mut opt = |code: u8, value: &[u8]| {
        p.push(code);
        p.push(value.len() as u8);
        p.extend_from_slice(value);
    };
    opt(53, &[msg_type]);
    opt(57, &1472u16.to_be_bytes());
    let mut client_id = vec![1u8];
    client_id.extend_from_slice(&mac);
    match kind {
        Kind::Rom | Kind::Ipxe => {
            opt(55, &[1, 3, 6, 12, 15, 17, 43, 60, 66, 67, 97, 128, 175]);
            opt(60, b"PXEClient:Arch:00000:UNDI:002001");
            opt(93, &[0, 0]);
            opt(94, &[1, 2, 1]);
            let mut guid = vec![0u8; 17];
            guid[11..17].copy_from_slice(&mac);
            opt(97, &guid);
            if let Kind::Ipxe = kind {
                opt(61, &client_id);
                opt(77, b"iPXE");
                opt(175, &[19, 1, 1, 21, 1, 1]); // HTTP and DNS features
            }
        }
        Kind::Linux => {
            opt(55, &[1, 3, 6, 12, 15, 28, 42]);
            opt(60, b"udhcp 1.36.1");
            opt(61, &client_id);
        }
    }
    if let Some((server, ip)) = selected {
        opt(50, &ip.octets());
        opt(54, &server.octets());
    }
    p.push(255);
    if p.len() < 300 {
        p.resize(300, 0);
    }
    p
}

/// Reads a BOOTREPLY: its transaction id and the fields a client uses.
fn parse(b: &[u8]) -> Option<(u32, Reply)> {
    if b.len() < 240 || b[0] != 2 || b[236..240] != [99, 130, 83, 99] {
        return None;
    }
    let ip = |at: usize| Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3]);
    let xid = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
    let mut reply = Reply {
        msg_type: 0,
        yiaddr: ip(16),
        siaddr: ip(20),
        server_id: None,
        file: c_string(&b[108..236]),
    };
    let mut opts = &b[240..];
    while let [code, rest @ ..] = opts {
        match code {
            0 => {
                opts = rest;
                continue;
            }
            255 => break,
            _ => {}
        }
        let (&len, rest) = rest.split_first()?;
        let value = rest.get(..usize::from(len))?;
        match (code, value) {
            (53, [t]) => reply.msg_type = *t,
            (54, [a, b, c, d]) => reply.server_id = Some(Ipv4Addr::new(*a, *b, *c, *d)),
            (67, name) => reply.file = c_string(name),
            _ => {}
        }
        opts = &rest[usize::from(len)..];
    }
    (reply.msg_type != 0).then_some((xid, reply))
}

/// The text of a NUL-padded field.
fn c_string(field: &[u8]) -> String {
    let end = field.iter().position(|&c| c == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

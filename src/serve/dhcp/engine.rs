//! The pure decision core: one request's bytes and the lease state in, at most one reply
//! out. No sockets and no clock: the caller passes the time, which keeps every decision
//! reproducible in unit tests and fuzzing.
//!
//! Full mode follows RFC 2131 §4.3 (DISCOVER, REQUEST in the selecting, init-reboot,
//! renewing and rebinding states, DECLINE, RELEASE, INFORM); proxy mode follows the PXE
//! specification 2.1 §2.2 (proxyDHCP on port 67 and the boot-server exchange on 4011).

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;

use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, Opcode, OptionCode};

use super::config::{DhcpConfig, Mode, Pool};
use super::leases::{Inner, Lease, LeaseState, LeaseTable};
use super::packet;
use super::pxe::{self, ClientKind};
use super::stats::DhcpStats;
use crate::mac::Mac;

/// Which socket a request arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// The DHCP server port (67).
    Server,
    /// The PXE boot-server port (4011): boot information for PXE clients that ask for it
    /// there (proxyDHCP clients, and firmware taking an offer for a "BINL" offer).
    ProxyBoot,
}

/// A reply to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The encoded message, padded to at least 300 bytes.
    pub bytes: Vec<u8>,
    /// Where to send it. `255.255.255.255` means a broadcast on the bound interface.
    pub dest: SocketAddrV4,
    /// OFFER, ACK or NAK.
    pub kind: MessageType,
    /// The address given (`yiaddr`), unspecified for proxy replies and NAKs.
    pub ip: Ipv4Addr,
}

/// The decision core. Cheap to clone; every clone shares the same lease table and stats.
#[derive(Debug, Clone)]
pub struct Engine {
    cfg: Arc<DhcpConfig>,
    leases: Arc<LeaseTable>,
    stats: Arc<DhcpStats>,
    /// The inventory's fixed addresses by address, to keep them out of the pools.
    fixed_owner: Arc<HashMap<Ipv4Addr, Mac>>,
}

/// What a full-mode request asks for.
struct Ask {
    mac: Mac,
    /// Option 50.
    requested: Option<Ipv4Addr>,
    /// Option 54.
    server_id: Option<Ipv4Addr>,
    /// Option 12, else the name the client gave before.
    hostname: Option<String>,
    ciaddr: Ipv4Addr,
    now: u64,
}

/// What one request resolves to, before it is encoded.
struct Answer {
    kind: MessageType,
    ip: Ipv4Addr,
    pool: Option<Pool>,
    lease_time: Option<u32>,
    message: Option<&'static str>,
}

impl Engine {
    /// A decision core over `cfg`, `leases` and `stats`.
    pub fn new(cfg: Arc<DhcpConfig>, leases: Arc<LeaseTable>, stats: Arc<DhcpStats>) -> Self {
        let fixed_owner = Arc::new(cfg.fixed.iter().map(|(mac, ip)| (*ip, *mac)).collect());
        Engine {
            cfg,
            leases,
            stats,
            fixed_owner,
        }
    }

    /// Decides the answer to one datagram received from `src` on `listener` at Unix time
    /// `now`. Malformed datagrams are counted and give `None`; so do messages that need no
    /// reply (RELEASE, DECLINE) or that are not for this server.
    pub fn handle(
        &self,
        bytes: &[u8],
        src: SocketAddrV4,
        listener: Listener,
        now: u64,
    ) -> Option<Reply> {
        DhcpStats::bump(&self.stats.received);
        let req = match packet::decode(bytes) {
            Ok(req) => req,
            Err(why) => {
                DhcpStats::bump(&self.stats.malformed);
                tracing::debug!(event = "dhcp_malformed", %src, reason = %why);
                return None;
            }
        };
        let reply = match (self.cfg.mode, listener) {
            (Mode::Full, Listener::Server) => self.full(&req, now),
            // Port 4011 (PXE boot-server requests) is answered the same way in both modes.
            (Mode::Proxy, _) | (Mode::Full, Listener::ProxyBoot) => self.proxy(&req, src, listener),
        };
        if reply.is_none() {
            DhcpStats::bump(&self.stats.ignored);
        }
        reply
    }

    // ---- proxy mode (PXE 2.1 §2.2) ----

    fn proxy(&self, req: &Message, src: SocketAddrV4, listener: Listener) -> Option<Reply> {
        let client = pxe::classify(req);
        if !client.pxe {
            return None;
        }
        let msg_type = req.opts().msg_type()?;
        let kind = match (listener, msg_type) {
            (Listener::Server, MessageType::Discover) => MessageType::Offer,
            (Listener::ProxyBoot, MessageType::Request | MessageType::Inform) => MessageType::Ack,
            _ => return None,
        };
        let boot = pxe::boot_file(&self.cfg, &client)?;
        let mut reply = self.base_reply(req, kind);
        reply.set_ciaddr(req.ciaddr());
        self.add_boot(&mut reply, req, &client, &boot);
        let dest = match listener {
            // The boot-server reply goes back where the request came from (PXE 2.1 §2.2.1).
            Listener::ProxyBoot if !src.ip().is_unspecified() => src,
            _ => self.destination(req, false),
        };
        self.log(kind, &client.mac, Ipv4Addr::UNSPECIFIED, Some(&boot));
        self.count(kind);
        Some(Reply {
            bytes: packet::encode(&reply)?,
            dest,
            kind,
            ip: Ipv4Addr::UNSPECIFIED,
        })
    }

    // ---- full mode (RFC 2131 §4.3) ----

    fn full(&self, req: &Message, now: u64) -> Option<Reply> {
        let client = pxe::classify(req);
        let pool = self.pool_for(req)?.clone();
        let opts = req.opts();
        let mut inner = self.leases.lock();
        let mut ask = Ask {
            mac: client.mac,
            requested: match opts.get(OptionCode::RequestedIpAddress) {
                Some(DhcpOption::RequestedIpAddress(ip)) => Some(*ip),
                _ => None,
            },
            server_id: match opts.get(OptionCode::ServerIdentifier) {
                Some(DhcpOption::ServerIdentifier(ip)) => Some(*ip),
                _ => None,
            },
            hostname: match opts.get(OptionCode::Hostname) {
                Some(DhcpOption::Hostname(name)) => Some(name.clone()),
                _ => None,
            },
            ciaddr: req.ciaddr(),
            now,
        };
        // A renewal without option 12 keeps the name the client gave before.
        if ask.hostname.is_none() {
            ask.hostname = inner.for_mac(&ask.mac).and_then(|l| l.hostname.clone());
        }
        let answer = match opts.msg_type()? {
            MessageType::Discover => self.discover(&mut inner, &ask, pool)?,
            MessageType::Request => self.request(&mut inner, &ask, pool)?,
            MessageType::Decline => return self.decline(&mut inner, &ask, &pool),
            MessageType::Release => return self.release(&mut inner, &ask),
            MessageType::Inform => self.inform(&ask, pool),
            _ => return None,
        };
        drop(inner);
        self.full_reply(req, &client, &answer)
    }

    /// DISCOVER: an address is chosen and held for the client for a short time (a bound
    /// lease of the same client stays bound).
    fn discover(&self, inner: &mut Inner, ask: &Ask, pool: Pool) -> Option<Answer> {
        let (mac, now) = (ask.mac, ask.now);
        let ip = self.choose(inner, &pool, &mac, ask.requested, now)?;
        let keep_bound = inner
            .by_ip
            .get(&ip)
            .is_some_and(|l| l.mac == mac && l.state == LeaseState::Bound && l.is_active(now));
        if !keep_bound {
            inner.assign(Lease {
                mac,
                ip,
                expires: now.saturating_add(self.cfg.offer_hold_secs),
                state: LeaseState::Offered,
                hostname: ask.hostname.clone(),
            });
        }
        Some(Answer::lease(MessageType::Offer, ip, pool))
    }

    /// REQUEST in the selecting, init-reboot, renewing or rebinding state: ACK and bind, or
    /// NAK; nothing when the client chose another server (our offer is then withdrawn).
    fn request(&self, inner: &mut Inner, ask: &Ask, pool: Pool) -> Option<Answer> {
        let (mac, now) = (ask.mac, ask.now);
        let wanted = match (ask.server_id, ask.requested) {
            // Selecting: the client answers an offer; if it chose another server, our offer
            // is withdrawn.
            (Some(sid), _) if sid != self.cfg.server_ip => {
                if inner
                    .for_mac(&mac)
                    .is_some_and(|l| l.state == LeaseState::Offered)
                {
                    inner.by_ip.retain(|_, l| l.mac != mac);
                    inner.dirty = true;
                }
                return None;
            }
            (Some(_), Some(ip)) => ip,
            // Init-reboot (option 50, no server id) or selecting.
            (None, Some(ip)) => ip,
            // Renewing (unicast) or rebinding (broadcast): ciaddr.
            (_, None) if !ask.ciaddr.is_unspecified() => ask.ciaddr,
            _ => return None,
        };
        if !self.acceptable(inner, &pool, &mac, wanted, now) {
            return Some(Answer::nak("requested address not available"));
        }
        inner.assign(Lease {
            mac,
            ip: wanted,
            expires: now.saturating_add(u64::from(pool.lease_time)),
            state: LeaseState::Bound,
            hostname: ask.hostname.clone(),
        });
        Some(Answer::lease(MessageType::Ack, wanted, pool))
    }

    /// DECLINE: the address is in use by someone else; it stays out of the pool for the
    /// quarantine time. Never answered.
    fn decline(&self, inner: &mut Inner, ask: &Ask, pool: &Pool) -> Option<Reply> {
        if ask.server_id.is_some_and(|sid| sid != self.cfg.server_ip) {
            return None;
        }
        let ip = ask.requested.filter(|ip| pool.subnet_contains(*ip))?;
        if inner.by_ip.get(&ip).is_some_and(|l| l.mac == ask.mac) {
            inner.by_ip.remove(&ip);
        }
        let until = ask.now.saturating_add(self.cfg.decline_quarantine_secs);
        inner.declined.insert(ip, until);
        inner.dirty = true;
        DhcpStats::bump(&self.stats.declines);
        self.log_event("dhcp_decline", &ask.mac, ip, None);
        None
    }

    /// RELEASE: the client's lease on `ciaddr` ends now (kept, so it gets the address
    /// back). Never answered.
    fn release(&self, inner: &mut Inner, ask: &Ask) -> Option<Reply> {
        let ip = ask.ciaddr;
        if let Some(lease) = inner.by_ip.get_mut(&ip).filter(|l| l.mac == ask.mac) {
            lease.state = LeaseState::Released;
            lease.expires = ask.now;
            inner.dirty = true;
            DhcpStats::bump(&self.stats.releases);
            self.log_event("dhcp_release", &ask.mac, ip, None);
        }
        None
    }

    /// INFORM: the options of the client's subnet, no address.
    fn inform(&self, ask: &Ask, pool: Pool) -> Answer {
        let pool = self
            .cfg
            .pools
            .iter()
            .find(|p| p.subnet_contains(ask.ciaddr))
            .cloned()
            .unwrap_or(pool);
        Answer {
            kind: MessageType::Ack,
            ip: Ipv4Addr::UNSPECIFIED,
            pool: Some(pool),
            lease_time: None,
            message: None,
        }
    }

    /// Encodes a full-mode answer: the pool's options and the boot information, or the
    /// NAK's message; logged and counted.
    fn full_reply(&self, req: &Message, client: &ClientKind, answer: &Answer) -> Option<Reply> {
        let mut reply = self.base_reply(req, answer.kind);
        reply.set_yiaddr(answer.ip);
        let boot = if answer.kind == MessageType::Nak {
            if let Some(text) = answer.message {
                reply
                    .opts_mut()
                    .insert(DhcpOption::Message(text.to_string()));
            }
            None
        } else {
            if req.opts().msg_type() != Some(MessageType::Discover) {
                reply.set_ciaddr(req.ciaddr());
            }
            if let Some(pool) = &answer.pool {
                add_pool_options(&mut reply, pool, answer.lease_time);
            }
            let boot = pxe::boot_file(&self.cfg, client);
            if let Some(boot) = &boot {
                self.add_boot(&mut reply, req, client, boot);
            }
            boot
        };
        let dest = self.destination(req, answer.kind == MessageType::Nak);
        if answer.kind == MessageType::Nak && !req.giaddr().is_unspecified() {
            reply.set_flags(Flags::default().set_broadcast());
        }
        self.log(answer.kind, &client.mac, answer.ip, boot.as_deref());
        self.count(answer.kind);
        Some(Reply {
            bytes: packet::encode(&reply)?,
            dest,
            kind: answer.kind,
            ip: answer.ip,
        })
    }

    /// The pool serving this request: by the relay's address (`giaddr`) for relayed
    /// requests, else the pool of the server's own subnet.
    fn pool_for(&self, req: &Message) -> Option<&Pool> {
        let giaddr = req.giaddr();
        let key = if giaddr.is_unspecified() {
            self.cfg.server_ip
        } else {
            giaddr
        };
        self.cfg.pools.iter().find(|p| p.subnet_contains(key))
    }

    /// The fixed address of `mac` if it lies in `pool`'s subnet.
    fn fixed_for(&self, mac: &Mac, pool: &Pool) -> Option<Ipv4Addr> {
        self.cfg
            .fixed
            .get(mac)
            .copied()
            .filter(|ip| pool.subnet_contains(*ip))
    }

    /// Whether `ip` may be handed out dynamically to `mac`.
    fn usable(&self, inner: &Inner, pool: &Pool, mac: &Mac, ip: Ipv4Addr, now: u64) -> bool {
        pool.range_contains(ip)
            && ip != self.cfg.server_ip
            && Some(ip) != pool.router
            && ip != pool.network()
            && ip != pool.broadcast()
            && self.fixed_owner.get(&ip).is_none_or(|owner| owner == mac)
            && !inner.taken_by_other(ip, mac, now)
    }

    /// Whether `mac` may have `ip` (REQUEST). A MAC with a usable fixed address may have
    /// only that one.
    fn acceptable(&self, inner: &Inner, pool: &Pool, mac: &Mac, ip: Ipv4Addr, now: u64) -> bool {
        if !pool.subnet_contains(ip) {
            return false;
        }
        match self.fixed_for(mac, pool) {
            Some(fixed) if !inner.taken_by_other(fixed, mac, now) => ip == fixed,
            _ => self.usable(inner, pool, mac, ip, now),
        }
    }

    /// The address to offer (DISCOVER): the fixed one, else the client's previous one, else
    /// the one it asks for, else the first never-used address, else the first expired one.
    fn choose(
        &self,
        inner: &Inner,
        pool: &Pool,
        mac: &Mac,
        requested: Option<Ipv4Addr>,
        now: u64,
    ) -> Option<Ipv4Addr> {
        if let Some(fixed) = self.fixed_for(mac, pool) {
            if !inner.taken_by_other(fixed, mac, now) {
                return Some(fixed);
            }
            tracing::warn!(event = "dhcp_fixed_conflict", mac = %mac, ip = %fixed,
                "fixed address held by another client; offering a pool address");
        }
        let previous = inner.for_mac(mac).map(|l| l.ip);
        for candidate in [previous, requested].into_iter().flatten() {
            if self.usable(inner, pool, mac, candidate, now) {
                return Some(candidate);
            }
        }
        let range = u32::from(pool.start)..=u32::from(pool.end);
        range
            .clone()
            .map(Ipv4Addr::from)
            .find(|ip| !inner.by_ip.contains_key(ip) && self.usable(inner, pool, mac, *ip, now))
            .or_else(|| {
                range
                    .map(Ipv4Addr::from)
                    .find(|ip| self.usable(inner, pool, mac, *ip, now))
            })
    }

    // ---- reply building ----

    fn base_reply(&self, req: &Message, kind: MessageType) -> Message {
        let mut reply = Message::default();
        reply
            .set_opcode(Opcode::BootReply)
            .set_htype(req.htype())
            .set_xid(req.xid())
            .set_flags(req.flags())
            .set_giaddr(req.giaddr())
            .set_chaddr(req.chaddr());
        let opts = reply.opts_mut();
        opts.insert(DhcpOption::MessageType(kind));
        opts.insert(DhcpOption::ServerIdentifier(self.cfg.server_ip));
        // RFC 6842: echo the client identifier.
        if let Some(DhcpOption::ClientIdentifier(id)) = req.opts().get(OptionCode::ClientIdentifier)
            && id.len() <= 255
        {
            opts.insert(DhcpOption::ClientIdentifier(id.clone()));
        }
        // RFC 3046 §2.2: relay agent information goes back to the relay unchanged.
        if !req.giaddr().is_unspecified()
            && let Some(info @ DhcpOption::RelayAgentInformation(_)) =
                req.opts().get(OptionCode::RelayAgentInformation)
        {
            opts.insert(info.clone());
        }
        reply
    }

    /// siaddr/next-server, `file`, options 66 and 67, and the PXE echoes (60, 97).
    fn add_boot(&self, reply: &mut Message, req: &Message, client: &ClientKind, boot: &str) {
        reply.set_siaddr(self.cfg.server_ip);
        if boot.len() < 128 {
            reply.set_fname_str(boot);
        }
        let opts = reply.opts_mut();
        opts.insert(DhcpOption::TFTPServerName(
            self.cfg.server_ip.to_string().into_bytes(),
        ));
        opts.insert(DhcpOption::BootfileName(boot.as_bytes().to_vec()));
        if client.pxe {
            opts.insert(DhcpOption::ClassIdentifier(b"PXEClient".to_vec()));
            // PXE vendor options (PXE 2.1 §2.4.2): PXE_DISCOVERY_CONTROL = 8, "download the
            // boot file named in this offer, no boot-server discovery". Without it, UEFI
            // firmware (EDK2/OVMF) takes a PXEClient offer for a BINL offer and asks port
            // 4011 for the boot file instead.
            if !client.ipxe {
                opts.insert(DhcpOption::VendorExtensions(vec![6, 1, 8, 255]));
            }
        }
        if let Some(DhcpOption::ClientMachineIdentifier(uuid)) =
            req.opts().get(OptionCode::ClientMachineIdentifier)
            && uuid.len() <= 255
        {
            opts.insert(DhcpOption::ClientMachineIdentifier(uuid.clone()));
        }
    }

    /// RFC 2131 §4.1: to the relay (port 67) when `giaddr` is set; NAKs broadcast; to
    /// `ciaddr` when the client has an address; otherwise a broadcast. The unicast to
    /// `yiaddr` without an ARP entry that RFC 2131 allows is not used: a broadcast on the
    /// bound interface reaches the client just as well (see the module docs).
    fn destination(&self, req: &Message, nak: bool) -> SocketAddrV4 {
        let giaddr = req.giaddr();
        if !giaddr.is_unspecified() {
            return SocketAddrV4::new(giaddr, self.cfg.server_port);
        }
        let ciaddr = req.ciaddr();
        if nak || ciaddr.is_unspecified() {
            SocketAddrV4::new(Ipv4Addr::BROADCAST, self.cfg.client_port)
        } else {
            SocketAddrV4::new(ciaddr, self.cfg.client_port)
        }
    }

    fn count(&self, kind: MessageType) {
        match kind {
            MessageType::Offer => DhcpStats::bump(&self.stats.offers),
            MessageType::Ack => DhcpStats::bump(&self.stats.acks),
            MessageType::Nak => DhcpStats::bump(&self.stats.naks),
            _ => {}
        }
    }

    fn log(&self, kind: MessageType, mac: &Mac, ip: Ipv4Addr, boot: Option<&str>) {
        let event = match kind {
            MessageType::Offer => "dhcp_offer",
            MessageType::Ack => "dhcp_ack",
            MessageType::Nak => "dhcp_nak",
            _ => "dhcp_reply",
        };
        self.log_event(event, mac, ip, boot);
    }

    fn log_event(&self, event: &'static str, mac: &Mac, ip: Ipv4Addr, boot: Option<&str>) {
        tracing::info!(
            event,
            mac = %mac,
            ip = %ip,
            boot_file = boot.unwrap_or(""),
            mode = %self.cfg.mode,
        );
    }
}

impl Answer {
    fn lease(kind: MessageType, ip: Ipv4Addr, pool: Pool) -> Self {
        Answer {
            kind,
            ip,
            lease_time: Some(pool.lease_time),
            pool: Some(pool),
            message: None,
        }
    }

    fn nak(message: &'static str) -> Self {
        Answer {
            kind: MessageType::Nak,
            ip: Ipv4Addr::UNSPECIFIED,
            pool: None,
            lease_time: None,
            message: Some(message),
        }
    }
}

/// Options 1, 3, 6 and, for a lease, 51, 58 and 59 (RFC 2132 §3.3, §3.5, §3.8, §9.2,
/// §9.11, §9.12).
fn add_pool_options(reply: &mut Message, pool: &Pool, lease_time: Option<u32>) {
    let opts = reply.opts_mut();
    opts.insert(DhcpOption::SubnetMask(pool.netmask));
    if let Some(router) = pool.router {
        opts.insert(DhcpOption::Router(vec![router]));
    }
    if !pool.dns.is_empty() {
        opts.insert(DhcpOption::DomainNameServer(pool.dns.clone()));
    }
    opts.insert(DhcpOption::BroadcastAddr(pool.broadcast()));
    if let Some(secs) = lease_time {
        opts.insert(DhcpOption::AddressLeaseTime(secs));
        opts.insert(DhcpOption::Renewal(secs / 2));
        opts.insert(DhcpOption::Rebinding(
            u32::try_from(u64::from(secs) * 7 / 8).unwrap_or(u32::MAX),
        ));
    }
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;

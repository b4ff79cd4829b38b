//! Unit tests of the decision core: requests built with dhcproto, replies decoded back.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;

use dhcproto::v4::{Architecture, DhcpOption, Flags, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Encodable};
use proptest::prelude::*;

use super::*;
use crate::mac::Mac;
use crate::serve::dhcp::config::{DhcpConfig, Mode, Pool};
use crate::serve::dhcp::leases::LeaseTable;
use crate::serve::dhcp::stats::DhcpStats;

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
const NOW: u64 = 1_000_000;
const MAC_A: Mac = Mac([0x52, 0x54, 0, 0, 0, 0xa]);
const MAC_B: Mac = Mac([0x52, 0x54, 0, 0, 0, 0xb]);
const MAC_FIXED: Mac = Mac([0x52, 0x54, 0, 0, 0, 0xf]);

fn pool(net: u8, start: u8, end: u8) -> Pool {
    Pool {
        start: Ipv4Addr::new(10, net, 0, start),
        end: Ipv4Addr::new(10, net, 0, end),
        netmask: Ipv4Addr::new(255, 255, 255, 0),
        router: Some(Ipv4Addr::new(10, net, 0, 1)),
        dns: vec![Ipv4Addr::new(10, net, 0, 1)],
        lease_time: 600,
    }
}

fn engine(mode: Mode) -> Engine {
    let mut cfg = DhcpConfig::new(mode, SERVER, "/nonexistent/leases.json".into());
    if mode == Mode::Full {
        cfg.pools = vec![pool(1, 100, 102), pool(2, 50, 60)];
        cfg.fixed = HashMap::from([(MAC_FIXED, Ipv4Addr::new(10, 1, 0, 50))]);
    }
    cfg.validate().unwrap();
    Engine::new(
        Arc::new(cfg),
        Arc::new(LeaseTable::new()),
        Arc::new(DhcpStats::default()),
    )
}

fn request(kind: MessageType, mac: Mac, opts: Vec<DhcpOption>) -> Message {
    let mut m = Message::default();
    m.set_opcode(Opcode::BootRequest)
        .set_chaddr(&mac.0)
        .set_xid(42);
    m.opts_mut().insert(DhcpOption::MessageType(kind));
    for o in opts {
        m.opts_mut().insert(o);
    }
    m
}

fn send(e: &Engine, m: &Message) -> Option<(Message, Reply)> {
    send_on(
        e,
        m,
        Listener::Server,
        SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68),
    )
}

fn send_on(e: &Engine, m: &Message, on: Listener, src: SocketAddrV4) -> Option<(Message, Reply)> {
    let reply = e.handle(&m.to_vec().unwrap(), src, on, NOW)?;
    assert!(reply.bytes.len() >= 300, "reply padded to 300 bytes");
    Some((Message::from_bytes(&reply.bytes).unwrap(), reply))
}

fn pxe_opts(arch: u16) -> Vec<DhcpOption> {
    vec![
        DhcpOption::ClassIdentifier(b"PXEClient:Arch:00000:UNDI:002001".to_vec()),
        DhcpOption::ClientSystemArchitecture(Architecture::from(arch)),
        DhcpOption::ClientMachineIdentifier(vec![0, 1, 2, 3]),
    ]
}

/// The `file` field (dhcproto keeps the terminating NUL when decoding).
fn fname(m: &Message) -> &str {
    let bytes = m.fname().unwrap_or_default();
    std::str::from_utf8(bytes).unwrap().trim_end_matches('\0')
}

fn opt(m: &Message, code: OptionCode) -> Option<&DhcpOption> {
    m.opts().get(code)
}

#[test]
fn discover_request_ack_with_pool_options() {
    let e = engine(Mode::Full);
    let (offer, r) = send(&e, &request(MessageType::Discover, MAC_A, vec![])).unwrap();
    assert_eq!(offer.opts().msg_type(), Some(MessageType::Offer));
    assert_eq!(offer.opcode(), Opcode::BootReply);
    assert_eq!(offer.xid(), 42);
    assert_eq!(offer.yiaddr(), Ipv4Addr::new(10, 1, 0, 100));
    assert_eq!(r.dest, SocketAddrV4::new(Ipv4Addr::BROADCAST, 68));
    assert_eq!(
        opt(&offer, OptionCode::ServerIdentifier),
        Some(&DhcpOption::ServerIdentifier(SERVER))
    );
    assert_eq!(
        opt(&offer, OptionCode::AddressLeaseTime),
        Some(&DhcpOption::AddressLeaseTime(600))
    );
    assert_eq!(
        opt(&offer, OptionCode::Renewal),
        Some(&DhcpOption::Renewal(300))
    );
    assert_eq!(
        opt(&offer, OptionCode::Rebinding),
        Some(&DhcpOption::Rebinding(525))
    );
    assert_eq!(
        opt(&offer, OptionCode::SubnetMask),
        Some(&DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)))
    );
    assert!(
        opt(&offer, OptionCode::BootfileName).is_none(),
        "plain clients get no boot file"
    );

    let req = request(
        MessageType::Request,
        MAC_A,
        vec![
            DhcpOption::ServerIdentifier(SERVER),
            DhcpOption::RequestedIpAddress(offer.yiaddr()),
        ],
    );
    let (ack, _) = send(&e, &req).unwrap();
    assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));
    assert_eq!(ack.yiaddr(), offer.yiaddr());
    assert_eq!(
        e.leases.lease_for_mac(&MAC_A),
        None,
        "lease_for_mac uses the real clock"
    );
    assert_eq!(e.leases.list()[0].state, LeaseState::Bound);

    // A second client never gets the same address.
    let (offer_b, _) = send(&e, &request(MessageType::Discover, MAC_B, vec![])).unwrap();
    assert_eq!(offer_b.yiaddr(), Ipv4Addr::new(10, 1, 0, 101));
    // Nor can it take A's address by asking.
    let steal = request(
        MessageType::Request,
        MAC_B,
        vec![DhcpOption::RequestedIpAddress(offer.yiaddr())],
    );
    let (nak, r) = send(&e, &steal).unwrap();
    assert_eq!(nak.opts().msg_type(), Some(MessageType::Nak));
    assert_eq!(r.dest, SocketAddrV4::new(Ipv4Addr::BROADCAST, 68));
}

#[test]
fn renewing_is_unicast_and_keeps_the_address() {
    let e = engine(Mode::Full);
    let ip = Ipv4Addr::new(10, 1, 0, 100);
    let req = request(
        MessageType::Request,
        MAC_A,
        vec![DhcpOption::RequestedIpAddress(ip)],
    );
    assert_eq!(
        send(&e, &req).unwrap().0.opts().msg_type(),
        Some(MessageType::Ack)
    );
    let mut renew = request(MessageType::Request, MAC_A, vec![]);
    renew.set_ciaddr(ip);
    let (ack, r) = send(&e, &renew).unwrap();
    assert_eq!(ack.yiaddr(), ip);
    assert_eq!(ack.ciaddr(), ip);
    assert_eq!(r.dest, SocketAddrV4::new(ip, 68));
}

#[test]
fn wrong_subnet_and_out_of_range_requests_are_naked() {
    let e = engine(Mode::Full);
    for ip in [
        Ipv4Addr::new(192, 168, 9, 9),
        Ipv4Addr::new(10, 1, 0, 200),
        SERVER,
    ] {
        let req = request(
            MessageType::Request,
            MAC_A,
            vec![DhcpOption::RequestedIpAddress(ip)],
        );
        let (nak, _) = send(&e, &req).unwrap();
        assert_eq!(nak.opts().msg_type(), Some(MessageType::Nak), "{ip}");
        assert_eq!(nak.yiaddr(), Ipv4Addr::UNSPECIFIED);
    }
}

#[test]
fn fixed_addresses_are_reserved_for_their_mac() {
    let e = engine(Mode::Full);
    let fixed = Ipv4Addr::new(10, 1, 0, 50);
    let (offer, _) = send(&e, &request(MessageType::Discover, MAC_FIXED, vec![])).unwrap();
    assert_eq!(offer.yiaddr(), fixed);
    let steal = request(
        MessageType::Request,
        MAC_A,
        vec![DhcpOption::RequestedIpAddress(fixed)],
    );
    assert_eq!(
        send(&e, &steal).unwrap().0.opts().msg_type(),
        Some(MessageType::Nak)
    );
    // The fixed MAC cannot keep a pool address either.
    let pool_ip = Ipv4Addr::new(10, 1, 0, 101);
    let other = request(
        MessageType::Request,
        MAC_FIXED,
        vec![DhcpOption::RequestedIpAddress(pool_ip)],
    );
    assert_eq!(
        send(&e, &other).unwrap().0.opts().msg_type(),
        Some(MessageType::Nak)
    );
}

#[test]
fn offers_are_reserved_then_withdrawn_when_another_server_is_chosen() {
    let e = engine(Mode::Full);
    let (offer_a, _) = send(&e, &request(MessageType::Discover, MAC_A, vec![])).unwrap();
    let (offer_b, _) = send(&e, &request(MessageType::Discover, MAC_B, vec![])).unwrap();
    assert_ne!(offer_a.yiaddr(), offer_b.yiaddr());
    let elsewhere = request(
        MessageType::Request,
        MAC_A,
        vec![
            DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 1, 0, 254)),
            DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 1, 0, 254)),
        ],
    );
    assert!(send(&e, &elsewhere).is_none());
    assert!(e.leases.list().iter().all(|l| l.mac != MAC_A));
}

#[test]
fn pool_exhaustion_gives_no_offer() {
    let e = engine(Mode::Full);
    for last in 1..=3u8 {
        assert!(
            send(
                &e,
                &request(MessageType::Discover, Mac([2, 0, 0, 0, 0, last]), vec![])
            )
            .is_some()
        );
    }
    assert!(
        send(
            &e,
            &request(MessageType::Discover, Mac([2, 0, 0, 0, 0, 9]), vec![])
        )
        .is_none()
    );
}

#[test]
fn decline_quarantines_and_release_frees() {
    let e = engine(Mode::Full);
    let ip = Ipv4Addr::new(10, 1, 0, 100);
    let req = request(
        MessageType::Request,
        MAC_A,
        vec![DhcpOption::RequestedIpAddress(ip)],
    );
    send(&e, &req).unwrap();
    let decline = request(
        MessageType::Decline,
        MAC_A,
        vec![
            DhcpOption::RequestedIpAddress(ip),
            DhcpOption::ServerIdentifier(SERVER),
        ],
    );
    assert!(send(&e, &decline).is_none());
    let (offer, _) = send(&e, &request(MessageType::Discover, MAC_B, vec![])).unwrap();
    assert_ne!(offer.yiaddr(), ip, "declined address stays out of the pool");

    let (offer_a, _) = send(&e, &request(MessageType::Discover, MAC_A, vec![])).unwrap();
    let req = request(
        MessageType::Request,
        MAC_A,
        vec![DhcpOption::RequestedIpAddress(offer_a.yiaddr())],
    );
    send(&e, &req).unwrap();
    let mut release = request(
        MessageType::Release,
        MAC_A,
        vec![DhcpOption::ServerIdentifier(SERVER)],
    );
    release.set_ciaddr(offer_a.yiaddr());
    assert!(send(&e, &release).is_none());
    let released = e
        .leases
        .list()
        .into_iter()
        .find(|l| l.mac == MAC_A)
        .unwrap();
    assert_eq!(released.state, LeaseState::Released);
    assert_eq!(e.stats.snapshot().releases, 1);
    assert_eq!(e.stats.snapshot().declines, 1);
}

#[test]
fn inform_gets_options_without_a_lease() {
    let e = engine(Mode::Full);
    let mut inform = request(MessageType::Inform, MAC_A, vec![]);
    inform.set_ciaddr(Ipv4Addr::new(10, 1, 0, 7));
    let (ack, r) = send(&e, &inform).unwrap();
    assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));
    assert_eq!(ack.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert!(opt(&ack, OptionCode::AddressLeaseTime).is_none());
    assert_eq!(r.dest, SocketAddrV4::new(Ipv4Addr::new(10, 1, 0, 7), 68));
}

#[test]
fn relayed_requests_use_the_relay_pool_and_go_back_to_the_relay() {
    let e = engine(Mode::Full);
    let mut discover = request(MessageType::Discover, MAC_A, vec![]);
    discover.set_giaddr(Ipv4Addr::new(10, 2, 0, 1));
    let (offer, r) = send(&e, &discover).unwrap();
    assert_eq!(offer.yiaddr(), Ipv4Addr::new(10, 2, 0, 50));
    assert_eq!(offer.giaddr(), Ipv4Addr::new(10, 2, 0, 1));
    assert_eq!(r.dest, SocketAddrV4::new(Ipv4Addr::new(10, 2, 0, 1), 67));
    assert_eq!(
        opt(&offer, OptionCode::Router),
        Some(&DhcpOption::Router(vec![Ipv4Addr::new(10, 2, 0, 1)]))
    );
    // Option 82 goes back to the relay (RFC 3046).
    let mut info = dhcproto::v4::relay::RelayAgentInformation::default();
    info.insert(dhcproto::v4::relay::RelayInfo::AgentCircuitId(
        b"port7".to_vec(),
    ));
    discover
        .opts_mut()
        .insert(DhcpOption::RelayAgentInformation(info.clone()));
    let (offer, _) = send(&e, &discover).unwrap();
    assert_eq!(
        opt(&offer, OptionCode::RelayAgentInformation),
        Some(&DhcpOption::RelayAgentInformation(info))
    );
    // A relay from an unknown subnet gets nothing.
    discover.set_giaddr(Ipv4Addr::new(10, 9, 0, 1));
    assert!(send(&e, &discover).is_none());
}

#[test]
fn pxe_boot_files_by_architecture_and_ipxe_script() {
    let e = engine(Mode::Full);
    for (arch, file) in [
        (0, "undionly.kpxe"),
        (7, "ipxe.efi"),
        (9, "ipxe.efi"),
        (6, "ipxe.efi"),
    ] {
        let mut d = request(MessageType::Discover, MAC_A, pxe_opts(arch));
        d.set_flags(Flags::default().set_broadcast());
        let (offer, _) = send(&e, &d).unwrap();
        assert_eq!(
            opt(&offer, OptionCode::BootfileName),
            Some(&DhcpOption::BootfileName(file.as_bytes().to_vec()))
        );
        assert_eq!(fname(&offer), file);
        assert_eq!(offer.siaddr(), SERVER);
        assert!(offer.flags().broadcast());
        assert_eq!(
            opt(&offer, OptionCode::TFTPServerName),
            Some(&DhcpOption::TFTPServerName(b"10.1.0.1".to_vec()))
        );
        assert_eq!(
            opt(&offer, OptionCode::ClassIdentifier),
            Some(&DhcpOption::ClassIdentifier(b"PXEClient".to_vec()))
        );
        assert_eq!(
            opt(&offer, OptionCode::ClientMachineIdentifier),
            Some(&DhcpOption::ClientMachineIdentifier(vec![0, 1, 2, 3]))
        );
        assert_eq!(
            opt(&offer, OptionCode::VendorExtensions),
            Some(&DhcpOption::VendorExtensions(vec![6, 1, 8, 255]))
        );
    }
    let mut ipxe = pxe_opts(7);
    ipxe.push(DhcpOption::UserClass(b"iPXE".to_vec()));
    let (offer, _) = send(&e, &request(MessageType::Discover, MAC_A, ipxe)).unwrap();
    let url = "http://10.1.0.1/boot.ipxe?mac=52:54:00:00:00:0a";
    assert_eq!(
        opt(&offer, OptionCode::BootfileName),
        Some(&DhcpOption::BootfileName(url.as_bytes().to_vec()))
    );
    // Option 175 alone also marks iPXE.
    let mut encap = pxe_opts(0);
    encap.push(DhcpOption::Unknown(dhcproto::v4::UnknownOption::new(
        OptionCode::from(175u8),
        vec![177, 5, 1, 0x10, 0xec, 0x81, 0x39],
    )));
    let (offer, _) = send(&e, &request(MessageType::Discover, MAC_B, encap)).unwrap();
    assert_eq!(
        fname(&offer),
        "http://10.1.0.1/boot.ipxe?mac=52:54:00:00:00:0b"
    );
}

#[test]
fn proxy_answers_only_pxe_clients_without_an_address() {
    let e = engine(Mode::Proxy);
    assert!(send(&e, &request(MessageType::Discover, MAC_A, vec![])).is_none());
    let (offer, r) = send(&e, &request(MessageType::Discover, MAC_A, pxe_opts(7))).unwrap();
    assert_eq!(offer.opts().msg_type(), Some(MessageType::Offer));
    assert_eq!(offer.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(fname(&offer), "ipxe.efi");
    assert_eq!(r.dest, SocketAddrV4::new(Ipv4Addr::BROADCAST, 68));
    assert_eq!(
        opt(&offer, OptionCode::VendorExtensions),
        Some(&DhcpOption::VendorExtensions(vec![6, 1, 8, 255]))
    );
    assert!(opt(&offer, OptionCode::AddressLeaseTime).is_none());
    // REQUESTs on 67 are the site server's business.
    assert!(send(&e, &request(MessageType::Request, MAC_A, pxe_opts(7))).is_none());
    // The boot-server exchange on 4011 is answered to the sender.
    let client = SocketAddrV4::new(Ipv4Addr::new(10, 1, 0, 77), 68);
    let mut req = request(MessageType::Request, MAC_A, pxe_opts(0));
    req.set_ciaddr(*client.ip());
    let (ack, r) = send_on(&e, &req, Listener::ProxyBoot, client).unwrap();
    assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));
    assert_eq!(fname(&ack), "undionly.kpxe");
    assert_eq!(r.dest, client);
    assert!(e.leases.list().is_empty());
}

#[test]
fn full_mode_answers_boot_server_requests_on_4011() {
    let e = engine(Mode::Full);
    let client = SocketAddrV4::new(Ipv4Addr::new(10, 1, 0, 100), 68);
    let mut req = request(MessageType::Request, MAC_A, pxe_opts(7));
    req.set_ciaddr(*client.ip());
    let (ack, r) = send_on(&e, &req, Listener::ProxyBoot, client).unwrap();
    assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));
    assert_eq!(fname(&ack), "ipxe.efi");
    assert_eq!(ack.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(r.dest, client);
    assert!(e.leases.list().is_empty(), "no lease from port 4011");
    // Plain clients get nothing there either.
    let plain = request(MessageType::Request, MAC_A, vec![]);
    assert!(send_on(&e, &plain, Listener::ProxyBoot, client).is_none());
}

#[test]
fn malformed_packets_are_counted() {
    let e = engine(Mode::Full);
    let src = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68);
    assert!(e.handle(&[], src, Listener::Server, NOW).is_none());
    assert!(e.handle(&[1; 100], src, Listener::Server, NOW).is_none());
    let mut reply = request(MessageType::Discover, MAC_A, vec![]);
    reply.set_opcode(Opcode::BootReply);
    assert!(
        e.handle(&reply.to_vec().unwrap(), src, Listener::Server, NOW)
            .is_none()
    );
    assert_eq!(e.stats.snapshot().malformed, 3);
    assert_eq!(e.stats.snapshot().received, 3);
}

/// A `MakeWriter` collecting log output in memory.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// tracing caches per callsite whether anyone listens; other tests running on other threads
/// of this process can make that cache say "no" under a scoped subscriber. So the check runs
/// alone, in a child process of this test binary.
#[test]
fn one_info_event_per_offer_ack_and_release() {
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .args([
            "--exact",
            "serve::dhcp::engine::tests::log_events_in_isolation",
            "--ignored",
            "--test-threads=1",
            "--nocapture",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("1 passed"), "{text}");
}

#[test]
#[ignore = "run in its own process by one_info_event_per_offer_ack_and_release"]
fn log_events_in_isolation() {
    let out = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::INFO)
        .with_writer(out.clone())
        .finish();
    // With a single registered dispatcher, tracing-core asks only the *current thread's*
    // default when a callsite registers: another test thread reaching the engine's log
    // callsite first would cache "never" for everyone and this test would see no events.
    // A second (silent) dispatcher makes registrations ask every dispatcher, this one too.
    let _second = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());
    tracing::subscriber::with_default(subscriber, || {
        // Other tests' threads may have cached "no subscriber is interested" for these
        // callsites; recompute with this one registered.
        tracing::callsite::rebuild_interest_cache();
        let e = engine(Mode::Full);
        let mut opts = pxe_opts(7);
        opts.push(DhcpOption::UserClass(b"iPXE".to_vec()));
        let (offer, _) = send(&e, &request(MessageType::Discover, MAC_A, opts)).unwrap();
        let req = request(
            MessageType::Request,
            MAC_A,
            vec![DhcpOption::RequestedIpAddress(offer.yiaddr())],
        );
        send(&e, &req).unwrap();
        let mut release = request(MessageType::Release, MAC_A, vec![]);
        release.set_ciaddr(offer.yiaddr());
        assert!(send(&e, &release).is_none());
    });
    let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    let events: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["fields"].clone())
        .collect();
    let names: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["dhcp_offer", "dhcp_ack", "dhcp_release"], "{text}");
    assert_eq!(events[0]["mac"], "52:54:00:00:00:0a");
    assert_eq!(events[0]["ip"], "10.1.0.100");
    assert_eq!(
        events[0]["boot_file"],
        "http://10.1.0.1/boot.ipxe?mac=52:54:00:00:00:0a"
    );
    assert_eq!(events[0]["mode"], "full");
}

#[path = "engine_properties.rs"]
mod properties;

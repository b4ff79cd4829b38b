//! Crafted packets and bad input: proxy mode (PXE clients only, no addresses, the 4011
//! boot-server exchange), relayed requests (crafted, and perfdhcp as a relay), garbage
//! datagrams, and configurations the server refuses to bind.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use dhcproto::v4::{Architecture, DhcpOption, Flags, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Encodable};
use ovl::serve::dhcp::{DhcpConfig, DhcpServer, Mode, Pool};

use super::lab::{CLIENT_IF, Lab, SERVER_IP, Server};
use super::{events, last_event, udhcpc, udhcpc_script};
use crate::harness::proc::require;

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

/// Starts a full-mode server that also has a pool 10.213.2.100-`end` for the relayed
/// subnet 10.213.2.0/24. The client namespace plays the relay: 10.213.1.2 on the server's
/// link, 10.213.2.1 on the relayed subnet; the server routes that subnet through it.
fn relay_lab(lab: &Lab, end: u8) -> Server {
    let mut cfg = lab.config(Mode::Full);
    cfg.pools.push(Pool {
        start: Ipv4Addr::new(10, 213, 2, 100),
        end: Ipv4Addr::new(10, 213, 2, end),
        netmask: Ipv4Addr::new(255, 255, 255, 0),
        router: Some(Ipv4Addr::new(10, 213, 2, 1)),
        dns: vec![],
        lease_time: 300,
    });
    let server = Server::start(lab, cfg);
    lab.client_ns.addr("10.213.1.2/24", CLIENT_IF);
    lab.client_ns.addr("10.213.2.1/24", CLIENT_IF);
    lab.server_ns
        .ip(&["route", "add", "10.213.2.0/24", "via", "10.213.1.2"]);
    server
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
    lab.client_ns
        .thread(move || {
            let sock =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
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
#[ignore = "needs root: network namespaces"]
fn proxy_mode_answers_pxe_clients_only_without_addresses() {
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
    lab.client_ns.addr("10.213.1.77/24", CLIENT_IF);
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
#[ignore = "needs root: network namespaces"]
fn relayed_requests_get_the_relay_pool_and_go_back_to_the_relay() {
    let lab = Lab::new();
    let server = relay_lab(&lab, 110);

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
#[ignore = "needs root: network namespaces"]
fn perfdhcp_as_a_relay_gets_offers_and_acks_from_the_relay_pool() {
    require("perfdhcp");
    let lab = Lab::new();
    let server = relay_lab(&lab, 199);
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

#[test]
#[ignore = "needs root: network namespaces"]
fn garbage_is_dropped_and_counted() {
    let lab = Lab::new();
    let server = Server::start(&lab, lab.config(Mode::Full));
    lab.client_ns.addr("10.213.1.9/24", CLIENT_IF);
    lab.client_ns
        .thread(|| {
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

//! Property tests of the decision core: no input panics it, and whatever clients do, one
//! address is never acknowledged to two clients at once.

use super::*;

fn valid_bytes() -> Vec<u8> {
    let mut opts = pxe_opts(7);
    opts.push(DhcpOption::UserClass(b"iPXE".to_vec()));
    opts.push(DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 1, 0, 100)));
    request(MessageType::Request, MAC_A, opts).to_vec().unwrap()
}

proptest! {
    #[test]
    fn any_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
        for mode in [Mode::Full, Mode::Proxy] {
            let e = engine(mode);
            for on in [Listener::Server, Listener::ProxyBoot] {
                let _ = e.handle(&bytes, SocketAddrV4::new(Ipv4Addr::new(10, 1, 0, 9), 68), on, NOW);
            }
        }
    }

    #[test]
    fn mutated_requests_never_panic(
        edits in proptest::collection::vec((0usize..400, any::<u8>()), 1..12),
        cut in 0usize..400,
    ) {
        let mut bytes = valid_bytes();
        for (at, byte) in edits {
            let len = bytes.len();
            bytes[at % len] = byte;
        }
        bytes.truncate(cut.max(240));
        for mode in [Mode::Full, Mode::Proxy] {
            let e = engine(mode);
            let _ = e.handle(&bytes, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68), Listener::Server, NOW);
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Discover(usize),
    Select(usize, u8),
    InitReboot(usize, u8),
    Renew(usize, u8),
    Release(usize, u8),
    Decline(usize, u8),
    Wait(u64),
}

fn op() -> impl Strategy<Value = Op> {
    let mac = 0usize..5;
    let host = 98u8..104; // around the 100..=102 pool, plus 50 (fixed) below
    prop_oneof![
        mac.clone().prop_map(Op::Discover),
        (mac.clone(), host.clone()).prop_map(|(m, h)| Op::Select(m, h)),
        (mac.clone(), prop_oneof![host.clone(), Just(50u8)])
            .prop_map(|(m, h)| Op::InitReboot(m, h)),
        (mac.clone(), host.clone()).prop_map(|(m, h)| Op::Renew(m, h)),
        (mac.clone(), host.clone()).prop_map(|(m, h)| Op::Release(m, h)),
        (mac, host).prop_map(|(m, h)| Op::Decline(m, h)),
        (1u64..700).prop_map(Op::Wait),
    ]
}

proptest! {
    /// Whatever clients do, an address acknowledged to one client is never acknowledged to
    /// another while the first one's lease runs, and a fixed address goes to its owner only.
    #[test]
    fn never_two_clients_on_one_address(ops in proptest::collection::vec(op(), 1..60)) {
        let e = engine(Mode::Full);
        let macs = [MAC_A, MAC_B, MAC_FIXED, Mac([2, 0, 0, 0, 0, 4]), Mac([2, 0, 0, 0, 0, 5])];
        let mut now = NOW;
        // ip -> (mac, expires) of every acknowledged, unreleased lease
        let mut bound: HashMap<Ipv4Addr, (Mac, u64)> = HashMap::new();
        for op in ops {
            let (msg, mac) = match op {
                Op::Wait(secs) => { now += secs; continue; }
                Op::Discover(m) => (request(MessageType::Discover, macs[m], vec![]), macs[m]),
                Op::Select(m, h) => (request(MessageType::Request, macs[m], vec![
                    DhcpOption::ServerIdentifier(SERVER),
                    DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 1, 0, h)),
                ]), macs[m]),
                Op::InitReboot(m, h) => (request(MessageType::Request, macs[m], vec![
                    DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 1, 0, h)),
                ]), macs[m]),
                Op::Renew(m, h) => {
                    let mut r = request(MessageType::Request, macs[m], vec![]);
                    r.set_ciaddr(Ipv4Addr::new(10, 1, 0, h));
                    (r, macs[m])
                }
                Op::Release(m, h) => {
                    let mut r = request(MessageType::Release, macs[m], vec![]);
                    r.set_ciaddr(Ipv4Addr::new(10, 1, 0, h));
                    let ip = Ipv4Addr::new(10, 1, 0, h);
                    if bound.get(&ip).is_some_and(|(owner, _)| *owner == macs[m]) {
                        bound.remove(&ip);
                    }
                    (r, macs[m])
                }
                Op::Decline(m, h) => (request(MessageType::Decline, macs[m], vec![
                    DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 1, 0, h)),
                ]), macs[m]),
            };
            let bytes = msg.to_vec().unwrap();
            let src = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68);
            let Some(reply) = e.handle(&bytes, src, Listener::Server, now) else { continue };
            let reply = Message::from_bytes(&reply.bytes).unwrap();
            if reply.opts().msg_type() != Some(MessageType::Ack) {
                continue;
            }
            let ip = reply.yiaddr();
            if let Some((owner, expires)) = bound.get(&ip) {
                prop_assert!(
                    *owner == mac || *expires <= now,
                    "{ip} acked to {mac:?} while {owner:?} holds it until {expires} (now {now})"
                );
            }
            if ip == Ipv4Addr::new(10, 1, 0, 50) {
                prop_assert_eq!(mac, MAC_FIXED);
            }
            if mac == MAC_FIXED {
                prop_assert_eq!(ip, Ipv4Addr::new(10, 1, 0, 50));
            }
            bound.retain(|_, (owner, _)| *owner != mac);
            bound.insert(ip, (mac, now + 600));
        }
    }
}

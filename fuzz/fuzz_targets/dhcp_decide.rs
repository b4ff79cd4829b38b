//! Fuzzes the DHCP decision core: any datagram, on either port, in either mode, must give
//! a reply or nothing, never a panic.
#![no_main]

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use ovl::mac::Mac;
use ovl::serve::dhcp::{DhcpConfig, DhcpStats, Engine, LeaseTable, Listener, Mode, Pool};

fn engines() -> &'static [Engine; 2] {
    static ENGINES: OnceLock<[Engine; 2]> = OnceLock::new();
    ENGINES.get_or_init(|| {
        let server = Ipv4Addr::new(10, 0, 0, 1);
        let make = |mode| {
            let mut cfg = DhcpConfig::new(mode, server, "/nonexistent/leases.json".into());
            cfg.pools = vec![Pool {
                start: Ipv4Addr::new(10, 0, 0, 10),
                end: Ipv4Addr::new(10, 0, 0, 20),
                netmask: Ipv4Addr::new(255, 255, 255, 0),
                router: Some(server),
                dns: vec![server],
                lease_time: 600,
            }];
            cfg.fixed.insert(Mac([2, 0, 0, 0, 0, 1]), Ipv4Addr::new(10, 0, 0, 5));
            Engine::new(
                Arc::new(cfg),
                Arc::new(LeaseTable::new()),
                Arc::new(DhcpStats::default()),
            )
        };
        [make(Mode::Full), make(Mode::Proxy)]
    })
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks the listener and the clock, the rest is the datagram.
    let Some((&selector, packet)) = data.split_first() else {
        return;
    };
    let listener = if selector & 1 == 0 { Listener::Server } else { Listener::ProxyBoot };
    let now = 1_000_000 + u64::from(selector >> 1) * 60;
    let src = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 99), 68);
    for engine in engines() {
        if let Some(reply) = engine.handle(packet, src, listener, now) {
            assert!(reply.bytes.len() >= 300);
        }
    }
});

//! Which MAC an IP address belongs to, for `configs_access = "owner"` (SPEC §6 "Config
//! privacy") and for attributing boot events to devices.
//!
//! A [`NeighbourSource`] answers "which MAC is at this address now?". `ProcArp` reads the
//! kernel's IPv4 neighbour table (`/proc/net/arp`); the DHCP server's lease table
//! ([`LeaseTable`], or `LateLeases` when it is bound after the HTTP server) is a second
//! source, which also knows each device's leased address (`/status`). [`Neighbours`] asks
//! its sources in order and takes the first answer.
//! [`StaticNeighbours`] is a fixed table, for tests and for sites that pin addresses.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use crate::mac::Mac;
use crate::serve::dhcp::LeaseTable;

/// A source of IP → MAC knowledge.
pub trait NeighbourSource: Send + Sync + fmt::Debug {
    /// The MAC currently at `ip`, if this source knows it.
    fn mac_of(&self, ip: IpAddr) -> Option<Mac>;

    /// The address this source knows `mac` to hold now (a DHCP lease); `None` by default.
    fn address_of(&self, _mac: &Mac) -> Option<IpAddr> {
        None
    }
}

impl NeighbourSource for LeaseTable {
    fn mac_of(&self, ip: IpAddr) -> Option<Mac> {
        let IpAddr::V4(v4) = ip.to_canonical() else {
            return None;
        };
        self.mac_for_ip(v4)
    }

    fn address_of(&self, mac: &Mac) -> Option<IpAddr> {
        self.lease_for_mac(mac).map(IpAddr::V4)
    }
}

/// A lease table that arrives later: empty until [`LateLeases::set`] (the DHCP server is
/// bound after the HTTP server, whose neighbour sources are fixed when it binds).
#[derive(Debug, Default)]
pub(crate) struct LateLeases(OnceLock<Arc<LeaseTable>>);

impl LateLeases {
    /// Fills the slot; a second call is ignored.
    pub(crate) fn set(&self, leases: Arc<LeaseTable>) {
        let _ = self.0.set(leases);
    }
}

impl NeighbourSource for LateLeases {
    fn mac_of(&self, ip: IpAddr) -> Option<Mac> {
        self.0.get().and_then(|l| l.mac_of(ip))
    }

    fn address_of(&self, mac: &Mac) -> Option<IpAddr> {
        self.0.get().and_then(|l| l.address_of(mac))
    }
}

/// The kernel's IPv4 neighbour (ARP) table, read from `/proc/net/arp` on every question
/// (the file is small and always current). Only complete entries count.
#[derive(Debug, Clone)]
pub(crate) struct ProcArp {
    /// The file to read; `/proc/net/arp` by default.
    pub path: PathBuf,
}

impl Default for ProcArp {
    fn default() -> Self {
        ProcArp {
            path: PathBuf::from("/proc/net/arp"),
        }
    }
}

impl NeighbourSource for ProcArp {
    fn mac_of(&self, ip: IpAddr) -> Option<Mac> {
        let IpAddr::V4(v4) = ip.to_canonical() else {
            return None;
        };
        let text = std::fs::read_to_string(&self.path).ok()?;
        parse_proc_arp(&text)
            .into_iter()
            .find(|(a, _)| *a == v4)
            .map(|(_, m)| m)
    }
}

/// ATF_COM: the entry is complete (the kernel has seen the MAC answer).
const ATF_COM: u32 = 0x2;

/// Parses the text of `/proc/net/arp` into (address, MAC) pairs of complete entries.
/// Lines that do not parse are skipped.
///
/// ```text
/// IP address       HW type     Flags       HW address            Mask     Device
/// 192.168.0.50     0x1         0x2         52:54:00:12:34:56     *        eth0
/// ```
pub(crate) fn parse_proc_arp(text: &str) -> Vec<(Ipv4Addr, Mac)> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let ip: Ipv4Addr = f.next()?.parse().ok()?;
            let _hw_type = f.next()?;
            let flags = u32::from_str_radix(f.next()?.trim_start_matches("0x"), 16).ok()?;
            let mac: Mac = f.next()?.parse().ok()?;
            (flags & ATF_COM != 0 && mac.0 != [0; 6]).then_some((ip, mac))
        })
        .collect()
}

/// A fixed table of addresses and MACs.
#[derive(Debug, Clone, Default)]
pub struct StaticNeighbours(pub HashMap<IpAddr, Mac>);

impl NeighbourSource for StaticNeighbours {
    fn mac_of(&self, ip: IpAddr) -> Option<Mac> {
        self.0.get(&ip.to_canonical()).copied()
    }
}

/// Several sources asked in order; the first that knows an address answers.
#[derive(Debug, Clone)]
pub struct Neighbours {
    sources: Vec<Arc<dyn NeighbourSource>>,
}

impl Default for Neighbours {
    /// The kernel's neighbour table alone.
    fn default() -> Self {
        Neighbours::new(vec![Arc::new(ProcArp::default())])
    }
}

impl Neighbours {
    /// Sources asked in the given order.
    pub fn new(sources: Vec<Arc<dyn NeighbourSource>>) -> Neighbours {
        Neighbours { sources }
    }

    /// Adds a source asked after the existing ones (e.g. the DHCP lease table).
    pub fn push(&mut self, source: Arc<dyn NeighbourSource>) {
        self.sources.push(source);
    }

    /// The MAC at `ip`, from the first source that knows it.
    pub fn mac_of(&self, ip: IpAddr) -> Option<Mac> {
        self.sources.iter().find_map(|s| s.mac_of(ip))
    }

    /// The address `mac` holds by a source's knowledge (its DHCP lease), if any.
    pub fn address_of(&self, mac: &Mac) -> Option<IpAddr> {
        self.sources.iter().find_map(|s| s.address_of(mac))
    }

    /// Does `ip` belong to `mac`? True when any source says so (a lease and a neighbour
    /// entry may briefly disagree after a device moves; either is proof enough).
    pub fn owns(&self, ip: IpAddr, mac: &Mac) -> bool {
        self.sources.iter().any(|s| s.mac_of(ip) == Some(*mac))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARP: &str = "IP address       HW type     Flags       HW address            Mask     Device\n\
192.168.0.50     0x1         0x2         52:54:00:12:34:56     *        eth0\n\
192.168.0.51     0x1         0x0         00:00:00:00:00:00     *        eth0\n\
192.168.0.52     0x1         0x6         52:54:00:AB:CD:01     *        br0\n\
garbage line\n\
10.0.0.1 0x1 zz 52:54:00:12:34:56 * eth1\n";

    #[test]
    fn parses_complete_entries_only() {
        let v = parse_proc_arp(ARP);
        assert_eq!(
            v,
            vec![
                (
                    "192.168.0.50".parse().unwrap(),
                    "52:54:00:12:34:56".parse().unwrap()
                ),
                (
                    "192.168.0.52".parse().unwrap(),
                    "52:54:00:ab:cd:01".parse().unwrap()
                ),
            ]
        );
        assert!(parse_proc_arp("").is_empty());
    }

    #[test]
    fn proc_arp_reads_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("arp");
        std::fs::write(&p, ARP).unwrap();
        let src = ProcArp { path: p };
        let mac: Mac = "52:54:00:12:34:56".parse().unwrap();
        assert_eq!(src.mac_of("192.168.0.50".parse().unwrap()), Some(mac));
        assert_eq!(
            src.mac_of("::ffff:192.168.0.50".parse().unwrap()),
            Some(mac)
        );
        assert_eq!(src.mac_of("192.168.0.51".parse().unwrap()), None);
        let missing = ProcArp {
            path: dir.path().join("nope"),
        };
        assert_eq!(missing.mac_of("192.168.0.50".parse().unwrap()), None);
    }

    #[test]
    fn neighbours_ask_every_source() {
        let a: Mac = "52:54:00:00:00:01".parse().unwrap();
        let b: Mac = "52:54:00:00:00:02".parse().unwrap();
        let ip: IpAddr = "10.0.0.5".parse().unwrap();
        let one = StaticNeighbours([(ip, a)].into_iter().collect());
        let two = StaticNeighbours([(ip, b)].into_iter().collect());
        let n = Neighbours::new(vec![Arc::new(one), Arc::new(two)]);
        assert_eq!(n.mac_of(ip), Some(a));
        assert!(n.owns(ip, &a));
        assert!(n.owns(ip, &b));
        assert!(!n.owns("10.0.0.6".parse().unwrap(), &a));
        assert_eq!(n.address_of(&a), None);
    }

    #[test]
    fn an_empty_late_lease_table_knows_nothing() {
        let late = Arc::new(LateLeases::default());
        let n = Neighbours::new(vec![late.clone()]);
        let ip: IpAddr = "10.0.0.5".parse().unwrap();
        assert_eq!(n.mac_of(ip), None);
        late.set(Arc::new(LeaseTable::new()));
        assert_eq!(n.mac_of(ip), None);
        assert_eq!(n.address_of(&Mac([2, 0, 0, 0, 0, 1])), None);
    }
}

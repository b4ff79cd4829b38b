//! The DHCP server's configuration: plain data, validated once by [`DhcpConfig::validate`].

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use crate::mac::Mac;

/// How the server takes part in DHCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// PXE proxyDHCP: boot information only, no addresses, next to the site's own DHCP
    /// server; answers only clients whose option 60 starts with `PXEClient`.
    Proxy,
    /// A full DHCP server: addresses from pools, fixed addresses, leases, plus PXE boot
    /// information.
    Full,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Proxy => "proxy",
            Mode::Full => "full",
        })
    }
}

/// One subnet's dynamic address range and the options handed out with it.
///
/// The pool's subnet is `start & netmask`. The pool whose subnet holds the server's own
/// address serves the local link; the others serve relayed requests whose `giaddr` lies in
/// their subnet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    /// First address handed out (inclusive).
    pub start: Ipv4Addr,
    /// Last address handed out (inclusive).
    pub end: Ipv4Addr,
    /// Subnet mask (option 1).
    pub netmask: Ipv4Addr,
    /// Default router (option 3), if any.
    pub router: Option<Ipv4Addr>,
    /// DNS servers (option 6).
    pub dns: Vec<Ipv4Addr>,
    /// Lease time in seconds (option 51); T1 (58) is half of it, T2 (59) seven eighths.
    pub lease_time: u32,
}

impl Pool {
    /// The subnet's network address.
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.start) & u32::from(self.netmask))
    }

    /// The subnet's broadcast address.
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network()) | !u32::from(self.netmask))
    }

    /// Whether `ip` lies in this pool's subnet.
    pub fn subnet_contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & u32::from(self.netmask) == u32::from(self.network())
    }

    /// Whether `ip` lies in the dynamic range `start..=end`.
    pub fn range_contains(&self, ip: Ipv4Addr) -> bool {
        (u32::from(self.start)..=u32::from(self.end)).contains(&u32::from(ip))
    }
}

/// The DHCP server's configuration.
#[derive(Debug, Clone)]
pub struct DhcpConfig {
    /// Proxy or full DHCP.
    pub mode: Mode,
    /// Interface to bind to with `SO_BINDTODEVICE`; broadcast replies leave through it.
    /// Without one, broadcasts follow the routing table (a default route is needed).
    pub interface: Option<String>,
    /// This server's address: `siaddr`/next-server, server identifier (option 54),
    /// TFTP server (option 66).
    pub server_ip: Ipv4Addr,
    /// Address the sockets bind to (default `0.0.0.0`, which is needed to receive
    /// broadcasts).
    pub bind_ip: Ipv4Addr,
    /// Server port (67).
    pub server_port: u16,
    /// Client port replies are sent to (68).
    pub client_port: u16,
    /// PXE boot-server port (4011), where proxyDHCP clients ask for their boot file.
    pub proxy_port: u16,
    /// Address pools (full mode); see [`Pool`] for how one is chosen.
    pub pools: Vec<Pool>,
    /// Fixed addresses by MAC (from the inventory), full mode. Never handed to another MAC.
    pub fixed: HashMap<Mac, Ipv4Addr>,
    /// Boot file by client architecture (option 93, RFC 4578 §2.1).
    pub boot_files: BTreeMap<u16, String>,
    /// iPXE script URL; `?mac=` and the client's MAC (lowercase, colons) are appended.
    pub ipxe_script_url: String,
    /// File the leases are persisted to (JSON, written atomically).
    pub lease_file: PathBuf,
    /// How long an offered address stays reserved for the client it was offered to.
    pub offer_hold_secs: u64,
    /// How long a declined address (DHCPDECLINE) is kept out of the pool.
    pub decline_quarantine_secs: u64,
}

/// The default boot files: BIOS (0) → `undionly.kpxe`; x86 and x86-64 UEFI (6, 7, 9) →
/// `ipxe.efi`.
pub fn default_boot_files() -> BTreeMap<u16, String> {
    let mut map = BTreeMap::new();
    map.insert(0, "undionly.kpxe".to_string());
    for arch in [6, 7, 9] {
        map.insert(arch, "ipxe.efi".to_string());
    }
    map
}

impl DhcpConfig {
    /// A configuration with the usual ports, the default boot files, the script URL
    /// `http://SERVER/boot.ipxe`, no pools and no fixed addresses.
    pub fn new(mode: Mode, server_ip: Ipv4Addr, lease_file: PathBuf) -> Self {
        DhcpConfig {
            mode,
            interface: None,
            server_ip,
            bind_ip: Ipv4Addr::UNSPECIFIED,
            server_port: 67,
            client_port: 68,
            proxy_port: 4011,
            pools: Vec::new(),
            fixed: HashMap::new(),
            boot_files: default_boot_files(),
            ipxe_script_url: format!("http://{server_ip}/boot.ipxe"),
            lease_file,
            offer_hold_secs: 60,
            decline_quarantine_secs: 600,
        }
    }

    /// Checks the pools (ordered ranges inside their subnets, positive lease times, no
    /// overlapping subnets) and that full mode has a pool for the server's own subnet.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (i, pool) in self.pools.iter().enumerate() {
            if u32::from(pool.start) > u32::from(pool.end) || !pool.subnet_contains(pool.end) {
                return Err(ConfigError::BadRange {
                    start: pool.start,
                    end: pool.end,
                });
            }
            if pool.lease_time == 0 {
                return Err(ConfigError::ZeroLeaseTime { start: pool.start });
            }
            for other in &self.pools[..i] {
                if other.subnet_contains(pool.start) || pool.subnet_contains(other.start) {
                    return Err(ConfigError::OverlappingPools {
                        a: other.start,
                        b: pool.start,
                    });
                }
            }
        }
        let mut owners: HashMap<Ipv4Addr, &Mac> = HashMap::new();
        for (mac, ip) in &self.fixed {
            if *ip == self.server_ip {
                return Err(ConfigError::FixedIsServer { mac: *mac });
            }
            if let Some(other) = owners.insert(*ip, mac) {
                let (a, b) = (*other.min(mac), *other.max(mac));
                return Err(ConfigError::DuplicateFixed { ip: *ip, a, b });
            }
        }
        if self.mode == Mode::Full && !self.pools.iter().any(|p| p.subnet_contains(self.server_ip))
        {
            return Err(ConfigError::NoLocalPool {
                server_ip: self.server_ip,
            });
        }
        Ok(())
    }
}

/// A configuration the server cannot run with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A pool's range is reversed or leaves its subnet.
    #[error("DHCP pool {start}..{end}: the range is reversed or leaves its subnet")]
    BadRange {
        /// First address.
        start: Ipv4Addr,
        /// Last address.
        end: Ipv4Addr,
    },
    /// A pool has a lease time of zero.
    #[error("DHCP pool starting at {start}: lease time must be positive")]
    ZeroLeaseTime {
        /// First address of the pool.
        start: Ipv4Addr,
    },
    /// Two pools share a subnet.
    #[error("DHCP pools starting at {a} and {b} share a subnet")]
    OverlappingPools {
        /// First address of one pool.
        a: Ipv4Addr,
        /// First address of the other.
        b: Ipv4Addr,
    },
    /// Two MACs share a fixed address.
    #[error("fixed address {ip} is given to both {a} and {b}")]
    DuplicateFixed {
        /// The address.
        ip: Ipv4Addr,
        /// One MAC.
        a: Mac,
        /// The other MAC.
        b: Mac,
    },
    /// A fixed address is the server's own.
    #[error("device {mac}: its fixed address is the DHCP server's own address")]
    FixedIsServer {
        /// The device's MAC.
        mac: Mac,
    },
    /// Full mode without a pool for the server's own subnet.
    #[error("full DHCP mode needs a pool in the subnet of the server address {server_ip}")]
    NoLocalPool {
        /// The server address.
        server_ip: Ipv4Addr,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_culprits() {
        let server: Ipv4Addr = "10.0.0.1".parse().unwrap();
        let mut cfg = DhcpConfig::new(Mode::Full, server, "l.json".into());
        assert_eq!(
            cfg.validate(),
            Err(ConfigError::NoLocalPool { server_ip: server })
        );
        let pool = Pool {
            start: "10.0.0.10".parse().unwrap(),
            end: "10.0.0.20".parse().unwrap(),
            netmask: "255.255.255.0".parse().unwrap(),
            router: None,
            dns: vec![],
            lease_time: 60,
        };
        cfg.pools = vec![pool.clone()];
        assert_eq!(cfg.validate(), Ok(()));
        cfg.pools.push(pool.clone());
        assert!(matches!(
            cfg.validate(),
            Err(ConfigError::OverlappingPools { .. })
        ));
        cfg.pools = vec![Pool {
            end: "10.0.1.5".parse().unwrap(),
            ..pool.clone()
        }];
        assert!(matches!(cfg.validate(), Err(ConfigError::BadRange { .. })));
        cfg.pools = vec![pool];
        let ip: Ipv4Addr = "10.0.0.5".parse().unwrap();
        cfg.fixed.insert(Mac([2, 0, 0, 0, 0, 2]), ip);
        cfg.fixed.insert(Mac([2, 0, 0, 0, 0, 1]), ip);
        let err = cfg.validate().unwrap_err();
        assert_eq!(
            err.to_string(),
            "fixed address 10.0.0.5 is given to both 02:00:00:00:00:01 and 02:00:00:00:00:02"
        );
        cfg.fixed = HashMap::from([(Mac([2, 0, 0, 0, 0, 3]), server)]);
        assert!(matches!(
            cfg.validate(),
            Err(ConfigError::FixedIsServer { .. })
        ));
    }

    #[test]
    fn pool_geometry() {
        let pool = Pool {
            start: "10.0.0.10".parse().unwrap(),
            end: "10.0.0.20".parse().unwrap(),
            netmask: "255.255.255.0".parse().unwrap(),
            router: None,
            dns: vec![],
            lease_time: 60,
        };
        assert_eq!(pool.network(), Ipv4Addr::new(10, 0, 0, 0));
        assert_eq!(pool.broadcast(), Ipv4Addr::new(10, 0, 0, 255));
        assert!(pool.subnet_contains(Ipv4Addr::new(10, 0, 0, 1)));
        assert!(!pool.range_contains(Ipv4Addr::new(10, 0, 0, 1)));
        assert!(pool.range_contains(Ipv4Addr::new(10, 0, 0, 20)));
    }
}

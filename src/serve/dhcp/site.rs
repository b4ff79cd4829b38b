//! The DHCP settings of a site: `[boot] server`, `[serve] interface` and `[serve.dhcp]` of
//! `ovl.toml` plus the inventory's fixed addresses, turned once into the embedded server's
//! [`DhcpConfig`] (for `ovl serve --dhcp proxy|full`) or into a [`DhcpExport`] (for `ovl
//! export`). Both share one reading of the site, so the exported configurations say what
//! the embedded server does.
//!
//! The boot server's address is `[boot] server` when that is an IPv4 address, else the first
//! IPv4 address of the interface (`--interface` or `[serve] interface`), read with
//! `getifaddrs(3)`. Neither: an error naming `ovl.toml` (exit 1); an interface without an
//! IPv4 address: an environment error (exit 3).

use std::collections::{BTreeMap, HashMap};
use std::ffi::CStr;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use crate::build::project::{Project, Selection};
use crate::error::{Error, Result};
use crate::serve::dhcp::export::{DhcpExport, ExportHost};
use crate::serve::dhcp::pxe::with_mac;
use crate::serve::dhcp::{DhcpConfig, Mode, Pool, default_boot_files};
use crate::site::{DhcpMode, SITE_FILE, Site};

/// The private folder of the site where the server keeps its state (hidden: never served).
pub(crate) use crate::site::layout::STATE_DIR;
/// The lease file inside [`STATE_DIR`].
pub(crate) const LEASE_FILE: &str = "dhcp-leases.json";
/// The usage error of DHCP without an interface: proxy mode would answer PXE on every
/// interface of the machine, full mode hand out addresses there.
pub(crate) const NEEDS_INTERFACE: &str = "DHCP (proxy or full) needs the interface to serve: \
     pass --interface IF or set [serve] interface in ovl.toml";
/// Lease time when `[serve.dhcp] lease_time` is not set.
pub(crate) const DEFAULT_LEASE_TIME: u32 = 600;

/// The first IPv4 address of interface `name` and its netmask, from `getifaddrs(3)`.
pub(crate) fn interface_ipv4(name: &str) -> Option<(Ipv4Addr, Ipv4Addr)> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return None;
    }
    let mut found = None;
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let ifname = unsafe { CStr::from_ptr(ifa.ifa_name) };
        // SAFETY: ifa_addr is non-null and points to a sockaddr of the list.
        let family = unsafe { (*ifa.ifa_addr).sa_family };
        if ifname.to_bytes() != name.as_bytes() || i32::from(family) != libc::AF_INET {
            continue;
        }
        let v4 = |sa: *const libc::sockaddr| -> Option<Ipv4Addr> {
            if sa.is_null() {
                return None;
            }
            // SAFETY: AF_INET entries carry sockaddr_in addresses and masks.
            let sin = unsafe { &*(sa.cast::<libc::sockaddr_in>()) };
            Some(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)))
        };
        if let Some(addr) = v4(ifa.ifa_addr) {
            let mask = v4(ifa.ifa_netmask).unwrap_or(Ipv4Addr::new(255, 255, 255, 0));
            found = Some((addr, mask));
            break;
        }
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    found
}

/// The boot server's address (and the interface's netmask when it came from there).
pub(crate) fn server_ip(
    site: &Site,
    interface: Option<&str>,
) -> Result<(Ipv4Addr, Option<Ipv4Addr>)> {
    let configured = site.config.boot.server.as_deref();
    if let Some(ip) = configured.and_then(|s| s.parse::<Ipv4Addr>().ok()) {
        let mask = interface
            .and_then(interface_ipv4)
            .filter(|(a, _)| *a == ip)
            .map(|(_, m)| m);
        return Ok((ip, mask));
    }
    match interface {
        Some(ifname) => interface_ipv4(ifname)
            .map(|(a, m)| (a, Some(m)))
            .ok_or_else(|| {
                Error::Env(format!(
                    "interface {ifname} has no IPv4 address (or does not exist); the DHCP \
                     server needs one, or an IPv4 [boot] server in {}",
                    site.root.join(SITE_FILE).display()
                ))
            }),
        None => Err(Error::at_path(
            site.root.join(SITE_FILE),
            match configured {
                Some(s) => format!(
                    "[boot] server = {s:?} is not an IPv4 address and no interface is set: \
                     the DHCP server needs its own address (set [serve] interface or pass \
                     --interface IF)"
                ),
                None => "DHCP needs the server's address: set [boot] server to an IPv4 \
                         address, or [serve] interface (or --interface IF)"
                    .to_string(),
            },
        )),
    }
}

/// The iPXE script URL devices are sent to: `[serve.dhcp] script_url` when set, else
/// `Site::http_base()` + `/boot.ipxe` with the address the HTTP server really listens on
/// (`http`), and the server address standing in when the host would be iPXE's
/// `${next-server}`.
pub(crate) fn script_url(site: &Site, http: Option<SocketAddr>, server_ip: Ipv4Addr) -> String {
    if let Some(url) = &site.config.serve.dhcp.script_url {
        return url.clone();
    }
    let mut site = site.clone();
    if let Some(a) = http {
        site.config.serve.http = a.to_string();
    }
    let base = site.http_base();
    format!("{base}/boot.ipxe").replace("${next-server}", &server_ip.to_string())
}

/// `[serve.dhcp] boot_files` with architecture numbers, or the engine's defaults when unset.
pub(crate) fn boot_files(site: &Site) -> Result<BTreeMap<u16, String>> {
    let given = &site.config.serve.dhcp.boot_files;
    if given.is_empty() {
        return Ok(default_boot_files());
    }
    let path = site.root.join(SITE_FILE);
    given
        .iter()
        .map(|(k, v)| {
            let arch: u16 = k.trim().parse().map_err(|_| {
                Error::at_path(
                    &path,
                    format!(
                        "[serve.dhcp] boot_files: key {k:?} is not a client architecture \
                         number (option 93: 0 BIOS, 7 x86-64 UEFI, …)"
                    ),
                )
            })?;
            if v.is_empty() || v.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(Error::at_path(
                    &path,
                    format!("[serve.dhcp] boot_files.{k} = {v:?}: expected a file name"),
                ));
            }
            Ok((arch, v.clone()))
        })
        .collect()
}

/// The pool of `[serve.dhcp]`, if it names a range; `mask` is the interface's netmask, used
/// when `netmask` is not set (else 255.255.255.0).
fn pool(site: &Site, mask: Option<Ipv4Addr>) -> Option<Pool> {
    let d = &site.config.serve.dhcp;
    let [start, end] = d.range?;
    Some(Pool {
        start,
        end,
        netmask: d
            .netmask
            .or(mask)
            .unwrap_or(Ipv4Addr::new(255, 255, 255, 0)),
        router: d.router,
        dns: d.dns.clone(),
        lease_time: d.lease_time.unwrap_or(DEFAULT_LEASE_TIME),
    })
}

/// The lease file of a site, `SITE/.ovl-state/dhcp-leases.json`; the folder is created.
pub(crate) fn lease_file(root: &Path) -> Result<PathBuf> {
    let dir = root.join(STATE_DIR);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    Ok(dir.join(LEASE_FILE))
}

/// The embedded server's configuration for `mode` (not `off`) on `interface`, sending iPXE
/// to the HTTP server at `http` (the address it really listens on, when it runs).
pub(crate) fn dhcp_config(
    project: &Project,
    mode: DhcpMode,
    interface: Option<&str>,
    http: Option<SocketAddr>,
) -> Result<DhcpConfig> {
    let site = &project.site;
    let path = site.root.join(SITE_FILE);
    let mode = match mode {
        DhcpMode::Off => return Err(Error::Usage("DHCP is off".into())),
        DhcpMode::Proxy => Mode::Proxy,
        DhcpMode::Full => Mode::Full,
    };
    if interface.is_none() {
        return Err(Error::Usage(NEEDS_INTERFACE.into()));
    }
    let (server, mask) = server_ip(site, interface)?;
    let mut cfg = DhcpConfig::new(mode, server, lease_file(&site.root)?);
    cfg.interface = interface.map(str::to_string);
    cfg.boot_files = boot_files(site)?;
    cfg.ipxe_script_url = script_url(site, http, server);
    if mode == Mode::Full {
        let pool = pool(site, mask).ok_or_else(|| {
            Error::at_path(
                &path,
                "full DHCP needs an address pool: set [serve.dhcp] range = [\"FIRST\", \
                 \"LAST\"] (and netmask, router, dns)",
            )
        })?;
        let main_lease = pool.lease_time;
        cfg.pools = vec![pool];
        // Subnets behind DHCP relays: chosen by the relay's address (giaddr).
        for r in &site.config.serve.dhcp.relays {
            cfg.pools.push(Pool {
                start: r.range[0],
                end: r.range[1],
                netmask: r.netmask,
                router: r.router,
                dns: r.dns.clone(),
                lease_time: r.lease_time.unwrap_or(main_lease),
            });
        }
        check_fixed(project, &cfg.pools, server)?;
        cfg.fixed = project
            .inventory
            .devices
            .values()
            .filter_map(|d| d.ip.map(|ip| (d.mac, ip)))
            .collect::<HashMap<_, _>>();
    }
    cfg.validate()
        .map_err(|e| Error::at_path(&path, e.to_string()))?;
    Ok(cfg)
}

/// Full mode: every fixed address of the inventory lies in the subnet of a pool and is not
/// the server's own; else an error at the device's entry in `devices.toml`.
fn check_fixed(project: &Project, pools: &[Pool], server: Ipv4Addr) -> Result<()> {
    for d in project.inventory.devices.values() {
        let Some(ip) = d.ip else { continue };
        let why = if ip == server {
            "is the DHCP server's own address".to_string()
        } else if !pools.iter().any(|p| p.subnet_contains(ip)) {
            let subnets: Vec<String> = pools
                .iter()
                .map(|p| format!("{}/{}", p.network(), p.netmask))
                .collect();
            format!(
                "lies outside the subnet of every DHCP pool ({})",
                subnets.join(", ")
            )
        } else {
            continue;
        };
        return Err(Error::input(
            d.location.clone(),
            format!("device {}: fixed address {ip} {why}", d.mac),
        ));
    }
    Ok(())
}

/// iPXE's setting for the MAC of the booting interface, expanded by iPXE in the boot file
/// name an exported configuration hands out.
pub(crate) const IPXE_MAC: &str = "${net0/mac}";

/// What `ovl export` writes for this site: the pool of `[serve.dhcp]` (if it names one),
/// every inventory device with its effective hostname and fixed address, and the script URL
/// with `?mac=${net0/mac}`.
///
/// With `pxe: false` (the Kea HA pair, which gives no PXE answers) a site that names no
/// boot server address and no interface is fine: `server_ip` is then 0.0.0.0.
pub(crate) fn export_config(
    project: &Project,
    interface: Option<&str>,
    pxe: bool,
) -> Result<DhcpExport> {
    let site = &project.site;
    let interface = interface.or(site.config.serve.interface.as_deref());
    let (server, mask) = match server_ip(site, interface) {
        Err(_) if !pxe && interface.is_none() => (Ipv4Addr::UNSPECIFIED, None),
        found => found?,
    };
    let d = &site.config.serve.dhcp;
    let netmask = d
        .netmask
        .or(mask)
        .unwrap_or(Ipv4Addr::new(255, 255, 255, 0));
    let range = d.range.map(|[a, b]| (a, b));
    let subnet = range.map_or(server, |(a, _)| a);
    let specs = project.select(&Selection {
        all: true,
        ..Default::default()
    })?;
    let hosts = specs
        .iter()
        .map(|spec| {
            let hostname = match project.settings(spec) {
                Ok(settings) => settings.hostname,
                Err(e) => {
                    eprintln!("warning: {e} (exported with its inventory host name)");
                    spec.device
                        .as_ref()
                        .and_then(|d| d.hostname.clone())
                        .unwrap_or_default()
                }
            };
            ExportHost {
                mac: spec.mac,
                hostname,
                ip: spec.device.as_ref().and_then(|d| d.ip),
            }
        })
        .collect();
    Ok(DhcpExport {
        server_ip: server,
        subnet,
        netmask,
        range,
        router: d.router,
        dns: d.dns.clone(),
        lease_time: d.lease_time.unwrap_or(DEFAULT_LEASE_TIME),
        hosts,
        boot_files: boot_files(site)?,
        ipxe_script_url: with_mac(&script_url(site, None, server), IPXE_MAC),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(toml_text: &str) -> (tempfile::TempDir, Site) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(SITE_FILE), toml_text).unwrap();
        let site = Site::open(dir.path()).unwrap();
        (dir, site)
    }

    #[test]
    fn server_ip_from_boot_server_or_interface() {
        let (_d, s) = site("[boot]\nserver = \"10.1.2.3\"\n");
        assert_eq!(server_ip(&s, None).unwrap().0, Ipv4Addr::new(10, 1, 2, 3));
        let (_d, s) = site("[boot]\nserver = \"pxe.example\"\n");
        assert_eq!(server_ip(&s, None).unwrap_err().exit_code(), 1);
        assert_eq!(
            server_ip(&s, Some("lo")).unwrap(),
            (Ipv4Addr::LOCALHOST, Some(Ipv4Addr::new(255, 0, 0, 0)))
        );
        assert_eq!(
            server_ip(&s, Some("no-such-if0")).unwrap_err().exit_code(),
            3
        );
    }

    #[test]
    fn relay_pools_join_the_main_pool() {
        let (_d, s) = site(
            "[boot]\nserver = \"10.1.0.1\"\n[serve.dhcp]\nrange = [\"10.1.0.10\", \"10.1.0.99\"]\n\
             netmask = \"255.255.255.0\"\nlease_time = 900\n[[serve.dhcp.relay]]\n\
             range = [\"10.2.0.10\", \"10.2.0.99\"]\nnetmask = \"255.255.255.0\"\nrouter = \"10.2.0.1\"\n",
        );
        let p = Project::load(s).unwrap();
        let cfg = dhcp_config(&p, DhcpMode::Full, Some("lo"), None).unwrap();
        assert_eq!(cfg.pools.len(), 2);
        assert_eq!(cfg.pools[1].start, Ipv4Addr::new(10, 2, 0, 10));
        assert_eq!(cfg.pools[1].router, Some(Ipv4Addr::new(10, 2, 0, 1)));
        assert_eq!(cfg.pools[1].lease_time, 900);
    }

    #[test]
    fn boot_files_are_checked() {
        let (_d, s) =
            site("[serve.dhcp]\nboot_files = { \"0\" = \"a.kpxe\", \"7\" = \"b.efi\" }\n");
        let b = boot_files(&s).unwrap();
        assert_eq!(b.get(&7).map(String::as_str), Some("b.efi"));
        assert_eq!(b.len(), 2);
        let (_d, s) = site("[serve.dhcp]\nboot_files = { \"efi\" = \"b.efi\" }\n");
        let e = boot_files(&s).unwrap_err();
        assert_eq!(e.exit_code(), 1);
        assert!(e.to_string().contains("\"efi\""), "{e}");
        let (_d, s) = site("");
        assert_eq!(boot_files(&s).unwrap(), default_boot_files());
    }

    #[test]
    fn the_example_site_gives_full_and_proxy_configurations() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("site");
        crate::site::example::write_example(&root).unwrap();
        let toml_path = root.join(SITE_FILE);
        let text = std::fs::read_to_string(&toml_path).unwrap();
        let text = text.replace("server = \"192.168.0.2\"", "");
        let text: String = text
            .lines()
            .filter(|l| !l.starts_with("dhcp ="))
            .map(|l| format!("{l}\n"))
            .collect();
        let pool = "[serve.dhcp]\nrange = [\"127.0.0.10\", \"127.0.0.20\"]\n";
        std::fs::write(&toml_path, format!("{text}{pool}")).unwrap();
        // The example's fixed addresses (192.168.0.50, .60) lie in no pool's subnet.
        let project = Project::load(Site::open(&root).unwrap()).unwrap();
        let e = dhcp_config(&project, DhcpMode::Full, Some("lo"), None).unwrap_err();
        assert_eq!(e.exit_code(), 1);
        let msg = e.to_string();
        assert!(
            msg.starts_with(&format!("{}:", root.join("devices.toml").display())),
            "{msg}"
        );
        assert!(msg.contains("device 52:54:00:12:34:56: fixed address 192.168.0.50 lies outside the subnet of every DHCP pool (127.0.0.0/255.0.0.0)"), "{msg}");
        // A relay pool for their subnet makes them valid.
        let relay = "[[serve.dhcp.relay]]\nrange = [\"192.168.0.100\", \"192.168.0.199\"]\nnetmask = \"255.255.255.0\"\n";
        std::fs::write(&toml_path, format!("{text}{pool}{relay}")).unwrap();
        let project = Project::load(Site::open(&root).unwrap()).unwrap();
        let http: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let cfg = dhcp_config(&project, DhcpMode::Full, Some("lo"), Some(http)).unwrap();
        assert_eq!(cfg.mode, Mode::Full);
        assert_eq!(cfg.server_ip, Ipv4Addr::LOCALHOST);
        assert_eq!(cfg.interface.as_deref(), Some("lo"));
        assert_eq!(cfg.ipxe_script_url, "http://127.0.0.1:8080/boot.ipxe");
        assert_eq!(
            cfg.pools[0].netmask,
            Ipv4Addr::new(255, 0, 0, 0),
            "lo's mask"
        );
        assert_eq!(cfg.pools[0].lease_time, DEFAULT_LEASE_TIME);
        assert_eq!(
            cfg.fixed
                .get(&crate::mac::Mac([0x52, 0x54, 0, 0x12, 0x34, 0x56])),
            Some(&Ipv4Addr::new(192, 168, 0, 50))
        );
        assert_eq!(cfg.fixed.len(), 2);
        assert_eq!(cfg.lease_file, root.join(".ovl-state/dhcp-leases.json"));
        assert!(root.join(STATE_DIR).is_dir());
        // Full mode needs an interface (usage) and a range (input).
        let e = dhcp_config(&project, DhcpMode::Full, None, None).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let proxy = dhcp_config(&project, DhcpMode::Proxy, Some("lo"), None).unwrap();
        assert!(proxy.pools.is_empty() && proxy.fixed.is_empty());
        assert_eq!(proxy.mode, Mode::Proxy);
        // Proxy needs an interface too: it would answer PXE on every interface.
        let e = dhcp_config(&project, DhcpMode::Proxy, None, None).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("--interface"), "{e}");
        // A fixed address equal to the server's own.
        let devices = root.join("devices.toml");
        let inv = std::fs::read_to_string(&devices).unwrap();
        std::fs::write(&devices, inv.replace("192.168.0.60", "127.0.0.1")).unwrap();
        let project = Project::load(Site::open(&root).unwrap()).unwrap();
        let e = dhcp_config(&project, DhcpMode::Full, Some("lo"), None).unwrap_err();
        assert!(
            e.to_string()
                .contains("fixed address 127.0.0.1 is the DHCP server's own address"),
            "{e}"
        );
    }

    #[test]
    fn script_url_uses_the_listening_address() {
        let (_d, s) = site("");
        let ip = Ipv4Addr::new(10, 0, 0, 1);
        assert_eq!(script_url(&s, None, ip), "http://10.0.0.1/boot.ipxe");
        assert_eq!(
            script_url(&s, Some("10.0.0.1:8080".parse().unwrap()), ip),
            "http://10.0.0.1:8080/boot.ipxe"
        );
        let (_d, s) = site("[boot]\nserver = \"pxe.example\"\n");
        assert_eq!(script_url(&s, None, ip), "http://pxe.example/boot.ipxe");
        let (_d, s) =
            site("[serve.dhcp]\nmode = \"proxy\"\nscript_url = \"tftp://10.0.0.1/boot.ipxe\"\n");
        assert_eq!(script_url(&s, None, ip), "tftp://10.0.0.1/boot.ipxe");
    }
}

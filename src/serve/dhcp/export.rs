//! `ovl export dnsmasq|isc-dhcpd|kea`: the DHCP configuration equivalent to `ovl serve
//! --dhcp full`, for sites that keep their own DHCP server.
//!
//! Every output does the same thing as the embedded server (see [`crate::serve::dhcp`]):
//! iPXE clients (user class 77 `iPXE`, RFC 3004, or iPXE's option 175) get the HTTP script
//! URL, other PXE clients get the boot file of their architecture (option 93, RFC 4578),
//! `next-server`/`siaddr` is the boot server, and inventory devices with a fixed address
//! get a reservation. The outputs are checked by the programs themselves in
//! `tests/cli/export.rs` (`dnsmasq --test`, `dhcpd -t`, `kea-dhcp4 -t`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde_json::{Value, json};

use crate::mac::Mac;

/// The target DHCP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// dnsmasq (`dhcp-range`, `dhcp-userclass`, `dhcp-match`, `dhcp-boot`, `dhcp-host`).
    Dnsmasq,
    /// ISC dhcpd (`dhcpd.conf`: `subnet`, `next-server`, `filename`, `host`).
    IscDhcpd,
    /// Kea DHCPv4 (JSON: `Dhcp4`, `client-classes`, `subnet4`, `reservations`).
    Kea,
}

impl ExportFormat {
    /// The format's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            ExportFormat::Dnsmasq => "dnsmasq",
            ExportFormat::IscDhcpd => "isc-dhcpd",
            ExportFormat::Kea => "kea",
        }
    }
}

impl FromStr for ExportFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "dnsmasq" => Ok(ExportFormat::Dnsmasq),
            "isc-dhcpd" | "dhcpd" | "isc" => Ok(ExportFormat::IscDhcpd),
            "kea" => Ok(ExportFormat::Kea),
            other => Err(format!(
                "unknown DHCP export format {other:?} (expected dnsmasq, isc-dhcpd or kea)"
            )),
        }
    }
}

/// One inventory device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportHost {
    /// Its MAC.
    pub mac: Mac,
    /// Its host name (handed out as option 12).
    pub hostname: String,
    /// Its fixed address, if it has one.
    pub ip: Option<Ipv4Addr>,
}

/// What the exported configuration says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpExport {
    /// The boot server (next-server, TFTP and HTTP).
    pub server_ip: Ipv4Addr,
    /// Any address of the subnet (usually the network address); masked with `netmask`.
    pub subnet: Ipv4Addr,
    /// The subnet mask.
    pub netmask: Ipv4Addr,
    /// The dynamic range, inclusive; `None` serves reservations only.
    pub range: Option<(Ipv4Addr, Ipv4Addr)>,
    /// The default router.
    pub router: Option<Ipv4Addr>,
    /// DNS servers.
    pub dns: Vec<Ipv4Addr>,
    /// Lease time in seconds.
    pub lease_time: u32,
    /// The inventory's devices.
    pub hosts: Vec<ExportHost>,
    /// Boot file by client architecture (option 93); architecture 0 also serves clients
    /// that send no option 93.
    pub boot_files: BTreeMap<u16, String>,
    /// The iPXE script URL (e.g. `http://SERVER/boot.ipxe`); the script itself passes the
    /// MAC on with `${net0/mac}`.
    pub ipxe_script_url: String,
}

impl DhcpExport {
    fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.subnet) & u32::from(self.netmask))
    }

    fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network()) | !u32::from(self.netmask))
    }

    fn prefix_len(&self) -> u32 {
        u32::from(self.netmask).leading_ones()
    }
}

/// Renders `cfg` for `format`.
pub fn export(format: ExportFormat, cfg: &DhcpExport) -> String {
    match format {
        ExportFormat::Dnsmasq => dnsmasq(cfg),
        ExportFormat::IscDhcpd => isc_dhcpd(cfg),
        ExportFormat::Kea => kea(cfg),
    }
}

/// A host name reduced to what every DHCP server accepts as an identifier: letters,
/// digits and `-`; a device without a usable one is named after its MAC.
fn host_id(host: &ExportHost) -> String {
    let id: String = host
        .hostname
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let id = id.trim_matches('-');
    if id.is_empty() {
        format!("ovl-{}", host.mac.to_string().replace(':', ""))
    } else {
        id.to_string()
    }
}

/// A string literal for dhcpd.conf or JSON-like quoting (`"` and `\` escaped).
fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        if !c.is_control() {
            out.push(c);
        }
    }
    out.push('"');
    out
}

fn join(ips: &[Ipv4Addr], sep: &str) -> String {
    ips.iter()
        .map(Ipv4Addr::to_string)
        .collect::<Vec<_>>()
        .join(sep)
}

/// dnsmasq: tags `ipxe` (user class or option 175), `pxe` (vendor class `PXEClient`) and
/// `arch-N` (option 93) select the `dhcp-boot` line; PXE clients without option 93 get the
/// architecture-0 file through `tag:!arch-N`. Plain clients get no boot file.
pub fn dnsmasq(cfg: &DhcpExport) -> String {
    let mut out = String::from("# Generated by `ovl export dnsmasq`.\n");
    let mask = cfg.netmask;
    let lease = cfg.lease_time;
    match cfg.range {
        Some((start, end)) => {
            let _ = writeln!(out, "dhcp-range={start},{end},{mask},{lease}");
        }
        None => {
            let _ = writeln!(out, "dhcp-range={},static,{mask},{lease}", cfg.network());
        }
    }
    if let Some(router) = cfg.router {
        let _ = writeln!(out, "dhcp-option=option:router,{router}");
    }
    if !cfg.dns.is_empty() {
        let _ = writeln!(out, "dhcp-option=option:dns-server,{}", join(&cfg.dns, ","));
    }
    out.push_str("\n# iPXE itself: user class \"iPXE\" or its encapsulated options (175).\n");
    out.push_str("dhcp-userclass=set:ipxe,iPXE\ndhcp-match=set:ipxe,175\n");
    let _ = writeln!(out, "dhcp-boot=tag:ipxe,{}", cfg.ipxe_script_url);
    out.push_str(
        "\n# Firmware PXE clients (option 60 PXEClient): the iPXE binary for their\n\
         # architecture (option 93); no option 93 counts as BIOS (0).\n",
    );
    out.push_str("dhcp-vendorclass=set:pxe,PXEClient\n");
    for (arch, file) in &cfg.boot_files {
        let _ = writeln!(out, "dhcp-match=set:arch-{arch},option:client-arch,{arch}");
        let _ = writeln!(
            out,
            "dhcp-boot=tag:pxe,tag:!ipxe,tag:arch-{arch},{file},,{}",
            cfg.server_ip
        );
    }
    if let Some(file) = cfg.boot_files.get(&0) {
        let others: String = cfg
            .boot_files
            .keys()
            .map(|arch| format!("tag:!arch-{arch},"))
            .collect();
        let _ = writeln!(
            out,
            "dhcp-boot=tag:pxe,tag:!ipxe,{others}{file},,{}",
            cfg.server_ip
        );
    }
    if !cfg.hosts.is_empty() {
        out.push_str("\n# Inventory devices.\n");
    }
    for host in &cfg.hosts {
        let mac = host.mac.to_string();
        let name = host_id(host);
        match host.ip {
            Some(ip) => {
                let _ = writeln!(out, "dhcp-host={mac},{ip},{name}");
            }
            None => {
                let _ = writeln!(out, "dhcp-host={mac},{name}");
            }
        }
    }
    out
}

/// ISC dhcpd, after the classic example of the PXE server guide (`next-server`,
/// `filename`), with the iPXE user-class check, the boot file by architecture for PXE
/// clients (vendor class `PXEClient`), and `host` reservations.
pub fn isc_dhcpd(cfg: &DhcpExport) -> String {
    let mut out = String::from("# Generated by `ovl export isc-dhcpd`.\n");
    let _ = writeln!(out, "default-lease-time {};", cfg.lease_time);
    let _ = writeln!(out, "max-lease-time {};", cfg.lease_time);
    out.push_str("authoritative;\nallow booting;\nallow bootp;\n\n");
    out.push_str("option client-arch code 93 = unsigned integer 16;\n");
    out.push_str("option space ipxe;\n");
    out.push_str("option ipxe-encap-opts code 175 = encapsulate ipxe;\n\n");
    let _ = writeln!(out, "subnet {} netmask {} {{", cfg.network(), cfg.netmask);
    if let Some((start, end)) = cfg.range {
        let _ = writeln!(out, "  range {start} {end};");
    }
    let _ = writeln!(out, "  option subnet-mask {};", cfg.netmask);
    let _ = writeln!(out, "  option broadcast-address {};", cfg.broadcast());
    if let Some(router) = cfg.router {
        let _ = writeln!(out, "  option routers {router};");
    }
    if !cfg.dns.is_empty() {
        let _ = writeln!(
            out,
            "  option domain-name-servers {};",
            join(&cfg.dns, ", ")
        );
    }
    let _ = writeln!(out, "  next-server {};", cfg.server_ip);
    out.push_str(
        "  if exists ipxe-encap-opts or (exists user-class and option user-class = \"iPXE\") {\n",
    );
    let _ = writeln!(out, "    filename {};", quoted(&cfg.ipxe_script_url));
    out.push_str("  } elsif substring(option vendor-class-identifier, 0, 9) = \"PXEClient\" {\n");
    let mut first = true;
    for (arch, file) in &cfg.boot_files {
        let [hi, lo] = arch.to_be_bytes();
        let keyword = if first { "    if" } else { "    } elsif" };
        first = false;
        if *arch == 0 {
            let _ = writeln!(
                out,
                "{keyword} not exists client-arch or option client-arch = {hi:02x}:{lo:02x} {{"
            );
        } else {
            let _ = writeln!(out, "{keyword} option client-arch = {hi:02x}:{lo:02x} {{");
        }
        let _ = writeln!(out, "      filename {};", quoted(file));
    }
    if !first {
        out.push_str("    }\n");
    }
    out.push_str("  }\n}\n");
    for host in &cfg.hosts {
        let _ = writeln!(out, "\nhost {} {{", host_id(host));
        let _ = writeln!(out, "  hardware ethernet {};", host.mac);
        if let Some(ip) = host.ip {
            let _ = writeln!(out, "  fixed-address {ip};");
        }
        let _ = writeln!(out, "  option host-name {};", quoted(&host_id(host)));
        out.push_str("}\n");
    }
    out
}

/// Kea DHCPv4: one client class per case (iPXE first, then each architecture of PXE
/// clients), mutually exclusive, and reservations in the subnet.
pub fn kea(cfg: &DhcpExport) -> String {
    const IPXE: &str = "(option[77].hex == 'iPXE' or option[175].exists)";
    const PXE: &str = "substring(option[60].hex,0,9) == 'PXEClient'";
    let mut classes = vec![json!({
        "name": "ovl-ipxe",
        "test": IPXE,
        "next-server": cfg.server_ip.to_string(),
        "boot-file-name": cfg.ipxe_script_url,
    })];
    for (arch, file) in &cfg.boot_files {
        let by_arch = format!("option[93].hex == 0x{arch:04x}");
        let test = if *arch == 0 {
            format!("not {IPXE} and {PXE} and (not option[93].exists or {by_arch})")
        } else {
            format!("not {IPXE} and {PXE} and {by_arch}")
        };
        classes.push(json!({
            "name": format!("ovl-arch-{arch}"),
            "test": test,
            "next-server": cfg.server_ip.to_string(),
            "boot-file-name": file,
        }));
    }
    let mut options = Vec::new();
    if let Some(router) = cfg.router {
        options.push(json!({"name": "routers", "data": router.to_string()}));
    }
    if !cfg.dns.is_empty() {
        options.push(json!({"name": "domain-name-servers", "data": join(&cfg.dns, ", ")}));
    }
    let reservations: Vec<Value> = cfg
        .hosts
        .iter()
        .map(|host| {
            let mut r = json!({
                "hw-address": host.mac.to_string(),
                "hostname": host_id(host),
            });
            if let (Some(ip), Some(map)) = (host.ip, r.as_object_mut()) {
                map.insert("ip-address".into(), json!(ip.to_string()));
            }
            r
        })
        .collect();
    let pools: Vec<Value> = cfg
        .range
        .iter()
        .map(|(start, end)| json!({"pool": format!("{start} - {end}")}))
        .collect();
    let doc = json!({
        "Dhcp4": {
            "interfaces-config": {"interfaces": ["*"]},
            "lease-database": {"type": "memfile", "lfc-interval": 3600},
            "authoritative": true,
            "valid-lifetime": cfg.lease_time,
            "next-server": cfg.server_ip.to_string(),
            "client-classes": classes,
            "subnet4": [{
                "id": 1,
                "subnet": format!("{}/{}", cfg.network(), cfg.prefix_len()),
                "pools": pools,
                "option-data": options,
                "reservations": reservations,
            }],
        }
    });
    let mut text = serde_json::to_string_pretty(&doc).unwrap_or_default();
    text.push('\n');
    text
}

//! `ovl export dnsmasq|isc-dhcpd|kea [--snippet]`: the DHCP configuration equivalent to `ovl
//! serve --dhcp full`, for sites that keep their own DHCP server.
//!
//! Every output does the same thing as the embedded server (see [`crate::serve::dhcp`]):
//! iPXE clients (user class 77 `iPXE`, RFC 3004, or iPXE's option 175) get the HTTP script
//! URL with `?mac=${net0/mac}` (iPXE expands it in the boot file name, so the script knows
//! the device and puts its profile's kernel arguments in), other PXE clients get the boot
//! file of their architecture (option 93, RFC 4578), `next-server`/`siaddr` is the boot
//! server, and inventory devices get a reservation (their fixed address, their host name).
//!
//! Two forms: [`export`], a whole configuration (pool, options, PXE, reservations), and
//! [`export_snippet`], only the PXE part and the reservations, to merge into the
//! configuration of a DHCP server that already serves the subnet (names prefixed `ovl-`, no
//! global declarations). Without a pool (`[serve.dhcp] range` unset) ovl cannot write a
//! whole configuration that gives every device an address, so [`export`] gives the snippet,
//! headed by a comment saying so. Both forms are checked by the programs themselves in the
//! tests (`dnsmasq --test`, `dhcpd -t`, `kea-dhcp4 -t`; the snippet inside a minimal
//! configuration) and served to real clients (udhcpc) by dnsmasq, ISC dhcpd and Kea.

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
    /// The iPXE script URL as handed out, e.g. `http://SERVER/boot.ipxe?mac=${net0/mac}`
    /// (iPXE expands `${net0/mac}` before fetching it).
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

/// Renders `cfg` for `format` as a whole configuration; without a pool, the snippet
/// ([`export_snippet`]) headed by a comment saying why.
pub fn export(format: ExportFormat, cfg: &DhcpExport) -> String {
    match format {
        ExportFormat::Dnsmasq => dnsmasq(cfg),
        ExportFormat::IscDhcpd => isc_dhcpd(cfg),
        ExportFormat::Kea => kea(cfg),
    }
}

/// Renders only the PXE part and the reservations of `cfg` for `format`, to merge into an
/// existing configuration of the subnet.
pub fn export_snippet(format: ExportFormat, cfg: &DhcpExport) -> String {
    let mut out = format!(
        "{c} Generated by `ovl export {name} --snippet`: PXE boot and reservations for\n\
         {c} {net}/{len}, to merge into the configuration of the DHCP server of that subnet.\n",
        c = comment(format),
        name = format.name(),
        net = cfg.network(),
        len = cfg.prefix_len(),
    );
    if format != ExportFormat::IscDhcpd {
        out.push('\n');
    }
    out.push_str(&snippet_body(format, cfg));
    out
}

/// The comment marker of `format` (Kea's JSON parser takes `//` comments).
fn comment(format: ExportFormat) -> &'static str {
    match format {
        ExportFormat::Kea => "//",
        _ => "#",
    }
}

/// What a whole export of a site without a pool says, followed by the snippet.
fn without_pool(format: ExportFormat, cfg: &DhcpExport) -> String {
    let c = comment(format);
    let mut out = format!(
        "{c} Generated by `ovl export {name}`. [serve.dhcp] range is not set in ovl.toml, so\n\
         {c} ovl knows no address pool, and a whole configuration would give no address to\n\
         {c} devices without a fixed ip. Below are only the PXE part and the reservations for\n\
         {c} {net}/{len} (as with --snippet): merge them into the configuration of the DHCP\n\
         {c} server that hands out that subnet's addresses, or set range (and netmask, router,\n\
         {c} dns) to get a whole configuration.\n",
        name = format.name(),
        net = cfg.network(),
        len = cfg.prefix_len(),
    );
    if format == ExportFormat::Dnsmasq {
        out.push_str(
            "# Beside a DHCP server that is not dnsmasq, `ovl serve --dhcp proxy` answers the\n\
             # PXE clients instead.\n\n",
        );
    }
    out.push_str(&snippet_body(format, cfg));
    out
}

/// The snippet of `format` without its heading comment.
fn snippet_body(format: ExportFormat, cfg: &DhcpExport) -> String {
    match format {
        ExportFormat::Dnsmasq => {
            let mut out = dnsmasq_pxe(cfg);
            out.push_str(&dnsmasq_hosts(cfg));
            out
        }
        ExportFormat::IscDhcpd => isc_snippet(cfg),
        ExportFormat::Kea => kea_snippet(cfg),
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

/// dnsmasq: tags `ovl-ipxe` (user class or option 175), `ovl-pxe` (vendor class
/// `PXEClient`) and `ovl-arch-N` (option 93) select the `dhcp-boot` line; PXE clients
/// without option 93 get the architecture-0 file through `tag:!ovl-arch-N`. Plain clients get
/// no boot file.
pub fn dnsmasq(cfg: &DhcpExport) -> String {
    let Some((start, end)) = cfg.range else {
        return without_pool(ExportFormat::Dnsmasq, cfg);
    };
    let mut out = String::from("# Generated by `ovl export dnsmasq`.\n");
    let _ = writeln!(
        out,
        "dhcp-range={start},{end},{},{}",
        cfg.netmask, cfg.lease_time
    );
    if let Some(router) = cfg.router {
        let _ = writeln!(out, "dhcp-option=option:router,{router}");
    }
    if !cfg.dns.is_empty() {
        let _ = writeln!(out, "dhcp-option=option:dns-server,{}", join(&cfg.dns, ","));
    }
    out.push('\n');
    out.push_str(&dnsmasq_pxe(cfg));
    out.push_str(&dnsmasq_hosts(cfg));
    out
}

/// dnsmasq's PXE lines: iPXE to the script URL, PXE firmware to its architecture's file.
fn dnsmasq_pxe(cfg: &DhcpExport) -> String {
    let server = cfg.server_ip;
    let mut out =
        String::from("# iPXE itself: user class \"iPXE\" or its encapsulated options (175).\n");
    out.push_str("dhcp-userclass=set:ovl-ipxe,iPXE\ndhcp-match=set:ovl-ipxe,175\n");
    let _ = writeln!(
        out,
        "dhcp-boot=tag:ovl-ipxe,{},,{server}",
        cfg.ipxe_script_url
    );
    out.push_str(
        "\n# Firmware PXE clients (option 60 PXEClient): the iPXE binary for their\n\
         # architecture (option 93); no option 93 counts as BIOS (0).\n",
    );
    out.push_str("dhcp-vendorclass=set:ovl-pxe,PXEClient\n");
    for (arch, file) in &cfg.boot_files {
        let _ = writeln!(
            out,
            "dhcp-match=set:ovl-arch-{arch},option:client-arch,{arch}"
        );
        let _ = writeln!(
            out,
            "dhcp-boot=tag:ovl-pxe,tag:!ovl-ipxe,tag:ovl-arch-{arch},{file},,{server}"
        );
    }
    if let Some(file) = cfg.boot_files.get(&0) {
        let others: String = cfg
            .boot_files
            .keys()
            .map(|arch| format!("tag:!ovl-arch-{arch},"))
            .collect();
        let _ = writeln!(
            out,
            "dhcp-boot=tag:ovl-pxe,tag:!ovl-ipxe,{others}{file},,{server}"
        );
    }
    out
}

/// dnsmasq's reservations: `dhcp-host=MAC[,IP],NAME`.
fn dnsmasq_hosts(cfg: &DhcpExport) -> String {
    let mut out = String::new();
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
    let Some((start, end)) = cfg.range else {
        return without_pool(ExportFormat::IscDhcpd, cfg);
    };
    let mut out = String::from("# Generated by `ovl export isc-dhcpd`.\n");
    let _ = writeln!(out, "default-lease-time {};", cfg.lease_time);
    let _ = writeln!(out, "max-lease-time {};", cfg.lease_time);
    out.push_str("authoritative;\nallow booting;\nallow bootp;\n\n");
    out.push_str("option space ipxe;\n");
    out.push_str("option ipxe-encap-opts code 175 = encapsulate ipxe;\n\n");
    let _ = writeln!(out, "subnet {} netmask {} {{", cfg.network(), cfg.netmask);
    let _ = writeln!(out, "  range {start} {end};");
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
    out.push_str(&isc_pxe(cfg, "exists ipxe-encap-opts or ", "  "));
    out.push_str("}\n");
    out.push_str(&isc_hosts(cfg));
    out
}

/// ISC dhcpd's PXE conditionals, indented by `indent`; `ipxe_test` is ORed before the user
/// class check. Option 93 is dhcpd's built-in `pxe-system-type`.
fn isc_pxe(cfg: &DhcpExport, ipxe_test: &str, indent: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{indent}if {ipxe_test}(exists user-class and option user-class = \"iPXE\") {{"
    );
    let _ = writeln!(out, "{indent}  next-server {};", cfg.server_ip);
    let _ = writeln!(out, "{indent}  filename {};", quoted(&cfg.ipxe_script_url));
    let _ = writeln!(
        out,
        "{indent}}} elsif substring(option vendor-class-identifier, 0, 9) = \"PXEClient\" {{"
    );
    let _ = writeln!(out, "{indent}  next-server {};", cfg.server_ip);
    let mut first = true;
    for (arch, file) in &cfg.boot_files {
        let [hi, lo] = arch.to_be_bytes();
        let keyword = if first { "if" } else { "} elsif" };
        first = false;
        let test = if *arch == 0 {
            format!("not exists pxe-system-type or option pxe-system-type = {hi:02x}:{lo:02x}")
        } else {
            format!("option pxe-system-type = {hi:02x}:{lo:02x}")
        };
        let _ = writeln!(out, "{indent}  {keyword} {test} {{");
        let _ = writeln!(out, "{indent}    filename {};", quoted(file));
    }
    if !first {
        let _ = writeln!(out, "{indent}  }}");
    }
    let _ = writeln!(out, "{indent}}}");
    out
}

/// ISC dhcpd's `host` reservations.
fn isc_hosts(cfg: &DhcpExport) -> String {
    let mut out = String::new();
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

/// The ISC dhcpd snippet: the PXE conditionals at the top level (inside the subnet's
/// declaration when that sets a `filename` or `next-server` of its own) and the hosts.
fn isc_snippet(cfg: &DhcpExport) -> String {
    let mut out = String::from(
        "# At the top level of dhcpd.conf, or inside the subnet declaration when that sets a\n\
         # filename or next-server of its own (the innermost scope wins).\n",
    );
    out.push_str(&isc_pxe(cfg, "", ""));
    out.push_str(&isc_hosts(cfg));
    out
}

/// Kea's client classes: iPXE first, then each architecture of PXE clients, mutually
/// exclusive.
fn kea_classes(cfg: &DhcpExport) -> Vec<Value> {
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
    classes
}

/// Kea's reservations (`hw-address`, `hostname`, and `ip-address` for a fixed address).
fn kea_reservations(cfg: &DhcpExport) -> Vec<Value> {
    cfg.hosts
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
        .collect()
}

/// Kea DHCPv4: the client classes and, in the subnet, the pool and the reservations.
pub fn kea(cfg: &DhcpExport) -> String {
    let Some(doc) = kea_document(cfg, true) else {
        return without_pool(ExportFormat::Kea, cfg);
    };
    let mut text = serde_json::to_string_pretty(&doc).unwrap_or_default();
    text.push('\n');
    text
}

/// The whole Kea DHCPv4 document of [`kea`] (`None` without a pool); `pxe: false` leaves
/// out the client classes and `next-server` (the Kea HA pair of the scale-out set-up, where
/// the `ovl serve --dhcp proxy` nodes give the PXE answers).
pub(crate) fn kea_document(cfg: &DhcpExport, pxe: bool) -> Option<Value> {
    let (start, end) = cfg.range?;
    let mut options = Vec::new();
    if let Some(router) = cfg.router {
        options.push(json!({"name": "routers", "data": router.to_string()}));
    }
    if !cfg.dns.is_empty() {
        options.push(json!({"name": "domain-name-servers", "data": join(&cfg.dns, ", ")}));
    }
    let mut doc = json!({
        "Dhcp4": {
            "interfaces-config": {"interfaces": ["*"]},
            "lease-database": {"type": "memfile", "lfc-interval": 3600},
            "authoritative": true,
            "valid-lifetime": cfg.lease_time,
            "subnet4": [{
                "id": 1,
                "subnet": format!("{}/{}", cfg.network(), cfg.prefix_len()),
                "pools": [{"pool": format!("{start} - {end}")}],
                "option-data": options,
                "reservations": kea_reservations(cfg),
            }],
        }
    });
    if pxe && let Some(dhcp4) = doc.get_mut("Dhcp4").and_then(Value::as_object_mut) {
        dhcp4.insert("next-server".into(), json!(cfg.server_ip.to_string()));
        dhcp4.insert("client-classes".into(), Value::Array(kea_classes(cfg)));
    }
    Some(doc)
}

/// The Kea snippet: a JSON object whose `client-classes` go into `Dhcp4` and whose
/// `reservations` go into the subnet's `subnet4` entry.
fn kea_snippet(cfg: &DhcpExport) -> String {
    let doc = json!({
        "client-classes": kea_classes(cfg),
        "reservations": kea_reservations(cfg),
    });
    let mut text = String::from(
        "// \"client-classes\" go into \"Dhcp4\", \"reservations\" into the subnet's \"subnet4\" entry.\n",
    );
    text.push_str(&serde_json::to_string_pretty(&doc).unwrap_or_default());
    text.push('\n');
    text
}

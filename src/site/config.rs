//! `ovl.toml`: the site's settings, one struct per section (`[alpine]`, `[boot]`, `[build]`,
//! `[serve]`, `[serve.dhcp]`), every key optional with a sensible default, checked once when
//! the site is opened (SPEC §2).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;

use serde::{Deserialize, Deserializer};

use crate::error::{Error, Result};
use crate::site::layout::{CONFIGS_DIR, DEFAULT_SSH_KEY, PRIVATE_TOP};

/// `ovl.toml`: every key optional with a sensible default.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SiteConfig {
    /// `[alpine]`: release, kernel flavor, mirror.
    pub alpine: AlpineConfig,
    /// `[boot]`: what the boot script passes to the kernel.
    pub boot: BootConfig,
    /// `[build]`: archive settings.
    pub build: BuildConfig,
    /// `[serve]`: the embedded servers.
    pub serve: ServeConfig,
}

/// `[alpine]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlpineConfig {
    /// Release used in repository URLs, e.g. `v3.20`.
    pub version: String,
    /// Kernel flavor: `lts`, `virt`, … → `vmlinuz-FLAVOR`, `initramfs-FLAVOR`, `modloop-FLAVOR`.
    pub flavor: String,
    /// Package mirror base URL.
    pub mirror: String,
}

impl Default for AlpineConfig {
    fn default() -> Self {
        AlpineConfig {
            version: "v3.20".into(),
            flavor: "lts".into(),
            mirror: "http://dl-cdn.alpinelinux.org/alpine".into(),
        }
    }
}

/// `[boot]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BootConfig {
    /// Address (or host name) devices use to reach HTTP/TFTP; default: the serve address.
    pub server: Option<String>,
    /// Kernel modules loaded by the initramfs (`modules=`).
    pub modules: Vec<String>,
    /// Site file passed as `ssh_key=` when it exists in the site.
    pub ssh_key: Option<String>,
    /// NFS export of this site (`host:/path`): enables the lbu round trip (SPEC §5).
    pub nfs: Option<String>,
    /// Extra kernel arguments for every device.
    pub kernel_args: Vec<String>,
    /// `alpine_repo=` value; default `MIRROR/VERSION/main`.
    pub alpine_repo: Option<String>,
}

impl Default for BootConfig {
    fn default() -> Self {
        BootConfig {
            server: None,
            modules: ["loop", "squashfs", "sd-mod", "usb-storage"]
                .map(String::from)
                .to_vec(),
            ssh_key: Some(DEFAULT_SSH_KEY.into()),
            nfs: None,
            kernel_args: Vec::new(),
            alpine_repo: None,
        }
    }
}

/// `[build]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BuildConfig {
    /// gzip level 1..9 of the archives.
    pub compression: u32,
    /// Entry mtime (seconds since the epoch) when `SOURCE_DATE_EPOCH` is not set.
    pub mtime: u64,
}

/// The fixed entry time used when neither `SOURCE_DATE_EPOCH` nor `[build] mtime` is set:
/// 2000-01-01T00:00:00Z.
pub(crate) const DEFAULT_MTIME: u64 = 946_684_800;

impl Default for BuildConfig {
    fn default() -> Self {
        BuildConfig {
            compression: 6,
            mtime: DEFAULT_MTIME,
        }
    }
}

/// DHCP server mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DhcpMode {
    /// No DHCP server.
    #[default]
    Off,
    /// PXE proxyDHCP beside the site's own DHCP server.
    Proxy,
    /// Full DHCP server with an address pool.
    Full,
}

/// Who may download `configs/MAC.tar.gz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ConfigsAccess {
    /// Anyone (the seed's behaviour).
    #[default]
    Any,
    /// Only the address leased to, or neighbouring as, that MAC.
    Owner,
}

/// `[serve]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    /// Network interface for DHCP (and the server address when `boot.server` is unset).
    pub interface: Option<String>,
    /// HTTP listen address, or `"off"`.
    pub http: String,
    /// TFTP listen address, or `"off"`.
    pub tftp: String,
    /// DHCP: `"off"`, `"proxy"`, `"full"`, or a `[serve.dhcp]` table (mode + pool).
    #[serde(deserialize_with = "dhcp_setting")]
    pub dhcp: DhcpSettings,
    /// `any` or `owner`.
    pub configs_access: ConfigsAccess,
    /// Profile whose archive blank (unknown) devices get; unset: a real 404.
    pub default_profile: Option<String>,
    /// More site files served over HTTP and TFTP, besides the boot scripts, archives and
    /// boot files: `"extra.iso"` is one file, `"alpine/"` (a trailing `/`) a whole folder.
    pub public: Vec<String>,
    /// HTTP connections open at once (see `serve::http`).
    pub max_connections: u32,
    /// Seconds an HTTP client has to send a request's headers.
    pub header_timeout: u32,
    /// Seconds without a byte moving, while a request is answered, before the HTTP
    /// connection is closed.
    pub idle_timeout: u32,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            interface: None,
            http: "0.0.0.0:80".into(),
            tftp: "0.0.0.0:69".into(),
            dhcp: DhcpSettings::default(),
            configs_access: ConfigsAccess::Any,
            default_profile: None,
            public: Vec::new(),
            max_connections: 1024,
            header_timeout: 10,
            idle_timeout: 30,
        }
    }
}

/// `[serve.dhcp]` as written in `ovl.toml`: the DHCP mode and, for `full`, the address pool
/// (the server's own engine configuration, `serve::dhcp::DhcpConfig`, is made from it).
#[derive(Debug, Clone, Default)]
pub struct DhcpSettings {
    /// `off`, `proxy` or `full` (in table form the default is `full`).
    pub mode: DhcpMode,
    /// First and last address of the pool.
    pub range: Option<[Ipv4Addr; 2]>,
    /// Subnet mask of the pool.
    pub netmask: Option<Ipv4Addr>,
    /// Default gateway (option 3).
    pub router: Option<Ipv4Addr>,
    /// DNS servers (option 6).
    pub dns: Vec<Ipv4Addr>,
    /// Lease time in seconds.
    pub lease_time: Option<u32>,
    /// Boot file by client architecture (option 93), e.g. `{ "0" = "undionly.kpxe", "7" = "ipxe.efi" }`.
    pub boot_files: BTreeMap<String, String>,
    /// Pools of other subnets (VLANs) whose requests arrive through a DHCP relay (giaddr).
    pub relays: Vec<RelayPool>,
    /// The script URL iPXE is sent to (default `HTTP_BASE/boot.ipxe`), e.g.
    /// `tftp://192.168.0.2/boot.ipxe` where iPXE should fetch the static script over TFTP.
    pub script_url: Option<String>,
}

/// `[[serve.dhcp.relay]]`: a pool for a subnet reached through a DHCP relay; requests whose
/// relay address (giaddr) lies in it get an address from it, answered through the relay.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayPool {
    /// First and last address of the pool.
    pub range: [Ipv4Addr; 2],
    /// Subnet mask.
    pub netmask: Ipv4Addr,
    /// Default gateway (option 3); usually the relay's address.
    pub router: Option<Ipv4Addr>,
    /// DNS servers (option 6).
    #[serde(default)]
    pub dns: Vec<Ipv4Addr>,
    /// Lease time in seconds (default: the main pool's).
    pub lease_time: Option<u32>,
}

fn dhcp_setting<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<DhcpSettings, D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = DhcpSettings;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("\"off\", \"proxy\", \"full\" or a [serve.dhcp] table")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<DhcpSettings, E> {
            let mode = match v {
                "off" => DhcpMode::Off,
                "proxy" => DhcpMode::Proxy,
                "full" => DhcpMode::Full,
                other => {
                    return Err(E::custom(format!(
                        "unknown DHCP mode `{other}`: expected off, proxy or full"
                    )));
                }
            };
            Ok(DhcpSettings {
                mode,
                ..Default::default()
            })
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            map: A,
        ) -> std::result::Result<DhcpSettings, A::Error> {
            /// The table form; a missing `mode` means `full`.
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Table {
                mode: Option<DhcpMode>,
                range: Option<[Ipv4Addr; 2]>,
                netmask: Option<Ipv4Addr>,
                router: Option<Ipv4Addr>,
                #[serde(default)]
                dns: Vec<Ipv4Addr>,
                lease_time: Option<u32>,
                #[serde(default)]
                boot_files: BTreeMap<String, String>,
                #[serde(default)]
                relay: Vec<RelayPool>,
                script_url: Option<String>,
            }
            let t = Table::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
            Ok(DhcpSettings {
                mode: t.mode.unwrap_or(DhcpMode::Full),
                range: t.range,
                netmask: t.netmask,
                router: t.router,
                dns: t.dns,
                lease_time: t.lease_time,
                boot_files: t.boot_files,
                relays: t.relay,
                script_url: t.script_url,
            })
        }
    }
    d.deserialize_any(V)
}

impl SiteConfig {
    /// Check what serde cannot: value ranges and formats. `path` is the file read.
    pub(crate) fn validate(&self, path: &Path) -> Result<()> {
        let c = self;
        if !(1..=9).contains(&c.build.compression) {
            return Err(Error::at_path(
                path,
                format!(
                    "[build] compression = {}: expected 1 to 9",
                    c.build.compression
                ),
            ));
        }
        if c.alpine.flavor.is_empty() || c.alpine.flavor.contains(['/', ' ']) {
            return Err(Error::at_path(
                path,
                format!(
                    "[alpine] flavor = {:?}: expected a kernel flavor such as lts or virt",
                    c.alpine.flavor
                ),
            ));
        }
        for (what, v) in [("http", &c.serve.http), ("tftp", &c.serve.tftp)] {
            if v != "off" && v.parse::<SocketAddr>().is_err() {
                return Err(Error::at_path(
                    path,
                    format!(
                        "[serve] {what} = {v:?}: expected \"off\" or an address such as 0.0.0.0:80"
                    ),
                ));
            }
        }
        if let Some(url) = &c.serve.dhcp.script_url
            && (!url.contains("://") || url.chars().any(char::is_whitespace))
        {
            return Err(Error::at_path(
                path,
                format!(
                    "[serve.dhcp] script_url = {url:?}: expected a URL such as \
                     http://192.168.0.2/boot.ipxe or tftp://192.168.0.2/boot.ipxe"
                ),
            ));
        }
        for (key, v) in [
            ("max_connections", c.serve.max_connections),
            ("header_timeout", c.serve.header_timeout),
            ("idle_timeout", c.serve.idle_timeout),
        ] {
            if v == 0 {
                return Err(Error::at_path(
                    path,
                    format!("[serve] {key} = 0: expected a positive number"),
                ));
            }
        }
        for entry in &c.serve.public {
            check_public(entry)
                .map_err(|why| Error::at_path(path, format!("[serve] public: {entry:?} {why}")))?;
        }
        if let Some(nfs) = &c.boot.nfs
            && !nfs.contains(":/")
        {
            return Err(Error::at_path(
                path,
                format!("[boot] nfs = {nfs:?}: expected HOST:/EXPORT, e.g. 192.168.0.2:/srv/pxe"),
            ));
        }
        Ok(())
    }
}

/// Why a `[serve] public` entry cannot be served, if it cannot.
fn check_public(entry: &str) -> std::result::Result<(), String> {
    if entry.starts_with('/') || entry.contains(['\\', '\0']) {
        return Err("must be a site-relative path such as \"extra.iso\" or \"alpine/\"".into());
    }
    let components: Vec<&str> = entry.split('/').filter(|c| !c.is_empty()).collect();
    let Some(first) = components.first() else {
        return Err("is empty".into());
    };
    if components
        .iter()
        .any(|c| *c == "." || *c == ".." || c.starts_with('.'))
    {
        return Err("must not hold `.`, `..` or hidden names".into());
    }
    if *first == CONFIGS_DIR {
        return Err("names configs/, whose archives are public by their MAC names only".into());
    }
    if PRIVATE_TOP.iter().any(|p| p.eq_ignore_ascii_case(first)) {
        return Err(format!(
            "names {first}, which is private (settings, inventory, profiles, overlays and \
             captures are never served)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dhcp_string_and_table() {
        let c: SiteConfig = toml::from_str("[serve]\ndhcp = \"proxy\"\n").unwrap();
        assert_eq!(c.serve.dhcp.mode, DhcpMode::Proxy);
        let c: SiteConfig = toml::from_str(
            "[serve.dhcp]\nrange = [\"10.0.0.3\", \"10.0.0.9\"]\nnetmask = \"255.255.255.0\"\n",
        )
        .unwrap();
        assert_eq!(c.serve.dhcp.mode, DhcpMode::Full);
        let c: SiteConfig = toml::from_str("[serve.dhcp]\nmode = \"proxy\"\n").unwrap();
        assert_eq!(c.serve.dhcp.mode, DhcpMode::Proxy);
        let c: SiteConfig = toml::from_str(
            "[serve.dhcp]\nrange = [\"10.0.0.3\", \"10.0.0.9\"]\n[[serve.dhcp.relay]]\nrange = [\"10.0.2.3\", \"10.0.2.9\"]\nnetmask = \"255.255.255.0\"\nrouter = \"10.0.2.1\"\n",
        )
        .unwrap();
        assert_eq!(c.serve.dhcp.relays.len(), 1);
        assert!(toml::from_str::<SiteConfig>("[serve]\ndhcp = \"maybe\"\n").is_err());
        assert!(toml::from_str::<SiteConfig>("[serve.dhcp]\nrnage = []\n").is_err());
    }

    #[test]
    fn public_entries_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ovl.toml");
        let check = |list: &str| {
            let c: SiteConfig = toml::from_str(&format!("[serve]\npublic = {list}\n")).unwrap();
            c.validate(&path)
        };
        assert!(check("[\"ipxe/\", \"alpine/\", \"extra.iso\", \"data/x.bin\"]").is_ok());
        for bad in [
            "[\"overlays/\"]",
            "[\"Devices.toml\"]",
            "[\"captures/x/\"]",
            "[\"configs/\"]",
            "[\"/etc/\"]",
            "[\"../x\"]",
            "[\".git/\"]",
            "[\"\"]",
        ] {
            let e = check(bad).unwrap_err();
            assert_eq!(e.exit_code(), 1, "{bad}");
            assert!(e.to_string().contains("[serve] public"), "{e}");
        }
    }
}

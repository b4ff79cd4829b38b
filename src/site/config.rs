//! `ovl.toml`: the site's settings, one struct per section (`[alpine]`, `[boot]`, `[build]`,
//! `[capture]`, `[serve]`, `[serve.dhcp]`), every key optional with a sensible default, checked once when
//! the site is opened (SPEC §2).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;

use serde::{Deserialize, Deserializer};

use crate::error::{Error, Result};
use crate::site::layout::DEFAULT_SSH_KEY;

use crate::site::capture_config::MAX_HISTORY;
pub use crate::site::capture_config::{CaptureConfig, ConflictPolicy};

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
    /// `[fetch]`: where `ovl fetch` finds the iPXE binaries.
    pub fetch: FetchConfig,
    /// `[capture]`: how devices' lbu captures are merged with the fleet.
    pub capture: CaptureConfig,
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
    /// CPU architecture of the devices (`x86_64`, `aarch64`, …): the mirror's
    /// `releases/ARCH/` folder `ovl fetch` takes the boot files from.
    pub arch: String,
}

impl Default for AlpineConfig {
    fn default() -> Self {
        AlpineConfig {
            version: "v3.20".into(),
            flavor: "lts".into(),
            mirror: "http://dl-cdn.alpinelinux.org/alpine".into(),
            arch: "x86_64".into(),
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
    /// NFS export of the site's `captures/` folder (`host:/path`): enables the lbu round
    /// trip (SPEC §5); devices mount only their own `PATH/MAC`.
    pub nfs: Option<String>,
    /// The uid every device's NFS writes are squashed to (default: `captures/`'s owner).
    pub nfs_anonuid: Option<u32>,
    /// The gid every device's NFS writes are squashed to (default: `captures/`'s group).
    pub nfs_anongid: Option<u32>,
    /// Extra kernel arguments for every device.
    pub kernel_args: Vec<String>,
    /// `alpine_repo=` value; default `MIRROR/VERSION/main`.
    pub alpine_repo: Option<String>,
    /// How many times the boot script tries each step (kernel, initramfs, boot) before
    /// giving up.
    pub tries: u32,
    /// Seconds the boot script waits after the first failed try; the wait doubles after every
    /// further one, up to [`MAX_RETRY_WAIT`].
    pub retry_delay: u32,
    /// What the boot script does once a step has failed `tries` times.
    pub on_failure: OnFailure,
}

/// The longest wait between two tries of a boot step, in seconds.
pub const MAX_RETRY_WAIT: u32 = 300;

/// `[boot] on_failure`: what a device does when the boot script gives up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// Reboot the device (iPXE `reboot`): it starts over from its firmware.
    #[default]
    Reboot,
    /// Leave iPXE (`exit`): the firmware goes on with its next boot device.
    Exit,
    /// Open the iPXE shell on the console; leaving it starts the script over.
    Shell,
}

impl OnFailure {
    /// The value's spelling in `ovl.toml`.
    pub fn name(self) -> &'static str {
        match self {
            OnFailure::Reboot => "reboot",
            OnFailure::Exit => "exit",
            OnFailure::Shell => "shell",
        }
    }
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
            nfs_anonuid: None,
            nfs_anongid: None,
            kernel_args: Vec::new(),
            alpine_repo: None,
            tries: 5,
            retry_delay: 2,
            on_failure: OnFailure::Reboot,
        }
    }
}

/// `[fetch]`: the iPXE binaries `ovl fetch` puts in the site beside Alpine's boot files.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FetchConfig {
    /// The iPXE binaries to put in the site.
    pub ipxe_files: Vec<String>,
    /// The folder of the system's iPXE package (Debian's `ipxe`), copied from when it holds
    /// the file and the architecture is x86.
    pub ipxe_dir: String,
    /// Base URL the iPXE binaries are downloaded from (`URL/NAME`) otherwise.
    pub ipxe_url: String,
    /// Seconds without a byte received (or to get a response) before a download attempt is
    /// given up and retried from where it stopped.
    pub timeout: u64,
}

impl Default for FetchConfig {
    fn default() -> Self {
        FetchConfig {
            ipxe_files: ["undionly.kpxe", "ipxe.efi", "snponly.efi"]
                .map(String::from)
                .to_vec(),
            ipxe_dir: "/usr/lib/ipxe".into(),
            ipxe_url: "https://boot.ipxe.org".into(),
            timeout: 30,
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
    /// Most bytes the files of one lbu archive layer (a capture or a profile's reference
    /// archive) may hold uncompressed; a member or a total over it is refused.
    pub max_capture_bytes: u64,
}

/// The default of `[build] max_capture_bytes`: 256 MiB.
pub(crate) const DEFAULT_MAX_CAPTURE_BYTES: u64 = 256 << 20;

/// The fixed entry time used when neither `SOURCE_DATE_EPOCH` nor `[build] mtime` is set:
/// 2000-01-01T00:00:00Z.
pub(crate) const DEFAULT_MTIME: u64 = 946_684_800;

impl Default for BuildConfig {
    fn default() -> Self {
        BuildConfig {
            compression: 6,
            mtime: DEFAULT_MTIME,
            max_capture_bytes: DEFAULT_MAX_CAPTURE_BYTES,
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
    /// TFTP transfers running at once (8 at most per client address); beyond, a request
    /// gets ERROR 0 "server busy", on which PXE firmware gives up.
    pub tftp_max_transfers: u32,
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
            tftp_max_transfers: 2048,
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
        self.validate_build_and_boot(path)?;
        self.validate_alpine_and_fetch(path)?;
        self.validate_serve(path)
    }

    /// `[build]`, `[boot]` and `[capture]` values in their ranges; `[boot] nfs` of the form
    /// HOST:/PATH.
    fn validate_build_and_boot(&self, path: &Path) -> Result<()> {
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
        if !(1..=20).contains(&c.boot.tries) {
            return Err(Error::at_path(
                path,
                format!("[boot] tries = {}: expected 1 to 20", c.boot.tries),
            ));
        }
        if !(1..=MAX_RETRY_WAIT).contains(&c.boot.retry_delay) {
            return Err(Error::at_path(
                path,
                format!(
                    "[boot] retry_delay = {}: expected 1 to {MAX_RETRY_WAIT} seconds",
                    c.boot.retry_delay
                ),
            ));
        }
        if c.build.max_capture_bytes == 0 {
            return Err(Error::at_path(
                path,
                "[build] max_capture_bytes = 0: expected a number of bytes, e.g. 268435456 (256 MiB)",
            ));
        }
        if !(1..=MAX_HISTORY).contains(&c.capture.history) {
            return Err(Error::at_path(
                path,
                format!(
                    "[capture] history = {}: expected 1 to {MAX_HISTORY} manifests per device",
                    c.capture.history
                ),
            ));
        }
        if let Some(nfs) = &c.boot.nfs
            && crate::build::nfs::NfsExport::parse(nfs).is_none()
        {
            return Err(Error::at_path(
                path,
                format!(
                    "[boot] nfs = {nfs:?}: expected HOST:/PATH, the export of the site's \
                     captures/ folder, e.g. 192.168.0.2:/srv/pxe/captures"
                ),
            ));
        }
        Ok(())
    }

    /// `[alpine]` names and `[fetch]` values.
    fn validate_alpine_and_fetch(&self, path: &Path) -> Result<()> {
        let c = self;
        if c.alpine.flavor.is_empty() || c.alpine.flavor.contains(['/', ' ']) {
            return Err(Error::at_path(
                path,
                format!(
                    "[alpine] flavor = {:?}: expected a kernel flavor such as lts or virt",
                    c.alpine.flavor
                ),
            ));
        }
        if c.alpine.arch.is_empty() || !c.alpine.arch.chars().all(is_name_char) {
            return Err(Error::at_path(
                path,
                format!(
                    "[alpine] arch = {:?}: expected an architecture such as x86_64 or aarch64",
                    c.alpine.arch
                ),
            ));
        }
        if let Some(bad) = c
            .fetch
            .ipxe_files
            .iter()
            .find(|f| f.is_empty() || f.starts_with('.') || !f.chars().all(is_name_char))
        {
            return Err(Error::at_path(
                path,
                format!("[fetch] ipxe_files: {bad:?} is not a file name such as ipxe.efi"),
            ));
        }
        if !is_http_url(&c.fetch.ipxe_url) {
            return Err(Error::at_path(
                path,
                format!(
                    "[fetch] ipxe_url = {:?}: expected an http:// or https:// URL",
                    c.fetch.ipxe_url
                ),
            ));
        }
        if !(1..=3600).contains(&c.fetch.timeout) {
            return Err(Error::at_path(
                path,
                format!(
                    "[fetch] timeout = {}: expected 1 to 3600 seconds",
                    c.fetch.timeout
                ),
            ));
        }
        Ok(())
    }

    /// `[serve]` listen addresses and the DHCP script URL.
    fn validate_serve(&self, path: &Path) -> Result<()> {
        let c = self;
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
        crate::site::serve_config::validate(&c.serve, path)?;
        Ok(())
    }
}

/// Letters, digits, `.`, `_`, `-`: what file names and architecture names are made of.
fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// `http://HOST…` or `https://HOST…` without whitespace.
pub(crate) fn is_http_url(url: &str) -> bool {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/'))
        && !url.chars().any(|c| c.is_whitespace() || c.is_control())
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
    fn fetch_settings_are_checked() {
        let p = Path::new("ovl.toml");
        let ok: SiteConfig = toml::from_str("[alpine]\narch = \"aarch64\"\n").unwrap();
        assert!(ok.validate(p).is_ok());
        assert_eq!(SiteConfig::default().fetch.ipxe_files.len(), 3);
        for bad in [
            "[alpine]\narch = \"x86/64\"\n",
            "[alpine]\narch = \"\"\n",
            "[fetch]\nipxe_files = [\"../x.efi\"]\n",
            "[fetch]\nipxe_url = \"ftp://x\"\n",
            "[fetch]\ntimeout = 0\n",
        ] {
            let c: SiteConfig = toml::from_str(bad).unwrap();
            assert!(c.validate(p).is_err(), "{bad}");
        }
        for bad in ["[capture]\nhistory = 0\n", "[capture]\nhistory = 1001\n"] {
            let c: SiteConfig = toml::from_str(bad).unwrap();
            assert!(c.validate(p).is_err(), "{bad}");
        }
        let c: SiteConfig = toml::from_str("[capture]\nconflicts = \"fleet\"\n").unwrap();
        assert_eq!(c.capture.conflicts, ConflictPolicy::Fleet);
        assert!(toml::from_str::<SiteConfig>("[capture]\nconflicts = \"both\"\n").is_err());
        assert!(is_http_url("http://127.0.0.1:8080/alpine"));
        assert!(!is_http_url("http:///x"));
        assert!(!is_http_url("https://a b"));
    }
}

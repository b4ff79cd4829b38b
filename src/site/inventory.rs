//! The inventory (`devices.toml`): which device is which — MAC, profile, hostname, fixed IP,
//! extra layers, variables and the paths whose capture the fleet overrides (`discard`) — with
//! MACs normalised and duplicates refused (SPEC §3).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::error::{Error, LineIndex, Location, Result};
use crate::mac::Mac;
use crate::site::profile::Profiles;
use crate::site::toml_file;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DevicesFile {
    #[serde(default)]
    device: Vec<DeviceEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceEntry {
    mac: Spanned<String>,
    profile: Spanned<String>,
    hostname: Option<Spanned<String>>,
    ip: Option<Spanned<String>>,
    #[serde(default)]
    overlays: Vec<String>,
    #[serde(default)]
    vars: toml::Table,
    #[serde(default)]
    discard: Vec<Spanned<String>>,
}

/// One device of the inventory.
#[derive(Debug, Clone, PartialEq)]
pub struct Device {
    /// Its MAC.
    pub mac: Mac,
    /// Its profile's name.
    pub profile: String,
    /// Its own hostname (wins over the profile's template).
    pub hostname: Option<String>,
    /// Fixed DHCP address.
    pub ip: Option<Ipv4Addr>,
    /// Extra layers for this device only.
    pub overlays: Vec<String>,
    /// Its own template values (win over the profile's).
    pub vars: toml::Table,
    /// Paths (files or folders, relative to `/`) where the fleet's version wins over the
    /// device's capture (`ovl discard`).
    pub discard: Vec<String>,
    /// Where in `devices.toml` it is declared.
    pub location: Location,
}

/// All devices, keyed by MAC.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    /// The file it was read from.
    pub file: PathBuf,
    /// Devices by MAC, in MAC order.
    pub devices: BTreeMap<Mac, Device>,
}

/// A path on the device as written in `discard` or on the command line (`etc/motd`,
/// `/etc/motd`, `etc/kiosk/`), normalised to the manifest's form (`etc/motd`); `None` for the
/// root, empty components, `.` or `..`.
pub(crate) fn device_path(p: &str) -> Option<String> {
    let p = p.trim().trim_start_matches('/').trim_end_matches('/');
    let ok = !p.is_empty()
        && p.split('/')
            .all(|c| !c.is_empty() && c != "." && c != ".." && !c.contains('\\'));
    ok.then(|| p.to_string())
}

/// Is `h` a valid host name (RFC 1123 labels)?
pub(crate) fn valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

impl Inventory {
    /// Read `path` (a missing file is an empty inventory) and check it against `profiles`.
    pub(crate) fn load(path: &Path, profiles: &Profiles) -> Result<Inventory> {
        let Some(text) = toml_file::read_text_if_exists(path)? else {
            return Ok(Inventory {
                file: path.to_path_buf(),
                devices: BTreeMap::new(),
            });
        };
        Inventory::parse(path, &text, profiles)
    }

    /// Check `text`, the contents (or the edited contents) of `path`, against `profiles`:
    /// bad MACs, duplicate MACs, hostnames and addresses, unknown profiles are errors located
    /// in `text`.
    pub(crate) fn parse(path: &Path, text: &str, profiles: &Profiles) -> Result<Inventory> {
        let file: DevicesFile = toml_file::parse(path, text)?;
        let mut seen = Seen {
            path,
            lines: LineIndex::new(text),
            devices: BTreeMap::new(),
            hostnames: BTreeMap::new(),
            ips: BTreeMap::new(),
        };
        for d in file.device {
            let device = seen.check(d, profiles)?;
            seen.devices.insert(device.mac, device);
        }
        Ok(Inventory {
            file: path.to_path_buf(),
            devices: seen.devices,
        })
    }
}

/// The devices read so far, and where each hostname and address was first declared.
struct Seen<'a> {
    path: &'a Path,
    lines: LineIndex<'a>,
    devices: BTreeMap<Mac, Device>,
    hostnames: BTreeMap<String, Location>,
    ips: BTreeMap<Ipv4Addr, Location>,
}

impl Seen<'_> {
    /// The location of a byte offset of the file.
    fn at(&self, offset: usize) -> Location {
        self.lines.locate(self.path, offset)
    }

    /// Check one entry against the profiles and the entries before it.
    fn check(&mut self, d: DeviceEntry, profiles: &Profiles) -> Result<Device> {
        let loc = self.at(d.mac.span().start);
        let mac: Mac = d
            .mac
            .get_ref()
            .parse()
            .map_err(|e: crate::mac::MacParseError| Error::input(loc.clone(), e))?;
        if let Some(problem) = mac.device_problem() {
            return Err(Error::input(loc, format!("MAC {mac} {problem}")));
        }
        if let Some(prev) = self.devices.get(&mac).map(|p| &p.location) {
            return Err(Error::input(
                loc,
                format!("duplicate MAC {mac} (first declared at {prev})"),
            ));
        }
        let profile = d.profile.get_ref().clone();
        profiles
            .get(&profile)
            .map_err(|e| Error::input(self.at(d.profile.span().start), e))?;
        let hostname = match &d.hostname {
            Some(h) => Some(self.hostname(h)?),
            None => None,
        };
        let ip = match &d.ip {
            Some(s) => Some(self.ip(s)?),
            None => None,
        };
        let mut discard = Vec::new();
        for p in &d.discard {
            let Some(path) = device_path(p.get_ref()) else {
                return Err(Error::input(
                    self.at(p.span().start),
                    format!(
                        "discard: {:?} is not a path on the device such as \"etc/motd\"",
                        p.get_ref()
                    ),
                ));
            };
            if !discard.contains(&path) {
                discard.push(path);
            }
        }
        Ok(Device {
            mac,
            profile,
            hostname,
            ip,
            overlays: d.overlays,
            vars: d.vars,
            discard,
            location: loc,
        })
    }

    /// A valid hostname no earlier device has (compared case-insensitively).
    fn hostname(&mut self, h: &Spanned<String>) -> Result<String> {
        let hl = self.at(h.span().start);
        let name = h.get_ref().trim().to_string();
        if !valid_hostname(&name) {
            return Err(Error::input(
                hl,
                format!(
                    "invalid hostname {name:?}: letters, digits and '-', labels of 1 to 63 characters"
                ),
            ));
        }
        if let Some(prev) = self.hostnames.get(&name.to_ascii_lowercase()) {
            return Err(Error::input(
                hl,
                format!("duplicate hostname {name} (first declared at {prev})"),
            ));
        }
        self.hostnames.insert(name.to_ascii_lowercase(), hl);
        Ok(name)
    }

    /// A valid IPv4 address no earlier device has.
    fn ip(&mut self, s: &Spanned<String>) -> Result<Ipv4Addr> {
        let il = self.at(s.span().start);
        let ip: Ipv4Addr = s.get_ref().trim().parse().map_err(|_| {
            Error::input(
                il.clone(),
                format!("invalid IPv4 address {:?}", s.get_ref()),
            )
        })?;
        if let Some(prev) = self.ips.get(&ip) {
            return Err(Error::input(
                il,
                format!("duplicate IP {ip} (first declared at {prev})"),
            ));
        }
        self.ips.insert(ip, il);
        Ok(ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames() {
        assert!(valid_hostname("kiosk-hall"));
        assert!(valid_hostname("xl-123456.example"));
        assert!(!valid_hostname("-bad"));
        assert!(!valid_hostname("bad_name"));
        assert!(!valid_hostname(""));
    }

    #[test]
    fn device_paths() {
        assert_eq!(device_path("/etc/motd").as_deref(), Some("etc/motd"));
        assert_eq!(device_path("etc/kiosk/").as_deref(), Some("etc/kiosk"));
        for bad in ["", "/", "etc/../x", "./etc", "etc//motd"] {
            assert_eq!(device_path(bad), None, "{bad}");
        }
    }
}

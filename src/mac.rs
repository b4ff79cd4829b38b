//! MAC addresses as the fleet writes them: any common spelling in, lowercase with colons out
//! (the form of iPXE's `${net0/mac}` and of Linux, hence of archive names).

use std::fmt;
use std::str::FromStr;

/// A 48-bit Ethernet MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// The last three octets as six hex digits (`52:54:00:12:34:56` → `123456`).
    pub fn suffix(&self) -> String {
        format!("{:02x}{:02x}{:02x}", self.0[3], self.0[4], self.0[5])
    }

    /// The archive file name, `52:54:00:12:34:56.tar.gz`.
    pub fn archive_name(&self) -> String {
        format!("{self}.tar.gz")
    }

    /// Why no device can have this MAC: the all-zero address, the broadcast address or
    /// another group (multicast) address; `None` for a unicast address.
    pub fn device_problem(&self) -> Option<&'static str> {
        if self.0 == [0; 6] {
            Some("is all zeros, which no network card has")
        } else if self.0 == [0xff; 6] {
            Some("is the broadcast address")
        } else if self.0[0] & 1 == 1 {
            Some("is a multicast address (the low bit of its first octet is set)")
        } else {
            None
        }
    }

    /// Can a device have this MAC (a unicast, non-zero address)?
    pub fn is_device(&self) -> bool {
        self.device_problem().is_none()
    }
}

/// Why a MAC failed to parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid MAC address {input:?}: expected six hex octets such as 52:54:00:12:34:56, 52-54-00-12-34-56 or 525400123456"
)]
pub struct MacParseError {
    /// What was given.
    pub input: String,
}

impl FromStr for Mac {
    type Err = MacParseError;

    /// Accepts `52:54:00:12:34:56`, `52-54-00-12-34-56`, `5254.0012.3456`, `525400123456`, any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || MacParseError {
            input: s.to_string(),
        };
        let t = s.trim();
        let groups: Vec<&str> = t.split([':', '-', '.']).collect();
        let hex: String = match groups.len() {
            1 if t.len() == 12 => t.to_string(),
            3 if groups.iter().all(|g| g.len() == 4) && t.contains('.') => groups.concat(),
            6 if groups.iter().all(|g| g.len() == 2) => {
                // One separator kind only.
                let seps: std::collections::BTreeSet<char> =
                    t.chars().filter(|c| matches!(c, ':' | '-' | '.')).collect();
                if seps.len() != 1 || seps.contains(&'.') {
                    return Err(err());
                }
                groups.concat()
            }
            _ => return Err(err()),
        };
        if hex.len() != 12 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(err());
        }
        let mut out = [0u8; 6];
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| err())?;
        }
        Ok(Mac(out))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl serde::Serialize for Mac {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_normalise() {
        for s in [
            "52:54:00:12:34:56",
            "52-54-00-12-34-56",
            "525400123456",
            "52:54:00:12:34:56 ",
            "5254.0012.3456",
            "52:54:00:12:34:56".to_uppercase().as_str(),
        ] {
            assert_eq!(
                s.parse::<Mac>().unwrap().to_string(),
                "52:54:00:12:34:56",
                "{s}"
            );
        }
    }

    #[test]
    fn bad_spellings_fail() {
        for s in [
            "",
            "52:54:00:12:34",
            "52:54:00:12:34:5g",
            "52:54-00:12:34:56",
            "5254001234567",
            "52.54.00.12.34.56",
            "52::54:00:12:34:56",
        ] {
            assert!(s.parse::<Mac>().is_err(), "{s}");
        }
    }

    #[test]
    fn group_and_zero_addresses_are_no_device_s() {
        for (s, device) in [
            ("52:54:00:12:34:56", true),
            ("02:00:00:00:00:01", true),
            ("00:00:00:00:00:00", false),
            ("ff:ff:ff:ff:ff:ff", false),
            ("01:00:5e:00:00:01", false),
            ("33:33:00:00:00:01", false),
        ] {
            assert_eq!(s.parse::<Mac>().unwrap().is_device(), device, "{s}");
        }
    }

    #[test]
    fn suffix() {
        assert_eq!(
            "52:54:00:12:34:56".parse::<Mac>().unwrap().suffix(),
            "123456"
        );
    }
}

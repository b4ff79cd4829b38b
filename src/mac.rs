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

    /// `s` if it is spelled the canonical way (lowercase hex, colons: what `Display`
    /// writes, and what archive names use), else `None`. Cheaper than parsing any spelling
    /// and comparing with `to_string()`, which is what it answers.
    pub fn parse_canonical(s: &str) -> Option<Mac> {
        fn nibble(c: u8) -> Option<u8> {
            match c {
                b'0'..=b'9' => Some(c - b'0'),
                b'a'..=b'f' => Some(c - b'a' + 10),
                _ => None,
            }
        }
        let b: &[u8; 17] = s.as_bytes().try_into().ok()?;
        let mut out = [0u8; 6];
        for (i, o) in out.iter_mut().enumerate() {
            if i > 0 && b[3 * i - 1] != b':' {
                return None;
            }
            *o = (nibble(b[3 * i])? << 4) | nibble(b[3 * i + 1])?;
        }
        Some(Mac(out))
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
        // By hand: `{:02x}` six times goes through the formatter's padding code, and a MAC
        // is written for every request's log line.
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [b':'; 17];
        for (i, b) in self.0.iter().enumerate() {
            out[3 * i] = HEX[usize::from(b >> 4)];
            out[3 * i + 1] = HEX[usize::from(b & 0xf)];
        }
        // Only ASCII hex digits and colons were written.
        f.write_str(std::str::from_utf8(&out).map_err(|_| fmt::Error)?)
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

    proptest::proptest! {
        /// The canonical parse answers exactly "parses, and is written back the same".
        #[test]
        fn canonical_parse_is_parse_then_compare(
            s in "([0-9a-fA-F]{2}[:-]){5}[0-9a-fA-F]{2}|[0-9a-f:]{15,19}|.{0,20}",
            m in proptest::array::uniform6(proptest::num::u8::ANY),
        ) {
            let slow = s.parse::<Mac>().ok().filter(|m| m.to_string() == s);
            proptest::prop_assert_eq!(Mac::parse_canonical(&s), slow);
            let shown = Mac(m).to_string();
            proptest::prop_assert_eq!(shown.len(), 17);
            proptest::prop_assert_eq!(Mac::parse_canonical(&shown), Some(Mac(m)));
            proptest::prop_assert_eq!(shown.parse::<Mac>().ok(), Some(Mac(m)));
        }
    }

    #[test]
    fn display_is_lowercase_with_colons() {
        assert_eq!(
            Mac([0x52, 0x54, 0, 0xab, 0x0c, 0xff]).to_string(),
            "52:54:00:ab:0c:ff"
        );
        assert_eq!(format!("{}", Mac([0; 6])), "00:00:00:00:00:00");
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

//! Option negotiation: what a read request asks for and what the server grants.
//!
//! - [RFC 2347](https://www.rfc-editor.org/rfc/rfc2347): names compare case-insensitively;
//!   options the server does not know are ignored, never an error; the first occurrence of a
//!   repeated option wins; the OACK lists only the options granted, in lower case.
//! - [RFC 2348](https://www.rfc-editor.org/rfc/rfc2348) `blksize`: 8..=65464. A larger value
//!   is clamped to 65464 (the RFC lets the server answer with a smaller size); a smaller or
//!   unparsable one is ignored (512-byte blocks, no OACK entry).
//! - [RFC 2349](https://www.rfc-editor.org/rfc/rfc2349) `timeout` 1..=255 seconds, echoed
//!   as sent when valid and at most [`Caps::max_timeout`], otherwise ignored (the RFC lets
//!   the server only accept or omit it; a client cannot make the server hold a slot for
//!   minutes); `tsize` answered with the file's size.
//! - [RFC 7440](https://www.rfc-editor.org/rfc/rfc7440) `windowsize` 1..=65535; a value above
//!   [`Caps::max_windowsize`] is answered with that cap (the RFC lets the server answer with
//!   a smaller window), an invalid one is ignored.
//!
//! Numbers must be plain decimal digits.

use std::time::Duration;

/// The smallest block size RFC 2348 allows.
pub(super) const MIN_BLKSIZE: u16 = 8;
/// The largest block size RFC 2348 allows.
pub(super) const MAX_BLKSIZE: u16 = 65464;
/// The block size without negotiation (RFC 1350).
pub(super) const DEFAULT_BLKSIZE: u16 = 512;

/// The settings one transfer runs with, after negotiation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Negotiated {
    /// Bytes per DATA block.
    pub blksize: u16,
    /// Blocks sent before waiting for an ACK (1 is RFC 1350 lockstep).
    pub windowsize: u16,
    /// Time to wait for an ACK before retransmitting.
    pub timeout: Duration,
    /// The options to send back in an OACK; empty means no OACK (go straight to DATA 1).
    pub oack: Vec<(String, String)>,
}

/// What the server grants at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Caps {
    /// The retransmission timeout when the client names none (or one over the cap).
    pub default_timeout: Duration,
    /// The longest `timeout` granted.
    pub max_timeout: Duration,
    /// The largest `windowsize` granted.
    pub max_windowsize: u16,
}

/// Negotiates a read request's `options` for a file of `file_size` bytes within `caps`.
pub(super) fn negotiate(options: &[(String, String)], file_size: u64, caps: Caps) -> Negotiated {
    let mut n = Negotiated {
        blksize: DEFAULT_BLKSIZE,
        windowsize: 1,
        timeout: caps.default_timeout,
        oack: Vec::new(),
    };
    let max_timeout = caps.max_timeout.as_secs().min(255);
    let max_window = u64::from(caps.max_windowsize.max(1));
    let mut seen: Vec<String> = Vec::new();
    for (name, value) in options {
        let name = name.to_ascii_lowercase();
        if seen.contains(&name) {
            continue;
        }
        let granted = match name.as_str() {
            "blksize" => parse(value).and_then(|v| {
                if v < u64::from(MIN_BLKSIZE) {
                    None
                } else {
                    let v = v.min(u64::from(MAX_BLKSIZE)) as u16;
                    n.blksize = v;
                    Some(v.to_string())
                }
            }),
            "timeout" => parse(value)
                .filter(|v| (1..=max_timeout).contains(v))
                .map(|v| {
                    n.timeout = Duration::from_secs(v);
                    v.to_string()
                }),
            "tsize" => parse(value).map(|_| file_size.to_string()),
            "windowsize" => parse(value).filter(|v| (1..=65535).contains(v)).map(|v| {
                let v = v.min(max_window);
                n.windowsize = v as u16;
                v.to_string()
            }),
            _ => None,
        };
        if let Some(value) = granted {
            n.oack.push((name.clone(), value));
            seen.push(name);
        }
    }
    n
}

/// Parses plain decimal digits; anything else (sign, space, empty, overflow) is `None`.
fn parse(value: &str) -> Option<u64> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(3);
    /// The RFCs' full ranges, to test the codec's own bounds.
    const WIDE: Caps = Caps {
        default_timeout: T,
        max_timeout: Duration::from_secs(255),
        max_windowsize: 65535,
    };

    fn negotiate(options: &[(String, String)], size: u64, _t: Duration) -> Negotiated {
        super::negotiate(options, size, WIDE)
    }

    fn opts(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    fn oack(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        opts(pairs)
    }

    #[test]
    fn no_options_means_rfc1350_and_no_oack() {
        let n = negotiate(&[], 10, T);
        assert_eq!(
            n,
            Negotiated {
                blksize: 512,
                windowsize: 1,
                timeout: T,
                oack: vec![]
            }
        );
    }

    #[test]
    fn all_known_options_are_granted_in_order() {
        let n = negotiate(
            &opts(&[
                ("tsize", "0"),
                ("BlkSize", "1468"),
                ("windowsize", "8"),
                ("timeout", "2"),
            ]),
            123456,
            T,
        );
        assert_eq!(n.blksize, 1468);
        assert_eq!(n.windowsize, 8);
        assert_eq!(n.timeout, Duration::from_secs(2));
        assert_eq!(
            n.oack,
            oack(&[
                ("tsize", "123456"),
                ("blksize", "1468"),
                ("windowsize", "8"),
                ("timeout", "2")
            ])
        );
    }

    #[test]
    fn unknown_options_are_ignored() {
        let n = negotiate(&opts(&[("multicast", ""), ("rollover", "0")]), 1, T);
        assert!(n.oack.is_empty());
        let n = negotiate(&opts(&[("foo", "bar"), ("blksize", "1024")]), 1, T);
        assert_eq!(n.oack, oack(&[("blksize", "1024")]));
    }

    #[test]
    fn blksize_is_clamped_above_and_ignored_below() {
        assert_eq!(
            negotiate(&opts(&[("blksize", "65464")]), 1, T).blksize,
            65464
        );
        let n = negotiate(&opts(&[("blksize", "70000")]), 1, T);
        assert_eq!((n.blksize, n.oack), (65464, oack(&[("blksize", "65464")])));
        let n = negotiate(&opts(&[("blksize", "99999999999999999999999")]), 1, T);
        assert_eq!(n.blksize, 512);
        assert_eq!(negotiate(&opts(&[("blksize", "8")]), 1, T).blksize, 8);
        let n = negotiate(&opts(&[("blksize", "7")]), 1, T);
        assert_eq!((n.blksize, n.oack.len()), (512, 0));
        let n = negotiate(&opts(&[("blksize", "0")]), 1, T);
        assert_eq!((n.blksize, n.oack.len()), (512, 0));
    }

    #[test]
    fn invalid_numbers_are_ignored() {
        for v in ["", "-1", "+5", " 5", "5 ", "abc", "0x10"] {
            let n = negotiate(
                &opts(&[
                    ("blksize", v),
                    ("timeout", v),
                    ("windowsize", v),
                    ("tsize", v),
                ]),
                1,
                T,
            );
            assert!(n.oack.is_empty(), "{v:?}");
            assert_eq!((n.blksize, n.windowsize, n.timeout), (512, 1, T));
        }
    }

    #[test]
    fn timeout_and_windowsize_ranges() {
        assert!(negotiate(&opts(&[("timeout", "0")]), 1, T).oack.is_empty());
        assert!(
            negotiate(&opts(&[("timeout", "256")]), 1, T)
                .oack
                .is_empty()
        );
        assert_eq!(
            negotiate(&opts(&[("timeout", "255")]), 1, T).timeout,
            Duration::from_secs(255)
        );
        assert!(
            negotiate(&opts(&[("windowsize", "0")]), 1, T)
                .oack
                .is_empty()
        );
        assert!(
            negotiate(&opts(&[("windowsize", "65536")]), 1, T)
                .oack
                .is_empty()
        );
        assert_eq!(
            negotiate(&opts(&[("windowsize", "65535")]), 1, T).windowsize,
            65535
        );
    }

    #[test]
    fn first_occurrence_wins() {
        let n = negotiate(&opts(&[("blksize", "1024"), ("BLKSIZE", "2048")]), 1, T);
        assert_eq!((n.blksize, n.oack), (1024, oack(&[("blksize", "1024")])));
        // An invalid first occurrence does not hide a valid later one.
        let n = negotiate(&opts(&[("blksize", "1"), ("blksize", "2048")]), 1, T);
        assert_eq!(n.blksize, 2048);
    }

    #[test]
    fn caps_hold_timeout_and_windowsize_down() {
        let caps = Caps {
            default_timeout: Duration::from_secs(1),
            max_timeout: Duration::from_secs(10),
            max_windowsize: 64,
        };
        let n = super::negotiate(
            &opts(&[("timeout", "255"), ("windowsize", "65535")]),
            1,
            caps,
        );
        assert_eq!(
            n.timeout,
            Duration::from_secs(1),
            "over the cap: not granted"
        );
        assert_eq!(n.windowsize, 64);
        assert_eq!(n.oack, oack(&[("windowsize", "64")]));
        let n = super::negotiate(&opts(&[("timeout", "10"), ("windowsize", "8")]), 1, caps);
        assert_eq!((n.timeout, n.windowsize), (Duration::from_secs(10), 8));
        assert_eq!(n.oack, oack(&[("timeout", "10"), ("windowsize", "8")]));
    }

    #[test]
    fn tsize_reports_the_file_size() {
        let n = negotiate(&opts(&[("tsize", "0")]), 35_232_768, T);
        assert_eq!(n.oack, oack(&[("tsize", "35232768")]));
    }
}

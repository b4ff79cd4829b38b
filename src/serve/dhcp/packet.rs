//! Decoding and encoding of DHCP messages on top of `dhcproto`, with the checks that make
//! decoding safe on any input.
//!
//! `dhcproto` 0.15 does the option parsing, but a few of its decoders `debug_assert!` on
//! option lengths (options 80, 81, 94, 151–155) and `Message::chaddr` slices by `hlen`
//! unchecked; [`decode`] rejects such packets before handing them over, so that no input
//! can panic, in debug builds included.

use dhcproto::v4::{HType, Message, Opcode};
use dhcproto::{Decodable, Encodable};

/// The fixed BOOTP header (236 bytes) plus the magic cookie (RFC 2131 §3).
const HEADER_LEN: usize = 240;
/// The DHCP magic cookie (RFC 2131 §3).
const MAGIC: [u8; 4] = [99, 130, 83, 99];
/// BOOTP's minimum message size; replies are padded up to it (RFC 1542 §3.4 / PXE).
pub(super) const MIN_REPLY_LEN: usize = 300;

/// Why a datagram was not accepted as a DHCP request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(super) enum Malformed {
    /// Shorter than the BOOTP header and cookie.
    #[error("shorter than a BOOTP header")]
    Short,
    /// `op` is not BOOTREQUEST.
    #[error("not a BOOTREQUEST")]
    NotRequest,
    /// Not Ethernet with 6-byte addresses.
    #[error("not an Ethernet hardware address")]
    NotEthernet,
    /// The magic cookie is wrong.
    #[error("bad magic cookie")]
    BadCookie,
    /// An option's length is impossible for its type.
    #[error("option {0} has an invalid length")]
    BadOption(u8),
    /// `dhcproto` refused it.
    #[error("undecodable")]
    Undecodable,
    /// No DHCP message type (option 53): a plain BOOTP request.
    #[error("no DHCP message type")]
    NoMessageType,
}

/// Decodes a client request, refusing anything that is not an Ethernet DHCP request.
pub(super) fn decode(bytes: &[u8]) -> Result<Message, Malformed> {
    let header = bytes.get(..HEADER_LEN).ok_or(Malformed::Short)?;
    if header[0] != 1 {
        return Err(Malformed::NotRequest);
    }
    if header[1] != 1 || header[2] != 6 {
        return Err(Malformed::NotEthernet);
    }
    if header[236..240] != MAGIC {
        return Err(Malformed::BadCookie);
    }
    check_option_lengths(&bytes[HEADER_LEN..])?;
    let msg = Message::from_bytes(bytes).map_err(|_| Malformed::Undecodable)?;
    if msg.opcode() != Opcode::BootRequest || msg.htype() != HType::Eth || msg.hlen() != 6 {
        return Err(Malformed::NotEthernet);
    }
    if msg.opts().msg_type().is_none() {
        return Err(Malformed::NoMessageType);
    }
    Ok(msg)
}

/// Walks the option area (code, length, value) only to check the lengths of the options
/// whose `dhcproto` decoders assert on them; consecutive same-code options are summed as
/// RFC 3396 concatenation does.
fn check_option_lengths(mut opts: &[u8]) -> Result<(), Malformed> {
    let mut run: Option<(u8, usize)> = None;
    loop {
        let code = match opts.first() {
            None | Some(255) => break,
            Some(0) => {
                opts = &opts[1..];
                finish_run(run.take())?;
                continue;
            }
            Some(code) => *code,
        };
        // A truncated option ends the walk: dhcproto stops there too.
        let Some(&len) = opts.get(1) else { break };
        let len = usize::from(len);
        if opts.len() < 2 + len {
            break;
        }
        opts = &opts[2 + len..];
        run = match run {
            Some((c, total)) if c == code => Some((c, total + len)),
            other => {
                finish_run(other)?;
                Some((code, len))
            }
        };
    }
    finish_run(run)
}

fn finish_run(run: Option<(u8, usize)>) -> Result<(), Malformed> {
    let Some((code, len)) = run else {
        return Ok(());
    };
    let ok = match code {
        80 => len == 0,
        81 => len >= 3,
        94 => len == 3,
        151 => len >= 1,
        152..=155 => len == 4,
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(Malformed::BadOption(code))
    }
}

/// Encodes a reply and pads it with zeros (PAD options after END) to [`MIN_REPLY_LEN`].
pub(super) fn encode(msg: &Message) -> Option<Vec<u8>> {
    let mut bytes = msg.to_vec().ok()?;
    if bytes.len() < MIN_REPLY_LEN {
        bytes.resize(MIN_REPLY_LEN, 0);
    }
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Vec<u8> {
        let mut b = vec![0u8; HEADER_LEN];
        b[0] = 1;
        b[1] = 1;
        b[2] = 6;
        b[236..240].copy_from_slice(&MAGIC);
        b
    }

    #[test]
    fn rejects_what_would_make_dhcproto_panic() {
        for (code, len) in [(80u8, 1u8), (81, 2), (94, 2), (151, 0), (152, 3)] {
            let mut b = header();
            b.extend([53, 1, 1, code, len]);
            b.extend(std::iter::repeat_n(0xaa, len.into()));
            b.push(255);
            assert_eq!(decode(&b), Err(Malformed::BadOption(code)), "option {code}");
        }
        let mut b = header();
        b[2] = 17;
        b.extend([53, 1, 1, 255]);
        assert_eq!(decode(&b), Err(Malformed::NotEthernet));
    }

    #[test]
    fn accepts_a_minimal_discover() {
        let mut b = header();
        b.extend([53, 1, 1, 94, 3, 1, 2, 0, 255]);
        let msg = decode(&b).unwrap();
        assert_eq!(
            msg.opts().msg_type(),
            Some(dhcproto::v4::MessageType::Discover)
        );
        assert_eq!(decode(&b[..200]), Err(Malformed::Short));
        let mut bootp = header();
        bootp.push(255);
        assert_eq!(decode(&bootp), Err(Malformed::NoMessageType));
    }
}

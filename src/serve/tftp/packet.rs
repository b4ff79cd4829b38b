//! The TFTP wire format: a pure codec, no sockets, no files.
//!
//! Packets of [RFC 1350](https://www.rfc-editor.org/rfc/rfc1350) (RRQ, WRQ, DATA, ACK,
//! ERROR) and the OACK of [RFC 2347](https://www.rfc-editor.org/rfc/rfc2347). Decoding never
//! panics; it returns a [`DecodeError`] for anything malformed. What the decoder accepts:
//!
//! - RRQ/WRQ: `opcode filename\0 mode\0 (name\0 value\0)*`. Filename and mode must be
//!   NUL-terminated UTF-8. Options are read pair by pair until the packet ends; an empty
//!   option name (NUL padding some ROMs append) or a last pair cut short ends the list
//!   without error. Option names keep their case here; [`super::options`] compares them
//!   case-insensitively.
//! - DATA: a block number and 0..=[`MAX_DATA_LEN`] bytes.
//! - ACK: exactly 4 bytes.
//! - ERROR: a code and a message; a missing final NUL is tolerated, invalid UTF-8 is
//!   replaced.
//! - OACK: pairs as in a request; a pair cut short is an error.

use std::fmt;

/// The largest data payload any block size allows (RFC 2348: blksize ≤ 65464).
pub const MAX_DATA_LEN: usize = 65464;
/// Bytes before the payload in a DATA packet: opcode and block number.
pub const DATA_HEADER_LEN: usize = 4;

/// RRQ opcode.
pub const OP_RRQ: u16 = 1;
/// WRQ opcode.
pub const OP_WRQ: u16 = 2;
/// DATA opcode.
pub const OP_DATA: u16 = 3;
/// ACK opcode.
pub const OP_ACK: u16 = 4;
/// ERROR opcode.
pub const OP_ERROR: u16 = 5;
/// OACK opcode (RFC 2347).
pub const OP_OACK: u16 = 6;

/// The transfer mode named in a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// `netascii`: text with CR LF line ends.
    Netascii,
    /// `octet`: raw bytes.
    Octet,
    /// `mail`: obsolete, never served.
    Mail,
    /// Any other mode string, kept as sent.
    Other(String),
}

impl Mode {
    /// Parses a mode string, ignoring ASCII case.
    pub fn parse(s: &str) -> Mode {
        if s.eq_ignore_ascii_case("netascii") {
            Mode::Netascii
        } else if s.eq_ignore_ascii_case("octet") {
            Mode::Octet
        } else if s.eq_ignore_ascii_case("mail") {
            Mode::Mail
        } else {
            Mode::Other(s.to_owned())
        }
    }

    /// The mode string as it goes on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Mode::Netascii => "netascii",
            Mode::Octet => "octet",
            Mode::Mail => "mail",
            Mode::Other(s) => s,
        }
    }
}

/// A read or write request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The file name as the client sent it.
    pub filename: String,
    /// The transfer mode.
    pub mode: Mode,
    /// Option name/value pairs in the order sent (RFC 2347).
    pub options: Vec<(String, String)>,
}

/// TFTP error codes (RFC 1350 §5, RFC 2347 for 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// 0: not defined, see the message.
    NotDefined,
    /// 1: file not found.
    FileNotFound,
    /// 2: access violation.
    AccessViolation,
    /// 3: disk full or allocation exceeded.
    DiskFull,
    /// 4: illegal TFTP operation.
    IllegalOperation,
    /// 5: unknown transfer ID.
    UnknownTid,
    /// 6: file already exists.
    FileExists,
    /// 7: no such user.
    NoSuchUser,
    /// 8: option negotiation refused (RFC 2347).
    OptionRefused,
    /// Any other code.
    Other(u16),
}

impl ErrorCode {
    /// The code number on the wire.
    pub fn to_u16(self) -> u16 {
        match self {
            ErrorCode::NotDefined => 0,
            ErrorCode::FileNotFound => 1,
            ErrorCode::AccessViolation => 2,
            ErrorCode::DiskFull => 3,
            ErrorCode::IllegalOperation => 4,
            ErrorCode::UnknownTid => 5,
            ErrorCode::FileExists => 6,
            ErrorCode::NoSuchUser => 7,
            ErrorCode::OptionRefused => 8,
            ErrorCode::Other(n) => n,
        }
    }

    /// The code for a number on the wire.
    pub fn from_u16(n: u16) -> ErrorCode {
        match n {
            0 => ErrorCode::NotDefined,
            1 => ErrorCode::FileNotFound,
            2 => ErrorCode::AccessViolation,
            3 => ErrorCode::DiskFull,
            4 => ErrorCode::IllegalOperation,
            5 => ErrorCode::UnknownTid,
            6 => ErrorCode::FileExists,
            7 => ErrorCode::NoSuchUser,
            8 => ErrorCode::OptionRefused,
            n => ErrorCode::Other(n),
        }
    }
}

/// One TFTP packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// Read request.
    Rrq(Request),
    /// Write request.
    Wrq(Request),
    /// A block of file data.
    Data {
        /// Block number (wraps past 65535 to 0).
        block: u16,
        /// Payload, at most [`MAX_DATA_LEN`] bytes.
        data: Vec<u8>,
    },
    /// Acknowledgement of a block (0 acknowledges an OACK).
    Ack(u16),
    /// An error; ends the transfer.
    Error {
        /// The error code.
        code: ErrorCode,
        /// A human-readable message.
        message: String,
    },
    /// Option acknowledgement (RFC 2347).
    Oack(Vec<(String, String)>),
}

/// Why bytes are not a TFTP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes than the packet type needs.
    #[error("truncated packet")]
    Truncated,
    /// An opcode outside 1..=6.
    #[error("unknown opcode {0}")]
    UnknownOpcode(u16),
    /// A string field without its terminating NUL.
    #[error("unterminated string")]
    Unterminated,
    /// A string field that is not UTF-8.
    #[error("string is not UTF-8")]
    NotUtf8,
    /// More bytes than the packet type allows.
    #[error("packet too long")]
    TooLong,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Packet {
    /// Decodes one datagram.
    pub fn decode(bytes: &[u8]) -> Result<Packet, DecodeError> {
        let (op, body) = split_u16(bytes)?;
        match op {
            OP_RRQ => decode_request(body).map(Packet::Rrq),
            OP_WRQ => decode_request(body).map(Packet::Wrq),
            OP_DATA => {
                let (block, data) = split_u16(body)?;
                if data.len() > MAX_DATA_LEN {
                    return Err(DecodeError::TooLong);
                }
                Ok(Packet::Data {
                    block,
                    data: data.to_vec(),
                })
            }
            OP_ACK => decode_ack(bytes).map(Packet::Ack),
            OP_ERROR => {
                let (code, rest) = split_u16(body)?;
                let text = match rest.iter().position(|&b| b == 0) {
                    Some(end) => &rest[..end],
                    None => rest,
                };
                Ok(Packet::Error {
                    code: ErrorCode::from_u16(code),
                    message: String::from_utf8_lossy(text).into_owned(),
                })
            }
            OP_OACK => {
                let mut rest = body;
                let mut options = Vec::new();
                while !rest.is_empty() {
                    let (name, r) = take_str(rest)?;
                    let (value, r) = take_str(r)?;
                    options.push((name.to_owned(), value.to_owned()));
                    rest = r;
                }
                Ok(Packet::Oack(options))
            }
            other => Err(DecodeError::UnknownOpcode(other)),
        }
    }

    /// Appends the encoding of this packet to `out`.
    ///
    /// Strings are written as given; a caller that puts a NUL inside one gets a packet that
    /// decodes differently.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Packet::Rrq(r) => encode_request(OP_RRQ, r, out),
            Packet::Wrq(r) => encode_request(OP_WRQ, r, out),
            Packet::Data { block, data } => {
                write_data_header(out, *block);
                out.extend_from_slice(data);
            }
            Packet::Ack(block) => {
                out.extend_from_slice(&OP_ACK.to_be_bytes());
                out.extend_from_slice(&block.to_be_bytes());
            }
            Packet::Error { code, message } => {
                out.extend_from_slice(&OP_ERROR.to_be_bytes());
                out.extend_from_slice(&code.to_u16().to_be_bytes());
                push_str(out, message);
            }
            Packet::Oack(options) => {
                out.extend_from_slice(&OP_OACK.to_be_bytes());
                for (name, value) in options {
                    push_str(out, name);
                    push_str(out, value);
                }
            }
        }
    }

    /// The encoding of this packet in a new buffer.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }
}

/// Appends a DATA header (opcode 3 and `block`) to `out`; the payload follows.
pub fn write_data_header(out: &mut Vec<u8>, block: u16) {
    out.extend_from_slice(&OP_DATA.to_be_bytes());
    out.extend_from_slice(&block.to_be_bytes());
}

/// Decodes an ACK without allocating: the block number if `bytes` is exactly an ACK.
pub fn decode_ack(bytes: &[u8]) -> Result<u16, DecodeError> {
    match bytes {
        [0, 4, hi, lo] => Ok(u16::from_be_bytes([*hi, *lo])),
        [0, 4, ..] if bytes.len() > 4 => Err(DecodeError::TooLong),
        [0, 4, ..] => Err(DecodeError::Truncated),
        _ => {
            let (op, _) = split_u16(bytes)?;
            Err(DecodeError::UnknownOpcode(op))
        }
    }
}

fn split_u16(bytes: &[u8]) -> Result<(u16, &[u8]), DecodeError> {
    match bytes {
        [hi, lo, rest @ ..] => Ok((u16::from_be_bytes([*hi, *lo]), rest)),
        _ => Err(DecodeError::Truncated),
    }
}

/// Splits a NUL-terminated UTF-8 string off the front of `bytes`.
fn take_str(bytes: &[u8]) -> Result<(&str, &[u8]), DecodeError> {
    let end = bytes
        .iter()
        .position(|&b| b == 0)
        .ok_or(DecodeError::Unterminated)?;
    let s = std::str::from_utf8(&bytes[..end]).map_err(|_| DecodeError::NotUtf8)?;
    Ok((s, &bytes[end + 1..]))
}

fn decode_request(body: &[u8]) -> Result<Request, DecodeError> {
    let (filename, rest) = take_str(body)?;
    let (mode, mut rest) = take_str(rest)?;
    let mut options = Vec::new();
    while !rest.is_empty() {
        let Ok((name, r)) = take_str(rest) else { break };
        if name.is_empty() {
            break;
        }
        let Ok((value, r)) = take_str(r) else { break };
        options.push((name.to_owned(), value.to_owned()));
        rest = r;
    }
    Ok(Request {
        filename: filename.to_owned(),
        mode: Mode::parse(mode),
        options,
    })
}

fn encode_request(op: u16, r: &Request, out: &mut Vec<u8>) {
    out.extend_from_slice(&op.to_be_bytes());
    push_str(out, &r.filename);
    push_str(out, r.mode.as_str());
    for (name, value) in &r.options {
        push_str(out, name);
        push_str(out, value);
    }
}

fn push_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
    out.push(0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn decodes_a_plain_rrq() {
        let p = Packet::decode(b"\x00\x01pxelinux.0\x00octet\x00").unwrap();
        assert_eq!(
            p,
            Packet::Rrq(Request {
                filename: "pxelinux.0".into(),
                mode: Mode::Octet,
                options: vec![],
            })
        );
    }

    #[test]
    fn decodes_rrq_options_and_mode_case() {
        let p = Packet::decode(b"\x00\x01f\x00OcTeT\x00BLKSIZE\x001468\x00tsize\x000\x00").unwrap();
        let Packet::Rrq(r) = p else {
            panic!("not an RRQ")
        };
        assert_eq!(r.mode, Mode::Octet);
        assert_eq!(
            r.options,
            vec![
                ("BLKSIZE".to_owned(), "1468".to_owned()),
                ("tsize".to_owned(), "0".to_owned())
            ]
        );
    }

    #[test]
    fn request_padding_and_cut_options_end_the_list() {
        let Packet::Rrq(r) = Packet::decode(b"\x00\x01f\x00octet\x00\x00\x00\x00").unwrap() else {
            panic!()
        };
        assert!(r.options.is_empty());
        let Packet::Rrq(r) = Packet::decode(b"\x00\x01f\x00octet\x00a\x001\x00blksize").unwrap()
        else {
            panic!()
        };
        assert_eq!(r.options, vec![("a".to_owned(), "1".to_owned())]);
    }

    #[test]
    fn malformed_requests_are_errors() {
        assert_eq!(Packet::decode(b""), Err(DecodeError::Truncated));
        assert_eq!(Packet::decode(b"\x00"), Err(DecodeError::Truncated));
        assert_eq!(
            Packet::decode(b"\x00\x01file"),
            Err(DecodeError::Unterminated)
        );
        assert_eq!(
            Packet::decode(b"\x00\x01file\x00octet"),
            Err(DecodeError::Unterminated)
        );
        assert_eq!(
            Packet::decode(b"\x00\x01\xff\x00octet\x00"),
            Err(DecodeError::NotUtf8)
        );
        assert_eq!(
            Packet::decode(b"\x00\x09x"),
            Err(DecodeError::UnknownOpcode(9))
        );
    }

    #[test]
    fn acks_are_exactly_four_bytes() {
        assert_eq!(Packet::decode(b"\x00\x04\x01\x02"), Ok(Packet::Ack(258)));
        assert_eq!(decode_ack(b"\x00\x04\xff\xff"), Ok(65535));
        assert_eq!(decode_ack(b"\x00\x04\x01"), Err(DecodeError::Truncated));
        assert_eq!(
            decode_ack(b"\x00\x04\x01\x02\x03"),
            Err(DecodeError::TooLong)
        );
        assert_eq!(
            decode_ack(b"\x00\x03\x01\x02"),
            Err(DecodeError::UnknownOpcode(3))
        );
        assert_eq!(decode_ack(b""), Err(DecodeError::Truncated));
    }

    #[test]
    fn error_message_without_nul_is_tolerated() {
        assert_eq!(
            Packet::decode(b"\x00\x05\x00\x08refused"),
            Ok(Packet::Error {
                code: ErrorCode::OptionRefused,
                message: "refused".into()
            })
        );
    }

    #[test]
    fn oversized_data_is_refused() {
        let mut p = vec![0, 3, 0, 1];
        p.resize(4 + MAX_DATA_LEN + 1, 7);
        assert_eq!(Packet::decode(&p), Err(DecodeError::TooLong));
    }

    #[test]
    fn data_header_layout() {
        let mut out = Vec::new();
        write_data_header(&mut out, 0x1234);
        assert_eq!(out, [0, 3, 0x12, 0x34]);
    }

    fn text() -> impl Strategy<Value = String> {
        "[^\u{0}]{0,24}"
    }

    fn name() -> impl Strategy<Value = String> {
        "[^\u{0}]{1,12}"
    }

    fn mode() -> impl Strategy<Value = Mode> {
        prop_oneof![
            Just(Mode::Netascii),
            Just(Mode::Octet),
            Just(Mode::Mail),
            "x[a-z]{0,8}".prop_map(Mode::Other),
        ]
    }

    fn request() -> impl Strategy<Value = Request> {
        (
            text(),
            mode(),
            prop::collection::vec((name(), text()), 0..6),
        )
            .prop_map(|(filename, mode, options)| Request {
                filename,
                mode,
                options,
            })
    }

    fn packet() -> impl Strategy<Value = Packet> {
        prop_oneof![
            request().prop_map(Packet::Rrq),
            request().prop_map(Packet::Wrq),
            (any::<u16>(), prop::collection::vec(any::<u8>(), 0..2048))
                .prop_map(|(block, data)| Packet::Data { block, data }),
            any::<u16>().prop_map(Packet::Ack),
            (any::<u16>(), text()).prop_map(|(c, message)| Packet::Error {
                code: ErrorCode::from_u16(c),
                message
            }),
            prop::collection::vec((name(), text()), 0..6).prop_map(Packet::Oack),
        ]
    }

    proptest! {
        #[test]
        fn encode_then_decode_round_trips(p in packet()) {
            prop_assert_eq!(Packet::decode(&p.to_bytes()), Ok(p));
        }

        #[test]
        fn decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..1024)) {
            let _ = Packet::decode(&bytes);
            let _ = decode_ack(&bytes);
        }

        #[test]
        fn decode_never_panics_on_near_valid_requests(
            op in 0u16..8,
            tail in prop::collection::vec(prop_oneof![Just(0u8), any::<u8>()], 0..64),
        ) {
            let mut bytes = op.to_be_bytes().to_vec();
            bytes.extend(tail);
            if let Ok(p) = Packet::decode(&bytes) {
                // Whatever decodes, re-encodes into something that decodes the same.
                prop_assert_eq!(Packet::decode(&p.to_bytes()), Ok(p));
            }
        }

        #[test]
        fn error_codes_round_trip(n in any::<u16>()) {
            prop_assert_eq!(ErrorCode::from_u16(n).to_u16(), n);
        }
    }
}

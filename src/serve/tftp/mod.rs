//! The read-only TFTP server of the boot chain (SPEC §6): it hands `undionly.kpxe`,
//! `ipxe.efi` and any other public file of the site to PXE ROMs and firmware.
//!
//! Implemented:
//! - [RFC 1350](https://www.rfc-editor.org/rfc/rfc1350) — TFTP revision 2: read requests
//!   in `octet` and `netascii` mode. `netascii` files are sent as stored, byte for byte (the
//!   site holds boot binaries; a text file is sent with its own line ends). `mail` and other
//!   modes get ERROR 4. Write requests get ERROR 2 (access violation).
//! - [RFC 2347](https://www.rfc-editor.org/rfc/rfc2347) — option extension (OACK); unknown
//!   options are ignored. Requests longer than 512 bytes are dropped.
//! - [RFC 2348](https://www.rfc-editor.org/rfc/rfc2348) — `blksize` 8..=65464 (larger values
//!   are clamped to 65464, smaller ones ignored).
//! - [RFC 2349](https://www.rfc-editor.org/rfc/rfc2349) — `tsize`, and `timeout` up to
//!   [`TftpConfig::max_timeout`] (10 s; a longer ask is not granted).
//! - [RFC 7440](https://www.rfc-editor.org/rfc/rfc7440) — `windowsize`, granted up to
//!   [`TftpConfig::max_windowsize`] (64).
//!
//! Block numbers roll over past 65535 to 0. Each transfer runs on its own UDP port, bound to
//! the listening socket's IP (see below for `0.0.0.0`). When no ACK comes within the
//! timeout, blocks are resent from the first unacknowledged one with the window halved (whole
//! again after the next ACK), at most [`TftpConfig::retries`] times in a row, then the
//! transfer is dropped; so a client that never acknowledges gets under two windows in all.
//! Every transfer ends by [`TftpConfig::transfer_deadline`]. Packets from a wrong TID get
//! ERROR 5 and do not disturb the transfer. Duplicate ACKs never trigger a resend in
//! lockstep (no sorcerer's apprentice). Requests go through the one access rule
//! (`crate::serve::access::check`): anything not public or missing gets ERROR 1, the owner
//! rule and unreadable files ERROR 2. Over [`TftpConfig::max_per_client`] transfers of one
//! client address, or [`TftpConfig::max_transfers`] in all, requests get ERROR 0.
//! Malformed, truncated and oversized packets are dropped and counted in [`TftpStats`].
//!
//! One `info` event `tftp_transfer` is logged per completed transfer (file, client, bytes,
//! duration_ms, rate_kib_s, blksize, windowsize); refusals (`tftp_refused`) and failures
//! (`tftp_transfer_failed`) are `warn` events.
//!
//! When listening on the unspecified address (`0.0.0.0`, `::`), each request's destination
//! address is read from `IP_PKTINFO`/`IPV6_PKTINFO` (Linux) and the transfer socket is bound
//! to it, so replies come from the address the client talked to.
//!
//! The layout follows rs-tftpd: [`packet`] is the pure codec (fuzzed and property-tested),
//! `options` the negotiation, `window` the sender's bookkeeping, `transfer` one transfer on
//! its socket, `server` the listening loop, `pktinfo` the destination-address lookup.

pub mod packet;

mod options;
mod pktinfo;
mod server;
mod stats;
mod transfer;
mod window;

pub use server::{TftpConfig, TftpServer, TransferDone, TransferHook};
pub use stats::TftpStats;

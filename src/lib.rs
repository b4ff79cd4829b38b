//! `ovl` builds per-device Alpine Linux apkovl archives for diskless, PXE-booted fleets,
//! keeps them current while configurations change, and serves the boot chain
//! (DHCP → TFTP → HTTP).
//!
//! Data flows one way: site files → resolved device plan ([`manifest`]) → archive bytes
//! ([`archive`]) → atomic publish. The command line ([`cli`]) is a thin layer on top.

pub mod export;
pub mod serve;

//! `ovl` builds per-device Alpine Linux apkovl archives for diskless, PXE-booted fleets,
//! keeps them current while configurations change, and serves the boot chain
//! (DHCP → TFTP → HTTP).
//!
//! Data flows one way: site files ([`site`]) → a resolved device plan and manifest
//! ([`build`]) → archive bytes → atomic publish. [`watch`] and [`serve`] reuse that pipeline;
//! the command line ([`cli`]) is a thin layer.

pub mod build;
pub mod cli;
pub mod error;
pub mod fetch;
pub mod mac;
pub mod serve;
pub mod site;
pub mod watch;

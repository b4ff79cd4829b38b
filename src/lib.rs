//! `ovl` builds per-device Alpine Linux apkovl archives for diskless, PXE-booted fleets,
//! keeps them current while configurations change, and serves the boot chain
//! (DHCP → TFTP → HTTP).
//!
//! Data flows one way: site files ([`site`], [`profile`], [`inventory`], [`layer`]) → a
//! resolved device plan ([`device`], [`manifest`]) → archive bytes ([`archive`]) → atomic
//! publish, all driven by [`pipeline`]. The command line ([`cli`], [`app`]) is a thin layer.

pub mod app;
pub mod archive;
pub mod bootscript;
pub mod cli;
pub mod device;
pub mod error;
pub mod export;
pub mod ids;
pub mod init;
pub mod inventory;
pub mod layer;
pub mod mac;
pub mod manifest;
pub mod pipeline;
pub mod profile;
pub mod serve;
pub mod site;
pub mod template;
pub mod tomlfile;
pub mod watch;

#![warn(missing_docs)]
//! `ovl` builds per-device Alpine Linux apkovl archives for diskless, PXE-booted fleets,
//! keeps them current while configurations change, and serves the boot chain
//! (DHCP → TFTP → HTTP).
//!
//! # The pipeline
//!
//! Data flows one way; [`watch`] and [`serve`] drive the same pipeline, never their own:
//!
//! ```text
//!  site/ (input)           build/ (per device)                                   published
//!  ovl.toml ──────┐
//!  profiles/ ─────┼─▶ Project::select ─▶ DeviceSpec ─▶ settings::resolve ─▶ DeviceSettings
//!  devices.toml ──┘                                                              │
//!  overlays/, captures/ ─▶ layer: folders and lbu archives, read once ──────────┤
//!                                                                                ▼
//!                          plan::plan ─▶ Manifest ─▶ archive (tar+gzip) ─▶ publish ─▶ configs/MAC.tar.gz
//!                          bootscript ────────────────────────────────────▶ publish ─▶ boot.ipxe
//!
//!  watch/: stat snapshots → affected devices → the same Project build
//!  serve/: HTTP, TFTP, DHCP over the published files; settings-only reloads
//! ```
//!
//! # Modules
//!
//! | module | holds |
//! |---|---|
//! | [`site`] | the site folder: [`site::layout`] (every name, private paths), [`site::config`] (`ovl.toml`), [`site::profile`], [`site::inventory`], located TOML errors |
//! | [`build`] | [`build::project`] (selection, outcomes, dry runs), [`build::state`] (the one state vocabulary of reports), [`build::settings`] (hostname, vars, layers, kernel line), [`build::plan`] (the manifest, one step per declaration), [`build::layer`], [`build::manifest`], [`build::archive`], [`build::publish`], [`build::bootscript`], [`build::history`] (build identity, kept manifests), [`build::capture`] and [`build::merge`] (the three-way merge of lbu captures) |
//! | [`watch`] | change detection (stat snapshots, network-fs probe), affected sets, reports, the loop |
//! | [`serve`] | [`serve::http`] (with the status page and `/metrics`), [`serve::tftp`] and [`serve::dhcp`] (pure codecs apart from thin tokio layers), boot events, neighbours, counters, SIGHUP reload |
//! | [`cli`] | one module per command; flags parsed into plain data, then dispatched here |
//! | [`doc`] | [`doc::keys`] (every `ovl.toml` and profile key: the README tables and man pages), [`doc::man`] (ovl.toml(5), ovl-profile(5)) |
//! | [`error`] | [`error::Location`], typed [`error::Error`], exit codes |
//! | [`mac`] | the one [`mac::Mac`] type |

pub mod build;
pub mod cli;
pub mod doc;
pub mod error;
pub mod fetch;
pub mod mac;
pub mod serve;
pub mod site;
pub mod watch;

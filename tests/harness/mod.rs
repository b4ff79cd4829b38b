//! The one test harness, shared by every test binary (`tests/cli/`, `tests/serve/`,
//! `tests/boot_chain/`), each of which includes it with
//! `#[path = "../harness/mod.rs"] mod harness;`.
//!
//! - [`site`]: a temporary site per test, the built `ovl` binary run on it, the assertions on
//!   a run (exit code, stdout, stderr, JSON), lbu archives written by an independent writer.
//! - [`proc`]: bounded commands, required programs and root, child processes killed on drop,
//!   output lines on a channel, bounded waits, digests and test data.
//! - [`mirror`]: a local Alpine mirror (HTTP on 127.0.0.1 with `Range`, cut connections on
//!   demand, a request log) holding releases laid out as Alpine's, for `ovl fetch`.
//! - [`netns`]: network namespaces with veth pairs, bridges and tap ports, removed in `Drop`.
//! - [`qemu`]: VMs (SeaBIOS + iPXE, or OVMF) on a namespace's tap port.
//! - [`alpine`]: Alpine's own parts (checksums pinned) and Alpine devices in a chroot, with
//!   apkovls applied by Alpine's busybox `tar` and saved by the real `lbu commit`.
//! - [`tree`]: file trees as compared: `ovl show --json`, a folder on disk, a VM's record.
//! - [`web`]: headless Chromium and Prometheus' parser, for the status page and `/metrics`.

// Each binary uses a part of the harness.
#![allow(dead_code)]

pub mod alpine;
pub mod mirror;
pub mod netns;
pub mod proc;
pub mod qemu;
pub mod site;
pub mod tree;
pub mod web;

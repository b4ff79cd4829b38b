//! The servers: HTTP and TFTP in-process on 127.0.0.1 driven by real clients (curl, tftp-hpa,
//! atftp, busybox), DHCP in network namespaces (dhclient, busybox udhcpc, crafted packets,
//! perfdhcp, dnsmasq/ISC/Kea running the exported configurations, QEMU's iPXE and OVMF), and
//! the built `ovl serve` as users run it.
//!
//! Tests that need root (network namespaces) or QEMU are `#[ignore = "needs root: …"]`; run
//! them as root with `cargo test -- --include-ignored`.

#[path = "../harness/mod.rs"]
mod harness;

mod binary;
mod dhcp;
mod http;
mod leaks;
mod scaleout;
mod stalls;
mod tftp;
mod units;

//! The `ovl` binary driven without servers: `init`, `check`, `build`, `list`, `show`,
//! `diff`, `watch`, `export`, with busybox tar (what Alpine's initramfs uses) as the oracle
//! for archives and the DHCP servers' own checkers for exported configurations.
//!
//! Tests that need root (chown, dropping privileges, busybox restoring owners, FUSE mounts)
//! are `#[ignore = "needs root: …"]`; run them as root with `cargo test -- --include-ignored`.

#[path = "../harness/mod.rs"]
mod harness;

mod bad_input;
mod commands;
mod determinism;
mod export;
mod golden;
mod hostile;
mod modes;
mod oracle;
mod watch;

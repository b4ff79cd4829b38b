//! The `ovl` binary driven without servers: `init`, `check`, `build`, `list`, `show`,
//! `diff`, `drift`, `adopt`, `discard`, `watch`, `export`, `fetch`, with busybox tar (what Alpine's initramfs uses) as the
//! oracle for archives, the DHCP servers' own checkers for exported configurations, and a
//! local mirror laid out like Alpine's (GNU tar's netboot tarball) for `fetch`.
//!
//! Tests that need root (chown, dropping privileges, busybox restoring owners, FUSE mounts)
//! are `#[ignore = "needs root: …"]`; run them as root with `cargo test -- --include-ignored`.

#[path = "../harness/mod.rs"]
mod harness;

mod bad_input;
mod commands;
mod contract;
mod determinism;
mod export;
mod export_ha;
mod fetch;
mod fleet;
mod golden;
mod hostile;
mod inventory;
mod members;
mod modes;
mod nfs;
mod oracle;
mod rollout;
mod watch;

//! Integration tests of `ovl init/check/build/list/show/diff` against the built binary, with
//! busybox tar (what Alpine's initramfs uses) as the oracle for archives.

mod util;

mod bad_input;
mod commands;
mod determinism;
mod golden;
mod oracle;
mod watch;

//! The boot script's bounded retries in a real iPXE: SeaBIOS with Debian's e1000 option ROM
//! on QEMU's user-mode network, whose DHCP hands iPXE `http://10.0.2.2:PORT/boot.ipxe?mac=…`
//! and whose `10.0.2.2` is the host's loopback, where `ovl serve --http 127.0.0.1:0` runs (no
//! namespace, nothing leaves the machine). The site has no kernel: every fetch is a real 404.
//! The script must warn on the console for each failed try, wait, give up after `[boot]
//! tries`, and then do what `[boot] on_failure` says: `reboot` ends QEMU (`-no-reboot`),
//! `shell` opens the iPXE prompt, `exit` hands the machine back to the firmware.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::harness::proc::{KillOnDrop, Lines, require, require_file, wait_for_text};
use crate::harness::qemu::PXE_E1000_ROM;
use crate::harness::site::TestSite;

/// The address QEMU's user network gives the host.
const HOST: &str = "10.0.2.2";

/// A site without boot files whose script tries each step 3 times, 1 then 2 s apart, then
/// does `on_failure` (unset: the default, reboot); served by `ovl serve` on 127.0.0.1.
fn serve(on_failure: Option<&str>) -> (TestSite, Lines, u16) {
    let site = TestSite::new();
    let on_failure = on_failure
        .map(|f| format!("on_failure = \"{f}\"\n"))
        .unwrap_or_default();
    site.write(
        "ovl.toml",
        &format!("[boot]\nserver = \"{HOST}\"\ntries = 3\nretry_delay = 1\n{on_failure}"),
    );
    let mut cmd = site.command();
    cmd.args(["serve", "--http", "127.0.0.1:0", "--tftp", "off"]);
    let mut lines = Lines::spawn(&mut cmd, true);
    let l = lines.wait_line(&["listening", "service=\"http\""]);
    let port = l
        .split("addr=127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {l}"));
    (site, lines, port)
}

/// QEMU (BIOS, iPXE's e1000 ROM, user network) booting the script of the server on `port`,
/// serial console to `serial`, `-no-reboot` so that a reboot ends it.
fn vm(port: u16, serial: &Path) -> KillOnDrop {
    require("qemu-system-x86_64");
    require_file(PXE_E1000_ROM);
    // Started directly (no `timeout` in between), so that dropping it kills QEMU itself.
    let mut cmd = std::process::Command::new("qemu-system-x86_64");
    cmd.args(["-nographic", "-monitor", "none", "-m", "256", "-no-reboot"])
        .args(["-boot", "n", "-serial"])
        .arg(format!("file:{}", serial.display()))
        .arg("-netdev")
        .arg(format!(
            "user,id=n0,bootfile=http://{HOST}:{port}/boot.ipxe?mac=${{net0/mac}}"
        ))
        .arg("-device")
        .arg(format!(
            "e1000,netdev=n0,mac=52:54:00:12:34:56,romfile={PXE_E1000_ROM}"
        ));
    KillOnDrop::spawn(
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
}

/// The console warned about tries 1 and 2 with their back-off and gave up after the third,
/// saying `then`; the server saw exactly three kernel requests, each a 404 logged as a
/// warning. iPXE wraps console lines at 80 columns, so lines are compared joined.
fn assert_gave_up(serial: &str, srv: &Lines, port: u16, then: &str) {
    let serial = serial.replace(['\r', '\n'], "");
    let kernel = format!("http://{HOST}:{port}/vmlinuz-lts");
    for (n, wait) in [(1, 1), (2, 2)] {
        let warning =
            format!("ovl: warning: loading {kernel} failed (try {n} of 3), retrying in {wait} s");
        assert!(serial.contains(&warning), "{warning:?} in:\n{serial}");
    }
    let error = format!("ovl: error: loading {kernel} failed 3 times, {then}");
    assert!(serial.contains(&error), "{error:?} in:\n{serial}");
    assert!(!serial.contains("try 3 of 3"), "{serial}");
    let fetches: Vec<&String> = srv
        .seen
        .iter()
        .filter(|l| l.contains("event=\"http_request\"") && l.contains("/vmlinuz-lts"))
        .collect();
    assert_eq!(fetches.len(), 3, "{fetches:#?}");
    for l in fetches {
        assert!(l.contains("WARN") && l.contains("status=404"), "{l}");
    }
}

/// Reads the server's lines for a moment, so its log holds what was served so far.
fn drain(srv: &mut Lines) {
    let end = Instant::now() + Duration::from_millis(500);
    while srv.next_before(end).is_some() {}
}

/// The default `on_failure = "reboot"`: after three 404s the device reboots, which ends
/// QEMU run with `-no-reboot`, instead of looping forever.
#[test]
#[ignore = "needs QEMU: a VM booting iPXE under TCG"]
fn a_missing_kernel_ends_in_a_reboot_after_bounded_retries() {
    let _vm = crate::lock();
    let (site, mut srv, port) = serve(None);
    let serial = site.scratch("serial.log");
    let started = Instant::now();
    let mut qemu = vm(port, &serial);
    let status = qemu.wait_exit(Duration::from_secs(100));
    let text = std::fs::read_to_string(&serial)
        .unwrap_or_default()
        .replace('\r', "");
    assert!(
        status.is_some_and(|s| s.success()),
        "QEMU did not end by a reboot ({status:?}):\n{text}"
    );
    eprintln!(
        "TIMING: from power-on to the reboot: {:.1}s",
        started.elapsed().as_secs_f64()
    );
    drain(&mut srv);
    // The last characters before a reboot may never reach the serial file.
    assert_gave_up(&text, &srv, port, "rebooting");
}

/// `on_failure = "shell"`: the iPXE prompt on the console after the last try.
#[test]
#[ignore = "needs QEMU: a VM booting iPXE under TCG"]
fn on_failure_shell_opens_the_ipxe_prompt() {
    let _vm = crate::lock();
    let (site, mut srv, port) = serve(Some("shell"));
    let serial = site.scratch("serial.log");
    let mut qemu = vm(port, &serial);
    let text = wait_for_text(&serial, "iPXE>", Duration::from_secs(100), Some(&mut qemu));
    drain(&mut srv);
    assert_gave_up(
        &text,
        &srv,
        port,
        "opening the iPXE shell ([boot] on_failure)",
    );
}

/// `on_failure = "exit"`: iPXE gives the machine back to the firmware, which goes on with
/// its next boot device (SeaBIOS: the floppy, the CD, …).
#[test]
#[ignore = "needs QEMU: a VM booting iPXE under TCG"]
fn on_failure_exit_returns_to_the_firmware() {
    let _vm = crate::lock();
    let (site, mut srv, port) = serve(Some("exit"));
    let serial = site.scratch("serial.log");
    let mut qemu = vm(port, &serial);
    let text = wait_for_text(
        &serial,
        "Booting from Floppy",
        Duration::from_secs(100),
        Some(&mut qemu),
    );
    drain(&mut srv);
    assert_gave_up(&text, &srv, port, "leaving iPXE");
}

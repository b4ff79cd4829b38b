//! DHCP end to end, in network namespaces the tests create and remove themselves, by
//! concern: real clients ([`clients`]: ISC dhclient, busybox udhcpc), crafted packets
//! ([`crafted`]: proxy mode, relays, perfdhcp, garbage, bad configurations), firmware in
//! QEMU ([`firmware`]: iPXE and OVMF, full and proxy mode), the exported configurations run
//! by the real servers ([`exported`]: dnsmasq, ISC dhcpd, Kea) and the built `ovl serve`
//! ([`binary`]).
//!
//! Each test gets two namespaces named `ovlt-<pid>-<n>-s` (server) and `-c` (client),
//! joined by a veth pair created directly inside them, with addresses in 10.213.0.0/16 only
//! inside them (see [`lab::Lab`]). The server runs in-process on a thread inside the server
//! namespace. Every wait is bounded. Every test but one needs root: they are ignored unless
//! asked for (`cargo test -- --include-ignored` as root).

mod binary;
mod clients;
mod crafted;
mod exported;
mod firmware;
mod lab;
mod service;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use lab::{CLIENT_IF, Lab};

/// Parses the `key=value …` lines our client scripts write.
fn events(log: &Path) -> Vec<HashMap<String, String>> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .map(|line| {
            line.split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

/// Writes an executable shell script.
fn write_script(path: &Path, body: &str) {
    std::fs::write(path, format!("#!/bin/sh\n{body}")).expect("script");
    Command::new("chmod")
        .arg("755")
        .arg(path)
        .status()
        .expect("chmod");
}

/// Records udhcpc's events and configures the address it got (inside the namespace).
fn udhcpc_script(lab: &Lab, name: &str) -> (PathBuf, PathBuf) {
    let script = lab.path(&format!("{name}.sh"));
    let log = lab.path(&format!("{name}.log"));
    write_script(
        &script,
        &format!(
            r#"echo "event=$1 ip=$ip mask=$mask subnet=$subnet router=$router dns=$dns lease=$lease serverid=$serverid siaddr=$siaddr boot_file=$boot_file bootfile=$bootfile tftp=$tftp" >> {log}
case "$1" in bound|renew) ip addr replace "$ip/$mask" dev "$interface" ;; esac
exit 0
"#,
            log = log.display()
        ),
    );
    (script, log)
}

/// One busybox udhcpc run in the client namespace (5 tries, 1 s apart), `extra` options
/// added; it quits once bound.
fn udhcpc(lab: &Lab, script: &Path, extra: &[&str]) -> Output {
    let script = script.display().to_string();
    let mut args = vec![
        "busybox", "udhcpc", "-i", CLIENT_IF, "-n", "-q", "-f", "-s", &script, "-t", "5", "-T", "1",
    ];
    args.extend_from_slice(extra);
    lab.client(30, &args)
}

/// The last event named `event` in a client script's log.
fn last_event(log: &Path, event: &str) -> HashMap<String, String> {
    events(log)
        .into_iter()
        .rev()
        .find(|e| e.get("event").map(String::as_str) == Some(event))
        .unwrap_or_else(|| {
            panic!(
                "no {event} in {}",
                std::fs::read_to_string(log).unwrap_or_default()
            )
        })
}

/// Waits (at most 15 s) until the log holds `count` events named `event`; returns the last.
fn wait_event(log: &Path, event: &str, count: usize) -> HashMap<String, String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let found: Vec<_> = events(log)
            .into_iter()
            .filter(|e| e.get("event").map(String::as_str) == Some(event))
            .collect();
        if found.len() >= count {
            return found.into_iter().next_back().unwrap_or_default();
        }
        assert!(
            Instant::now() < deadline,
            "no {event} #{count} in {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

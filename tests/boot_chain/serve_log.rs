//! What is compared: the tree the VM printed against `ovl show --json`, and the events in
//! `ovl serve`'s JSON log.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use crate::harness::site::TestSite;

/// One entry as compared: type, mode (none for symlinks: Linux ignores their permission
/// bits), uid, gid, and the content's sha256 or the link target.
type Entry = (String, Option<u32>, u32, u32, String);

/// The tree the VM printed.
fn vm_listing(serial: &str) -> BTreeMap<String, Entry> {
    assert!(
        serial.contains("OVL-E2E: listing end"),
        "no complete listing on the console:\n{serial}"
    );
    serial
        .lines()
        .filter_map(|l| l.split_once("OVL-E2E-ENTRY|").map(|(_, rest)| rest))
        .map(|rest| {
            let f: Vec<&str> = rest.splitn(6, '|').collect();
            assert_eq!(f.len(), 6, "bad listing line {rest:?}");
            let mode = u32::from_str_radix(f[1], 8).expect("octal mode");
            let kind = f[0].to_string();
            let mode = (kind != "symlink").then_some(mode);
            let x = if kind == "dir" {
                String::new()
            } else {
                f[4].to_string()
            };
            (
                f[5].to_string(),
                (
                    kind,
                    mode,
                    f[2].parse().expect("uid"),
                    f[3].parse().expect("gid"),
                    x,
                ),
            )
        })
        .collect()
}

/// The tree `ovl show --json --mac MAC` lists.
fn ovl_listing(site: &TestSite, mac: &str) -> BTreeMap<String, Entry> {
    let out = site
        .command()
        .args(["--json", "show", "--mac", mac])
        .output()
        .expect("ovl show");
    assert!(out.status.success(), "{out:?}");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("show JSON");
    doc["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| {
            let kind = f["type"].as_str().unwrap_or_default().to_string();
            let mode =
                u32::from_str_radix(f["mode"].as_str().unwrap_or_default(), 8).expect("mode");
            let x = match kind.as_str() {
                "file" => f["sha256"].as_str().unwrap_or_default().to_string(),
                "symlink" => f["target"].as_str().unwrap_or_default().to_string(),
                _ => String::new(),
            };
            (
                f["path"].as_str().unwrap_or_default().to_string(),
                (
                    kind.clone(),
                    (kind != "symlink").then_some(mode),
                    u32::try_from(f["uid"].as_u64().unwrap_or(u64::MAX)).expect("uid"),
                    u32::try_from(f["gid"].as_u64().unwrap_or(u64::MAX)).expect("gid"),
                    x,
                ),
            )
        })
        .collect()
}

/// Asserts that the tree the VM printed on `serial` is the one `ovl show` lists for `mac`.
pub fn assert_same_tree(site: &TestSite, mac: &str, serial: &str) {
    let vm = vm_listing(serial);
    let ovl = ovl_listing(site, mac);
    let only_vm: Vec<_> = vm.keys().filter(|k| !ovl.contains_key(*k)).collect();
    let only_ovl: Vec<_> = ovl.keys().filter(|k| !vm.contains_key(*k)).collect();
    let differ: Vec<_> = ovl
        .iter()
        .filter_map(|(k, v)| vm.get(k).filter(|w| *w != v).map(|w| (k, v, w)))
        .collect();
    assert!(
        only_vm.is_empty() && only_ovl.is_empty() && differ.is_empty(),
        "{mac}: the VM's tree differs from ovl show\nonly in the VM: {only_vm:?}\n\
         only in ovl show: {only_ovl:?}\ndiffering (ovl, VM): {differ:#?}"
    );
    assert!(ovl.len() > 10, "a real tree: {} entries", ovl.len());
}

/// The JSON log lines of `ovl serve` with this `event`.
pub fn log_events(log: &Path, event: &str) -> Vec<serde_json::Value> {
    fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == event)
        .collect()
}

/// The files served over TFTP, from the log.
pub fn tftp_files(log: &Path) -> Vec<String> {
    log_events(log, "tftp_transfer")
        .iter()
        .map(|v| v["file"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// The files requested over HTTP, from the log.
pub fn http_files(log: &Path) -> Vec<String> {
    log_events(log, "http_request")
        .iter()
        .map(|v| v["file"].as_str().unwrap_or_default().to_string())
        .collect()
}

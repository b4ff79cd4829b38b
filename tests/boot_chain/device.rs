//! Alpine devices in a chroot (`harness::alpine::Device`): the same minirootfs as the VMs'
//! initramfs, an apkovl applied by Alpine's busybox `tar`, changes saved by the real
//! `lbu commit`. The fleet tests make their devices this way.

use std::collections::BTreeSet;
use std::fs;

use crate::harness::alpine::Device;
use crate::harness::proc::must;
use crate::harness::site::TestSite;
use crate::harness::tree::{assert_holds, on_disk, ovl_show};

/// The example inventory's first device (profile XL, hostname `kiosk-hall`).
const MAC: &str = "52:54:00:12:34:56";

/// Busybox `tar -zxvf` in the device lists exactly the archive's members, relative, and the
/// device then holds every entry as `ovl show` lists it (owners resolved by the device's
/// `/etc/passwd` and `/etc/group`).
#[test]
#[ignore = "needs root: chroot into Alpine's minirootfs"]
fn an_alpine_device_holds_the_archive_as_ovl_show_lists_it() {
    let site = TestSite::example_built();
    let device = Device::new();
    let list = device.apply(&site.archive(MAC));
    let shown = ovl_show(&site, MAC);
    let listed: BTreeSet<&str> = list.iter().map(|n| n.trim_end_matches('/')).collect();
    let expected: BTreeSet<&str> = shown.tree.keys().map(String::as_str).collect();
    assert_eq!(listed, expected, "tar's member list");
    assert!(
        list.iter()
            .all(|n| !n.starts_with('/') && !n.starts_with("./"))
    );
    let disk = on_disk(device.root(), shown.tree.keys());
    assert_holds(&shown.tree, &disk, |_| false, "the device against ovl show");
    let hostname = device.must_sh("hostname");
    assert_eq!(hostname.trim(), "kiosk-hall", "the device's own hostname");
}

/// Alpine's `lbu commit` on a device saves the change made there into `LBU_BACKUPDIR`, here a
/// host folder shared into the device, as `HOSTNAME.apkovl.tar.gz` (the hostname the archive
/// gave the device).
#[test]
#[ignore = "needs root: chroot into Alpine's minirootfs"]
fn lbu_commit_on_a_device_saves_its_change_in_a_shared_folder() {
    let site = TestSite::example_built();
    let mut device = Device::new();
    let backups = device.scratch("backups");
    fs::create_dir_all(&backups).expect("backup folder");
    device.share(&backups, "/media/backups");
    device.apply(&site.archive(MAC));
    device.must_sh("echo 'changed on the device' > /etc/motd");
    let out = device.lbu_commit("LBU_BACKUPDIR=/media/backups");
    assert!(out.status.success(), "lbu commit: {out:?}");
    let capture = backups.join("kiosk-hall.apkovl.tar.gz");
    assert!(capture.is_file(), "{} written by lbu", capture.display());
    let motd = must(&[
        "busybox",
        "tar",
        "-zxOf",
        capture.to_str().expect("UTF-8 path"),
        "etc/motd",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&motd.stdout),
        "changed on the device\n"
    );
    assert!(
        !device
            .path("media/backups/kiosk-hall.apkovl.tar.gz")
            .exists(),
        "the share lived only in lbu's own mount namespace"
    );
}

//! Managing the fleet with Alpine's real `lbu`: a device is Alpine's minirootfs with its
//! archive applied by Alpine's busybox `tar` in a chroot (`harness::alpine::Device`), changed
//! by hand, saved by the real `lbu commit` into its capture folder (the site's
//! `captures/MAC`, shared at the `LBU_BACKUPDIR` the archive's `lbu.conf` names, as over NFS).
//! Then the three-way merge (fleet-only change, device-only change, conflict both ways,
//! deletion, unknown base, and in `ovl watch`), `ovl drift`, `ovl adopt` and `ovl discard`,
//! every rebuilt archive checked by booting it: a fresh device with the archive applied by
//! Alpine's busybox `tar`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use crate::harness::alpine::Device;
use crate::harness::proc::Lines;
use crate::harness::site::TestSite;

/// The device of every test.
const MAC: &str = "52:54:00:12:34:56";
/// A second device of the same profile.
const OTHER: &str = "52:54:00:12:34:57";

/// A site whose archives carry the lbu round trip (`[boot] nfs`), one profile `S` over the
/// overlay `base`, two devices.
fn fleet_site() -> TestSite {
    let site = TestSite::new();
    site.write(
        "ovl.toml",
        "[boot]\nserver = \"10.9.0.1\"\nnfs = \"10.9.0.1:/srv/pxe/captures\"\n",
    );
    site.write("overlays/base/etc/motd", "fleet motd 1\n");
    site.write("overlays/base/etc/app.conf", "a=1\nb=1\n");
    site.write("overlays/base/etc/keep.conf", "keep 1\n");
    site.write("overlays/base/root/.profile", "export FLEET=1\n");
    site.write(
        "devices.toml",
        &format!(
            "# The fleet.\n[[device]]\nmac = \"{MAC}\"   # the hall\nprofile = \"S\"\nhostname = \"hall\"\n\n\
             [[device]]\nmac = \"{OTHER}\"\nprofile = \"S\"\nhostname = \"desk\"\n"
        ),
    );
    site.ovl(&["build", "--all"]).ok();
    site
}

/// Boots `mac`: a fresh device with its published archive applied, its capture folder shared
/// where the archive's `lbu.conf` puts `LBU_BACKUPDIR`.
fn boot(site: &TestSite, mac: &str) -> Device {
    let mut d = Device::new();
    let captures = site.path(&format!("captures/{mac}"));
    fs::create_dir_all(&captures).expect("capture folder");
    d.share(&captures, &format!("/media/pxe/{mac}"));
    d.apply(&site.archive(mac));
    d
}

/// Runs `script` on the device, then the real `lbu commit`.
fn change_and_commit(d: &Device, script: &str) {
    d.must_sh(script);
    let out = d.lbu_commit("");
    assert!(out.status.success(), "lbu commit: {out:?}");
}

/// A file of the device, `None` when it has none.
fn read(d: &Device, rel: &str) -> Option<String> {
    fs::read_to_string(d.path(rel)).ok()
}

/// `ovl drift --json --mac MAC`: the device's capture report.
fn drift(site: &TestSite, mac: &str) -> serde_json::Value {
    let v = site.ovl(&["--json", "drift", "--mac", mac]).ok().json();
    v["devices"][0]["capture"].clone()
}

/// The drift item of `path`, if any.
fn item<'a>(capture: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    capture["items"]
        .as_array()?
        .iter()
        .find(|i| i["path"] == path)
}

#[test]
#[ignore = "needs root: chroot into Alpine's minirootfs"]
fn fleet_changes_reach_a_captured_device_and_its_own_changes_stay() {
    let site = fleet_site();
    let d = boot(&site, MAC);
    change_and_commit(
        &d,
        "echo 'a=2' > /etc/app.conf; echo 'b=1' >> /etc/app.conf",
    );
    let capture = site.path(&format!("captures/{MAC}/hall.apkovl.tar.gz"));
    assert!(capture.is_file(), "lbu wrote {}", capture.display());
    let c = drift(&site, MAC);
    assert!(
        c["base"]["id"].is_string(),
        "the capture's identity names its base: {c}"
    );
    let app = item(&c, "etc/app.conf").expect("app.conf drifted");
    assert_eq!(app["change"], "changed");
    assert_eq!(app["conflict"], false);
    assert!(
        app["diff"].as_str().unwrap().contains("-a=1\n+a=2\n"),
        "{app}"
    );
    // The fleet changes another file: it reaches the device, the device's change stays.
    site.write("overlays/base/etc/motd", "fleet motd 2\n");
    let r = site.ovl(&["build", "--all"]).ok();
    assert!(!r.stderr.contains("warning"), "{}", r.stderr);
    let d = boot(&site, MAC);
    assert_eq!(read(&d, "etc/motd").unwrap(), "fleet motd 2\n");
    assert_eq!(read(&d, "etc/app.conf").unwrap(), "a=2\nb=1\n");
    // The other device never had a capture: plain fleet.
    let o = boot(&site, OTHER);
    assert_eq!(read(&o, "etc/app.conf").unwrap(), "a=1\nb=1\n");
    // A second commit from the merged archive: the device's change is still its own, and
    // the next fleet change still reaches it.
    change_and_commit(&d, "true");
    site.write("overlays/base/etc/motd", "fleet motd 3\n");
    site.ovl(&["build", "--all"]).ok();
    let d = boot(&site, MAC);
    assert_eq!(read(&d, "etc/motd").unwrap(), "fleet motd 3\n");
    assert_eq!(read(&d, "etc/app.conf").unwrap(), "a=2\nb=1\n");
    let c = drift(&site, MAC);
    assert_eq!(item(&c, "etc/app.conf").unwrap()["winner"], "device");
    assert!(item(&c, "etc/motd").is_none(), "{c}");
}

#[test]
#[ignore = "needs root: chroot into Alpine's minirootfs"]
fn a_conflict_is_reported_and_resolved_both_ways() {
    let site = fleet_site();
    let d = boot(&site, MAC);
    change_and_commit(&d, "echo 'device motd' > /etc/motd");
    site.write("overlays/base/etc/motd", "fleet motd 2\n");
    let r = site.ovl(&["build", "--all"]).ok();
    let warnings: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.starts_with("warning:"))
        .collect();
    assert_eq!(
        warnings.len(),
        1,
        "one line per conflicting device: {}",
        r.stderr
    );
    assert!(
        warnings[0].contains(&format!("{MAC} (hall)")) && warnings[0].contains("(etc/motd)"),
        "{}",
        warnings[0]
    );
    assert_eq!(
        read(&boot(&site, MAC), "etc/motd").unwrap(),
        "device motd\n"
    );
    site.ovl(&["check"])
        .ok()
        .stderr_has("both changed 1 file (etc/motd)");
    site.ovl(&["list"]).ok().stdout_has("1 conflict");
    let c = drift(&site, MAC);
    let motd = item(&c, "etc/motd").unwrap();
    assert_eq!(
        (motd["conflict"].clone(), motd["winner"].clone()),
        (true.into(), "device".into())
    );
    // The fleet wins when the site says so; still reported.
    let toml = site.read("ovl.toml");
    site.write(
        "ovl.toml",
        &format!("{toml}[capture]\nconflicts = \"fleet\"\n"),
    );
    site.ovl(&["build", "--all"])
        .ok()
        .stderr_has("the fleet's versions win");
    assert_eq!(
        read(&boot(&site, MAC), "etc/motd").unwrap(),
        "fleet motd 2\n"
    );
    let text = site.ovl(&["drift", "--mac", MAC]).ok().stdout;
    assert!(text.contains("! etc/motd (content)"), "{text}");
    assert!(text.contains("the fleet's version wins"), "{text}");
}

#[test]
#[ignore = "needs root: chroot into Alpine's minirootfs"]
fn a_deletion_stays_unless_the_fleet_changes_the_file() {
    let site = fleet_site();
    let d = boot(&site, MAC);
    // root/.profile is beyond lbu's reach: its absence from the capture is no deletion.
    change_and_commit(&d, "rm /etc/keep.conf /root/.profile");
    site.ovl(&["build", "--all"]).ok();
    let b = boot(&site, MAC);
    assert_eq!(read(&b, "etc/keep.conf"), None, "deleted on the device");
    assert_eq!(read(&b, "root/.profile").unwrap(), "export FLEET=1\n");
    let c = drift(&site, MAC);
    assert_eq!(item(&c, "etc/keep.conf").unwrap()["change"], "deleted");
    assert!(item(&c, "root/.profile").is_none());
    site.write("overlays/base/etc/keep.conf", "keep 2\n");
    site.ovl(&["build", "--all"]).ok();
    assert_eq!(
        read(&boot(&site, MAC), "etc/keep.conf").unwrap(),
        "keep 2\n"
    );
}

#[test]
#[ignore = "needs root: chroot into Alpine's minirootfs"]
fn a_capture_without_a_known_base_lies_on_top_as_before() {
    let site = fleet_site();
    let d = boot(&site, MAC);
    change_and_commit(&d, "echo 'device motd' > /etc/motd");
    // The history is gone (pruned, or another machine built the archive).
    fs::remove_dir_all(site.path(".ovl-state/manifests")).unwrap();
    site.write("overlays/base/etc/motd", "fleet motd 2\n");
    site.write("overlays/base/etc/keep.conf", "keep 2\n");
    site.ovl(&["build", "--all"])
        .ok()
        .stderr_has("1 capture has no known base");
    let b = boot(&site, MAC);
    assert_eq!(
        read(&b, "etc/motd").unwrap(),
        "device motd\n",
        "the capture on top"
    );
    assert_eq!(
        read(&b, "etc/keep.conf").unwrap(),
        "keep 1\n",
        "the capture on top"
    );
    let c = drift(&site, MAC);
    assert!(c["base"].is_null(), "{c}");
    assert!(c["no_base"].as_str().unwrap().contains("not kept"), "{c}");
    site.ovl(&["list"]).ok().stdout_has("no base,");
    // A capture without the identity file says so.
    change_and_commit(&d, "rm /etc/ovl/build");
    let c = drift(&site, MAC);
    assert!(
        c["no_base"]
            .as_str()
            .unwrap()
            .contains("has no etc/ovl/build"),
        "{c}"
    );
}

#[test]
#[ignore = "needs root: chroot into Alpine's minirootfs"]
fn drift_lists_added_changed_and_deleted_files_modes_and_owners() {
    let site = fleet_site();
    let d = boot(&site, MAC);
    change_and_commit(
        &d,
        "echo new > /etc/added.conf; echo 'a=9' > /etc/app.conf; rm /etc/keep.conf; \
         chmod 600 /etc/motd; chown 1:1 /etc/ovl",
    );
    let text = site.ovl(&["drift", "--mac", MAC]).ok().stdout;
    for line in [
        "+ etc/added.conf: added by the device; the device's version stays",
        "~ etc/app.conf (content): changed by the device; the device's version stays",
        "    -a=1\n",
        "    +a=9\n",
        "- etc/keep.conf: deleted by the device; stays deleted",
        "~ etc/motd (mode): changed by the device",
        "1 device: 1 with a capture (1 drifted, 0 with conflicts, 0 without a known base)",
    ] {
        assert!(text.contains(line), "{line:?} missing:\n{text}");
    }
    assert!(
        !text.contains("etc/ovl"),
        "the identity is the fleet's:\n{text}"
    );
    d.must_sh("chown 1:1 /etc/app.conf");
    change_and_commit(&d, "true");
    let c = drift(&site, MAC);
    let what = &item(&c, "etc/app.conf").unwrap()["what"];
    assert_eq!(what, &serde_json::json!(["content", "owner"]));
    site.ovl(&["list"]).ok().stdout_has("files");
}

#[test]
#[ignore = "needs root: chroot into Alpine's minirootfs"]
fn adopt_gives_the_devices_version_to_every_user_of_the_overlay() {
    let site = fleet_site();
    let d = boot(&site, MAC);
    change_and_commit(
        &d,
        "printf 'a=2\\nb=2\\n' > /etc/app.conf; chmod 755 /etc/app.conf; \
         mkdir -p /etc/kiosk; echo k > /etc/kiosk/k.conf; ln -s k.conf /etc/kiosk/current",
    );
    let r = site
        .ovl(&[
            "adopt",
            "--mac",
            MAC,
            "etc/app.conf",
            "/etc/kiosk/",
            "--into",
            "overlays/base",
        ])
        .ok();
    for line in [
        "  etc/app.conf (file, 0755)\n",
        "  etc/kiosk/current (symlink, 0777)\n",
        "overlays/base is a layer of 2 device(s)",
        &format!("  {OTHER} desk (S)\n"),
    ] {
        assert!(r.stdout.contains(line), "{line:?} missing:\n{}", r.stdout);
    }
    let meta = fs::symlink_metadata(site.path("overlays/base/etc/kiosk/current")).unwrap();
    assert!(meta.file_type().is_symlink(), "a link stays a link");
    let meta = fs::metadata(site.path("overlays/base/etc/app.conf")).unwrap();
    assert_eq!(
        meta.permissions().mode() & 0o7777,
        0o755,
        "the mode is kept"
    );
    site.ovl(&["build", "--all"]).ok();
    let o = boot(&site, OTHER);
    assert_eq!(read(&o, "etc/app.conf").unwrap(), "a=2\nb=2\n");
    assert_eq!(read(&o, "etc/kiosk/current").unwrap(), "k\n");
    let c = drift(&site, MAC);
    assert!(
        item(&c, "etc/app.conf").is_none(),
        "device and fleet agree now: {c}"
    );
    // An overlay no device uses: said so; a path the capture lacks: an error.
    site.ovl(&[
        "adopt",
        "--mac",
        MAC,
        "etc/app.conf",
        "--into",
        "overlays/spare",
    ])
    .ok()
    .stdout_has("no device uses overlays/spare yet");
    site.ovl(&[
        "adopt",
        "--mac",
        MAC,
        "etc/nothing",
        "--into",
        "overlays/base",
    ])
    .code(1)
    .stderr_has("etc/nothing: not in this capture");
    // Never through a symlink in the overlay.
    site.symlink("overlays/linked", "/tmp");
    site.ovl(&[
        "adopt",
        "--mac",
        MAC,
        "etc/app.conf",
        "--into",
        "overlays/linked",
    ])
    .code(1)
    .stderr_has("never follows links");
}

#[test]
#[ignore = "needs root: chroot into Alpine's minirootfs"]
fn discard_makes_the_fleet_win_and_survives_the_next_commit() {
    let site = fleet_site();
    let d = boot(&site, MAC);
    change_and_commit(
        &d,
        "echo 'device motd' > /etc/motd; echo x > /etc/extra.conf",
    );
    let before = site.read("devices.toml");
    site.ovl(&["discard", "--mac", MAC, "/etc/motd", "etc/extra.conf"])
        .ok()
        .stdout_has("the next build drops the device's version of etc/extra.conf, etc/motd");
    let after = site.read("devices.toml");
    assert_eq!(
        after,
        before.replace(
            "hostname = \"hall\"\n",
            "hostname = \"hall\"\ndiscard = [\"etc/motd\", \"etc/extra.conf\"]\n"
        ),
        "only the device's entry changes, comments kept"
    );
    site.ovl(&["build", "--all"]).ok();
    // The device has not rebooted and commits again: the fleet still wins.
    change_and_commit(&d, "true");
    site.ovl(&["build", "--all"]).ok();
    let b = boot(&site, MAC);
    assert_eq!(read(&b, "etc/motd").unwrap(), "fleet motd 1\n");
    assert_eq!(read(&b, "etc/extra.conf"), None);
    let c = drift(&site, MAC);
    assert_eq!(item(&c, "etc/motd").unwrap()["discarded"], true);
    // Not in the inventory: exit 1, nothing written.
    site.ovl(&["discard", "--mac", "02:00:00:00:00:01", "etc/motd"])
        .code(1);
    assert_eq!(site.read("devices.toml"), after);
}

/// The next `rebuild` event of a running `ovl watch --json`, within `secs` seconds.
fn next_rebuild(w: &mut Lines, secs: u64) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let line = w
            .next_before(deadline)
            .unwrap_or_else(|| panic!("no rebuild within {secs}s: {:?}", w.seen));
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
            && v["event"] == "rebuild"
        {
            return v;
        }
    }
}

#[test]
#[ignore = "needs root: chroot into Alpine's minirootfs"]
fn watch_merges_a_new_capture_three_ways() {
    let site = fleet_site();
    let d = boot(&site, MAC);
    let mut cmd = site.command();
    cmd.args(["watch", "--json"]);
    let mut w = Lines::spawn(&mut cmd, false);
    next_rebuild(&mut w, 30);
    site.write("overlays/base/etc/motd", "fleet motd 2\n");
    next_rebuild(&mut w, 30);
    // The device still runs the archive with motd 1; its commit lands while watch runs.
    change_and_commit(&d, "echo 'a=5' > /etc/app.conf");
    let r = next_rebuild(&mut w, 30);
    assert_eq!(r["devices"][0]["mac"], MAC, "{r}");
    assert_eq!(r["devices"][0]["conflicts"], serde_json::json!([]), "{r}");
    let b = boot(&site, MAC);
    assert_eq!(
        read(&b, "etc/motd").unwrap(),
        "fleet motd 2\n",
        "the fleet's change"
    );
    assert_eq!(
        read(&b, "etc/app.conf").unwrap(),
        "a=5\n",
        "the device's change"
    );
    w.child.signal(libc::SIGTERM);
    assert!(w.child.wait_exit(Duration::from_secs(10)).is_some());
}

#[test]
#[ignore = "needs root: chroot into Alpine's minirootfs"]
fn world_merges_the_packages_both_sides_added() {
    let site = fleet_site();
    let d = boot(&site, MAC);
    change_and_commit(&d, "echo htop >> /etc/apk/world");
    let profile = site.read("profiles/S.toml");
    site.write(
        "profiles/S.toml",
        &profile.replace(
            "packages = [\"openssh\"]",
            "packages = [\"openssh\", \"chrony\"]",
        ),
    );
    let r = site.ovl(&["build", "--all"]).ok();
    assert!(!r.stderr.contains("warning"), "no conflict: {}", r.stderr);
    let world = read(&boot(&site, MAC), "etc/apk/world").unwrap();
    for p in ["chrony", "htop", "nfs-utils", "openssh"] {
        assert!(world.lines().any(|l| l == p), "{p} in {world}");
    }
    let c = drift(&site, MAC);
    assert_eq!(item(&c, "etc/apk/world").unwrap()["winner"], "merged");
}

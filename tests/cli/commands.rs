//! `init`, `check`, `list`, `show`, `diff`, the boot script, JSON output and exit codes.

use crate::harness::site::{MAC, TestSite, ovl};

#[test]
fn init_refuses_an_existing_site() {
    let site = TestSite::example();
    let r = site.ovl(&["init", site.root().to_str().unwrap()]).code(2);
    assert!(r.stderr.contains("already holds a site"));
}

#[test]
fn init_refuses_a_folder_that_is_not_empty_unless_forced() {
    let site = TestSite::empty();
    site.write("devices.toml", "# the admin's own inventory\n");
    let dir = site.root().to_str().unwrap();
    site.ovl(&["init", dir])
        .code(2)
        .stderr_has("is not empty (devices.toml); nothing written (pass --force");
    assert_eq!(site.read("devices.toml"), "# the admin's own inventory\n");
    assert!(!site.path("ovl.toml").exists());
    site.ovl(&["init", "--force", dir]).ok();
    assert!(site.path("ovl.toml").is_file());
    assert!(site.read("devices.toml").contains("[[device]]"));
}

#[test]
fn the_examples_placeholder_key_is_flagged_where_it_is() {
    let site = TestSite::example();
    let warning = "warning: SITE/profiles/S.toml:7:20: authorized_keys holds the example's placeholder, not a key"
        .replace("SITE", site.root().to_str().unwrap());
    site.ovl(&["check"]).ok().stderr_has(&warning);
    let j = site.ovl(&["check", "--json"]).ok().json();
    // One placeholder warning (the others name the boot files `ovl fetch` has not fetched).
    let placeholder = |w: &&serde_json::Value| w.as_str().unwrap().contains("placeholder");
    assert_eq!(
        j["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(placeholder)
            .count(),
        1,
        "{j}"
    );
    site.ovl(&["build", "--all"]).ok().stderr_has(&warning);
    let s = site.read("profiles/S.toml").replace(
        "ssh-ed25519 REPLACE-WITH-YOUR-OWN-PUBLIC-KEY",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOwnKey",
    );
    site.write("profiles/S.toml", &s);
    let r = site.ovl(&["check"]).ok();
    assert!(!r.stderr.contains("placeholder"), "{}", r.stderr);
}

#[test]
fn check_lists_counts() {
    TestSite::example()
        .ovl(&["check"])
        .ok()
        .stdout_has("ok: 3 profiles, 5 devices, every template renders");
    let j = TestSite::example().ovl(&["check", "--json"]).ok().json();
    assert_eq!(j["ok"], true);
}

#[test]
fn list_states_missing_built_stale() {
    let site = TestSite::new();
    let j = site.ovl(&["list", "--json"]).ok().json();
    assert_eq!(j["devices"][0]["state"], "missing");
    site.ovl(&["build", "--all"]).ok();
    let j = site.ovl(&["list", "--json"]).ok().json();
    assert_eq!(j["devices"][0]["state"], "built");
    assert_eq!(j["devices"][0]["hostname"], "s-123456");
    site.write("overlays/base/etc/motd", "changed\n");
    let j = site.ovl(&["list", "--json"]).ok().json();
    assert_eq!(j["devices"][0]["state"], "stale");
    site.ovl(&["list"])
        .ok()
        .stdout_has("52:54:00:12:34:56  S           s-123456              -                stale");
}

#[test]
fn show_names_each_files_layer() {
    let site = TestSite::example();
    let j = site
        .ovl(&["show", "--json", "--mac", "52-54-00-12-34-56"])
        .ok()
        .json();
    assert_eq!(j["hostname"], "kiosk-hall");
    assert_eq!(j["chain"], serde_json::json!(["S", "XL"]));
    assert_eq!(
        j["layers"],
        serde_json::json!(["overlays/base", "overlays/xl", "overlays/special/hall"])
    );
    let layer = |p: &str| {
        j["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["path"] == p)
            .map(|f| f["layer"].clone())
    };
    assert_eq!(
        layer("etc/kiosk/hall.conf").unwrap(),
        "overlays/special/hall"
    );
    assert_eq!(layer("etc/ssh/sshd_config").unwrap(), "overlays/base");
    assert_eq!(layer("etc/motd").unwrap(), "profile XL (profiles/XL.toml)");
    // crond dropped by XL, nano dropped from world.
    assert!(layer("etc/runlevels/default/crond").is_none());
    site.ovl(&["show", "--mac", "02:00:00:00:00:01"])
        .code(1)
        .stderr_has("not in");
    site.ovl(&["show", "--mac", "02:00:00:00:00:01", "--profile", "S"])
        .ok()
        .stdout_has("hostname:    s-000001");
    site.ovl(&["show", "--mac", "02:00:00:00:00:01", "--profile", "XXL"])
        .code(2)
        .stderr_has("unknown profile `XXL`");
}

#[test]
fn diff_shows_what_a_rebuild_changes() {
    let site = TestSite::new();
    site.ovl(&["diff", "--mac", MAC])
        .ok()
        .stdout_has("does not exist yet");
    site.ovl(&["build", "--all"]).ok();
    site.ovl(&["diff", "--mac", MAC])
        .ok()
        .stdout_has("up to date");
    site.write("overlays/base/etc/motd", "hello again\n");
    site.write("overlays/base/etc/new", "n\n");
    let r = site.ovl(&["diff", "--mac", MAC]).ok();
    assert!(r.stdout.contains("+ etc/new\n"), "{}", r.stdout);
    assert!(
        r.stdout
            .contains("~ etc/motd (content)\n-hello\n+hello again\n")
            || r.stdout.contains("-hello\n+hello again"),
        "{}",
        r.stdout
    );
    let j = site.ovl(&["diff", "--json", "--mac", MAC]).ok().json();
    assert_eq!(j["devices"][0]["state"], "updated");
    assert_eq!(j["devices"][0]["added"], serde_json::json!(["etc/new"]));
}

#[test]
fn boot_script_follows_the_settings() {
    let site = TestSite::new();
    site.write("ovl.toml", "[alpine]\nflavor = \"virt\"\nversion = \"v3.21\"\n[boot]\nserver = \"10.9.0.1\"\nkernel_args = [\"console=ttyS0\"]\n[serve]\nhttp = \"0.0.0.0:8080\"\n");
    site.write("sshkeys.pub", "ssh-ed25519 AAAA admin\n");
    site.ovl(&["build", "--all"]).ok();
    let s = std::fs::read_to_string(site.path("boot.ipxe")).unwrap();
    assert_eq!(
        s,
        std::fs::read_to_string(site.path("gpxe-script")).unwrap()
    );
    assert!(s.starts_with("#!ipxe\n"));
    assert!(s.contains("kernel http://10.9.0.1:8080/vmlinuz-virt initrd=initramfs-virt apkovl=http://10.9.0.1:8080/configs/${net0/mac}.tar.gz ip=dhcp modloop=http://10.9.0.1:8080/modloop-virt alpine_repo=http://dl-cdn.alpinelinux.org/alpine/v3.21/main modules=loop,squashfs,sd-mod,usb-storage ssh_key=http://10.9.0.1:8080/sshkeys.pub console=ttyS0 || goto ovl_kernel_failed\n"), "{s}");
    assert!(s.contains("initrd http://10.9.0.1:8080/initramfs-virt || goto ovl_initrd_failed\n"));
    assert!(!s.contains("alpine_dev"));
    // Bounded retries with back-off, then the default fallback.
    assert!(
        s.contains("set ovl_wait_4 16\n") && !s.contains("ovl_wait_5"),
        "{s}"
    );
    assert!(s.ends_with("reboot\n"), "{s}");
}

#[test]
fn nfs_round_trip_settings_land_in_the_archive() {
    let site = TestSite::new();
    site.write(
        "ovl.toml",
        "[boot]\nserver = \"10.9.0.1\"\nnfs = \"10.9.0.1:/srv/pxe/captures\"\n",
    );
    site.ovl(&["build", "--all"]).ok();
    let j = site.ovl(&["show", "--json", "--mac", MAC]).ok().json();
    let has = |p: &str| {
        j["files"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["path"] == p)
    };
    assert!(has("etc/runlevels/default/netmount"));
    assert!(has(&format!("media/pxe/{MAC}")));
    let cat = |p: &str| site.archive_member(MAC, p);
    // The device mounts its own capture folder only, never the site or other devices' folders.
    assert_eq!(
        cat("etc/fstab"),
        format!("10.9.0.1:/srv/pxe/captures/{MAC} /media/pxe/{MAC} nfs rw,nolock,_netdev 0 0\n")
    );
    assert_eq!(
        cat("etc/lbu/lbu.conf"),
        format!("LBU_BACKUPDIR=/media/pxe/{MAC}\n")
    );
    assert!(cat("etc/apk/world").contains("nfs-utils\n"));
    let dir = site.path(&format!("captures/{MAC}"));
    assert!(dir.is_dir());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700,
        "a device's captures hold its secrets"
    );
}

#[test]
fn usage_errors_exit_2_and_help_lists_commands() {
    let site = TestSite::new();
    site.ovl(&["build"]).code(2);
    site.ovl(&["frobnicate"]).code(2);
    site.ovl(&["--help"])
        .ok()
        .stdout_has("Exit codes: 0 success, 1 invalid input, 2 usage, 3 environment");
    site.ovl(&["man"]).ok().stdout_has(".TH OVL 1");
    site.ovl(&["completions", "bash"]).ok().stdout_has("_ovl()");
}

/// `ovl man PAGE` prints one page, `ovl man --dir` writes them all; man-db's `man` and groff
/// (warnings on) read every one of them, and ovl(1) names exactly the pages written.
#[test]
fn man_pages_for_every_command_and_file_format() {
    let site = TestSite::new();
    site.ovl(&["man", "build"])
        .ok()
        .stdout_has(".TH OVL-BUILD 1")
        .stdout_has("\\-\\-profile");
    site.ovl(&["man", "ovl.toml"])
        .ok()
        .stdout_has("[boot] on_failure");
    site.ovl(&["man", "ovl-profile"])
        .ok()
        .stdout_has("authorized_keys");
    site.ovl(&["man", "nope"]).code(2).stderr_has("ovl-build");
    let dir = site.scratch("man");
    let r = site.ovl(&["man", "--dir", dir.to_str().unwrap()]).ok();
    let mut written: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    written.sort();
    assert_eq!(written.len(), 20, "{written:?}");
    for name in [
        "ovl.1",
        "ovl-build.1",
        "ovl-drift.1",
        "ovl-adopt.1",
        "ovl-discard.1",
        "ovl-serve.1",
        "ovl-man.1",
        "ovl-device.1",
        "ovl-prune.1",
        "ovl.toml.5",
        "ovl-profile.5",
    ] {
        assert!(written.contains(&name.to_string()), "{written:?}");
        assert!(r.stdout.contains(name), "{}", r.stdout);
    }
    let top = std::fs::read_to_string(dir.join("ovl.1")).unwrap();
    let see_also = top.split(".SH \"SEE ALSO\"").nth(1).unwrap();
    for name in &written {
        let (page, section) = name.rsplit_once('.').unwrap();
        if page != "ovl" {
            let r = format!("\\fB{}\\fR({section})", page.replace('-', "\\-"));
            assert!(see_also.contains(&r), "{r} in {see_also}");
        }
    }
    crate::harness::proc::require("groff");
    crate::harness::proc::require("man");
    for name in &written {
        let path = dir.join(name);
        let o =
            crate::harness::proc::run(30, &["groff", "-man", "-ww", "-z", path.to_str().unwrap()]);
        assert!(
            o.status.success() && o.stderr.is_empty(),
            "{name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let o = std::process::Command::new("man")
            .args(["-l", path.to_str().unwrap()])
            .env("MANWIDTH", "80")
            .env("MANPAGER", "cat")
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(
            text.contains("NAME") && text.contains("SEE ALSO"),
            "{name}:\n{text}"
        );
    }
}

#[test]
fn no_site_is_an_environment_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = ovl()
        .current_dir(dir.path())
        .env_remove("OVL_SITE")
        .args(["list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no ovl.toml in"));
}

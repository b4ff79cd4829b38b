//! Safe roll-out: `ovl diff` over many devices with a summary and `--exit-code`,
//! `ovl build --dry-run`, `build --profile P --mac M` refused for another profile's device,
//! `ovl prune` and `ovl list --all` for archives outside the inventory.

use crate::harness::site::TestSite;

/// The example site's devices of profile XL and of `special` (which extends XL).
const XL_AND_SPECIAL: [&str; 3] = [
    "52:54:00:12:34:56",
    "52:54:00:ab:cd:10",
    "52:54:00:ab:cd:20",
];

#[test]
fn diff_over_the_fleet_groups_devices_and_counts_them() {
    let site = TestSite::example_built();
    site.ovl(&["diff", "--all", "--exit-code"])
        .ok()
        .stdout_has("unchanged 5 devices: 52:54:00:12:34:56, 52:54:00:ab:cd:01, 52:54:00:ab:cd:02, 52:54:00:ab:cd:10, 52:54:00:ab:cd:20: up to date\n")
        .stdout_has("5 devices: 0 would change (5 unchanged); nothing written\n");
    site.write("overlays/xl/etc/xl-new", "new\n");
    let before = site.snapshot();
    let r = site.ovl(&["diff", "--all", "--exit-code"]).code(4);
    assert_eq!(
        r.stdout,
        format!(
            "updated   3 devices: {}: 1 added, 0 removed, 0 changed\n+ etc/xl-new\n\
             unchanged 2 devices: 52:54:00:ab:cd:01, 52:54:00:ab:cd:02: up to date\n\
             5 devices: 3 would change (3 updated, 2 unchanged); nothing written\n",
            XL_AND_SPECIAL.join(", ")
        )
    );
    // Without --exit-code a change is no failure.
    site.ovl(&["diff", "--all"]).ok();
    // --profile takes the descendants too; repeated --mac takes exactly those.
    let j = site.ovl(&["diff", "--json", "--profile", "XL"]).ok().json();
    assert_eq!(j["schema"], 1);
    let macs: Vec<&str> = j["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["mac"].as_str().unwrap())
        .collect();
    assert_eq!(macs, XL_AND_SPECIAL);
    assert_eq!(
        j["counts"],
        serde_json::json!({"created": 0, "updated": 3, "unchanged": 0, "failed": 0})
    );
    assert_eq!(j["changing"], 3);
    assert_eq!(j["devices"][0]["added"], serde_json::json!(["etc/xl-new"]));
    let j = site
        .ovl(&[
            "diff",
            "--json",
            "--mac",
            "52-54-00-AB-CD-01",
            "--mac",
            "52:54:00:ab:cd:20",
        ])
        .ok()
        .json();
    let states: Vec<&str> = j["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["unchanged", "updated"]);
    assert_eq!(before, site.snapshot(), "diff wrote something");
    // Other archive bytes with the same files: a build would update them.
    let settings = site.read("ovl.toml");
    site.write(
        "ovl.toml",
        &format!("{settings}\n[build]\ncompression = 1\n"),
    );
    site.ovl(&["diff", "--profile", "S", "--exit-code"])
        .code(4)
        .stdout_has("updated   2 devices: 52:54:00:ab:cd:01, 52:54:00:ab:cd:02: same files, other archive bytes (entry times or compression)\n");
}

#[test]
fn diff_shows_new_archives_and_failures_with_their_codes() {
    let site = TestSite::example();
    site.ovl(&["diff", "--profile", "special", "--exit-code"])
        .code(4)
        .stdout_has("created   52:54:00:ab:cd:20 special lab-bench: the archive does not exist yet; a build creates it with ")
        .stdout_has("1 device: 1 would change (1 created); nothing written\n");
    // A broken template of one device: its error is printed, and its code wins over 4.
    site.write("overlays/special/hall/etc/bad.j2", "{{ vars.nope }}\n");
    let r = site
        .ovl(&["diff", "--all", "--exit-code"])
        .code(1)
        .stdout_has("failed    52:54:00:12:34:56 XL: see the error below\n")
        .stdout_has("5 devices: 4 would change (4 created, 1 failed); nothing written\n");
    assert!(
        r.stderr.contains(
            "overlays/special/hall/etc/bad.j2:1:4: template: undefined value `vars.nope`"
        ) && r.stderr.contains("(device 52:54:00:12:34:56)"),
        "{}",
        r.stderr
    );
    assert!(!site.path("configs/52:54:00:12:34:56.tar.gz").exists());
}

#[test]
fn build_dry_run_writes_nothing() {
    let site = TestSite::example();
    let r = site.ovl(&["build", "--all", "--dry-run"]).ok();
    assert!(
        r.stdout
            .contains("created   52:54:00:12:34:56 XL         kiosk-hall (")
            && r.stdout.contains("5 archives: 5 created in ")
            && r.stdout.ends_with("s (dry run: nothing written)\n"),
        "{}",
        r.stdout
    );
    let j = site
        .ovl(&["build", "--all", "--dry-run", "--json"])
        .ok()
        .json();
    assert_eq!(j["dry_run"], true);
    assert_eq!(j["counts"]["created"], 5);
    assert_eq!(j["scripts"][0]["state"], "created");
    assert!(site.snapshot().is_empty(), "a dry run published an archive");
    assert!(!site.path("boot.ipxe").exists() && !site.path("gpxe-script").exists());
    site.ovl(&["build", "--all"]).ok();
    let before = site.snapshot();
    site.ovl(&["build", "--all", "--dry-run", "--exit-code"])
        .ok()
        .stdout_has("5 archives: 5 unchanged in ");
    site.write("overlays/base/etc/ssh/sshd_config", "PermitRootLogin no\n");
    let j = site
        .ovl(&["build", "--all", "--dry-run", "--exit-code", "--json"])
        .code(4)
        .json();
    assert_eq!(j["counts"]["updated"], 5);
    assert_eq!(before, site.snapshot(), "a dry run changed an archive");
    // --exit-code belongs to --dry-run.
    site.ovl(&["build", "--all", "--exit-code"]).code(2);
}

#[test]
fn building_an_inventory_device_with_another_profile_needs_force() {
    let site = TestSite::example_built();
    let before = site.snapshot();
    site.ovl(&["build", "--profile", "S", "--mac", "52:54:00:12:34:56"])
        .code(2)
        .stderr_has("52:54:00:12:34:56 is of profile XL in ")
        .stderr_has("give --force");
    assert_eq!(before, site.snapshot());
    // Its own profile, or a MAC the inventory does not know, needs nothing.
    site.ovl(&["build", "--profile", "XL", "--mac", "52:54:00:12:34:56"])
        .ok()
        .stdout_has("1 archives: 1 unchanged");
    site.ovl(&["build", "--profile", "S", "--mac", "02:00:00:00:00:99"])
        .ok();
    let j = site
        .ovl(&[
            "build",
            "--json",
            "--force",
            "--profile",
            "S",
            "--mac",
            "52:54:00:12:34:56",
        ])
        .ok()
        .json();
    assert_eq!(j["devices"][0]["state"], "updated");
    assert_eq!(j["devices"][0]["profile"], "S");
}

#[test]
fn prune_removes_archives_outside_the_inventory_and_list_all_shows_them() {
    let site = TestSite::example_built();
    site.ovl(&["build", "--profile", "S", "--mac", "02:00:00:00:00:99"])
        .ok();
    // Files ovl does not name so are none of its business.
    site.write("configs/README.tar.gz", "x");
    site.write("configs/02-00-00-00-00-98.tar.gz", "x");
    let j = site.ovl(&["list", "--json"]).ok().json();
    assert_eq!(j["devices"].as_array().unwrap().len(), 5);
    let j = site.ovl(&["list", "--all", "--json"]).ok().json();
    let orphan = &j["devices"][0];
    assert_eq!(
        (orphan["mac"].as_str(), orphan["state"].as_str()),
        (Some("02:00:00:00:00:99"), Some("orphan"))
    );
    assert_eq!(orphan["profile"], serde_json::Value::Null);
    assert_eq!(j["devices"].as_array().unwrap().len(), 6);
    site.ovl(&["list", "--all"]).ok().stdout_has(
        "02:00:00:00:00:99  -           -                     -                orphan   -\n",
    );
    site.ovl(&["prune", "--dry-run"])
        .ok()
        .stdout_has("removed   02:00:00:00:00:99 configs/02:00:00:00:00:99.tar.gz\n")
        .stdout_has("1 orphan archive: 1 removed (dry run: nothing removed)\n");
    assert!(site.path("configs/02:00:00:00:00:99.tar.gz").exists());
    let j = site.ovl(&["prune", "--json"]).ok().json();
    assert_eq!(j["devices"][0]["state"], "removed");
    assert_eq!(j["counts"], serde_json::json!({"removed": 1, "failed": 0}));
    assert!(!site.path("configs/02:00:00:00:00:99.tar.gz").exists());
    assert!(site.path("configs/README.tar.gz").exists());
    assert!(site.path("configs/02-00-00-00-00-98.tar.gz").exists());
    assert_eq!(site.snapshot().len(), 7, "inventory archives kept");
    site.ovl(&["prune"])
        .ok()
        .stdout_has("0 orphan archives: none\n");
}

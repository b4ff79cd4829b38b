//! The NFS round trip's server side: `ovl export nfs` gives each device write access to its
//! own capture folder only, from its fixed address, squashed to one owner; the lines are
//! checked by `exportfs`'s own parser (nfs-utils), which is what the NFS server would read.

use std::os::unix::fs::MetadataExt;

use crate::harness::proc::{require, require_root};
use crate::harness::site::TestSite;

/// The example site (two devices with a fixed ip, three without) with the round trip on.
fn nfs_site(extra_boot: &str) -> TestSite {
    let site = TestSite::example();
    let toml = std::fs::read_to_string(site.path("ovl.toml")).unwrap();
    site.write(
        "ovl.toml",
        &toml.replace(
            "[boot]\n",
            &format!("[boot]\nnfs = \"192.168.0.2:/srv/pxe/captures\"\n{extra_boot}"),
        ),
    );
    site
}

#[test]
fn export_nfs_gives_each_fixed_address_its_own_folder() {
    let site = nfs_site("nfs_anonuid = 1234\nnfs_anongid = 2345\n");
    let run = site.ovl(&["export", "nfs"]).ok();
    let opts = "rw,sync,no_subtree_check,secure,root_squash,all_squash,anonuid=1234,anongid=2345";
    let lines: Vec<&str> = run.stdout.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(
        lines,
        [
            format!("/srv/pxe/captures/52:54:00:12:34:56 192.168.0.50({opts})"),
            format!("/srv/pxe/captures/52:54:00:ab:cd:20 192.168.0.60({opts})"),
        ],
        "{}",
        run.stdout
    );
    // Devices without a fixed address get no export, and the admin is told which.
    assert!(
        run.stdout
            .contains("# 52:54:00:ab:cd:01 (s-abcd01): no fixed ip"),
        "{}",
        run.stdout
    );
    let run = run.stderr_has("warning: device 52:54:00:ab:cd:10 has no fixed ip");
    assert!(!run.stdout.contains("no_root_squash"));

    let j = site.ovl(&["export", "nfs", "--json"]).ok().json();
    assert_eq!(j["format"], "nfs");
    assert_eq!(j["anonuid"], 1234);
    let devices = j["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 5);
    assert_eq!(devices[0]["mac"], "52:54:00:12:34:56");
    assert_eq!(devices[0]["path"], "/srv/pxe/captures/52:54:00:12:34:56");
    assert!(devices[1]["line"].is_null());
}

#[test]
fn export_nfs_without_the_round_trip_or_with_a_bad_export_is_an_input_error() {
    let site = TestSite::example();
    site.ovl(&["export", "nfs"])
        .code(1)
        .stderr_has("ovl.toml: [boot] nfs is not set");
    let site = nfs_site("");
    let toml = std::fs::read_to_string(site.path("ovl.toml")).unwrap();
    site.write("ovl.toml", &toml.replace("/srv/pxe/captures", "srv/pxe"));
    site.ovl(&["export", "nfs"])
        .code(1)
        .stderr_has("expected HOST:/PATH");
    site.ovl(&["export", "frob"])
        .code(2)
        .stderr_has("expected dnsmasq, isc-dhcpd, kea or nfs");
}

#[test]
fn squashed_to_the_owner_of_captures_by_default() {
    let site = nfs_site("");
    std::fs::create_dir_all(site.path("captures")).unwrap();
    let meta = std::fs::metadata(site.path("captures")).unwrap();
    let run = site.ovl(&["export", "nfs"]).ok();
    assert!(
        run.stdout
            .contains(&format!("anonuid={},anongid={})", meta.uid(), meta.gid())),
        "{}",
        run.stdout
    );
}

#[test]
#[ignore = "needs root: chown of capture folders, and exportfs in a private mount namespace"]
fn exports_parse_with_exportfs_and_capture_folders_belong_to_the_squash_owner() {
    require_root("chown, mount namespace");
    require("exportfs");
    require("unshare");
    let site = nfs_site("nfs_anonuid = 1234\nnfs_anongid = 2345\n");
    site.ovl(&["build", "--all"]).ok();
    // ovl build made each device's folder: 0700, owned by the squash owner, so a device
    // writes its own captures and nobody else on the server reads them.
    for mac in ["52:54:00:12:34:56", "52:54:00:ab:cd:01"] {
        let m = std::fs::metadata(site.path(&format!("captures/{mac}"))).unwrap();
        assert_eq!(
            (m.uid(), m.gid(), m.mode() & 0o7777),
            (1234, 2345, 0o700),
            "{mac}"
        );
    }
    // Point the export at this site's captures/ folder, then let exportfs parse the lines as
    // the NFS server would: in a private mount namespace, with its own /etc/exports and state.
    let captures = site.path("captures").display().to_string();
    let toml = std::fs::read_to_string(site.path("ovl.toml")).unwrap();
    site.write("ovl.toml", &toml.replace("/srv/pxe/captures", &captures));
    let exports = site.ovl(&["export", "nfs"]).ok().stdout;
    site.write("exports.test", &exports);
    let state = tempfile::tempdir().unwrap();
    let script = format!(
        "mount --bind {exports} /etc/exports && mount --bind {state} /var/lib/nfs && \
         exportfs -ra && cat /var/lib/nfs/etab",
        exports = site.path("exports.test").display(),
        state = state.path().display(),
    );
    let out = std::process::Command::new("timeout")
        .args(["30", "unshare", "-m", "sh", "-c", &script])
        .output()
        .unwrap();
    let etab = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exportfs refused the lines: {}\n{exports}",
        String::from_utf8_lossy(&out.stderr)
    );
    let entries: Vec<(String, String)> = etab
        .lines()
        .map(|l| {
            let (path, client) = l.split_once('\t').unwrap();
            (path.to_string(), client.to_string())
        })
        .collect();
    assert_eq!(entries.len(), 2, "one export per fixed address:\n{etab}");
    for (path, client) in &entries {
        let mac = path.rsplit('/').next().unwrap();
        let ip = if mac == "52:54:00:12:34:56" {
            "192.168.0.50"
        } else {
            "192.168.0.60"
        };
        assert_eq!(path, &format!("{captures}/{mac}"));
        assert!(client.starts_with(&format!("{ip}(")), "{client}");
        for opt in [
            "rw",
            "sync",
            "secure",
            "root_squash",
            "all_squash",
            "anonuid=1234",
            "anongid=2345",
        ] {
            assert!(
                client.split(['(', ',', ')']).any(|o| o == opt),
                "{opt} missing: {client}"
            );
        }
        assert!(
            !client.contains("no_root_squash") && !client.contains("insecure"),
            "{client}"
        );
    }
}

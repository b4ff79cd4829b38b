//! The service files of `dist/`: the systemd unit passes `systemd-analyze verify` with no
//! complaint and scores as well hardened by `systemd-analyze security`; the OpenRC script is
//! valid shell with the settings the README promises.

use std::process::Command;

use crate::harness::proc::require;
use crate::harness::site::OVL;

fn dist(rel: &str) -> String {
    let path = format!("{}/dist/{rel}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The unit as shipped, with `ExecStart=` pointing at the binary under test (verify checks
/// that the program exists), in a scratch folder.
fn unit_under_test() -> (tempfile::TempDir, std::path::PathBuf) {
    let unit = dist("systemd/ovl.service");
    assert!(
        unit.contains("ExecStart=/usr/bin/ovl serve --watch"),
        "{unit}"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ovl.service");
    std::fs::write(&path, unit.replace("/usr/bin/ovl", OVL)).unwrap();
    (dir, path)
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    require("systemd-analyze");
    let (_dir, path) = unit_under_test();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // verify exits 0 on unknown keys too, so any message is a failure.
    assert!(out.status.success() && stderr.trim().is_empty(), "{out:?}");

    let unit = dist("systemd/ovl.service");
    for line in [
        "User=ovl",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE\n",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE\n",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=/srv/ovl",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK",
        "SystemCallFilter=@system-service",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(unit.contains(line), "{line} missing");
    }
}

#[test]
fn the_systemd_unit_is_well_hardened() {
    require("systemd-analyze");
    let (_dir, path) = unit_under_test();
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--threshold=20"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let level: f64 = text
        .lines()
        .find_map(|l| l.split("Overall exposure level for ovl.service: ").nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level: {out:?}"));
    assert!(level <= 2.0, "exposure {level}:\n{text}");
}

#[test]
fn the_openrc_service_is_valid_shell_and_runs_serve_unprivileged() {
    let initd = dist("openrc/ovl.initd");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ovl");
    std::fs::write(&path, &initd).unwrap();
    let out = Command::new("sh").arg("-n").arg(&path).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    for line in [
        "#!/sbin/openrc-run",
        "supervisor=\"supervise-daemon\"",
        "command_user=\"${OVL_USER}:${OVL_GROUP}\"",
        "capabilities=\"^cap_net_bind_service\"",
        "--signal HUP",
        "extra_started_commands=\"reload\"",
    ] {
        assert!(initd.contains(line), "{line} missing");
    }
    let confd = dist("openrc/ovl.confd");
    let out = Command::new("sh")
        .args(["-n", "-c", &confd])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(confd.contains("setcap cap_net_bind_service=+ep /usr/bin/ovl"));
}

//! `ovl export kea --ha`: both peers' configurations, as one JSON object on stdout or as
//! files in `--out DIR`, each accepted by `kea-dhcp4 -t` (which loads the HA and lease_cmds
//! hooks); and the usage errors. The pair serving devices is tested in namespaces
//! (`tests/serve/scaleout`).

use serde_json::Value;

use crate::harness::proc::{bounded, require};
use crate::harness::site::TestSite;

const PEERS: [&str; 4] = [
    "--ha-peer",
    "kea1=http://10.215.0.21:8001",
    "--ha-peer",
    "kea2=http://10.215.0.22:8001/",
];

/// A site with a pool and two devices (one reserved), and neither `[boot] server` nor an
/// interface: the HA pair gives no PXE answers, so it needs neither.
fn site() -> TestSite {
    let site = TestSite::new();
    site.write(
        "ovl.toml",
        "[serve.dhcp]\nrange = [\"10.215.0.100\", \"10.215.0.199\"]\n\
         netmask = \"255.255.255.0\"\nrouter = \"10.215.0.1\"\ndns = [\"10.215.0.1\"]\n",
    );
    site.write(
        "devices.toml",
        "[[device]]\nmac = \"52:54:00:5d:00:01\"\nprofile = \"S\"\nip = \"10.215.0.50\"\n\
         [[device]]\nmac = \"52:54:00:5d:00:02\"\nprofile = \"S\"\n",
    );
    site
}

/// `kea-dhcp4 -t FILE` must accept the file.
fn kea_check(file: &std::path::Path) {
    require("kea-dhcp4");
    let out = bounded(30, "kea-dhcp4")
        .arg("-t")
        .arg(file)
        .output()
        .expect("kea-dhcp4");
    assert!(
        out.status.success(),
        "kea-dhcp4 -t {}:\n{}{}\n---\n{}",
        file.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(file).unwrap_or_default()
    );
}

/// What every peer's configuration holds, `name` being its own.
fn check_peer(doc: &Value, name: &str) {
    let d = &doc["Dhcp4"];
    assert!(d.get("client-classes").is_none(), "no PXE classes: {d}");
    assert!(d.get("next-server").is_none(), "no next-server: {d}");
    assert_eq!(d["multi-threading"]["enable-multi-threading"], true);
    let hooks = d["hooks-libraries"].as_array().expect("hooks");
    assert!(
        hooks[0]["library"]
            .as_str()
            .unwrap()
            .ends_with("/libdhcp_lease_cmds.so")
    );
    assert!(
        hooks[1]["library"]
            .as_str()
            .unwrap()
            .ends_with("/libdhcp_ha.so")
    );
    let ha = &hooks[1]["parameters"]["high-availability"][0];
    assert_eq!(ha["this-server-name"], name);
    assert_eq!(ha["mode"], "hot-standby");
    assert_eq!(ha["multi-threading"]["http-dedicated-listener"], true);
    let peers: Vec<(String, String, String)> = ha["peers"]
        .as_array()
        .expect("peers")
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["url"].as_str().unwrap().to_string(),
                p["role"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        peers,
        [
            (
                "kea1".into(),
                "http://10.215.0.21:8001/".into(),
                "primary".into()
            ),
            (
                "kea2".into(),
                "http://10.215.0.22:8001/".into(),
                "standby".into()
            ),
        ]
    );
    let subnet = &d["subnet4"][0];
    assert_eq!(subnet["subnet"], "10.215.0.0/24");
    assert_eq!(subnet["pools"][0]["pool"], "10.215.0.100 - 10.215.0.199");
    let reservations = subnet["reservations"].as_array().expect("reservations");
    assert_eq!(reservations.len(), 2);
    assert_eq!(reservations[0]["hw-address"], "52:54:00:5d:00:01");
    assert_eq!(reservations[0]["ip-address"], "10.215.0.50");
}

#[test]
fn kea_ha_prints_both_peers_configs_each_accepted_by_kea() {
    let site = site();
    let mut args = vec!["export", "kea", "--ha"];
    args.extend(PEERS);
    let run = site.ovl(&args).ok();
    let all: Value = serde_json::from_str(&run.stdout).expect("one JSON object");
    let names: Vec<&String> = all.as_object().expect("object").keys().collect();
    assert_eq!(names, ["kea1", "kea2"]);
    for name in ["kea1", "kea2"] {
        check_peer(&all[name], name);
        let file = site.scratch(&format!("{name}.json"));
        std::fs::write(&file, all[name].to_string()).unwrap();
        kea_check(&file);
    }
    args.insert(0, "--json");
    let wrapped = site.ovl(&args).ok().json();
    assert_eq!(wrapped["format"], "kea");
    assert_eq!(wrapped["ha"], true);
    assert_eq!(wrapped["configs"], all);
}

#[test]
fn kea_ha_out_writes_one_file_per_peer_that_kea_accepts_as_written() {
    let site = site();
    let out = site.scratch("kea");
    let mut args = vec![
        "export",
        "kea",
        "--ha",
        "--kea-hooks",
        "/usr/lib/x86_64-linux-gnu/kea/hooks",
    ];
    args.extend(PEERS);
    args.extend(["--out", out.to_str().unwrap()]);
    let run = site.ovl(&args).ok();
    for name in ["kea1", "kea2"] {
        let file = out.join(format!("kea-dhcp4-{name}.conf"));
        assert!(
            run.stdout.contains(&file.display().to_string()),
            "{}",
            run.stdout
        );
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(
            text.starts_with("// Generated by `ovl export kea --ha`"),
            "{text}"
        );
        let json: String = text.lines().filter(|l| !l.starts_with("//")).collect();
        check_peer(&serde_json::from_str(&json).unwrap(), name);
        if cfg!(target_arch = "x86_64") {
            kea_check(&file);
        }
    }
    // Nothing but the two files (no temporaries left).
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 2);
}

#[test]
fn kea_ha_usage_errors_exit_2_and_a_site_without_a_pool_exits_1() {
    let site = site();
    let cases: [&[&str]; 7] = [
        &["export", "kea", "--ha"],
        &[
            "export",
            "kea",
            "--ha",
            "--ha-peer",
            "kea1=http://10.215.0.21:8001/",
        ],
        &[
            "export",
            "kea",
            "--ha-peer",
            "kea1=http://10.215.0.21:8001/",
        ],
        &[
            "export",
            "kea",
            "--ha",
            "--ha-peer",
            "kea1=http://kea1.lan:8001/",
            "--ha-peer",
            "b=http://10.215.0.22:8001/",
        ],
        &[
            "export",
            "kea",
            "--ha",
            "--snippet",
            PEERS[0],
            PEERS[1],
            PEERS[2],
            PEERS[3],
        ],
        &[
            "export", "dnsmasq", "--ha", PEERS[0], PEERS[1], PEERS[2], PEERS[3],
        ],
        &[
            "export",
            "kea",
            "--ha",
            PEERS[0],
            PEERS[1],
            "--ha-peer",
            "kea1=http://10.215.0.23:8001/",
        ],
    ];
    for args in cases {
        let run = site.ovl(args).code(2);
        eprintln!("{args:?}: {}", run.stderr);
    }
    site.write("ovl.toml", "[boot]\nserver = \"10.215.0.2\"\n");
    let mut args = vec!["export", "kea", "--ha"];
    args.extend(PEERS);
    site.ovl(&args)
        .code(1)
        .stderr_has("ovl.toml")
        .stderr_has("range");
}

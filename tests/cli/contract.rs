//! JSON as a contract (`docs/json.md`): every command's JSON carries `"schema": 1`, states
//! come from one vocabulary, errors are objects; `--json` is refused where it means nothing.
//! And errors that name the thing: undefined template variables with a did-you-mean, inline
//! templates at their TOML line, one error of many devices printed once; `ovl show`'s
//! resolved vars, packages, services and network.

use serde_json::{Value, json};

use crate::harness::site::{MAC, TestSite};

/// The keys of every error object.
const ERROR_KEYS: [&str; 7] = ["column", "file", "kind", "line", "mac", "message", "text"];

/// The sorted keys of a JSON object.
fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect();
    k.sort();
    k
}

#[test]
fn every_json_output_carries_the_schema() {
    let site = TestSite::example();
    let dir = tempfile::tempdir().unwrap();
    let new_site = dir.path().join("new");
    let man_dir = dir.path().join("man");
    let runs: Vec<Vec<&str>> = vec![
        vec!["init", new_site.to_str().unwrap()],
        vec!["check"],
        vec!["build", "--all", "--dry-run"],
        vec!["build", "--all"],
        vec!["list", "--all"],
        vec!["show", "--mac", MAC],
        vec!["diff", "--all"],
        vec!["drift", "--all"],
        vec!["prune", "--dry-run"],
        vec!["device", "set", MAC, "--var", "screen=portrait"],
        vec!["export", "dnsmasq"],
        vec!["export", "nfs"],
        vec!["man", "--dir", man_dir.to_str().unwrap()],
        vec!["show", "--mac", "02:00:00:00:00:01"],
    ];
    for args in runs {
        let mut all = vec!["--json"];
        all.extend(&args);
        let r = site.ovl(&all);
        let j = r.json();
        assert_eq!(j["schema"], 1, "{args:?}: {j}");
    }
}

#[test]
fn a_failed_device_is_failed_everywhere_with_an_error_object() {
    let site = TestSite::example_built();
    site.write("overlays/special/hall/etc/bad.j2", "{{ vars.screne }}\n");
    let hall = "52:54:00:12:34:56";
    let check_error = |e: &Value| {
        let mut k = keys(e);
        k.retain(|k| k != "devices");
        assert_eq!(k, ERROR_KEYS, "{e}");
        assert_eq!(e["kind"], "input");
        assert!(
            e["file"]
                .as_str()
                .unwrap()
                .ends_with("overlays/special/hall/etc/bad.j2")
        );
        assert_eq!(
            (e["line"].as_u64(), e["column"].as_u64()),
            (Some(1), Some(4))
        );
        assert_eq!(
            e["message"],
            "template: undefined value `vars.screne`; did you mean `vars.screen`?"
        );
    };
    let j = site.ovl(&["--json", "build", "--all"]).code(1).json();
    let d = &j["devices"][0];
    assert_eq!(
        (d["mac"].as_str(), d["state"].as_str()),
        (Some(hall), Some("failed"))
    );
    check_error(&d["error"]);
    assert_eq!(d["error"]["mac"], hall);
    assert_eq!(j["devices"][1]["error"], Value::Null);
    assert_eq!(j["devices"][1]["state"], "unchanged");
    assert_eq!(j["errors"][0]["devices"], json!([hall]));
    let j = site.ovl(&["--json", "list"]).code(1).json();
    assert_eq!(j["devices"][0]["state"], "failed");
    assert_eq!(j["devices"][0]["published"], true);
    check_error(&j["devices"][0]["error"]);
    let j = site.ovl(&["--json", "diff", "--mac", hall]).code(1).json();
    assert_eq!(j["devices"][0]["state"], "failed");
    check_error(&j["devices"][0]["error"]);
    let j = site.ovl(&["--json", "drift", "--mac", hall]).code(1).json();
    assert_eq!(j["devices"][0]["capture"], Value::Null);
    check_error(&j["devices"][0]["error"]);
    assert_eq!(j["errors"][0]["devices"], json!([hall]));
    let j = site.ovl(&["--json", "check"]).code(1).json();
    check_error(&j["errors"][0]);
    // A command that fails as a whole prints {"schema", "error"}.
    let j = site.ovl(&["--json", "show", "--mac", hall]).code(1).json();
    assert_eq!(keys(&j), ["error", "schema"]);
    check_error(&j["error"]);
    let j = site
        .ovl(&[
            "--json",
            "show",
            "--mac",
            "02:00:00:00:00:01",
            "--profile",
            "XXL",
        ])
        .code(2)
        .json();
    assert_eq!(j["error"]["kind"], "usage");
    assert_eq!(j["error"]["file"], Value::Null);
}

#[test]
fn json_is_refused_where_it_means_nothing() {
    let site = TestSite::new();
    for args in [
        &["--json", "serve", "--http", "127.0.0.1:0", "--tftp", "off"][..],
        &["man", "--json"],
        &["man", "build", "--json"],
        &["completions", "bash", "--json"],
    ] {
        site.ovl(args)
            .code(2)
            .stderr_has("--json: `ovl ")
            .stderr_has("` prints no results to put in JSON");
    }
    site.ovl(&["man"]).ok();
}

#[test]
fn inline_templates_are_located_at_their_toml_line() {
    let site = TestSite::new();
    site.write(
        "profiles/S.toml",
        "overlays = [\"base\"]\nhostname = \"s-{{ mac_suffix }}\"\n\n[vars]\nstart_url = \"http://x\"\n\n[files.\"etc/motd\"]\nmode = \"0644\"\ncontent = \"\"\"\nWelcome to {{ hostname }}\nstart at {{ vars.start_ulr }}\n\"\"\"\n",
    );
    site.ovl(&["build", "--all"]).code(1).stderr_has(&format!(
        "{}:11:13: template in files.\"etc/motd\".content: undefined value `vars.start_ulr`; did you mean `vars.start_url`? (device {MAC})",
        site.path("profiles/S.toml").display()
    ));
    site.write(
        "profiles/S.toml",
        "overlays = [\"base\"]\nhostname = \"s-{{ mac_sufix }}\"\n",
    );
    site.ovl(&["check"]).code(1).stderr_has(&format!(
        "{}:2:18: template in hostname: undefined value `mac_sufix`; did you mean `mac_suffix`?",
        site.path("profiles/S.toml").display()
    ));
}

#[test]
fn one_error_of_many_devices_is_printed_once() {
    let site = TestSite::example();
    site.write("overlays/base/etc/app.conf.j2", "url={{ mac_sufix }}\n");
    let r = site.ovl(&["build", "--all"]).code(1);
    let lines: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.starts_with("error:"))
        .collect();
    assert_eq!(
        lines,
        [format!(
            "error: {}:1:8: template: undefined value `mac_sufix`; did you mean `mac_suffix`? \
             (5 devices: 52:54:00:12:34:56, 52:54:00:ab:cd:01, 52:54:00:ab:cd:02, 52:54:00:ab:cd:10, 52:54:00:ab:cd:20)",
            site.path("overlays/base/etc/app.conf.j2").display()
        )],
        "{}",
        r.stderr
    );
    // XL's devices have a start_url, S's none: two errors, each once.
    site.write(
        "overlays/base/etc/app.conf.j2",
        "url={{ vars.start_ulr }}\n",
    );
    let r = site.ovl(&["check"]).code(1);
    let lines: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.starts_with("error:"))
        .collect();
    assert_eq!(lines.len(), 2, "{}", r.stderr);
    assert!(
        lines[0].ends_with(
            "undefined value `vars.start_ulr`; did you mean `vars.start_url`? \
             (3 devices: 52:54:00:12:34:56, 52:54:00:ab:cd:10, 52:54:00:ab:cd:20)"
        ) && lines[1].ends_with(
            "undefined value `vars.start_ulr` (defined: vars.ntp_server, vars.timezone) \
             (2 devices: 52:54:00:ab:cd:01, 52:54:00:ab:cd:02)"
        ),
        "{}",
        r.stderr
    );
    let j = site.ovl(&["--json", "list"]).code(1).json();
    assert_eq!(j["errors"].as_array().unwrap().len(), 2);
    assert_eq!(j["errors"][1]["devices"].as_array().unwrap().len(), 2);
}

#[test]
fn show_prints_vars_packages_services_and_network() {
    let site = TestSite::example();
    let lab = "52:54:00:ab:cd:20";
    let r = site.ovl(&["show", "--mac", lab]).ok();
    for line in [
        "vars:        ntp_server = \"pool.ntp.org\", screen = \"landscape\", start_url = \"http://intranet.example/lab\", timezone = \"Europe/Paris\"\n",
        "packages:    alpine-base chromium chrony font-dejavu minicom nano openssh picocom tzdata xf86-video-modesetting xorg-server\n",
        "services default  chronyd local sshd\n",
        "services sysinit  devfs dmesg hwdrivers mdev modloop\n",
        "etc/network/interfaces:\n    auto lo\n",
        "    iface eth0 inet dhcp\n        hostname lab-bench\n",
    ] {
        assert!(r.stdout.contains(line), "lacks {line:?}:\n{}", r.stdout);
    }
    let j = site.ovl(&["show", "--json", "--mac", lab]).ok().json();
    assert_eq!(j["vars"]["start_url"], "http://intranet.example/lab");
    assert_eq!(
        j["services"]["default"],
        json!(["chronyd", "local", "sshd"])
    );
    assert_eq!(j["services"]["boot"].as_array().unwrap().len(), 7);
    assert!(
        j["packages"]
            .as_array()
            .unwrap()
            .contains(&json!("minicom"))
    );
    // XL drops nano, special brings it back.
    assert!(j["packages"].as_array().unwrap().contains(&json!("nano")));
    assert!(
        j["network"]["interfaces"]
            .as_str()
            .unwrap()
            .contains("hostname lab-bench")
    );
    assert_eq!(j["network"]["ip"], "192.168.0.60");
    assert_eq!(j["network"]["resolv_conf"], Value::Null);
}

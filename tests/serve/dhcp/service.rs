//! `ovl serve` as the service units run it: a non-root user with only
//! `CAP_NET_BIND_SERVICE` (setpriv, like systemd's `AmbientCapabilities=` and OpenRC's
//! `capabilities=`), binding DHCP 67, TFTP 69 and HTTP 80 in the server namespace and serving
//! a client (udhcpc, tftp-hpa, curl); SIGHUP reloads the site; `/metrics` passes Prometheus'
//! own parser; the status page, run in headless Chromium, shows the client's boot events.

use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::lab::{Lab, SERVER_IF};
use super::{last_event, udhcpc, udhcpc_script};
use crate::harness::proc::{KillOnDrop, require, wait_for_text};
use crate::harness::site::{OVL, TestSite};
use crate::harness::web::{chromium, prometheus_parse};

/// `nobody`: a user with no rights on anything but what the test gives it.
const UID: &str = "65534";
const CLIENT_MAC: &str = "52:54:00:5e:00:01";

/// The effective capabilities and real uid of process `pid`, from `/proc/PID/status`.
fn caps_and_uid(pid: u32) -> (String, String) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.split_whitespace().next().unwrap_or("").to_owned())
            .unwrap_or_default()
    };
    (field("CapEff:"), field("Uid:"))
}

/// The built `ovl serve` as `nobody` with only `CAP_NET_BIND_SERVICE` binds 67, 69 and 80,
/// gives a lease, a file over TFTP and the script over HTTP, reloads on SIGHUP, counts it
/// all in `/metrics` and shows it on the status page.
#[test]
#[ignore = "needs root: network namespaces, setpriv"]
fn serve_runs_unprivileged_with_only_the_bind_capability() {
    require("setpriv");
    require("chromium");
    let lab = Lab::new();
    let site = TestSite::example();
    site.write(
        "ovl.toml",
        "[serve]\nhttp = \"0.0.0.0:80\"\ntftp = \"0.0.0.0:69\"\n\
         [serve.dhcp]\nmode = \"full\"\nrange = [\"10.213.1.100\", \"10.213.1.150\"]\n\
         netmask = \"255.255.255.0\"\nlease_time = 300\n",
    );
    let devices = format!(
        "[[device]]\nmac = \"{CLIENT_MAC}\"\nprofile = \"S\"\nhostname = \"svc-one\"\n\n\
         [[device]]\nmac = \"52:54:00:5e:00:02\"\nprofile = \"XL\"\nhostname = \"kiosk-two\"\n\
         ip = \"10.213.1.20\"\n"
    );
    site.write("devices.toml", &devices);
    site.write_bytes("undionly.kpxe", &[0x55; 70_000]);
    // The site belongs to the service's user; the folder above it is only traversed.
    std::fs::set_permissions(site.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let owner = format!("{UID}:{UID}");
    crate::harness::proc::must(&["chown", "-R", &owner, &site.root().display().to_string()]);

    let log = lab.path("serve.log");
    let mut server = KillOnDrop::spawn(
        lab.server_ns
            .command("setpriv")
            .args([
                &format!("--reuid={UID}"),
                &format!("--regid={UID}"),
                "--clear-groups",
                "--inh-caps=-all,+net_bind_service",
                "--ambient-caps=-all,+net_bind_service",
                "--bounding-set=-all,+net_bind_service",
                "--no-new-privs",
                OVL,
                "serve",
                "--watch",
                "--interface",
                SERVER_IF,
                "--log-format",
                "json",
            ])
            .env("OVL_SITE", site.root())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap()),
    );
    let serve_log = || std::fs::read_to_string(&log).unwrap_or_default();
    for service in ["http", "tftp", "dhcp"] {
        let needle = format!("\"service\":\"{service}\"");
        wait_for_text(&log, &needle, Duration::from_secs(20), None);
    }
    let pid = server.0.id();
    let (cap_eff, uid) = caps_and_uid(pid);
    // CAP_NET_BIND_SERVICE is bit 10: 0x400, nothing else.
    assert_eq!(cap_eff, "0000000000000400", "{}", serve_log());
    assert_eq!(uid, UID);
    let ss = lab.server_ns.run(10, &["ss", "-Hlnup"]);
    let ss = String::from_utf8_lossy(&ss.stdout).into_owned();
    assert!(ss.contains(":67 ") && ss.contains(":69 "), "{ss}");

    // DHCP: a lease from the pool; TFTP: the iPXE binary; HTTP: the script.
    lab.set_client_mac(CLIENT_MAC);
    let (script, ulog) = udhcpc_script(&lab, "svc");
    let out = udhcpc(&lab, &script, &[]);
    assert!(out.status.success(), "{out:?}\n{}", serve_log());
    let bound = last_event(&ulog, "bound");
    let leased = bound["ip"].clone();
    let tftp_out = lab.path("undionly.kpxe");
    let got = lab.client(
        30,
        &[
            "tftp",
            "10.213.1.1",
            "-m",
            "binary",
            "-c",
            "get",
            "undionly.kpxe",
            &tftp_out.display().to_string(),
        ],
    );
    assert!(got.status.success(), "{got:?}");
    assert_eq!(std::fs::metadata(&tftp_out).unwrap().len(), 70_000);
    let curl = |path: &str| -> String {
        let out = lab.client(15, &["curl", "-sf", &format!("http://10.213.1.1{path}")]);
        assert!(
            out.status.success(),
            "curl {path}: {out:?}\n{}",
            serve_log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let script_text = curl(&format!("/boot.ipxe?mac={CLIENT_MAC}"));
    assert!(script_text.starts_with("#!ipxe"), "{script_text}");

    // The page shows the device's progress so far, drawn by its script.
    let dom = chromium(
        lab.client_ns.name(),
        "http://10.213.1.1/",
        lab.dir.path(),
        None,
    );
    let row = dom
        .split("<tr ")
        .find(|r| r.contains(&format!("data-mac=\"{CLIENT_MAC}\"")))
        .unwrap_or_else(|| panic!("no row for the client: {dom}"));
    assert!(row.contains("svc-one") && row.contains(&leased), "{row}");
    for stage in ["dhcp", "tftp", "script"] {
        let done = format!("class=\"stage done\" data-stage=\"{stage}\"");
        assert!(row.contains(&done), "{stage} not done: {row}");
    }
    assert!(row.contains("data-state=\"booting\""), "{row}");
    assert!(
        dom.contains("data-updates=\""),
        "the script did not run: {dom}"
    );
    // The filter, preset by the URL: only the other device is shown.
    let filtered = chromium(
        lab.client_ns.name(),
        "http://10.213.1.1/?q=kiosk-two",
        lab.dir.path(),
        None,
    );
    let hidden = filtered
        .split("<tr ")
        .find(|r| r.contains(&format!("data-mac=\"{CLIENT_MAC}\"")))
        .unwrap();
    assert!(hidden.contains("class=\"hidden\""), "{hidden}");
    assert!(
        filtered.contains("1 of 2 devices shown, 1 booting now"),
        "{filtered}"
    );
    let booting = chromium(
        lab.client_ns.name(),
        "http://10.213.1.1/?state=booting",
        lab.dir.path(),
        None,
    );
    assert!(booting.contains("1 of 2 devices shown"), "{booting}");
    // A screenshot of the same page (README's docs/status-page.png is one, made with
    // OVL_SCREENSHOT=docs/status-page.png).
    let shot = std::env::var_os("OVL_SCREENSHOT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| lab.path("status-page.png"));
    chromium(
        lab.client_ns.name(),
        "http://10.213.1.1/",
        lab.dir.path(),
        Some(&shot),
    );
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 1000,
        "{}",
        png.len()
    );

    // /metrics, read by Prometheus' parser, counted what happened.
    let metrics = prometheus_parse(&curl("/metrics"));
    for sample in [
        "ovl_dhcp_replies_total{type=offer} 1.0",
        "ovl_dhcp_replies_total{type=ack} 1.0",
        "ovl_boot_events_total{kind=dhcp_ack,status=0} 1.0",
        "ovl_boot_events_total{kind=ipxe,status=0} 1.0",
        "ovl_boot_events_total{kind=script,status=200} 1.0",
        "ovl_served_bytes_total{protocol=tftp} 70000.0",
        "ovl_dhcp_pool_addresses{} 51.0",
        "ovl_dhcp_pool_leased{} 1.0",
        "ovl_reload_errors_total{} 0.0",
        "ovl_watch_build_duration_seconds_count{phase=build} 1.0",
    ] {
        assert!(metrics.contains(sample), "{sample} missing:\n{metrics}");
    }

    // SIGHUP: devices.toml is read again, the process stays.
    let renamed = devices.replace("svc-one", "svc-renamed");
    std::fs::write(site.path("devices.toml"), renamed).unwrap();
    server.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if curl("/status").contains("svc-renamed") {
            break;
        }
        assert!(Instant::now() < deadline, "no reload: {}", serve_log());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        serve_log().contains("\"event\":\"reload\""),
        "{}",
        serve_log()
    );
    assert!(server.0.try_wait().unwrap().is_none(), "SIGHUP ended serve");
    // A broken site is refused and counted; the last good one stays.
    std::fs::write(site.path("devices.toml"), "[[device]\n").unwrap();
    server.signal(libc::SIGHUP);
    wait_for_text(
        &log,
        "\"event\":\"reload_failed\"",
        Duration::from_secs(15),
        None,
    );
    let metrics = prometheus_parse(&curl("/metrics"));
    // Counted by the SIGHUP reload and by watch mode's own attempt: at least one.
    let errors: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("ovl_reload_errors_total{} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(errors >= 1.0, "{metrics}");
    assert!(curl("/status").contains("svc-renamed"));
    // A changed listen address needs a restart, and the log says so.
    let toml = std::fs::read_to_string(site.path("ovl.toml")).unwrap();
    std::fs::write(site.path("devices.toml"), &devices).unwrap();
    std::fs::write(
        site.path("ovl.toml"),
        toml.replace("0.0.0.0:69", "0.0.0.0:6969"),
    )
    .unwrap();
    server.signal(libc::SIGHUP);
    let restart = wait_for_text(
        &log,
        "\"event\":\"reload_needs_restart\"",
        Duration::from_secs(15),
        None,
    );
    assert!(restart.contains("[serve] tftp"), "{restart}");

    server.signal(libc::SIGTERM);
    let status = server
        .wait_exit(Duration::from_secs(15))
        .expect("serve did not stop");
    assert!(status.success(), "{status:?}\n{}", serve_log());
}

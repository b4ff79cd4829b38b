//! From zero to a booting fleet (README), end to end: an empty folder, `ovl init`, `ovl fetch`
//! from a local mirror laid out like Alpine's whose netboot tarball holds the lab's bootable
//! kernel and initramfs, `ovl serve` as an unprivileged user with only
//! `CAP_NET_BIND_SERVICE`, and a QEMU device that boots into Alpine's init and applies its
//! apkovl; the status page (headless Chromium) shows it booted and `/metrics` counted it.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use crate::checks::assert_applied;
use crate::harness::alpine::Ids;
use crate::harness::mirror::Mirror;
use crate::harness::proc::must;
use crate::harness::qemu::Firmware;
use crate::harness::site::TestSite;
use crate::harness::web::{chromium, prometheus_parse};
use crate::initramfs::boot_files;
use crate::lab::Lab;
use crate::{BIOS_MAC, SERVER, lock};

/// `nobody`.
const UID: &str = "65534";

#[test]
#[ignore = "needs root and QEMU: a network namespace with a tap port, a VM booting under TCG"]
fn from_an_empty_folder_to_a_booted_device_served_without_root() {
    let _vm = lock();
    let files = boot_files();
    let mirror = Mirror::start();
    let mut netboot = BTreeMap::new();
    netboot.insert("vmlinuz-lts".to_string(), fs::read(&files.vmlinuz).unwrap());
    netboot.insert(
        "initramfs-lts".to_string(),
        fs::read(&files.initramfs).unwrap(),
    );
    netboot.insert("modloop-lts".to_string(), vec![0x5a; 4096]);
    netboot.insert("config-lts".to_string(), b"CONFIG_64BIT=y\n".to_vec());
    mirror.alpine_netboot("v3.20", "3.20.3", "x86_64", netboot);

    // An empty folder; `ovl init`; the settings an admin edits.
    let site = TestSite::empty();
    assert_eq!(fs::read_dir(site.root()).unwrap().count(), 0);
    let init = crate::harness::site::ovl()
        .arg("init")
        .arg(site.root())
        .output()
        .unwrap();
    assert!(init.status.success(), "{init:?}");
    site.write(
        "ovl.toml",
        &format!(
            "[alpine]\nmirror = \"{url}\"\n\
             [boot]\nkernel_args = [\"console=ttyS0\", \"panic=-1\"]\n\
             [serve]\nhttp = \"{SERVER}:80\"\ntftp = \"{SERVER}:69\"\n\
             [serve.dhcp]\nrange = [\"10.214.0.100\", \"10.214.0.150\"]\n\
             netmask = \"255.255.255.0\"\nlease_time = 600\n",
            url = mirror.url()
        ),
    );
    site.write(
        "devices.toml",
        &format!(
            "[[device]]\nmac = \"{BIOS_MAC}\"\nprofile = \"XL\"\nhostname = \"kiosk-zero\"\n\
             ip = \"10.214.0.50\"\n"
        ),
    );
    // `ovl fetch`: Alpine's files from the mirror, iPXE from Debian's package.
    site.ovl(&["fetch"]).ok();
    assert_eq!(
        fs::read(site.path("vmlinuz-lts")).unwrap(),
        fs::read(&files.vmlinuz).unwrap()
    );
    assert!(site.path("undionly.kpxe").is_file());
    site.ovl(&["check"]).ok();
    site.ovl(&["build", "--all"]).ok();

    // The service's user owns the site; `ovl serve --watch` as that user, only the bind
    // capability (what the systemd unit and the OpenRC service give it).
    fs::set_permissions(site.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    must(&[
        "chown",
        "-R",
        &format!("{UID}:{UID}"),
        &site.root().display().to_string(),
    ]);
    let mut lab = Lab::new();
    let uid = format!("--reuid={UID}");
    let gid = format!("--regid={UID}");
    let log = lab.serve_with(
        &site,
        &[
            "setpriv",
            &uid,
            &gid,
            "--clear-groups",
            "--inh-caps=-all,+net_bind_service",
            "--ambient-caps=-all,+net_bind_service",
            "--bounding-set=-all,+net_bind_service",
            "--no-new-privs",
        ],
        &["--watch"],
    );

    let boot = lab.boot(Firmware::Bios, BIOS_MAC, Duration::from_secs(180));
    eprintln!(
        "TIMING: from zero, BIOS power-on to applied apkovl: {:.1}s",
        boot.applied.as_secs_f64()
    );
    assert_applied(&site, BIOS_MAC, &boot.record, &Ids::of_minirootfs());

    // The page, after its script ran: the device booted, every stage of its chain done.
    let scratch = lab.path("chromium");
    fs::create_dir_all(&scratch).unwrap();
    let url = format!("http://{SERVER}/");
    let dom = chromium(lab.ns.name(), &url, &scratch, None);
    let row = dom
        .split("<tr ")
        .find(|r| r.contains(&format!("data-mac=\"{BIOS_MAC}\"")))
        .unwrap_or_else(|| panic!("no row for the device: {dom}"));
    assert!(row.contains("data-state=\"booted\""), "{row}");
    assert!(
        row.contains("kiosk-zero") && row.contains("10.214.0.50"),
        "{row}"
    );
    for stage in ["dhcp", "script", "kernel", "initramfs", "config"] {
        let done = format!("class=\"stage done\" data-stage=\"{stage}\"");
        assert!(row.contains(&done), "{stage} not done: {row}");
    }
    if let Some(shot) = std::env::var_os("OVL_SCREENSHOT") {
        chromium(
            lab.ns.name(),
            &url,
            &scratch,
            Some(std::path::Path::new(&shot)),
        );
    }

    // /metrics, read by Prometheus' parser, counted the boot.
    let out = lab
        .ns
        .run(20, &["curl", "-sf", &format!("http://{SERVER}/metrics")]);
    assert!(out.status.success(), "{out:?}");
    let metrics = prometheus_parse(&String::from_utf8_lossy(&out.stdout));
    for sample in [
        "ovl_boot_events_total{kind=config_served,status=200} 1.0",
        "ovl_boot_events_total{kind=kernel,status=200} 1.0",
        "ovl_boot_events_total{kind=initramfs,status=200} 1.0",
    ] {
        assert!(metrics.contains(sample), "{sample} missing:\n{metrics}");
    }
    assert!(
        metrics.contains("ovl_boot_events_total{kind=dhcp_ack,status=0}"),
        "{metrics}"
    );
    let serve_log = fs::read_to_string(&log).unwrap_or_default();
    assert!(!serve_log.contains("\"level\":\"ERROR\""), "{serve_log}");
}

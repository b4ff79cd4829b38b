//! `ovl export`: each configuration is accepted by the real program's own checker
//! (`dnsmasq --test`, `dhcpd -t`, `kea-dhcp4 -t`), and its key lines are pinned.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use ovl::mac::Mac;
use ovl::serve::dhcp::default_boot_files;
use ovl::serve::dhcp::export::{DhcpExport, ExportFormat, ExportHost, export};

fn site() -> DhcpExport {
    DhcpExport {
        server_ip: Ipv4Addr::new(192, 168, 0, 2),
        subnet: Ipv4Addr::new(192, 168, 0, 0),
        netmask: Ipv4Addr::new(255, 255, 255, 0),
        range: Some((
            Ipv4Addr::new(192, 168, 0, 3),
            Ipv4Addr::new(192, 168, 0, 253),
        )),
        router: Some(Ipv4Addr::new(192, 168, 0, 1)),
        dns: vec![Ipv4Addr::new(192, 168, 0, 1), Ipv4Addr::new(9, 9, 9, 9)],
        lease_time: 600,
        hosts: vec![
            ExportHost {
                mac: Mac([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]),
                hostname: "kiosk-hall".into(),
                ip: Some(Ipv4Addr::new(192, 168, 0, 50)),
            },
            ExportHost {
                mac: Mac([0x52, 0x54, 0x00, 0x12, 0x34, 0x57]),
                hostname: "xl_123457".into(),
                ip: None,
            },
        ],
        boot_files: default_boot_files(),
        ipxe_script_url: "http://192.168.0.2/boot.ipxe".into(),
    }
}

fn have(program: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        eprintln!("SKIPPED: {program} is not installed; its check did not run");
    }
    found
}

fn check(args: &[&str], file: &Path) -> Output {
    let mut cmd = Command::new("timeout");
    cmd.arg("30").args(args).arg(file).stdin(Stdio::null());
    let out = cmd.output().expect("run checker");
    assert!(
        out.status.success(),
        "{args:?} {} rejected the config:\n{}\n{}\n--- config ---\n{}",
        file.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(file).unwrap_or_default()
    );
    out
}

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("write config");
    path
}

fn lines(text: &str) -> Vec<&str> {
    text.lines().map(str::trim).collect()
}

#[test]
fn dnsmasq_config_passes_dnsmasq_test() {
    let text = export(ExportFormat::Dnsmasq, &site());
    let l = lines(&text);
    for expected in [
        "dhcp-range=192.168.0.3,192.168.0.253,255.255.255.0,600",
        "dhcp-option=option:router,192.168.0.1",
        "dhcp-option=option:dns-server,192.168.0.1,9.9.9.9",
        "dhcp-userclass=set:ipxe,iPXE",
        "dhcp-match=set:ipxe,175",
        "dhcp-boot=tag:ipxe,http://192.168.0.2/boot.ipxe",
        "dhcp-match=set:arch-7,option:client-arch,7",
        "dhcp-vendorclass=set:pxe,PXEClient",
        "dhcp-boot=tag:pxe,tag:!ipxe,tag:arch-7,ipxe.efi,,192.168.0.2",
        "dhcp-boot=tag:pxe,tag:!ipxe,tag:arch-0,undionly.kpxe,,192.168.0.2",
        "dhcp-boot=tag:pxe,tag:!ipxe,tag:!arch-0,tag:!arch-6,tag:!arch-7,tag:!arch-9,undionly.kpxe,,192.168.0.2",
        "dhcp-host=52:54:00:12:34:56,192.168.0.50,kiosk-hall",
        "dhcp-host=52:54:00:12:34:57,xl-123457",
    ] {
        assert!(l.contains(&expected), "missing {expected:?} in\n{text}");
    }
    if !have("dnsmasq") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = write(&dir, "dnsmasq.conf", &text);
    let out = check(&["dnsmasq", "--test", "-C"], &file);
    assert!(String::from_utf8_lossy(&out.stderr).contains("syntax check OK"));
}

#[test]
fn isc_dhcpd_config_passes_dhcpd_t() {
    let text = export(ExportFormat::IscDhcpd, &site());
    let l = lines(&text);
    for expected in [
        "default-lease-time 600;",
        "allow booting;",
        "subnet 192.168.0.0 netmask 255.255.255.0 {",
        "range 192.168.0.3 192.168.0.253;",
        "option routers 192.168.0.1;",
        "option domain-name-servers 192.168.0.1, 9.9.9.9;",
        "next-server 192.168.0.2;",
        "if exists ipxe-encap-opts or (exists user-class and option user-class = \"iPXE\") {",
        "filename \"http://192.168.0.2/boot.ipxe\";",
        "} elsif substring(option vendor-class-identifier, 0, 9) = \"PXEClient\" {",
        "if not exists client-arch or option client-arch = 00:00 {",
        "filename \"undionly.kpxe\";",
        "} elsif option client-arch = 00:07 {",
        "filename \"ipxe.efi\";",
        "host kiosk-hall {",
        "hardware ethernet 52:54:00:12:34:56;",
        "fixed-address 192.168.0.50;",
        "host xl-123457 {",
    ] {
        assert!(l.contains(&expected), "missing {expected:?} in\n{text}");
    }
    if !have("dhcpd") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = write(&dir, "dhcpd.conf", &text);
    let leases = write(&dir, "dhcpd.leases", "");
    let pid = dir.path().join("dhcpd.pid");
    check(
        &[
            "dhcpd",
            "-4",
            "-t",
            "-lf",
            leases.to_str().unwrap(),
            "-pf",
            pid.to_str().unwrap(),
            "-cf",
        ],
        &file,
    );
}

#[test]
fn kea_config_passes_kea_dhcp4_t() {
    let text = export(ExportFormat::Kea, &site());
    let doc: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let d = &doc["Dhcp4"];
    assert_eq!(d["valid-lifetime"], 600);
    assert_eq!(d["next-server"], "192.168.0.2");
    let classes = d["client-classes"].as_array().unwrap();
    assert_eq!(classes[0]["name"], "ovl-ipxe");
    assert_eq!(
        classes[0]["test"],
        "(option[77].hex == 'iPXE' or option[175].exists)"
    );
    assert_eq!(classes[0]["boot-file-name"], "http://192.168.0.2/boot.ipxe");
    let efi = classes.iter().find(|c| c["name"] == "ovl-arch-7").unwrap();
    assert_eq!(
        efi["test"],
        "not (option[77].hex == 'iPXE' or option[175].exists) and substring(option[60].hex,0,9) == 'PXEClient' and option[93].hex == 0x0007"
    );
    assert_eq!(efi["boot-file-name"], "ipxe.efi");
    let subnet = &d["subnet4"][0];
    assert_eq!(subnet["subnet"], "192.168.0.0/24");
    assert_eq!(subnet["pools"][0]["pool"], "192.168.0.3 - 192.168.0.253");
    assert_eq!(subnet["reservations"][0]["hw-address"], "52:54:00:12:34:56");
    assert_eq!(subnet["reservations"][0]["ip-address"], "192.168.0.50");
    assert_eq!(subnet["reservations"][0]["hostname"], "kiosk-hall");
    assert!(subnet["reservations"][1].get("ip-address").is_none());
    if !have("kea-dhcp4") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = write(&dir, "kea-dhcp4.conf", &text);
    check(&["kea-dhcp4", "-t"], &file);
}

#[test]
fn reservations_only_configs_are_valid_too() {
    let mut cfg = site();
    cfg.range = None;
    cfg.router = None;
    cfg.dns.clear();
    let dir = tempfile::tempdir().unwrap();
    let dnsmasq = export(ExportFormat::Dnsmasq, &cfg);
    assert!(dnsmasq.contains("dhcp-range=192.168.0.0,static,255.255.255.0,600\n"));
    if have("dnsmasq") {
        check(
            &["dnsmasq", "--test", "-C"],
            &write(&dir, "d.conf", &dnsmasq),
        );
    }
    if have("dhcpd") {
        let leases = write(&dir, "dhcpd.leases", "");
        let pid = dir.path().join("dhcpd.pid");
        let isc = write(&dir, "i.conf", &export(ExportFormat::IscDhcpd, &cfg));
        check(
            &[
                "dhcpd",
                "-4",
                "-t",
                "-lf",
                leases.to_str().unwrap(),
                "-pf",
                pid.to_str().unwrap(),
                "-cf",
            ],
            &isc,
        );
    }
    if have("kea-dhcp4") {
        check(
            &["kea-dhcp4", "-t"],
            &write(&dir, "k.conf", &export(ExportFormat::Kea, &cfg)),
        );
    }
}

#[test]
fn format_names() {
    assert_eq!("dnsmasq".parse(), Ok(ExportFormat::Dnsmasq));
    assert_eq!("isc-dhcpd".parse(), Ok(ExportFormat::IscDhcpd));
    assert_eq!("kea".parse(), Ok(ExportFormat::Kea));
    assert!(
        "bind"
            .parse::<ExportFormat>()
            .unwrap_err()
            .contains("dnsmasq, isc-dhcpd or kea")
    );
}

/// The example site (`ovl init`) with a pool: `dhcp = "off"` becomes a `[serve.dhcp]` table.
fn example_site(dir: &tempfile::TempDir) -> std::path::PathBuf {
    let site = dir.path().join("site");
    let out = Command::new(env!("CARGO_BIN_EXE_ovl"))
        .arg("init")
        .arg(&site)
        .output()
        .expect("ovl init");
    assert!(out.status.success(), "{out:?}");
    let toml_path = site.join("ovl.toml");
    let text = std::fs::read_to_string(&toml_path).expect("ovl.toml");
    let text: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("dhcp ="))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(
        &toml_path,
        format!(
            "{text}\n[serve.dhcp]\nrange = [\"192.168.0.100\", \"192.168.0.200\"]\n\
             netmask = \"255.255.255.0\"\nrouter = \"192.168.0.1\"\ndns = [\"192.168.0.1\"]\n"
        ),
    )
    .expect("write ovl.toml");
    site
}

/// `ovl --site SITE export FORMAT`: stdout, checked for success.
fn cli_export(site: &Path, format: &str, json: bool) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ovl"));
    cmd.arg("--site").arg(site);
    if json {
        cmd.arg("--json");
    }
    let out = cmd.args(["export", format]).output().expect("ovl export");
    assert!(
        out.status.success(),
        "ovl export {format}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn cli_dnsmasq_export_of_the_example_site_passes_dnsmasq_test() {
    let dir = tempfile::tempdir().unwrap();
    let site = example_site(&dir);
    let text = cli_export(&site, "dnsmasq", false);
    let l = lines(&text);
    for expected in [
        "dhcp-range=192.168.0.100,192.168.0.200,255.255.255.0,600",
        "dhcp-boot=tag:ipxe,http://192.168.0.2/boot.ipxe",
        "dhcp-host=52:54:00:12:34:56,192.168.0.50,kiosk-hall",
        // Effective host names: the profile's template for devices without their own.
        "dhcp-host=52:54:00:ab:cd:10,xl-abcd10",
    ] {
        assert!(l.contains(&expected), "missing {expected:?} in\n{text}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&cli_export(&site, "dnsmasq", true)).expect("--json is JSON");
    assert_eq!(json["format"], "dnsmasq");
    assert_eq!(json["config"], text.as_str());
    if have("dnsmasq") {
        let out = check(
            &["dnsmasq", "--test", "-C"],
            &write(&dir, "dnsmasq.conf", &text),
        );
        assert!(String::from_utf8_lossy(&out.stderr).contains("syntax check OK"));
    }
}

#[test]
fn cli_isc_dhcpd_export_of_the_example_site_passes_dhcpd_t() {
    let dir = tempfile::tempdir().unwrap();
    let site = example_site(&dir);
    let text = cli_export(&site, "isc-dhcpd", false);
    let l = lines(&text);
    for expected in [
        "range 192.168.0.100 192.168.0.200;",
        "host lab-bench {",
        "fixed-address 192.168.0.60;",
    ] {
        assert!(l.contains(&expected), "missing {expected:?} in\n{text}");
    }
    if have("dhcpd") {
        let leases = write(&dir, "dhcpd.leases", "");
        let pid = dir.path().join("dhcpd.pid");
        check(
            &[
                "dhcpd",
                "-4",
                "-t",
                "-lf",
                leases.to_str().unwrap(),
                "-pf",
                pid.to_str().unwrap(),
                "-cf",
            ],
            &write(&dir, "dhcpd.conf", &text),
        );
    }
}

#[test]
fn cli_kea_export_of_the_example_site_passes_kea_dhcp4_t() {
    let dir = tempfile::tempdir().unwrap();
    let site = example_site(&dir);
    let text = cli_export(&site, "kea", false);
    let doc: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let subnet = &doc["Dhcp4"]["subnet4"][0];
    assert_eq!(subnet["subnet"], "192.168.0.0/24");
    assert_eq!(subnet["pools"][0]["pool"], "192.168.0.100 - 192.168.0.200");
    assert_eq!(subnet["reservations"].as_array().map(Vec::len), Some(5));
    if have("kea-dhcp4") {
        check(&["kea-dhcp4", "-t"], &write(&dir, "kea-dhcp4.conf", &text));
    }
}

#[test]
fn cli_export_without_a_server_address_names_ovl_toml() {
    let dir = tempfile::tempdir().unwrap();
    let site = example_site(&dir);
    let toml_path = site.join("ovl.toml");
    let text = std::fs::read_to_string(&toml_path).unwrap();
    std::fs::write(&toml_path, text.replace("server = \"192.168.0.2\"", "")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ovl"))
        .arg("--site")
        .arg(&site)
        .args(["export", "kea"])
        .output()
        .expect("ovl export");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ovl.toml") && err.contains("[boot] server"),
        "{err}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_ovl"))
        .args(["export", "bind"])
        .output()
        .expect("ovl export");
    assert_eq!(out.status.code(), Some(2));
}

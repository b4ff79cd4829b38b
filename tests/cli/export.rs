//! `ovl export`: each configuration is accepted by the real program's own checker
//! (`dnsmasq --test`, `dhcpd -t`, `kea-dhcp4 -t`), and its key lines are pinned.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Output;

use ovl::mac::Mac;
use ovl::serve::dhcp::default_boot_files;
use ovl::serve::dhcp::export::{DhcpExport, ExportFormat, ExportHost, export};

use crate::harness::proc::{bounded, require};
use crate::harness::site::{TestSite, ovl};

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
        ipxe_script_url: "http://192.168.0.2/boot.ipxe?mac=${net0/mac}".into(),
    }
}

/// Runs the checker `args FILE` (bounded by 30 s); it must accept the file.
fn check(args: &[&str], file: &Path) -> Output {
    let (program, rest) = args.split_first().expect("a checker");
    let out = bounded(30, program)
        .args(rest)
        .arg(file)
        .output()
        .expect("run checker");
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

/// `dnsmasq --test -C FILE` accepts `text`, saying "syntax check OK".
fn check_dnsmasq(dir: &Path, name: &str, text: &str) {
    require("dnsmasq");
    let out = check(&["dnsmasq", "--test", "-C"], &write(dir, name, text));
    assert!(String::from_utf8_lossy(&out.stderr).contains("syntax check OK"));
}

/// `dhcpd -4 -t -cf FILE` (lease and pid files in `dir`) accepts `text`.
fn check_dhcpd(dir: &Path, name: &str, text: &str) {
    require("dhcpd");
    let file = write(dir, name, text);
    let leases = write(dir, "dhcpd.leases", "");
    let pid = dir.join("dhcpd.pid");
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

/// `kea-dhcp4 -t FILE` accepts `text`.
fn check_kea(dir: &Path, name: &str, text: &str) {
    require("kea-dhcp4");
    check(&["kea-dhcp4", "-t"], &write(dir, name, text));
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
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
        "dhcp-userclass=set:ovl-ipxe,iPXE",
        "dhcp-match=set:ovl-ipxe,175",
        "dhcp-boot=tag:ovl-ipxe,http://192.168.0.2/boot.ipxe?mac=${net0/mac},,192.168.0.2",
        "dhcp-match=set:ovl-arch-7,option:client-arch,7",
        "dhcp-vendorclass=set:ovl-pxe,PXEClient",
        "dhcp-boot=tag:ovl-pxe,tag:!ovl-ipxe,tag:ovl-arch-7,ipxe.efi,,192.168.0.2",
        "dhcp-boot=tag:ovl-pxe,tag:!ovl-ipxe,tag:ovl-arch-0,undionly.kpxe,,192.168.0.2",
        "dhcp-boot=tag:ovl-pxe,tag:!ovl-ipxe,tag:!ovl-arch-0,tag:!ovl-arch-6,tag:!ovl-arch-7,tag:!ovl-arch-9,undionly.kpxe,,192.168.0.2",
        "dhcp-host=52:54:00:12:34:56,192.168.0.50,kiosk-hall",
        "dhcp-host=52:54:00:12:34:57,xl-123457",
    ] {
        assert!(l.contains(&expected), "missing {expected:?} in\n{text}");
    }
    let dir = tempfile::tempdir().unwrap();
    check_dnsmasq(dir.path(), "dnsmasq.conf", &text);
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
        "filename \"http://192.168.0.2/boot.ipxe?mac=${net0/mac}\";",
        "} elsif substring(option vendor-class-identifier, 0, 9) = \"PXEClient\" {",
        "if not exists pxe-system-type or option pxe-system-type = 00:00 {",
        "filename \"undionly.kpxe\";",
        "} elsif option pxe-system-type = 00:07 {",
        "filename \"ipxe.efi\";",
        "host kiosk-hall {",
        "hardware ethernet 52:54:00:12:34:56;",
        "fixed-address 192.168.0.50;",
        "host xl-123457 {",
    ] {
        assert!(l.contains(&expected), "missing {expected:?} in\n{text}");
    }
    let dir = tempfile::tempdir().unwrap();
    check_dhcpd(dir.path(), "dhcpd.conf", &text);
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
    assert_eq!(
        classes[0]["boot-file-name"],
        "http://192.168.0.2/boot.ipxe?mac=${net0/mac}"
    );
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
    let dir = tempfile::tempdir().unwrap();
    check_kea(dir.path(), "kea-dhcp4.conf", &text);
}

/// Kea's JSON parser takes `//` comments; serde_json does not.
fn kea_json(text: &str) -> serde_json::Value {
    let json: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .map(|l| format!("{l}\n"))
        .collect();
    serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}:\n{text}"))
}

/// A minimal configuration of the subnet that holds its own pool, for the snippets.
const DNSMASQ_MAIN: &str = "dhcp-range=192.168.0.100,192.168.0.200,255.255.255.0,600\n";
const DHCPD_MAIN: &str =
    "subnet 192.168.0.0 netmask 255.255.255.0 {\n  range 192.168.0.100 192.168.0.200;\n}\n";

/// Kea's minimal configuration with the snippet's classes and reservations merged in.
fn kea_merged(snippet: &str) -> String {
    let part = kea_json(snippet);
    let doc = serde_json::json!({"Dhcp4": {
        "interfaces-config": {"interfaces": ["*"]},
        "client-classes": part["client-classes"],
        "subnet4": [{
            "id": 1,
            "subnet": "192.168.0.0/24",
            "pools": [{"pool": "192.168.0.100 - 192.168.0.200"}],
            "reservations": part["reservations"],
        }],
    }});
    doc.to_string()
}

#[test]
fn snippets_pass_each_checker_inside_a_minimal_config() {
    let cfg = site();
    let dir = tempfile::tempdir().unwrap();
    let d = ovl::serve::dhcp::export::export_snippet(ExportFormat::Dnsmasq, &cfg);
    assert!(
        !d.contains("dhcp-range") && !d.contains("dhcp-option"),
        "{d}"
    );
    assert!(lines(&d).contains(&"dhcp-host=52:54:00:12:34:56,192.168.0.50,kiosk-hall"));
    assert!(
        d.starts_with("# Generated by `ovl export dnsmasq --snippet`"),
        "{d}"
    );
    check_dnsmasq(dir.path(), "d.conf", &format!("{DNSMASQ_MAIN}{d}"));
    let i = ovl::serve::dhcp::export::export_snippet(ExportFormat::IscDhcpd, &cfg);
    assert!(
        !i.lines().any(|l| l.starts_with("subnet "))
            && !i.contains("authoritative")
            && !i.contains(" code "),
        "{i}"
    );
    assert!(lines(&i).contains(&"filename \"http://192.168.0.2/boot.ipxe?mac=${net0/mac}\";"));
    check_dhcpd(dir.path(), "i.conf", &format!("{DHCPD_MAIN}{i}"));
    // An admin's own declaration of option 93 does not clash with the snippet's.
    check_dhcpd(
        dir.path(),
        "i2.conf",
        &format!("option client-arch code 93 = unsigned integer 16;\n{DHCPD_MAIN}{i}"),
    );
    let k = ovl::serve::dhcp::export::export_snippet(ExportFormat::Kea, &cfg);
    let part = kea_json(&k);
    assert_eq!(part["client-classes"][0]["name"], "ovl-ipxe");
    assert_eq!(part["reservations"][0]["ip-address"], "192.168.0.50");
    assert!(part.get("Dhcp4").is_none());
    check_kea(dir.path(), "k.conf", &kea_merged(&k));
    // Kea reads the snippet's `//` comments too.
    let comments: String = k
        .lines()
        .filter(|l| l.starts_with("//"))
        .map(|l| format!("{l}\n"))
        .collect();
    check_kea(
        dir.path(),
        "k2.conf",
        &format!("{comments}{}", kea_merged(&k)),
    );
}

/// No pool: never a leaseless `static` range; the whole export is the snippet, headed by a
/// comment saying why, and still valid inside a minimal configuration.
#[test]
fn without_a_range_the_export_says_so_and_gives_the_snippet() {
    let mut cfg = site();
    cfg.range = None;
    let dir = tempfile::tempdir().unwrap();
    for (format, file) in [
        (ExportFormat::Dnsmasq, "d.conf"),
        (ExportFormat::IscDhcpd, "i.conf"),
        (ExportFormat::Kea, "k.conf"),
    ] {
        let text = export(format, &cfg);
        assert!(!text.contains("static"), "{text}");
        assert!(
            text.contains("[serve.dhcp] range is not set in ovl.toml"),
            "{text}"
        );
        assert!(text.contains("as with --snippet"), "{text}");
        assert!(text.contains("boot.ipxe?mac=${net0/mac}"), "{text}");
        match format {
            ExportFormat::Dnsmasq => {
                assert!(!text.contains("dhcp-range"), "{text}");
                check_dnsmasq(dir.path(), file, &format!("{DNSMASQ_MAIN}{text}"));
            }
            ExportFormat::IscDhcpd => {
                assert!(!text.lines().any(|l| l.starts_with("subnet ")), "{text}");
                check_dhcpd(dir.path(), file, &format!("{DHCPD_MAIN}{text}"));
            }
            ExportFormat::Kea => check_kea(dir.path(), file, &kea_merged(&text)),
        }
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
fn example_site() -> TestSite {
    let site = TestSite::example();
    let text: String = site
        .read("ovl.toml")
        .lines()
        .filter(|l| !l.trim_start().starts_with("dhcp ="))
        .map(|l| format!("{l}\n"))
        .collect();
    site.write(
        "ovl.toml",
        &format!(
            "{text}\n[serve.dhcp]\nrange = [\"192.168.0.100\", \"192.168.0.200\"]\n\
             netmask = \"255.255.255.0\"\nrouter = \"192.168.0.1\"\ndns = [\"192.168.0.1\"]\n"
        ),
    );
    site
}

/// `ovl --site SITE [--json] export FORMAT`: stdout, checked for success.
fn cli_export(site: &TestSite, format: &str, json: bool) -> String {
    let args: &[&str] = if json {
        &["--json", "export", format]
    } else {
        &["export", format]
    };
    site.ovl(args).ok().stdout
}

#[test]
fn cli_dnsmasq_export_of_the_example_site_passes_dnsmasq_test() {
    let site = example_site();
    let text = cli_export(&site, "dnsmasq", false);
    let l = lines(&text);
    for expected in [
        "dhcp-range=192.168.0.100,192.168.0.200,255.255.255.0,600",
        "dhcp-boot=tag:ovl-ipxe,http://192.168.0.2/boot.ipxe?mac=${net0/mac},,192.168.0.2",
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
    check_dnsmasq(site.dir.path(), "dnsmasq.conf", &text);
}

#[test]
fn cli_isc_dhcpd_export_of_the_example_site_passes_dhcpd_t() {
    let site = example_site();
    let text = cli_export(&site, "isc-dhcpd", false);
    let l = lines(&text);
    for expected in [
        "range 192.168.0.100 192.168.0.200;",
        "host lab-bench {",
        "fixed-address 192.168.0.60;",
    ] {
        assert!(l.contains(&expected), "missing {expected:?} in\n{text}");
    }
    check_dhcpd(site.dir.path(), "dhcpd.conf", &text);
}

#[test]
fn cli_kea_export_of_the_example_site_passes_kea_dhcp4_t() {
    let site = example_site();
    let text = cli_export(&site, "kea", false);
    let doc: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let subnet = &doc["Dhcp4"]["subnet4"][0];
    assert_eq!(subnet["subnet"], "192.168.0.0/24");
    assert_eq!(subnet["pools"][0]["pool"], "192.168.0.100 - 192.168.0.200");
    assert_eq!(subnet["reservations"].as_array().map(Vec::len), Some(5));
    check_kea(site.dir.path(), "kea-dhcp4.conf", &text);
}

#[test]
fn cli_export_without_a_server_address_names_ovl_toml() {
    let site = example_site();
    let text = site.read("ovl.toml");
    site.write("ovl.toml", &text.replace("server = \"192.168.0.2\"", ""));
    let r = site.ovl(&["export", "kea"]).code(1);
    assert!(
        r.stderr.contains("ovl.toml") && r.stderr.contains("[boot] server"),
        "{}",
        r.stderr
    );
    let out = ovl().args(["export", "bind"]).output().expect("ovl export");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn cli_snippet_of_the_example_site_and_its_refusal_for_nfs() {
    let site = example_site();
    let text = cli_export(&site, "dnsmasq", false);
    assert!(text.contains("dhcp-range=192.168.0.100"), "{text}");
    let r = site.ovl(&["--json", "export", "dnsmasq", "--snippet"]).ok();
    let json = r.json();
    assert_eq!(json["snippet"], true);
    let snippet = json["config"].as_str().unwrap();
    assert!(!snippet.contains("dhcp-range"), "{snippet}");
    assert!(snippet.contains("dhcp-host=52:54:00:12:34:56,192.168.0.50,kiosk-hall"));
    check_dnsmasq(
        site.dir.path(),
        "merged.conf",
        &format!("{DNSMASQ_MAIN}{snippet}"),
    );
    site.ovl(&["export", "nfs", "--snippet"])
        .code(2)
        .stderr_has("--snippet is for the DHCP formats");
}

#[test]
fn cli_export_without_a_range_warns_and_prints_the_snippet() {
    let site = TestSite::example();
    let r = site.ovl(&["export", "isc-dhcpd"]).ok();
    assert!(
        r.stderr.contains("warning: [serve.dhcp] range is not set"),
        "{}",
        r.stderr
    );
    assert!(
        r.stdout.contains("range is not set in ovl.toml"),
        "{}",
        r.stdout
    );
    assert!(
        !r.stdout.lines().any(|l| l.starts_with("subnet ")),
        "{}",
        r.stdout
    );
    check_dhcpd(
        site.dir.path(),
        "i.conf",
        &format!("{DHCPD_MAIN}{}", r.stdout),
    );
    let json = site.ovl(&["--json", "export", "kea"]).ok().json();
    assert_eq!(json["snippet"], true);
}

//! No secret leaves by a side door (issue #9, "Leaks"): the built `ovl serve` over a built
//! example site, real curl and tftp-hpa against HTTP and TFTP. Owner mode holds on both
//! protocols; editor backups, copies and private files are 404 / TFTP error 1 on both; DHCP
//! settings that would answer on every interface or hand out impossible addresses are
//! refused before anything is served.

use std::net::SocketAddr;
use std::process::Output;

use super::binary::{Server, serve_once};
use crate::harness::proc::{bounded, output, sha256_file};
use crate::harness::site::{MAC, TestSite};

/// curl's status code for `url` (0 when it got none), the body going to `out`.
fn curl_status(url: &str, out: &std::path::Path) -> String {
    let o = output(
        bounded(30, "curl")
            .args(["-s", "-o"])
            .arg(out)
            .args(["-w", "%{http_code}"])
            .arg(url),
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// tftp-hpa `get` of `file` (host in front, so names with colons work).
fn tftp_hpa(tftp: SocketAddr, file: &str, out: &std::path::Path) -> Output {
    output(
        bounded(30, "tftp")
            .args(["-m", "binary", "127.0.0.1"])
            .arg(tftp.port().to_string())
            .args(["-c", "get", &format!("127.0.0.1:{file}")])
            .arg(out),
    )
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
}

#[test]
fn owner_mode_holds_for_http_and_tftp_alike() {
    let s = TestSite::example_built();
    let toml = std::fs::read_to_string(s.path("ovl.toml")).unwrap();
    s.write(
        "ovl.toml",
        &toml.replace("configs_access = \"any\"", "configs_access = \"owner\""),
    );
    let mut srv = Server::start(&s, &["--http", "127.0.0.1:0", "--tftp", "127.0.0.1:0"]);
    let http = srv.addr("http");
    let tftp = srv.addr("tftp");
    let path = format!("configs/{MAC}.tar.gz");
    // Loopback has no neighbour entry and no lease: this client owns no device.
    let out = s.scratch("http.tar.gz");
    assert_eq!(curl_status(&format!("http://{http}/{path}"), &out), "403");
    let out = s.scratch("curl-tftp.tar.gz");
    let o = output(
        bounded(30, "curl")
            .args(["-s", "-S", "-o"])
            .arg(&out)
            .arg(format!("tftp://{tftp}/{path}")),
    );
    // curl's exit code 69: "permission problem on TFTP server" (TFTP error 2).
    assert_eq!(o.status.code(), Some(69), "{o:?}");
    assert_ne!(
        std::fs::read(&out).unwrap_or_default(),
        std::fs::read(s.archive(MAC)).unwrap()
    );
    let out = s.scratch("hpa.tar.gz");
    let o = tftp_hpa(tftp, &path, &out);
    assert!(text(&o).contains("Error code 2"), "{}", text(&o));
    assert_eq!(std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0), 0);
    srv.wait_line(&["tftp_refused", "configs_access = owner"]);

    // In `any` mode the same client gets the archive on both protocols.
    s.write("ovl.toml", &toml);
    drop(srv);
    let mut srv = Server::start(&s, &["--http", "127.0.0.1:0", "--tftp", "127.0.0.1:0"]);
    let tftp = srv.addr("tftp");
    let out = s.scratch("hpa-any.tar.gz");
    assert!(tftp_hpa(tftp, &path, &out).status.success());
    assert_eq!(sha256_file(&out), sha256_file(&s.archive(MAC)));
}

#[test]
fn backups_copies_and_private_files_are_404_on_http_and_tftp() {
    let s = TestSite::example_built();
    for backup in [
        "devices.toml~",
        "#devices.toml#",
        "ovl.toml.bak",
        "profiles.orig/S.toml",
        "overlays.tar.gz",
        "captures.tgz",
    ] {
        s.write(backup, "[[device]] SECRET");
    }
    s.symlink("vmlinuz-lts", "overlays/base/etc/shadow");
    s.write("extra.iso", "ISO");
    s.write("alpine/v3.20/main/x86_64/APKINDEX.tar.gz", "INDEX");
    let toml = std::fs::read_to_string(s.path("ovl.toml")).unwrap();
    s.write(
        "ovl.toml",
        &format!("{toml}public = [\"alpine/\", \"extra.iso\"]\n"),
    );
    let mut srv = Server::start(&s, &["--http", "127.0.0.1:0", "--tftp", "127.0.0.1:0"]);
    let http = srv.addr("http");
    let tftp = srv.addr("tftp");
    let out = s.scratch("out");
    for p in [
        "devices.toml~",
        "%23devices.toml%23",
        "ovl.toml.bak",
        "profiles.orig/S.toml",
        "overlays.tar.gz",
        "captures.tgz",
        "devices.toml",
        "ovl.toml",
        "profiles/S.toml",
        "overlays/base/etc/motd",
        "vmlinuz-lts",
    ] {
        assert_eq!(
            curl_status(&format!("http://{http}/{p}"), &out),
            "404",
            "{p}"
        );
        let file = p.replace("%23", "#");
        let o = tftp_hpa(tftp, &file, &out);
        assert!(text(&o).contains("Error code 1"), "{file}: {}", text(&o));
        let o = output(
            bounded(30, "curl")
                .args(["-s", "-o"])
                .arg(&out)
                .arg(format!("tftp://{tftp}/{p}")),
        );
        // curl's exit code 68: "file not found on TFTP server" (TFTP error 1).
        assert_eq!(o.status.code(), Some(68), "{p}: {o:?}");
        assert!(
            !std::fs::read_to_string(&out)
                .unwrap_or_default()
                .contains("SECRET")
        );
    }
    // What [serve] public lists is served on both.
    for (p, want) in [
        ("extra.iso", "ISO"),
        ("alpine/v3.20/main/x86_64/APKINDEX.tar.gz", "INDEX"),
    ] {
        assert_eq!(
            curl_status(&format!("http://{http}/{p}"), &out),
            "200",
            "{p}"
        );
        assert_eq!(std::fs::read_to_string(&out).unwrap(), want);
        assert!(tftp_hpa(tftp, p, &out).status.success(), "{p}");
        assert_eq!(std::fs::read_to_string(&out).unwrap(), want);
    }
    srv.signal(libc::SIGTERM);
    assert_eq!(srv.wait_exit(15), Some(0), "{}", srv.seen());
}

#[test]
fn a_private_name_in_serve_public_is_refused_at_start() {
    let s = TestSite::example_built();
    let toml = std::fs::read_to_string(s.path("ovl.toml")).unwrap();
    s.write("ovl.toml", &format!("{toml}public = [\"overlays/\"]\n"));
    let o = serve_once(&s, &["--http", "127.0.0.1:0", "--tftp", "off"]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("ovl.toml") && err.contains("[serve] public"),
        "{err}"
    );
}

#[test]
fn dhcp_proxy_without_an_interface_is_a_usage_error() {
    let s = TestSite::example_built();
    let o = serve_once(
        &s,
        &["--http", "127.0.0.1:0", "--tftp", "off", "--dhcp", "proxy"],
    );
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("--interface"));
}

#[test]
fn group_and_zero_macs_in_the_inventory_are_located_errors() {
    for (mac, why) in [
        ("ff:ff:ff:ff:ff:ff", "broadcast"),
        ("01:00:5e:00:00:01", "multicast"),
        ("00-00-00-00-00-00", "all zeros"),
    ] {
        let s = TestSite::new();
        s.write(
            "devices.toml",
            &format!("[[device]]\nmac = \"{MAC}\"\nprofile = \"S\"\n\n[[device]]\nmac = \"{mac}\"\nprofile = \"S\"\n"),
        );
        let o = serve_once(&s, &["--http", "127.0.0.1:0", "--tftp", "off"]);
        assert_eq!(o.status.code(), Some(1), "{o:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("devices.toml:6:7"), "{err}");
        assert!(err.contains(why), "{err}");
        s.ovl(&["check"]).code(1).stderr_has("devices.toml:6:7");
    }
}

#[test]
fn fixed_addresses_outside_the_pool_or_on_the_server_name_the_device() {
    let s = TestSite::new();
    let toml =
        "[boot]\nserver = \"127.0.0.1\"\n[serve.dhcp]\nrange = [\"127.0.0.10\", \"127.0.0.20\"]\n";
    for (ip, why) in [
        ("10.9.0.57", "outside the subnet of every DHCP pool"),
        ("127.0.0.1", "the DHCP server's own address"),
    ] {
        s.write("ovl.toml", toml);
        s.write(
            "devices.toml",
            &format!("[[device]]\nmac = \"{MAC}\"\nprofile = \"S\"\nip = \"{ip}\"\n"),
        );
        let o = serve_once(
            &s,
            &[
                "--http",
                "127.0.0.1:0",
                "--tftp",
                "off",
                "--interface",
                "lo",
            ],
        );
        assert_eq!(o.status.code(), Some(1), "{o:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("devices.toml:2:7"), "{err}");
        assert!(
            err.contains(&format!("device {MAC}: fixed address {ip}")),
            "{err}"
        );
        assert!(err.contains(why), "{err}");
    }
}

//! What the server refuses: traversal, absolute paths, backslashes, symlinks out of the
//! site, private paths, missing files, write requests, mail and unknown modes.

use ovl::serve::tftp::packet::{ErrorCode, Mode, Packet, Request};

use super::{
    Lab, Server, assert_error, atftp_get, busybox_get, curl_get, raw, raw_request, recv,
    tftp_hpa_get,
};
use crate::harness::proc::{bounded, output, sha256};

/// A site with an outside secret, private files and a symlink leaving the site.
fn guarded_lab() -> Lab {
    let lab = Lab::new();
    lab.file("undionly.kpxe", b"ipxe");
    lab.file("ovl.toml", b"[alpine]\n");
    lab.file("devices.toml", b"");
    lab.file("profiles/S.toml", b"");
    lab.file("overlays/base/etc/shadow", b"root:secret");
    lab.file("captures/52:54:00:12:34:56/h.apkovl.tar.gz", b"x");
    lab.file(".secret", b"x");
    std::fs::write(lab.site.scratch("outside.txt"), b"outside").unwrap();
    std::os::unix::fs::symlink(lab.site.scratch("outside.txt"), lab.root.join("escape")).unwrap();
    lab
}

#[test]
fn dotdot_traversal_is_refused() {
    let lab = guarded_lab();
    assert_error(
        &raw_request(&lab, "../outside.txt", &[]).0,
        ErrorCode::AccessViolation,
    );
    assert_error(
        &raw_request(&lab, "/../../outside.txt", &[]).0,
        ErrorCode::AccessViolation,
    );
    let out = lab.out("trav");
    tftp_hpa_get(&lab, "../outside.txt", &out);
    assert_ne!(std::fs::read(&out).unwrap_or_default(), b"outside");
    assert!(lab.stat(|s| &s.requests_refused) >= 3);
}

#[test]
fn absolute_path_outside_the_site_is_not_found() {
    let lab = guarded_lab();
    assert_error(
        &raw_request(&lab, "/etc/passwd", &[]).0,
        ErrorCode::FileNotFound,
    );
    let abs = lab.site.scratch("outside.txt");
    let (p, _) = raw_request(&lab, abs.to_str().unwrap(), &[]);
    assert!(matches!(p, Packet::Error { .. }), "{p:?}");
}

#[test]
fn backslash_path_is_refused() {
    let lab = guarded_lab();
    assert_error(
        &raw_request(&lab, "..\\outside.txt", &[]).0,
        ErrorCode::AccessViolation,
    );
    assert_error(
        &raw_request(&lab, "\\undionly.kpxe", &[]).0,
        ErrorCode::AccessViolation,
    );
}

#[test]
fn symlink_leaving_the_site_is_refused() {
    let lab = guarded_lab();
    assert_error(
        &raw_request(&lab, "escape", &[]).0,
        ErrorCode::AccessViolation,
    );
    let out = lab.out("escape");
    let o = curl_get(&lab, "escape", &out, None);
    assert!(!o.status.success());
    assert_ne!(std::fs::read(&out).unwrap_or_default(), b"outside");
}

#[test]
fn private_paths_are_refused() {
    let lab = guarded_lab();
    for p in [
        "ovl.toml",
        "/devices.toml",
        "profiles/S.toml",
        "overlays/base/etc/shadow",
        "captures/52:54:00:12:34:56/h.apkovl.tar.gz",
        ".secret",
    ] {
        assert_error(&raw_request(&lab, p, &[]).0, ErrorCode::AccessViolation);
        let out = lab.out("private");
        let _ = std::fs::remove_file(&out);
        assert!(!busybox_get(&lab, p, &out, None).status.success(), "{p}");
    }
}

#[test]
fn missing_file_is_error_1() {
    let lab = guarded_lab();
    assert_error(
        &raw_request(&lab, "nothing.here", &[]).0,
        ErrorCode::FileNotFound,
    );
    let out = lab.out("missing");
    assert!(!atftp_get(&lab, "nothing.here", &out, &[]).status.success());
}

#[test]
fn write_request_from_tftp_hpa_is_refused() {
    let lab = guarded_lab();
    let local = lab.out("upload");
    std::fs::write(&local, b"payload").unwrap();
    let o = output(
        bounded(60, "tftp")
            .args(["-m", "binary", "127.0.0.1", &lab.port(), "-c", "put"])
            .arg(&local)
            .arg("uploaded"),
    );
    let text = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert!(text.contains("Error code 2"), "{text}");
    assert!(!lab.root.join("uploaded").exists());
}

#[test]
fn raw_write_request_gets_error_2() {
    let lab = guarded_lab();
    let s = raw();
    let wrq = Packet::Wrq(Request {
        filename: "undionly.kpxe".into(),
        mode: Mode::Octet,
        options: vec![],
    });
    s.send_to(&wrq.to_bytes(), lab.addr).unwrap();
    assert_error(&recv(&s).unwrap().0, ErrorCode::AccessViolation);
    assert_eq!(
        std::fs::read(lab.root.join("undionly.kpxe")).unwrap(),
        b"ipxe"
    );
}

#[test]
fn mail_and_unknown_modes_are_refused() {
    let lab = guarded_lab();
    for mode in [Mode::Mail, Mode::Other("binary".into())] {
        let s = raw();
        let p = Packet::Rrq(Request {
            filename: "undionly.kpxe".into(),
            mode,
            options: vec![],
        });
        s.send_to(&p.to_bytes(), lab.addr).unwrap();
        assert_error(&recv(&s).unwrap().0, ErrorCode::IllegalOperation);
    }
}

#[test]
fn netascii_mode_is_served_as_stored() {
    let lab = Lab::new();
    let sum = lab.file("motd", b"line one\nline two\n");
    let s = raw();
    let p = Packet::Rrq(Request {
        filename: "motd".into(),
        mode: Mode::Netascii,
        options: vec![],
    });
    s.send_to(&p.to_bytes(), lab.addr).unwrap();
    let (p, from) = recv(&s).unwrap();
    let Packet::Data { block: 1, data } = p else {
        panic!("{p:?}")
    };
    assert_eq!(sha256(&data), sum);
    s.send_to(&Packet::Ack(1).to_bytes(), from).unwrap();
}

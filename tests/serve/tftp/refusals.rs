//! What the server refuses: anything outside the public set (private files, editor backups,
//! traversal, absolute paths, backslashes, symlinks out of the site: all "file not found",
//! as a missing file), the owner rule of `configs_access = "owner"`, write requests, mail
//! and unknown modes.

use std::net::IpAddr;
use std::sync::Arc;

use ovl::mac::Mac;
use ovl::serve::neighbours::{Neighbours, StaticNeighbours};
use ovl::serve::tftp::packet::{ErrorCode, Mode, Packet, Request};

use super::{
    Lab, Server, assert_error, atftp_get, busybox_get, curl_get, raw, raw_request, recv,
    tftp_hpa_get,
};
use crate::harness::proc::{bounded, output, sha256, sha256_file};

/// A site with an outside secret, private files, editor backups and a symlink leaving it.
fn guarded_lab() -> Lab {
    let lab = Lab::new();
    lab.file("undionly.kpxe", b"ipxe");
    lab.file("devices.toml", b"");
    lab.file("profiles/S.toml", b"");
    lab.file("overlays/base/etc/shadow", b"root:secret");
    lab.file("captures/52:54:00:12:34:56/h.apkovl.tar.gz", b"x");
    lab.file(".secret", b"x");
    for backup in [
        "devices.toml~",
        "#devices.toml#",
        "ovl.toml.bak",
        "profiles.orig/S.toml",
        "overlays.tar.gz",
        "boot/menu.ipxe~",
    ] {
        lab.file(backup, b"root:secret");
    }
    std::fs::write(lab.site.scratch("outside.txt"), b"outside").unwrap();
    std::os::unix::fs::symlink(lab.site.scratch("outside.txt"), lab.root.join("escape")).unwrap();
    std::os::unix::fs::symlink(
        lab.site.scratch("outside.txt"),
        lab.root.join("boot/escape"),
    )
    .unwrap();
    std::os::unix::fs::symlink("../overlays/base/etc/shadow", lab.root.join("boot/shadow"))
        .unwrap();
    lab
}

/// Every client gets "file not found" (error 1) for `p`, and no byte of it.
fn not_found_for_every_client(lab: &Lab, p: &str) {
    assert_error(&raw_request(lab, p, &[]).0, ErrorCode::FileNotFound);
    let out = lab.out("refused");
    let _ = std::fs::remove_file(&out);
    assert!(!busybox_get(lab, p, &out, None).status.success(), "{p}");
    assert!(!curl_get(lab, p, &out, None).status.success(), "{p}");
    assert!(
        !atftp_get(lab, p, &out, &["tsize 0"]).status.success(),
        "{p}"
    );
    if !p.contains(':') {
        let o = tftp_hpa_get(lab, p, &out);
        let text =
            String::from_utf8_lossy(&o.stderr).to_string() + &String::from_utf8_lossy(&o.stdout);
        assert!(text.contains("Error code 1"), "{p}: {text}");
    }
    let got = std::fs::read(&out).unwrap_or_default();
    assert!(!String::from_utf8_lossy(&got).contains("secret"), "{p}");
    assert!(!String::from_utf8_lossy(&got).contains("outside"), "{p}");
}

#[test]
fn dotdot_traversal_is_not_found() {
    let lab = guarded_lab();
    for p in [
        "../outside.txt",
        "/../../outside.txt",
        "boot/../undionly.kpxe",
    ] {
        assert_error(&raw_request(&lab, p, &[]).0, ErrorCode::FileNotFound);
    }
    let out = lab.out("trav");
    tftp_hpa_get(&lab, "../outside.txt", &out);
    assert_ne!(std::fs::read(&out).unwrap_or_default(), b"outside");
    assert!(lab.stat(|s| &s.requests_refused) >= 4);
}

#[test]
fn absolute_path_outside_the_site_is_not_found() {
    let lab = guarded_lab();
    assert_error(
        &raw_request(&lab, "/etc/passwd", &[]).0,
        ErrorCode::FileNotFound,
    );
    let abs = lab.site.scratch("outside.txt");
    assert_error(
        &raw_request(&lab, abs.to_str().unwrap(), &[]).0,
        ErrorCode::FileNotFound,
    );
}

#[test]
fn backslash_path_is_not_found() {
    let lab = guarded_lab();
    for p in ["..\\outside.txt", "\\undionly.kpxe"] {
        assert_error(&raw_request(&lab, p, &[]).0, ErrorCode::FileNotFound);
    }
}

#[test]
fn symlinks_leaving_the_site_or_the_public_set_are_not_found() {
    let lab = guarded_lab();
    for p in ["escape", "boot/escape", "boot/shadow"] {
        not_found_for_every_client(&lab, p);
    }
}

#[test]
fn private_paths_are_not_found_like_missing_files() {
    let lab = guarded_lab();
    for p in [
        "ovl.toml",
        "/devices.toml",
        "profiles/S.toml",
        "overlays/base/etc/shadow",
        "captures/52:54:00:12:34:56/h.apkovl.tar.gz",
        ".secret",
        "nothing.here",
    ] {
        not_found_for_every_client(&lab, p);
    }
    // The message is the same for a private file and a missing one.
    let private = raw_request(&lab, "devices.toml", &[]).0;
    let missing = raw_request(&lab, "nothing.here", &[]).0;
    assert_eq!(private, missing);
}

#[test]
fn editor_backups_and_tarballs_are_not_found() {
    let lab = guarded_lab();
    for p in [
        "devices.toml~",
        "#devices.toml#",
        "ovl.toml.bak",
        "profiles.orig/S.toml",
        "overlays.tar.gz",
        "boot/menu.ipxe~",
    ] {
        not_found_for_every_client(&lab, p);
    }
    // Boot files the site names are served.
    let out = lab.out("undi");
    assert!(curl_get(&lab, "undionly.kpxe", &out, None).status.success());
    assert_eq!(sha256_file(&out), sha256(b"ipxe"));
}

#[test]
fn only_canonical_archive_names_are_public() {
    let lab = guarded_lab();
    let name = "configs/52:54:00:12:34:56.tar.gz";
    let sum = lab.file(name, b"archive");
    lab.file("configs/notes.txt", b"secret");
    let out = lab.out("cfg");
    assert!(curl_get(&lab, name, &out, None).status.success());
    assert_eq!(sha256_file(&out), sum);
    for p in [
        "configs/notes.txt",
        "configs/52-54-00-12-34-56.tar.gz",
        "configs/52:54:00:12:34:56.TAR.GZ",
    ] {
        not_found_for_every_client(&lab, p);
    }
}

const A: &str = "52:54:00:00:00:0a";
const B: &str = "52:54:00:00:00:0b";

/// A lab in owner mode where the kernel's table (a test double) says 127.0.0.1 is `A`.
fn owner_lab() -> Lab {
    let me: IpAddr = "127.0.0.1".parse().unwrap();
    let mac: Mac = A.parse().unwrap();
    let lab = Lab::with_toml(
        "[serve]\nconfigs_access = \"owner\"\npublic = [\"boot/\"]\n",
        |c| {
            c.neighbours = Neighbours::new(vec![Arc::new(StaticNeighbours(
                [(me, mac)].into_iter().collect(),
            ))]);
        },
    );
    lab.file(&format!("configs/{A}.tar.gz"), b"archive A");
    lab.file(&format!("configs/{B}.tar.gz"), b"archive B");
    std::fs::create_dir_all(lab.root.join("boot")).unwrap();
    std::os::unix::fs::symlink(format!("../configs/{B}.tar.gz"), lab.root.join("boot/b")).unwrap();
    lab
}

#[test]
fn owner_mode_serves_an_archive_to_its_device_only() {
    let lab = owner_lab();
    let mine = format!("configs/{A}.tar.gz");
    let out = lab.out("mine");
    assert!(curl_get(&lab, &mine, &out, None).status.success());
    assert_eq!(std::fs::read(&out).unwrap(), b"archive A");
    let out = lab.out("mine-atftp");
    assert!(
        atftp_get(&lab, &mine, &out, &["blksize 1468"])
            .status
            .success()
    );
    assert_eq!(std::fs::read(&out).unwrap(), b"archive A");
    // Another device's archive, directly, through a symlink, or missing: access violation,
    // never a byte of it.
    for p in [
        format!("configs/{B}.tar.gz"),
        "boot/b".to_string(),
        "configs/52:54:00:00:00:0c.tar.gz".to_string(),
    ] {
        assert_error(&raw_request(&lab, &p, &[]).0, ErrorCode::AccessViolation);
        let out = lab.out("theirs");
        let _ = std::fs::remove_file(&out);
        assert!(!curl_get(&lab, &p, &out, None).status.success(), "{p}");
        assert!(!busybox_get(&lab, &p, &out, None).status.success(), "{p}");
        assert!(!atftp_get(&lab, &p, &out, &[]).status.success(), "{p}");
        assert_ne!(std::fs::read(&out).unwrap_or_default(), b"archive B", "{p}");
    }
    let o = tftp_hpa_get(&lab, "boot/b", &lab.out("hpa"));
    let text = String::from_utf8_lossy(&o.stderr).to_string() + &String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("Error code 2"), "{text}");
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

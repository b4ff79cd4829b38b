//! End-to-end tests of the TFTP server: the server runs in-process on 127.0.0.1 port 0 over
//! a temporary site; real clients (tftp-hpa, atftp, busybox tftp, curl) and a raw UDP
//! socket drive it. Every client runs under `timeout 60`; every raw wait is bounded.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ovl::serve::tftp::packet::{ErrorCode, Mode, Packet, Request};
use ovl::serve::tftp::{TftpConfig, TftpServer, TftpStats};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

/// A site in a temp dir and a TFTP server serving it on its own runtime.
struct Lab {
    dir: tempfile::TempDir,
    root: PathBuf,
    addr: SocketAddr,
    stats: Arc<TftpStats>,
    cancel: CancellationToken,
    rt: Option<tokio::runtime::Runtime>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl Lab {
    fn new() -> Lab {
        Lab::with(|_| {})
    }

    fn with(adjust: impl FnOnce(&mut TftpConfig)) -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("site");
        std::fs::create_dir_all(&root).unwrap();
        let mut cfg = TftpConfig::new(&root, "127.0.0.1:0".parse().unwrap());
        adjust(&mut cfg);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let server = rt.block_on(TftpServer::bind(cfg)).unwrap();
        let addr = server.local_addr().unwrap();
        let stats = server.stats();
        let cancel = CancellationToken::new();
        let handle = rt.spawn(server.run(cancel.clone()));
        Lab {
            dir,
            root,
            addr,
            stats,
            cancel,
            rt: Some(rt),
            server: Some(handle),
        }
    }

    fn port(&self) -> String {
        self.addr.port().to_string()
    }

    /// Writes a site file (parents created) and returns its bytes' sha256.
    fn file(&self, name: &str, bytes: &[u8]) -> String {
        let p = self.root.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
        sha256(bytes)
    }

    /// A fresh path for a client's output.
    fn out(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("out-{name}"))
    }

    fn stat(&self, f: impl Fn(&TftpStats) -> &std::sync::atomic::AtomicU64) -> u64 {
        TftpStats::get(f(&self.stats))
    }

    /// Stops the server and returns how long `run` took to return.
    fn shutdown(&mut self) -> Duration {
        let started = Instant::now();
        self.cancel.cancel();
        if let (Some(rt), Some(h)) = (self.rt.as_ref(), self.server.take()) {
            rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(30), h)
                    .await
                    .expect("run() returns after cancel")
                    .unwrap();
            });
        }
        started.elapsed()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.cancel.cancel();
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(10));
        }
    }
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn sha256_file(p: &Path) -> String {
    sha256(&std::fs::read(p).unwrap_or_default())
}

/// Deterministic pseudo-random bytes.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("client runs");
    if !out.status.success() {
        eprintln!(
            "{cmd:?}: {}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

fn timeout60(prog: &str) -> Command {
    let mut c = Command::new("timeout");
    c.arg("60").arg(prog);
    c
}

/// tftp-hpa: RFC 1350 only, 512-byte lockstep.
fn tftp_hpa_get(lab: &Lab, file: &str, out: &Path) -> Output {
    run(timeout60("tftp")
        .args(["-m", "binary", "127.0.0.1", &lab.port(), "-c", "get", file])
        .arg(out))
}

/// atftp with `--option "NAME VALUE"` pairs.
fn atftp_get(lab: &Lab, file: &str, out: &Path, options: &[&str]) -> Output {
    let mut c = timeout60("atftp");
    c.args(["--get", "-r", file, "-l"]).arg(out);
    for o in options {
        c.args(["--option", o]);
    }
    run(c.args(["127.0.0.1", &lab.port()]))
}

/// busybox tftp, as Alpine's initramfs has it.
fn busybox_get(lab: &Lab, file: &str, out: &Path, blksize: Option<u16>) -> Output {
    let mut c = timeout60("busybox");
    c.args(["tftp", "-g", "-r", file, "-l"]).arg(out);
    if let Some(b) = blksize {
        c.args(["-b", &b.to_string()]);
    }
    run(c.args(["127.0.0.1", &lab.port()]))
}

/// curl's TFTP client.
fn curl_get(lab: &Lab, file: &str, out: &Path, blksize: Option<u16>) -> Output {
    let mut c = timeout60("curl");
    c.args([
        "-s",
        "-S",
        &format!("tftp://127.0.0.1:{}/{file}", lab.port()),
    ]);
    if let Some(b) = blksize {
        c.args(["--tftp-blksize", &b.to_string()]);
    }
    run(c.arg("-o").arg(out))
}

/// A raw client socket with a bounded receive wait.
fn raw() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

fn rrq(file: &str, options: &[(&str, &str)]) -> Vec<u8> {
    Packet::Rrq(Request {
        filename: file.to_owned(),
        mode: Mode::Octet,
        options: options
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect(),
    })
    .to_bytes()
}

/// Receives one packet (within the socket's read timeout): the packet and its sender.
fn recv(s: &UdpSocket) -> Option<(Packet, SocketAddr)> {
    let mut buf = vec![0u8; 70000];
    let (n, from) = s.recv_from(&mut buf).ok()?;
    Some((Packet::decode(&buf[..n]).ok()?, from))
}

/// Sends a raw RRQ and returns the first answer.
fn raw_request(lab: &Lab, file: &str, options: &[(&str, &str)]) -> (Packet, SocketAddr) {
    let s = raw();
    s.send_to(&rrq(file, options), lab.addr).unwrap();
    recv(&s).expect("an answer")
}

fn assert_error(p: &Packet, want: ErrorCode) {
    match p {
        Packet::Error { code, .. } => assert_eq!(*code, want, "{p:?}"),
        other => panic!("expected ERROR {want:?}, got {other:?}"),
    }
}

/// Downloads `file` with a raw lockstep client; returns the bytes.
fn raw_download(lab: &Lab, s: &UdpSocket, file: &str) -> Vec<u8> {
    s.send_to(&rrq(file, &[]), lab.addr).unwrap();
    let mut got = Vec::new();
    let mut expect: u16 = 1;
    for _ in 0..100_000 {
        let (p, from) = recv(s).expect("DATA");
        let Packet::Data { block, data } = p else {
            panic!("expected DATA, got {p:?}")
        };
        if block == expect {
            got.extend_from_slice(&data);
            expect = expect.wrapping_add(1);
        }
        s.send_to(&Packet::Ack(block).to_bytes(), from).unwrap();
        if data.len() < 512 {
            return got;
        }
    }
    panic!("download did not end");
}

// ---------------------------------------------------------------- real clients

#[test]
fn tftp_hpa_downloads_files_of_edge_sizes() {
    let lab = Lab::new();
    for (i, len) in [0usize, 1, 511, 512, 513, 1024, 1_048_593]
        .into_iter()
        .enumerate()
    {
        let name = format!("f{len}");
        let sum = lab.file(&name, &noise(len, i as u64));
        let out = lab.out(&name);
        tftp_hpa_get(&lab, &name, &out);
        assert_eq!(sha256_file(&out), sum, "size {len}");
    }
}

#[test]
fn files_in_subfolders_and_mac_names_are_served() {
    let lab = Lab::new();
    let sum = lab.file("boot/undionly.kpxe", &noise(70_000, 9));
    let out = lab.out("sub");
    tftp_hpa_get(&lab, "boot/undionly.kpxe", &out);
    assert_eq!(sha256_file(&out), sum);
    // tftp-hpa reads `get a:b` as host `a`, file `b`: names with colons go through the
    // other clients.
    let name = "configs/52:54:00:12:34:56.tar.gz";
    let sum = lab.file(name, &noise(70_000, 19));
    let out = lab.out("cfg-bb");
    assert!(busybox_get(&lab, name, &out, None).status.success());
    assert_eq!(sha256_file(&out), sum);
    let out = lab.out("cfg-curl");
    assert!(curl_get(&lab, name, &out, None).status.success());
    assert_eq!(sha256_file(&out), sum);
    let out = lab.out("cfg-atftp");
    assert!(atftp_get(&lab, name, &out, &["tsize 0"]).status.success());
    assert_eq!(sha256_file(&out), sum);
}

#[test]
fn atftp_downloads_plain_and_with_options() {
    let lab = Lab::new();
    let sum = lab.file("undionly.kpxe", &noise(3_000_017, 1));
    let cases: [&[&str]; 4] = [
        &[],
        &["blksize 1468", "tsize 0"],
        &["blksize 1468", "windowsize 8"],
        &["blksize 65464", "tsize 0", "timeout 2", "windowsize 4"],
    ];
    for (i, options) in cases.into_iter().enumerate() {
        let out = lab.out(&format!("atftp{i}"));
        let o = atftp_get(&lab, "undionly.kpxe", &out, options);
        assert!(o.status.success(), "{options:?}");
        assert_eq!(sha256_file(&out), sum, "{options:?}");
    }
}

#[test]
fn busybox_downloads_at_512_and_1468() {
    let lab = Lab::new();
    let sum = lab.file("ipxe.efi", &noise(1_000_003, 2));
    for b in [None, Some(1468)] {
        let out = lab.out(&format!("bb{b:?}"));
        let o = busybox_get(&lab, "ipxe.efi", &out, b);
        assert!(o.status.success(), "{b:?}");
        assert_eq!(sha256_file(&out), sum, "{b:?}");
    }
}

#[test]
fn curl_downloads_at_512_and_1468() {
    let lab = Lab::new();
    let sum = lab.file("boot/vmlinuz-lts", &noise(2_000_001, 3));
    for b in [None, Some(1468)] {
        let out = lab.out(&format!("curl{b:?}"));
        let o = curl_get(&lab, "boot/vmlinuz-lts", &out, b);
        assert!(o.status.success(), "{b:?}");
        assert_eq!(sha256_file(&out), sum, "{b:?}");
    }
}

#[test]
fn block_numbers_roll_over_on_a_33_mb_file_at_512() {
    let lab = Lab::new();
    // 65625 blocks of 512 bytes: past 65535, so block numbers wrap.
    let sum = lab.file("initramfs-lts", &noise(33_600_000, 4));
    let out = lab.out("big-hpa");
    let t = Instant::now();
    tftp_hpa_get(&lab, "initramfs-lts", &out);
    eprintln!("FIGURE tftp-hpa 512 lockstep 33.6 MB: {:?}", t.elapsed());
    assert_eq!(sha256_file(&out), sum);

    let out = lab.out("big-bb");
    let t = Instant::now();
    assert!(
        busybox_get(&lab, "initramfs-lts", &out, None)
            .status
            .success()
    );
    eprintln!("FIGURE busybox 512 lockstep 33.6 MB: {:?}", t.elapsed());
    assert_eq!(sha256_file(&out), sum);
}

#[test]
fn large_file_with_big_blocks_and_windows() {
    let lab = Lab::new();
    let sum = lab.file("modloop-lts", &noise(33_600_000, 5));
    let runs: [(&str, &[&str]); 2] = [
        ("atftp blksize 1468", &["blksize 1468"]),
        (
            "atftp blksize 1468 windowsize 8",
            &["blksize 1468", "windowsize 8"],
        ),
    ];
    for (label, options) in runs {
        let out = lab.out(label);
        let t = Instant::now();
        assert!(
            atftp_get(&lab, "modloop-lts", &out, options)
                .status
                .success()
        );
        eprintln!("FIGURE {label} 33.6 MB: {:?}", t.elapsed());
        assert_eq!(sha256_file(&out), sum, "{label}");
    }
    let out = lab.out("curl-big");
    let t = Instant::now();
    assert!(
        curl_get(&lab, "modloop-lts", &out, Some(1468))
            .status
            .success()
    );
    eprintln!("FIGURE curl blksize 1468 33.6 MB: {:?}", t.elapsed());
    assert_eq!(sha256_file(&out), sum);
    let out = lab.out("bb-big");
    let t = Instant::now();
    assert!(
        busybox_get(&lab, "modloop-lts", &out, Some(1468))
            .status
            .success()
    );
    eprintln!("FIGURE busybox blksize 1468 33.6 MB: {:?}", t.elapsed());
    assert_eq!(sha256_file(&out), sum);
}

#[test]
fn fifty_concurrent_transfers_with_mixed_clients() {
    let lab = Lab::new();
    let sum = lab.file("shared.bin", &noise(1_500_000, 6));
    let failures: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..50)
            .map(|i| {
                let lab = &lab;
                let sum = &sum;
                scope.spawn(move || {
                    let out = lab.out(&format!("c{i}"));
                    let (client, o) = match i % 5 {
                        0 => ("tftp-hpa", tftp_hpa_get(lab, "shared.bin", &out)),
                        1 => (
                            "atftp",
                            atftp_get(lab, "shared.bin", &out, &["blksize 1468"]),
                        ),
                        2 => (
                            "atftp-window",
                            atftp_get(lab, "shared.bin", &out, &["blksize 1468", "windowsize 8"]),
                        ),
                        3 => ("busybox", busybox_get(lab, "shared.bin", &out, Some(1468))),
                        _ => ("curl", curl_get(lab, "shared.bin", &out, Some(1468))),
                    };
                    let ok = o.status.success() && sha256_file(&out) == *sum;
                    (!ok).then(|| format!("#{i} {client}: {}", o.status))
                })
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|h| h.join().unwrap())
            .collect()
    });
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(lab.stat(|s| &s.transfers_completed), 50);
    assert_eq!(lab.stat(|s| &s.requests_busy), 0);
}

// ---------------------------------------------------------------- refusals

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
    std::fs::write(lab.dir.path().join("outside.txt"), b"outside").unwrap();
    std::os::unix::fs::symlink(lab.dir.path().join("outside.txt"), lab.root.join("escape"))
        .unwrap();
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
    let abs = lab.dir.path().join("outside.txt");
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
    let o = run(timeout60("tftp")
        .args(["-m", "binary", "127.0.0.1", &lab.port(), "-c", "put"])
        .arg(&local)
        .arg("uploaded"));
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

#[test]
fn malformed_truncated_and_oversized_packets_are_dropped() {
    let lab = Lab::new();
    let sum = lab.file("undionly.kpxe", &noise(100_000, 7));
    let s = raw();
    let mut oversized = rrq("undionly.kpxe", &[]);
    oversized.resize(600, b'a');
    let garbage: [&[u8]; 10] = [
        b"",
        b"\x00",
        b"\x00\x01",
        b"\x00\x01undionly.kpxe",
        b"\x00\x01undionly.kpxe\x00oct",
        b"\x00\x01\xff\xfe\x00octet\x00",
        b"\x00\x63hello",
        b"\xff\xff\xff\xff\xff\xff",
        b"\x00\x04\x00",
        &oversized,
    ];
    for g in garbage {
        s.send_to(g, lab.addr).unwrap();
    }
    // A big datagram, bigger than any request or DATA.
    s.send_to(&vec![0u8; 65_000], lab.addr).unwrap();
    // Packets that decode but make no sense on port 69.
    for p in [
        Packet::Ack(1),
        Packet::Data {
            block: 1,
            data: vec![1],
        },
    ] {
        s.send_to(&p.to_bytes(), lab.addr).unwrap();
    }
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    assert!(recv(&s).is_none(), "garbage gets no answer");
    assert_eq!(lab.stat(|s| &s.packets_oversized), 2);
    assert_eq!(lab.stat(|s| &s.packets_malformed), 9);
    assert_eq!(lab.stat(|s| &s.packets_unexpected), 2);
    // The server still serves.
    let out = lab.out("after");
    tftp_hpa_get(&lab, "undionly.kpxe", &out);
    assert_eq!(sha256_file(&out), sum);
}

#[test]
fn garbage_on_a_transfer_port_is_dropped() {
    let lab = Lab::new();
    let body = noise(2000, 8);
    lab.file("f", &body);
    let s = raw();
    s.send_to(&rrq("f", &[]), lab.addr).unwrap();
    let (p, tid) = recv(&s).unwrap();
    assert!(matches!(p, Packet::Data { block: 1, .. }));
    for g in [&b"\x00\x04"[..], b"\x00\x04\x00\x01\x00", b"junk", b""] {
        s.send_to(g, tid).unwrap();
    }
    s.send_to(&Packet::Ack(1).to_bytes(), tid).unwrap();
    let (p, _) = recv(&s).unwrap();
    assert!(matches!(p, Packet::Data { block: 2, .. }), "{p:?}");
    assert!(lab.stat(|s| &s.packets_malformed) >= 3);
}

// ---------------------------------------------------------------- options

#[test]
fn unknown_option_is_ignored() {
    let lab = Lab::new();
    let body = noise(700, 10);
    lab.file("f", &body);
    // Only an unknown option: no OACK, DATA 1 straight away.
    let (p, _) = raw_request(&lab, "f", &[("frobnicate", "yes")]);
    assert_eq!(
        p,
        Packet::Data {
            block: 1,
            data: body[..512].to_vec()
        }
    );
    // Mixed with a known one: the OACK lists only the known one.
    let (p, _) = raw_request(&lab, "f", &[("frobnicate", "yes"), ("TSIZE", "0")]);
    assert_eq!(p, Packet::Oack(vec![("tsize".into(), "700".into())]));
}

#[test]
fn blksize_out_of_range_is_ignored_or_clamped() {
    let lab = Lab::new();
    let body = noise(70_000, 11);
    lab.file("f", &body);
    let (p, _) = raw_request(&lab, "f", &[("blksize", "4")]);
    assert!(
        matches!(&p, Packet::Data { block: 1, data } if data.len() == 512),
        "{p:?}"
    );
    let (p, _) = raw_request(&lab, "f", &[("blksize", "100000")]);
    assert_eq!(p, Packet::Oack(vec![("blksize".into(), "65464".into())]));
    // And a real client asking for too much still gets the file.
    let out = lab.out("huge");
    assert!(
        atftp_get(&lab, "f", &out, &["blksize 65464"])
            .status
            .success()
    );
    assert_eq!(sha256_file(&out), sha256(&body));
}

#[test]
fn oack_then_windowed_data_with_tsize() {
    let lab = Lab::new();
    let body = noise(10_000, 12);
    lab.file("f", &body);
    let s = raw();
    s.send_to(
        &rrq(
            "f",
            &[("tsize", "0"), ("blksize", "1000"), ("windowsize", "4")],
        ),
        lab.addr,
    )
    .unwrap();
    let (p, tid) = recv(&s).unwrap();
    assert_eq!(
        p,
        Packet::Oack(vec![
            ("tsize".into(), "10000".into()),
            ("blksize".into(), "1000".into()),
            ("windowsize".into(), "4".into()),
        ])
    );
    assert_ne!(
        tid.port(),
        lab.addr.port(),
        "a transfer runs on its own port"
    );
    s.send_to(&Packet::Ack(0).to_bytes(), tid).unwrap();
    for want in 1..=4u16 {
        let (p, _) = recv(&s).unwrap();
        assert!(
            matches!(p, Packet::Data { block, .. } if block == want),
            "{p:?}"
        );
    }
    // Block 3 "lost": ACK 2 moves the window to 3..=6.
    s.send_to(&Packet::Ack(2).to_bytes(), tid).unwrap();
    for want in 3..=6u16 {
        let (p, _) = recv(&s).unwrap();
        assert!(
            matches!(p, Packet::Data { block, .. } if block == want),
            "{p:?}"
        );
    }
}

#[test]
fn duplicate_acks_do_not_double_the_data_in_lockstep() {
    let lab = Lab::new();
    lab.file("f", &noise(5000, 13));
    let s = raw();
    s.send_to(&rrq("f", &[("timeout", "5")]), lab.addr).unwrap();
    let (_, tid) = recv(&s).unwrap(); // OACK
    s.send_to(&Packet::Ack(0).to_bytes(), tid).unwrap();
    let (p, _) = recv(&s).unwrap();
    assert!(matches!(p, Packet::Data { block: 1, .. }));
    for _ in 0..3 {
        s.send_to(&Packet::Ack(1).to_bytes(), tid).unwrap();
    }
    let (p, _) = recv(&s).unwrap();
    assert!(matches!(p, Packet::Data { block: 2, .. }));
    s.set_read_timeout(Some(Duration::from_millis(800)))
        .unwrap();
    assert!(recv(&s).is_none(), "duplicate ACKs got no extra DATA");
}

// ---------------------------------------------------------------- robustness

#[test]
fn a_client_that_stops_acking_is_dropped_after_bounded_retries() {
    let lab = Lab::with(|c| c.retries = 3);
    let sum = lab.file("f", &noise(200_000, 14));
    let s = raw();
    s.send_to(&rrq("f", &[("timeout", "1")]), lab.addr).unwrap();
    let (p, tid) = recv(&s).unwrap();
    assert!(matches!(p, Packet::Oack(_)));
    s.send_to(&Packet::Ack(0).to_bytes(), tid).unwrap();
    let started = Instant::now();

    // Meanwhile another client downloads normally.
    let out = lab.out("other");
    assert!(curl_get(&lab, "f", &out, Some(1468)).status.success());
    assert_eq!(sha256_file(&out), sum);

    // DATA 1, then 3 retransmissions one second apart, then silence.
    let mut copies = 0;
    s.set_read_timeout(Some(Duration::from_millis(2500)))
        .unwrap();
    while let Some((p, _)) = recv(&s) {
        assert!(matches!(p, Packet::Data { block: 1, .. }), "{p:?}");
        copies += 1;
        assert!(copies <= 4, "unbounded retransmission");
    }
    assert_eq!(copies, 4);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(lab.stat(|s| &s.transfers_failed), 1);
    assert_eq!(lab.stat(|s| &s.transfers_completed), 1);
}

#[test]
fn packets_from_a_wrong_tid_get_error_5_and_the_transfer_goes_on() {
    let lab = Lab::new();
    let body = noise(3000, 15);
    lab.file("f", &body);
    let s = raw();
    s.send_to(&rrq("f", &[]), lab.addr).unwrap();
    let (p, tid) = recv(&s).unwrap();
    let Packet::Data { block: 1, data } = p else {
        panic!("{p:?}")
    };
    let mut got = data;
    let intruder = raw();
    intruder.send_to(&Packet::Ack(1).to_bytes(), tid).unwrap();
    assert_error(&recv(&intruder).unwrap().0, ErrorCode::UnknownTid);
    // The intruder's ACK moved nothing: the real client continues from block 1.
    let mut block = 1u16;
    loop {
        s.send_to(&Packet::Ack(block).to_bytes(), tid).unwrap();
        let (p, _) = recv(&s).unwrap();
        let Packet::Data { block: b, data } = p else {
            panic!("{p:?}")
        };
        assert_eq!(b, block + 1);
        block = b;
        got.extend_from_slice(&data);
        if data.len() < 512 {
            s.send_to(&Packet::Ack(block).to_bytes(), tid).unwrap();
            break;
        }
    }
    assert_eq!(got, body);
    assert_eq!(lab.stat(|s| &s.packets_wrong_tid), 1);
}

#[test]
fn over_the_cap_requests_get_server_busy() {
    let lab = Lab::with(|c| c.max_transfers = 1);
    let body = noise(5000, 16);
    lab.file("f", &body);
    let s = raw();
    s.send_to(&rrq("f", &[("timeout", "5")]), lab.addr).unwrap();
    let (p, _) = recv(&s).unwrap();
    assert!(matches!(p, Packet::Oack(_)));
    let (p, _) = raw_request(&lab, "f", &[]);
    match p {
        Packet::Error { code, message } => {
            assert_eq!(code, ErrorCode::NotDefined);
            assert_eq!(message, "server busy");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(lab.stat(|s| &s.requests_busy), 1);
}

#[test]
fn a_finished_transfer_frees_its_slot() {
    let lab = Lab::with(|c| c.max_transfers = 1);
    let body = noise(5000, 17);
    lab.file("f", &body);
    for _ in 0..3 {
        let s = raw();
        assert_eq!(raw_download(&lab, &s, "f"), body);
        // The slot is released once the task ends, just after the last ACK.
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn shutdown_stops_stalled_transfers_within_the_grace() {
    let mut lab = Lab::with(|c| c.shutdown_grace = Duration::from_millis(300));
    lab.file("f", &noise(5000, 18));
    let s = raw();
    s.send_to(&rrq("f", &[("timeout", "30")]), lab.addr)
        .unwrap();
    let (_, tid) = recv(&s).unwrap();
    s.send_to(&Packet::Ack(0).to_bytes(), tid).unwrap();
    assert!(matches!(recv(&s).unwrap().0, Packet::Data { block: 1, .. }));
    let took = lab.shutdown();
    assert!(took < Duration::from_secs(3), "{took:?}");
    // The stalled client is told.
    assert_error(&recv(&s).unwrap().0, ErrorCode::NotDefined);
}

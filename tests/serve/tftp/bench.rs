//! A benchmark against tftpd-hpa (not a pass/fail test; run by hand).

use std::net::UdpSocket;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use super::{Lab, atftp_get, busybox_get, curl_get, tftp_hpa_get};
use crate::harness::proc::{noise, sha256_file};

/// A client run by the benchmark: server port and output path in, process output out.
type BenchClient = dyn Fn(u16, &Path) -> Output;

/// Compares with tftpd-hpa on the same 33.6 MB file and clients. Not a pass/fail test:
/// `cargo test --release --test serve -- --ignored --nocapture bench_against_tftpd_hpa`.
#[test]
#[ignore = "benchmark, not a pass/fail test: run by hand in release mode (needs tftpd-hpa)"]
fn bench_against_tftpd_hpa() {
    let lab = Lab::new();
    let sum = lab.file("bench.bin", &noise(33_600_000, 20));
    let hpa_port = {
        let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let mut hpa = Command::new("in.tftpd")
        .args(["-L", "-u", "root", "-s"])
        .arg(&lab.root)
        .args(["-a", &format!("127.0.0.1:{hpa_port}")])
        .spawn()
        .expect("in.tftpd runs");
    std::thread::sleep(Duration::from_millis(300));
    let ours = lab.addr.port();
    let clients: [(&str, &BenchClient); 8] = [
        ("tftp-hpa 512", &|p, o| tftp_hpa_get(&p, "bench.bin", o)),
        ("busybox 512", &|p, o| busybox_get(&p, "bench.bin", o, None)),
        ("busybox 1468", &|p, o| {
            busybox_get(&p, "bench.bin", o, Some(1468))
        }),
        ("atftp 1468", &|p, o| {
            atftp_get(&p, "bench.bin", o, &["blksize 1468"])
        }),
        ("atftp 1468 w8", &|p, o| {
            atftp_get(&p, "bench.bin", o, &["blksize 1468", "windowsize 8"])
        }),
        ("atftp 1468 w16", &|p, o| {
            atftp_get(&p, "bench.bin", o, &["blksize 1468", "windowsize 16"])
        }),
        ("atftp 1468 w64", &|p, o| {
            atftp_get(&p, "bench.bin", o, &["blksize 1468", "windowsize 64"])
        }),
        ("curl 1468", &|p, o| {
            curl_get(&p, "bench.bin", o, Some(1468))
        }),
    ];
    // OVL_BENCH_ONLY=substring picks clients; OVL_BENCH_RUNS=n sets the runs (default 3).
    let only = std::env::var("OVL_BENCH_ONLY").unwrap_or_default();
    let runs: usize = std::env::var("OVL_BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3)
        .max(1);
    for (label, client) in clients.into_iter().filter(|(l, _)| l.contains(&only)) {
        for (server, port) in [("ovl", ours), ("tftpd-hpa", hpa_port)] {
            let mut times = Vec::new();
            for i in 0..runs {
                let out = lab.out(&format!("bench-{server}-{i}"));
                let t = Instant::now();
                client(port, &out);
                times.push(t.elapsed());
                assert_eq!(sha256_file(&out), sum, "{label} {server}");
                let _ = std::fs::remove_file(&out);
            }
            times.sort();
            eprintln!(
                "BENCH {label:<14} {server:<10} median {:>8.0} ms  best {:>8.0} ms",
                times[runs / 2].as_secs_f64() * 1e3,
                times[0].as_secs_f64() * 1e3
            );
        }
    }
    eprintln!(
        "BENCH ovl retransmissions: {}",
        lab.stat(|s| &s.retransmissions)
    );
    let _ = hpa.kill();
    let _ = hpa.wait();
}

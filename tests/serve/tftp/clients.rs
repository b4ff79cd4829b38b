//! Real clients (tftp-hpa, atftp, busybox tftp, curl): every download checked by sha256,
//! edge sizes, block-number rollover, big blocks and windows, 50 concurrent transfers.

use std::net::SocketAddr;
use std::time::Instant;

use ovl::serve::tftp::packet::Packet;

use super::{Lab, atftp_get, busybox_get, curl_get, raw, recv, rrq, tftp_hpa_get};
use crate::harness::proc::{noise, sha256_file};

#[test]
fn tftp_hpa_downloads_files_of_edge_sizes() {
    let lab = Lab::new();
    for (i, len) in [0usize, 1, 511, 512, 513, 1024, 1_048_593]
        .into_iter()
        .enumerate()
    {
        let name = format!("sizes/f{len}");
        let sum = lab.file(&name, &noise(len, i as u64));
        let out = lab.out(&format!("f{len}"));
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
    // All 50 clients (and their retransmitted requests, on a loaded machine) come from
    // 127.0.0.1: lift the per-address cap to the global one for them.
    let lab = Lab::with(|c| c.max_per_client = 64);
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
    let refusals: Vec<_> = lab
        .events()
        .into_iter()
        .filter(|e| e["event"] == "tftp_refused")
        .collect();
    assert!(failures.is_empty(), "{failures:?} {refusals:?}");
    // A transfer is counted just after its last ACK, maybe after the client has exited.
    let deadline = Instant::now() + std::time::Duration::from_secs(5);
    while lab.stat(|s| &s.transfers_completed) < 50 && Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(lab.stat(|s| &s.transfers_completed), 50);
    assert_eq!(lab.stat(|s| &s.requests_busy), 0);
}

#[test]
fn listening_on_all_addresses_answers_from_the_address_asked() {
    // Bound to 0.0.0.0 for the test; all traffic goes to 127.0.0.1.
    let lab = Lab::with(|c| c.bind = "0.0.0.0:0".parse().unwrap());
    let sum = lab.file("undionly.kpxe", &noise(40_000, 22));
    let s = raw();
    let server: SocketAddr = format!("127.0.0.1:{}", lab.addr.port()).parse().unwrap();
    s.send_to(&rrq("undionly.kpxe", &[]), server).unwrap();
    let (p, tid) = recv(&s).unwrap();
    assert!(matches!(p, Packet::Data { block: 1, .. }), "{p:?}");
    assert_eq!(tid.ip(), server.ip());
    assert_ne!(tid.port(), server.port());
    let out = lab.out("any");
    assert!(
        busybox_get(&lab, "undionly.kpxe", &out, Some(1468))
            .status
            .success()
    );
    assert_eq!(sha256_file(&out), sum);
}

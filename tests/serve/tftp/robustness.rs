//! Malformed, oversized and random datagrams, a client that stops ACKing, a wrong TID,
//! the transfer cap, shutdown with stalled transfers.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use ovl::serve::tftp::packet::{ErrorCode, Packet};

use super::{
    Lab, assert_error, atftp_get, busybox_get, curl_get, raw, raw_download, raw_request, recv, rrq,
    tftp_hpa_get,
};
use crate::harness::proc::{noise, sha256_file};

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
fn a_storm_of_random_datagrams_changes_nothing() {
    let lab = Lab::new();
    let sum = lab.file("undionly.kpxe", &noise(50_000, 24));
    let s = raw();
    // A transfer in progress, to aim garbage at its port too.
    s.send_to(&rrq("undionly.kpxe", &[("timeout", "10")]), lab.addr)
        .unwrap();
    let (_, tid) = recv(&s).unwrap();
    let storm = UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..2000u64 {
        let mut d = noise((i % 700) as usize, i + 100);
        if i % 3 == 0 && d.len() >= 2 {
            // Valid opcodes with garbage bodies reach deeper into the decoder.
            d[0] = 0;
            d[1] = (i % 7) as u8;
        }
        let to = if i % 2 == 0 { lab.addr } else { tid };
        let _ = storm.send_to(&d, to);
    }
    // Real clients are still served.
    let out = lab.out("storm");
    assert!(
        busybox_get(&lab, "undionly.kpxe", &out, Some(1468))
            .status
            .success()
    );
    assert_eq!(sha256_file(&out), sum);
    let out = lab.out("storm-hpa");
    tftp_hpa_get(&lab, "undionly.kpxe", &out);
    assert_eq!(sha256_file(&out), sum);
}

#[test]
fn smallest_block_size_works_with_a_real_client() {
    let lab = Lab::new();
    let sum = lab.file("tiny", &noise(5_000, 25));
    let out = lab.out("tiny");
    assert!(
        atftp_get(&lab, "tiny", &out, &["blksize 8"])
            .status
            .success()
    );
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
        // The slot is released when the task ends, just after the last ACK.
        for _ in 0..50 {
            if lab.stat(|s| &s.transfers_completed) == lab.stat(|s| &s.requests) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    assert_eq!(lab.stat(|s| &s.requests_busy), 0);
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

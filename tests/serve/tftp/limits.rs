//! No client can stall the TFTP server (issue #9 item 10): `timeout` and `windowsize` asks
//! are capped, a client that never acknowledges gets a bounded number of bytes, one address
//! holds a bounded number of transfers, and every transfer has a deadline. Floods come from
//! 127.0.0.2 (another device); the normal client is 127.0.0.1.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use ovl::serve::tftp::packet::{ErrorCode, Packet};

use super::{Lab, assert_error, curl_get, recv, rrq, tftp_hpa_get};
use crate::harness::proc::{noise, sha256_file};

/// A socket of the flooding device.
fn flooder() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.2:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// The options a packet of an OACK grants, by name.
fn granted(p: &Packet, name: &str) -> Option<String> {
    match p {
        Packet::Oack(o) => o.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()),
        _ => None,
    }
}

#[test]
fn a_never_acking_flood_leaves_a_normal_client_served_fast() {
    let lab = Lab::new();
    lab.file("f", &noise(10 << 20, 30));
    let sum = lab.file("undionly.kpxe", &noise(80_000, 31));
    // 64 requests asking for a 255 s timeout and a huge window, never acknowledged.
    let sockets: Vec<UdpSocket> = (0..64).map(|_| flooder()).collect();
    for s in &sockets {
        let ask = [
            ("timeout", "255"),
            ("windowsize", "65535"),
            ("blksize", "1468"),
        ];
        s.send_to(&rrq("f", &ask), lab.addr).unwrap();
    }
    // Every request got its answer: 8 OACKs (the per-address cap), 56 refusals.
    let mut oacks = 0;
    for s in &sockets {
        let (p, _) = recv(s).expect("an answer");
        match &p {
            Packet::Oack(_) => {
                oacks += 1;
                assert_eq!(granted(&p, "timeout"), None, "255 s is not granted");
                assert_eq!(granted(&p, "windowsize").as_deref(), Some("64"));
            }
            Packet::Error { code, message } => {
                assert_eq!(*code, ErrorCode::NotDefined);
                assert_eq!(message, "too many transfers from your address");
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(oacks, 8);
    assert_eq!(lab.stat(|s| &s.requests_client_limit), 56);
    // A normal client is served at once, by two different clients.
    let started = Instant::now();
    let out = lab.out("normal");
    assert!(
        curl_get(&lab, "undionly.kpxe", &out, Some(1468))
            .status
            .success()
    );
    assert_eq!(sha256_file(&out), sum);
    let out = lab.out("normal-hpa");
    assert!(tftp_hpa_get(&lab, "undionly.kpxe", &out).status.success());
    assert_eq!(sha256_file(&out), sum);
    let took = started.elapsed();
    eprintln!("FIGURE normal client during the flood: {took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    // The stalled transfers end after the default timeout and retries, not 255 s each.
    let deadline = Instant::now() + Duration::from_secs(15);
    while lab.stat(|s| &s.transfers_failed) < 8 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(lab.stat(|s| &s.transfers_failed), 8);
}

/// Every DATA byte a socket receives until the server goes quiet.
fn data_bytes_until_silence(s: &UdpSocket) -> (usize, usize) {
    let (mut bytes, mut packets) = (0, 0);
    while let Some((p, _)) = recv(s) {
        if let Packet::Data { data, .. } = p {
            bytes += data.len();
            packets += 1;
        }
    }
    (bytes, packets)
}

#[test]
fn one_ack_gets_a_bounded_number_of_bytes() {
    let lab = Lab::new();
    lab.file("f", &noise(10 << 20, 32));
    let s = flooder();
    s.set_read_timeout(Some(Duration::from_millis(2500)))
        .unwrap();
    let ask = [("blksize", "1468"), ("windowsize", "65535")];
    s.send_to(&rrq("f", &ask), lab.addr).unwrap();
    let (oack, tid): (Packet, SocketAddr) = recv(&s).unwrap();
    assert_eq!(granted(&oack, "windowsize").as_deref(), Some("64"));
    let started = Instant::now();
    s.send_to(&Packet::Ack(0).to_bytes(), tid).unwrap();
    let (bytes, packets) = data_bytes_until_silence(&s);
    eprintln!(
        "FIGURE one ACK, never another: {packets} DATA packets, {bytes} bytes in {:?}",
        started.elapsed()
    );
    // One window of 64 blocks, then halved windows on each of the 5 timeouts (32, 16, 8,
    // 4, 2): under two windows in all, not the 10 MiB file once per timeout.
    assert!(packets >= 64, "{packets}");
    assert!(bytes <= 2 * 64 * 1468, "{bytes} bytes for one ACK");
    assert_eq!(lab.stat(|s| &s.transfers_failed), 1);
}

#[test]
fn a_transfer_past_its_deadline_is_stopped() {
    let lab = Lab::with(|c| c.transfer_deadline = Duration::from_secs(1));
    lab.file("f", &noise(100_000, 33));
    let s = flooder();
    s.send_to(&rrq("f", &[]), lab.addr).unwrap();
    let started = Instant::now();
    // A slow client: one ACK every 300 ms, just inside the retransmission timeout.
    let end = loop {
        let (p, tid) = recv(&s).expect("DATA or ERROR");
        match p {
            Packet::Data { block, .. } => {
                std::thread::sleep(Duration::from_millis(300));
                s.send_to(&Packet::Ack(block).to_bytes(), tid).unwrap();
            }
            other => break other,
        }
        assert!(started.elapsed() < Duration::from_secs(10), "no deadline");
    };
    assert_error(&end, ErrorCode::NotDefined);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(3),
        "{took:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while lab.stat(|s| &s.transfers_failed) < 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(lab.stat(|s| &s.transfers_failed), 1);
}

#[test]
fn timeouts_within_the_cap_are_granted_as_asked() {
    let lab = Lab::new();
    lab.file("f", &noise(1000, 34));
    let s = flooder();
    s.send_to(
        &rrq("f", &[("timeout", "10"), ("windowsize", "16")]),
        lab.addr,
    )
    .unwrap();
    let (p, tid) = recv(&s).unwrap();
    assert_eq!(granted(&p, "timeout").as_deref(), Some("10"));
    assert_eq!(granted(&p, "windowsize").as_deref(), Some("16"));
    s.send_to(
        &Packet::Error {
            code: ErrorCode::NotDefined,
            message: "bye".into(),
        }
        .to_bytes(),
        tid,
    )
    .unwrap();
}

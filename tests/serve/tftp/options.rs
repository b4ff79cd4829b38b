//! Options (RFC 2347-2349, 7440): unknown options, blksize bounds, OACK, windows, tsize
//! probes, duplicate ACKs.

use std::time::Duration;

use ovl::serve::tftp::packet::{ErrorCode, Packet};

use super::{Lab, atftp_get, raw, raw_request, recv, rrq};
use crate::harness::proc::{noise, sha256, sha256_file};

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

#[test]
fn uefi_style_tsize_probe_then_windowed_download() {
    // OVMF's PXE client: RRQ with tsize only, ERROR to end it, then the real RRQ with
    // blksize 1468 and windowsize 4, from the same port.
    let lab = Lab::new();
    let body = noise(300_001, 23);
    lab.file("ipxe.efi", &body);
    let s = raw();
    s.send_to(&rrq("ipxe.efi", &[("tsize", "0")]), lab.addr)
        .unwrap();
    let (p, tid) = recv(&s).unwrap();
    assert_eq!(p, Packet::Oack(vec![("tsize".into(), "300001".into())]));
    let abort = Packet::Error {
        code: ErrorCode::OptionRefused,
        message: "tsize probe".into(),
    };
    s.send_to(&abort.to_bytes(), tid).unwrap();
    s.send_to(
        &rrq("ipxe.efi", &[("blksize", "1468"), ("windowsize", "4")]),
        lab.addr,
    )
    .unwrap();
    let (p, tid) = recv(&s).unwrap();
    assert!(matches!(p, Packet::Oack(_)), "{p:?}");
    s.send_to(&Packet::Ack(0).to_bytes(), tid).unwrap();
    let mut got = Vec::new();
    let (mut expect, mut in_window) = (1u16, 0);
    for _ in 0..10_000 {
        let (p, _) = recv(&s).expect("DATA");
        let Packet::Data { block, data } = p else {
            panic!("{p:?}")
        };
        if block != expect {
            continue;
        }
        got.extend_from_slice(&data);
        expect = expect.wrapping_add(1);
        in_window += 1;
        let last = data.len() < 1468;
        if in_window == 4 || last {
            s.send_to(&Packet::Ack(block).to_bytes(), tid).unwrap();
            in_window = 0;
        }
        if last {
            break;
        }
    }
    assert_eq!(sha256(&got), sha256(&body));
    for _ in 0..50 {
        if lab.stat(|s| &s.transfers_completed) == 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(lab.stat(|s| &s.transfers_completed), 1);
    assert_eq!(lab.stat(|s| &s.transfers_failed), 1);
    let events = lab.events();
    let aborted: Vec<_> = events
        .iter()
        .filter(|e| e["event"] == "tftp_transfer_aborted")
        .collect();
    assert_eq!(aborted.len(), 1, "{events:?}");
    assert_eq!(aborted[0]["level"], "INFO");
}

//! One log event per transfer, with its figures; refusals at WARN.

use std::time::Duration;

use ovl::serve::tftp::packet::ErrorCode;

use super::{Lab, assert_error, atftp_get, raw_request};
use crate::harness::proc::noise;

#[test]
fn each_transfer_logs_one_event_with_its_figures() {
    let lab = Lab::new();
    lab.file("undionly.kpxe", &noise(100_000, 21));
    let out = lab.out("logged");
    let o = atftp_get(
        &lab,
        "undionly.kpxe",
        &out,
        &["blksize 1468", "windowsize 8"],
    );
    assert!(o.status.success());
    assert_error(
        &raw_request(&lab, "ovl.toml", &[]).0,
        ErrorCode::FileNotFound,
    );
    // The event is written just after the last ACK: poll for it, boundedly.
    let mut events = Vec::new();
    for _ in 0..50 {
        events = lab.events();
        if events.iter().any(|e| e["event"] == "tftp_transfer") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let done: Vec<_> = events
        .iter()
        .filter(|e| e["event"] == "tftp_transfer")
        .collect();
    assert_eq!(done.len(), 1, "{events:?}");
    let e = done[0];
    assert_eq!(e["level"], "INFO");
    assert_eq!(e["file"], "undionly.kpxe");
    assert_eq!(e["bytes"], 100_000);
    assert_eq!(e["blksize"], 1468);
    assert_eq!(e["windowsize"], 8);
    assert!(e["client"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(e["duration_ms"].is_u64() && e["rate_kib_s"].is_u64(), "{e}");
    let refused: Vec<_> = events
        .iter()
        .filter(|e| e["event"] == "tftp_refused")
        .collect();
    assert_eq!(refused.len(), 1, "{events:?}");
    assert_eq!(refused[0]["level"], "WARN");
    assert_eq!(refused[0]["file"], "ovl.toml");
    assert_eq!(refused[0]["reason"], "not public");
}

//! Fuzzes the TFTP packet decoder: it must never panic, and whatever it accepts must
//! re-encode into bytes that decode to the same packet.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ovl::serve::tftp::packet::{Packet, decode_ack};

fuzz_target!(|data: &[u8]| {
    let _ = decode_ack(data);
    if let Ok(p) = Packet::decode(data) {
        let again = Packet::decode(&p.to_bytes());
        assert_eq!(again.as_ref(), Ok(&p));
    }
});

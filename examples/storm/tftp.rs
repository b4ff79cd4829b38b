//! The TFTP download of the iPXE binary, as PXE firmware does it: RRQ with `blksize` and
//! `tsize` (RFC 2347–2349), lockstep ACKs, the request and the last ACK sent again after a
//! timeout. An ERROR packet ends the download: firmware gives up on it (PXE-E3x) and the
//! device does not boot from the network.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::{Instant, timeout_at};

/// Seconds without the next packet before the last one is sent again.
const PACKET_TIMEOUT: Duration = Duration::from_secs(2);
/// Timeouts in a row before the download fails.
const MAX_RETRIES: u32 = 6;

/// Downloads `file` from `server:69` with a socket bound to the device's own address `local`.
pub async fn fetch(
    local: Ipv4Addr,
    server: Ipv4Addr,
    file: &str,
    blksize: u16,
    retransmits: &AtomicU64,
) -> Result<Vec<u8>, String> {
    let sock = UdpSocket::bind(SocketAddrV4::new(local, 0))
        .await
        .map_err(|e| format!("binding {local}: {e}"))?;
    let mut rrq = vec![0, 1];
    for part in [file, "octet", "blksize", &blksize.to_string(), "tsize", "0"] {
        rrq.extend_from_slice(part.as_bytes());
        rrq.push(0);
    }
    let first = SocketAddr::V4(SocketAddrV4::new(server, 69));
    let mut last_sent = rrq;
    let mut peer: Option<SocketAddr> = None;
    let mut size = 512usize;
    let mut next: u16 = 1;
    let mut data = Vec::new();
    let mut buf = vec![0u8; 65536];
    let mut misses = 0;
    send(&sock, &last_sent, first).await?;
    loop {
        let until = Instant::now() + PACKET_TIMEOUT;
        let (n, from) = match timeout_at(until, sock.recv_from(&mut buf)).await {
            Ok(got) => got.map_err(|e| format!("receiving: {e}"))?,
            Err(_) => {
                misses += 1;
                if misses > MAX_RETRIES {
                    return Err(format!("timed out at block {next} ({} bytes)", data.len()));
                }
                retransmits.fetch_add(1, Ordering::Relaxed);
                send(&sock, &last_sent, peer.unwrap_or(first)).await?;
                continue;
            }
        };
        if peer.is_some_and(|p| p != from) || from.ip() != first.ip() {
            continue; // another transfer ID: not ours (RFC 1350 §4)
        }
        let packet = &buf[..n];
        if packet.len() < 2 {
            continue;
        }
        peer = Some(from);
        misses = 0;
        match u16::from_be_bytes([packet[0], packet[1]]) {
            3 if packet.len() >= 4 => {
                let block = u16::from_be_bytes([packet[2], packet[3]]);
                if block == next {
                    data.extend_from_slice(&packet[4..]);
                    last_sent = ack(block);
                    send(&sock, &last_sent, from).await?;
                    if packet.len() - 4 < size {
                        return Ok(data);
                    }
                    next = next.wrapping_add(1);
                } else if block == next.wrapping_sub(1) {
                    send(&sock, &last_sent, from).await?; // our ACK was lost
                }
            }
            5 => {
                let code = packet
                    .get(2..4)
                    .map_or(0, |c| u16::from_be_bytes([c[0], c[1]]));
                let text = packet.get(4..).map(c_text).unwrap_or_default();
                return Err(format!("server sent ERROR {code} \"{text}\""));
            }
            6 if next == 1 => {
                size = oack_blksize(&packet[2..]).unwrap_or(512);
                last_sent = ack(0);
                send(&sock, &last_sent, from).await?;
            }
            _ => {}
        }
    }
}

fn ack(block: u16) -> Vec<u8> {
    let b = block.to_be_bytes();
    vec![0, 4, b[0], b[1]]
}

async fn send(sock: &UdpSocket, packet: &[u8], to: SocketAddr) -> Result<(), String> {
    sock.send_to(packet, to)
        .await
        .map(|_| ())
        .map_err(|e| format!("sending to {to}: {e}"))
}

/// The `blksize` an OACK granted.
fn oack_blksize(options: &[u8]) -> Option<usize> {
    let mut parts = options.split(|&c| c == 0);
    while let (Some(name), Some(value)) = (parts.next(), parts.next()) {
        if name.eq_ignore_ascii_case(b"blksize") {
            return std::str::from_utf8(value).ok()?.parse().ok();
        }
    }
    None
}

/// The NUL-terminated message of an ERROR packet.
fn c_text(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&c| c == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

//! One read transfer on its own UDP port: OACK, then rounds of DATA until the last ACK.
//!
//! The file is read in large chunks ([`CHUNK`]) with positioned reads on the blocking pool;
//! each block then costs one `sendto` and each ACK one `recvfrom`. After `timeout` without
//! an ACK the round is sent again from the first unacknowledged block, with the window
//! halved (see `window`), at most `retries` times in a row; the whole transfer must end
//! within its deadline. Packets from any other address or port get ERROR 5 and change
//! nothing.

use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use super::TftpStats;
use super::options::Negotiated;
use super::packet::{self, ErrorCode, Packet};
use super::window::{AckOutcome, Window, wire_block};

/// Bytes read from the file at a time (at least one block).
const CHUNK: usize = 512 * 1024;
/// Receive buffer for ACKs: anything longer than an ACK is garbage anyway.
const RECV_BUF: usize = 1024;
/// Receive errors in a row tolerated while waiting for one ACK.
const MAX_SOCKET_ERRORS: u32 = 64;

/// Why a transfer did not complete.
#[derive(Debug, thiserror::Error)]
pub(super) enum TransferError {
    /// No acknowledgement came within the retries.
    #[error("no acknowledgement after {0} retransmissions")]
    TimedOut(u32),
    /// The client aborted with an ERROR packet.
    #[error("client sent error {code}: {message}")]
    ClientError {
        /// The client's error code.
        code: u16,
        /// The client's message.
        message: String,
    },
    /// Reading the file failed.
    #[error("reading the file failed: {0}")]
    Read(io::Error),
    /// The file got shorter while it was being sent.
    #[error("the file shrank during the transfer")]
    FileShrank,
    /// The socket failed.
    #[error("socket error: {0}")]
    Socket(io::Error),
    /// The server is shutting down.
    #[error("server shutting down")]
    Shutdown,
    /// The transfer ran past its deadline.
    #[error("the transfer took longer than {0:?}")]
    Deadline(std::time::Duration),
}

/// Everything one transfer needs.
pub(super) struct Transfer {
    /// The transfer's own socket (its TID).
    pub socket: UdpSocket,
    /// The client's address and port (its TID).
    pub peer: SocketAddr,
    /// The open file.
    pub file: Arc<std::fs::File>,
    /// The file size at open time; exactly this many bytes are sent.
    pub size: u64,
    /// The negotiated settings.
    pub neg: Negotiated,
    /// Retransmissions allowed in a row.
    pub retries: u32,
    /// The longest the whole transfer may take.
    pub deadline: std::time::Duration,
    /// Server counters.
    pub stats: Arc<TftpStats>,
    /// Cancelled when the transfer must stop (server shutdown).
    pub cancel: CancellationToken,
}

/// The retransmission timer and the shutdown signal, pinned once per transfer.
struct Waits {
    timer: Pin<Box<tokio::time::Sleep>>,
    cancelled: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl Waits {
    /// Arms the timer to fire `timeout` from now.
    fn arm(&mut self, timeout: std::time::Duration) {
        self.timer
            .as_mut()
            .reset(tokio::time::Instant::now() + timeout);
    }
}

/// A chunk of the file held in memory.
struct Cache {
    start: u64,
    data: Vec<u8>,
}

impl Transfer {
    /// Runs the transfer to its end; on success returns the bytes sent.
    pub(super) async fn run(mut self) -> Result<u64, TransferError> {
        let deadline = self.deadline;
        let result = tokio::time::timeout(deadline, self.run_inner())
            .await
            .unwrap_or(Err(TransferError::Deadline(deadline)));
        if let Err(e) = &result {
            let (code, message) = match e {
                TransferError::ClientError { .. } | TransferError::TimedOut(_) => return result,
                TransferError::Shutdown => (ErrorCode::NotDefined, "server shutting down"),
                TransferError::Deadline(_) => (ErrorCode::NotDefined, "transfer took too long"),
                _ => (ErrorCode::NotDefined, "transfer failed"),
            };
            let _ = self.send_error(self.peer, code, message).await;
        }
        result
    }

    async fn run_inner(&mut self) -> Result<u64, TransferError> {
        let mut recv = vec![0u8; RECV_BUF];
        // One timer and one cancellation waiter for the whole transfer: re-arming them per
        // block costs less than creating and registering new ones.
        let mut waits = Waits {
            timer: Box::pin(tokio::time::sleep(self.neg.timeout)),
            cancelled: Box::pin(self.cancel.clone().cancelled_owned()),
        };
        if !self.neg.oack.is_empty() {
            self.negotiate(&mut recv, &mut waits).await?;
        }
        let blksize = usize::from(self.neg.blksize);
        let mut window = Window::new(self.size, self.neg.blksize, self.neg.windowsize);
        let mut cache = Cache {
            start: 0,
            data: Vec::with_capacity(
                CHUNK
                    .max(blksize)
                    .min(usize::try_from(self.size).unwrap_or(CHUNK)),
            ),
        };
        let mut out = Vec::with_capacity(packet::DATA_HEADER_LEN + blksize);
        let mut retries_left = self.retries;
        let mut round = window.next_round();
        loop {
            for block in round.clone() {
                let off = (block - 1) * blksize as u64;
                let len = (self.size - off).min(blksize as u64) as usize;
                self.fill(&mut cache, off, len).await?;
                let at = (off - cache.start) as usize;
                out.clear();
                packet::write_data_header(&mut out, wire_block(block));
                let payload = cache
                    .data
                    .get(at..at + len)
                    .ok_or(TransferError::FileShrank)?;
                out.extend_from_slice(payload);
                self.socket
                    .send_to(&out, self.peer)
                    .await
                    .map_err(TransferError::Socket)?;
            }
            waits.arm(self.neg.timeout);
            loop {
                match self.recv_ack(&mut recv, &mut waits).await? {
                    None => {
                        if retries_left == 0 {
                            return Err(TransferError::TimedOut(self.retries));
                        }
                        retries_left -= 1;
                        TftpStats::bump(&self.stats.retransmissions);
                        window.on_timeout();
                        round = window.next_round();
                        break;
                    }
                    Some(ack) => match window.on_ack(ack) {
                        AckOutcome::Done => return Ok(self.size),
                        AckOutcome::Advanced => {
                            retries_left = self.retries;
                            round = window.next_round();
                            break;
                        }
                        AckOutcome::Resend => {
                            TftpStats::bump(&self.stats.retransmissions);
                            round = window.next_round();
                            break;
                        }
                        AckOutcome::Ignore => {}
                    },
                }
            }
        }
    }

    /// Sends the OACK until the client acknowledges it with ACK 0.
    async fn negotiate(&mut self, recv: &mut [u8], waits: &mut Waits) -> Result<(), TransferError> {
        let oack = Packet::Oack(self.neg.oack.clone()).to_bytes();
        let mut retries_left = self.retries;
        loop {
            self.socket
                .send_to(&oack, self.peer)
                .await
                .map_err(TransferError::Socket)?;
            waits.arm(self.neg.timeout);
            loop {
                match self.recv_ack(recv, waits).await? {
                    Some(0) => return Ok(()),
                    Some(_) => {}
                    None => break,
                }
            }
            if retries_left == 0 {
                return Err(TransferError::TimedOut(self.retries));
            }
            retries_left -= 1;
            TftpStats::bump(&self.stats.retransmissions);
        }
    }

    /// Waits for an ACK from the peer until the armed timer fires: `Some(block)`, or `None`
    /// on timeout. Answers strangers with ERROR 5, drops garbage, ends on the peer's ERROR.
    async fn recv_ack(
        &self,
        buf: &mut [u8],
        waits: &mut Waits,
    ) -> Result<Option<u16>, TransferError> {
        let mut socket_errors = 0u32;
        loop {
            let received = tokio::select! {
                biased;
                r = self.socket.recv_from(buf) => r,
                () = waits.timer.as_mut() => return Ok(None),
                () = waits.cancelled.as_mut() => return Err(TransferError::Shutdown),
            };
            let (n, from) = match received {
                Ok(r) => r,
                // ICMP errors reported on the socket, interrupted calls: keep waiting, a
                // bounded number of times.
                Err(e) => {
                    socket_errors += 1;
                    if socket_errors > MAX_SOCKET_ERRORS {
                        return Err(TransferError::Socket(e));
                    }
                    continue;
                }
            };
            let bytes = buf.get(..n).unwrap_or_default();
            if from != self.peer {
                TftpStats::bump(&self.stats.packets_wrong_tid);
                let _ = self
                    .send_error(from, ErrorCode::UnknownTid, "unknown transfer ID")
                    .await;
                continue;
            }
            if let Ok(block) = packet::decode_ack(bytes) {
                return Ok(Some(block));
            }
            match Packet::decode(bytes) {
                Ok(Packet::Error { code, message }) => {
                    return Err(TransferError::ClientError {
                        code: code.to_u16(),
                        message,
                    });
                }
                Ok(_) => TftpStats::bump(&self.stats.packets_unexpected),
                Err(_) => TftpStats::bump(&self.stats.packets_malformed),
            }
        }
    }

    /// Makes sure `cache` holds bytes `off..off + len` of the file.
    async fn fill(&self, cache: &mut Cache, off: u64, len: usize) -> Result<(), TransferError> {
        let end = cache.start + cache.data.len() as u64;
        if off >= cache.start && off + len as u64 <= end {
            return Ok(());
        }
        let want = (self.size - off).min(CHUNK.max(len) as u64) as usize;
        let mut data = std::mem::take(&mut cache.data);
        let file = Arc::clone(&self.file);
        let joined = tokio::task::spawn_blocking(move || {
            data.clear();
            data.resize(want, 0);
            let r = file.read_exact_at(&mut data, off);
            (data, r)
        })
        .await;
        let (data, read) = joined.map_err(|e| TransferError::Read(io::Error::other(e)))?;
        cache.start = off;
        cache.data = data;
        match read {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                cache.data.clear();
                Err(TransferError::FileShrank)
            }
            Err(e) => {
                cache.data.clear();
                Err(TransferError::Read(e))
            }
        }
    }

    async fn send_error(&self, to: SocketAddr, code: ErrorCode, message: &str) -> io::Result<()> {
        let p = Packet::Error {
            code,
            message: message.to_owned(),
        };
        self.socket.send_to(&p.to_bytes(), to).await.map(|_| ())
    }
}

/// Throughput in KiB/s for the transfer log line.
pub(super) fn rate_kib_s(bytes: u64, started: Instant) -> u64 {
    let secs = started.elapsed().as_secs_f64();
    if secs <= 0.0 {
        return 0;
    }
    (bytes as f64 / 1024.0 / secs) as u64
}

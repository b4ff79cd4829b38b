//! Counters of what the TFTP server saw, shared lock-free with whoever reports them.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of the TFTP server since it was bound. Every field but `running` only ever grows.
#[derive(Debug, Default)]
pub struct TftpStats {
    /// Read requests received (well-formed RRQs).
    pub requests: AtomicU64,
    /// Transfers whose last block was acknowledged.
    pub transfers_completed: AtomicU64,
    /// Transfers that started (OACK or DATA sent) but did not complete.
    pub transfers_failed: AtomicU64,
    /// Requests answered with an error: not found, denied, write request, bad mode.
    pub requests_refused: AtomicU64,
    /// Requests refused because the cap on concurrent transfers was reached.
    pub requests_busy: AtomicU64,
    /// Requests refused because their client address had too many transfers running.
    pub requests_client_limit: AtomicU64,
    /// Datagrams dropped because they did not decode.
    pub packets_malformed: AtomicU64,
    /// Requests dropped because they were longer than RFC 2347 allows (512 bytes).
    pub packets_oversized: AtomicU64,
    /// Well-formed packets that made no sense where they arrived (a DATA on port 69, …).
    pub packets_unexpected: AtomicU64,
    /// Packets from a wrong transfer ID (address or port), answered with ERROR 5.
    pub packets_wrong_tid: AtomicU64,
    /// Rounds of DATA (or OACKs) sent again after a timeout or a duplicate ACK.
    pub retransmissions: AtomicU64,
    /// File bytes of completed transfers.
    pub bytes_sent: AtomicU64,
    /// Transfers running now (a gauge: the one field that also goes down).
    pub running: AtomicU64,
}

/// Counts one running transfer in [`TftpStats::running`] while it lives.
pub(crate) struct Running<'a>(&'a TftpStats);

impl<'a> Running<'a> {
    /// A transfer starts.
    pub(crate) fn start(stats: &'a TftpStats) -> Running<'a> {
        stats.running.fetch_add(1, Ordering::Relaxed);
        Running(stats)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::Relaxed);
    }
}

impl TftpStats {
    /// Adds one to `counter`.
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads a counter (relaxed; counters are independent).
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

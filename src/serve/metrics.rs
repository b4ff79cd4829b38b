//! Counters of `ovl serve` for `/metrics` (Prometheus text format, rendered by
//! `http::metrics`): HTTP bytes and requests in flight, and the other services' counters,
//! which are attached once those services are bound (TFTP's and DHCP's own stats, the lease
//! table and pool sizes), plus watch mode's build durations.
//!
//! Boot events by kind and status are counted by [`crate::serve::events::BootEvents`]; reload
//! errors by the live project ([`crate::serve::http::LiveProject`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::serve::dhcp::DhcpStats;
use crate::serve::dhcp::LeaseTable;
use crate::serve::tftp::TftpStats;

/// Upper bounds (seconds) of the build-duration histogram's buckets.
pub(crate) const DURATION_BUCKETS: [f64; 10] =
    [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// A Prometheus histogram of durations in seconds.
#[derive(Debug, Clone, Default)]
pub(crate) struct Histogram {
    /// Observations at or below each bound of [`DURATION_BUCKETS`].
    pub(crate) buckets: [u64; DURATION_BUCKETS.len()],
    /// Sum of the observations.
    pub(crate) sum: f64,
    /// Number of observations.
    pub(crate) count: u64,
}

impl Histogram {
    /// Counts one observation of `secs`.
    pub(crate) fn observe(&mut self, secs: f64) {
        for (b, le) in self.buckets.iter_mut().zip(DURATION_BUCKETS) {
            if secs <= le {
                *b += 1;
            }
        }
        self.sum += secs;
        self.count += 1;
    }
}

/// The DHCP server's counters and lease table, once it is bound.
#[derive(Debug)]
pub(crate) struct DhcpMetrics {
    /// Its counters.
    pub(crate) stats: Arc<DhcpStats>,
    /// Its leases.
    pub(crate) leases: Arc<LeaseTable>,
    /// Addresses in its pools (0 in proxy mode).
    pub(crate) pool_size: u64,
}

/// Everything `/metrics` reports that is not kept elsewhere.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    /// HTTP body bytes sent.
    pub(crate) http_bytes: AtomicU64,
    /// HTTP requests whose response body is not done yet.
    pub(crate) http_in_flight: AtomicU64,
    /// TFTP's counters, once bound.
    pub(crate) tftp: OnceLock<Arc<TftpStats>>,
    /// DHCP's counters, once bound.
    pub(crate) dhcp: OnceLock<DhcpMetrics>,
    /// Durations of watch mode's first build (`build`) and of later rebuilds (`rebuild`).
    pub(crate) builds: Mutex<(Histogram, Histogram)>,
    /// Rebuilds (or builds) in which some device failed or the input was broken.
    pub(crate) build_errors: AtomicU64,
}

/// One HTTP request in flight, from its arrival until this is dropped (its body done, or the
/// request abandoned before a response).
#[derive(Debug)]
pub(crate) struct InFlight(Arc<Metrics>);

impl InFlight {
    /// Counts `bytes` of its response body as sent.
    pub(crate) fn sent(&self, bytes: u64) {
        self.0.http_bytes.fetch_add(bytes, Ordering::Relaxed);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // Never below zero, whatever the order of updates.
        let _ = self
            .0
            .http_in_flight
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_sub(1))
            });
    }
}

impl Metrics {
    /// A request arrived: in flight until the guard is dropped.
    pub(crate) fn http_started(self: &Arc<Self>) -> InFlight {
        self.http_in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(self))
    }

    /// Watch mode built (first) or rebuilt archives in `secs`.
    pub(crate) fn observe_build(&self, first: bool, secs: f64) {
        let mut g = self.builds.lock().unwrap_or_else(|p| p.into_inner());
        if first { &mut g.0 } else { &mut g.1 }.observe(secs);
    }

    /// A build or rebuild failed (a device, or the whole input).
    pub(crate) fn build_failed(&self) {
        self.build_errors.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let mut h = Histogram::default();
        h.observe(0.02);
        h.observe(3.0);
        h.observe(100.0);
        assert_eq!(h.buckets[0], 0);
        assert_eq!(h.buckets[1], 1);
        assert_eq!(h.buckets[7], 2);
        assert_eq!(h.buckets[9], 2);
        assert_eq!(h.count, 3);
        assert!((h.sum - 103.02).abs() < 1e-9);
    }

    #[test]
    fn requests_are_in_flight_while_their_guard_lives() {
        let m = Arc::new(Metrics::default());
        let a = m.http_started();
        let b = m.http_started();
        assert_eq!(m.http_in_flight.load(Ordering::Relaxed), 2);
        a.sent(10);
        drop(a);
        b.sent(5);
        drop(b);
        assert_eq!(m.http_in_flight.load(Ordering::Relaxed), 0);
        assert_eq!(m.http_bytes.load(Ordering::Relaxed), 15);
    }
}

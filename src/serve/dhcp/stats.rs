//! Counters of what the DHCP server saw and did, readable while it runs.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// Live counters, shared (`Arc`) between the server and its observers.
#[derive(Debug, Default)]
pub struct DhcpStats {
    /// Datagrams received.
    pub received: AtomicU64,
    /// Datagrams dropped because they were not well-formed DHCP messages.
    pub malformed: AtomicU64,
    /// Well-formed messages deliberately not answered (not for us, not PXE in proxy
    /// mode, no pool for the subnet, …).
    pub ignored: AtomicU64,
    /// DHCPOFFERs sent.
    pub offers: AtomicU64,
    /// DHCPACKs sent (requests and informs).
    pub acks: AtomicU64,
    /// DHCPNAKs sent.
    pub naks: AtomicU64,
    /// DHCPRELEASEs honoured.
    pub releases: AtomicU64,
    /// DHCPDECLINEs honoured.
    pub declines: AtomicU64,
    /// Replies that could not be sent.
    pub send_errors: AtomicU64,
}

/// A point-in-time copy of [`DhcpStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StatsSnapshot {
    /// Datagrams received.
    pub received: u64,
    /// Malformed datagrams dropped.
    pub malformed: u64,
    /// Messages not answered.
    pub ignored: u64,
    /// Offers sent.
    pub offers: u64,
    /// Acks sent.
    pub acks: u64,
    /// Naks sent.
    pub naks: u64,
    /// Releases honoured.
    pub releases: u64,
    /// Declines honoured.
    pub declines: u64,
    /// Replies that could not be sent.
    pub send_errors: u64,
}

impl DhcpStats {
    /// Adds one to `counter`.
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads every counter.
    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            received: get(&self.received),
            malformed: get(&self.malformed),
            ignored: get(&self.ignored),
            offers: get(&self.offers),
            acks: get(&self.acks),
            naks: get(&self.naks),
            releases: get(&self.releases),
            declines: get(&self.declines),
            send_errors: get(&self.send_errors),
        }
    }
}

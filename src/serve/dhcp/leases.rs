//! The lease table: who holds which address until when, shared (`Arc`) with the HTTP server
//! and `/status`, and persisted atomically as JSON so that a restart keeps every address.
//!
//! One address is held by at most one client: the table is keyed by address. Times are Unix
//! seconds supplied by the caller, so the decision core stays pure and testable.

use std::collections::BTreeMap;
use std::io;
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use crate::mac::Mac;

/// Where a lease stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LeaseState {
    /// Offered (DHCPOFFER) and reserved for a short time, not yet acknowledged.
    Offered,
    /// Acknowledged (DHCPACK): the client uses it until it expires.
    Bound,
    /// Released by the client (DHCPRELEASE); kept so that it gets the same address back.
    Released,
}

/// One client's hold on one address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The client's MAC, lowercase with colons in JSON.
    #[serde(with = "mac_text")]
    pub mac: Mac,
    /// The address.
    pub ip: Ipv4Addr,
    /// Unix time (seconds) at which the lease ends.
    pub expires: u64,
    /// Offered, bound or released.
    pub state: LeaseState,
    /// Host name the client sent (option 12), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
}

impl Lease {
    /// Whether the lease still holds its address at `now`.
    pub fn is_active(&self, now: u64) -> bool {
        self.state != LeaseState::Released && self.expires > now
    }
}

/// A MAC in the lease file: lowercase with colons.
mod mac_text {
    use super::Mac;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    /// Writes `52:54:00:12:34:56`.
    pub(super) fn serialize<S: Serializer>(mac: &Mac, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(mac)
    }

    /// Reads any spelling [`Mac`] accepts.
    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Mac, D::Error> {
        let text = String::deserialize(d)?;
        text.parse()
            .map_err(|_| D::Error::custom(format!("invalid MAC {text:?}")))
    }
}

/// The persisted form.
#[derive(Debug, Default, Serialize, Deserialize)]
struct LeaseFile {
    leases: Vec<Lease>,
    #[serde(default)]
    declined: BTreeMap<Ipv4Addr, u64>,
}

/// The table behind its lock: the leases by address and the quarantined addresses.
#[derive(Debug, Default)]
pub(crate) struct Inner {
    /// Every lease record by its address.
    pub(crate) by_ip: BTreeMap<Ipv4Addr, Lease>,
    /// Declined addresses and the Unix time until which they stay out of the pool.
    pub(crate) declined: BTreeMap<Ipv4Addr, u64>,
    /// Changed since the last save.
    pub(crate) dirty: bool,
}

impl Inner {
    /// The lease a MAC has, whatever its state.
    pub(crate) fn for_mac(&self, mac: &Mac) -> Option<&Lease> {
        self.by_ip.values().find(|l| &l.mac == mac)
    }

    /// Whether `ip` is unavailable to `mac` at `now`: another client holds it (bound or
    /// offered, unexpired) or it is quarantined after a decline.
    pub(crate) fn taken_by_other(&self, ip: Ipv4Addr, mac: &Mac, now: u64) -> bool {
        if self.declined.get(&ip).is_some_and(|until| *until > now) {
            return true;
        }
        self.by_ip
            .get(&ip)
            .is_some_and(|l| &l.mac != mac && l.is_active(now))
    }

    /// Gives `ip` to `mac`, dropping any other record of that MAC and of that address.
    pub(crate) fn assign(&mut self, lease: Lease) {
        let mac = lease.mac;
        self.by_ip.retain(|ip, l| l.mac != mac && *ip != lease.ip);
        self.by_ip.insert(lease.ip, lease);
        self.dirty = true;
    }
}

/// The shared lease table.
#[derive(Debug, Default)]
pub struct LeaseTable {
    inner: Mutex<Inner>,
}

impl LeaseTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// The table, locked (a poisoned lock is taken over).
    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        // A poisoned lock only means another thread panicked mid-update; the map itself is
        // still consistent (every update is a single insert/remove).
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The address currently leased (bound, unexpired) to `mac`.
    pub fn lease_for_mac(&self, mac: &Mac) -> Option<Ipv4Addr> {
        let now = unix_now();
        let inner = self.lock();
        inner
            .for_mac(mac)
            .filter(|l| l.state == LeaseState::Bound && l.is_active(now))
            .map(|l| l.ip)
    }

    /// The MAC holding a bound, unexpired lease on `ip`.
    pub fn mac_for_ip(&self, ip: Ipv4Addr) -> Option<Mac> {
        let now = unix_now();
        let inner = self.lock();
        inner
            .by_ip
            .get(&ip)
            .filter(|l| l.state == LeaseState::Bound && l.is_active(now))
            .map(|l| l.mac)
    }

    /// Every lease record (offered, bound, released, expired), ordered by address.
    pub fn list(&self) -> Vec<Lease> {
        self.lock().by_ip.values().cloned().collect()
    }

    /// Takes the "changed since the last save" flag.
    pub(crate) fn take_dirty(&self) -> bool {
        std::mem::take(&mut self.lock().dirty)
    }

    /// Loads a table from `path`; a missing file gives an empty table. A file that does not
    /// parse is an `InvalidData` error naming the path.
    pub(crate) fn load(path: &Path) -> io::Result<Self> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Self::new()),
            Err(e) => return Err(e),
        };
        Self::parse(&bytes).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        })
    }

    /// A table from the bytes of a lease file.
    pub(crate) fn parse(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        let file: LeaseFile = serde_json::from_slice(bytes)?;
        let mut inner = Inner {
            declined: file.declined,
            ..Inner::default()
        };
        for lease in file.leases {
            inner.assign(lease);
        }
        inner.dirty = false;
        Ok(LeaseTable {
            inner: Mutex::new(inner),
        })
    }

    /// Writes the table to `path` atomically: a temporary file in the same folder, fsync,
    /// rename, then fsync of the folder.
    pub(crate) fn save(&self, path: &Path) -> io::Result<()> {
        let json = {
            let inner = self.lock();
            let file = LeaseFile {
                leases: inner.by_ip.values().cloned().collect(),
                declined: inner.declined.clone(),
            };
            serde_json::to_vec_pretty(&file).map_err(io::Error::other)?
        };
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let mut bytes = json;
        bytes.push(b'\n');
        crate::build::publish::write_atomic(path, &bytes, dir, ".leases", None)
            .map_err(|e| io::Error::other(e.to_string()))?;
        Ok(())
    }
}

/// The current Unix time in seconds.
pub(super) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(mac: u8, ip: [u8; 4], expires: u64) -> Lease {
        Lease {
            mac: Mac([2, 0, 0, 0, 0, mac]),
            ip: ip.into(),
            expires,
            state: LeaseState::Bound,
            hostname: None,
        }
    }

    #[test]
    fn one_client_per_address_and_one_address_per_client() {
        let table = LeaseTable::new();
        let mut inner = table.lock();
        inner.assign(lease(1, [10, 0, 0, 5], u64::MAX));
        inner.assign(lease(1, [10, 0, 0, 6], u64::MAX));
        inner.assign(lease(2, [10, 0, 0, 6], u64::MAX));
        let all: Vec<_> = inner.by_ip.values().cloned().collect();
        assert_eq!(all, vec![lease(2, [10, 0, 0, 6], u64::MAX)]);
    }

    #[test]
    fn save_and_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("leases.json");
        let table = LeaseTable::new();
        table.lock().assign(lease(1, [10, 0, 0, 5], u64::MAX));
        table.lock().declined.insert([10, 0, 0, 9].into(), 77);
        table.save(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"02:00:00:00:00:01\""), "{text}");
        let back = LeaseTable::load(&path).unwrap();
        assert_eq!(back.list(), table.list());
        assert_eq!(
            back.lease_for_mac(&Mac([2, 0, 0, 0, 0, 1])),
            Some([10, 0, 0, 5].into())
        );
        assert_eq!(
            back.mac_for_ip([10, 0, 0, 5].into()),
            Some(Mac([2, 0, 0, 0, 0, 1]))
        );
        assert_eq!(back.lock().declined.get(&[10, 0, 0, 9].into()), Some(&77));
        // Only the lease file is left in the folder.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        assert!(
            LeaseTable::load(&dir.path().join("missing"))
                .unwrap()
                .list()
                .is_empty()
        );
    }
}

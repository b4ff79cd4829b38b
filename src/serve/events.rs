//! Recent boot events per device, for `/status` and the status page: a bounded ring buffer per
//! MAC (DHCP offer/ack/nak sent, boot script served, iPXE binary, kernel/initramfs/modloop
//! served, config served, refused or not found), and totals by kind and status for `/metrics`.
//!
//! Memory is bounded twice: at most [`BootEvents::per_mac`] events a MAC, and at most
//! [`BootEvents::max_macs`] MACs (the one updated longest ago is forgotten first). Events
//! whose device is not known (a kernel fetched by an address with no neighbour entry and no
//! earlier script request) go into one extra ring of the same size, with their client.

use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::mac::Mac;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum EventKind {
    /// A DHCPOFFER sent to the device (full or proxy DHCP).
    DhcpOffer,
    /// A DHCPACK sent to the device.
    DhcpAck,
    /// A DHCPNAK sent to the device.
    DhcpNak,
    /// `/boot.ipxe` or `/gpxe-script` served.
    Script,
    /// An iPXE binary (`undionly.kpxe`, `ipxe.efi`, …) served over HTTP or TFTP.
    Ipxe,
    /// `vmlinuz-*` served.
    Kernel,
    /// `initramfs-*` served.
    Initramfs,
    /// `modloop-*` served.
    Modloop,
    /// `configs/MAC.tar.gz` served (published, or built on demand for a blank device).
    ConfigServed,
    /// `configs/MAC.tar.gz` refused (owner check failed).
    ConfigRefused,
    /// `configs/MAC.tar.gz` not found (the device boots stock Alpine).
    ConfigNotFound,
}

impl EventKind {
    /// Every kind, in boot-chain order.
    #[cfg(test)]
    pub(crate) const ALL: [EventKind; 11] = [
        EventKind::DhcpOffer,
        EventKind::DhcpAck,
        EventKind::DhcpNak,
        EventKind::Ipxe,
        EventKind::Script,
        EventKind::Kernel,
        EventKind::Initramfs,
        EventKind::Modloop,
        EventKind::ConfigServed,
        EventKind::ConfigRefused,
        EventKind::ConfigNotFound,
    ];

    /// The kind's name, as in `/status` and `/metrics`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            EventKind::DhcpOffer => "dhcp_offer",
            EventKind::DhcpAck => "dhcp_ack",
            EventKind::DhcpNak => "dhcp_nak",
            EventKind::Script => "script",
            EventKind::Ipxe => "ipxe",
            EventKind::Kernel => "kernel",
            EventKind::Initramfs => "initramfs",
            EventKind::Modloop => "modloop",
            EventKind::ConfigServed => "config_served",
            EventKind::ConfigRefused => "config_refused",
            EventKind::ConfigNotFound => "config_not_found",
        }
    }

    /// The boot-chain kind of a plain site file, by its name, or `None` for other files.
    pub(crate) fn of_file(path: &str) -> Option<EventKind> {
        let name = path.rsplit('/').next().unwrap_or(path);
        if name.starts_with("vmlinuz") {
            Some(EventKind::Kernel)
        } else if name.starts_with("initramfs") {
            Some(EventKind::Initramfs)
        } else if name.starts_with("modloop") {
            Some(EventKind::Modloop)
        } else if name.ends_with(".kpxe") || name.ends_with(".efi") || name.ends_with(".pxe") {
            Some(EventKind::Ipxe)
        } else {
            None
        }
    }
}

/// One boot event.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct BootEvent {
    /// When it ended, in seconds since the Unix epoch.
    pub time: u64,
    /// The same time as an HTTP date, for people.
    pub date: ShownDate,
    /// What happened.
    pub kind: EventKind,
    /// The requested path.
    pub file: String,
    /// The client's address.
    pub client: IpAddr,
    /// The HTTP status sent (0 for a TFTP transfer or a DHCP reply, which have none).
    pub status: u16,
    /// Body bytes sent.
    pub bytes: u64,
    /// How long the request took, in milliseconds.
    pub duration_ms: u64,
}

impl BootEvent {
    /// An event that ends now.
    pub(crate) fn now(
        kind: EventKind,
        file: String,
        client: IpAddr,
        status: u16,
        bytes: u64,
        duration_ms: u64,
    ) -> BootEvent {
        let now = SystemTime::now();
        BootEvent {
            time: now
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            date: ShownDate(now),
            kind,
            file,
            client,
            status,
            bytes,
            duration_ms,
        }
    }
}

/// A time that serializes as an HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`), formatted
/// when it is shown rather than for every event recorded.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ShownDate(SystemTime);

impl Serialize for ShownDate {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&httpdate::HttpDate::from(self.0))
    }
}

#[derive(Debug)]
struct Inner {
    /// Events by MAC, the least recently updated forgotten first.
    by_mac: lru::LruCache<Mac, VecDeque<BootEvent>>,
    /// Events of unknown devices.
    unattributed: VecDeque<BootEvent>,
    /// The MAC last named by each client (script `?mac=`, config path), to attribute its
    /// later kernel and initramfs fetches; bounded like `by_mac`.
    mac_by_client: lru::LruCache<IpAddr, Mac>,
    /// Every event ever recorded, by kind and status (never forgotten, for `/metrics`).
    totals: BTreeMap<(&'static str, u16), u64>,
}

/// The ring buffers of recent boot events; shared between request handlers.
#[derive(Debug)]
pub(crate) struct BootEvents {
    /// Events kept per MAC.
    pub per_mac: usize,
    /// MACs (and client addresses) remembered.
    pub max_macs: usize,
    inner: Mutex<Inner>,
    /// Counts changes, so that `/status` knows when its cached document is out of date.
    version: AtomicU64,
}

impl Default for BootEvents {
    /// 20 events a MAC, 4096 MACs.
    fn default() -> Self {
        BootEvents::new(20, 4096)
    }
}

impl BootEvents {
    /// Keeps `per_mac` events for each of at most `max_macs` MACs.
    pub(crate) fn new(per_mac: usize, max_macs: usize) -> BootEvents {
        BootEvents {
            per_mac: per_mac.max(1),
            max_macs: max_macs.max(1),
            inner: Mutex::new(Inner {
                // Bounded by hand (`max_macs`): pushes past it drop the least recent.
                by_mac: lru::LruCache::unbounded(),
                unattributed: VecDeque::new(),
                mac_by_client: lru::LruCache::unbounded(),
                totals: BTreeMap::new(),
            }),
            version: AtomicU64::new(0),
        }
    }

    /// A number that changes whenever an event is recorded or a client names a MAC.
    pub(crate) fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Marks a change made under the lock (called before the guard is dropped, so that
    /// whoever reads the new version then reads the change too).
    fn changed(&self) {
        self.version.fetch_add(1, Ordering::Release);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data (every update is one push).
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Remembers that `client` asked for `mac`'s script or config.
    pub(crate) fn note_client(&self, client: IpAddr, mac: Mac) {
        let mut g = self.lock();
        g.mac_by_client.push(client.to_canonical(), mac);
        while g.mac_by_client.len() > self.max_macs {
            g.mac_by_client.pop_lru();
        }
        self.changed();
        drop(g);
    }

    /// The MAC `client` last named, if any.
    pub(crate) fn client_mac(&self, client: IpAddr) -> Option<Mac> {
        self.lock()
            .mac_by_client
            .peek(&client.to_canonical())
            .copied()
    }

    /// Records an event for `mac`, or as unattributed when `mac` is `None`.
    pub(crate) fn record(&self, mac: Option<Mac>, event: BootEvent) {
        let mut g = self.lock();
        *g.totals
            .entry((event.kind.name(), event.status))
            .or_default() += 1;
        let ring = match mac {
            None => &mut g.unattributed,
            Some(m) => g.by_mac.get_or_insert_mut(m, VecDeque::new),
        };
        if ring.len() >= self.per_mac {
            ring.pop_front();
        }
        ring.push_back(event);
        while g.by_mac.len() > self.max_macs {
            g.by_mac.pop_lru();
        }
        self.changed();
        drop(g);
    }

    /// The events of `mac`, oldest first.
    pub(crate) fn of(&self, mac: &Mac) -> Vec<BootEvent> {
        self.lock()
            .by_mac
            .peek(mac)
            .map(|r| r.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Every MAC with events, and its events oldest first, in MAC order.
    pub(crate) fn all(&self) -> Vec<(Mac, Vec<BootEvent>)> {
        let g = self.lock();
        let mut v: Vec<_> = g
            .by_mac
            .iter()
            .map(|(m, r)| (*m, r.iter().cloned().collect()))
            .collect();
        v.sort_by_key(|(m, _)| *m);
        v
    }

    /// How many events of each kind and status were recorded since the start.
    pub(crate) fn totals(&self) -> Vec<(&'static str, u16, u64)> {
        self.lock()
            .totals
            .iter()
            .map(|((k, s), n)| (*k, *s, *n))
            .collect()
    }

    /// Events of unknown devices, oldest first.
    pub(crate) fn unattributed(&self) -> Vec<BootEvent> {
        self.lock().unattributed.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(n: u64) -> BootEvent {
        BootEvent::now(
            EventKind::Kernel,
            format!("vmlinuz-{n}"),
            "10.0.0.1".parse().unwrap(),
            200,
            n,
            1,
        )
    }

    fn mac(n: u8) -> Mac {
        Mac([0x52, 0x54, 0, 0, 0, n])
    }

    #[test]
    fn an_event_shows_its_time_as_an_http_date() {
        let e = ev(1);
        let json = serde_json::to_value(&e).unwrap();
        let date = httpdate::parse_http_date(json["date"].as_str().unwrap()).unwrap();
        let secs = date.duration_since(UNIX_EPOCH).unwrap().as_secs();
        assert_eq!(secs, e.time);
        assert_eq!(json["time"], e.time);
    }

    #[test]
    fn keeps_the_last_events_per_mac() {
        let e = BootEvents::new(3, 10);
        for n in 0..5 {
            e.record(Some(mac(1)), ev(n));
        }
        let got: Vec<u64> = e.of(&mac(1)).iter().map(|x| x.bytes).collect();
        assert_eq!(got, vec![2, 3, 4]);
        assert!(e.of(&mac(2)).is_empty());
    }

    #[test]
    fn forgets_the_least_recent_mac() {
        let e = BootEvents::new(2, 2);
        e.record(Some(mac(1)), ev(1));
        e.record(Some(mac(2)), ev(2));
        e.record(Some(mac(1)), ev(3));
        e.record(Some(mac(3)), ev(4));
        let macs: Vec<Mac> = e.all().into_iter().map(|(m, _)| m).collect();
        assert_eq!(macs, vec![mac(1), mac(3)]);
    }

    #[test]
    fn unattributed_ring_is_bounded() {
        let e = BootEvents::new(2, 2);
        for n in 0..4 {
            e.record(None, ev(n));
        }
        assert_eq!(e.unattributed().len(), 2);
    }

    #[test]
    fn clients_are_remembered_and_bounded() {
        let e = BootEvents::new(2, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        e.note_client(a, mac(1));
        assert_eq!(e.client_mac(a), Some(mac(1)));
        assert_eq!(
            e.client_mac("::ffff:10.0.0.1".parse().unwrap()),
            Some(mac(1))
        );
        e.note_client("10.0.0.2".parse().unwrap(), mac(2));
        e.note_client("10.0.0.3".parse().unwrap(), mac(3));
        assert_eq!(e.client_mac(a), None);
    }

    #[test]
    fn changes_move_the_version() {
        let e = BootEvents::new(2, 2);
        let v0 = e.version();
        e.record(Some(mac(1)), ev(1));
        let v1 = e.version();
        assert!(v1 > v0);
        let _ = e.of(&mac(1));
        assert_eq!(e.version(), v1, "reading changes nothing");
        e.note_client("10.0.0.1".parse().unwrap(), mac(1));
        assert!(e.version() > v1);
    }

    #[test]
    fn totals_count_every_event_by_kind_and_status() {
        let e = BootEvents::new(1, 1);
        for n in 0..3 {
            e.record(Some(mac(n)), ev(n.into()));
        }
        e.record(
            None,
            BootEvent::now(
                EventKind::DhcpOffer,
                "dhcp".into(),
                "10.0.0.1".parse().unwrap(),
                0,
                0,
                0,
            ),
        );
        assert_eq!(e.totals(), vec![("dhcp_offer", 0, 1), ("kernel", 200, 3)]);
        for k in EventKind::ALL {
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(json, format!("\"{}\"", k.name()));
        }
    }

    #[test]
    fn file_kinds() {
        assert_eq!(EventKind::of_file("vmlinuz-lts"), Some(EventKind::Kernel));
        assert_eq!(
            EventKind::of_file("/initramfs-lts"),
            Some(EventKind::Initramfs)
        );
        assert_eq!(EventKind::of_file("modloop-virt"), Some(EventKind::Modloop));
        assert_eq!(EventKind::of_file("undionly.kpxe"), Some(EventKind::Ipxe));
        assert_eq!(EventKind::of_file("data/readme"), None);
    }
}

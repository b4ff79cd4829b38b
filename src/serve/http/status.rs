//! `/status`: every inventory device with its archive's state on disk and its recent boot
//! events, plus the events of devices the inventory does not know.
//!
//! The document is computed off the request workers (on the blocking pool, serialization
//! included) and kept as shared bytes. A request is answered with the kept document when it
//! was computed for the same project generation and boot-events version less than
//! [`MAX_AGE`] ago (archive states on disk are that fresh), or when its computation started
//! after the request arrived. Otherwise the request computes a new one; requests arriving
//! meanwhile wait for it and share it, so any number of concurrent requests costs at most
//! two computations, and never a worker thread.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use serde_json::{Value, json};

use super::Shared;

use super::live::LiveProject;
use crate::serve::events::BootEvents;
use crate::serve::neighbours::Neighbours;

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The `/status` document. Blocking: it stats every device's archive. `lease` is the
/// address the DHCP server leased to the device (null without one).
pub(super) fn document(
    live: &LiveProject,
    events: &BootEvents,
    neighbours: &Neighbours,
    http: std::net::SocketAddr,
    started: SystemTime,
) -> Value {
    let snap = live.snapshot();
    let p = &snap.project;
    let mut known = BTreeSet::new();
    let devices: Vec<Value> = p
        .inventory
        .devices
        .values()
        .map(|d| {
            known.insert(d.mac);
            let info = snap.devices.get(&d.mac);
            let path = p.archive_path(&d.mac);
            let archive = match std::fs::metadata(&path) {
                Ok(m) => {
                    let mtime = m.modified().unwrap_or(UNIX_EPOCH);
                    json!({
                        "exists": true,
                        "size": m.len(),
                        "mtime": unix(mtime),
                        "modified": httpdate::fmt_http_date(mtime),
                    })
                }
                Err(_) => json!({ "exists": false, "size": null, "mtime": null }),
            };
            json!({
                "mac": d.mac,
                "profile": d.profile,
                "hostname": info.and_then(|i| i.hostname.clone()).or_else(|| d.hostname.clone()),
                "ip": d.ip,
                "lease": neighbours.address_of(&d.mac),
                "archive": archive,
                "error": info.and_then(|i| i.error.clone()),
                "events": events.of(&d.mac),
            })
        })
        .collect();
    let others: Vec<Value> = events
        .all()
        .into_iter()
        .filter(|(m, _)| !known.contains(m))
        .map(|(m, ev)| json!({ "mac": m, "events": ev }))
        .collect();
    json!({
        "server": {
            "version": env!("CARGO_PKG_VERSION"),
            "site": p.site.root,
            "http": http.to_string(),
            "started": unix(started),
            "project_generation": snap.generation,
            "project_loaded": unix(snap.loaded),
            "reload_error": live.last_error(),
            "default_profile": p.site.config.serve.default_profile,
            "configs_access": p.site.config.serve.configs_access,
        },
        "devices": devices,
        "other_devices": others,
        "unattributed_events": events.unattributed(),
    })
}

/// How long a document is reused while nothing else changed.
pub(super) const MAX_AGE: Duration = Duration::from_secs(1);

/// The last `/status` document and what it was computed from.
#[derive(Debug)]
struct Doc {
    started: Instant,
    key: (u64, u64),
    bytes: Bytes,
}

/// The kept `/status` document; the lock is held while one is computed.
#[derive(Debug, Default)]
pub(super) struct StatusCache {
    doc: tokio::sync::Mutex<Option<Doc>>,
}

/// The `/status` bytes for a request that arrived at `arrived`, kept or computed (see the
/// module documentation); `None` when the computation failed.
pub(super) async fn bytes(st: &Arc<Shared>, arrived: Instant) -> Option<Bytes> {
    let mut doc = st.status.doc.lock().await;
    let key = (st.live.snapshot().generation, st.events.version());
    if let Some(d) = doc.as_ref()
        && (d.started >= arrived || (d.key == key && d.started.elapsed() < MAX_AGE))
    {
        return Some(d.bytes.clone());
    }
    let started = Instant::now();
    let s = Arc::clone(st);
    let bytes = tokio::task::spawn_blocking(move || {
        let doc = document(&s.live, &s.events, &s.cfg.neighbours, s.local, s.started);
        let mut body = serde_json::to_vec_pretty(&doc).unwrap_or_default();
        body.push(b'\n');
        Bytes::from(body)
    })
    .await
    .ok()?;
    *doc = Some(Doc {
        started,
        key,
        bytes: bytes.clone(),
    });
    Some(bytes)
}

//! `/status`: every inventory device with its archive on disk and its state (built, stale,
//! missing, error), its recent boot events and the progress of its current boot, plus the
//! same for devices the inventory does not know; and the boot files the site names, each with
//! its size, the version `ovl fetch` recorded for it, and what is wrong with it if anything.
//!
//! The document is computed off the request workers (on the blocking pool, serialization
//! included) and kept as shared bytes; the status page at `/` is rendered once from the same
//! kept document. A request is answered with the kept document when it was computed for the
//! same project generation and boot-events version less than [`MAX_AGE`] ago (archive states
//! and boot files on disk are that fresh), or when its computation started after the request
//! arrived. Otherwise the request computes a new one; requests arriving meanwhile wait for it
//! and share it, so any number of concurrent requests costs at most two computations, and
//! never a worker thread.

use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use serde_json::{Value, json};

use super::Shared;

use super::live::LiveProject;
use super::page::{ArchiveStates, progress, unix_now};
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
    archive_states: &ArchiveStates,
) -> Value {
    let snap = live.snapshot();
    let p = &snap.project;
    let states = archive_states.get(&snap);
    let now = unix_now();
    let mut known = BTreeSet::new();
    let devices: Vec<Value> = p
        .inventory
        .devices
        .values()
        .map(|d| {
            known.insert(d.mac);
            let info = snap.devices.get(&d.mac);
            let path = p.archive_path(&d.mac);
            let state = states.as_ref().and_then(|s| s.get(&d.mac).copied());
            let archive = match std::fs::metadata(&path) {
                Ok(m) => {
                    let mtime = m.modified().unwrap_or(UNIX_EPOCH);
                    json!({
                        "exists": true,
                        "size": m.len(),
                        "mtime": unix(mtime),
                        "modified": httpdate::fmt_http_date(mtime),
                        "state": state,
                    })
                }
                Err(_) => json!({ "exists": false, "size": null, "mtime": null,
                    "state": state }),
            };
            let events = events.of(&d.mac);
            json!({
                "mac": d.mac,
                "profile": d.profile,
                "hostname": info.and_then(|i| i.hostname.clone()).or_else(|| d.hostname.clone()),
                "ip": d.ip,
                "lease": neighbours.address_of(&d.mac),
                "archive": archive,
                "error": info.and_then(|i| i.error.clone()),
                "boot": progress(&events, now),
                "events": events,
            })
        })
        .collect();
    let others: Vec<Value> = events
        .all()
        .into_iter()
        .filter(|(m, _)| !known.contains(m))
        .map(|(m, ev)| json!({ "mac": m, "boot": progress(&ev, now), "events": ev }))
        .collect();
    json!({
        "boot_files": boot_files(&p.site),
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

/// The boot files the site names (`crate::fetch::boot_files`): name, role, size, the version
/// `ovl fetch` recorded (`"unknown"` when it placed no such file, or the file changed since),
/// its SHA-256 when known, `missing`, and the problem (`null` when it is fine). Blocking.
fn boot_files(site: &crate::site::Site) -> Vec<Value> {
    crate::fetch::boot_files(site)
        .into_iter()
        .map(|f| {
            json!({
                "name": f.name,
                "role": f.role,
                "size": f.size,
                "version": f.version.as_deref().unwrap_or("unknown"),
                "sha256": f.sha256,
                "missing": f.problem == Some(crate::fetch::BootFileProblem::Missing),
                "problem": f.problem,
            })
        })
        .collect()
}

/// How long a document is reused while nothing else changed.
pub(super) const MAX_AGE: Duration = Duration::from_secs(1);

/// A `/status` document, what it was computed from, and its forms.
#[derive(Debug)]
pub(super) struct Doc {
    started: Instant,
    key: (u64, u64),
    /// The document, for the status page.
    pub(super) value: Value,
    /// The JSON served at `/status`.
    pub(super) json: Bytes,
    /// The status page made from it, once asked for (see `page`).
    pub(super) html: OnceLock<Bytes>,
}

/// The kept `/status` document; the lock is held while one is computed.
#[derive(Debug, Default)]
pub(super) struct StatusCache {
    doc: tokio::sync::Mutex<Option<Arc<Doc>>>,
}

/// The `/status` document for a request that arrived at `arrived`, kept or computed (see
/// the module documentation); `None` when the computation failed.
pub(super) async fn current(st: &Arc<Shared>, arrived: Instant) -> Option<Arc<Doc>> {
    let mut doc = st.status.doc.lock().await;
    let key = (st.live.snapshot().generation, st.events.version());
    if let Some(d) = doc.as_ref()
        && (d.started >= arrived || (d.key == key && d.started.elapsed() < MAX_AGE))
    {
        return Some(Arc::clone(d));
    }
    let started = Instant::now();
    let s = Arc::clone(st);
    let made = tokio::task::spawn_blocking(move || {
        let value = document(
            &s.live,
            &s.events,
            &s.cfg.neighbours,
            s.local,
            s.started,
            &s.archive_states,
        );
        let mut json = serde_json::to_vec_pretty(&value).unwrap_or_default();
        json.push(b'\n');
        Arc::new(Doc {
            started,
            key,
            value,
            json: Bytes::from(json),
            html: OnceLock::new(),
        })
    })
    .await
    .ok()?;
    *doc = Some(Arc::clone(&made));
    Some(made)
}

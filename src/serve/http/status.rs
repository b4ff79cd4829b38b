//! `/status`: every inventory device with its archive on disk and its state (built, stale,
//! missing, error), its recent boot events and the progress of its current boot, plus the
//! same for devices the inventory does not know.

use std::collections::BTreeSet;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

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
    let states = archive_states.get(p, snap.generation);
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
            let state = states.get(&d.mac).copied();
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

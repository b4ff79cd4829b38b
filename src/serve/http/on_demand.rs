//! Archives built on demand for blank devices (`[serve] default_profile`), bounded in time
//! and memory whoever asks:
//!
//! - at most [`HttpConfig::on_demand_builds`] builds run at once (on the blocking pool);
//!   at most [`HttpConfig::on_demand_queue`] requests wait for one, each at most
//!   [`HttpConfig::on_demand_wait`]; a request beyond the queue, or still waiting then, gets
//!   `503 Service Unavailable` with `Retry-After`;
//! - a device asking for its own archive (the neighbour table or a DHCP lease says the
//!   client is that MAC) has one more build slot of its own and skips the queue, so a flood
//!   of requests for other MACs does not keep a real blank device waiting;
//! - one client address has at most [`PER_CLIENT`] on-demand archives queued, building or
//!   being sent at once (more: 503), so one device cannot fill the queue or pin archives in
//!   memory with slow reads;
//! - built archives are cached per project generation for [`HttpConfig::on_demand_ttl`],
//!   at most [`HttpConfig::on_demand_entries`] of them and
//!   [`HttpConfig::on_demand_cache_bytes`] in all (an archive larger than that is served,
//!   not cached). Concurrent requests for one MAC share one build.
//!
//! [`HttpConfig::on_demand_builds`]: super::HttpConfig::on_demand_builds
//! [`HttpConfig::on_demand_queue`]: super::HttpConfig::on_demand_queue
//! [`HttpConfig::on_demand_wait`]: super::HttpConfig::on_demand_wait
//! [`HttpConfig::on_demand_ttl`]: super::HttpConfig::on_demand_ttl
//! [`HttpConfig::on_demand_entries`]: super::HttpConfig::on_demand_entries
//! [`HttpConfig::on_demand_cache_bytes`]: super::HttpConfig::on_demand_cache_bytes

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderValue, Response, StatusCode, header};
use tokio::sync::Semaphore;

use super::configs::no_cache;
use super::respond::{RequestLog, bytes_response, status_response};
use super::{HttpConfig, NO_CACHE, Shared};
use crate::mac::Mac;
use crate::serve::events::EventKind;

/// On-demand archives one client address may have queued, building or being sent at once.
pub(super) const PER_CLIENT: usize = 2;
/// Seconds a refused client is told to wait (`Retry-After`).
const RETRY_AFTER: &str = "2";

/// An archive in memory.
#[derive(Debug)]
struct Cached {
    generation: u64,
    built: Instant,
    bytes: Bytes,
}

/// The builds, the queue, the clients and the cache.
#[derive(Debug)]
pub(super) struct OnDemand {
    builds: Semaphore,
    /// The build slot kept for devices asking for their own archive.
    own: Semaphore,
    waiting: AtomicUsize,
    clients: Mutex<HashMap<IpAddr, usize>>,
    cache: Mutex<HashMap<Mac, Cached>>,
}

impl OnDemand {
    /// Nothing built or cached yet, room for `cfg.on_demand_builds` builds.
    pub(super) fn new(cfg: &HttpConfig) -> OnDemand {
        OnDemand {
            builds: Semaphore::new(cfg.on_demand_builds.max(1)),
            own: Semaphore::new(1),
            waiting: AtomicUsize::new(0),
            clients: Mutex::default(),
            cache: Mutex::default(),
        }
    }
}

/// One on-demand archive of a client, held until its response body is done.
#[derive(Debug)]
pub(super) struct ClientSlot {
    st: Arc<Shared>,
    ip: IpAddr,
}

impl ClientSlot {
    fn take(st: &Arc<Shared>, ip: IpAddr) -> Option<ClientSlot> {
        let mut clients = st
            .on_demand
            .clients
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let n = clients.entry(ip).or_insert(0);
        if *n >= PER_CLIENT {
            return None;
        }
        *n += 1;
        Some(ClientSlot {
            st: Arc::clone(st),
            ip,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut clients = self
            .st
            .on_demand
            .clients
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = clients.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                clients.remove(&self.ip);
            }
        }
    }
}

/// A place in the queue, given back when dropped.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// 503 with `Retry-After`, for a request the builds cannot take now.
fn busy(log: &mut RequestLog, why: &str) -> Response<Body> {
    log.kind = Some(EventKind::ConfigNotFound);
    log.reason = Some(format!("default profile: {why}"));
    let mut r = no_cache(status_response(StatusCode::SERVICE_UNAVAILABLE));
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER));
    r
}

/// The default profile's archive for the blank device `mac`: from the cache, or built now
/// within the bounds of the module documentation.
pub(super) async fn serve(
    st: &Arc<Shared>,
    req: Request,
    mac: Mac,
    profile: String,
    log: &mut RequestLog,
) -> Response<Body> {
    let Some(slot) = ClientSlot::take(st, log.client) else {
        return busy(log, "this client already has archives being built or sent");
    };
    let own = st.cfg.neighbours.owns(log.client, &mac);
    let bytes = match cached(st, mac) {
        Some(b) => b,
        None => match build(st, mac, profile, own, log).await {
            Ok(b) => b,
            Err(r) => return r,
        },
    };
    log.kind = Some(EventKind::ConfigServed);
    log.reason = Some("default profile, built on demand".into());
    log.on_demand = Some(slot);
    bytes_response(
        req.method(),
        req.headers(),
        bytes,
        "application/gzip",
        Some(NO_CACHE),
    )
}

/// The cached archive of `mac` for the current project, if fresh.
fn cached(st: &Shared, mac: Mac) -> Option<Bytes> {
    let generation = st.live.snapshot().generation;
    let c = st.on_demand.cache.lock().unwrap_or_else(|p| p.into_inner());
    c.get(&mac)
        .filter(|c| c.generation == generation && c.built.elapsed() < st.cfg.on_demand_ttl)
        .map(|c| c.bytes.clone())
}

/// Waits (bounded) for a build slot, then builds `mac`'s archive unless a request before
/// it did meanwhile; the archive or the response to send instead. `own`: the client is the
/// device, and may take the slot kept for that.
async fn build(
    st: &Arc<Shared>,
    mac: Mac,
    profile: String,
    own: bool,
    log: &mut RequestLog,
) -> Result<Bytes, Response<Body>> {
    let od = &st.on_demand;
    let wait = st.cfg.on_demand_wait;
    let permit = if own {
        // Any free slot, else the device's own one; never behind the queue.
        match od.builds.try_acquire() {
            Ok(p) => Ok(Ok(p)),
            Err(_) => {
                tokio::time::timeout(wait, async {
                    tokio::select! {
                        p = od.builds.acquire() => p,
                        p = od.own.acquire() => p,
                    }
                })
                .await
            }
        }
    } else {
        if od.waiting.fetch_add(1, Ordering::Relaxed) >= st.cfg.on_demand_queue {
            od.waiting.fetch_sub(1, Ordering::Relaxed);
            return Err(busy(log, "too many builds waiting"));
        }
        let _waiting = Waiting(&od.waiting);
        tokio::time::timeout(wait, od.builds.acquire()).await
    };
    let Ok(Ok(_permit)) = permit else {
        return Err(busy(log, "no build slot in time"));
    };
    if let Some(b) = cached(st, mac) {
        return Ok(b);
    }
    build_default(st, mac, profile).await.map_err(|e| {
        log.kind = Some(EventKind::ConfigNotFound);
        log.reason = Some(format!("default profile build failed: {e}"));
        no_cache(status_response(StatusCode::INTERNAL_SERVER_ERROR))
    })
}

/// Builds `mac`'s archive with `profile` through the pipeline and caches it.
async fn build_default(st: &Arc<Shared>, mac: Mac, profile: String) -> Result<Bytes, String> {
    let snap = st.live.snapshot();
    let generation = snap.generation;
    let built = tokio::task::spawn_blocking(move || -> crate::error::Result<Vec<u8>> {
        let p = &snap.project;
        let spec = p.spec(mac, Some(&profile))?;
        let cache = p.read_layers(std::slice::from_ref(&spec));
        let plan = p.plan(&spec, &cache)?;
        let bytes = p.archive_bytes(&plan)?;
        p.keep_manifest(&plan)?;
        Ok(bytes)
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())?;
    if built.is_empty() {
        return Err("empty archive".into());
    }
    let bytes = Bytes::from(built);
    store(st, mac, generation, bytes.clone());
    Ok(bytes)
}

/// Caches an archive within the entry and byte bounds, dropping the oldest first.
fn store(st: &Shared, mac: Mac, generation: u64, bytes: Bytes) {
    let (max_entries, max_bytes) = (
        st.cfg.on_demand_entries.max(1),
        st.cfg.on_demand_cache_bytes,
    );
    if bytes.len() > max_bytes {
        return;
    }
    let mut c = st.on_demand.cache.lock().unwrap_or_else(|p| p.into_inner());
    c.retain(|_, v| v.generation == generation && v.built.elapsed() < st.cfg.on_demand_ttl);
    c.remove(&mac);
    let mut total: usize = c.values().map(|v| v.bytes.len()).sum();
    while c.len() >= max_entries || total + bytes.len() > max_bytes {
        let Some(oldest) = c.iter().min_by_key(|(_, v)| v.built).map(|(k, _)| *k) else {
            break;
        };
        if let Some(v) = c.remove(&oldest) {
            total -= v.bytes.len();
        }
    }
    c.insert(
        mac,
        Cached {
            generation,
            built: Instant::now(),
            bytes,
        },
    );
}

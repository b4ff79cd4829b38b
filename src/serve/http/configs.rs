//! `/configs/MAC.tar.gz`: published archives (under the one access rule, `access::check`,
//! with the owner rule of `configs_access = "owner"`), and for MACs the inventory does not
//! know, the default profile's archive, built on demand through the pipeline and cached in
//! memory per project generation.

use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderValue, Response, StatusCode, header};

use super::respond::{RequestLog, bytes_response, status_response};
use super::{NO_CACHE, Shared, open_checked, refused, serve_file};
use crate::mac::Mac;
use crate::serve::access::Refusal;
use crate::serve::events::EventKind;
use crate::serve::public::{Denied, archive_mac};

/// An on-demand archive in memory.
#[derive(Debug)]
pub(super) struct Cached {
    generation: u64,
    built: Instant,
    bytes: Bytes,
}

/// Adds `Cache-Control: no-cache`.
pub(super) fn no_cache(mut r: Response<Body>) -> Response<Body> {
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static(NO_CACHE));
    r
}

/// `/configs/NAME.tar.gz`.
pub(super) async fn config(
    st: &Arc<Shared>,
    req: Request,
    name: &str,
    log: &mut RequestLog,
) -> Response<Body> {
    let Some(mac) = archive_mac(name) else {
        log.reason = Some("not a MAC in lowercase-colon form".into());
        return no_cache(status_response(StatusCode::NOT_FOUND));
    };
    log.mac = Some(mac);
    st.events.note_client(log.client, mac);
    match open_checked(st, format!("configs/{name}"), log.client).await {
        Ok((resolved, opened)) => {
            log.mac = resolved.archive.or(Some(mac));
            log.kind = Some(EventKind::ConfigServed);
            no_cache(serve_file(st, opened, req, log).await)
        }
        Err(Refusal::Hidden(Denied::NotFound)) => {
            let snap = st.live.snapshot();
            let known = snap.project.inventory.devices.contains_key(&mac);
            match snap.project.site.config.serve.default_profile.clone() {
                Some(profile) if !known && mac.is_device() => {
                    on_demand(st, req, mac, profile, log).await
                }
                _ => {
                    log.kind = Some(EventKind::ConfigNotFound);
                    log.reason = Some(if known {
                        "in the inventory but not built".into()
                    } else {
                        "unknown MAC".into()
                    });
                    no_cache(status_response(StatusCode::NOT_FOUND))
                }
            }
        }
        Err(r) => {
            let resp = refused(&r, log);
            if log.kind.is_none() {
                log.kind = Some(if r.is_not_found() {
                    EventKind::ConfigNotFound
                } else {
                    EventKind::ConfigRefused
                });
            }
            no_cache(resp)
        }
    }
}

/// The default profile's archive for a blank device, from the cache or built now.
async fn on_demand(
    st: &Arc<Shared>,
    req: Request,
    mac: Mac,
    profile: String,
    log: &mut RequestLog,
) -> Response<Body> {
    let generation = st.live.snapshot().generation;
    let cached = |st: &Shared| -> Option<Bytes> {
        let c = st.cache.lock().unwrap_or_else(|p| p.into_inner());
        c.get(&mac)
            .filter(|c| c.generation == generation && c.built.elapsed() < st.cfg.on_demand_ttl)
            .map(|c| c.bytes.clone())
    };
    let bytes = match cached(st) {
        Some(b) => b,
        None => {
            let Ok(_permit) = st.builds.acquire().await else {
                return status_response(StatusCode::SERVICE_UNAVAILABLE);
            };
            match cached(st) {
                Some(b) => b,
                None => match build_default(st, mac, profile).await {
                    Ok(b) => b,
                    Err(e) => {
                        log.kind = Some(EventKind::ConfigNotFound);
                        log.reason = Some(format!("default profile build failed: {e}"));
                        return no_cache(status_response(StatusCode::INTERNAL_SERVER_ERROR));
                    }
                },
            }
        }
    };
    log.kind = Some(EventKind::ConfigServed);
    log.reason = Some("default profile, built on demand".into());
    bytes_response(
        req.method(),
        req.headers(),
        bytes,
        "application/gzip",
        Some(NO_CACHE),
    )
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
        p.archive_bytes(&plan)
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())?;
    if built.is_empty() {
        return Err("empty archive".into());
    }
    let bytes = Bytes::from(built);
    let mut c = st.cache.lock().unwrap_or_else(|p| p.into_inner());
    c.retain(|_, v| v.generation == generation && v.built.elapsed() < st.cfg.on_demand_ttl);
    while c.len() >= st.cfg.on_demand_entries.max(1) {
        let Some(oldest) = c.iter().min_by_key(|(_, v)| v.built).map(|(k, _)| *k) else {
            break;
        };
        c.remove(&oldest);
    }
    c.insert(
        mac,
        Cached {
            generation,
            built: Instant::now(),
            bytes: bytes.clone(),
        },
    );
    Ok(bytes)
}

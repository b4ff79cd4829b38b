//! `/configs/MAC.tar.gz`: published archives (under the one access rule, `access::check`,
//! with the owner rule of `configs_access = "owner"`), and for MACs the inventory does not
//! know, the default profile's archive, built on demand through the pipeline and cached in
//! memory per project generation.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, Response, StatusCode, header};

use super::respond::{RequestLog, status_response};
use super::{NO_CACHE, Shared, on_demand, open_checked, refused, serve_file};
use crate::serve::access::Refusal;
use crate::serve::events::EventKind;
use crate::serve::public::{Denied, archive_mac};

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
            no_cache(serve_file(st, &resolved.path, opened, req, log).await)
        }
        Err(Refusal::Hidden(Denied::NotFound)) => {
            let snap = st.live.snapshot();
            let known = snap.project.inventory.devices.contains_key(&mac);
            match snap.project.site.config.serve.default_profile.clone() {
                Some(profile) if !known && mac.is_device() => {
                    on_demand::serve(st, req, mac, profile, log).await
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

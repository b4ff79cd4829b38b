//! The HTTP server of the boot chain (SPEC §6), on axum/hyper with tower-http's `ServeFile`.
//!
//! What it serves, by path (after percent-decoding; empty components collapse):
//! - `/boot.ipxe`, `/gpxe-script`: the iPXE script, generated per request by
//!   [`crate::build::bootscript::script`] from the current project. With `?mac=MAC` naming an
//!   inventory device, its profile's kernel arguments and modules and the literal MAC;
//!   otherwise the static `${net0/mac}` form, which is also kept on disk (see `live`).
//! - `/configs/MAC.tar.gz`: `MAC` must be lowercase with colons (what iPXE and Linux send);
//!   any other spelling is a 404. With `configs_access = "owner"` only the client whose
//!   neighbour entry or DHCP lease ([`Neighbours`]) is that MAC gets it; others get 403. A
//!   published file is served as a file; a missing one is a real 404, except that with
//!   `[serve] default_profile` a MAC the inventory does not know gets that profile's archive,
//!   built on demand through the pipeline and cached in memory (bounded, per project
//!   generation, for [`HttpConfig::on_demand_ttl`]).
//! - `/status`: JSON of the inventory's devices, their archives and recent boot events.
//! - `/`: the status page (`page`), with `/status.js` and `/status.css`; `/metrics`: the
//!   counters in Prometheus text format (`metrics`). These names shadow site files.
//! - Anything else: the site file, through `crate::serve::public::resolve` (private
//!   paths, hidden names, traversal and symlinks leaving the site → 403; missing → 404).
//!   A file reached through a symlink into `configs/` is subject to the owner check too.
//!
//! Files get GET and HEAD, single `Range` requests (206, 416 past the end), `Last-Modified`
//! with `If-Modified-Since`, and a strong `ETag` with `If-None-Match` / `If-Match`
//! (tower-http: the ETag is made of the file's mtime with nanoseconds and its size; archives
//! are republished only when their bytes change, so the ETag stays while they do).
//! Generated responses (scripts, on-demand archives, `/status`) carry a strong ETag made of
//! the first 128 bits of the SHA-256 of their bytes and answer `If-None-Match` with 304; they
//! ignore `Range`. Every response has `Content-Length`. `Cache-Control: no-cache` is sent on
//! `configs/*`, the scripts and `/status`.
//!
//! The project is reloaded while serving (see `live`): on its own, or fed by watch mode.
//! Each request gives one log line (`event=http_request`: method, file, client, status, bytes,
//! duration_ms, rate_kib_s, complete, mac, reason) when its body is done; boot-chain requests
//! are also recorded in `BootEvents`.

mod configs;
pub(crate) mod live;
mod metrics;
mod opened;
mod page;
mod respond;
mod status;

use std::collections::HashMap;
use std::future::IntoFuture;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, Method, Response, StatusCode, header};
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower_http::services::ServeDir;

pub(crate) use live::LiveProject;

use crate::build::project::Project;
use crate::mac::Mac;
use crate::serve::events::{BootEvents, EventKind};
use crate::serve::neighbours::Neighbours;
use crate::serve::public::{self, Denied};
use crate::site::ConfigsAccess;
use crate::watch::changes::network_fs;
use configs::{config, no_cache, owner_refusal};
use opened::{OpenedBackend, OpenedFile};
use respond::{
    LoggedBody, RequestLog, bytes_response, percent_decode, query_value, status_response,
};

/// `Cache-Control` of configs, scripts and `/status`: clients must revalidate every time.
const NO_CACHE: &str = "no-cache";

/// How often the project's files are checked for changes, by default.
pub(crate) const RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// Settings of the HTTP server.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Address and port to listen on (port 0 picks a free one).
    pub bind: SocketAddr,
    /// Who is at which address, for `configs_access = "owner"` and event attribution.
    pub neighbours: Neighbours,
    /// How often the project's files are checked for changes.
    pub reload_interval: Duration,
    /// The project is kept current by watch mode (`ovl serve --watch` feeds
    /// `HttpServer::project`) instead of by a check every `reload_interval`.
    pub watched: bool,
    /// After shutdown is requested, how long running transfers may go on.
    pub shutdown_grace: Duration,
    /// On-demand archives (default profile) kept in memory at most.
    pub on_demand_entries: usize,
    /// How long an on-demand archive is reused before it is built again (overlay edits are
    /// not watched; this bounds how stale a blank device's archive can be).
    pub on_demand_ttl: Duration,
    /// On-demand builds running at once.
    pub on_demand_builds: usize,
    /// Read size when streaming files.
    pub chunk_size: usize,
    /// Resolve, open and read small files on the blocking pool (`true`) or in place
    /// (`false`); `None` decides by the site's file system: the pool on NFS, SMB/CIFS, FUSE
    /// and 9P, in place on local file systems. Large files always stream from the pool.
    pub fs_offload: Option<bool>,
}

impl HttpConfig {
    /// Settings listening on `bind` with the defaults: the kernel's neighbour table, reload
    /// check every second, 5 s shutdown grace, 64 on-demand archives for 10 s, 2 builds at
    /// once, 256 KiB reads.
    pub fn new(bind: SocketAddr) -> HttpConfig {
        HttpConfig {
            bind,
            neighbours: Neighbours::default(),
            reload_interval: RELOAD_INTERVAL,
            watched: false,
            shutdown_grace: Duration::from_secs(5),
            on_demand_entries: 64,
            on_demand_ttl: Duration::from_secs(10),
            on_demand_builds: 2,
            chunk_size: 256 * 1024,
            fs_offload: None,
        }
    }
}

/// What every request handler shares.
#[derive(Debug)]
struct Shared {
    cfg: HttpConfig,
    live: Arc<LiveProject>,
    /// The site root with symlinks resolved, to tell whether a file lies in `configs/`.
    canonical_root: PathBuf,
    /// Do file system work on the blocking pool (see [`HttpConfig::fs_offload`]).
    offload: bool,
    events: Arc<BootEvents>,
    local: SocketAddr,
    started: SystemTime,
    builds: Semaphore,
    cache: Mutex<HashMap<Mac, configs::Cached>>,
    metrics: Arc<crate::serve::metrics::Metrics>,
    archive_states: page::ArchiveStates,
}

/// A bound HTTP server; [`HttpServer::run`] serves until cancelled.
#[derive(Debug)]
pub struct HttpServer {
    listener: TcpListener,
    shared: Arc<Shared>,
}

impl HttpServer {
    /// Binds the listening socket and takes over `project` (its `[serve] http` is replaced by
    /// the address really bound, so generated URLs carry the right port).
    pub async fn bind(cfg: HttpConfig, project: Project) -> io::Result<HttpServer> {
        let listener = TcpListener::bind(cfg.bind).await?;
        let local = listener.local_addr()?;
        let (live, canonical_root, network) = tokio::task::spawn_blocking(move || {
            let canonical = project.site.root.canonicalize();
            // On network or FUSE file systems (or unknown ones), a `stat` or a read may wait
            // on the network: file system work then goes to the blocking pool.
            let network = !matches!(network_fs(&project.site.root), Ok(None));
            (
                LiveProject::new(project, Some(local.to_string())),
                canonical,
                network,
            )
        })
        .await
        .map_err(io::Error::other)?;
        let shared = Shared {
            offload: cfg.fs_offload.unwrap_or(network),
            canonical_root: canonical_root?,
            builds: Semaphore::new(cfg.on_demand_builds.max(1)),
            cfg,
            live: Arc::new(live),
            events: Arc::new(BootEvents::default()),
            local,
            started: SystemTime::now(),
            cache: Mutex::default(),
            metrics: Arc::default(),
            archive_states: page::ArchiveStates::default(),
        };
        Ok(HttpServer {
            listener,
            shared: Arc::new(shared),
        })
    }

    /// The address the server listens on (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local
    }

    /// Whether file system work goes to the blocking pool (see [`HttpConfig::fs_offload`]).
    pub(crate) fn fs_offload(&self) -> bool {
        self.shared.offload
    }

    /// The boot events recorded so far, live.
    pub(crate) fn events(&self) -> Arc<BootEvents> {
        Arc::clone(&self.shared.events)
    }

    /// The counters of `/metrics`, live; the other services attach theirs.
    pub(crate) fn metrics(&self) -> Arc<crate::serve::metrics::Metrics> {
        Arc::clone(&self.shared.metrics)
    }

    /// The project as served, live.
    pub(crate) fn project(&self) -> Arc<LiveProject> {
        Arc::clone(&self.shared.live)
    }

    /// Serves until `shutdown` is cancelled, then stops accepting, lets running requests
    /// finish for [`HttpConfig::shutdown_grace`], and returns (dropping what is left).
    pub async fn run(self, shutdown: CancellationToken) {
        let reload = tokio::spawn(reload_loop(
            Arc::clone(&self.shared.live),
            self.shared.cfg.reload_interval,
            !self.shared.cfg.watched,
            shutdown.clone(),
        ));
        let grace = self.shared.cfg.shutdown_grace;
        let app = Router::new()
            .fallback(handle)
            .with_state(self.shared)
            .into_make_service_with_connect_info::<SocketAddr>();
        let listener = self.listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let server = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .into_future();
        let grace_over = async {
            shutdown.cancelled().await;
            tokio::time::sleep(grace).await;
        };
        tokio::select! {
            r = server => {
                if let Err(e) = r {
                    tracing::error!(event = "http_server_error", error = %e);
                }
            }
            () = grace_over => {
                tracing::warn!(event = "http_shutdown", "requests still running after the grace period; dropping them");
            }
        }
        reload.abort();
    }
}

/// Every `interval` until cancelled: checks the project's files (unless watch mode feeds the
/// project: `check` false) and keeps the boot scripts on disk equal to the served ones.
async fn reload_loop(
    live: Arc<LiveProject>,
    interval: Duration,
    check: bool,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(interval.max(Duration::from_millis(50)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => {
                let l = Arc::clone(&live);
                let _ = tokio::task::spawn_blocking(move || {
                    if !check || !l.check() {
                        l.keep_boot_scripts();
                    }
                })
                .await;
            }
        }
    }
}

/// Every request: route it, then wrap the body so the log line is written when it ends.
async fn handle(
    State(st): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response<Body> {
    let started = Instant::now();
    let raw = req.uri().path().to_owned();
    let decoded = percent_decode(&raw);
    let mut log = RequestLog {
        method: req.method().clone(),
        file: decoded.clone().unwrap_or(raw),
        client: peer.ip().to_canonical(),
        started,
        status: 0,
        mac: None,
        kind: None,
        reason: None,
        events: Arc::clone(&st.events),
        in_flight: st.metrics.http_started(),
    };
    let resp = route(&st, req, decoded, &mut log).await;
    log.status = resp.status().as_u16();
    let (parts, body) = resp.into_parts();
    let expected = if log.method == Method::HEAD {
        Some(0)
    } else {
        parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
    };
    Response::from_parts(parts, Body::new(LoggedBody::new(body, log, expected)))
}

async fn route(
    st: &Arc<Shared>,
    req: Request,
    decoded: Option<String>,
    log: &mut RequestLog,
) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = status_response(StatusCode::METHOD_NOT_ALLOWED);
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let Some(path) = decoded else {
        log.reason = Some("bad percent-encoding".into());
        return status_response(StatusCode::BAD_REQUEST);
    };
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    match components.as_slice() {
        ["boot.ipxe"] | ["gpxe-script"] => script(st, req, log),
        [] => page::respond(st, req, page::Page::Html).await,
        ["status.js"] => page::respond(st, req, page::Page::Script).await,
        ["status.css"] => page::respond(st, req, page::Page::Style).await,
        ["metrics"] => page::respond(st, req, page::Page::Metrics).await,
        ["status"] => status(st, req).await,
        ["configs", name] if name.ends_with(".tar.gz") => {
            let name = (*name).to_owned();
            config(st, req, &name, log).await
        }
        _ => file(st, req, &path, log).await,
    }
}

/// The MAC of a client, from the neighbour sources or the MAC it last named.
fn attribute(st: &Shared, client: IpAddr) -> Option<Mac> {
    st.cfg
        .neighbours
        .mac_of(client)
        .or_else(|| st.events.client_mac(client))
}

/// `/boot.ipxe`, `/gpxe-script`.
fn script(st: &Shared, req: Request, log: &mut RequestLog) -> Response<Body> {
    let snap = st.live.snapshot();
    let mac = query_value(req.uri().query(), "mac").and_then(|m| m.parse::<Mac>().ok());
    let extras = mac.and_then(|m| snap.script_extras(&m)).unwrap_or_default();
    match mac {
        Some(m) => {
            st.events.note_client(log.client, m);
            log.mac = Some(m);
        }
        None => log.mac = attribute(st, log.client),
    }
    log.kind = Some(EventKind::Script);
    let text = crate::build::bootscript::script(&snap.project.site, &extras);
    bytes_response(
        req.method(),
        req.headers(),
        Bytes::from(text),
        "text/plain; charset=utf-8",
        Some(NO_CACHE),
    )
}

/// `/status`.
async fn status(st: &Arc<Shared>, req: Request) -> Response<Body> {
    let s = Arc::clone(st);
    let doc = tokio::task::spawn_blocking(move || {
        status::document(
            &s.live,
            &s.events,
            &s.cfg.neighbours,
            s.local,
            s.started,
            &s.archive_states,
        )
    })
    .await;
    let Ok(doc) = doc else {
        return status_response(StatusCode::INTERNAL_SERVER_ERROR);
    };
    let mut body = serde_json::to_vec_pretty(&doc).unwrap_or_default();
    body.push(b'\n');
    bytes_response(
        req.method(),
        req.headers(),
        Bytes::from(body),
        "application/json",
        Some(NO_CACHE),
    )
}

/// Resolves a request path and opens the file, on the blocking pool: whether it lies in
/// `configs/` (symlinks followed) and the opened file, or why it is not served.
async fn open_public(st: &Arc<Shared>, rel: String) -> Result<(PathBuf, bool, OpenedFile), Denied> {
    fn work(s: &Shared, rel: &str) -> Result<(PathBuf, bool, OpenedFile), Denied> {
        let real = public::resolve(s.live.root(), rel)?;
        let in_configs = real.parent() == Some(s.canonical_root.join("configs").as_path());
        let opened = OpenedFile::open(&real).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => Denied::NotFound,
            kind => Denied::Unreadable(kind),
        })?;
        Ok((real, in_configs, opened))
    }
    if !st.offload {
        return work(st, &rel);
    }
    let s = Arc::clone(st);
    tokio::task::spawn_blocking(move || work(&s, &rel))
        .await
        .unwrap_or(Err(Denied::NotFound))
}

/// Any other path: a public site file.
async fn file(st: &Arc<Shared>, req: Request, path: &str, log: &mut RequestLog) -> Response<Body> {
    let (real, in_configs, opened) = match open_public(st, path.to_owned()).await {
        Ok(r) => r,
        Err(d) => {
            log.reason = Some(d.to_string());
            let status = if d.is_not_found() {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::FORBIDDEN
            };
            return status_response(status);
        }
    };
    if in_configs {
        // Reached through a symlink or a name that is not MAC.tar.gz: the owner rule holds.
        let name = real.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let real_mac = name
            .strip_suffix(".tar.gz")
            .and_then(|s| s.parse::<Mac>().ok());
        let owner =
            st.live.snapshot().project.site.config.serve.configs_access == ConfigsAccess::Owner;
        match real_mac {
            Some(m) => {
                log.mac = Some(m);
                if let Some(r) = owner_refusal(st, &m, log) {
                    return r;
                }
                log.kind = Some(EventKind::ConfigServed);
            }
            None if owner => {
                log.reason = Some("configs_access = owner: not a device's archive".into());
                return no_cache(status_response(StatusCode::FORBIDDEN));
            }
            None => {}
        }
        return no_cache(serve_file(st, opened, req, log).await);
    }
    if let Some(kind) = EventKind::of_file(path) {
        log.kind = Some(kind);
        log.mac = attribute(st, log.client);
    }
    let r = serve_file(st, opened, req, log).await;
    if path.split('/').find(|c| !c.is_empty()) == Some("configs") {
        return no_cache(r);
    }
    r
}

/// Streams an opened file with tower-http (HEAD, Range, ETag, Last-Modified, conditionals).
async fn serve_file(
    st: &Shared,
    opened: OpenedFile,
    req: Request,
    log: &mut RequestLog,
) -> Response<Body> {
    let mut dir = ServeDir::with_backend(st.live.root(), OpenedBackend::new(opened))
        .with_buf_chunk_size(st.cfg.chunk_size);
    match dir.try_call(req).await {
        Ok(r) => r.map(Body::new),
        Err(e) => {
            log.reason = Some(format!("cannot serve: {e}"));
            status_response(StatusCode::INTERNAL_SERVER_ERROR)
        }
    }
}

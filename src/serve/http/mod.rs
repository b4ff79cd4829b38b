//! The HTTP server of the boot chain (SPEC §6), on hyper (its own accept loop, `conn`) with
//! tower-http's `ServeFile`.
//!
//! What it serves, by path (after percent-decoding; empty components collapse):
//! - `/boot.ipxe`, `/gpxe-script`: the iPXE script, generated per request by
//!   [`crate::build::bootscript::script`] from the current project. With `?mac=MAC` naming an
//!   inventory device, its profile's kernel arguments and modules and the literal MAC;
//!   otherwise the static `${net0/mac}` form, which is also kept on disk (see `live`).
//! - `/configs/MAC.tar.gz`: `MAC` must be lowercase with colons (what iPXE and Linux send);
//!   any other spelling is a 404. With `configs_access = "owner"` only the client whose
//!   neighbour entry or DHCP lease ([`Neighbours`]) is that MAC gets it; others get 403
//!   (the one access rule, `crate::serve::access::check`, shared with TFTP). A published
//!   file is served as a file; a missing one is a real 404, except that with `[serve]
//!   default_profile` a MAC the inventory does not know gets that profile's archive, built on
//!   demand through the pipeline, bounded and cached in memory (`on_demand`).
//! - `/status`: JSON of the inventory's devices, their archives, recent boot events and the
//!   site's boot files, computed off the request workers and shared (`status`).
//! - `/`: the status page (`page`, made from the same shared document), with `/status.js`
//!   and `/status.css`; `/metrics`: the counters in Prometheus text format (`metrics`).
//!   These names shadow site files.
//! - Anything else: a file of the site's public set (`crate::serve::public`); anything not
//!   public, or missing, is 404 with the same body. A device's archive reached through a
//!   symlink is subject to the owner rule too.
//!
//! Connections are capped, headers and stalled responses time out, and a slow reader holds
//! a few chunks of memory (`conn`).
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
mod conn;
mod direct;
pub(crate) mod live;
mod memo;
mod metrics;
mod on_demand;
mod opened;
mod page;
mod respond;
mod status;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderValue, Method, Response, StatusCode, header};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::services::ServeDir;

pub(crate) use live::LiveProject;
pub use respond::percent_decode;

use crate::build::project::Project;
use crate::mac::Mac;
use crate::serve::access::{self, PolicySource, Refusal};
use crate::serve::events::{BootEvents, EventKind};
use crate::serve::neighbours::Neighbours;
use crate::serve::public::{Denied, Resolved};
use crate::watch::changes::network_fs;
use configs::{config, no_cache};
use opened::{OpenedBackend, OpenedFile};
use respond::{LoggedBody, RequestLog, bytes_response, query_value, status_response};

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
    /// On-demand requests waiting for a build at most; more get 503.
    pub on_demand_queue: usize,
    /// How long an on-demand request waits for a build at most; then 503.
    pub on_demand_wait: Duration,
    /// Bytes of on-demand archives kept in memory at most.
    pub on_demand_cache_bytes: usize,
    /// Read size when streaming files: with hyper's write buffer, what one slow reader
    /// holds in memory.
    pub chunk_size: usize,
    /// The kernel send buffer of each connection (`SO_SNDBUF`); `None` leaves it to the
    /// kernel's autotuning (up to 4 MiB a connection on Linux).
    pub send_buffer: Option<usize>,
    /// Connections open at once; at the cap a new one closes the quietest idle connection,
    /// or gets 503 when every connection is answering a request.
    pub max_connections: usize,
    /// Time for a request's headers, from when the server starts waiting for them (also the
    /// longest a kept-alive connection waits for its next request).
    pub header_timeout: Duration,
    /// A connection answering a request on which no byte moves for this long is closed.
    pub idle_timeout: Duration,
    /// Resolve, open and read small files on the blocking pool (`true`) or in place
    /// (`false`); `None` decides by the site's file system: the pool on NFS, SMB/CIFS, FUSE
    /// and 9P, in place on local file systems. Large files always stream from the pool.
    pub fs_offload: Option<bool>,
}

impl HttpConfig {
    /// Settings listening on `bind` with the defaults: the kernel's neighbour table, reload
    /// check every second, 5 s shutdown grace, 64 on-demand archives (64 MiB) for 10 s, 2
    /// builds at once (and one for a device asking for its own) and 16 waiting (10 s at
    /// most), 64 KiB reads, 256 KiB send buffers, 1024 connections, 10 s for headers, 30 s
    /// idle.
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
            on_demand_queue: 16,
            on_demand_wait: Duration::from_secs(10),
            on_demand_cache_bytes: 64 << 20,
            chunk_size: 64 * 1024,
            send_buffer: Some(256 * 1024),
            max_connections: 1024,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            fs_offload: None,
        }
    }
}

/// What every request handler shares.
#[derive(Debug)]
struct Shared {
    cfg: HttpConfig,
    live: Arc<LiveProject>,
    /// Do file system work on the blocking pool (see [`HttpConfig::fs_offload`]).
    offload: bool,
    /// The site root, held open for the short way to files (`direct`).
    site_dir: direct::SiteDir,
    events: Arc<BootEvents>,
    local: SocketAddr,
    started: SystemTime,
    on_demand: on_demand::OnDemand,
    status: status::StatusCache,
    metrics: Arc<crate::serve::metrics::Metrics>,
    archive_states: page::ArchiveStates,
    /// Answers to plain GETs of small files, per file version (`memo`).
    memo: memo::Memo,
}

/// A bound HTTP server; [`HttpServer::run`] serves until cancelled.
#[derive(Debug)]
pub struct HttpServer {
    listener: TcpListener,
    shared: Arc<Shared>,
    workers: conn::Workers,
}

impl HttpServer {
    /// Binds the listening socket and takes over `project` (its `[serve] http` is replaced by
    /// the address really bound, so generated URLs carry the right port).
    pub async fn bind(cfg: HttpConfig, project: Project) -> io::Result<HttpServer> {
        let listener = TcpListener::bind(cfg.bind).await?;
        let local = listener.local_addr()?;
        let (live, network) = tokio::task::spawn_blocking(move || {
            // On network or FUSE file systems (or unknown ones), a `stat` or a read may wait
            // on the network: file system work then goes to the blocking pool.
            let network = !matches!(network_fs(&project.site.root), Ok(None));
            (LiveProject::new(project, Some(local.to_string())), network)
        })
        .await
        .map_err(io::Error::other)?;
        let shared = Shared {
            offload: cfg.fs_offload.unwrap_or(network),
            site_dir: direct::SiteDir::new(live.root(), !network),
            on_demand: on_demand::OnDemand::new(&cfg),
            status: status::StatusCache::default(),
            cfg,
            live: Arc::new(live),
            events: Arc::new(BootEvents::default()),
            local,
            started: SystemTime::now(),
            metrics: Arc::default(),
            archive_states: page::ArchiveStates::default(),
            memo: memo::Memo::default(),
        };
        Ok(HttpServer {
            listener,
            shared: Arc::new(shared),
            workers: conn::Workers::start()?,
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
        let reload = tokio::spawn(live::reload_loop(
            Arc::clone(&self.shared.live),
            self.shared.cfg.reload_interval,
            !self.shared.cfg.watched,
            shutdown.clone(),
        ));
        conn::serve(self.listener, self.shared, self.workers, shutdown).await;
        reload.abort();
    }
}

/// Every request: route it, then wrap the body so the log line is written when it ends (and
/// the connection counts as idle again).
async fn handle(
    st: Arc<Shared>,
    peer: SocketAddr,
    in_flight: conn::InFlight,
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
        on_demand: None,
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
    let body = LoggedBody::new(body, log, expected, in_flight);
    Response::from_parts(parts, Body::new(body))
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
        [] => page::respond(st, req, page::Page::Html, log.started).await,
        ["status.js"] => page::respond(st, req, page::Page::Script, log.started).await,
        ["status.css"] => page::respond(st, req, page::Page::Style, log.started).await,
        ["metrics"] => page::respond(st, req, page::Page::Metrics, log.started).await,
        ["status"] => status(st, req, log.started).await,
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

/// `/status`, kept or computed off the request workers (see `status`).
async fn status(st: &Arc<Shared>, req: Request, arrived: Instant) -> Response<Body> {
    let Some(doc) = status::current(st, arrived).await else {
        return status_response(StatusCode::INTERNAL_SERVER_ERROR);
    };
    bytes_response(
        req.method(),
        req.headers(),
        doc.json.clone(),
        "application/json",
        Some(NO_CACHE),
    )
}

/// Decides a request with the one access rule (`access::check`) and opens the file, on the
/// blocking pool when file system work is offloaded: the resolved file and the opened file,
/// or why it is refused.
async fn open_checked(
    st: &Arc<Shared>,
    rel: String,
    client: IpAddr,
) -> Result<(Resolved, OpenedFile), Refusal> {
    fn work(s: &Shared, rel: &str, client: IpAddr) -> Result<(Resolved, OpenedFile), Refusal> {
        let policy = s.live.policy();
        let n = &s.cfg.neighbours;
        if let Some(r) = direct::open(&s.site_dir, &policy, n, client, rel, &s.memo) {
            return r;
        }
        let resolved = access::check(s.live.root(), &policy, n, client, rel)?;
        let opened = OpenedFile::open(&resolved.path).map_err(|e| open_refusal(&e))?;
        Ok((resolved, opened))
    }
    if !st.offload {
        return work(st, &rel, client);
    }
    let s = Arc::clone(st);
    tokio::task::spawn_blocking(move || work(&s, &rel, client))
        .await
        .unwrap_or(Err(Refusal::Hidden(Denied::NotFound)))
}

/// The refusal for a public file that could not be opened or read.
fn open_refusal(e: &io::Error) -> Refusal {
    match e.kind() {
        io::ErrorKind::NotFound => Refusal::Hidden(Denied::NotFound),
        kind => Refusal::Unreadable(Denied::Unreadable(kind)),
    }
}

/// The response to a refused request: 404 for anything not public or missing, 403 for a
/// public file that cannot be read and for the owner rule.
fn refused(r: &Refusal, log: &mut RequestLog) -> Response<Body> {
    log.reason = Some(r.to_string());
    if let Refusal::NotOwner(mac) = r {
        log.mac = Some(*mac);
        log.kind = Some(EventKind::ConfigRefused);
    }
    if r.is_not_found() {
        status_response(StatusCode::NOT_FOUND)
    } else {
        status_response(StatusCode::FORBIDDEN)
    }
}

/// Any other path: a public site file.
async fn file(st: &Arc<Shared>, req: Request, path: &str, log: &mut RequestLog) -> Response<Body> {
    let (resolved, opened) = match open_checked(st, path.to_owned(), log.client).await {
        Ok(r) => r,
        Err(r) => {
            let resp = refused(&r, log);
            return if matches!(r, Refusal::NotOwner(_)) {
                no_cache(resp)
            } else {
                resp
            };
        }
    };
    if let Some(mac) = resolved.archive {
        // A device's archive reached by another name (a symlink): served as a config.
        log.mac = Some(mac);
        log.kind = Some(EventKind::ConfigServed);
        return no_cache(serve_file(st, &resolved.path, opened, req, log).await);
    }
    if let Some(kind) = EventKind::of_file(path) {
        log.kind = Some(kind);
        log.mac = attribute(st, log.client);
    }
    serve_file(st, &resolved.path, opened, req, log).await
}

/// Streams an opened file (at `path`) with tower-http (HEAD, Range, ETag, Last-Modified,
/// conditionals); a plain GET of a small file is answered as tower-http answered it last
/// time for this version of the file, when that answer is kept (`memo`: only for files
/// opened by the name requested, since the `Content-Type` follows the name).
async fn serve_file(
    st: &Shared,
    path: &std::path::Path,
    opened: OpenedFile,
    req: Request,
    log: &mut RequestLog,
) -> Response<Body> {
    let plain = memo::is_plain_get(&req);
    if plain && let Some(kept) = &opened.kept {
        return kept.response();
    }
    let keep = (plain && opened.keepable).then(|| opened.bytes()).flatten();
    let meta = opened.meta.clone();
    let backend = OpenedBackend::new(opened, st.cfg.chunk_size);
    let mut dir =
        ServeDir::with_backend(st.live.root(), backend).with_buf_chunk_size(st.cfg.chunk_size);
    match dir.try_call(req).await {
        Ok(r) => {
            if let Some(bytes) = keep {
                st.memo.keep(path, &meta, bytes, &r, SystemTime::now());
            }
            r.map(Body::new)
        }
        Err(e) => {
            log.reason = Some(format!("cannot serve: {e}"));
            status_response(StatusCode::INTERNAL_SERVER_ERROR)
        }
    }
}

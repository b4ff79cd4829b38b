//! `ovl serve`: the embedded HTTP, TFTP and DHCP servers of the PXE boot chain (SPEC §6).
//!
//! `Settings::resolve` merges `[serve]` of `ovl.toml` with the command line's flags once;
//! `run` binds every enabled service (a failure names the address: exit 3), logs one
//! `listening` line per service with the real address (port 0 picks a free port), and serves
//! until the token is cancelled (`cancel_on_signals`: SIGINT, SIGTERM), then lets running
//! transfers finish for a few seconds and returns. SIGHUP reloads the site (`reload`).
//!
//! The HTTP server's counters (`metrics`) get TFTP's and DHCP's once those are bound, and
//! DHCP replies become boot events, so that `/`, `/status` and `/metrics` show the whole
//! chain.
//!
//! DHCP (`proxy` or `full`) is configured from the site by `dhcp::site::dhcp_config`; its
//! lease table is a second neighbour source of the HTTP server (`configs_access = "owner"`,
//! `/status`).
//!
//! With `--watch`, watch mode ([`crate::watch`]) runs on the blocking pool beside the servers:
//! it keeps the archives current, and every project it loads becomes the HTTP server's live
//! project (`http::live`), which then does no change detection of its own.

pub mod access;
pub mod dhcp;
mod dhcp_service;
pub(crate) mod events;
pub mod http;
mod limits;
pub mod logging;
pub(crate) mod metrics;
pub mod neighbours;
pub mod public;
pub(crate) mod reload;
pub mod tftp;

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::build::project::Project;
use crate::error::{Error, Result};
use crate::site::{DhcpMode, ServeConfig};
use crate::watch::WatchOptions;

/// Where a service listens: an address, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listen {
    /// The service does not run.
    Off,
    /// The service listens here.
    At(SocketAddr),
}

impl FromStr for Listen {
    type Err = String;

    /// `off`, or an address with a port such as `0.0.0.0:80` or `127.0.0.1:0`.
    fn from_str(s: &str) -> std::result::Result<Listen, String> {
        if s.eq_ignore_ascii_case("off") {
            return Ok(Listen::Off);
        }
        s.parse().map(Listen::At).map_err(|_| {
            format!("{s:?} is not an address: expected \"off\" or IP:PORT such as 0.0.0.0:80")
        })
    }
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Listen::Off => f.write_str("off"),
            Listen::At(a) => write!(f, "{a}"),
        }
    }
}

/// What the command line says about serving; `None` keeps the `ovl.toml` setting.
#[derive(Debug, Clone, Default)]
pub(crate) struct Overrides {
    /// `--http`.
    pub(crate) http: Option<Listen>,
    /// `--tftp`.
    pub(crate) tftp: Option<Listen>,
    /// `--dhcp`.
    pub(crate) dhcp: Option<DhcpMode>,
    /// `--interface`.
    pub(crate) interface: Option<String>,
    /// `--watch` (with `--poll`, `--poll-interval`): run watch mode while serving.
    pub(crate) watch: Option<WatchOptions>,
}

/// The effective serve settings: `[serve]` with the flags applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Settings {
    /// HTTP listen address.
    pub(crate) http: Listen,
    /// TFTP listen address.
    pub(crate) tftp: Listen,
    /// DHCP mode.
    pub(crate) dhcp: DhcpMode,
    /// Network interface (DHCP).
    pub(crate) interface: Option<String>,
    /// Watch mode while serving, keeping archives and the served project current.
    pub(crate) watch: Option<WatchOptions>,
}

impl Settings {
    /// Applies `flags` over `config`. `ovl.toml`'s addresses were validated when it was read.
    pub(crate) fn resolve(config: &ServeConfig, flags: &Overrides) -> Result<Settings> {
        let parse = |what: &str, v: &str| {
            v.parse::<Listen>()
                .map_err(|e| Error::Usage(format!("[serve] {what}: {e}")))
        };
        Ok(Settings {
            http: match flags.http {
                Some(l) => l,
                None => parse("http", &config.http)?,
            },
            tftp: match flags.tftp {
                Some(l) => l,
                None => parse("tftp", &config.tftp)?,
            },
            dhcp: flags.dhcp.unwrap_or(config.dhcp.mode),
            interface: flags.interface.clone().or_else(|| config.interface.clone()),
            watch: flags.watch.clone(),
        })
    }

    /// Refuses settings that cannot be served: DHCP (full or proxy) without an interface,
    /// or nothing to serve.
    pub(crate) fn check(&self) -> Result<()> {
        if self.dhcp != DhcpMode::Off && self.interface.is_none() {
            return Err(Error::Usage(dhcp::site::NEEDS_INTERFACE.into()));
        }
        if self.http == Listen::Off && self.tftp == Listen::Off && self.dhcp == DhcpMode::Off {
            return Err(Error::Usage(
                "nothing to serve: HTTP, TFTP and DHCP are all off".into(),
            ));
        }
        Ok(())
    }
}

fn bind_error(service: &str, addr: SocketAddr, e: std::io::Error) -> Error {
    Error::Env(format!("cannot listen on {addr} ({service}): {e}"))
}

/// Binds the enabled services, logs their addresses, and serves until `shutdown` is
/// cancelled; returns once every service (and watch mode, with `--watch`) has stopped.
pub(crate) async fn run(
    project: Project,
    settings: Settings,
    shutdown: CancellationToken,
) -> Result<()> {
    settings.check()?;
    let open_files = limits::raise_open_files();
    tracing::info!(event = "open_files", limit = open_files, "open-file limit");
    let root = project.site.root.clone();
    // The DHCP configuration needs the project and the HTTP address; read both first.
    let dhcp_project = (settings.dhcp != DhcpMode::Off).then(|| project.clone());
    // Who is at which address, for the owner rule of both file servers: the kernel's
    // neighbour table, then the DHCP leases (the table exists once DHCP is bound, after
    // HTTP, so it is asked through a slot).
    let leases = Arc::new(neighbours::LateLeases::default());
    let mut who = neighbours::Neighbours::default();
    who.push(leases.clone());
    let started_with = project.clone();
    let (http, live) = bind_http(&settings, project, &who, open_files).await?;
    let events = http.as_ref().map(http::HttpServer::events);
    let metrics = http.as_ref().map(http::HttpServer::metrics);
    let tftp = bind_tftp(&settings, &root, events.clone(), &live, who).await?;
    if let (Some(m), Some(t)) = (&metrics, &tftp) {
        let _ = m.tftp.set(t.stats());
    }
    let http_addr = http.as_ref().map(http::HttpServer::local_addr);
    let dhcp = match &dhcp_project {
        None => None,
        Some(p) => {
            let mut d = dhcp_service::bind_dhcp(&settings, p, http_addr, &leases).await?;
            d.observe(events.clone(), metrics.as_deref());
            Some(d)
        }
    };
    let bound = reload::Bound {
        project: started_with,
        settings: settings.clone(),
        http: http_addr,
    };
    reload::reload_on_hangup(Some(Arc::clone(&live)), bound, shutdown.clone())?;
    let mode = match settings.dhcp {
        DhcpMode::Off => "off",
        DhcpMode::Proxy => "proxy",
        DhcpMode::Full => "full",
    };
    tracing::info!(event = "serving", site = %root.display(), dhcp = mode,
        interface = settings.interface.as_deref().unwrap_or(""), "ovl serve");
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(s) = tftp {
        let addr = s
            .local_addr()
            .map_err(|e| Error::Env(format!("tftp: {e}")))?;
        tracing::info!(event = "listening", service = "tftp", addr = %addr, "listening");
        tasks.spawn(s.run(shutdown.clone()));
    }
    if let Some(s) = http {
        tracing::info!(event = "listening", service = "http", addr = %s.local_addr(),
            fs_offload = s.fs_offload(), "listening");
        tasks.spawn(s.run(shutdown.clone()));
    } else if settings.watch.is_none() {
        // Without HTTP, the project TFTP serves by still follows its files.
        tasks.spawn(http::live::reload_loop(
            Arc::clone(&live),
            http::RELOAD_INTERVAL,
            true,
            shutdown.clone(),
        ));
    }
    if let Some(d) = dhcp {
        d.spawn(&settings, &mut tasks, shutdown.clone());
    }
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = settings
        .watch
        .clone()
        .map(|opts| spawn_watch(root, opts, Some(live), metrics, Arc::clone(&stop)));
    while tasks.join_next().await.is_some() {}
    tracing::info!(event = "stopped", "ovl serve stopped");
    stop.store(true, Ordering::Relaxed);
    match watcher {
        None => Ok(()),
        Some(w) => w
            .await
            .unwrap_or_else(|_| Err(Error::Env("watch mode stopped unexpectedly".into()))),
    }
}

/// The HTTP server, when enabled, and the live project both file servers serve (the HTTP
/// server's, or one of its own without HTTP); `who` tells who is at an address.
async fn bind_http(
    settings: &Settings,
    project: Project,
    who: &neighbours::Neighbours,
    open_files: u64,
) -> Result<(Option<http::HttpServer>, Arc<http::LiveProject>)> {
    let Listen::At(addr) = settings.http else {
        let live = tokio::task::spawn_blocking(move || http::LiveProject::new(project, None))
            .await
            .map_err(|e| Error::Env(format!("loading the project: {e}")))?;
        return Ok((None, Arc::new(live)));
    };
    let mut cfg = http::HttpConfig::new(addr);
    cfg.neighbours = who.clone();
    let serve = &project.site.config.serve;
    cfg.max_connections = limits::connection_cap(serve.max_connections, open_files);
    if cfg.max_connections < serve.max_connections as usize {
        tracing::warn!(
            event = "max_connections_lowered",
            max_connections = cfg.max_connections,
            configured = serve.max_connections,
            open_files,
            "[serve] max_connections lowered to fit the open-file limit"
        );
    }
    cfg.header_timeout = Duration::from_secs(serve.header_timeout.into());
    cfg.idle_timeout = Duration::from_secs(serve.idle_timeout.into());
    // With `--watch`, the watch loop feeds the project; the server does not check on its own.
    cfg.watched = settings.watch.is_some();
    let server = http::HttpServer::bind(cfg, project)
        .await
        .map_err(|e| bind_error("http", addr, e))?;
    let live = server.project();
    Ok((Some(server), live))
}

/// The TFTP server, when enabled, serving what the live project makes public; its transfers
/// become boot events of the HTTP server's `/status` when that runs.
async fn bind_tftp(
    settings: &Settings,
    root: &std::path::Path,
    events: Option<Arc<events::BootEvents>>,
    live: &Arc<http::LiveProject>,
    who: neighbours::Neighbours,
) -> Result<Option<tftp::TftpServer>> {
    let Listen::At(addr) = settings.tftp else {
        return Ok(None);
    };
    let mut cfg = tftp::TftpConfig::new(root, addr);
    // Read at start: a reload does not resize the running server.
    cfg.max_transfers = live.snapshot().project.site.config.serve.tftp_max_transfers as usize;
    cfg.policy = Some(Arc::clone(live) as Arc<dyn access::PolicySource>);
    cfg.neighbours = who;
    if let Some(events) = events {
        let neighbours = cfg.neighbours.clone();
        cfg.on_transfer = Some(tftp::TransferHook(Arc::new(move |t| {
            tftp_boot_event(&events, &neighbours, t);
        })));
    }
    tftp::TftpServer::bind(cfg)
        .await
        .map(Some)
        .map_err(|e| bind_error("tftp", addr, e))
}

/// Records a TFTP fetch of the boot chain (iPXE binaries, scripts, kernels, configs) as a
/// boot event, attributed like HTTP's: by the MAC in the archive name, else the neighbour
/// table or DHCP lease of the client, else the MAC it last named.
fn tftp_boot_event(
    events: &events::BootEvents,
    neighbours: &neighbours::Neighbours,
    t: &tftp::TransferDone,
) {
    let name = t.file.trim_start_matches('/');
    let kind = if name == "boot.ipxe" || name == "gpxe-script" {
        Some(events::EventKind::Script)
    } else if name.starts_with("configs/") {
        Some(events::EventKind::ConfigServed)
    } else {
        events::EventKind::of_file(name)
    };
    let Some(kind) = kind else {
        return;
    };
    let ip = t.client.ip();
    let mac = name
        .strip_prefix("configs/")
        .and_then(|n| n.strip_suffix(".tar.gz"))
        .and_then(|m| m.parse().ok())
        .or_else(|| neighbours.mac_of(ip))
        .or_else(|| events.client_mac(ip));
    let ms = u64::try_from(t.duration.as_millis()).unwrap_or(u64::MAX);
    events.record(
        mac,
        events::BootEvent::now(kind, format!("tftp:{name}"), ip, 0, t.bytes, ms),
    );
}

/// Runs watch mode on the blocking pool until `stop` is set, feeding the HTTP server's live
/// project (when HTTP runs) with every project it loads; its reports become log lines. When
/// watch mode cannot start (inotify unavailable), the live project checks its files itself,
/// as without `--watch`, and the error is returned once `stop` is set.
fn spawn_watch(
    root: PathBuf,
    opts: WatchOptions,
    live: Option<Arc<http::LiveProject>>,
    metrics: Option<Arc<metrics::Metrics>>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Result<()>> {
    tokio::task::spawn_blocking(move || {
        let feed = live.as_deref().map(|l| l as &dyn crate::watch::Feed);
        let mut first = true;
        let watched = crate::watch::run_feeding(
            &root,
            &opts,
            &stop,
            &mut |r| {
                if let Some(m) = &metrics {
                    observe_report(m, &r, &mut first);
                }
                match &r {
                    crate::watch::Report::Error { .. } => {
                        tracing::warn!(event = "watch_error", "{r}");
                    }
                    _ => tracing::info!(event = "watch", "{r}"),
                }
            },
            feed,
        );
        if watched.is_err()
            && let Some(live) = live
        {
            let every = http::RELOAD_INTERVAL;
            while !stop.load(Ordering::Relaxed) {
                live.check();
                let until = std::time::Instant::now() + every;
                while std::time::Instant::now() < until && !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
            }
        }
        watched
    })
}

/// Counts a watch report in `/metrics`: build (the first) and rebuild durations, failures.
fn observe_report(m: &metrics::Metrics, r: &crate::watch::Report, first: &mut bool) {
    match r {
        crate::watch::Report::Rebuild {
            devices,
            duration_ms,
            ..
        } => {
            m.observe_build(*first, *duration_ms as f64 / 1000.0);
            *first = false;
            if devices
                .iter()
                .any(|d| d.state == crate::build::state::PublishState::Failed)
            {
                m.build_failed();
            }
        }
        crate::watch::Report::Error { .. } => m.build_failed(),
        _ => {}
    }
}

/// Cancels `token` on the first SIGINT or SIGTERM.
pub(crate) fn cancel_on_signals(token: CancellationToken) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int =
        signal(SignalKind::interrupt()).map_err(|e| Error::Env(format!("SIGINT: {e}")))?;
    let mut term =
        signal(SignalKind::terminate()).map_err(|e| Error::Env(format!("SIGTERM: {e}")))?;
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        };
        tracing::info!(
            event = "shutdown",
            signal = name,
            "stopping: no new requests; running transfers get a few seconds"
        );
        token.cancel();
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_parses() {
        assert_eq!("off".parse::<Listen>(), Ok(Listen::Off));
        assert_eq!(
            "127.0.0.1:0".parse::<Listen>(),
            Ok(Listen::At("127.0.0.1:0".parse().unwrap()))
        );
        assert!("localhost".parse::<Listen>().is_err());
        assert!("127.0.0.1".parse::<Listen>().is_err());
    }

    #[test]
    fn flags_override_the_site() {
        let cfg = ServeConfig::default();
        let s = Settings::resolve(&cfg, &Overrides::default()).unwrap();
        assert_eq!(s.http, Listen::At("0.0.0.0:80".parse().unwrap()));
        assert_eq!(s.dhcp, DhcpMode::Off);
        let s = Settings::resolve(
            &cfg,
            &Overrides {
                http: Some(Listen::Off),
                tftp: Some(Listen::At("127.0.0.1:6969".parse().unwrap())),
                dhcp: Some(DhcpMode::Proxy),
                interface: Some("br0".into()),
                watch: None,
            },
        )
        .unwrap();
        assert_eq!(s.http, Listen::Off);
        assert_eq!(s.interface.as_deref(), Some("br0"));
        assert!(s.check().is_ok());
        let full = Settings {
            dhcp: DhcpMode::Full,
            interface: None,
            ..s
        };
        assert_eq!(full.check().unwrap_err().exit_code(), 2);
    }

    #[test]
    fn nothing_to_serve_is_a_usage_error() {
        let s = Settings {
            http: Listen::Off,
            tftp: Listen::Off,
            dhcp: DhcpMode::Off,
            interface: None,
            watch: None,
        };
        assert_eq!(s.check().unwrap_err().exit_code(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn without_inotify_the_served_project_still_follows_its_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("site");
        crate::site::example::write_example(&root).unwrap();
        let project = Project::load(crate::site::Site::open(&root).unwrap()).unwrap();
        let live = Arc::new(http::LiveProject::new(project, None));
        let stop = Arc::new(AtomicBool::new(false));
        // Watching a folder that does not exist fails at once, like inotify running out.
        let watch = spawn_watch(
            dir.path().join("missing"),
            WatchOptions::default(),
            Some(Arc::clone(&live)),
            None,
            Arc::clone(&stop),
        );
        let toml = root.join("ovl.toml");
        let good = std::fs::read_to_string(&toml).unwrap();
        std::fs::write(&toml, format!("{good}default_profile = \"S\"\n")).unwrap();
        let end = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while live.snapshot().generation < 2 && std::time::Instant::now() < end {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(live.snapshot().generation, 2);
        stop.store(true, Ordering::Relaxed);
        let e = watch.await.unwrap().unwrap_err();
        assert_eq!(e.exit_code(), 3, "{e}");
    }
}

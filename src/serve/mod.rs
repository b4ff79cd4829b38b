//! `ovl serve`: the embedded HTTP, TFTP and DHCP servers of the PXE boot chain (SPEC §6).
//!
//! [`Settings::resolve`] merges `[serve]` of `ovl.toml` with the command line's flags once;
//! [`run`] binds every enabled service (a failure names the address: exit 3), logs one
//! `listening` line per service with the real address (port 0 picks a free port), and serves
//! until the token is cancelled ([`cancel_on_signals`]: SIGINT, SIGTERM), then lets running
//! transfers finish for a few seconds and returns.
//!
//! DHCP (`proxy` or `full`) is configured from the site by [`dhcp::site::dhcp_config`]; its
//! lease table is a second neighbour source of the HTTP server (`configs_access = "owner"`,
//! `/status`).

pub mod dhcp;
pub mod events;
pub mod http;
pub mod logging;
pub mod neighbours;
pub mod public;
pub mod tftp;

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::build::project::Project;
use crate::error::{Error, Result};
use crate::site::{DhcpMode, ServeConfig};

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
pub struct Overrides {
    /// `--http`.
    pub http: Option<Listen>,
    /// `--tftp`.
    pub tftp: Option<Listen>,
    /// `--dhcp`.
    pub dhcp: Option<DhcpMode>,
    /// `--interface`.
    pub interface: Option<String>,
}

/// The effective serve settings: `[serve]` with the flags applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// HTTP listen address.
    pub http: Listen,
    /// TFTP listen address.
    pub tftp: Listen,
    /// DHCP mode.
    pub dhcp: DhcpMode,
    /// Network interface (DHCP).
    pub interface: Option<String>,
}

impl Settings {
    /// Applies `flags` over `config`. `ovl.toml`'s addresses were validated when it was read.
    pub fn resolve(config: &ServeConfig, flags: &Overrides) -> Result<Settings> {
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
        })
    }

    /// Refuses settings that cannot be served: full DHCP without an interface, or nothing
    /// to serve.
    pub fn check(&self) -> Result<()> {
        if self.dhcp == DhcpMode::Full && self.interface.is_none() {
            return Err(Error::Usage(
                "full DHCP needs the interface to serve: pass --interface IF or set [serve] \
                 interface in ovl.toml"
                    .into(),
            ));
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
/// cancelled; returns once every service has stopped.
pub async fn run(project: Project, settings: Settings, shutdown: CancellationToken) -> Result<()> {
    settings.check()?;
    let root = project.site.root.clone();
    let mut tasks = tokio::task::JoinSet::new();
    // The DHCP configuration needs the project and the HTTP address; read both first.
    let dhcp_project = (settings.dhcp != DhcpMode::Off).then(|| project.clone());

    // The lease table exists once DHCP is bound, after HTTP: HTTP asks it through this slot.
    let leases = Arc::new(neighbours::LateLeases::default());
    let http = match settings.http {
        Listen::Off => None,
        Listen::At(addr) => {
            let mut cfg = http::HttpConfig::new(addr);
            cfg.neighbours.push(leases.clone());
            Some(
                http::HttpServer::bind(cfg, project)
                    .await
                    .map_err(|e| bind_error("http", addr, e))?,
            )
        }
    };
    let tftp = match settings.tftp {
        Listen::Off => None,
        Listen::At(addr) => {
            let mut cfg = tftp::TftpConfig::new(&root, addr);
            // TFTP fetches of the boot chain (iPXE binaries, scripts, kernels) become boot
            // events in /status, attributed like HTTP's: by the client's known MAC.
            if let Some(events) = http.as_ref().map(|h| h.events()) {
                cfg.on_transfer = Some(tftp::TransferHook(std::sync::Arc::new(move |t| {
                    let name = t.file.trim_start_matches('/');
                    let kind = if name == "boot.ipxe" || name == "gpxe-script" {
                        Some(events::EventKind::Script)
                    } else if name.starts_with("configs/") {
                        Some(events::EventKind::ConfigServed)
                    } else {
                        events::EventKind::of_file(name)
                    };
                    if let Some(kind) = kind {
                        let ip = t.client.ip();
                        let mac = name
                            .strip_prefix("configs/")
                            .and_then(|n| n.strip_suffix(".tar.gz"))
                            .and_then(|m| m.parse().ok())
                            .or_else(|| events.client_mac(ip));
                        let ms = u64::try_from(t.duration.as_millis()).unwrap_or(u64::MAX);
                        events.record(
                            mac,
                            events::BootEvent::now(
                                kind,
                                format!("tftp:{name}"),
                                ip,
                                0,
                                t.bytes,
                                ms,
                            ),
                        );
                    }
                })));
            }
            Some(
                tftp::TftpServer::bind(cfg)
                    .await
                    .map_err(|e| bind_error("tftp", addr, e))?,
            )
        }
    };
    let dhcp = match &dhcp_project {
        None => None,
        Some(p) => {
            let http_addr = http.as_ref().map(http::HttpServer::local_addr);
            let cfg = dhcp::site::dhcp_config(
                p,
                settings.dhcp,
                settings.interface.as_deref(),
                http_addr,
            )?;
            let addr = std::net::SocketAddr::from((cfg.bind_ip, cfg.server_port));
            let (mode, server_ip, url) = (cfg.mode, cfg.server_ip, cfg.ipxe_script_url.clone());
            let server = dhcp::DhcpServer::bind(cfg)
                .await
                .map_err(|e| bind_error("dhcp", addr, e))?;
            leases.set(server.leases());
            Some((server, addr, mode, server_ip, url))
        }
    };
    let mode = match settings.dhcp {
        DhcpMode::Off => "off",
        DhcpMode::Proxy => "proxy",
        DhcpMode::Full => "full",
    };
    tracing::info!(event = "serving", site = %root.display(), dhcp = mode,
        interface = settings.interface.as_deref().unwrap_or(""), "ovl serve");
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
    }
    if let Some((s, addr, mode, server_ip, url)) = dhcp {
        tracing::info!(event = "listening", service = "dhcp", addr = %addr, mode = %mode,
            server_ip = %server_ip, script_url = %url,
            interface = settings.interface.as_deref().unwrap_or("*"), "listening");
        let token = shutdown.clone();
        tasks.spawn(async move {
            if let Err(e) = s.run(token).await {
                tracing::error!(event = "dhcp_server_error", error = %e);
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    tracing::info!(event = "stopped", "ovl serve stopped");
    Ok(())
}

/// Cancels `token` on the first SIGINT or SIGTERM.
pub fn cancel_on_signals(token: CancellationToken) -> Result<()> {
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
        };
        assert_eq!(s.check().unwrap_err().exit_code(), 2);
    }
}

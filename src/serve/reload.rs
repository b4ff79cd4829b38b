//! SIGHUP: `ovl serve` reloads the site (`ovl.toml`, `devices.toml`, `profiles/*.toml`)
//! through the live project's reload path and logs the outcome; a broken site keeps the last
//! good project (and counts in `ovl_reload_errors_total`). What is fixed once the servers are
//! bound (listen addresses, the DHCP mode, interface, pools and fixed addresses) does not
//! change by a reload: when it differs, the log says that a restart is needed.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::Settings;
use super::http::LiveProject;
use crate::build::project::Project;
use crate::error::{Error, Result};
use crate::site::DhcpMode;

/// What the running servers were bound with, to tell which reloaded settings need a restart.
#[derive(Debug, Clone)]
pub(crate) struct Bound {
    /// The project as it was when the servers were bound.
    pub(crate) project: Project,
    /// The effective settings (flags applied).
    pub(crate) settings: Settings,
    /// The HTTP address really bound, for the DHCP configuration's script URL.
    pub(crate) http: Option<SocketAddr>,
}

/// The settings of `new` that differ from what the servers were bound with.
pub(crate) fn needs_restart(bound: &Bound, new: &Project) -> Vec<&'static str> {
    let (a, b) = (&bound.project.site.config.serve, &new.site.config.serve);
    let mut out = Vec::new();
    if a.http != b.http {
        out.push("[serve] http");
    }
    if a.tftp != b.tftp {
        out.push("[serve] tftp");
    }
    if a.interface != b.interface {
        out.push("[serve] interface");
    }
    if a.dhcp.mode != b.dhcp.mode {
        out.push("[serve.dhcp] mode");
    }
    if bound.settings.dhcp != DhcpMode::Off && dhcp_differs(bound, new) {
        out.push("DHCP pools, options or fixed addresses");
    }
    out
}

/// Would `new` configure the DHCP server differently?
fn dhcp_differs(bound: &Bound, new: &Project) -> bool {
    let make = |p: &Project| {
        super::dhcp::site::dhcp_config(
            p,
            bound.settings.dhcp,
            bound.settings.interface.as_deref(),
            bound.http,
        )
    };
    match (make(&bound.project), make(new)) {
        (Ok(a), Ok(b)) => {
            a.pools != b.pools
                || a.fixed != b.fixed
                || a.server_ip != b.server_ip
                || a.boot_files != b.boot_files
                || a.ipxe_script_url != b.ipxe_script_url
        }
        _ => true,
    }
}

/// Reloads on every SIGHUP until `shutdown`. `ovl serve` always passes a live project (the
/// HTTP server's, or without HTTP the one TFTP's public set comes from); without one a
/// SIGHUP is only logged.
pub(crate) fn reload_on_hangup(
    live: Option<Arc<LiveProject>>,
    bound: Bound,
    shutdown: CancellationToken,
) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup()).map_err(|e| Error::Env(format!("SIGHUP: {e}")))?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                r = hup.recv() => if r.is_none() { return },
            }
            let Some(live) = live.clone() else {
                tracing::info!(
                    event = "reload",
                    signal = "SIGHUP",
                    "SIGHUP: nothing to reload (no live project)"
                );
                continue;
            };
            let b = bound.clone();
            let done = tokio::task::spawn_blocking(move || reload(&live, &b)).await;
            if done.is_err() {
                tracing::error!(
                    event = "reload_failed",
                    signal = "SIGHUP",
                    "reload panicked"
                );
            }
        }
    });
    Ok(())
}

/// One reload, logged.
fn reload(live: &LiveProject, bound: &Bound) {
    match live.reload_now() {
        Ok(snap) => {
            let restart = needs_restart(bound, &snap.project);
            tracing::info!(
                event = "reload",
                signal = "SIGHUP",
                generation = snap.generation,
                devices = snap.project.inventory.devices.len(),
                "site reloaded"
            );
            if !restart.is_empty() {
                tracing::warn!(event = "reload_needs_restart", settings = %restart.join(", "),
                    "changed settings take effect after a restart of ovl serve");
            }
        }
        Err(error) => {
            tracing::error!(event = "reload_failed", signal = "SIGHUP", %error,
                "reload failed; serving the last good project");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::{Listen, Overrides};

    #[test]
    fn listen_and_dhcp_changes_need_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("site");
        crate::site::example::write_example(&root).unwrap();
        let load = || Project::load(crate::site::Site::open(&root).unwrap()).unwrap();
        let project = load();
        let mut settings =
            Settings::resolve(&project.site.config.serve, &Overrides::default()).unwrap();
        settings.http = Listen::At("127.0.0.1:8080".parse().unwrap());
        let bound = Bound {
            project,
            settings,
            http: Some("127.0.0.1:8080".parse().unwrap()),
        };
        assert!(needs_restart(&bound, &load()).is_empty());
        let toml = root.join("ovl.toml");
        let text = std::fs::read_to_string(&toml).unwrap();
        let changed = text.replacen("tftp = \"0.0.0.0:69\"", "tftp = \"127.0.0.1:6969\"", 1);
        assert_ne!(text, changed, "the example sets [serve] tftp");
        std::fs::write(&toml, changed).unwrap();
        assert_eq!(needs_restart(&bound, &load()), vec!["[serve] tftp"]);
    }
}

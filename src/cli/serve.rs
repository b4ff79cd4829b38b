//! `ovl serve`: the boot chain (DHCP, TFTP, HTTP) on a tokio runtime until SIGINT or
//! SIGTERM, optionally with watch mode on its own thread.

use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::build::project::Project;
use crate::cli::watch::parse_seconds;
use crate::error::{EXIT_OK, Error, Result};
use crate::serve::logging::LogFormat;
use crate::serve::{Listen, Overrides, Settings};
use crate::site::DhcpMode;

/// `ovl serve`: flags override `[serve]` of `ovl.toml`.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// HTTP listen address (IP:PORT, port 0 picks a free one), or `off`.
    #[arg(long, value_name = "ADDR|off")]
    http: Option<Listen>,
    /// TFTP listen address (IP:PORT, port 0 picks a free one), or `off`.
    #[arg(long, value_name = "ADDR|off")]
    tftp: Option<Listen>,
    /// DHCP: `off`, `proxy` (PXE boot information beside the site's DHCP server) or `full`
    /// (address pool from [serve.dhcp] of ovl.toml; needs --interface).
    #[arg(long, value_enum, value_name = "MODE")]
    dhcp: Option<DhcpArg>,
    /// Network interface for DHCP (its IPv4 address is the server's unless [boot] server is
    /// one).
    #[arg(long, value_name = "IF")]
    interface: Option<String>,
    /// Log lines on stderr as text or as JSON objects.
    #[arg(long, value_enum, default_value_t = LogFormatArg::Text, value_name = "FORMAT")]
    log_format: LogFormatArg,
    /// Also run watch mode: keep the archives current while serving (see `ovl watch`).
    #[arg(long)]
    watch: bool,
    /// With --watch: poll for changes even where inotify works.
    #[arg(long, requires = "watch")]
    poll: bool,
    /// With --watch: seconds between two polls.
    #[arg(long, value_name = "SECONDS", default_value = "1", value_parser = parse_seconds)]
    poll_interval: Duration,
}

/// `--dhcp`: the command line's spelling of [`DhcpMode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DhcpArg {
    /// No DHCP server.
    Off,
    /// PXE proxyDHCP beside the site's own DHCP server.
    Proxy,
    /// Full DHCP server with an address pool.
    Full,
}

impl From<DhcpArg> for DhcpMode {
    fn from(a: DhcpArg) -> DhcpMode {
        match a {
            DhcpArg::Off => DhcpMode::Off,
            DhcpArg::Proxy => DhcpMode::Proxy,
            DhcpArg::Full => DhcpMode::Full,
        }
    }
}

/// `--log-format`: the command line's spelling of [`LogFormat`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormatArg {
    /// `2026-01-01T00:00:00Z  INFO listening service="http" addr=…`.
    Text,
    /// `{"timestamp":…,"level":"INFO","fields":{…}}`, one object a line.
    Json,
}

impl From<LogFormatArg> for LogFormat {
    fn from(a: LogFormatArg) -> LogFormat {
        match a {
            LogFormatArg::Text => LogFormat::Text,
            LogFormatArg::Json => LogFormat::Json,
        }
    }
}

/// Logging, then the project (from `project`), the effective settings, then the servers until
/// SIGINT or SIGTERM.
pub(crate) fn run(a: &ServeArgs, project: impl FnOnce() -> Result<Project>) -> Result<i32> {
    let _log = crate::serve::logging::init(a.log_format.into()).map_err(Error::Env)?;
    let p = project()?;
    let flags = Overrides {
        http: a.http,
        tftp: a.tftp,
        dhcp: a.dhcp.map(DhcpMode::from),
        interface: a.interface.clone(),
        watch: a.watch.then(|| crate::watch::WatchOptions {
            force_poll: a.poll,
            poll_interval: a.poll_interval,
            ..Default::default()
        }),
    };
    let settings = Settings::resolve(&p.site.config.serve, &flags)?;
    settings.check()?;
    limit_malloc_arenas();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Env(format!("cannot start the runtime: {e}")))?;
    // With --watch, watch mode runs beside the servers and feeds them the projects it loads;
    // the servers read what it publishes (archives are renamed into place, so a download
    // never sees half a file).
    rt.block_on(async {
        let token = tokio_util::sync::CancellationToken::new();
        crate::serve::cancel_on_signals(token.clone())?;
        crate::serve::run(p, settings, token).await
    })?;
    // Connections dropped after the grace period may still hold tasks; do not wait on them.
    rt.shutdown_timeout(Duration::from_millis(200));
    Ok(EXIT_OK)
}

/// One glibc malloc arena a core instead of eight: the server's many short-lived
/// blocking threads (file reads of a boot storm) would otherwise spread their 64 KiB buffers
/// over up to 8 × cores arenas that each keep freed memory (a 2,000-device storm: 602 MB
/// peak with the default, 474 MB with one arena a core; small-file requests alike).
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
        let cores = libc::c_int::try_from(cores).unwrap_or(libc::c_int::MAX);
        // SAFETY: mallopt only sets a tuning parameter; called before the threads start.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, cores) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--dhcp MODE` is spelled as `dhcp = "MODE"` in ovl.toml.
    #[test]
    fn dhcp_flag_spells_modes_as_ovl_toml() {
        for a in DhcpArg::value_variants() {
            let flag = a.to_possible_value().unwrap();
            let toml = serde_json::to_value(DhcpMode::from(*a)).unwrap();
            assert_eq!(toml, flag.get_name());
        }
    }

    #[test]
    fn log_formats_map_one_to_one() {
        assert_eq!(LogFormat::from(LogFormatArg::Text), LogFormat::Text);
        assert_eq!(LogFormat::from(LogFormatArg::Json), LogFormat::Json);
        assert_eq!(LogFormat::default(), LogFormatArg::Text.into());
    }
}

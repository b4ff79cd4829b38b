//! Logging of `ovl serve`: `tracing` events on stderr, one line each, as text for people
//! (`--log-format text`) or as one JSON object per line for machines (`--log-format json`).
//! The level comes from `RUST_LOG` when set, else `info`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// `2026-01-01T00:00:00Z  INFO listening service="http" addr=…`.
    #[default]
    Text,
    /// `{"timestamp":…,"level":"INFO","fields":{…}}`, one object a line.
    Json,
}

/// Installs the global subscriber. Fails only when one is already installed.
pub(crate) fn init(format: LogFormat) -> Result<(), String> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let r = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
    r.map_err(|e| e.to_string())
}

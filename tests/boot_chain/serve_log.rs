//! The events in `ovl serve`'s JSON log.

use std::fs;
use std::path::Path;

/// The JSON log lines of `ovl serve` with this `event`.
pub fn log_events(log: &Path, event: &str) -> Vec<serde_json::Value> {
    fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == event)
        .collect()
}

/// The files served over TFTP, from the log.
pub fn tftp_files(log: &Path) -> Vec<String> {
    log_events(log, "tftp_transfer")
        .iter()
        .map(|v| v["file"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// The files requested over HTTP, from the log.
pub fn http_files(log: &Path) -> Vec<String> {
    log_events(log, "http_request")
        .iter()
        .map(|v| v["file"].as_str().unwrap_or_default().to_string())
        .collect()
}

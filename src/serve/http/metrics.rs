//! `/metrics`: the server's counters in the Prometheus text exposition format (0.0.4).
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `ovl_boot_events_total` | counter | `kind` (dhcp_offer … config_not_found), `status` (HTTP status, 0 for TFTP and DHCP) |
//! | `ovl_served_bytes_total` | counter | `protocol` (`http`: body bytes sent; `tftp`: bytes of completed transfers) |
//! | `ovl_transfers_in_flight` | gauge | `protocol` |
//! | `ovl_dhcp_replies_total` | counter | `type` (offer, ack, nak) |
//! | `ovl_dhcp_requests_total` | counter | `outcome` (received, malformed, ignored) |
//! | `ovl_dhcp_pool_addresses`, `ovl_dhcp_pool_leased` | gauge | |
//! | `ovl_watch_build_duration_seconds` | histogram | `phase` (`build`: watch mode's first build, `rebuild`) |
//! | `ovl_watch_build_errors_total` | counter | |
//! | `ovl_reload_errors_total` | counter | |
//! | `ovl_project_generation`, `ovl_devices` | gauge | |
//!
//! DHCP metrics are present only when DHCP runs, TFTP's when TFTP runs.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use crate::serve::dhcp::{LeaseState, StatsSnapshot};
use crate::serve::events::BootEvents;
use crate::serve::metrics::{DURATION_BUCKETS, Histogram, Metrics};
use crate::serve::tftp::TftpStats;

use super::live::LiveProject;

/// The `Content-Type` of the text format.
pub(super) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Appends `# HELP` and `# TYPE` of one metric.
fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// The whole exposition.
pub(super) fn render(metrics: &Metrics, events: &BootEvents, live: &LiveProject) -> String {
    let mut out = String::new();
    head(
        &mut out,
        "ovl_boot_events_total",
        "counter",
        "Boot-chain events by kind and status (HTTP status; 0 for TFTP and DHCP).",
    );
    for (kind, status, n) in events.totals() {
        let _ = writeln!(
            out,
            "ovl_boot_events_total{{kind=\"{kind}\",status=\"{status}\"}} {n}"
        );
    }
    let tftp = metrics.tftp.get();
    head(
        &mut out,
        "ovl_served_bytes_total",
        "counter",
        "Bytes served: HTTP body bytes sent, TFTP bytes of completed transfers.",
    );
    let http_bytes = metrics.http_bytes.load(Ordering::Relaxed);
    let _ = writeln!(
        out,
        "ovl_served_bytes_total{{protocol=\"http\"}} {http_bytes}"
    );
    if let Some(t) = tftp {
        let b = TftpStats::get(&t.bytes_sent);
        let _ = writeln!(out, "ovl_served_bytes_total{{protocol=\"tftp\"}} {b}");
    }
    head(
        &mut out,
        "ovl_transfers_in_flight",
        "gauge",
        "Requests and transfers running now.",
    );
    let http_now = metrics.http_in_flight.load(Ordering::Relaxed);
    let _ = writeln!(
        out,
        "ovl_transfers_in_flight{{protocol=\"http\"}} {http_now}"
    );
    if let Some(t) = tftp {
        let n = TftpStats::get(&t.running);
        let _ = writeln!(out, "ovl_transfers_in_flight{{protocol=\"tftp\"}} {n}");
    }
    if let Some(d) = metrics.dhcp.get() {
        dhcp(
            &mut out,
            &d.stats.snapshot(),
            d.pool_size,
            leased(&d.leases),
        );
    }
    builds(&mut out, metrics);
    head(
        &mut out,
        "ovl_reload_errors_total",
        "counter",
        "Reloads of ovl.toml, devices.toml and profiles that failed.",
    );
    let _ = writeln!(out, "ovl_reload_errors_total {}", live.reload_errors());
    let snap = live.snapshot();
    head(
        &mut out,
        "ovl_project_generation",
        "gauge",
        "Successful project loads since the start.",
    );
    let _ = writeln!(out, "ovl_project_generation {}", snap.generation);
    head(
        &mut out,
        "ovl_devices",
        "gauge",
        "Devices in the inventory.",
    );
    let _ = writeln!(out, "ovl_devices {}", snap.project.inventory.devices.len());
    out
}

/// Leases bound or offered and not expired.
fn leased(leases: &crate::serve::dhcp::LeaseTable) -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let n = leases
        .list()
        .iter()
        .filter(|l| matches!(l.state, LeaseState::Bound | LeaseState::Offered) && l.is_active(now))
        .count();
    u64::try_from(n).unwrap_or(u64::MAX)
}

fn dhcp(out: &mut String, s: &StatsSnapshot, pool: u64, leased: u64) {
    head(
        out,
        "ovl_dhcp_replies_total",
        "counter",
        "DHCP replies sent, by message type.",
    );
    for (t, n) in [("offer", s.offers), ("ack", s.acks), ("nak", s.naks)] {
        let _ = writeln!(out, "ovl_dhcp_replies_total{{type=\"{t}\"}} {n}");
    }
    head(
        out,
        "ovl_dhcp_requests_total",
        "counter",
        "DHCP datagrams received, malformed, or not answered.",
    );
    for (t, n) in [
        ("received", s.received),
        ("malformed", s.malformed),
        ("ignored", s.ignored),
    ] {
        let _ = writeln!(out, "ovl_dhcp_requests_total{{outcome=\"{t}\"}} {n}");
    }
    head(
        out,
        "ovl_dhcp_pool_addresses",
        "gauge",
        "Addresses in the DHCP pools (0 in proxy mode).",
    );
    let _ = writeln!(out, "ovl_dhcp_pool_addresses {pool}");
    head(
        out,
        "ovl_dhcp_pool_leased",
        "gauge",
        "Unexpired leases, offered or bound.",
    );
    let _ = writeln!(out, "ovl_dhcp_pool_leased {leased}");
}

fn builds(out: &mut String, metrics: &Metrics) {
    let (build, rebuild) = metrics
        .builds
        .lock()
        .map(|g| g.clone())
        .unwrap_or_else(|p| p.into_inner().clone());
    let name = "ovl_watch_build_duration_seconds";
    head(
        out,
        name,
        "histogram",
        "Watch mode's build (first) and rebuild durations.",
    );
    for (phase, h) in [("build", &build), ("rebuild", &rebuild)] {
        histogram(out, name, phase, h);
    }
    head(
        out,
        "ovl_watch_build_errors_total",
        "counter",
        "Builds or rebuilds with a failed device or broken input.",
    );
    let n = metrics.build_errors.load(Ordering::Relaxed);
    let _ = writeln!(out, "ovl_watch_build_errors_total {n}");
}

fn histogram(out: &mut String, name: &str, phase: &str, h: &Histogram) {
    for (le, n) in DURATION_BUCKETS.iter().zip(h.buckets) {
        let _ = writeln!(out, "{name}_bucket{{phase=\"{phase}\",le=\"{le}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "{name}_bucket{{phase=\"{phase}\",le=\"+Inf\"}} {}",
        h.count
    );
    let _ = writeln!(out, "{name}_sum{{phase=\"{phase}\"}} {}", h.sum);
    let _ = writeln!(out, "{name}_count{{phase=\"{phase}\"}} {}", h.count);
}

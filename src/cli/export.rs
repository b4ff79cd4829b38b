//! `ovl export FORMAT`: the site's DHCP configuration for another DHCP server, on stdout.

use clap::Args;
use serde_json::json;

use crate::build::project::Project;
use crate::cli::output;
use crate::error::{EXIT_OK, Result};
use crate::serve::dhcp::export::ExportFormat;

/// `ovl export` options.
#[derive(Debug, Args)]
pub(crate) struct ExportArgs {
    /// The DHCP server to write for: dnsmasq, isc-dhcpd or kea.
    #[arg(value_name = "FORMAT", value_parser = parse_export_format)]
    format: ExportFormat,
    /// Interface whose IPv4 address is the boot server's when [boot] server is not one
    /// (default: [serve] interface).
    #[arg(long, value_name = "IF")]
    interface: Option<String>,
}

/// `FORMAT`: dnsmasq, isc-dhcpd (or dhcpd, isc) or kea.
fn parse_export_format(s: &str) -> std::result::Result<ExportFormat, String> {
    s.parse()
}

/// Print the configuration, as is or inside `{"format", "config"}`.
pub(crate) fn run(p: &Project, a: &ExportArgs, json: bool) -> Result<i32> {
    let cfg = crate::serve::dhcp::site::export_config(p, a.interface.as_deref())?;
    let text = crate::serve::dhcp::export::export(a.format, &cfg);
    if json {
        output::json(&json!({ "format": a.format.name(), "config": text }));
    } else {
        output::text(&text);
    }
    Ok(EXIT_OK)
}

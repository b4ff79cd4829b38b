//! `ovl export FORMAT`: configuration for the site's other servers, on stdout: the DHCP
//! server (dnsmasq, ISC dhcpd, Kea) or the NFS server's `/etc/exports` for the captures.

use clap::Args;
use serde_json::json;

use crate::build::nfs;
use crate::build::project::Project;
use crate::cli::output;
use crate::error::{EXIT_OK, Error, Result};
use crate::serve::dhcp::export::ExportFormat;

/// What to export.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Target {
    /// A DHCP server's configuration.
    Dhcp(ExportFormat),
    /// `/etc/exports` lines for the devices' capture folders.
    Nfs,
}

/// `ovl export` options.
#[derive(Debug, Args)]
pub(crate) struct ExportArgs {
    /// What to write: a DHCP server's configuration (dnsmasq, isc-dhcpd or kea), or nfs
    /// (/etc/exports lines giving each device write access to its own capture folder only).
    #[arg(value_name = "FORMAT", value_parser = parse_target)]
    format: Target,
    /// Interface whose IPv4 address is the boot server's when [boot] server is not one
    /// (default: [serve] interface).
    #[arg(long, value_name = "IF")]
    interface: Option<String>,
    /// Print only the PXE part (iPXE and firmware boot files) and the reservations, to merge
    /// into the configuration of a DHCP server that already serves the subnet. A site without
    /// [serve.dhcp] range gets this form anyway.
    #[arg(long)]
    snippet: bool,
}

/// `FORMAT`: dnsmasq, isc-dhcpd (or dhcpd, isc), kea or nfs.
fn parse_target(s: &str) -> std::result::Result<Target, String> {
    if s == "nfs" {
        return Ok(Target::Nfs);
    }
    s.parse().map(Target::Dhcp).map_err(|_| {
        format!("unknown export format {s:?} (expected dnsmasq, isc-dhcpd, kea or nfs)")
    })
}

/// Print the configuration, as is or inside `{"format", "config"}` (NFS: with every device).
pub(crate) fn run(p: &Project, a: &ExportArgs, json: bool) -> Result<i32> {
    match a.format {
        Target::Dhcp(format) => {
            let cfg = crate::serve::dhcp::site::export_config(p, a.interface.as_deref())?;
            let snippet = a.snippet || cfg.range.is_none();
            if !a.snippet && cfg.range.is_none() {
                eprintln!(
                    "warning: [serve.dhcp] range is not set in {}: printing only the PXE part \
                     and the reservations, to merge into the configuration of the DHCP server \
                     that hands out the subnet's addresses",
                    p.site.site_file().display()
                );
            }
            let text = if a.snippet {
                crate::serve::dhcp::export::export_snippet(format, &cfg)
            } else {
                crate::serve::dhcp::export::export(format, &cfg)
            };
            if json {
                output::json(
                    &json!({ "format": format.name(), "snippet": snippet, "config": text }),
                );
            } else {
                output::text(&text);
            }
        }
        Target::Nfs if a.snippet => {
            return Err(Error::Usage(
                "--snippet is for the DHCP formats (dnsmasq, isc-dhcpd, kea)".into(),
            ));
        }
        Target::Nfs => {
            let (export, lines, owner) = nfs::export_lines(p)?;
            let text = nfs::exports_text(&p.site.root, &export, &lines, owner);
            for l in lines.iter().filter(|l| l.line.is_none()) {
                eprintln!(
                    "warning: device {} has no fixed ip in devices.toml: no NFS export for it",
                    l.mac
                );
            }
            if json {
                output::json(&json!({
                    "format": "nfs",
                    "config": text,
                    "anonuid": owner.0,
                    "anongid": owner.1,
                    "devices": lines,
                }));
            } else {
                output::text(&text);
            }
        }
    }
    Ok(EXIT_OK)
}

//! `ovl export FORMAT`: configuration for the site's other servers, on stdout: the DHCP
//! server (dnsmasq, ISC dhcpd, Kea) or the NFS server's `/etc/exports` for the captures.

use std::path::PathBuf;

use clap::Args;
use serde_json::json;

use crate::build::nfs;
use crate::build::project::Project;
use crate::cli::output;
use crate::error::{EXIT_OK, Error, Result};
use crate::serve::dhcp::export::ExportFormat;
use crate::serve::dhcp::kea_ha::{self, HaPeer};

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
    #[arg(long, conflicts_with = "ha")]
    snippet: bool,
    /// Kea only: the configurations of a high-availability pair in hot-standby mode, one per
    /// --ha-peer (addresses and reservations; the PXE answers come from `ovl serve --dhcp
    /// proxy` nodes). Printed as one JSON object {"NAME": config, …}, or written to --out.
    #[arg(long, requires = "ha_peer")]
    ha: bool,
    /// A Kea peer of the pair, NAME=http://IP:PORT/ (where its HA listener binds); give it
    /// twice: the primary, then the standby (further ones are backups).
    #[arg(long = "ha-peer", value_name = "NAME=URL", value_parser = kea_ha::parse_peer, requires = "ha")]
    ha_peer: Vec<HaPeer>,
    /// Folder of Kea's hook libraries libdhcp_ha.so and libdhcp_lease_cmds.so [default:
    /// /usr/lib/<arch>-linux-gnu/kea/hooks, Debian's].
    #[arg(long, value_name = "DIR", requires = "ha")]
    kea_hooks: Option<PathBuf>,
    /// With --ha: write DIR/kea-dhcp4-NAME.conf per peer (atomically) instead of printing.
    #[arg(long, value_name = "DIR", requires = "ha")]
    out: Option<PathBuf>,
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
        Target::Dhcp(format) if a.ha => return run_ha(p, a, format, json),
        Target::Dhcp(format) => {
            let cfg = crate::serve::dhcp::site::export_config(p, a.interface.as_deref(), true)?;
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
        Target::Nfs if a.snippet || a.ha => {
            return Err(Error::Usage(
                "--snippet is for the DHCP formats (dnsmasq, isc-dhcpd, kea), --ha for kea".into(),
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

/// `ovl export kea --ha`: one configuration per peer, as one JSON object on stdout or as
/// files in `--out DIR`.
fn run_ha(p: &Project, a: &ExportArgs, format: ExportFormat, json: bool) -> Result<i32> {
    if format != ExportFormat::Kea {
        return Err(Error::Usage(format!(
            "--ha is for kea (a Kea high-availability pair), not {}",
            format.name()
        )));
    }
    kea_ha::check_peers(&a.ha_peer).map_err(Error::Usage)?;
    let cfg = crate::serve::dhcp::site::export_config(p, a.interface.as_deref(), false)?;
    let hooks = a
        .kea_hooks
        .clone()
        .unwrap_or_else(kea_ha::default_hooks_dir);
    let Some(configs) = kea_ha::kea_ha(&cfg, &a.ha_peer, &hooks) else {
        return Err(Error::at_path(
            p.site.site_file(),
            "--ha writes whole Kea configurations, which need the address pool: set \
             [serve.dhcp] range (and netmask, router, dns)",
        ));
    };
    let Some(dir) = &a.out else {
        let all: serde_json::Map<String, serde_json::Value> = configs.into_iter().collect();
        if json {
            output::json(&json!({ "format": "kea", "ha": true, "configs": all }));
        } else {
            let mut text = serde_json::to_string_pretty(&all).unwrap_or_default();
            text.push('\n');
            output::text(&text);
        }
        return Ok(EXIT_OK);
    };
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut files = Vec::new();
    for (i, (name, doc)) in configs.iter().enumerate() {
        let path = dir.join(kea_ha::file_name(name));
        let text = kea_ha::file_text(name, i, doc);
        crate::build::publish::write_atomic(&path, text.as_bytes(), dir, ".kea-", Some(0o644))?;
        files.push(path);
    }
    if json {
        output::json(&json!({ "format": "kea", "ha": true, "files": files }));
    } else {
        let lines: String = files.iter().map(|f| format!("{}\n", f.display())).collect();
        output::text(&lines);
    }
    Ok(EXIT_OK)
}

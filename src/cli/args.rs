//! The command line: flags parsed into plain data by clap, then dispatched to the library.
//! Help text, the man page and shell completions all come from these definitions.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::mac::Mac;
use crate::serve::Listen;
use crate::serve::dhcp::export::ExportFormat;
use crate::serve::logging::LogFormat;
use crate::site::DhcpMode;

/// Build per-device Alpine apkovl archives for PXE-booted diskless fleets.
#[derive(Debug, Parser)]
#[command(name = "ovl", version, about, long_about = LONG_ABOUT, after_help = AFTER_HELP)]
pub struct Cli {
    /// The site folder (default: $OVL_SITE, else the nearest parent folder holding ovl.toml).
    #[arg(long, global = true, env = "OVL_SITE", value_name = "DIR")]
    pub site: Option<PathBuf>,
    /// Print results as JSON on stdout (diagnostics stay on stderr).
    #[arg(long, global = true)]
    pub json: bool,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

const LONG_ABOUT: &str = "Build per-device Alpine apkovl archives for PXE-booted diskless fleets.\n\n\
Device profiles (profiles/NAME.toml) are merged with overlay trees (overlays/NAME/) and the\n\
inventory (devices.toml) into configs/MAC.tar.gz, the archive Alpine's initramfs fetches with\n\
apkovl=http://SERVER/configs/${net0/mac}.tar.gz.";

const AFTER_HELP: &str =
    "Exit codes: 0 success, 1 invalid input, 2 usage, 3 environment (I/O, permissions, ports).";

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a new site with example profiles, overlays and inventory.
    Init {
        /// The folder to create (must not hold an ovl.toml yet).
        dir: PathBuf,
    },
    /// Validate everything: settings, profiles, inventory, and every template for every device.
    Check,
    /// Build and publish archives (configs/MAC.tar.gz) and the iPXE boot script.
    Build(BuildArgs),
    /// List the inventory's devices with their archive's state (built, stale, missing).
    List,
    /// Show a device's resolved settings and file tree, with the layer of each file.
    Show(DeviceArgs),
    /// Show what a rebuild would change in a device's archive.
    Diff(DeviceArgs),
    /// Build everything, then rebuild exactly the archives whose inputs change (inotify on
    /// local disks; polling on NFS, CIFS/SMB and FUSE, or with --poll).
    Watch(WatchArgs),
    /// Serve the boot chain: DHCP, TFTP and HTTP from the site (settings from [serve] of
    /// ovl.toml).
    Serve(ServeArgs),
    /// Print the DHCP configuration for a site's own DHCP server (dnsmasq, ISC dhcpd or Kea):
    /// pool, PXE boot files, the iPXE script URL and the inventory's reservations.
    Export(ExportArgs),
    /// Print shell completions.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff).
    Man,
}

/// `ovl build` selection.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("what").required(true).multiple(true).args(["all", "mac", "profile"])))]
pub struct BuildArgs {
    /// Every device of the inventory.
    #[arg(long, conflicts_with_all = ["mac", "profile"])]
    pub all: bool,
    /// This device (repeatable). With --profile, any MAC, even one not in the inventory.
    #[arg(long, value_name = "MAC")]
    pub mac: Vec<Mac>,
    /// Alone: the devices of this profile and of profiles extending it. With --mac: build the
    /// MAC with this profile.
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,
    /// Parallel jobs (default: one per core).
    #[arg(long, short = 'j', value_name = "N")]
    pub jobs: Option<usize>,
}

/// A device, for `show` and `diff`.
#[derive(Debug, Args)]
pub struct DeviceArgs {
    /// The device's MAC (any common spelling).
    #[arg(long, value_name = "MAC")]
    pub mac: Mac,
    /// Use this profile (required when the MAC is not in the inventory).
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,
}

/// `ovl serve`: flags override `[serve]` of `ovl.toml`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// HTTP listen address (IP:PORT, port 0 picks a free one), or `off`.
    #[arg(long, value_name = "ADDR|off")]
    pub http: Option<Listen>,
    /// TFTP listen address (IP:PORT, port 0 picks a free one), or `off`.
    #[arg(long, value_name = "ADDR|off")]
    pub tftp: Option<Listen>,
    /// DHCP: `off`, `proxy` (PXE boot information beside the site's DHCP server) or `full`
    /// (address pool from [serve.dhcp] of ovl.toml; needs --interface).
    #[arg(long, value_enum, value_name = "MODE")]
    pub dhcp: Option<DhcpMode>,
    /// Network interface for DHCP (its IPv4 address is the server's unless [boot] server is
    /// one).
    #[arg(long, value_name = "IF")]
    pub interface: Option<String>,
    /// Log lines on stderr as text or as JSON objects.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, value_name = "FORMAT")]
    pub log_format: LogFormat,
    /// Also run watch mode: keep the archives current while serving (see `ovl watch`).
    #[arg(long)]
    pub watch: bool,
    /// With --watch: poll for changes even where inotify works.
    #[arg(long, requires = "watch")]
    pub poll: bool,
    /// With --watch: seconds between two polls.
    #[arg(long, value_name = "SECONDS", default_value = "1", value_parser = parse_seconds)]
    pub poll_interval: std::time::Duration,
}

/// `ovl export` options.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The DHCP server to write for: dnsmasq, isc-dhcpd or kea.
    #[arg(value_name = "FORMAT", value_parser = parse_export_format)]
    pub format: ExportFormat,
    /// Interface whose IPv4 address is the boot server's when [boot] server is not one
    /// (default: [serve] interface).
    #[arg(long, value_name = "IF")]
    pub interface: Option<String>,
}

fn parse_export_format(s: &str) -> Result<ExportFormat, String> {
    s.parse()
}

/// `ovl watch` options.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Poll for changes even where inotify works (it is automatic on NFS, CIFS/SMB and FUSE).
    #[arg(long)]
    pub poll: bool,
    /// Seconds between two polls (e.g. 0.5).
    #[arg(long, value_name = "SECONDS", default_value = "1", value_parser = parse_seconds)]
    pub poll_interval: std::time::Duration,
    /// Milliseconds of quiet that end a burst of changes before rebuilding.
    #[arg(long, value_name = "MS", default_value_t = 100)]
    pub debounce: u64,
    /// Remove the archives of devices deleted from devices.toml.
    #[arg(long)]
    pub prune: bool,
}

fn parse_seconds(s: &str) -> Result<std::time::Duration, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !(0.05..=3600.0).contains(&v) {
        return Err(format!("{s}: expected 0.05 to 3600 seconds"));
    }
    Ok(std::time::Duration::from_secs_f64(v))
}

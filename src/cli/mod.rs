//! The command line: flags parsed into plain data by clap, then dispatched to the library.
//! Help text, the man page and shell completions all come from these definitions. Each
//! command has its own module holding its arguments and its `run`; results go to stdout
//! (text or JSON, written by `output`), diagnostics to stderr.
//!
//! Exit codes (SPEC §7): 0 success, 1 invalid input, 2 usage, 3 environment; 4 for
//! `diff --exit-code` when something would change.
//!
//! JSON output (`--json`) is a contract: every object carries `"schema"`, states come from one
//! vocabulary ([`crate::build::state`]) and errors are objects ([`crate::error::JsonError`]);
//! `docs/json.md` documents each command's shape.

mod adopt;
mod build;
mod check;
mod completions;
mod device;
mod diff;
mod discard;
mod drift;
mod export;
mod fetch;
mod init;
mod list;
mod man;
mod output;
mod prune;
mod serve;
mod show;
mod watch;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::build::plan::DevicePlan;
use crate::build::project::{Project, Selection};
use crate::error::{Error, Result};
use crate::mac::Mac;
use crate::site::Site;

/// Build per-device Alpine apkovl archives for PXE-booted diskless fleets.
#[derive(Debug, Parser)]
#[command(name = "ovl", version, about, long_about = LONG_ABOUT, after_help = AFTER_HELP)]
pub struct Cli {
    /// The site folder (default: $OVL_SITE, else the nearest parent folder holding ovl.toml).
    #[arg(long, global = true, env = "OVL_SITE", value_name = "DIR")]
    site: Option<PathBuf>,
    /// Print results as JSON on stdout (diagnostics stay on stderr).
    #[arg(long, global = true)]
    json: bool,
    /// The command.
    #[command(subcommand)]
    command: Command,
}

const LONG_ABOUT: &str = "Build per-device Alpine apkovl archives for PXE-booted diskless fleets.\n\n\
Device profiles (profiles/NAME.toml) are merged with overlay trees (overlays/NAME/) and the\n\
inventory (devices.toml) into configs/MAC.tar.gz, the archive Alpine's initramfs fetches with\n\
apkovl=http://SERVER/configs/${net0/mac}.tar.gz.";

const AFTER_HELP: &str = "Exit codes: 0 success, 1 invalid input, 2 usage, 3 environment (I/O, permissions, ports),\n\
4 something would change (diff --exit-code, build --dry-run --exit-code).";

/// The subcommands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Write a new site with example profiles, overlays and inventory.
    Init(init::InitArgs),
    /// Validate everything: settings, profiles, inventory, and every template for every device.
    Check,
    /// Build and publish archives (configs/MAC.tar.gz) and the iPXE boot script.
    Build(build::BuildArgs),
    /// List the inventory's devices with their archive's state (built, stale, missing,
    /// failed); with --all also archives of MACs outside the inventory (orphan).
    List(list::ListArgs),
    /// Show a device's resolved settings (vars, packages, services, network) and file tree,
    /// with the layer of each file.
    Show(DeviceArgs),
    /// Show what a rebuild would change in the archives of one or many devices, with a
    /// summary; nothing is written.
    Diff(diff::DiffArgs),
    /// Add, change or remove a device of devices.toml (comments and formatting kept), then
    /// rebuild or remove its archive.
    #[command(subcommand)]
    Device(device::DeviceCommand),
    /// Remove the archives of MACs the inventory does not hold (ad-hoc builds included).
    Prune(prune::PruneArgs),
    /// Show what devices' lbu captures change against the fleet: files added, changed and
    /// deleted (with text diffs, mode and owner changes), conflicts, captures without a known
    /// base.
    Drift(drift::DriftArgs),
    /// Copy a device's version of files (from its lbu capture) into an overlay folder, so
    /// that every device using that overlay gets them; lists those devices.
    Adopt(adopt::AdoptArgs),
    /// Make the fleet's version win over a device's capture for these paths, recorded in its
    /// devices.toml entry (discard = [...]) so that it survives its next lbu commit.
    Discard(discard::DiscardArgs),
    /// Build everything, then rebuild exactly the archives whose inputs change (inotify on
    /// local disks; polling on NFS, CIFS/SMB and FUSE, or with --poll).
    Watch(watch::WatchArgs),
    /// Serve the boot chain: DHCP, TFTP and HTTP from the site (settings from [serve] of
    /// ovl.toml).
    ///
    /// HTTP also serves the status page at / (every device, its archive state and boot
    /// progress), /status (JSON) and /metrics (Prometheus). SIGHUP re-reads ovl.toml,
    /// devices.toml and profiles/; SIGINT and SIGTERM stop. Needs no root: only the
    /// capability to bind ports below 1024 (dist/ has a systemd unit and an OpenRC service).
    Serve(serve::ServeArgs),
    /// Print the configuration of the site's other servers: DHCP (dnsmasq, ISC dhcpd or Kea:
    /// pool, PXE boot files, the iPXE script URL, reservations; or both peers of a Kea
    /// high-availability pair with --ha) or NFS (/etc/exports lines for the devices' capture
    /// folders).
    Export(export::ExportArgs),
    /// Download the boot files into the site: Alpine's kernel, initramfs and modloop of the
    /// flavor (from the release's netboot tarball, checked against the mirror's sha256) and
    /// the iPXE binaries (from the system's iPXE package, else downloaded).
    Fetch(fetch::FetchArgs),
    /// Print shell completions.
    Completions(completions::CompletionsArgs),
    /// Print a man page (roff): ovl(1), one per command (ovl-build(1), …), ovl.toml(5) and
    /// ovl-profile(5) with every key; or write them all into a folder (--dir).
    Man(man::ManArgs),
}

/// A device, for `show`.
#[derive(Debug, Args)]
struct DeviceArgs {
    /// The device's MAC (any common spelling).
    #[arg(long, value_name = "MAC")]
    mac: Mac,
    /// Use this profile (required when the MAC is not in the inventory).
    #[arg(long, value_name = "NAME")]
    profile: Option<String>,
}

impl DeviceArgs {
    /// The device's plan: from the inventory, or with `--profile`.
    fn plan(&self, p: &Project) -> Result<DevicePlan> {
        let spec = p.spec(self.mac, self.profile.as_deref())?;
        let cache = p.read_layers(std::slice::from_ref(&spec));
        p.plan(&spec, &cache)
    }
}

/// Devices chosen on the command line, for `build` and `diff`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("what").required(true).multiple(true).args(["all", "mac", "profile"])))]
struct SelectArgs {
    /// Every device of the inventory.
    #[arg(long, conflicts_with_all = ["mac", "profile"])]
    all: bool,
    /// This device (repeatable). With --profile, any MAC, even one not in the inventory.
    #[arg(long, value_name = "MAC")]
    mac: Vec<Mac>,
    /// Alone: the devices of this profile and of profiles extending it. With --mac: the MACs
    /// with this profile.
    #[arg(long, value_name = "NAME")]
    profile: Option<String>,
}

impl SelectArgs {
    /// The selection as the library takes it.
    fn selection(&self) -> Selection {
        Selection {
            all: self.all,
            macs: self.mac.clone(),
            profile: self.profile.clone(),
        }
    }
}

/// Run `cli`; returns the exit code. A failed command prints `error: …` on stderr (and, with
/// `--json`, `{"schema", "error": {…}}` on stdout) and exits with its error's code.
pub fn run(cli: Cli) -> i32 {
    let json = cli.json;
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            if json {
                output::json(&output::error_json(&e));
            }
            output::error(&e);
            e.exit_code()
        }
    }
}

/// The site's project: `--site`, `$OVL_SITE` or the nearest parent holding `ovl.toml`.
fn project(cli: &Cli) -> Result<Project> {
    Project::load(Site::discover(cli.site.as_deref())?)
}

/// Run the command; returns the exit code of a run that could complete.
fn dispatch(cli: Cli) -> Result<i32> {
    let json = cli.json;
    if json && let Some(name) = json_refused(&cli.command) {
        return Err(Error::Usage(format!(
            "--json: `ovl {name}` prints no results to put in JSON{}",
            match name {
                "serve" => " (its log lines are JSON with --log-format json)",
                "man" => " (with --dir, the pages written are)",
                _ => "",
            }
        )));
    }
    match &cli.command {
        Command::Init(a) => init::run(a, json),
        Command::Check => check::run(&project(&cli)?, json),
        Command::Build(a) => build::run(&project(&cli)?, a, json),
        Command::List(a) => list::run(&project(&cli)?, a, json),
        Command::Show(a) => show::run(&project(&cli)?, a, json),
        Command::Diff(a) => diff::run(&project(&cli)?, a, json),
        Command::Drift(a) => drift::run(&project(&cli)?, a, json),
        Command::Adopt(a) => adopt::run(&project(&cli)?, a, json),
        Command::Discard(a) => discard::run(&project(&cli)?, a, json),
        Command::Device(a) => device::run(&Site::discover(cli.site.as_deref())?, a, json),
        Command::Prune(a) => prune::run(&project(&cli)?, a, json),
        Command::Watch(a) => watch::run(cli.site.as_deref(), a, json),
        Command::Serve(a) => serve::run(a, || project(&cli)),
        Command::Export(a) => export::run(&project(&cli)?, a, json),
        Command::Fetch(a) => fetch::run(&Site::discover(cli.site.as_deref())?, a, json),
        Command::Completions(a) => completions::completions(a),
        Command::Man(a) => man::run(a, json),
    }
}

/// The name of a command whose output means nothing as JSON, so that `--json` is refused.
fn json_refused(c: &Command) -> Option<&'static str> {
    match c {
        Command::Serve(_) => Some("serve"),
        Command::Man(a) if !a.writes_files() => Some("man"),
        Command::Completions(_) => Some("completions"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn show_and_diff_take_a_mac_in_any_spelling() {
        let cli = Cli::try_parse_from(["ovl", "show", "--mac", "52-54-00-AB-CD-01"]).unwrap();
        let Command::Show(a) = cli.command else {
            panic!("not show: {cli:?}")
        };
        assert_eq!(a.mac.to_string(), "52:54:00:ab:cd:01");
        let cli = Cli::try_parse_from([
            "ovl",
            "diff",
            "--mac",
            "525400abcd01",
            "--mac",
            "52:54:00:ab:cd:02",
        ])
        .unwrap();
        let Command::Diff(a) = cli.command else {
            panic!("not diff: {cli:?}")
        };
        assert_eq!(a.select.selection().macs.len(), 2);
    }

    #[test]
    fn json_is_refused_where_it_means_nothing() {
        for args in [
            &["ovl", "--json", "man"][..],
            &["ovl", "completions", "bash", "--json"],
            &["ovl", "serve", "--json"],
        ] {
            let cli = Cli::try_parse_from(args).unwrap();
            let e = dispatch(cli).unwrap_err();
            assert_eq!(e.exit_code(), crate::error::EXIT_USAGE, "{args:?}: {e}");
        }
    }
}

//! `ovl watch`: build everything, then rebuild what changes until SIGINT or SIGTERM, one
//! report per line (text, or JSON with `--json`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;

use crate::cli::output;
use crate::error::{EXIT_OK, Error, Result};
use crate::site::Site;
use crate::watch::{Report, WatchOptions};

/// `ovl watch` options.
#[derive(Debug, Args)]
pub(crate) struct WatchArgs {
    /// Poll for changes even where inotify works (it is automatic on NFS, CIFS/SMB and FUSE).
    #[arg(long)]
    poll: bool,
    /// Seconds between two polls (e.g. 0.5).
    #[arg(long, value_name = "SECONDS", default_value = "1", value_parser = parse_seconds)]
    poll_interval: Duration,
    /// Milliseconds of quiet that end a burst of changes before rebuilding.
    #[arg(long, value_name = "MS", default_value_t = 100)]
    debounce: u64,
    /// Remove the archives of devices deleted from devices.toml.
    #[arg(long)]
    prune: bool,
}

/// `--poll-interval`: seconds, 0.05 to 3600.
pub(crate) fn parse_seconds(s: &str) -> std::result::Result<Duration, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !(0.05..=3600.0).contains(&v) {
        return Err(format!("{s}: expected 0.05 to 3600 seconds"));
    }
    Ok(Duration::from_secs_f64(v))
}

/// Watch the site found from `site` (`--site`) until a signal.
pub(crate) fn run(site: Option<&Path>, a: &WatchArgs, json: bool) -> Result<i32> {
    let root = site_root(site)?;
    let stop = crate::watch::stop_on_signals()?;
    let opts = WatchOptions {
        force_poll: a.poll,
        poll_interval: a.poll_interval,
        debounce: Duration::from_millis(a.debounce),
        prune: a.prune,
    };
    crate::watch::run(&root, &opts, stop, &mut |r| report(&r, json))?;
    Ok(EXIT_OK)
}

/// The site's folder. It must exist; its contents may be broken and get fixed while watching.
fn site_root(site: Option<&Path>) -> Result<PathBuf> {
    match Site::discover(site) {
        Ok(site) => Ok(site.root),
        Err(Error::Input { loc, .. }) if loc.path.ends_with(crate::site::SITE_FILE) => {
            Ok(loc.path.parent().map(Path::to_path_buf).unwrap_or_default())
        }
        Err(e) => Err(e),
    }
}

/// One report: a JSON line, or a text line (errors on stderr, with each device's error).
fn report(r: &Report, json: bool) {
    if json {
        output::json_line(r);
    } else if let Report::Error { .. } = r {
        eprintln!("{r}");
    } else {
        output::text(&format!("{r}\n"));
        if let Report::Rebuild { devices, .. } = r {
            output::errors(&output::group_errors(
                devices
                    .iter()
                    .filter_map(|d| Some((Some(d.mac), d.failure.as_ref()?))),
            ));
        }
    }
}

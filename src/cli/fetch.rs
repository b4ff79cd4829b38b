//! `ovl fetch`: download the boot files into the site, with a progress bar on a terminal and
//! one line per file.

use std::cell::RefCell;
use std::io::IsTerminal;

use clap::Args;
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};

use crate::build::publish::Published;
use crate::cli::output;
use crate::error::{EXIT_OK, Result};
use crate::fetch::{self, FetchOptions, FetchReport, NoProgress, Progress};
use crate::site::Site;

/// `ovl fetch` options.
#[derive(Debug, Args)]
pub(crate) struct FetchArgs {
    /// Alpine mirror base URL, e.g. http://dl-cdn.alpinelinux.org/alpine (default:
    /// [alpine] mirror of ovl.toml).
    #[arg(long, value_name = "URL", value_parser = http_url)]
    mirror: Option<String>,
    /// Architecture of the devices: the mirror's releases/ARCH/ folder (default: [alpine]
    /// arch, else x86_64).
    #[arg(long, value_name = "ARCH", value_parser = arch)]
    arch: Option<String>,
    /// Download and place every file again, even those whose checksums match.
    #[arg(long)]
    force: bool,
}

/// An http:// or https:// URL.
fn http_url(s: &str) -> std::result::Result<String, String> {
    if crate::site::config::is_http_url(s) {
        Ok(s.to_string())
    } else {
        Err("expected an http:// or https:// URL".into())
    }
}

/// An architecture name such as x86_64 or aarch64.
fn arch(s: &str) -> std::result::Result<String, String> {
    let ok = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && !s.starts_with('.');
    ok.then(|| s.to_string())
        .ok_or_else(|| "expected an architecture such as x86_64 or aarch64".into())
}

/// Fetch the boot files; prints what was placed.
pub(crate) fn run(site: &Site, a: &FetchArgs, json: bool) -> Result<i32> {
    let opts = FetchOptions::new(site, a.mirror.clone(), a.arch.clone(), a.force)?;
    let report = if !json && std::io::stderr().is_terminal() {
        fetch::fetch(site, &opts, &Bar::default())?
    } else {
        fetch::fetch(site, &opts, &NoProgress)?
    };
    if json {
        output::json(&serde_json::to_value(&report).unwrap_or_default());
    } else {
        output::text(&text(&report));
    }
    Ok(EXIT_OK)
}

/// One line per file and a summary.
fn text(r: &FetchReport) -> String {
    let mut s = String::new();
    let width = r.files.iter().map(|f| f.name.len()).max().unwrap_or(0);
    for f in &r.files {
        s.push_str(&format!(
            "{:9} {:width$}  {:>10}  from {}\n",
            state_name(f.state),
            f.name,
            HumanBytes(f.size).to_string(),
            f.source
        ));
    }
    let count = |st| r.files.iter().filter(|f| f.state == st).count();
    s.push_str(&format!(
        "Alpine {} ({}, {}): {} files, {} created, {} updated, {} unchanged; {} downloaded\n",
        r.release.version,
        r.release.arch,
        r.release.flavor,
        r.files.len(),
        count(Published::Created),
        count(Published::Updated),
        count(Published::Unchanged),
        HumanBytes(r.downloaded_bytes)
    ));
    s
}

/// `created`, `updated`, `unchanged`.
fn state_name(p: Published) -> &'static str {
    match p {
        Published::Created => "created",
        Published::Updated => "updated",
        Published::Unchanged => "unchanged",
    }
}

/// A progress bar on stderr per download.
#[derive(Default)]
struct Bar(RefCell<Option<ProgressBar>>);

impl Progress for Bar {
    fn start(&self, url: &str, done: u64, total: Option<u64>) {
        let name = url.rsplit('/').next().unwrap_or(url).to_string();
        let bar = match total {
            Some(t) => ProgressBar::new(t).with_style(
                ProgressStyle::with_template(
                    "{msg} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            ),
            None => ProgressBar::new_spinner().with_style(
                ProgressStyle::with_template("{msg} {spinner} {bytes} {bytes_per_sec}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            ),
        };
        let bar = bar.with_message(name).with_position(done);
        bar.tick();
        *self.0.borrow_mut() = Some(bar);
    }

    fn advance(&self, n: u64) {
        if let Some(b) = &*self.0.borrow() {
            b.inc(n);
        }
    }

    fn finish(&self) {
        if let Some(b) = self.0.borrow_mut().take() {
            b.finish_and_clear();
        }
    }
}

//! `ovl man [PAGE]` and `ovl man --dir DIR`: the man pages, one per command (rendered by
//! clap_mangen from the same definitions as `--help`), ovl(1) naming them all, and the file
//! formats ovl.toml(5) and ovl-profile(5) (from the key tables the README shows).

use std::path::PathBuf;

use clap::{Args, CommandFactory};
use serde_json::json;

use crate::cli::{Cli, output};
use crate::doc::man::{self, Page};
use crate::error::{EXIT_OK, Error, Result};

/// `ovl man` arguments.
#[derive(Debug, Args)]
pub(crate) struct ManArgs {
    /// The page: `ovl` (the default), a command (`build` or `ovl-build`, …), `ovl.toml` or
    /// `ovl-profile`.
    #[arg(value_name = "PAGE")]
    page: Option<String>,
    /// Write every page into DIR as NAME.SECTION (ovl.1, ovl-build.1, …, ovl.toml.5,
    /// ovl-profile.5), for packaging, instead of printing one.
    #[arg(long, value_name = "DIR", conflicts_with = "page")]
    dir: Option<PathBuf>,
}

/// The command pages' references, `ovl(1)` first.
fn command_refs(cmd: &clap::Command) -> Vec<String> {
    let mut refs = vec!["ovl(1)".to_string()];
    refs.extend(commands(cmd).map(|c| format!("ovl-{}(1)", c.get_name())));
    refs
}

/// The subcommands that get a page (not clap's `help`).
fn commands(cmd: &clap::Command) -> impl Iterator<Item = &clap::Command> {
    cmd.get_subcommands().filter(|c| c.get_name() != "help")
}

/// `command` rendered by clap_mangen as page `name`, with `see_also` appended.
fn command_page(command: clap::Command, name: &str, see_also: &[String]) -> Result<Page> {
    let mut buf = Vec::new();
    clap_mangen::Man::new(command)
        .title(name.to_uppercase())
        .source(format!("ovl {}", env!("CARGO_PKG_VERSION")))
        .manual("ovl manual")
        .render(&mut buf)
        .map_err(|e| Error::io("man page", e))?;
    let mut roff = String::from_utf8_lossy(&buf).into_owned();
    roff.push_str(&man::see_also(see_also));
    Ok(Page {
        name: name.to_string(),
        section: 1,
        roff: man::ascii(&roff),
    })
}

/// Every page: ovl(1), one per command, ovl.toml(5), ovl-profile(5).
pub(crate) fn pages() -> Result<Vec<Page>> {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let commands_refs = command_refs(&cmd);
    let files = ["ovl.toml(5)".to_string(), "ovl-profile(5)".to_string()];
    let mut all = commands_refs.clone();
    all.extend(files.iter().cloned());
    let others = |me: &str| -> Vec<String> {
        all.iter()
            .filter(|r| r.split('(').next() != Some(me))
            .cloned()
            .collect()
    };
    let mut pages = vec![command_page(cmd.clone(), "ovl", &others("ovl"))?];
    for c in commands(&cmd) {
        let name = format!("ovl-{}", c.get_name());
        let mut see = vec!["ovl(1)".to_string()];
        see.extend(files.iter().cloned());
        pages.push(command_page(c.clone(), &name, &see)?);
    }
    pages.push(man::ovl_toml(&others("ovl.toml")));
    pages.push(man::ovl_profile(&others("ovl-profile")));
    Ok(pages)
}

/// The page a user names: `ovl`, `build` or `ovl-build`, `ovl.toml`, `ovl-profile`.
fn find(pages: Vec<Page>, wanted: &str) -> Result<Page> {
    let names: Vec<String> = pages.iter().map(|p| p.name.clone()).collect();
    let full = match wanted {
        "ovl" | "ovl.toml" | "ovl-profile" => wanted.to_string(),
        w if w.starts_with("ovl-") => w.to_string(),
        w => format!("ovl-{w}"),
    };
    pages.into_iter().find(|p| p.name == full).ok_or_else(|| {
        Error::Usage(format!(
            "no man page {wanted:?}; the pages are: {}",
            names.join(", ")
        ))
    })
}

/// Print one page, or write them all with `--dir`.
pub(crate) fn run(a: &ManArgs, json: bool) -> Result<i32> {
    let pages = pages()?;
    if let Some(dir) = &a.dir {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let mut written = Vec::new();
        for p in &pages {
            let path = dir.join(p.file_name());
            std::fs::write(&path, &p.roff).map_err(|e| Error::io(&path, e))?;
            written.push(path.display().to_string());
        }
        if json {
            output::json(&json!({ "written": written }));
        } else {
            output::text(&format!("{}\n", written.join("\n")));
        }
        return Ok(EXIT_OK);
    }
    // One page is roff on stdout; `--json` is refused for it (cli::json_refused).
    let page = find(pages, a.page.as_deref().unwrap_or("ovl"))?;
    output::text(&page.roff);
    Ok(EXIT_OK)
}

impl ManArgs {
    /// Does it write the pages into a folder (`--dir`), so that there is a result to report?
    pub(crate) fn writes_files(&self) -> bool {
        self.dir.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_page_per_command_and_the_file_formats() {
        let pages = pages().unwrap();
        let names: Vec<&str> = pages.iter().map(|p| p.name.as_str()).collect();
        for n in [
            "ovl",
            "ovl-build",
            "ovl-serve",
            "ovl-man",
            "ovl.toml",
            "ovl-profile",
        ] {
            assert!(names.contains(&n), "{names:?}");
        }
        assert!(!names.contains(&"ovl-help"));
        let top = &pages[0];
        // SEE ALSO names exactly the pages that exist.
        let see = top.roff.split(".SH \"SEE ALSO\"").nth(1).unwrap();
        for p in &pages[1..] {
            let r = format!("\\fB{}\\fR({})", p.name.replace('-', "\\-"), p.section);
            assert!(see.contains(&r), "{r} in {see}");
        }
        let build = find(pages.clone(), "build").unwrap();
        assert_eq!(build.file_name(), "ovl-build.1");
        assert!(
            build.roff.contains("\n.TH OVL-BUILD 1  \"ovl "),
            "{}",
            build.roff
        );
        assert!(build.roff.contains("\\-\\-profile"), "{}", build.roff);
        assert_eq!(find(pages.clone(), "ovl-build").unwrap(), build);
        let e = find(pages, "nope").unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("ovl.toml"), "{e}");
    }
}

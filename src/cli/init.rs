//! `ovl init DIR`: write a new example site.

use std::path::PathBuf;

use clap::Args;
use serde_json::json;

use crate::cli::output;
use crate::error::{EXIT_OK, Result};

/// `ovl init` arguments.
#[derive(Debug, Args)]
pub(crate) struct InitArgs {
    /// The folder to create (must be missing or empty, unless --force).
    dir: PathBuf,
    /// Write the example's files into a folder that is not empty, replacing files of the same
    /// names (ovl.toml, devices.toml, profiles/…, overlays/…); other files are left alone.
    #[arg(long)]
    force: bool,
}

/// Write the example site into `a.dir` and say what to do next.
pub(crate) fn run(a: &InitArgs, json: bool) -> Result<i32> {
    let dir = &a.dir;
    let written = crate::site::example::write_example_into(dir, a.force)?;
    if json {
        output::json(&json!({ "site": dir, "files": written }));
    } else {
        output::text(&format!(
            "created site {} ({} files)\nnext: put your public key in profiles/S.toml (authorized_keys), then: cd {} && ovl check && ovl build --all\n",
            dir.display(),
            written.len(),
            dir.display()
        ));
    }
    Ok(EXIT_OK)
}

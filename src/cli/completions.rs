//! `ovl completions SHELL` and `ovl man`: shell completions and the man page, generated from
//! the same definitions as `--help`.

use clap::{Args, CommandFactory};

use crate::cli::{Cli, output};
use crate::error::{EXIT_OK, Error, Result};

/// `ovl completions` arguments.
#[derive(Debug, Args)]
pub(crate) struct CompletionsArgs {
    /// The shell.
    shell: clap_complete::Shell,
}

/// Print the completions for `a.shell`.
pub(crate) fn completions(a: &CompletionsArgs) -> Result<i32> {
    let mut buf = Vec::new();
    clap_complete::generate(a.shell, &mut Cli::command(), "ovl", &mut buf);
    output::text(&String::from_utf8_lossy(&buf));
    Ok(EXIT_OK)
}

/// Print the man page (roff).
pub(crate) fn man() -> Result<i32> {
    let mut buf = Vec::new();
    clap_mangen::Man::new(Cli::command())
        .render(&mut buf)
        .map_err(|e| Error::io("stdout", e))?;
    output::text(&String::from_utf8_lossy(&buf));
    Ok(EXIT_OK)
}

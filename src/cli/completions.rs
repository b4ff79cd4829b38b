//! `ovl completions SHELL`: shell completions, generated from the same definitions as
//! `--help` (the man pages are `ovl man`'s).

use clap::{Args, CommandFactory};

use crate::cli::{Cli, output};
use crate::error::{EXIT_OK, Result};

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

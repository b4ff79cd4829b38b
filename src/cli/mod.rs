//! The command line: argument definitions and one runner per command.

mod args;
pub mod run;

pub use args::*;

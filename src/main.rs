//! The `ovl` binary: parse the command line, run it, exit with its code.

use clap::Parser;

fn main() {
    let cli = ovl::cli::Cli::parse();
    std::process::exit(ovl::cli::run(cli));
}

use clap::Parser;

fn main() {
    let cli = ovl::cli::Cli::parse();
    std::process::exit(ovl::cli::run::run(cli));
}

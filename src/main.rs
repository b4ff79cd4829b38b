use clap::Parser;

fn main() {
    let cli = ovl::cli::Cli::parse();
    std::process::exit(ovl::app::run(cli));
}

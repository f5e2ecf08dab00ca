//! The `credctl` binary: parse, run, map failures to exit statuses.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = credctl::cli::Cli::parse();
    match credctl::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("credctl: {f}");
            ExitCode::from(f.exit as u8)
        }
    }
}

//! The `credctl` binary: parse, run, map failures to exit statuses.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = credctl::cli::Cli::parse();
    match credctl::run(cli) {
        Ok(credctl::Outcome::Success) => ExitCode::SUCCESS,
        Ok(credctl::Outcome::Status(code)) => ExitCode::from(code),
        Err(f) => {
            // Messages quote names other processes chose (roles, executables): never let their
            // control characters reach the terminal.
            eprintln!(
                "credctl: {}",
                credctl::text::printable_lines(&f.to_string())
            );
            ExitCode::from(f.exit as u8)
        }
    }
}

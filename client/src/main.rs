//! The `credctl` binary: parse, run, map failures to exit statuses.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // A completion request from the shell (`CREDCTL_COMPLETE` set): answered, then exit.
    clap_complete::CompleteEnv::with_factory(<credctl::cli::Cli as clap::CommandFactory>::command)
        .var(credctl::completion::VAR)
        .complete();
    let cli = match credctl::cli::Cli::try_parse() {
        Ok(cli) => cli,
        // A value our own check refused: its reason, without clap's echo of the whole value
        // (a 5,000-character name would fill the terminal).
        Err(e) if e.kind() == clap::error::ErrorKind::ValueValidation => {
            let arg = e
                .get(clap::error::ContextKind::InvalidArg)
                .map(|a| a.to_string())
                .unwrap_or_else(|| "value".into());
            let why = std::error::Error::source(&e)
                .map(|s| s.to_string())
                .unwrap_or_else(|| "not a valid value".into());
            eprintln!("credctl: {arg}: {}", credctl::text::printable_lines(&why));
            return ExitCode::from(2);
        }
        Err(e) => e.exit(),
    };
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

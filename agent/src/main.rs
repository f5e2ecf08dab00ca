//! The `credagent` binary: harden the process, parse arguments, run the agent.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Before anything else, and before any thread exists: no core dumps, no ptrace, umask 077.
    if let Err(e) = credagent::harden::harden_process() {
        eprintln!("credagent: cannot harden the process ({e}); refusing to hold secrets");
        return ExitCode::FAILURE;
    }
    // Still single-threaded: nothing from the environment decides where a request goes.
    for name in credagent::harden::scrub_environment() {
        eprintln!(
            "credagent: ignoring {name} from the environment: endpoints come from config.toml \
             (confirmed by a touch) and TLS roots from the system store"
        );
    }
    let args = credagent::cli::Args::parse();
    match credagent::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("credagent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

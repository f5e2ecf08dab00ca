//! credctl: the command-line client of credagent. A thin, synchronous shell over the control
//! protocol; the prose of every error lives here, the codes come from the agent.

pub mod agent;
pub mod authenticator;
pub mod cli;
pub mod commands;
pub mod error;
pub mod shell;

use std::io::Write;

use clap::CommandFactory;

use crate::cli::{Cli, Command};
use crate::error::{Failure, Result};

/// Runs one parsed command, writing its output to stdout.
pub fn run(cli: Cli) -> Result<()> {
    let socket = agent::socket_path(cli.socket.as_deref());
    let out = match cli.command {
        Command::Start { fish, csh, config } => {
            commands::lifecycle::start(&socket, Command::shell(fish, csh), config.as_deref())?
        }
        Command::Stop => commands::lifecycle::stop(&socket)?,
        Command::Status { json } => commands::status::status(&socket, json)?,
        Command::Completions { shell } => {
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "credctl", &mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        }
        Command::Man => {
            let mut buf = Vec::new();
            clap_mangen::Man::new(Cli::command())
                .render(&mut buf)
                .map_err(|e| Failure::failed(format!("cannot render the man page: {e}")))?;
            String::from_utf8_lossy(&buf).into_owned()
        }
    };
    let mut stdout = std::io::stdout().lock();
    // A closed stdout (e.g. `credctl status | head -1`) is not an error worth reporting.
    let _ = stdout.write_all(out.as_bytes());
    let _ = stdout.flush();
    Ok(())
}

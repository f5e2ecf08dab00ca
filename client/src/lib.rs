//! credctl: the command-line client of credagent. A thin, synchronous shell over the control
//! protocol; the prose of every error lives here, the codes come from the agent.

pub mod agent;
pub mod authenticator;
pub mod bypass;
pub mod cli;
pub mod commands;
pub mod error;
pub mod prompt;
pub mod shell;
pub mod text;
pub mod touch;
pub mod trust;

use std::io::Write;

use clap::CommandFactory;

use crate::cli::{Cli, Command, KeyCommand, SourceCommand, TokenCommand};
use crate::commands::{audit, keys, lifecycle, roles, session, sources, status, tokens};
use crate::error::{Failure, Result};

/// What a command asks `main` to exit with.
pub enum Outcome {
    Success,
    /// `credctl exec`: the command's own status.
    Status(u8),
}

/// Runs one parsed command, writing its output to stdout.
pub fn run(cli: Cli) -> Result<Outcome> {
    let socket = agent::socket_path(cli.socket.as_deref());
    let out = match cli.command {
        Command::Start { shell, config } => {
            lifecycle::start(&socket, shell.kind(), config.as_deref())?
        }
        Command::Stop => lifecycle::stop(&socket)?,
        Command::Status { json } => status::status(&socket, json)?,
        Command::Key(KeyCommand::Add {
            name,
            touch,
            authorizer,
        }) => keys::add(&socket, name, &touch, authorizer.as_deref())?,
        Command::Key(KeyCommand::List { json }) => keys::list(&socket, json)?,
        Command::Key(KeyCommand::Remove { name, force, touch }) => {
            keys::remove(&socket, &name, force, &touch)?
        }
        Command::Source(SourceCommand::Add {
            name,
            stdin,
            import_profile,
            remove_from_file,
        }) => sources::add(
            &socket,
            &name,
            stdin,
            import_profile.as_deref(),
            remove_from_file,
        )?,
        Command::Source(SourceCommand::List { json }) => sources::list(&socket, json)?,
        Command::Source(SourceCommand::Remove { name }) => sources::remove(&socket, &name)?,
        Command::Roles { json } => roles::roles(&socket, json)?,
        Command::Use { role, touch } => {
            eprint!("{}", session::use_role(&socket, &role, &touch)?);
            String::new()
        }
        Command::Exec { role, touch, cmd } => {
            return Ok(Outcome::Status(session::exec(
                &socket, &role, &touch, &cmd,
            )?))
        }
        Command::Env {
            role,
            shell,
            touch,
            token_file,
        } => session::env(&socket, &role, shell.kind(), &touch, token_file.as_deref())?,
        Command::CredentialProcess { role, touch } => {
            session::credential_process(&socket, &role, &touch)?
        }
        Command::Imds { role, off } => session::imds(&socket, if off { None } else { role })?,
        Command::Lock => session::lock(&socket)?,
        Command::Token(TokenCommand::List { json }) => tokens::list(&socket, json)?,
        Command::Token(TokenCommand::Revoke { id }) => tokens::revoke(&socket, &id)?,
        Command::Watch { touch, once } => session::watch(&socket, &touch, once)?,
        Command::Audit { follow, json } => audit::audit(follow, json)?,
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
    Ok(Outcome::Success)
}

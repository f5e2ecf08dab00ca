//! The whole `credctl` command line, as clap derive types. Help text is the doc comments.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

pub const EXIT_CODES: &str = "\
Exit status:
  0  success
  1  the command failed (the message says why and what to do)
  2  usage error
  3  no agent is running (run `eval \"$(credctl start)\"`)
  4  the agent speaks another protocol version (restart it)
  5  the agent refused the request";

/// credctl: control the credagent AWS credential agent.
///
/// Start the agent with `eval "$(credctl start)"`; it then serves AWS SDKs in this shell.
#[derive(Debug, Parser)]
#[command(name = "credctl", version, about, long_about, after_help = EXIT_CODES)]
pub struct Cli {
    /// Control socket of the agent [default: $CREDAGENT_SOCK, else
    /// $XDG_RUNTIME_DIR/credagent/agent.sock, else /tmp/credagent-$UID/agent.sock].
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

/// Shell syntax for `start`'s output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum ShellKind {
    #[default]
    Sh,
    Fish,
    Csh,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the agent if none is running and print the shell lines that point tools at it.
    ///
    /// Use as `eval "$(credctl start)"` (sh, bash, zsh), `credctl start --fish | source`, or
    /// `eval \`credctl start --csh\``. A running agent is reused.
    Start {
        /// Print fish syntax.
        #[arg(long, conflicts_with = "csh")]
        fish: bool,
        /// Print csh syntax.
        #[arg(long)]
        csh: bool,
        /// Configuration file for a newly started agent.
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
    },
    /// Stop the agent: every session ends and every cached credential is wiped.
    Stop,
    /// Show the agent, its listeners and its state.
    Status {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Print shell completions.
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) on stdout, e.g. `credctl man | man -l -`.
    Man,
}

impl Command {
    pub fn shell(fish: bool, csh: bool) -> ShellKind {
        match (fish, csh) {
            (true, _) => ShellKind::Fish,
            (_, true) => ShellKind::Csh,
            _ => ShellKind::Sh,
        }
    }
}

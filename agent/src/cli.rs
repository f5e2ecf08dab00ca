//! Command-line arguments of the `credagent` daemon.

use std::path::PathBuf;

/// credagent: a per-user AWS credential agent gated by a FIDO security-key touch.
///
/// Usually started by `credctl start` or by systemd; see `credctl --help` for daily use.
#[derive(Debug, clap::Parser)]
#[command(name = "credagent", version, about, long_about)]
pub struct Args {
    /// Stay in the foreground and log to stderr (systemd and tests use this).
    #[arg(long)]
    pub foreground: bool,
    /// Configuration file [default: $XDG_CONFIG_HOME/credagent/config.toml].
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Control socket [default: $CREDAGENT_SOCK, else $XDG_RUNTIME_DIR/credagent/agent.sock, else
    /// /tmp/credagent-$UID/agent.sock].
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
}

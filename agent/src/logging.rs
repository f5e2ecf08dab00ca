//! Log set-up: human-readable lines on stderr in the foreground, plain lines (no colour, no
//! timestamp: journald adds its own) under systemd. Secrets never reach a log line: their types
//! do not implement `Debug`/`Display`.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. `CREDAGENT_LOG` takes an `EnvFilter` directive.
pub fn init(under_journal: bool) {
    let filter =
        EnvFilter::try_from_env("CREDAGENT_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if under_journal {
        builder
            .with_ansi(false)
            .without_time()
            .with_target(false)
            .init();
    } else {
        builder.with_ansi(false).init();
    }
}

//! The sources' vocabulary shared by the keyring and the file store: which store holds them
//! ([`Backend`]) and what can go wrong ([`SourceError`]), each with the advice the user needs.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Which keyring holds the source credentials (`keyring = "..."` in config.toml).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    /// freedesktop Secret Service over D-Bus (gnome-keyring, KeePassXC…).
    SecretService,
    /// Linux kernel keyutils, in the session keyring.
    Keyutils,
    /// Files under the state directory, for machines without a keyring: sealed sources only.
    File,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::SecretService => "secret-service",
            Backend::Keyutils => "keyutils",
            Backend::File => "file",
        })
    }
}

/// Keyring errors, each with the advice the user needs.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("no {backend} keyring available ({detail}): {}", no_backend_advice(*.backend))]
    NoBackend { backend: Backend, detail: String },
    #[error("the {backend} keyring is locked ({detail}): unlock your keyring (gnome-keyring-daemon --unlock) or set keyring = \"keyutils\" in config.toml")]
    Locked { backend: Backend, detail: String },
    #[error("no source credentials named `{name}` in the {backend} keyring: add them with `credctl source add {name}`")]
    NotFound { backend: Backend, name: String },
    #[error("the {backend} keyring entry for source `{name}` is not in credagent's format: remove it and add it again with `credctl source add {name}`")]
    Corrupt { backend: Backend, name: String },
    #[error("source `{name}` is sealed to your security keys: it opens only with a touch; open a role that uses it (`credctl use ROLE`)")]
    Sealed { name: String },
    #[error("source `{name}` was not stored: no touch has unwrapped your vault since the agent started (vault {fingerprint}), so nothing is sealed to it yet (a vault.json replaced behind the agent's back must receive nothing); touch once with `credctl confirm`, then add the source again")]
    VaultUnproven { name: String, fingerprint: String },
    #[error("sealed source `{name}` does not open: {detail}")]
    Unseal { name: String, detail: String },
    #[error("invalid source name `{name}`: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("invalid credentials for source `{name}`: {reason}")]
    InvalidCredentials { name: String, reason: &'static str },
    #[error("{backend} keyring failure: {detail}")]
    Platform { backend: Backend, detail: String },
    #[error("cannot rewrite {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl SourceError {
    /// This error as a refusal.
    pub fn refusal(&self) -> crate::refusal::Refusal {
        use crate::refusal::Code;
        let code = match self {
            SourceError::NotFound { .. } => Code::NotFound,
            SourceError::Sealed { .. }
            | SourceError::Unseal { .. }
            | SourceError::VaultUnproven { .. } => Code::Sealed,
            SourceError::InvalidName { .. } | SourceError::InvalidCredentials { .. } => {
                Code::BadRequest
            }
            _ => Code::Keyring,
        };
        crate::refusal::Refusal::new(code, self.to_string())
    }
}

fn no_backend_advice(backend: Backend) -> &'static str {
    match backend {
        Backend::SecretService => "start a Secret Service (gnome-keyring-daemon --components=secrets) in this D-Bus session, or set keyring = \"keyutils\" in config.toml",
        Backend::Keyutils => "run the agent inside a session keyring (keyctl session -), set keyring = \"secret-service\", or, on a machine with no keyring, keyring = \"file\" in config.toml",
        Backend::File => "set keyring = \"file\" only where the agent knows its state directory",
    }
}

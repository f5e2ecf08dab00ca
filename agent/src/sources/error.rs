//! The sources' vocabulary shared by the keyring, the file store and IAM Identity Center: which
//! store holds them ([`Backend`]) and what can go wrong ([`SourceError`] for stored keys,
//! [`SsoError`] for Identity Center logins), each with the advice the user needs.

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
    /// Not in the keyring, but its keys are in the plain-text credentials file credagent is
    /// meant to replace (found by whoever looked the source up; this type does no I/O).
    #[error("source `{name}` has its keys only in {}, which credagent does not read: move them into the keyring with `credctl source add {name} --import-profile {name} --remove-from-file`", .path.display())]
    OnlyInCredentialsFile { name: String, path: PathBuf },
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
            SourceError::NotFound { .. } | SourceError::OnlyInCredentialsFile { .. } => {
                Code::NotFound
            }
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

/// What Identity Center said, sorted by what the agent does about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SsoError {
    /// The person has not finished the device login yet: poll again.
    #[error("the login is not approved yet")]
    Pending,
    /// Poll less often.
    #[error("Identity Center asked to poll more slowly")]
    SlowDown,
    /// The device code, the authorization code or the refresh token expired or was revoked,
    /// or the client registration is gone: a new login is needed.
    #[error("the IAM Identity Center login has expired or was revoked ({detail}): run `credctl login {login}`")]
    LoginNeeded { login: String, detail: String },
    /// The access token was refused (expired, logged out).
    #[error("IAM Identity Center refused the access token ({detail})")]
    Unauthorized { detail: String },
    /// The person refused, or the account or permission set is not assigned to them.
    #[error("IAM Identity Center refused: {detail}")]
    Denied { detail: String },
    /// Network trouble, throttling or a 5xx: try again.
    #[error("IAM Identity Center could not be reached: {detail}")]
    Transient { detail: String },
    #[error("IAM Identity Center error {code}: {message}")]
    Other { code: String, message: String },
}

impl SsoError {
    /// A short stable code for the audit and the protocol.
    pub fn code(&self) -> &'static str {
        match self {
            SsoError::Pending => "sso_pending",
            SsoError::SlowDown => "sso_slow_down",
            SsoError::LoginNeeded { .. } => "sso_login_needed",
            SsoError::Unauthorized { .. } => "sso_unauthorized",
            SsoError::Denied { .. } => "sso_denied",
            SsoError::Transient { .. } => "sso_unavailable",
            SsoError::Other { .. } => "sso_error",
        }
    }

    /// With the login named in the advice.
    pub fn for_login(self, login: &str) -> Self {
        match self {
            SsoError::LoginNeeded { detail, .. } => SsoError::LoginNeeded {
                login: login.to_owned(),
                detail,
            },
            other => other,
        }
    }
}

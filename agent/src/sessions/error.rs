//! Session errors: a stable wire code each, and a message that says what to do next.

use crate::profiles::RoleSpec;
use crate::sources::SourceError;
use crate::sts::{Denial, StsError};

/// What was wrong with a role's source, as the wire code names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceProblem {
    /// No credentials stored under the source's name.
    Missing,
    KeyringLocked,
    KeyringUnavailable,
    /// Sealed, and no touch opened it.
    Sealed,
    /// Sealed, and it did not open with the vault the touch unwrapped.
    UnsealFailed,
    Keyring,
}

impl SourceProblem {
    /// The stable wire code.
    pub fn code(self) -> &'static str {
        match self {
            SourceProblem::Missing => "source_missing",
            SourceProblem::KeyringLocked => "keyring_locked",
            SourceProblem::KeyringUnavailable => "keyring_unavailable",
            SourceProblem::Sealed => "source_sealed",
            SourceProblem::UnsealFailed => "source_unseal_failed",
            SourceProblem::Keyring => "keyring_error",
        }
    }
}

/// Why credentials could not be had. `Clone` so every coalesced waiter gets the same error.
#[derive(Clone, Debug, thiserror::Error)]
pub enum SessionError {
    #[error("no approved session for role {role}: run `credctl use {role}`")]
    NoSession { role: String },
    #[error("the approval is for role {approved}, not {requested}: approve {requested} itself")]
    ApprovalMismatch { approved: String, requested: String },
    #[error(
        "role {role} changed while you touched: the touch approved {approved}, but the profile \
         now resolves to {now}; nothing was opened: check ~/.aws/config and run `credctl use \
         {role}` again"
    )]
    ChangedDuringTouch {
        role: String,
        approved: String,
        now: String,
    },
    #[error("role {role}: {message}")]
    Profile { role: String, message: String },
    #[error("role {role} needs an MFA code for source `{source_name}` ({serial}): run `credctl use {role}` and enter the code")]
    MfaRequired {
        role: String,
        source_name: String,
        serial: String,
    },
    #[error("role {role}: {message}")]
    Source {
        role: String,
        source_name: String,
        problem: SourceProblem,
        message: String,
    },
    #[error("role {role}: {}", sts_message(.role, .source_name, .role_arn, .error))]
    Sts {
        role: String,
        source_name: String,
        /// The hop whose call failed (the role itself, or an intermediate role).
        role_arn: String,
        error: Box<StsError>,
    },
    #[error("role {role}: the agent was locked while credentials were being fetched: run `credctl use {role}` again")]
    Locked { role: String },
    #[error("role {role}: {error}")]
    Sso {
        role: String,
        error: crate::sources::SsoError,
    },
}

impl SessionError {
    /// Stable code sent over the wire; the CLI picks its prose from it.
    pub fn code(&self) -> &'static str {
        match self {
            SessionError::NoSession { .. } => "no_session",
            SessionError::ApprovalMismatch { .. } => "approval_mismatch",
            SessionError::ChangedDuringTouch { .. } => "changed_during_touch",
            SessionError::Profile { .. } => "profile",
            SessionError::MfaRequired { .. } => "mfa_required",
            SessionError::Source { problem, .. } => problem.code(),
            SessionError::Sts { error, .. } => match error.denial() {
                None => "sts_unavailable",
                Some(Denial::MfaInvalid) => "mfa_invalid",
                Some(Denial::InvalidKey) => "source_key_invalid",
                Some(Denial::ClockSkew) => "clock_skew",
                Some(_) => "sts_denied",
            },
            SessionError::Locked { .. } => "locked",
            SessionError::Sso { error, .. } => error.code(),
        }
    }

    /// This error as a refusal.
    pub fn refusal(&self) -> crate::refusal::Refusal {
        use crate::refusal::Code;
        let code = match self {
            SessionError::NoSession { .. } => Code::NotFound,
            SessionError::MfaRequired { .. } => Code::MfaRequired,
            SessionError::Profile { .. } => Code::Profile,
            SessionError::Source {
                problem: SourceProblem::Sealed | SourceProblem::UnsealFailed,
                ..
            } => Code::Sealed,
            SessionError::Source { .. } => Code::Keyring,
            SessionError::Sts { .. } if self.is_transient() => Code::StsUnavailable,
            SessionError::Sts { .. } => Code::StsDenied,
            SessionError::ApprovalMismatch { .. }
            | SessionError::ChangedDuringTouch { .. }
            | SessionError::Locked { .. } => Code::ApprovalFailed,
            SessionError::Sso { error, .. } => match error {
                crate::sources::SsoError::LoginNeeded { .. } => Code::LoginRequired,
                crate::sources::SsoError::Transient { .. } => Code::StsUnavailable,
                _ => Code::StsDenied,
            },
        };
        crate::refusal::Refusal::new(code, self.to_string())
    }

    /// Whether retrying later may succeed without the user doing anything.
    pub fn is_transient(&self) -> bool {
        matches!(self, SessionError::Sts { error, .. } if error.is_transient())
            || matches!(
                self,
                SessionError::Sso {
                    error: crate::sources::SsoError::Transient { .. },
                    ..
                }
            )
    }

    /// `err`, met while opening `spec`, with the role named. Pure: whoever looked the source
    /// up has already said where else its keys are (`SourceError::OnlyInCredentialsFile`).
    pub fn from_source_error(spec: &RoleSpec, err: &SourceError) -> Self {
        let problem = match err {
            SourceError::NotFound { .. } | SourceError::OnlyInCredentialsFile { .. } => {
                SourceProblem::Missing
            }
            SourceError::Locked { .. } => SourceProblem::KeyringLocked,
            SourceError::NoBackend { .. } => SourceProblem::KeyringUnavailable,
            SourceError::Sealed { .. } => SourceProblem::Sealed,
            SourceError::Unseal { .. } => SourceProblem::UnsealFailed,
            _ => SourceProblem::Keyring,
        };
        let mut message = err.to_string();
        if matches!(err, SourceError::NotFound { .. }) && !spec.source_in_config {
            let via = spec
                .chain
                .first()
                .map_or(spec.name.as_str(), |h| h.profile.as_str());
            message.push_str(&format!(
                " (`{}`, the source_profile of `{via}`, is not a profile in the AWS config \
                 either: check for a typo)",
                spec.source
            ));
        }
        SessionError::Source {
            role: spec.name.clone(),
            source_name: spec.source.clone(),
            problem,
            message,
        }
    }
}

fn sts_message(role: &str, source: &str, arn: &str, error: &StsError) -> String {
    let StsError::Permanent {
        op,
        denial,
        code,
        message,
    } = error
    else {
        return format!(
            "{error}; credagent retried it a few times: check the network or sts_endpoint. An \
             open session keeps retrying its refresh by itself; a role that did not open needs \
             `credctl use {role}` again (and a touch) once STS answers"
        );
    };
    let what = format!("STS {op} of {arn} with source `{source}` was refused ({code}: {message})");
    let advice = match denial {
        Denial::AccessDenied => format!(
            "check that the trust policy of {arn} allows the source's principal and that the \
             source may call sts:AssumeRole on it"
        ),
        Denial::InvalidKey => format!(
            "the access key of source `{source}` is unknown or its secret is wrong: replace it \
             with `credctl source add {source} --replace`"
        ),
        Denial::ClockSkew => "this machine's clock is more than 5 minutes off, and AWS refuses \
             requests signed at a wrong time (the key is fine): set the clock right \
             (`timedatectl set-ntp true`, or your NTP service) and try again"
            .to_owned(),
        Denial::ExpiredToken => format!("the calling session expired: run `credctl use {role}`"),
        Denial::MfaInvalid => format!(
            "the MFA code was rejected (wrong, expired or already used): run `credctl use \
             {role}` again with a fresh code"
        ),
        Denial::RegionDisabled => {
            "STS is disabled in that region: set another region in the profile".to_owned()
        }
        Denial::BadRequest | Denial::Other => {
            "check role_arn, external_id, duration_seconds and role_session_name in \
             ~/.aws/config"
                .to_owned()
        }
    };
    format!("{what}: {advice}")
}

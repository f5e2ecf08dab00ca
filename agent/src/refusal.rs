//! How the agent's core says no: a kind a client can act on, and the sentence for the person.
//! The core never speaks the control protocol; `control` turns a refusal into its reply once,
//! and the approval page into its JSON.

/// What kind of refusal, for the client's exit status and advice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// The request itself is malformed or names something invalid.
    BadRequest,
    /// An unexpected failure inside the agent.
    Internal,
    /// No FIDO key is registered.
    NoKeys,
    /// The touch failed (expired, replayed, wrong role, bad assertion, cloned key…).
    ApprovalFailed,
    /// A named key, source, role or ceremony does not exist.
    NotFound,
    /// What was to be created exists already.
    Exists,
    /// The role needs an MFA code.
    MfaRequired,
    /// STS (or Identity Center) refused.
    StsDenied,
    /// STS (or Identity Center) could not be reached or kept failing.
    StsUnavailable,
    /// The keyring is locked, missing, or failed.
    Keyring,
    /// `~/.aws/config` is missing, unreadable or inconsistent for this role.
    Profile,
    /// Not allowed (the last key without force, a change nobody confirmed, …).
    Refused,
    /// A token is unknown, revoked, or cannot do this.
    BadToken,
    /// The approval policy refuses this authenticator or key.
    Policy,
    /// A sealed source did not open.
    Sealed,
    /// The role's Identity Center login is missing or expired.
    LoginRequired,
    /// Sealing a secret needs a touch on this same connection first.
    TouchRequired,
}

impl Code {
    /// Every code, for tests of the translations.
    pub const ALL: [Code; 17] = [
        Code::BadRequest,
        Code::Internal,
        Code::NoKeys,
        Code::ApprovalFailed,
        Code::NotFound,
        Code::Exists,
        Code::MfaRequired,
        Code::StsDenied,
        Code::StsUnavailable,
        Code::Keyring,
        Code::Profile,
        Code::Refused,
        Code::BadToken,
        Code::Policy,
        Code::Sealed,
        Code::LoginRequired,
        Code::TouchRequired,
    ];

    /// The code's name, as the audit writes it (the control protocol's name for it too).
    pub fn as_str(self) -> &'static str {
        match self {
            Code::BadRequest => "bad_request",
            Code::Internal => "internal",
            Code::NoKeys => "no_keys",
            Code::ApprovalFailed => "approval_failed",
            Code::NotFound => "not_found",
            Code::Exists => "exists",
            Code::MfaRequired => "mfa_required",
            Code::StsDenied => "sts_denied",
            Code::StsUnavailable => "sts_unavailable",
            Code::Keyring => "keyring",
            Code::Profile => "profile",
            Code::Refused => "refused",
            Code::BadToken => "bad_token",
            Code::Policy => "policy",
            Code::Sealed => "sealed",
            Code::LoginRequired => "login_required",
            Code::TouchRequired => "touch_required",
        }
    }
}

/// A refusal: its code and what to tell the person (what happened and what to do next).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    pub code: Code,
    pub message: String,
}

impl Refusal {
    pub fn new(code: Code, message: impl Into<String>) -> Refusal {
        Refusal {
            code,
            message: message.into(),
        }
    }
}

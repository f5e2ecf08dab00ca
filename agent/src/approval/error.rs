//! The approval error type: one variant per outcome a user or script must tell apart,
//! each with a stable `code()` and a message that says what to do next.

use crate::refusal::{Code, Refusal};
use std::path::PathBuf;

/// Everything that can go wrong while registering keys or approving a role.
///
/// `code()` is stable and goes over the wire; `Display` is the advice for a human.
#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    #[error("no security key is registered: register one with `credctl key add`")]
    NoKeys,

    #[error(
        "none of the registered keys satisfies the approval policy ({refused}): register a key \
         that does with `credctl key add`, or change [approval] in config.toml and restart the \
         agent (`credctl stop`; it reads the file when it starts)"
    )]
    NoEligibleKeys { refused: String },

    #[error(
        "this approval request is unknown or was already used: start a new one \
         (for example `credctl use ROLE`)"
    )]
    UnknownCeremony,

    #[error("the approval request expired (a touch must follow within 60 s): start a new one")]
    ChallengeExpired,

    #[error(
        "this approval page belongs to another browser tab or program: the page credctl opened \
         first holds it. The approval was cancelled; if you did not open the page twice, a \
         program on this machine read its address: check your processes and run the command \
         again"
    )]
    PageTaken,

    #[error(
        "this touch was requested for role {expected}, not {requested}: \
         start a new approval for {requested}"
    )]
    RoleMismatch { expected: String, requested: String },

    #[error(
        "the touch came from origin {origin}, which is not credagent's (http://localhost:PORT): \
         only approve requests from credctl or credagent's own approval page"
    )]
    OriginRefused { origin: String },

    #[error(
        "the key did not verify you (PIN or biometric), and credagent requires that before a \
         touch opens your vault, so that a program that reaches the key without its PIN opens \
         nothing: set a PIN on the key (for a YubiKey: `ykman fido access change-pin`) and try \
         again. To let a touch alone approve, set [approval] user_verification = \
         \"discouraged\" in config.toml (weaker; your next touch confirms the change)"
    )]
    UserNotVerified,

    #[error(
        "the security key's answer did not verify ({reason}): try again with a registered key"
    )]
    AssertionInvalid { reason: String },

    #[error(
        "the signature counter of key {key} went backwards, so the key may have been cloned; \
         the approval was refused. If you restored this key from a backup, remove it with \
         `credctl key remove {key}` and register it again"
    )]
    CounterRegression { key: String },

    #[error(
        "this authenticator identifies itself as software ({what}); credagent refuses software \
         authenticators by default: use a hardware security key, or set \
         allow_software_authenticators = true in [approval] (for tests and demos only) and \
         run `credctl reload` (a touch of a key you registered before confirms it)"
    )]
    SoftwareAuthenticatorRefused { what: String },

    #[error(
        "the key's attestation is not trusted ({reason}): only keys attested by the CAs in \
         [approval] attestation_ca can register; use such a key or change the list"
    )]
    AttestationUntrusted { reason: String },

    #[error("the key registration did not verify ({reason}): try `credctl key add` again")]
    RegistrationInvalid { reason: String },

    #[error("a key named {name} is already registered: pick another name or remove it first")]
    KeyExists { name: String },

    #[error("this security key is already registered as {name}: no need to add it again")]
    CredentialExists { name: String },

    #[error("no key named {name} is registered: see `credctl key list`")]
    UnknownKey { name: String },

    #[error(
        "{name} is the only registered key; without it no role can be approved: register \
         another key first, or pass --force"
    )]
    LastKey { name: String },

    #[error("invalid {what}: {reason}")]
    InvalidName { what: &'static str, reason: String },

    #[error("too many approvals are in progress: wait a minute and try again")]
    TooManyCeremonies,

    #[error(
        "changing the registered keys ({what}) needs a touch of a key registered already: run \
         the command again and touch one of the keys in `credctl key list`"
    )]
    NotAuthorized { what: String },

    #[error(
        "another credctl is already {what} and waits for its touch: finish that one first, or \
         wait a minute for it to expire"
    )]
    KeyChangePending { what: String },

    #[error(
        "an approval for {role} is waiting for a touch: one touch at a time, so that no program \
         can slip its request in front of yours; finish or cancel that one, then run the \
         command again"
    )]
    Busy { role: String },

    #[error(
        "{} is damaged ({detail}) and was left untouched: restore it from a backup, or move it \
         aside and register your keys again with `credctl key add`",
        path.display()
    )]
    StateCorrupt { path: PathBuf, detail: String },

    #[error(
        "{} can be written by other users (mode {mode:o}), so its keys cannot be trusted: \
         check who changed it, then `chmod 600` it",
        path.display()
    )]
    StateInsecure { path: PathBuf, mode: u32 },

    #[error(
        "attestation CA file {} is not usable ({detail}): fix [approval] attestation_ca in \
         config.toml",
        path.display()
    )]
    AttestationCaInvalid { path: PathBuf, detail: String },

    #[error(
        "WebAuthn relying party error ({reason}): this is a bug in credagent, please report it"
    )]
    Internal { reason: String },

    #[error(
        "key {key} answered without an hmac-secret (WebAuthn PRF) output, so it cannot open \
         your sealed sources. Use a FIDO2 key with hmac-secret (nearly every key sold since \
         2019; in a browser, one that supports PRF and verifies you: browsers evaluate PRF only \
         with user verification, so a security key needs a PIN), or, to approve by policy only with \
         sources left readable in the keyring, set sealing = \"allow-unsealed\" under \
         [approval] in config.toml"
    )]
    NoPrf { key: String },

    #[error(
        "key {key} holds no copy of the vault in vault.json, so its touch opens no sealed \
         source. If vault.json was replaced (`credctl status` shows its fingerprint: compare it \
         with the one you know), restore it from a backup. If you did not register {key}, \
         someone edited keys.json: remove it. If you registered it unsealed, approve with \
         another key, then `credctl key remove {key}` and `credctl key add {key}`"
    )]
    KeyNotSealed { key: String },

    #[error(
        "key {key}'s secret does not unwrap your vault. Approve the same way you registered it \
         (a key sealed through credctl gives another secret with a PIN or in a browser, which \
         verify the user), or, if vault.json was replaced, restore it from a backup: sources \
         added since may have been sealed to someone else's vault"
    )]
    VaultUnwrap { key: String },

    #[error(
        "key {key}'s copy of your vault opens only with its PIN (it was sealed with user \
         verification): approve with `credctl`, which asks for the PIN, or set [approval] \
         user_verification = \"required\""
    )]
    WrapNeedsUserVerification { key: String },

    #[error(
        "key {key}'s copy of your vault opens with a touch alone (it was sealed touch-only), \
         and credagent now asks for your PIN. If you used touch-only approvals before \
         (user_verification = \"discouraged\", or a credagent from before the PIN was the \
         default), run `credctl key pin` once: one touch without the PIN, one with it. If you \
         never did, vault.json was replaced behind your back: do not run it, restore vault.json \
         from a backup"
    )]
    WrapNeedsMove { key: String },

    #[error(
        "key {key} is registered, but vault.json is missing, so its touch opens nothing and no \
         new vault is made (it would strand every sealed source, and a program that deleted the \
         file could choose what your touch creates). Restore vault.json from a backup and \
         restart the agent (`credctl stop`). Without it your sealed sources open for no one: \
         only if it is lost for good, start over (move the state directory aside, register \
         your keys and add your sources again)"
    )]
    VaultMissing { key: String },

    #[error("the vault could not be changed: {detail}")]
    Vault { detail: String },

    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ApprovalError {
    /// The stable machine-readable code sent over the control protocol.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NoKeys => "no_keys",
            Self::NoEligibleKeys { .. } => "no_eligible_keys",
            Self::UnknownCeremony => "unknown_ceremony",
            Self::ChallengeExpired => "challenge_expired",
            Self::PageTaken => "page_taken",
            Self::RoleMismatch { .. } => "role_mismatch",
            Self::OriginRefused { .. } => "origin_refused",
            Self::UserNotVerified => "user_not_verified",
            Self::AssertionInvalid { .. } => "assertion_invalid",
            Self::CounterRegression { .. } => "counter_regression",
            Self::SoftwareAuthenticatorRefused { .. } => "software_authenticator_refused",
            Self::AttestationUntrusted { .. } => "attestation_untrusted",
            Self::RegistrationInvalid { .. } => "registration_invalid",
            Self::KeyExists { .. } => "key_exists",
            Self::CredentialExists { .. } => "credential_exists",
            Self::UnknownKey { .. } => "unknown_key",
            Self::LastKey { .. } => "last_key",
            Self::InvalidName { .. } => "invalid_name",
            Self::TooManyCeremonies => "too_many_ceremonies",
            Self::NotAuthorized { .. } => "not_authorized",
            Self::KeyChangePending { .. } => "key_change_pending",
            Self::Busy { .. } => "busy",
            Self::StateCorrupt { .. } => "state_corrupt",
            Self::StateInsecure { .. } => "state_insecure",
            Self::AttestationCaInvalid { .. } => "attestation_ca_invalid",
            Self::Internal { .. } => "internal",
            Self::NoPrf { .. } => "no_prf",
            Self::KeyNotSealed { .. } => "key_not_sealed",
            Self::VaultUnwrap { .. } => "vault_unwrap",
            Self::WrapNeedsUserVerification { .. } => "wrap_needs_user_verification",
            Self::WrapNeedsMove { .. } => "wrap_needs_move",
            Self::VaultMissing { .. } => "vault_missing",
            Self::Vault { .. } => "vault",
            Self::Io { .. } => "io",
        }
    }

    /// The kind of refusal the client turns into an exit status and advice.
    pub fn refusal_code(&self) -> Code {
        match self {
            Self::NoKeys => Code::NoKeys,
            Self::SoftwareAuthenticatorRefused { .. }
            | Self::AttestationUntrusted { .. }
            | Self::NoEligibleKeys { .. }
            | Self::UserNotVerified
            | Self::AttestationCaInvalid { .. }
            | Self::NoPrf { .. }
            | Self::WrapNeedsUserVerification { .. }
            | Self::WrapNeedsMove { .. }
            | Self::VaultMissing { .. }
            | Self::KeyNotSealed { .. } => Code::Policy,
            Self::KeyExists { .. } | Self::CredentialExists { .. } => Code::Exists,
            Self::UnknownKey { .. } => Code::NotFound,
            Self::LastKey { .. }
            | Self::NotAuthorized { .. }
            | Self::KeyChangePending { .. }
            | Self::Busy { .. }
            | Self::PageTaken => Code::Refused,
            Self::InvalidName { .. } => Code::BadRequest,
            Self::StateCorrupt { .. }
            | Self::StateInsecure { .. }
            | Self::Io { .. }
            | Self::Internal { .. } => Code::Internal,
            Self::UnknownCeremony
            | Self::ChallengeExpired
            | Self::RoleMismatch { .. }
            | Self::OriginRefused { .. }
            | Self::AssertionInvalid { .. }
            | Self::CounterRegression { .. }
            | Self::RegistrationInvalid { .. }
            | Self::VaultUnwrap { .. }
            | Self::TooManyCeremonies => Code::ApprovalFailed,
            Self::Vault { .. } => Code::Internal,
        }
    }

    /// This error as a refusal.
    pub fn refusal(&self) -> Refusal {
        Refusal::new(self.refusal_code(), self.to_string())
    }

    /// This error as the outcome of a touch.
    pub fn outcome(&self) -> super::TouchOutcome {
        super::TouchOutcome::Refused(self.refusal())
    }

    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Self::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

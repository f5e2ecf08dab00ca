//! What a touch ends in, in the approval's own words: every follower of a ceremony receives
//! the same [`TouchOutcome`], and the control socket and the approval page each translate it
//! once.

use crate::refusal::{Code, Refusal};

use super::KeyInfo;

/// What kind of touch a challenge asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChallengeStep {
    /// A registered key's touch that opens a role.
    OpenRole,
    /// A new key's registration.
    Register,
    /// The new key's second touch, which seals the vault to it.
    SealNewKey,
    /// A registered key's touch that allows something else; it opens no role.
    Authorize,
}

/// A challenge for a touch.
#[derive(Debug, Clone, PartialEq)]
pub struct Challenge {
    pub ceremony_id: String,
    /// `http://localhost:PORT`, the origin the agent verifies.
    pub origin: String,
    /// The role the touch opens, or the pseudo-role of a touch that opens none; `None` for a
    /// key registration.
    pub role: Option<String>,
    /// What the touch is for, in words, when it opens no role.
    pub purpose: Option<String>,
    /// How long the session it opens lasts.
    pub session_secs: Option<u64>,
    /// What the touch opens, resolved (the source and every role ARN of the chain).
    pub target: Option<String>,
    /// The browser approval page for this ceremony.
    pub approve_url: String,
    /// webauthn-rs `CreationChallengeResponse` or `RequestChallengeResponse` JSON.
    pub options: serde_json::Value,
    pub step: ChallengeStep,
}

/// A role session a touch opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    pub role: String,
    /// Unix seconds.
    pub expires_at: u64,
}

/// How a touch (or the request that asked for it) ended.
#[derive(Debug, Clone, PartialEq)]
pub enum TouchOutcome {
    /// Done; nothing to return.
    Done,
    /// Touch a key for this.
    Challenge(Box<Challenge>),
    /// The role's session is open.
    Opened(Opened),
    /// The key is registered.
    KeyAdded(Box<KeyInfo>),
    /// Refused, with why and what to do.
    Refused(Refusal),
}

impl TouchOutcome {
    /// A refusal with `code`.
    pub fn refused(code: Code, message: impl Into<String>) -> TouchOutcome {
        TouchOutcome::Refused(Refusal::new(code, message))
    }
}

impl From<Refusal> for TouchOutcome {
    fn from(r: Refusal) -> Self {
        TouchOutcome::Refused(r)
    }
}

//! The one translation from the core's own types into control-protocol replies: refusals,
//! the outcomes of touches, registered keys.

use credagent_proto::{ErrorCode, KeyInfo as WireKeyInfo, Response};

use crate::approval::{ChallengeStep, KeyInfo, TouchOutcome};
use crate::refusal::{Code, Refusal};

/// The protocol's code for a refusal's.
pub fn error_code(code: Code) -> ErrorCode {
    match code {
        Code::BadRequest => ErrorCode::BadRequest,
        Code::Internal => ErrorCode::Internal,
        Code::NoKeys => ErrorCode::NoKeys,
        Code::ApprovalFailed => ErrorCode::ApprovalFailed,
        Code::NotFound => ErrorCode::NotFound,
        Code::Exists => ErrorCode::Exists,
        Code::MfaRequired => ErrorCode::MfaRequired,
        Code::StsDenied => ErrorCode::StsDenied,
        Code::StsUnavailable => ErrorCode::StsUnavailable,
        Code::Keyring => ErrorCode::Keyring,
        Code::Profile => ErrorCode::Profile,
        Code::Refused => ErrorCode::Refused,
        Code::BadToken => ErrorCode::BadToken,
        Code::Policy => ErrorCode::Policy,
        Code::Sealed => ErrorCode::Sealed,
        Code::LoginRequired => ErrorCode::LoginRequired,
        Code::TouchRequired => ErrorCode::TouchRequired,
    }
}

impl From<Refusal> for Response {
    fn from(r: Refusal) -> Response {
        Response::error(error_code(r.code), r.message)
    }
}

impl From<TouchOutcome> for Response {
    fn from(outcome: TouchOutcome) -> Response {
        match outcome {
            TouchOutcome::Done => Response::Ok,
            TouchOutcome::Challenge(c) => {
                Response::Challenge(Box::new(credagent_proto::Challenge {
                    ceremony_id: c.ceremony_id,
                    origin: c.origin,
                    role: c.role,
                    purpose: c.purpose,
                    session_secs: c.session_secs,
                    target: c.target,
                    approve_url: c.approve_url,
                    options: c.options,
                    step: Some(match c.step {
                        ChallengeStep::OpenRole => credagent_proto::ChallengeStep::OpenRole,
                        ChallengeStep::Register => credagent_proto::ChallengeStep::Register,
                        ChallengeStep::SealNewKey => credagent_proto::ChallengeStep::SealNewKey,
                        ChallengeStep::Authorize => credagent_proto::ChallengeStep::Authorize,
                    }),
                }))
            }
            // The control socket adds the region and account (control::sessions).
            TouchOutcome::Opened(o) => Response::Opened {
                role: o.role,
                expires_at: o.expires_at,
                region: None,
                account_id: None,
            },
            TouchOutcome::KeyAdded(k) => Response::KeyAdded {
                key: wire_key_info(&k),
            },
            TouchOutcome::Refused(r) => r.into(),
        }
    }
}

/// A registered key as the control protocol shows it.
pub fn wire_key_info(k: &KeyInfo) -> WireKeyInfo {
    let kind = serde_json::to_value(k.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into());
    WireKeyInfo {
        name: k.name.clone(),
        created: k.created,
        last_used: k.last_used,
        counter: k.counter,
        kind,
        aaguid: k.aaguid.map(|u| u.to_string()),
        sealed: k.sealed,
        verified_seal: k.verified_seal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_keeps_its_name_on_the_wire() {
        // The audit writes the core's names; clients read the protocol's: they must agree.
        for code in Code::ALL {
            assert_eq!(error_code(code).as_str(), code.as_str());
        }
    }
}

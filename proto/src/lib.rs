//! The control protocol between `credctl` and the `credagent` daemon: message types, framing,
//! stable error codes and the rules for where the control socket lives.
//!
//! This crate is data and framing only. It knows nothing of AWS, WebAuthn or keyrings, so both
//! sides (and the fuzz targets) can depend on it cheaply.

mod frame;
mod message;
mod paths;
mod secret;

pub use frame::{
    decode_body, encode_frame, encode_message, frame_len, frame_part, read_frame, read_message,
    write_frame, FrameError, HEADER_LEN, MAX_FRAME_LEN, MAX_MESSAGE_LEN, MORE,
};
pub use message::{
    ApprovalInProgress, Challenge, ChallengeStep, ErrorCode, KeyInfo, PendingInfo, Request,
    Response, RoleInfo, SessionState, SourceInfo, SsoAccountInfo, SsoRole, SsoState, StatusInfo,
    TokenInfo,
};
pub use paths::{socket_path, socket_path_from, SocketPathSource};
pub use secret::Secret;

/// The version of the control protocol. Bump it whenever a message changes meaning; add new
/// variants instead of changing old ones. Both sides send it in the first exchange (`Hello`), and
/// a mismatch is refused with [`ErrorCode::VersionMismatch`].
///
/// 2: `KeyRemove` is answered with a challenge (removing a key takes a touch); token list and
/// revoke.
pub const PROTOCOL_VERSION: u32 = 2;

/// The member of an approval challenge's `options` that lists (base64url credential ids) the
/// keys whose copy of the vault still opens with a touch alone, and the member of the answer
/// that carries such a key's PRF output from a touch *without* user verification (base64url).
/// The agent asks for it only to move that copy to user verification: the answer's own PRF
/// output, from the user-verified touch, wraps it anew.
pub const PRF_WITHOUT_UV: &str = "credagentPrfWithoutUv";

/// The timeouts both sides agree on, stated once.
pub mod timeouts {
    use std::time::Duration;

    /// How long a challenge stays valid: the touch must come within it.
    pub const CEREMONY_TTL: Duration = Duration::from_secs(60);
    /// How long an answered ceremony may take to reach its outcome (verifying the touch and
    /// opening the session, STS retries included); the longest a follower waits.
    pub const OUTCOME_WAIT: Duration = Duration::from_secs(90);
    /// How long `credctl` waits for the answer to a request that may wait on a ceremony or on
    /// STS: the longest outcome, and a margin for the reply to arrive.
    pub const CLIENT_WAIT: Duration = Duration::from_secs(90 + 15);
    /// How long `credctl` waits for an IAM Identity Center sign-in (and for discovery, which
    /// pages through every account): a real sign-in (password, MFA, "Allow") takes minutes;
    /// the AWS CLI waits up to 10 minutes (awscli/customizations/sso/utils.py), and so does the
    /// agent for a browser sign-in. A margin for the reply.
    pub const LOGIN_WAIT: Duration = Duration::from_secs(600 + 15);
    /// How long `credctl` waits for any other answer.
    pub const CLIENT_QUICK: Duration = Duration::from_secs(30);
    /// A control connection that holds nothing and sends nothing for this long is closed.
    /// Connections holding `exec` tokens are never closed for idleness: the token lives as
    /// long as the command.
    pub const CONTROL_IDLE: Duration = Duration::from_secs(300);
}

impl Request {
    /// How long a client waits for the answer to this request: the requests that may wait on a
    /// touch (their own or one under way) or on STS get the agent's longest outcome and a
    /// margin, the Identity Center sign-in and discovery theirs, everything else answers at
    /// once. Stated here, beside the timeouts, so the agent's waits and the client's agree.
    pub fn answer_within(&self) -> std::time::Duration {
        match self {
            Request::Open { .. }
            | Request::Approve { .. }
            | Request::AwaitCeremony { .. }
            | Request::KeyAddStart { .. }
            | Request::KeyAddFinish { .. }
            | Request::KeyRemove { .. }
            | Request::Confirm { .. }
            | Request::AllowProgram { .. }
            | Request::Reload
            | Request::KeyPin { .. }
            | Request::Credentials { .. } => timeouts::CLIENT_WAIT,
            Request::AwaitLogin { .. } | Request::SsoDiscover { .. } => timeouts::LOGIN_WAIT,
            _ => timeouts::CLIENT_QUICK,
        }
    }
}

#[cfg(test)]
mod answer_tests {
    use super::*;

    #[test]
    fn requests_that_wait_behind_a_touch_get_the_long_wait() {
        let pin = Request::KeyPin {
            accept_change: false,
        };
        assert_eq!(pin.answer_within(), timeouts::CLIENT_WAIT);
        assert!(timeouts::CLIENT_WAIT > timeouts::OUTCOME_WAIT);
        assert_eq!(Request::KeyList.answer_within(), timeouts::CLIENT_QUICK);
        assert_eq!(
            Request::AwaitLogin {
                login: "corp".into()
            }
            .answer_within(),
            timeouts::LOGIN_WAIT
        );
    }
}

//! What a touch answers: the agent's challenge as `credctl` reads it, the answer it sends back,
//! and the parts of both that carry the move of a touch-only copy of the vault to the PIN. Below
//! the authenticators (USB, software) and the commands, which all use it.

use credagent_proto::Response;

use crate::agent::unexpected;
use crate::error::Result;

pub use credagent_proto::Challenge;

/// The challenge in a reply, or the reply as unexpected.
pub fn challenge(r: Response) -> Result<Challenge> {
    match r {
        Response::Challenge(c) => Ok(*c),
        other => Err(unexpected(&other)),
    }
}

/// A challenge in the words `credctl` shows before the touch.
pub trait Describe {
    /// What the touch does, in words.
    fn what(&self) -> String;
}

impl Describe for Challenge {
    fn what(&self) -> String {
        if let Some(p) = &self.purpose {
            // It may quote config values (a reload's changes): line breaks are the agent's,
            // anything else that would steer the terminal is shown escaped.
            return crate::text::printable_lines(p);
        }
        // The touch approves what the agent resolved, not a name: show it.
        let opens = self
            .target
            .as_deref()
            .map(|t| format!(": {}", crate::text::printable(t)))
            .unwrap_or_default();
        match (&self.role, self.session_secs) {
            (Some(role), Some(s)) => {
                format!("to open role {role} (session {}){opens}", human(s))
            }
            (Some(role), None) => format!("to open role {role}{opens}"),
            (None, _) => "to register it with credagent".into(),
        }
    }
}

fn human(secs: u64) -> String {
    match (secs / 3600, secs / 60 % 60) {
        (0, m) => format!("{m}m"),
        (h, 0) => format!("{h}h"),
        (h, m) => format!("{h}h{m}m"),
    }
}

/// Whether an approval's options ask for a touch without user verification (a touch-only
/// policy; registrations and approvals alike).
pub(crate) fn touch_only(options: &serde_json::Value) -> bool {
    let pk = &options["publicKey"];
    pk["userVerification"] == "discouraged"
        || pk["authenticatorSelection"]["userVerification"] == "discouraged"
}

/// The PRF input of `credential` when the agent also asks for its output from a touch without
/// user verification ([`credagent_proto::PRF_WITHOUT_UV`]): its copy of the vault predates user
/// verification and moves now.
#[cfg(any(feature = "soft-authenticator", feature = "usb"))]
pub(crate) fn without_uv_input<'a>(
    options: &serde_json::Value,
    credential: &[u8],
    prf: Option<&'a crate::authenticator::ctap::prf::PrfInputs>,
) -> Option<&'a [u8]> {
    use base64::Engine as _;
    let id = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(credential);
    let listed = options
        .get(credagent_proto::PRF_WITHOUT_UV)?
        .as_array()?
        .iter()
        .any(|v| v.as_str() == Some(id.as_str()));
    listed.then(|| prf?.input_for(Some(credential)))?
}

/// Adds the touch-only output to an answer ([`credagent_proto::PRF_WITHOUT_UV`]).
#[cfg(any(feature = "soft-authenticator", feature = "usb"))]
pub(crate) fn add_without_uv(answer: &mut serde_json::Value, output: &[u8; 32]) {
    use base64::Engine as _;
    if let Some(o) = answer.as_object_mut() {
        o.insert(
            credagent_proto::PRF_WITHOUT_UV.into(),
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(output)
                .into(),
        );
    }
}

#[cfg(any(feature = "soft-authenticator", feature = "usb"))]
pub(crate) fn say_moving_to_user_verification() {
    eprintln!(
        "credctl: this key's copy of your vault still opens with a touch alone: touch the key \
         once more, without the PIN, to move it to PIN protection"
    );
}

/// Sends the answer to the agent, then overwrites the strings of the answer (a PRF output is a
/// secret) in our copy.
#[cfg(any(feature = "soft-authenticator", feature = "usb"))]
pub(crate) fn approve(
    agent: &mut crate::agent::Agent,
    c: &Challenge,
    credential: serde_json::Value,
) -> Result<Response> {
    let mut request = credagent_proto::Request::Approve {
        ceremony_id: c.ceremony_id.clone(),
        credential,
    };
    let verdict = agent.request(&request);
    if let credagent_proto::Request::Approve { credential, .. } = &mut request {
        crate::authenticator::ctap::prf::scrub_json(credential);
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_touch_only_challenge_is_recognised() {
        let approve = serde_json::json!({"publicKey": {"userVerification": "discouraged"}});
        let register = serde_json::json!({"publicKey": {"authenticatorSelection":
            {"userVerification": "discouraged"}}});
        assert!(touch_only(&approve) && touch_only(&register));
        let verified = serde_json::json!({"publicKey": {"userVerification": "required"}});
        assert!(!touch_only(&verified) && !touch_only(&serde_json::json!({})));
    }
}

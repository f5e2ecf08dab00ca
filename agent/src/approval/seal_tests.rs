//! Sealing on the approval path, against webauthn-authenticator-rs's real soft token for the
//! signatures. That token has no hmac-secret, so each test key carries its own 32-byte secret
//! and answers the PRF the way an authenticator does: one fixed output per credential and
//! evaluation point (the CTAP2 extension itself is tested in credctl, against its software
//! CTAP2 device, and end to end in tests/it).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use webauthn_authenticator_rs::softtoken::SoftToken;
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_rs::prelude::{CreationChallengeResponse, RequestChallengeResponse, Url};

use super::tests::{key_add_role, key_remove_role};
use super::*;

const PORT: u16 = 38212;
const ORIGIN: &str = "http://localhost:38212";

fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

fn policy(sealing: Sealing) -> ApprovalPolicy {
    ApprovalPolicy {
        allow_software_authenticators: true,
        sealing,
        ..ApprovalPolicy::default()
    }
}

/// A soft token and the secret its "hmac-secret" derives outputs from.
struct Key {
    token: SoftToken,
    secret: [u8; 32],
}

fn key(byte: u8) -> Key {
    Key {
        token: SoftToken::new(false).unwrap().0,
        secret: [byte; 32],
    }
}

impl Key {
    /// The PRF output for evaluation point `point` (base64url), as an authenticator's
    /// hmac-secret gives it: a fixed function of the credential's secret and the salt.
    fn prf(&self, point_b64: &str) -> PrfOutput {
        let point = URL_SAFE_NO_PAD.decode(point_b64).unwrap();
        let salt = crate::vault::prf_salt(&point);
        let out: [u8; 32] = Sha256::new()
            .chain_update(self.secret)
            .chain_update(salt)
            .finalize()
            .into();
        PrfOutput::from_slice(&out).unwrap()
    }
}

fn origin() -> Url {
    Url::parse(ORIGIN).unwrap()
}

/// The evaluation point the options ask of credential `cred_id`.
fn point_in(options: &serde_json::Value, cred_id: &[u8]) -> Option<String> {
    options["publicKey"]["extensions"]["prf"]["evalByCredential"][URL_SAFE_NO_PAD.encode(cred_id)]
        ["first"]
        .as_str()
        .map(str::to_owned)
}

/// `key add`: registration with PRF, then the seal touch with the key's PRF output.
fn add(
    approver: &Approver,
    key: &mut Key,
    name: &str,
    authorization: Option<Approval>,
    with_prf: bool,
) -> Result<KeyInfo, ApprovalError> {
    let (id, _) = approver.start_registration_led(name, Lead::default(), authorization, t0())?;
    let options = approver.view(id).unwrap().options;
    assert_eq!(
        options["publicKey"]["extensions"]["prf"],
        serde_json::json!({}),
        "the creation options ask for the PRF"
    );
    let ccr: CreationChallengeResponse = serde_json::from_value(options).unwrap();
    let reg = key.token.do_registration(origin(), ccr).unwrap();
    let claimed = approver.claim(id, t0())?;
    match approver.finish_registration_claimed(claimed, &reg, with_prf, t0())? {
        Registered::Added(info) => Ok(info),
        Registered::Seal(sid, options) => {
            let point = point_in(&options, &reg.raw_id).expect("the seal asks the new key");
            let rcr: RequestChallengeResponse = serde_json::from_value(options).unwrap();
            let cred = key.token.do_authentication(origin(), rcr).unwrap();
            let claimed = approver.claim(sid, t0())?;
            approver
                .finish_seal_claimed(claimed, &cred, Some(key.prf(&point)), t0())
                .map(|(info, _created)| info)
        }
    }
}

/// A touch of `key` for `role`, with its PRF output when `with_prf`.
fn touch(
    approver: &Approver,
    key: &mut Key,
    role: impl Into<super::Purpose>,
    with_prf: bool,
) -> Result<Approval, ApprovalError> {
    let role: super::Purpose = role.into();
    let (id, _) = approver.start_approval(&role, t0())?;
    let options = approver.view(id).unwrap().options;
    let rcr: RequestChallengeResponse = serde_json::from_value(options.clone()).unwrap();
    let cred = key.token.do_authentication(origin(), rcr).unwrap();
    let prf = match point_in(&options, &cred.raw_id) {
        Some(point) if with_prf => Some(key.prf(&point)),
        _ => None,
    };
    let claimed = approver.claim(id, t0())?;
    let result = approver.finish_approval_claimed(claimed, &role, &cred, prf, t0());
    approver.conclude_with(id, &result);
    result
}

#[test]
fn the_first_key_creates_the_vault_and_every_touch_of_it_unwraps_it() {
    let dir = tempfile::tempdir().unwrap();
    let approver = Approver::new(policy(Sealing::Required), dir.path(), PORT, t0()).unwrap();
    let mut a = key(1);
    let info = add(&approver, &mut a, "a", None, true).unwrap();
    assert!(info.sealed);
    assert!(approver.vault().exists());
    let public = approver.vault().public().unwrap();

    let mut approval = touch(&approver, &mut a, "prod", true).unwrap();
    let secret = approval
        .take_vault()
        .expect("the touch unwrapped the vault");
    assert_eq!(secret.public(), &public);

    // After a restart, the same key and point give the same secret.
    drop(approver);
    let approver = Approver::new(policy(Sealing::Required), dir.path(), PORT, t0()).unwrap();
    let mut approval = touch(&approver, &mut a, "prod", true).unwrap();
    assert_eq!(approval.take_vault().unwrap().public(), &public);
}

#[test]
fn a_touch_without_the_secret_or_with_another_opens_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let approver = Approver::new(policy(Sealing::Required), dir.path(), PORT, t0()).unwrap();
    let mut a = key(1);
    add(&approver, &mut a, "a", None, true).unwrap();

    let err = touch(&approver, &mut a, "prod", false).unwrap_err();
    assert_eq!(err.code(), "no_prf");
    assert!(err.to_string().contains("hmac-secret"), "{err}");

    // The same signature key with another hmac-secret (a key sealed without UV answering
    // with UV, or a forged output) does not unwrap.
    a.secret = [9; 32];
    let err = touch(&approver, &mut a, "prod", true).unwrap_err();
    assert_eq!(err.code(), "vault_unwrap");
}

#[test]
fn a_key_without_hmac_secret_is_refused_with_its_message() {
    let dir = tempfile::tempdir().unwrap();
    let approver = Approver::new(policy(Sealing::Required), dir.path(), PORT, t0()).unwrap();
    let err = add(&approver, &mut key(1), "old-u2f", None, false).unwrap_err();
    assert_eq!(err.code(), "no_prf");
    assert!(err.to_string().contains("allow-unsealed"), "{err}");
    assert!(approver.keys().is_empty(), "nothing was stored");
    assert!(!approver.vault().exists());
}

#[test]
fn a_second_key_gets_its_copy_from_an_authorizing_touch() {
    let dir = tempfile::tempdir().unwrap();
    let approver = Approver::new(policy(Sealing::Required), dir.path(), PORT, t0()).unwrap();
    let (mut a, mut b) = (key(1), key(2));
    add(&approver, &mut a, "a", None, true).unwrap();
    let public = approver.vault().public().unwrap();

    let authorization = touch(&approver, &mut a, key_add_role("b"), true).unwrap();
    let info = add(&approver, &mut b, "b", Some(authorization), true).unwrap();
    assert!(info.sealed);
    assert_eq!(approver.vault().wraps(), 2);
    let mut approval = touch(&approver, &mut b, "prod", true).unwrap();
    assert_eq!(approval.take_vault().unwrap().public(), &public);

    // Removing b takes its copy of the vault with it.
    approver.check_removal("b", false).unwrap();
    let by_a = touch(&approver, &mut a, key_remove_role("b", false), true).unwrap();
    approver.remove_key("b", false, by_a).unwrap();
    assert_eq!(approver.vault().wraps(), 1);
}

#[test]
fn a_key_enrolled_by_editing_keys_json_unseals_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (mut mine, mut theirs) = (key(1), key(66));
    {
        let approver = Approver::new(policy(Sealing::Required), dir.path(), PORT, t0()).unwrap();
        add(&approver, &mut mine, "mine", None, true).unwrap();
    }
    // The attacker writes its own key into keys.json (here through a policy-only agent on the
    // same files, which is what editing the file amounts to) and allows unsealed keys.
    {
        let loose = Approver::new(policy(Sealing::AllowUnsealed), dir.path(), PORT, t0()).unwrap();
        let authorization = {
            // Editing the file needs no touch; the policy-only agent just takes the key.
            let mut inner = loose.lock();
            inner.store.records.clear();
            inner.store.save().unwrap();
            None
        };
        add(&loose, &mut theirs, "theirs", authorization, false).unwrap();
        // With sealing relaxed, its touch approves by policy but unwraps nothing.
        let mut approval = touch(&loose, &mut theirs, "prod", true).unwrap();
        assert!(approval.take_vault().is_none());
    }
    let approver = Approver::new(policy(Sealing::Required), dir.path(), PORT, t0()).unwrap();
    let err = touch(&approver, &mut theirs, "prod", true).unwrap_err();
    assert_eq!(err.code(), "key_not_sealed");
    assert!(err.to_string().contains("keys.json"), "{err}");
}

#[test]
fn an_unsealed_setup_approves_by_policy_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let approver = Approver::new(policy(Sealing::AllowUnsealed), dir.path(), PORT, t0()).unwrap();
    let mut a = key(1);
    let info = add(&approver, &mut a, "a", None, false).unwrap();
    assert!(!info.sealed);
    assert!(!approver.keys()[0].sealed);
    let mut approval = touch(&approver, &mut a, "prod", false).unwrap();
    assert!(approval.take_vault().is_none());
    assert!(!approver.vault().exists());
    // The first touch that brings a PRF output creates the vault (an upgrade in place).
    let mut approval = touch(&approver, &mut a, "prod", true).unwrap();
    assert!(approval.take_vault().is_some());
    assert!(approver.keys()[0].sealed);
}

#[test]
fn prf_results_are_read_from_either_name_and_junk_is_an_error() {
    let out = URL_SAFE_NO_PAD.encode([5u8; 32]);
    let browser =
        serde_json::json!({"clientExtensionResults": {"prf": {"results": {"first": out}}}});
    assert!(prf_output(&browser).unwrap().is_some());
    let none = serde_json::json!({"clientExtensionResults": {}});
    assert!(prf_output(&none).unwrap().is_none());
    let short =
        serde_json::json!({"clientExtensionResults": {"prf": {"results": {"first": "AAAA"}}}});
    assert!(prf_output(&short).is_err());
    let junk = serde_json::json!({"clientExtensionResults": {"prf": {"results": {"first": 7}}}});
    assert!(prf_output(&junk).is_err());
    assert!(prf_enabled(
        &serde_json::json!({"clientExtensionResults": {"prf": {"enabled": true}}})
    ));
    assert!(!prf_enabled(&serde_json::json!({})));
}

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
use crate::vault::PrfOutput;

const PORT: u16 = 38212;
const ORIGIN: &str = "http://localhost:38212";

fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

fn policy(sealing: Sealing) -> ApprovalPolicy {
    ApprovalPolicy {
        user_verification: UserVerification::Discouraged,
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

/// A soft token that verifies the user (sets UV), as a key with a PIN does.
fn uv_key(byte: u8) -> Key {
    Key {
        token: SoftToken::new(true).unwrap().0,
        secret: [byte; 32],
    }
}

impl Key {
    /// The PRF output for evaluation point `point` (base64url), as an authenticator's
    /// hmac-secret gives it: a fixed function of the credential's secret for that kind of
    /// touch (CredRandomWithUV or CredRandomWithoutUV) and the salt.
    fn prf_as(&self, point_b64: &str, user_verified: bool) -> PrfOutput {
        let point = URL_SAFE_NO_PAD.decode(point_b64).unwrap();
        let salt = crate::vault::prf_salt(&point);
        let out: [u8; 32] = Sha256::new()
            .chain_update(self.secret)
            .chain_update([u8::from(user_verified)])
            .chain_update(salt)
            .finalize()
            .into();
        PrfOutput::from_slice(&out).unwrap()
    }
}

/// Whether an assertion says the key verified the user.
fn verified(cred: &webauthn_rs::prelude::PublicKeyCredential) -> bool {
    cred.response.authenticator_data[32] & 0x04 != 0
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
            let prf = key.prf_as(&point, verified(&cred));
            approver
                .finish_seal_claimed(claimed, &cred, Some(prf), t0())
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
    touch_answering(approver, key, role, with_prf, false)
}

/// [`touch`], adding the output of a touch without user verification when the challenge asks
/// for it (`PRF_WITHOUT_UV`) and `move_wrap`, as credctl does.
fn touch_answering(
    approver: &Approver,
    key: &mut Key,
    role: impl Into<super::Purpose>,
    with_prf: bool,
    move_wrap: bool,
) -> Result<Approval, ApprovalError> {
    let role: super::Purpose = role.into();
    let (id, _) = approver.start_approval(&role, t0())?;
    let options = approver.view(id).unwrap().options;
    let rcr: RequestChallengeResponse = serde_json::from_value(options.clone()).unwrap();
    let cred = key.token.do_authentication(origin(), rcr).unwrap();
    let point = point_in(&options, &cred.raw_id);
    let output = match &point {
        Some(point) if with_prf => Some(key.prf_as(point, verified(&cred))),
        _ => None,
    };
    let id_b64 = serde_json::json!(URL_SAFE_NO_PAD.encode(&cred.raw_id));
    let asked = options[super::seal::PRF_WITHOUT_UV]
        .as_array()
        .is_some_and(|ids| ids.contains(&id_b64));
    let without_uv = match &point {
        Some(point) if asked && move_wrap => Some(key.prf_as(point, false)),
        _ => None,
    };
    let claimed = approver.claim(id, t0())?;
    let prf = PrfAnswer { output, without_uv };
    let result = approver.finish_approval_claimed(claimed, &role, &cred, prf, t0());
    approver.conclude_with(id, &result);
    result
}

#[test]
fn the_first_key_creates_the_vault_and_every_touch_of_it_unwraps_it() {
    let dir = tempfile::tempdir().unwrap();
    let approver = Approver::loading(policy(Sealing::Required), dir.path(), PORT, t0()).unwrap();
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
    let approver = Approver::loading(policy(Sealing::Required), dir.path(), PORT, t0()).unwrap();
    let mut approval = touch(&approver, &mut a, "prod", true).unwrap();
    assert_eq!(approval.take_vault().unwrap().public(), &public);
}

#[test]
fn a_touch_without_the_secret_or_with_another_opens_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let approver = Approver::loading(policy(Sealing::Required), dir.path(), PORT, t0()).unwrap();
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
    let approver = Approver::loading(policy(Sealing::Required), dir.path(), PORT, t0()).unwrap();
    let err = add(&approver, &mut key(1), "old-u2f", None, false).unwrap_err();
    assert_eq!(err.code(), "no_prf");
    assert!(err.to_string().contains("allow-unsealed"), "{err}");
    assert!(approver.keys().is_empty(), "nothing was stored");
    assert!(!approver.vault().exists());
}

#[test]
fn a_second_key_gets_its_copy_from_an_authorizing_touch() {
    let dir = tempfile::tempdir().unwrap();
    let approver = Approver::loading(policy(Sealing::Required), dir.path(), PORT, t0()).unwrap();
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
        let approver =
            Approver::loading(policy(Sealing::Required), dir.path(), PORT, t0()).unwrap();
        add(&approver, &mut mine, "mine", None, true).unwrap();
    }
    // The attacker writes its own key into keys.json (here through a policy-only agent on the
    // same files, which is what editing the file amounts to) and allows unsealed keys.
    {
        let loose =
            Approver::loading(policy(Sealing::AllowUnsealed), dir.path(), PORT, t0()).unwrap();
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
    let approver = Approver::loading(policy(Sealing::Required), dir.path(), PORT, t0()).unwrap();
    let err = touch(&approver, &mut theirs, "prod", true).unwrap_err();
    assert_eq!(err.code(), "key_not_sealed");
    assert!(err.to_string().contains("keys.json"), "{err}");
}

#[test]
fn an_unsealed_setup_approves_by_policy_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let approver =
        Approver::loading(policy(Sealing::AllowUnsealed), dir.path(), PORT, t0()).unwrap();
    let mut a = key(1);
    let info = add(&approver, &mut a, "a", None, false).unwrap();
    assert!(!info.sealed);
    assert!(!approver.keys()[0].sealed);
    let mut approval = touch(&approver, &mut a, "prod", false).unwrap();
    assert!(approval.take_vault().is_none());
    assert!(!approver.vault().exists());
    // No touch of a registered key makes a vault (only the first key's registration does):
    // it approves by policy, unsealed, as before.
    let mut approval = touch(&approver, &mut a, "prod", true).unwrap();
    assert!(approval.take_vault().is_none());
    assert!(!approver.vault().exists());
    // Nor does adding a key with its touch: the new key would hold a vault of its own.
    let authorization = touch(&approver, &mut a, key_add_role("b"), false).unwrap();
    let err = add(&approver, &mut key(2), "b", Some(authorization), true).unwrap_err();
    assert_eq!(err.code(), "not_authorized");
    assert!(
        err.to_string().contains("only the first key makes one"),
        "{err}"
    );
    assert!(!approver.vault().exists());
    assert_eq!(approver.keys().len(), 1);
}

/// The seventh attack review: `vault.json` and `trusted.json` deleted, the user's key set to
/// approve touch-only; one touch of it, without the PIN, made a vault of its own. Now no
/// approval makes a vault, whatever else is missing, and it says what to restore.
#[test]
fn a_deleted_vault_is_never_remade_by_a_touch_of_a_registered_key() {
    let dir = tempfile::tempdir().unwrap();
    let approver = Approver::loading(policy(Sealing::Required), dir.path(), PORT, t0()).unwrap();
    let mut a = key(1);
    add(&approver, &mut a, "a", None, true).unwrap();
    drop(approver);
    std::fs::remove_file(dir.path().join(crate::vault::VAULT_FILE)).unwrap();
    let approver = Approver::loading(policy(Sealing::Required), dir.path(), PORT, t0()).unwrap();
    let err = touch(&approver, &mut a, "prod", true).unwrap_err();
    assert_eq!(err.code(), "vault_missing");
    assert!(err.to_string().contains("Restore vault.json"), "{err}");
    assert!(!approver.vault().exists());
    let authorization = touch(&approver, &mut a, key_add_role("b"), true);
    assert_eq!(authorization.unwrap_err().code(), "vault_missing");
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

/// The only wrap in the vault file: its credential, evaluation point (base64url) and whether it
/// was made with user verification.
fn only_wrap(dir: &std::path::Path) -> (Vec<u8>, String, bool) {
    let file = crate::vault::VaultFile::load(&dir.join(crate::vault::VAULT_FILE))
        .unwrap()
        .unwrap();
    assert_eq!(file.wraps.len(), 1);
    let w = &file.wraps[0];
    (
        w.credential_id.clone(),
        URL_SAFE_NO_PAD.encode(w.point),
        w.user_verified,
    )
}

fn requiring_user_verification() -> ApprovalPolicy {
    ApprovalPolicy {
        user_verification: UserVerification::Required,
        ..policy(Sealing::Required)
    }
}

#[test]
fn with_user_verification_a_touch_without_the_pin_opens_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let approver =
        Approver::loading(requiring_user_verification(), dir.path(), PORT, t0()).unwrap();
    let mut a = uv_key(1);
    add(&approver, &mut a, "a", None, true).unwrap();
    let (cred_id, point, user_verified) = only_wrap(dir.path());
    assert!(user_verified, "the first wrap comes from a verified touch");
    let mut approval = touch(&approver, &mut a, "prod", true).unwrap();
    assert!(approval.take_vault().is_some());

    // What a program that reaches the key without its PIN gets: the other hmac-secret.
    let lured = a.prf_as(&point, false);
    assert_eq!(
        approver.vault().unwrap(&cred_id, &lured).unwrap_err(),
        crate::vault::VaultError::Unwrap
    );
    assert!(approver
        .vault()
        .unwrap(&cred_id, &a.prf_as(&point, true))
        .is_ok());
    // No challenge asks for a touch-only output while every wrap is verified.
    let (id, _) = approver.start_approval("prod", t0()).unwrap();
    let options = approver.view(id).unwrap().options;
    assert!(options.get(super::seal::PRF_WITHOUT_UV).is_none());
}

#[test]
fn a_touch_only_wrap_moves_to_user_verification_at_its_next_touch() {
    let dir = tempfile::tempdir().unwrap();
    let approver =
        Approver::loading(requiring_user_verification(), dir.path(), PORT, t0()).unwrap();
    let mut a = uv_key(1);
    add(&approver, &mut a, "a", None, true).unwrap();
    let (cred_id, point, _) = only_wrap(dir.path());
    let secret = touch(&approver, &mut a, "prod", true)
        .unwrap()
        .take_vault()
        .unwrap();
    // The wrap as a touch-only agent made it.
    approver
        .vault()
        .add_wrap(
            &secret,
            &cred_id,
            URL_SAFE_NO_PAD.decode(&point).unwrap().try_into().unwrap(),
            &a.prf_as(&point, false),
            false,
        )
        .unwrap();
    drop(secret);
    let approver =
        Approver::loading(requiring_user_verification(), dir.path(), PORT, t0()).unwrap();

    // A verified touch alone cannot open it, and says how to move it.
    let err = touch(&approver, &mut a, "prod", true).unwrap_err();
    assert_eq!(err.code(), "wrap_needs_move");
    assert!(
        err.to_string().contains("one touch without the PIN"),
        "{err}"
    );
    assert!(!only_wrap(dir.path()).2);

    // A touch-only output that does not open the wrap moves nothing.
    let mut other = uv_key(7);
    other.token = std::mem::replace(&mut a.token, SoftToken::new(true).unwrap().0);
    let err = touch_answering(&approver, &mut other, Purpose::MoveToPin, true, true).unwrap_err();
    assert_eq!(err.code(), "vault_unwrap");
    assert!(!only_wrap(dir.path()).2);
    a.token = other.token;

    // Both outputs, for `key pin`: the vault opens and its copy for this key is wrapped anew.
    let mut approval = touch_answering(&approver, &mut a, Purpose::MoveToPin, true, true).unwrap();
    assert!(approval.take_vault().is_some());
    let (_, point_after, user_verified) = only_wrap(dir.path());
    assert!(user_verified);
    assert_eq!(point_after, point);
    assert!(approver
        .vault()
        .unwrap(&cred_id, &a.prf_as(&point, false))
        .is_err());
    // From now on one verified touch does, and nothing asks for the touch-only output.
    let mut approval = touch(&approver, &mut a, "prod", true).unwrap();
    assert!(approval.take_vault().is_some());
}

#[test]
fn touch_only_policy_asks_for_verification_where_every_wrap_was_made_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let approver =
        Approver::loading(requiring_user_verification(), dir.path(), PORT, t0()).unwrap();
    let mut a = uv_key(1);
    add(&approver, &mut a, "a", None, true).unwrap();
    drop(approver);
    // Going back to touch-only does not weaken a verified wrap: the client is asked to verify.
    let approver = Approver::loading(policy(Sealing::Required), dir.path(), PORT, t0()).unwrap();
    let (id, _) = approver.start_approval("prod", t0()).unwrap();
    let options = approver.view(id).unwrap().options;
    assert_eq!(options["publicKey"]["userVerification"], "required");
    let mut approval = touch(&approver, &mut a, "prod", true).unwrap();
    assert!(approval.take_vault().is_some());
    assert!(only_wrap(dir.path()).2);
}

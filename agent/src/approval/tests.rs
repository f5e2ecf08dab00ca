//! End-to-end tests of the approval core against webauthn-authenticator-rs's real soft token.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crypto_glue::traits::{EncodePem, LineEndingPem};
use webauthn_authenticator_rs::softtoken::SoftToken;
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_rs::prelude::{PublicKeyCredential, Url};

use super::*;

const PORT: u16 = 38211;
const ORIGIN: &str = "http://localhost:38211";

impl Approver {
    /// As the agent wires it: the vault loaded from the same state directory.
    pub(super) fn loading(
        policy: ApprovalPolicy,
        state_dir: &Path,
        port: u16,
        now: SystemTime,
    ) -> Result<Self, ApprovalError> {
        let vault = VaultKeeper::load(state_dir).map_err(|e| ApprovalError::Vault {
            detail: e.to_string(),
        })?;
        Approver::new(policy, state_dir, Arc::new(vault), port, now)
    }
}

fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Software keys allowed and sealing not required: SoftToken has no hmac-secret, so these
/// tests exercise the policy path; sealing has its own tests against a CTAP2 software device.
fn permissive() -> ApprovalPolicy {
    ApprovalPolicy {
        user_verification: UserVerification::Discouraged,
        allow_software_authenticators: true,
        sealing: Sealing::AllowUnsealed,
        ..ApprovalPolicy::default()
    }
}

/// A new soft token (claiming user verification if `uv`) and its attestation CA as PEM.
fn token(uv: bool) -> (SoftToken, String) {
    let (token, ca) = SoftToken::new(uv).unwrap();
    (token, ca.to_pem(LineEndingPem::LF).unwrap())
}

/// A byte-for-byte copy of a soft token: same keys, same counter.
fn clone_token(token: &SoftToken) -> SoftToken {
    SoftToken::from_cbor(&token.to_cbor().unwrap()).unwrap()
}

fn origin(s: &str) -> Url {
    Url::parse(s).unwrap()
}

fn register(
    approver: &Approver,
    token: &mut SoftToken,
    name: &str,
    now: SystemTime,
) -> Result<KeyInfo, ApprovalError> {
    let (id, ccr) = approver.start_registration(name, now)?;
    let reg = token.do_registration(origin(ORIGIN), ccr).unwrap();
    approver.finish_registration(id, &reg, now)
}

/// Adds key `name` held by `token` once `authorizer` (a registered key) allowed it.
fn add_key(
    approver: &Approver,
    authorizer: &mut SoftToken,
    token: &mut SoftToken,
    name: &str,
    now: SystemTime,
) -> Result<KeyInfo, ApprovalError> {
    let (id, ccr) = start_authorized(approver, authorizer, name, now);
    let reg = token.do_registration(origin(ORIGIN), ccr).unwrap();
    approver.finish_registration(id, &reg, now)
}

/// A registration of `name` that `authorizer` allowed with a touch.
fn start_authorized(
    approver: &Approver,
    authorizer: &mut SoftToken,
    name: &str,
    now: SystemTime,
) -> (CeremonyId, CreationChallengeResponse) {
    let approval = approve(approver, authorizer, key_add_role(name), now).unwrap();
    approver
        .start_registration_authorized(name, approval, Lead::default(), now)
        .unwrap()
}

/// Removes key `name` with a touch of `authorizer`.
fn remove(
    approver: &Approver,
    authorizer: &mut SoftToken,
    name: &str,
    force: bool,
) -> Result<(), ApprovalError> {
    approver.check_removal(name, force)?;
    let approval = approve(approver, authorizer, key_remove_role(name, force), t0())?;
    approver.remove_key(name, force, approval)
}

/// Starts an approval for `role` and has `token` answer it from `at`.
fn assertion(
    approver: &Approver,
    token: &mut SoftToken,
    role: impl Into<super::Purpose>,
    at: &str,
    now: SystemTime,
) -> (CeremonyId, PublicKeyCredential) {
    let (id, rcr) = approver.start_approval(role, now).unwrap();
    (id, token.do_authentication(origin(at), rcr).unwrap())
}

fn approve(
    approver: &Approver,
    token: &mut SoftToken,
    role: impl Into<super::Purpose>,
    now: SystemTime,
) -> Result<Approval, ApprovalError> {
    let purpose: super::Purpose = role.into();
    let (id, cred) = assertion(approver, token, &purpose, ORIGIN, now);
    approver.finish_approval(id, &purpose, &cred, now)
}

fn code<T>(result: Result<T, ApprovalError>) -> &'static str {
    match result {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.code(),
    }
}

/// An approver with one registered soft key called "yubi".
fn setup(dir: &Path) -> (Approver, SoftToken) {
    let approver = Approver::loading(permissive(), dir, PORT, t0()).unwrap();
    let (mut token, _) = token(false);
    register(&approver, &mut token, "yubi", t0()).unwrap();
    (approver, token)
}

#[test]
fn approver_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Approver>();
    check::<Approval>();
}

#[test]
fn register_then_approve_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let approver = Approver::loading(permissive(), dir.path(), PORT, t0()).unwrap();
    assert_eq!(code(approver.start_approval("prod", t0())), "no_keys");

    let (mut token, _) = token(false);
    let info = register(&approver, &mut token, "yubi", t0()).unwrap();
    assert_eq!(info.name, "yubi");
    assert_eq!(info.kind, AuthenticatorKind::Software);
    assert_eq!(info.aaguid, Some(KNOWN_SOFTWARE_AAGUIDS[0].0));
    assert_eq!(info.attestation_format, "packed");
    assert_eq!(
        (info.counter, info.last_used, info.created),
        (0, None, 1_700_000_000)
    );
    assert!(!info.user_verified);

    let later = t0() + secs(30);
    let approval = approve(&approver, &mut token, "prod", later).unwrap();
    assert_eq!(approval.role(), "prod");
    assert_eq!(approval.key_name(), "yubi");
    assert_eq!(approval.approved_at(), later);
    let keys = approver.keys();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].counter, 1);
    assert_eq!(keys[0].last_used, Some(1_700_000_030));

    // Only the agent's own origin: not the default port, not another one.
    for other in ["http://localhost", "http://localhost:38212"] {
        let (id, cred) = assertion(&approver, &mut token, "dev", other, later);
        assert_eq!(
            code(approver.finish_approval(id, "dev", &cred, later)),
            "origin_refused",
            "{other}"
        );
    }
    let _ = approve(&approver, &mut token, "dev", later + secs(10)).unwrap();
    assert_eq!(approver.failure_delay(), Duration::ZERO);
}

#[test]
fn a_ceremony_is_single_use() {
    let dir = tempfile::tempdir().unwrap();
    let (approver, mut token) = setup(dir.path());
    let (id, cred) = assertion(&approver, &mut token, "prod", ORIGIN, t0());
    let _ = approver.finish_approval(id, "prod", &cred, t0()).unwrap();
    assert_eq!(
        code(approver.finish_approval(id, "prod", &cred, t0())),
        "unknown_ceremony"
    );

    // The same assertion against a fresh ceremony fails: its challenge is different.
    let (other, _) = approver.start_approval("prod", t0()).unwrap();
    assert_eq!(
        code(approver.finish_approval(other, "prod", &cred, t0())),
        "assertion_invalid"
    );
}

#[test]
fn a_touch_for_one_role_cannot_open_another() {
    let dir = tempfile::tempdir().unwrap();
    let (approver, mut token) = setup(dir.path());
    let (id, cred) = assertion(&approver, &mut token, "dev", ORIGIN, t0());
    let err = approver
        .finish_approval(id, "prod", &cred, t0())
        .unwrap_err();
    assert_eq!(err.code(), "role_mismatch");
    assert!(err.to_string().contains("for role dev, not prod"), "{err}");
    // The ceremony is gone: not even the right role can use it now.
    assert_eq!(
        code(approver.finish_approval(id, "dev", &cred, t0())),
        "unknown_ceremony"
    );
}

#[test]
fn challenges_expire_after_60_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let (approver, mut token) = setup(dir.path());
    let (id, cred) = assertion(&approver, &mut token, "prod", ORIGIN, t0());
    assert_eq!(
        code(approver.finish_approval(id, "prod", &cred, t0() + secs(61))),
        "challenge_expired"
    );
    assert_eq!(
        code(approver.finish_approval(id, "prod", &cred, t0())),
        "unknown_ceremony"
    );

    let (id, cred) = assertion(&approver, &mut token, "prod", ORIGIN, t0());
    let _ = approver
        .finish_approval(id, "prod", &cred, t0() + secs(59))
        .unwrap();

    let (id, ccr) = start_authorized(&approver, &mut token, "late", t0());
    let reg = token.do_registration(origin(ORIGIN), ccr).unwrap();
    assert_eq!(
        code(approver.finish_registration(id, &reg, t0() + secs(61))),
        "challenge_expired"
    );
}

#[test]
fn foreign_origins_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (approver, mut token) = setup(dir.path());
    // The soft client accepts these (https, RP ID suffix), the relying party must not.
    for foreign in [
        "https://evil.localhost",
        "https://localhost:38211",
        // Another port of localhost: another local web server, not the agent's page.
        "http://localhost:38212",
    ] {
        let (id, cred) = assertion(&approver, &mut token, "prod", foreign, t0());
        let err = approver
            .finish_approval(id, "prod", &cred, t0())
            .unwrap_err();
        assert_eq!(err.code(), "origin_refused", "{foreign}");
        assert!(err.to_string().contains(foreign), "{err}");
    }
    // The soft client refuses plain-http origins other than localhost; forge one instead.
    let (id, mut cred) = assertion(&approver, &mut token, "prod", ORIGIN, t0());
    let mut client_data: serde_json::Value =
        serde_json::from_slice(&cred.response.client_data_json).unwrap();
    client_data["origin"] = "http://127.0.0.1:38211".into();
    cred.response.client_data_json = serde_json::to_vec(&client_data).unwrap();
    assert_eq!(
        code(approver.finish_approval(id, "prod", &cred, t0())),
        "origin_refused"
    );

    // Registration checks the origin too.
    let (id, ccr) = start_authorized(&approver, &mut token, "evil", t0());
    let reg = token
        .do_registration(origin("https://evil.localhost"), ccr)
        .unwrap();
    assert_eq!(
        code(approver.finish_registration(id, &reg, t0())),
        "origin_refused"
    );
    assert_eq!(approver.keys().len(), 1);
}

#[test]
fn a_cloned_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (approver, mut live) = setup(dir.path());
    let mut snapshot = clone_token(&live);
    let _ = approve(&approver, &mut live, "prod", t0()).unwrap();
    let err = approve(&approver, &mut snapshot, "prod", t0()).unwrap_err();
    assert_eq!(err.code(), "counter_regression");
    assert!(err.to_string().contains("yubi"), "{err}");
    assert!(approver.failure_delay() > Duration::ZERO);
    // The genuine key keeps working.
    let _ = approve(&approver, &mut live, "prod", t0()).unwrap();
}

#[test]
fn a_clone_answering_an_older_pending_ceremony_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (approver, mut live) = setup(dir.path());
    let mut snapshot = clone_token(&live);
    // Both ceremonies snapshot counter 0; the live key then moves the stored counter to 1.
    let (old_id, old_rcr) = approver.start_approval("prod", t0()).unwrap();
    let _ = approve(&approver, &mut live, "prod", t0()).unwrap();
    // The clone signs with counter 1: above the old ceremony's snapshot, not above the store.
    let cred = snapshot.do_authentication(origin(ORIGIN), old_rcr).unwrap();
    assert_eq!(
        code(approver.finish_approval(old_id, "prod", &cred, t0())),
        "counter_regression"
    );
}

#[test]
fn key_store_survives_reload_and_is_private() {
    let dir = tempfile::tempdir().unwrap();
    let (approver, mut token) = setup(dir.path());
    let _ = approve(&approver, &mut token, "prod", t0() + secs(5)).unwrap();
    let before = approver.keys();
    drop(approver);

    let path = dir.path().join(KEYS_FILE);
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let approver = Approver::loading(permissive(), dir.path(), PORT, t0()).unwrap();
    assert_eq!(approver.keys(), before);
    assert_eq!(before[0].counter, 1);
    // The reloaded counter still catches a replayed old state.
    let mut stale = clone_token(&token);
    let _ = approve(&approver, &mut token, "prod", t0()).unwrap();
    assert_eq!(
        code(approve(&approver, &mut stale, "prod", t0())),
        "counter_regression"
    );
}

#[test]
fn a_truncated_key_store_is_an_error_not_an_empty_store() {
    let dir = tempfile::tempdir().unwrap();
    let (approver, _token) = setup(dir.path());
    drop(approver);
    let path = dir.path().join(KEYS_FILE);
    let full = fs::read(&path).unwrap();
    fs::write(&path, &full[..full.len() / 2]).unwrap();
    let err = Approver::loading(permissive(), dir.path(), PORT, t0())
        .err()
        .unwrap();
    assert_eq!(err.code(), "state_corrupt");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
    assert_eq!(fs::read(&path).unwrap(), &full[..full.len() / 2]);
}

#[test]
fn removing_keys() {
    let dir = tempfile::tempdir().unwrap();
    let (approver, mut token) = setup(dir.path());
    assert_eq!(code(approver.check_removal("yubi", false)), "last_key");
    assert_eq!(code(approver.check_removal("nope", true)), "unknown_key");

    // Without a touch for that very removal, nothing is removed.
    let wrong = approve(&approver, &mut token, "prod", t0()).unwrap();
    assert_eq!(
        code(approver.remove_key("yubi", true, wrong)),
        "not_authorized"
    );
    let not_forced = approve(&approver, &mut token, key_remove_role("yubi", false), t0()).unwrap();
    assert_eq!(
        code(approver.remove_key("yubi", true, not_forced)),
        "not_authorized",
        "a touch for a plain removal does not allow removing the last key"
    );
    assert_eq!(approver.keys().len(), 1);

    // A second key needs a touch of the first.
    let (mut second, _) = super::tests::token(false);
    assert_eq!(
        code(register(&approver, &mut second, "spare", t0())),
        "not_authorized"
    );
    add_key(&approver, &mut token, &mut second, "spare", t0()).unwrap();
    // A touch pending while its key is removed does not approve anything.
    let (id, cred) = assertion(&approver, &mut token, "prod", ORIGIN, t0());
    remove(&approver, &mut second, "yubi", false).unwrap();
    assert_eq!(
        code(approver.finish_approval(id, "prod", &cred, t0())),
        "assertion_invalid"
    );
    let _ = approve(&approver, &mut second, "prod", t0()).unwrap();

    remove(&approver, &mut second, "spare", true).unwrap();
    assert!(approver.keys().is_empty());
    assert_eq!(code(approver.start_approval("prod", t0())), "no_keys");
    let reloaded = Approver::loading(permissive(), dir.path(), PORT, t0()).unwrap();
    assert!(reloaded.keys().is_empty());
}

#[test]
fn software_authenticators_are_refused_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let strict = Approver::loading(ApprovalPolicy::default(), dir.path(), PORT, t0()).unwrap();
    let (mut token, _) = token(true);
    let err = register(&strict, &mut token, "soft", t0()).unwrap_err();
    assert_eq!(err.code(), "software_authenticator_refused");
    assert!(err.to_string().contains("SoftToken"), "{err}");
    assert!(strict.keys().is_empty());
    assert!(!dir.path().join(KEYS_FILE).exists());

    let lenient = Approver::loading(permissive(), dir.path(), PORT, t0()).unwrap();
    register(&lenient, &mut token, "soft", t0()).unwrap();
    let _ = approve(&lenient, &mut token, "prod", t0()).unwrap();

    // Tightening the policy later disables the software key for approvals.
    let strict = Approver::loading(ApprovalPolicy::default(), dir.path(), PORT, t0()).unwrap();
    let err = strict.start_approval("prod", t0()).unwrap_err();
    assert_eq!(err.code(), "no_eligible_keys");
    assert!(
        err.to_string().contains("soft: software authenticator"),
        "{err}"
    );
}

#[test]
fn a_policy_no_registered_key_satisfies_is_told_before_it_applies() {
    let dir = tempfile::tempdir().unwrap();
    let lenient = Approver::loading(permissive(), dir.path(), PORT, t0()).unwrap();
    // No key yet: no policy can lock anyone out.
    let strict = lenient
        .prepare_policy(&ApprovalPolicy::default(), t0())
        .unwrap();
    assert_eq!(lenient.locks_out(&strict), None);
    let (mut token, _) = token(true);
    register(&lenient, &mut token, "soft", t0()).unwrap();
    let why = lenient
        .locks_out(&strict)
        .expect("the only key is software");
    assert!(why.contains("soft: software authenticator"), "{why}");
    let same = lenient.prepare_policy(&permissive(), t0()).unwrap();
    assert_eq!(lenient.locks_out(&same), None);
    // Nothing was put in force by asking.
    let _ = approve(&lenient, &mut token, "prod", t0()).unwrap();
}

fn write_ca(dir: &Path, name: &str, pem: &str) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, pem).unwrap();
    path
}

#[test]
fn attestation_ca_list_admits_only_attested_keys() {
    let dir = tempfile::tempdir().unwrap();
    let (mut trusted, trusted_ca) = token(false);
    let (mut other, _) = token(false);
    let (_, unrelated_ca) = token(false);
    // A bundle of two CAs, one of them the trusted token's.
    let bundle = write_ca(
        dir.path(),
        "cas.pem",
        &format!("{unrelated_ca}{trusted_ca}"),
    );
    let policy = ApprovalPolicy {
        attestation_ca: vec![bundle],
        ..permissive()
    };
    let state = dir.path().join("state");
    let approver = Approver::loading(policy.clone(), &state, PORT, t0()).unwrap();
    let err = register(&approver, &mut other, "other", t0()).unwrap_err();
    assert_eq!(err.code(), "attestation_untrusted", "{err}");
    let info = register(&approver, &mut trusted, "trusted", t0()).unwrap();
    // A known software AAGUID stays software even when a configured CA vouches for it.
    assert_eq!(info.kind, AuthenticatorKind::Software);
    let _ = approve(&approver, &mut trusted, "prod", t0()).unwrap();

    // Software is still refused when not allowed, CA or not.
    let strict = Approver::loading(
        ApprovalPolicy {
            allow_software_authenticators: false,
            ..policy
        },
        &dir.path().join("strict"),
        PORT,
        t0(),
    )
    .unwrap();
    assert_eq!(
        code(register(&strict, &mut trusted, "t", t0())),
        "software_authenticator_refused"
    );

    // A key registered without a CA list is not eligible once one is configured.
    let open_state = dir.path().join("open");
    let open = Approver::loading(permissive(), &open_state, PORT, t0()).unwrap();
    register(&open, &mut other, "other", t0()).unwrap();
    let only_trusted = ApprovalPolicy {
        attestation_ca: vec![write_ca(dir.path(), "one.pem", &trusted_ca)],
        ..permissive()
    };
    let closed = Approver::loading(only_trusted, &open_state, PORT, t0()).unwrap();
    let err = closed.start_approval("prod", t0()).unwrap_err();
    assert_eq!(err.code(), "no_eligible_keys");
    assert!(err.to_string().contains("not attested"), "{err}");
}

#[test]
fn required_user_verification() {
    let dir = tempfile::tempdir().unwrap();
    let policy = ApprovalPolicy {
        user_verification: UserVerification::Required,
        ..permissive()
    };
    let approver = Approver::loading(policy.clone(), dir.path(), PORT, t0()).unwrap();
    // A token that cannot verify users refuses to create the credential...
    let (mut touch_only, _) = token(false);
    let (_, ccr) = approver.start_registration("touch", t0()).unwrap();
    assert!(touch_only.do_registration(origin(ORIGIN), ccr).is_err());
    // ...and a client that drops the requirement gets its touch-only credential refused.
    let (id, mut ccr) = approver.start_registration("touch", t0()).unwrap();
    ccr.public_key.authenticator_selection = None;
    let reg = touch_only.do_registration(origin(ORIGIN), ccr).unwrap();
    assert_eq!(
        code(approver.finish_registration(id, &reg, t0())),
        "user_not_verified"
    );
    assert!(approver.keys().is_empty());

    let (mut uv, uv_ca) = token(true);
    let info = register(&approver, &mut uv, "pin", t0()).unwrap();
    assert!(info.user_verified);
    let _ = approve(&approver, &mut uv, "prod", t0()).unwrap();

    // With a CA list the attested-passkey flow runs; it verifies the user as well.
    let attested = ApprovalPolicy {
        attestation_ca: vec![write_ca(dir.path(), "ca.pem", &uv_ca)],
        ..policy
    };
    let approver = Approver::loading(attested, &dir.path().join("attested"), PORT, t0()).unwrap();
    register(&approver, &mut uv, "pin", t0()).unwrap();
    let _ = approve(&approver, &mut uv, "prod", t0()).unwrap();
}

#[test]
fn keys_are_moved_to_user_verification_when_the_policy_requires_it() {
    let dir = tempfile::tempdir().unwrap();
    let (approver, mut token) = setup(dir.path());
    drop(approver);
    let required = ApprovalPolicy {
        user_verification: UserVerification::Required,
        ..permissive()
    };
    let approver = Approver::loading(required, dir.path(), PORT, t0()).unwrap();
    // The touch-only soft token answers with user presence only; that is refused.
    let err = approve(&approver, &mut token, "prod", t0()).unwrap_err();
    assert_eq!(err.code(), "user_not_verified");
    assert!(err.to_string().contains("set a PIN"), "{err}");
}

#[test]
fn names_and_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let (approver, mut token) = setup(dir.path());
    assert_eq!(
        code(approver.start_registration("yubi", t0())),
        "key_exists"
    );
    for bad in ["", "  ", "a\nb", &"x".repeat(65)] {
        assert_eq!(
            code(approver.start_registration(bad, t0())),
            "invalid_name",
            "{bad:?}"
        );
    }
    assert_eq!(code(approver.start_approval("", t0())), "invalid_name");

    // Two registrations racing for one name: the second to finish loses.
    let (a, ccr_a) = start_authorized(&approver, &mut token, "twin", t0());
    let (b, ccr_b) = start_authorized(&approver, &mut token, "twin", t0());
    let reg_a = token.do_registration(origin(ORIGIN), ccr_a).unwrap();
    let reg_b = token.do_registration(origin(ORIGIN), ccr_b).unwrap();
    approver.finish_registration(a, &reg_a, t0()).unwrap();
    assert_eq!(
        code(approver.finish_registration(b, &reg_b, t0())),
        "key_exists"
    );

    // A registration ceremony cannot finish an approval, nor the reverse.
    let (reg_id, _) = start_authorized(&approver, &mut token, "third", t0());
    let (id, cred) = assertion(&approver, &mut token, "prod", ORIGIN, t0());
    assert_eq!(
        code(approver.finish_approval(reg_id, "prod", &cred, t0())),
        "unknown_ceremony"
    );
    assert_eq!(
        code(approver.finish_registration(id, &reg_a, t0())),
        "unknown_ceremony"
    );
}

#[test]
fn failures_grow_the_delay_and_success_resets_it() {
    let dir = tempfile::tempdir().unwrap();
    let (approver, mut token) = setup(dir.path());
    let (_, cred) = assertion(&approver, &mut token, "prod", ORIGIN, t0());
    let mut last = Duration::ZERO;
    for _ in 0..3 {
        let (id, _) = approver.start_approval("prod", t0()).unwrap();
        assert!(approver.finish_approval(id, "prod", &cred, t0()).is_err());
        assert!(approver.failure_delay() > last);
        last = approver.failure_delay();
    }
    assert_eq!(last, Duration::from_secs(1));
    let _ = approve(&approver, &mut token, "prod", t0()).unwrap();
    assert_eq!(approver.failure_delay(), Duration::ZERO);
}

#[test]
fn outstanding_ceremonies_are_capped_and_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let (approver, mut token) = setup(dir.path());
    for _ in 0..MAX_CEREMONIES {
        approver.start_approval("prod", t0()).unwrap();
    }
    assert_eq!(
        code(approver.start_approval("prod", t0())),
        "too_many_ceremonies"
    );
    assert_eq!(
        code(approver.start_registration("more", t0())),
        "too_many_ceremonies"
    );
    assert_eq!(approver.lock().ceremonies.len(), MAX_CEREMONIES);
    let later = t0() + secs(61);
    let _ = approve(&approver, &mut token, "prod", later).unwrap();
    assert_eq!(approver.lock().ceremonies.len(), 0);
}

#[test]
fn test_approvals_exist_only_for_tests() {
    let a = Approval::for_tests_at("prod", t0());
    assert_eq!(
        (a.role(), a.key_name(), a.approved_at()),
        ("prod", "test-key", t0())
    );
    assert_eq!(Approval::for_tests("dev").role(), "dev");
}

#[test]
fn credentials_convert_between_flows() {
    let dir = tempfile::tempdir().unwrap();
    let (approver, _token) = setup(dir.path());
    let inner = approver.lock();
    let key = &inner.store.records[0].credential;
    let passkey: webauthn_rs::prelude::Passkey = rp::convert(key).unwrap();
    let back: webauthn_rs::prelude::SecurityKey = rp::convert(&passkey).unwrap();
    assert_eq!(
        serde_json::to_value(key).unwrap(),
        serde_json::to_value(&back).unwrap()
    );
}

#[test]
fn a_registration_is_authorized_when_it_commits() {
    let dir = tempfile::tempdir().unwrap();
    let approver = Approver::loading(permissive(), dir.path(), PORT, t0()).unwrap();
    let (mut mine, _) = token(false);
    let (mut theirs, _) = token(false);
    // Two first-key registrations race while no key exists; the second loses at commit.
    let (a, ccr_a) = approver.start_registration("mine", t0()).unwrap();
    let (b, ccr_b) = approver.start_registration("theirs", t0()).unwrap();
    let reg_a = mine.do_registration(origin(ORIGIN), ccr_a).unwrap();
    let reg_b = theirs.do_registration(origin(ORIGIN), ccr_b).unwrap();
    approver.finish_registration(a, &reg_a, t0()).unwrap();
    assert_eq!(
        code(approver.finish_registration(b, &reg_b, t0())),
        "not_authorized"
    );
    assert_eq!(approver.keys().len(), 1);

    // Once a key exists, an unauthorized start is refused, and an approval for another
    // purpose does not authorize a registration.
    assert_eq!(
        code(approver.start_registration("theirs", t0())),
        "not_authorized"
    );
    let for_a_role = approve(&approver, &mut mine, "prod", t0()).unwrap();
    assert_eq!(
        code(approver.start_registration_authorized("theirs", for_a_role, Lead::default(), t0())),
        "not_authorized"
    );
    let for_another_name = approve(&approver, &mut mine, key_add_role("other"), t0()).unwrap();
    assert_eq!(
        code(approver.start_registration_authorized(
            "theirs",
            for_another_name,
            Lead::default(),
            t0()
        )),
        "not_authorized"
    );
    add_key(&approver, &mut mine, &mut theirs, "theirs", t0()).unwrap();
    assert_eq!(approver.keys().len(), 2);
}

#[test]
fn nobody_follows_a_key_change() {
    let dir = tempfile::tempdir().unwrap();
    let (approver, _token) = setup(dir.path());
    let lead = |conn| Lead {
        conn,
        requester: "t".into(),
        ..Lead::default()
    };
    let role = key_add_role("new");
    assert!(matches!(
        approver.open_or_join(&role, lead(1), t0()).unwrap(),
        Begin::Lead(..)
    ));
    assert_eq!(
        code(approver.open_or_join(&role, lead(2), t0())),
        "key_change_pending"
    );
    // One touch at a time: no other approval while the key change waits for its touch.
    assert_eq!(code(approver.open_or_join("prod", lead(3), t0())), "busy");
    approver.abandon_conn(1);
    // A role, by contrast, is followed.
    assert!(matches!(
        approver.open_or_join("prod", lead(1), t0()).unwrap(),
        Begin::Lead(..)
    ));
    assert!(matches!(
        approver.open_or_join("prod", lead(2), t0()).unwrap(),
        Begin::Follow(_)
    ));
}

#[tokio::test]
async fn one_approval_at_a_time_and_the_next_is_woken() {
    let dir = tempfile::tempdir().unwrap();
    let (approver, mut token) = setup(dir.path());
    let lead = |conn| Lead {
        conn,
        requester: "t".into(),
        ..Lead::default()
    };
    let Begin::Lead(dev, options) = approver.open_or_join("dev", lead(1), t0()).unwrap() else {
        panic!("first caller must lead")
    };
    assert_eq!(code(approver.open_or_join("prod", lead(2), t0())), "busy");
    // The waiter for prod is woken when dev's ceremony ends, and then leads.
    let ended = approver.ceremony_ended();
    let woken = ended.notified();
    tokio::pin!(woken);
    woken.as_mut().enable();
    let rcr = serde_json::from_value(options).unwrap();
    let cred = token.do_authentication(origin(ORIGIN), rcr).unwrap();
    let _ = approver.finish_approval(dev, "dev", &cred, t0()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), woken)
        .await
        .expect("the end of a ceremony wakes the next in line");
    assert!(matches!(
        approver.open_or_join("prod", lead(2), t0()).unwrap(),
        Begin::Lead(..)
    ));
}

/// The purpose of a touch that allows adding the key `name`.
pub(super) fn key_add_role(name: &str) -> super::Purpose {
    super::Purpose::KeyAdd(name.to_owned())
}

/// The purpose of a touch that allows removing the key `name`.
pub(super) fn key_remove_role(name: &str, force: bool) -> super::Purpose {
    super::Purpose::KeyRemove {
        name: name.to_owned(),
        force,
    }
}

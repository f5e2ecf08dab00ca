//! The PRF contract end to end: the agent's options JSON → the CTAP2 client → the soft CTAP2
//! device → the answer JSON, verified by a real webauthn-rs relying party set up like the
//! agent's (RP ID `localhost`, origin `http://localhost:PORT`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value as Json};
use uuid::Uuid;
use webauthn_authenticator_rs::prelude::Url;
use webauthn_rs::prelude::{
    Passkey, PublicKeyCredential, RegisterPublicKeyCredential, SecurityKey, Webauthn,
    WebauthnBuilder,
};

use super::ctap::prf;
use super::soft::{SoftAuthenticator, SoftError, SoftOptions};

fn relying_party() -> Webauthn {
    let origin = Url::parse("http://localhost").unwrap();
    WebauthnBuilder::new("localhost", &origin)
        .unwrap()
        .allow_any_port(true)
        .danger_set_user_presence_only_security_keys(true)
        .build()
        .unwrap()
}

fn origin() -> Url {
    Url::parse("http://localhost:41234").unwrap()
}

/// Registers through the JSON path, with `prf: {}` when `with_prf`; returns the key and the
/// answer JSON.
fn register(rp: &Webauthn, soft: &mut SoftAuthenticator, with_prf: bool) -> (SecurityKey, Json) {
    let (ccr, state) = rp
        .start_securitykey_registration(Uuid::new_v4(), "u", "u", None, None, None)
        .unwrap();
    let mut options = serde_json::to_value(&ccr).unwrap();
    if with_prf {
        options["publicKey"]["extensions"]["prf"] = json!({});
    }
    let (typed, want) = prf::parse_registration(&options).unwrap();
    assert_eq!(want, with_prf);
    let (cred, enabled) = soft.register_with_prf(&origin(), typed, want).unwrap();
    let answer = prf::registration_answer(&cred, enabled).unwrap();
    let parsed: RegisterPublicKeyCredential = serde_json::from_value(answer.clone()).unwrap();
    (
        rp.finish_securitykey_registration(&parsed, &state).unwrap(),
        answer,
    )
}

/// Authenticates through the JSON path with `prf` as `publicKey.extensions.prf`; returns the
/// RP's counter and the answer JSON.
fn authenticate(
    rp: &Webauthn,
    soft: &mut SoftAuthenticator,
    keys: &[SecurityKey],
    prf_ext: Option<Json>,
) -> (u32, Json) {
    let (rcr, state) = rp.start_securitykey_authentication(keys).unwrap();
    let mut options = serde_json::to_value(&rcr).unwrap();
    if let Some(p) = prf_ext {
        options["publicKey"]["extensions"]["prf"] = p;
    }
    let (typed, inputs) = prf::parse_authentication(&options).unwrap();
    let (cred, output) = soft
        .authenticate_with_prf(&origin(), typed, inputs)
        .unwrap();
    let answer = prf::authentication_answer(&cred, output.as_deref()).unwrap();
    let parsed: PublicKeyCredential = serde_json::from_value(answer.clone()).unwrap();
    let result = rp
        .finish_securitykey_authentication(&parsed, &state)
        .unwrap();
    (result.counter(), answer)
}

fn b64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

fn by_credential(key: &SecurityKey, input: &[u8]) -> Json {
    let mut m = serde_json::Map::new();
    m.insert(b64(key.cred_id()), json!({ "first": b64(input) }));
    json!({ "evalByCredential": m })
}

/// The 32-byte PRF output in an answer.
fn output(answer: &Json) -> Vec<u8> {
    let first = answer["clientExtensionResults"]["prf"]["results"]["first"]
        .as_str()
        .unwrap_or_else(|| panic!("no prf output in {answer}"));
    let bytes = URL_SAFE_NO_PAD.decode(first).unwrap();
    assert_eq!(bytes.len(), 32);
    bytes
}

fn flags(answer: &Json) -> u8 {
    let ad = URL_SAFE_NO_PAD
        .decode(answer["response"]["authenticatorData"].as_str().unwrap())
        .unwrap();
    ad[32]
}

#[test]
fn registration_reports_prf_enabled_and_the_rp_accepts_it() {
    let dir = tempfile::tempdir().unwrap();
    let rp = relying_party();
    let mut soft = SoftAuthenticator::open_or_create(&dir.path().join("t")).unwrap();
    let (_key, answer) = register(&rp, &mut soft, true);
    assert_eq!(
        answer["clientExtensionResults"]["prf"],
        json!({ "enabled": true })
    );
    assert!(answer.get("extensions").is_none(), "{answer}");
    // Without prf in the options, the answer is what it was before: no prf anywhere.
    let (_key, answer) = register(&rp, &mut soft, false);
    assert!(answer.get("clientExtensionResults").is_none(), "{answer}");
    assert!(!answer.to_string().contains("prf"), "{answer}");
}

#[test]
fn prf_outputs_are_stable_per_credential_and_input() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t");
    let rp = relying_party();
    let mut soft = SoftAuthenticator::open_or_create(&path).unwrap();
    let (a, _) = register(&rp, &mut soft, true);
    let (b, _) = register(&rp, &mut soft, true);
    let one = std::slice::from_ref(&a);

    let (c1, ans) = authenticate(&rp, &mut soft, one, Some(by_credential(&a, b"input 1")));
    let first = output(&ans);
    assert_eq!(c1, 1);
    let (c2, ans) = authenticate(&rp, &mut soft, one, Some(by_credential(&a, b"input 1")));
    assert_eq!(
        output(&ans),
        first,
        "same credential and input, same output"
    );
    assert_eq!(c2, 2);
    // eval applies when no evalByCredential entry names the credential.
    let eval = json!({ "eval": { "first": b64(b"input 1") } });
    let (_, ans) = authenticate(&rp, &mut soft, one, Some(eval));
    assert_eq!(output(&ans), first);
    // evalByCredential wins over eval.
    let mut both = by_credential(&a, b"input 2");
    both["eval"] = json!({ "first": b64(b"input 1") });
    let (_, ans) = authenticate(&rp, &mut soft, one, Some(both));
    let second = output(&ans);
    assert_ne!(second, first, "a different input gives a different output");
    let (_, ans) = authenticate(
        &rp,
        &mut soft,
        std::slice::from_ref(&b),
        Some(by_credential(&b, b"input 1")),
    );
    assert_ne!(
        output(&ans),
        first,
        "a different credential gives a different output"
    );
    drop(soft);

    // Reopening the file: same output, and the counter went on from disk.
    let mut soft = SoftAuthenticator::open(&path).unwrap();
    let (c, ans) = authenticate(&rp, &mut soft, one, Some(by_credential(&a, b"input 1")));
    assert_eq!(output(&ans), first);
    assert_eq!(c, 5);

    // Without prf in the options: no extension output.
    let (_, ans) = authenticate(&rp, &mut soft, one, None);
    assert!(!ans.to_string().contains("prf"), "{ans}");
}

#[test]
fn per_credential_inputs_follow_the_credential_the_device_holds() {
    let dir = tempfile::tempdir().unwrap();
    let rp = relying_party();
    let mut mine = SoftAuthenticator::open_or_create(&dir.path().join("mine")).unwrap();
    let mut other = SoftAuthenticator::open_or_create(&dir.path().join("other")).unwrap();
    let (a, _) = register(&rp, &mut mine, true);
    let (b, _) = register(&rp, &mut other, true);
    let (_, ans) = authenticate(
        &rp,
        &mut mine,
        std::slice::from_ref(&a),
        Some(by_credential(&a, b"for a")),
    );
    let expected = output(&ans);
    // Both keys allowed, each with its own input: the device holds `a`, so `a`'s input is used
    // (found by a silent pre-flight).
    let mut inputs = by_credential(&a, b"for a");
    inputs["evalByCredential"][b64(b.cred_id())] = json!({ "first": b64(b"for b") });
    let (_, ans) = authenticate(&rp, &mut mine, &[b.clone(), a.clone()], Some(inputs));
    assert_eq!(output(&ans), expected);
    assert_eq!(ans["id"], json!(b64(a.cred_id())));
}

#[test]
fn user_verification_is_claimed_only_when_created_to() {
    let dir = tempfile::tempdir().unwrap();
    let rp = relying_party();
    let claiming = SoftOptions {
        claim_user_verification: true,
        pin: None,
    };
    let mut uv = SoftAuthenticator::create(&dir.path().join("uv"), claiming).unwrap();
    let mut plain = SoftAuthenticator::open_or_create(&dir.path().join("plain")).unwrap();

    // A relying party that requires user verification (the agent's passkey path).
    let (ccr, state) = rp
        .start_passkey_registration(Uuid::new_v4(), "u", "u", None)
        .unwrap();
    let reg = uv.register(&origin(), ccr).unwrap();
    let passkey: Passkey = rp.finish_passkey_registration(&reg, &state).unwrap();
    let (rcr, state) = rp
        .start_passkey_authentication(std::slice::from_ref(&passkey))
        .unwrap();
    let cred = uv.authenticate(&origin(), rcr).unwrap();
    assert_ne!(cred.response.authenticator_data[32] & 0x04, 0, "UV flag");
    rp.finish_passkey_authentication(&cred, &state).unwrap();

    let (ccr, _state) = rp
        .start_passkey_registration(Uuid::new_v4(), "u", "u", None)
        .unwrap();
    let err = plain.register(&origin(), ccr).unwrap_err();
    assert!(matches!(err, SoftError::Unsupported(_)), "{err}");

    // Security keys (user verification discouraged): neither sets the UV flag.
    for soft in [&mut uv, &mut plain] {
        let (key, _) = register(&rp, soft, true);
        let (_, ans) = authenticate(
            &rp,
            soft,
            std::slice::from_ref(&key),
            Some(by_credential(&key, b"x")),
        );
        assert_eq!(flags(&ans) & 0x05, 0x01, "UP set, UV clear: {ans}");
    }
}

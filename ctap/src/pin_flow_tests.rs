//! The client's PIN path (clientPIN getKeyAgreement, getPinUvAuthTokenUsingPinWithPermissions
//! or getPINToken, pinUvAuthParam) against the soft device with a PIN set, verified by a
//! webauthn-rs relying party. USB keys with a PIN take this path.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::cell::Cell;
use std::rc::Rc;

use uuid::Uuid;
use webauthn_authenticator_rs::prelude::Url;
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_rs::prelude::{Webauthn, WebauthnBuilder};
use zeroize::Zeroizing;

use super::prf::PrfInputs;
use super::soft_device::SoftDevice;
use super::{CtapClient, CtapError};

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

/// A client whose PIN prompt answers `pin` and counts how often it was asked.
fn client(device: SoftDevice, pin: &'static str) -> (CtapClient<SoftDevice>, Rc<Cell<u32>>) {
    let asked = Rc::new(Cell::new(0));
    let count = asked.clone();
    let client = CtapClient::new(device).with_pin_callback(Box::new(move || {
        count.set(count.get() + 1);
        Some(Zeroizing::new(pin.to_owned()))
    }));
    (client, asked)
}

#[test]
fn pin_tokens_verify_the_user_with_both_token_commands() {
    for permissions in [true, false] {
        let rp = relying_party();
        let device = SoftDevice::new(false, [1; 16]).with_pin("1234", permissions);
        let (mut client, asked) = client(device, "1234");

        // The RP requires user verification: the client gets a token with the PIN.
        let (ccr, state) = rp
            .start_passkey_registration(Uuid::new_v4(), "u", "u", None)
            .unwrap();
        client.request_prf_on_create(true);
        let reg = client.do_registration(origin(), ccr).unwrap();
        assert_eq!(client.take_prf_enabled(), Some(true));
        let passkey = rp.finish_passkey_registration(&reg, &state).unwrap();
        assert_eq!(asked.get(), 1);

        let (rcr, state) = rp
            .start_passkey_authentication(std::slice::from_ref(&passkey))
            .unwrap();
        client.set_prf_inputs(Some(PrfInputs {
            eval: Some(b"in".to_vec()),
            ..Default::default()
        }));
        let cred = client.do_authentication(origin(), rcr).unwrap();
        assert_ne!(cred.response.authenticator_data[32] & 0x04, 0, "UV flag");
        assert!(client.take_prf_output().is_some());
        rp.finish_passkey_authentication(&cred, &state).unwrap();
        assert_eq!(asked.get(), 2);
    }
}

#[test]
fn a_registration_the_key_wants_a_pin_for_is_retried_with_it() {
    // Security-key registration (UV discouraged) on a key with a PIN: the key answers
    // PIN_REQUIRED, the client asks for the PIN once and retries.
    let rp = relying_party();
    let device = SoftDevice::new(false, [1; 16]).with_pin("1234", true);
    let (mut client, asked) = client(device, "1234");
    let (ccr, state) = rp
        .start_securitykey_registration(Uuid::new_v4(), "u", "u", None, None, None)
        .unwrap();
    let reg = client.do_registration(origin(), ccr).unwrap();
    let key = rp.finish_securitykey_registration(&reg, &state).unwrap();
    assert_eq!(asked.get(), 1);
    // Assertions with UV discouraged need no PIN.
    let (rcr, state) = rp
        .start_securitykey_authentication(std::slice::from_ref(&key))
        .unwrap();
    let cred = client.do_authentication(origin(), rcr).unwrap();
    rp.finish_securitykey_authentication(&cred, &state).unwrap();
    assert_eq!(asked.get(), 1);
}

#[test]
fn a_wrong_pin_is_refused() {
    let rp = relying_party();
    let device = SoftDevice::new(false, [1; 16]).with_pin("1234", true);
    let (mut client, _) = client(device, "4321");
    let (ccr, _state) = rp
        .start_passkey_registration(Uuid::new_v4(), "u", "u", None)
        .unwrap();
    assert!(client.do_registration(origin(), ccr).is_err());
    assert_eq!(client.take_error(), Some(CtapError::PinInvalid));
}

#[test]
fn a_touch_without_the_pin_gives_another_prf_output_than_one_with_it() {
    let rp = relying_party();
    let device = SoftDevice::new(false, [1; 16]).with_pin("1234", true);
    let (mut client, asked) = client(device, "1234");
    let (ccr, state) = rp
        .start_passkey_registration(Uuid::new_v4(), "u", "u", None)
        .unwrap();
    client.request_prf_on_create(true);
    let reg = client.do_registration(origin(), ccr).unwrap();
    let passkey = rp.finish_passkey_registration(&reg, &state).unwrap();
    let (rcr, _) = rp
        .start_passkey_authentication(std::slice::from_ref(&passkey))
        .unwrap();
    client.set_prf_inputs(Some(PrfInputs {
        eval: Some(b"point".to_vec()),
        ..Default::default()
    }));
    client.do_authentication(origin(), rcr).unwrap();
    let verified = client.take_prf_output().unwrap();
    let asked_before = asked.get();

    // What any program that reaches the key gets without its PIN: a stable output, another one.
    let id = passkey.cred_id().as_slice();
    let touch_only = client.prf_without_uv("localhost", id, b"point").unwrap();
    assert_eq!(asked.get(), asked_before, "no PIN asked");
    assert_ne!(*touch_only, *verified);
    assert_eq!(
        *client.prf_without_uv("localhost", id, b"point").unwrap(),
        *touch_only
    );
    assert_ne!(
        *client.prf_without_uv("localhost", id, b"other").unwrap(),
        *touch_only
    );
    assert_eq!(
        client
            .prf_without_uv("localhost", b"unknown", b"point")
            .unwrap_err(),
        CtapError::NoCredentials
    );
}

#[test]
fn a_soft_device_keeps_its_pin_across_saves() {
    let device = SoftDevice::new(false, [1; 16]).with_pin("1234", true);
    assert!(device.has_pin());
    let restored = SoftDevice::from_bytes(&device.to_bytes().unwrap(), [1; 16]).unwrap();
    assert!(restored.has_pin());
    // The restored device still wants that PIN, and only that one.
    let rp = relying_party();
    let (mut wrong, _) = client(restored, "9999");
    let (ccr, _) = rp
        .start_passkey_registration(Uuid::new_v4(), "u", "u", None)
        .unwrap();
    assert!(wrong.do_registration(origin(), ccr).is_err());
    assert_eq!(wrong.take_error(), Some(CtapError::PinInvalid));
    let plain = SoftDevice::new(false, [1; 16]);
    let restored = SoftDevice::from_bytes(&plain.to_bytes().unwrap(), [1; 16]).unwrap();
    assert!(!restored.has_pin());
}

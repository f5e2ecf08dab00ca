//! The soft device on its own: raw CTAP2 commands in, answers out.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::super::hmac_secret::HmacSecretSession;
use super::*;

fn register(dev: &mut SoftDevice, hmac: bool) -> Vec<u8> {
    let mut extensions = Map::new();
    if hmac {
        extensions.insert(cbor::text(EXTENSION), Value::Bool(true));
    }
    let req = MakeCredential {
        client_data_hash: vec![1; 32],
        rp_id: "localhost".into(),
        user_id: vec![1],
        algorithms: vec![ALG_ES256],
        extensions,
        ..Default::default()
    };
    let att = Attestation::decode(
        &dev.command(CMD_MAKE_CREDENTIAL, &req.encode().unwrap())
            .unwrap(),
    )
    .unwrap();
    let ad = AuthData::parse(&att.auth_data).unwrap();
    assert_eq!(ad.extension(EXTENSION).is_some(), hmac);
    ad.attested.unwrap().credential_id
}

fn assertion_with(dev: &mut SoftDevice, id: &[u8], ext: Value) -> Result<Vec<u8>, CtapError> {
    let mut extensions = Map::new();
    extensions.insert(cbor::text(EXTENSION), ext);
    let req = GetAssertion {
        rp_id: "localhost".into(),
        client_data_hash: vec![2; 32],
        allow_list: vec![id.to_vec()],
        extensions,
        ..Default::default()
    };
    dev.command(CMD_GET_ASSERTION, &req.encode().unwrap())
}

fn device_key(dev: &mut SoftDevice, protocol: PinUvProtocol) -> Value {
    let req = ClientPin {
        protocol: Some(protocol.number().into()),
        sub_command: CLIENT_PIN_GET_KEY_AGREEMENT,
        ..Default::default()
    };
    let m =
        cbor::decode_map(&dev.command(CMD_CLIENT_PIN, &req.encode().unwrap()).unwrap()).unwrap();
    cbor::get(&m, 1).unwrap().clone()
}

#[test]
fn tampered_salt_auth_is_refused() {
    for protocol in [PinUvProtocol::One, PinUvProtocol::Two] {
        let mut dev = SoftDevice::new(false, [0; 16]);
        let id = register(&mut dev, true);
        let key = device_key(&mut dev, protocol);
        let session = HmacSecretSession::new(protocol, &key).unwrap();
        let good = session.input(&[5; 32]).unwrap();
        let answer = assertion_with(&mut dev, &id, good.clone()).unwrap();
        let ad = AuthData::parse(&Assertion::decode(&answer).unwrap().auth_data).unwrap();
        let Some(Value::Bytes(enc)) = ad.extension(EXTENSION) else {
            panic!("no output")
        };
        let first = session.output(enc).unwrap();

        let Value::Map(mut bad) = good else {
            unreachable!()
        };
        let Some(Value::Bytes(auth)) = bad.get_mut(&cbor::int(3)) else {
            unreachable!()
        };
        auth[0] ^= 1;
        let err = assertion_with(&mut dev, &id, Value::Map(bad)).unwrap_err();
        assert_eq!(err, CtapError::PinAuthInvalid, "{protocol:?}");

        // The same salt through a new session (new platform key) gives the same output.
        let session2 = HmacSecretSession::new(protocol, &key).unwrap();
        let answer = assertion_with(&mut dev, &id, session2.input(&[5; 32]).unwrap()).unwrap();
        let ad = AuthData::parse(&Assertion::decode(&answer).unwrap().auth_data).unwrap();
        let Some(Value::Bytes(enc)) = ad.extension(EXTENSION) else {
            panic!("no output")
        };
        assert_eq!(*session2.output(enc).unwrap(), *first);
        // The refused request did not count.
        assert_eq!(ad.counter, 2);
    }
}

#[test]
fn state_round_trips_and_rejects_other_versions() {
    let mut dev = SoftDevice::new(true, [3; 16]);
    let id = register(&mut dev, false);
    let bytes = dev.to_bytes().unwrap();
    let back = SoftDevice::from_bytes(&bytes, [3; 16]).unwrap();
    assert!(back.claims_user_verification());
    assert_eq!(back.state.credentials[0].id, id);
    assert!(SoftDevice::from_bytes(b"junk", [3; 16]).is_none());
    let mut other = SoftDevice::new(false, [3; 16]);
    other.state.v = 2;
    assert!(SoftDevice::from_bytes(&other.to_bytes().unwrap(), [3; 16]).is_none());
}

#[test]
fn unknown_credentials_and_uv_without_claim_are_refused() {
    let mut dev = SoftDevice::new(false, [0; 16]);
    let req = GetAssertion {
        rp_id: "localhost".into(),
        client_data_hash: vec![2; 32],
        allow_list: vec![vec![9; 32]],
        ..Default::default()
    };
    let err = dev
        .command(CMD_GET_ASSERTION, &req.encode().unwrap())
        .unwrap_err();
    assert_eq!(err, CtapError::NoCredentials);
    let req = MakeCredential {
        client_data_hash: vec![1; 32],
        rp_id: "localhost".into(),
        algorithms: vec![ALG_ES256],
        uv: true,
        ..Default::default()
    };
    let err = dev
        .command(CMD_MAKE_CREDENTIAL, &req.encode().unwrap())
        .unwrap_err();
    assert_eq!(err, CtapError::UnsupportedOption);
    assert_eq!(dev.process(&[0x42]), vec![CTAP1_ERR_INVALID_COMMAND]);
}

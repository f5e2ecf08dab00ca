//! Known-answer tests for the PIN/UV protocols, hmac-secret and the PRF salt transform.
//!
//! - PIN/UV protocol one and two: the vectors webauthn-authenticator-rs 0.6.2 publishes in
//!   `src/ctap2/pin_uv.rs` (taken from python-fido2's `tests/test_ctap2.py` and mozilla
//!   authenticator-rs), run against this module's implementation.
//! - hmac-secret and PRF: computed independently with Python 3.11 `cryptography` 48 and
//!   `hashlib`/`hmac` (the script is reproduced in `hmac_secret_vectors` below).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_cbor_2::Value;

use super::cbor::{self, Map};
use super::hmac_secret::{prf_salt, HmacSecretSession};
use super::pin_uv::{sha256, KeyAgreement, PinUvProtocol};

fn h(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2));
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn cose(x: &str, y: &str) -> Value {
    let mut m = Map::new();
    m.insert(cbor::int(1), cbor::int(2));
    m.insert(cbor::int(3), cbor::int(-25));
    m.insert(cbor::int(-1), cbor::int(1));
    m.insert(cbor::int(-2), Value::Bytes(h(x)));
    m.insert(cbor::int(-3), Value::Bytes(h(y)));
    Value::Map(m)
}

/// python-fido2's authenticator key agreement key (test_ctap2.py).
fn fido2_device_key() -> Value {
    cose(
        "0501d5bc78da9252560a26cb08fcc60cbe0b6d3b8e1d1fcee514fac0af675168",
        "d551b3ed46f665731f95b4532939c25d91db7eb844bd96d4abd4083785f8df47",
    )
}

/// python-fido2's platform private key.
const FIDO2_PLATFORM_SCALAR: &str =
    "7452E599FEE739D8A653F6A507343D12D382249108A651402520B72F24FE7684";

#[test]
fn protocol_one_shared_secret_and_pin_hash_enc() {
    let platform = KeyAgreement::from_scalar(&h(FIDO2_PLATFORM_SCALAR)).unwrap();
    // The platform's public key is the published one.
    let Value::Map(pk) = platform.public_cose() else {
        panic!()
    };
    assert_eq!(
        pk.get(&cbor::int(-2)),
        Some(&Value::Bytes(h(
            "44D78D7989B97E62EA993496C9EF6E8FD58B8B00715F9A89153DDD9C4657E47F"
        )))
    );
    assert_eq!(
        pk.get(&cbor::int(-3)),
        Some(&Value::Bytes(h(
            "EC802EE7D22BD4E100F12E48537EB4E7E96ED3A47A0A3BD5F5EEAB65001664F9"
        )))
    );
    assert_eq!(pk.get(&cbor::int(3)), Some(&cbor::int(-25)));
    let shared = platform
        .shared_secret(PinUvProtocol::One, &fido2_device_key())
        .unwrap();
    assert_eq!(
        *shared,
        h("c42a039d548100dfba521e487debcbbb8b66bb7496f8b1862a7a395ed83e1a1c")
    );
    // getPINToken's pinHashEnc for "1234".
    let pin_hash = sha256(b"1234");
    let enc = PinUvProtocol::One
        .encrypt(&shared, &pin_hash[..16])
        .unwrap();
    assert_eq!(enc, h("afe8327ce416da8ee3d057589c2ce1a9"));
    assert_eq!(
        *PinUvProtocol::One.decrypt(&shared, &enc).unwrap(),
        pin_hash[..16]
    );
    // authenticate(sharedSecret, 0xff * 64): the first 16 bytes of HMAC-SHA-256.
    let tag = PinUvProtocol::One
        .authenticate(&shared, &[0xff; 64])
        .unwrap();
    assert_eq!(tag, h("b3016896074e5a8954e8e30569d23421"));
    assert!(PinUvProtocol::One.verify(&shared, &[0xff; 64], &tag));
    assert!(!PinUvProtocol::One.verify(&shared, &[0xfe; 64], &tag));
}

#[test]
fn protocol_one_encrypt_and_authenticate_new_pin() {
    // mozilla authenticator-rs, src/crypto/mod.rs (setPin with "1234").
    let shared = h("82E3D841E25C5C13462C123CC3D3987865BA3D204674FBEDD47EF5ABAB8D1372");
    let mut padded = [0u8; 64];
    padded[..4].copy_from_slice(b"1234");
    let enc = PinUvProtocol::One.encrypt(&shared, &padded).unwrap();
    assert_eq!(
        enc,
        h(
            "70664BB581E257451A3AB91BF1AAD8E45F6CE9B5C3B0F32B5ECD62D0BA3B605F\
           D9183166F6C5FAF3E4DA2481502CD0CEE0158B351FC39208A77CB2744BD43CF9"
        )
    );
    let tag = PinUvProtocol::One.authenticate(&shared, &enc).unwrap();
    assert_eq!(tag, h("8E7F016997F3B0A27BA4347A0E49FDF5"));
    assert_eq!(*PinUvProtocol::One.decrypt(&shared, &enc).unwrap(), padded);
}

#[test]
fn protocol_two_shared_secret_and_authenticate() {
    let platform = KeyAgreement::from_scalar(&h(FIDO2_PLATFORM_SCALAR)).unwrap();
    let shared = platform
        .shared_secret(PinUvProtocol::Two, &fido2_device_key())
        .unwrap();
    assert_eq!(
        *shared,
        h(
            "65ef955dd8cfcacab489ad582d64b872299cec1970aeffb10c90b9d9f4b4f1a7\
           46cc03964825ccbaf159fde1958b2063871bd5b66ecf28972eaac583214a22d8"
        )
    );
    let tag = PinUvProtocol::Two
        .authenticate(&shared, &[0xff; 64])
        .unwrap();
    assert_eq!(
        tag,
        h("5fa81af33e372c49a054a06bdb18e925c9ef0841271767b34844d1270b40b39c")
    );
    assert!(PinUvProtocol::Two.verify(&shared, &[0xff; 64], &tag));
    assert!(!PinUvProtocol::Two.verify(&shared, &[0xff; 64], &tag[..16]));
    // encrypt puts a fresh IV in front; decrypt takes it back off.
    let a = PinUvProtocol::Two.encrypt(&shared, &[7; 32]).unwrap();
    let b = PinUvProtocol::Two.encrypt(&shared, &[7; 32]).unwrap();
    assert_eq!(a.len(), 48);
    assert_ne!(a, b, "protocol two must use a random IV");
    assert_eq!(*PinUvProtocol::Two.decrypt(&shared, &a).unwrap(), [7; 32]);
}

#[test]
fn protocol_choice_prefers_two() {
    assert_eq!(PinUvProtocol::choose(&[1, 2]), PinUvProtocol::Two);
    assert_eq!(PinUvProtocol::choose(&[2]), PinUvProtocol::Two);
    assert_eq!(PinUvProtocol::choose(&[1]), PinUvProtocol::One);
    assert_eq!(PinUvProtocol::choose(&[]), PinUvProtocol::One);
}

#[test]
fn prf_salt_transform() {
    // hashlib.sha256(b"WebAuthn PRF\x00" + b"credagent source 1").hexdigest()
    assert_eq!(
        prf_salt(b"credagent source 1").to_vec(),
        h("4e0de9db6a0d21850b0f8655e9250175682281302b1132e753d963b34c5c7ec3")
    );
}

/// Vectors from this Python 3.11 script (`cryptography` 48):
///
/// ```text
/// plat = ec.derive_private_key(0x7452E5…7684, SECP256R1())     # python-fido2's platform key
/// d = sha256(b"credctl test device key")                        # the device's scalar
/// z = plat.exchange(ECDH(), dev.public_key())
/// s1 = sha256(z); s2 = HKDF(salt=0*32, info=b"CTAP2 HMAC key")(z) + HKDF(…"CTAP2 AES key")(z)
/// salt = sha256(b"WebAuthn PRF\x00" + b"credagent source 1")
/// p1: saltEnc = AES-CBC(s1, iv=0, salt); saltAuth = HMAC(s1, saltEnc)[:16]
/// p2: saltEnc = iv || AES-CBC(s2[32:], iv=00..0f, salt); saltAuth = HMAC(s2[:32], saltEnc)
/// output = HMAC(CredRandom=0x42*32, salt)
/// p1 outEnc = AES-CBC(s1, 0, output); p2 outEnc = 10..1f || AES-CBC(s2[32:], 10..1f, output)
/// ```
#[test]
fn hmac_secret_vectors() {
    let platform = KeyAgreement::from_scalar(&h(FIDO2_PLATFORM_SCALAR)).unwrap();
    let device = cose(
        "0d576d23893d78132a2c2de79fc0d503dfd2611a7b0c2e62e91510cbe8c70b61",
        "71801cb9064c39c1976204028cfb1df5f9fd1d21e33ac6cc4a8a500074348c3b",
    );
    // The device side agrees on the same secret from its scalar and the platform's public key.
    let device_side = KeyAgreement::from_scalar(&h(
        "4a48f3cf6cf938f5e083d23872cdd99d00f706920ec072a87da6153f22bc7091",
    ))
    .unwrap();
    let salt = prf_salt(b"credagent source 1");
    let output = h("3ab73fdffc44618f0185fed37ab84321aef9fd95a4167b42d11f8fa16be952ad");
    let cases = [
        (
            PinUvProtocol::One,
            "295bc3dbc88dad9988c89e1993a34947112e8b193bc219b8f0002cb870b42f57",
            "b8fcc12d099d26cf4c9557206018385caae2e2e1f08aeb84af1f450aae9e4677",
            "e2b23ea2e2d84e27521afe9769f5496b",
            "8c69b005532df705fa9df587fcaa1bd73d9182e19d5c5ae1c19137a674840a9b",
        ),
        (
            PinUvProtocol::Two,
            "85cdb0c789380ab902ceb5768150ccb1a37132fe21a326b0d700f4972f288e1f\
             78474b005c45109ad18c60a897bdbf742e8c9348846fce0fb24b38b8a7a9d8b1",
            "000102030405060708090a0b0c0d0e0f05a66ba93d822819e3c5d639a63389b4\
             e10321b9f2c272812dc2293b02a08106",
            "cd6d82e2c535e6bfb60c5351780760c484c2026e94f27b6369263f4b7ccb3588",
            "101112131415161718191a1b1c1d1e1fa2cd0b2e5406ee22ea3880f32b081d24\
             51b402c8f32fb8f4b27276add6479e71",
        ),
    ];
    for (protocol, shared, salt_enc, salt_auth, out_enc) in cases {
        let session = HmacSecretSession::with_platform_key(protocol, &platform, &device).unwrap();
        assert_eq!(session.shared_secret(), h(shared), "{protocol:?}");
        let device_shared = device_side
            .shared_secret(protocol, &platform.public_cose())
            .unwrap();
        assert_eq!(*device_shared, h(shared), "{protocol:?}");

        let iv: [u8; 16] = core::array::from_fn(|i| i as u8);
        let Value::Map(input) = session.input_with_iv(&salt, &iv).unwrap() else {
            panic!()
        };
        assert_eq!(input.get(&cbor::int(1)), Some(&platform.public_cose()));
        assert_eq!(
            input.get(&cbor::int(2)),
            Some(&Value::Bytes(h(salt_enc))),
            "{protocol:?}"
        );
        assert_eq!(
            input.get(&cbor::int(3)),
            Some(&Value::Bytes(h(salt_auth))),
            "{protocol:?}"
        );
        assert_eq!(
            input.get(&cbor::int(4)),
            Some(&cbor::int(protocol.number().into()))
        );
        assert!(protocol.verify(&device_shared, &h(salt_enc), &h(salt_auth)));
        assert_eq!(
            *protocol.decrypt(&device_shared, &h(salt_enc)).unwrap(),
            salt
        );

        assert_eq!(
            session.output(&h(out_enc)).unwrap().to_vec(),
            output,
            "{protocol:?}"
        );
        let iv2: [u8; 16] = core::array::from_fn(|i| 16 + i as u8);
        assert_eq!(
            protocol
                .encrypt_with_iv(&device_shared, &iv2, &output)
                .unwrap(),
            h(out_enc)
        );
    }
}

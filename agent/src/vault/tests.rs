//! The vault's primitives against their published test vectors, then its own round trips and
//! the ways each must refuse.

use super::*;
use aes_gcm::aead::{Aead, KeyInit};

fn h(text: &str) -> Vec<u8> {
    hex::decode(text).expect("test vector hex")
}

/// RFC 5869 appendix A.1 (basic) and A.3 (zero-length salt and info), HKDF-SHA256: the KDF that
/// derives each wrapping key.
#[test]
fn hkdf_sha256_matches_rfc5869() {
    let ikm = [0x0b; 22];
    let mut okm = [0u8; 42];
    hkdf::Hkdf::<Sha256>::new(Some(&h("000102030405060708090a0b0c")), &ikm)
        .expand(&h("f0f1f2f3f4f5f6f7f8f9"), &mut okm)
        .unwrap();
    assert_eq!(
        hex::encode(okm),
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    );
    hkdf::Hkdf::<Sha256>::new(None, &ikm)
        .expand(&[], &mut okm)
        .unwrap();
    assert_eq!(
        hex::encode(okm),
        "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"
    );
}

/// The GCM specification's test case 14 (AES-256, zero key, zero IV, one zero block): the AEAD
/// that wraps the vault's private half.
#[test]
fn aes256_gcm_matches_the_gcm_spec() {
    let cipher = Aes256Gcm::new(&[0u8; 32].into());
    let out = cipher
        .encrypt(&Nonce::from([0u8; 12]), &[0u8; 16][..])
        .unwrap();
    assert_eq!(
        hex::encode(out),
        "cea7403d4d606b6e074ec5d3baf39d18d0d1c8a799996bf0265b98b5d48ab919"
    );
}

/// RFC 9180 appendix A.1.1: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-128-GCM, base mode.
/// The key pair is derived from the RFC's `ikmR`, and its first encryption opens.
#[test]
fn hpke_matches_rfc9180_a_1_1() {
    let vault = VaultSecret::derive(&h(
        "6db9df30aa07dd42ee5e8181afdb977e538f5e1fec8a06223f33f7013e525037",
    ));
    // x25519-dalek keeps the scalar clamped (RFC 7748 section 5); the RFC prints it unclamped.
    let mut sk_rm = h("4612c550263fc8ad58375df3f557aac531d26850903e55a9f23f21d8534e8ac8");
    sk_rm[0] &= 248;
    sk_rm[31] = (sk_rm[31] & 127) | 64;
    assert_eq!(vault.key.to_bytes().as_slice(), sk_rm.as_slice());
    assert_eq!(
        vault.public().to_hex(),
        "3948cfe0ad1ddb695d780e59077195da6c56506b027329794ab02bca80815c4d"
    );
    let info = h("4f6465206f6e2061204772656369616e2055726e");
    let enc = h("37fda3567bdbd628e88668c3c8d7e97d1d1253b6d4ea6d44c150f741f1bf4431");
    let aad = h("436f756e742d30");
    let ct = h("f938558b5d72f1a23810b4be2ab4f84331acc02fc97babc53a52ae8218a355a96d8770ac83d07bea87e13c512a");
    let plain = vault.hpke_open(&info, &aad, &enc, &ct).unwrap();
    assert_eq!(plain.expose(), b"Beauty is truth, truth beauty");
    // The same ciphertext under another sequence number's AAD does not open.
    assert_eq!(
        vault.hpke_open(&info, b"Count-1", &enc, &ct).unwrap_err(),
        VaultError::Open
    );
}

/// The WebAuthn PRF salt transform, `SHA-256("WebAuthn PRF" || 0x00 || input)` (the NUL is part
/// of the prefix, as in Chromium's `HashPRFValue`). Expected values computed independently with
/// Python's hashlib; the last line shows the NUL matters.
#[test]
fn prf_salt_is_the_webauthn_transform() {
    assert_eq!(
        hex::encode(prf_salt(b"")),
        "6a7e64b2aa34c92736143a062fa149aff1bd8bb3f7ee6f346885481f9414a3d3"
    );
    let point: Vec<u8> = (0u8..32).collect();
    assert_eq!(
        hex::encode(prf_salt(&point)),
        "dc1f4f3b3d759586245d5de7e2e115d2a056a2df27109db7cef9b4b3a89bb106"
    );
    assert_ne!(
        hex::encode(prf_salt(&point)),
        "29087964ff1fb4c6c96aa45dad4985424fc9351e3db7d216cef11e45792d3bcb"
    );
}

fn prf(byte: u8) -> PrfOutput {
    PrfOutput::from_slice(&[byte; KEY_LEN]).unwrap()
}

#[test]
fn a_sealed_secret_opens_only_with_its_vault_and_its_label() {
    let vault = VaultSecret::generate().unwrap();
    let other = VaultSecret::generate().unwrap();
    let sealed = seal(vault.public(), b"source:work", b"wJalrXUtnFEMI/K7MDENG").unwrap();
    assert!(!sealed.encode().contains("wJalr"));

    let opened = vault.open(b"source:work", &sealed).unwrap();
    assert_eq!(opened.expose(), b"wJalrXUtnFEMI/K7MDENG");
    // Moved to another source's slot, opened by another vault, or altered: refused.
    assert_eq!(
        vault.open(b"source:home", &sealed).unwrap_err(),
        VaultError::Open
    );
    assert_eq!(
        other.open(b"source:work", &sealed).unwrap_err(),
        VaultError::Open
    );
    let mut altered = sealed.clone();
    altered.ciphertext[0] ^= 1;
    assert_eq!(
        vault.open(b"source:work", &altered).unwrap_err(),
        VaultError::Open
    );

    // Two seals of one secret differ (fresh ephemeral key each time).
    let again = seal(vault.public(), b"source:work", b"wJalrXUtnFEMI/K7MDENG").unwrap();
    assert_ne!(again, sealed);
}

#[test]
fn sealed_text_round_trips_and_refuses_junk() {
    let vault = VaultSecret::generate().unwrap();
    let sealed = seal(vault.public(), b"l", b"secret").unwrap();
    let text = sealed.encode();
    assert!(text.starts_with("v1."));
    assert_eq!(Sealed::decode(&text).unwrap(), sealed);
    for junk in [
        "",
        "v2.00.00",
        "v1.zz.00",
        "v1.00",
        &format!("{text}.00"),
        "v1.00.00",
    ] {
        assert!(
            matches!(Sealed::decode(junk), Err(VaultError::Format(_))),
            "{junk:?} was accepted"
        );
    }
}

#[test]
fn a_wrap_opens_only_with_its_credentials_prf_output() {
    let vault = VaultSecret::generate().unwrap();
    let point = new_point().unwrap();
    let wrap = vault.wrap(b"cred-A", point, &prf(7)).unwrap();

    let unwrapped = wrap.unwrap(vault.public(), &prf(7)).unwrap();
    assert_eq!(unwrapped.public(), vault.public());
    let sealed = seal(vault.public(), b"x", b"y").unwrap();
    assert_eq!(unwrapped.open(b"x", &sealed).unwrap().expose(), b"y");

    // Another key's (or a UV/non-UV) PRF output does not unwrap.
    assert_eq!(
        wrap.unwrap(vault.public(), &prf(8)).unwrap_err(),
        VaultError::Unwrap
    );
    // The wrap relabelled for another credential does not unwrap.
    let mut moved = wrap.clone();
    moved.credential_id = b"cred-B".to_vec();
    assert_eq!(
        moved.unwrap(vault.public(), &prf(7)).unwrap_err(),
        VaultError::Unwrap
    );
    // Presented as the wrap of another vault (an attacker's public key in vault.json): refused.
    let attacker = VaultSecret::generate().unwrap();
    assert_eq!(
        wrap.unwrap(attacker.public(), &prf(7)).unwrap_err(),
        VaultError::Unwrap
    );
}

#[test]
fn a_second_key_unwraps_the_same_vault() {
    let vault = VaultSecret::generate().unwrap();
    let mut file = VaultFile::new(vault.public().clone());
    file.put_wrap(vault.wrap(b"A", new_point().unwrap(), &prf(1)).unwrap());
    let sealed = seal(&file.public, b"source:work", b"secret").unwrap();

    // `key add B`: a touch of A unwraps, the new key's output wraps again.
    let via_a = file.unwrap(b"A", &prf(1)).unwrap();
    file.put_wrap(via_a.wrap(b"B", new_point().unwrap(), &prf(2)).unwrap());
    drop(via_a);
    let via_b = file.unwrap(b"B", &prf(2)).unwrap();
    assert_eq!(
        via_b.open(b"source:work", &sealed).unwrap().expose(),
        b"secret"
    );

    // Stored and read back, the same; removing A leaves only B.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(VAULT_FILE);
    file.save(&path).unwrap();
    let mut back = VaultFile::load(&path).unwrap().unwrap();
    assert_eq!(back, file);
    assert!(back.remove_wrap(b"A"));
    assert!(!back.remove_wrap(b"A"));
    assert_eq!(back.unwrap(b"A", &prf(1)).unwrap_err(), VaultError::Unwrap);
    assert!(back.unwrap(b"B", &prf(2)).is_ok());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

#[test]
fn a_vault_file_that_is_not_ours_is_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(VAULT_FILE);
    assert!(VaultFile::load(&path).unwrap().is_none());
    std::fs::write(&path, r#"{"version":2,"public":"","wraps":[]}"#).unwrap();
    let err = VaultFile::load(&path).unwrap_err().to_string();
    assert!(err.contains("version 2") && err.contains("backup"), "{err}");
    std::fs::write(&path, "not json").unwrap();
    assert!(matches!(VaultFile::load(&path), Err(VaultError::Format(_))));
}

#[test]
fn prf_outputs_of_the_wrong_length_are_refused() {
    assert!(PrfOutput::from_slice(&[0; 31]).is_err());
    assert!(PrfOutput::from_slice(&[0; 64]).is_err());
}

#[test]
fn locked_buffers_hold_their_bytes_and_are_locked_when_the_limit_allows() {
    let mut spare = Vec::with_capacity(64);
    spare.extend_from_slice(b"secret");
    let locked = Locked::take(spare);
    assert_eq!(locked.expose(), b"secret");
    assert_eq!(format!("{locked:?}"), "Locked(6 bytes)");
    let limit = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_MEMLOCK)
        .unwrap()
        .0;
    if limit >= 64 * 1024 {
        assert!(locked.is_locked());
    }
    assert!(!Locked::take(Vec::new()).is_locked());
}

#[test]
fn wraps_record_whether_a_verified_touch_made_them() {
    let vault = VaultSecret::generate().unwrap();
    let mut file = VaultFile::new(vault.public().clone());
    let mut verified = vault.wrap(b"A", [1; KEY_LEN], &prf(1)).unwrap();
    verified.user_verified = true;
    file.put_wrap(verified);
    file.put_wrap(vault.wrap(b"B", [2; KEY_LEN], &prf(2)).unwrap());
    let json = file.to_json().unwrap();
    let back = VaultFile::from_json(&json).unwrap();
    assert!(back.wrap_for(b"A").unwrap().user_verified);
    assert!(!back.wrap_for(b"B").unwrap().user_verified);
    // A touch-only wrap is written as files were before the flag existed, and such files read
    // as touch-only.
    assert_eq!(json.matches("user_verified").count(), 1, "{json}");
    assert_eq!(back, file);
}

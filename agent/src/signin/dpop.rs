//! DPoP proofs (RFC 9449) for the AWS Sign-In service: one P-256 key per login, kept with the
//! refresh token (sealed to the vault); each token request carries a fresh proof, a compact JWS
//! `{"typ":"dpop+jwt","alg":"ES256","jwk":{…}}.{htm, htu, iat, jti}` signed with that key
//! (raw `r‖s`, as JWS wants for ES256). The signing is `ring`'s (already the agent's TLS
//! library's), so no new cryptography enters the build.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use zeroize::Zeroizing;

/// Why a DPoP key could not be made or used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DpopError {
    #[error("the random generator failed")]
    Random,
    #[error("the stored DPoP key is not a P-256 PKCS#8 key")]
    BadKey,
    #[error("signing the DPoP proof failed")]
    Sign,
}

/// A login's DPoP key. The private half exists only in this type and, sealed, in the vault.
pub struct DpopKey {
    pair: EcdsaKeyPair,
    /// The PKCS#8 document the pair came from: what is sealed (zeroized when dropped).
    pkcs8: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for DpopKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DpopKey")
            .field("thumbprint", &self.thumbprint())
            .finish_non_exhaustive()
    }
}

impl DpopKey {
    /// A fresh key, for a new login.
    pub fn generate() -> Result<DpopKey, DpopError> {
        let rng = SystemRandom::new();
        let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| DpopError::Random)?;
        DpopKey::from_pkcs8(doc.as_ref())
    }

    /// The key sealed with a login (its PKCS#8 document).
    pub fn from_pkcs8(der: &[u8]) -> Result<DpopKey, DpopError> {
        let rng = SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng)
            .map_err(|_| DpopError::BadKey)?;
        Ok(DpopKey {
            pair,
            pkcs8: Zeroizing::new(der.to_vec()),
        })
    }

    /// The PKCS#8 document, to seal.
    pub fn pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The public key as a JWK (`kty`, `crv`, `x`, `y`), members in lexicographic order (the
    /// form RFC 7638 hashes for a thumbprint).
    pub fn jwk(&self) -> String {
        let point = self.pair.public_key().as_ref();
        // Uncompressed SEC1: 0x04 ‖ x (32) ‖ y (32).
        let (x, y) = point[1..].split_at(32);
        format!(
            r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
            URL_SAFE_NO_PAD.encode(x),
            URL_SAFE_NO_PAD.encode(y)
        )
    }

    /// The JWK thumbprint (RFC 7638): base64url(SHA-256 of the canonical JWK). Names the key
    /// in logs and messages; it is not secret.
    pub fn thumbprint(&self) -> String {
        use sha2::Digest;
        URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(self.jwk().as_bytes()))
    }

    /// A proof for one request: `htm` the HTTP method, `htu` the request URL without query or
    /// fragment, `iat` unix seconds, `jti` a fresh unique id.
    pub fn proof(&self, htm: &str, htu: &str, iat: u64, jti: &str) -> Result<String, DpopError> {
        let header = format!(r#"{{"typ":"dpop+jwt","alg":"ES256","jwk":{}}}"#, self.jwk());
        let claims = serde_json::json!({ "htm": htm, "htu": htu, "iat": iat, "jti": jti });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.as_bytes()),
            URL_SAFE_NO_PAD.encode(claims.to_string().as_bytes())
        );
        let signature = self
            .pair
            .sign(&SystemRandom::new(), signing_input.as_bytes())
            .map_err(|_| DpopError::Sign)?;
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        ))
    }
}

/// The URL a proof names (`htu`): scheme, host and path, without query or fragment (RFC 9449
/// section 4.2).
pub fn htu(url: &str) -> &str {
    let end = url.find(['?', '#']).unwrap_or(url.len());
    &url[..end]
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_FIXED};

    fn part(jwt: &str, i: usize) -> serde_json::Value {
        let raw = URL_SAFE_NO_PAD
            .decode(jwt.split('.').nth(i).unwrap())
            .unwrap();
        serde_json::from_slice(&raw).unwrap()
    }

    #[test]
    fn a_proof_verifies_with_the_key_in_its_own_header_and_names_the_request() {
        let key = DpopKey::generate().unwrap();
        let url = "https://us-east-1.signin.aws.amazon.com/v1/token";
        let proof = key.proof("POST", htu(url), 1_765_000_000, "jti-1").unwrap();
        let header = part(&proof, 0);
        assert_eq!(header["typ"], "dpop+jwt");
        assert_eq!(header["alg"], "ES256");
        assert_eq!(header["jwk"]["kty"], "EC");
        assert_eq!(header["jwk"]["crv"], "P-256");
        let claims = part(&proof, 1);
        assert_eq!(claims["htm"], "POST");
        assert_eq!(claims["htu"], url);
        assert_eq!(claims["iat"], 1_765_000_000);
        assert_eq!(claims["jti"], "jti-1");
        // As a server checks it: the public key rebuilt from the header's JWK.
        let x = URL_SAFE_NO_PAD
            .decode(header["jwk"]["x"].as_str().unwrap())
            .unwrap();
        let y = URL_SAFE_NO_PAD
            .decode(header["jwk"]["y"].as_str().unwrap())
            .unwrap();
        let point = [&[4u8][..], &x, &y].concat();
        let (input, sig) = proof.rsplit_once('.').unwrap();
        let sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
        assert_eq!(sig.len(), 64, "raw r‖s");
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &point)
            .verify(input.as_bytes(), &sig)
            .unwrap();
        // A claim changed after signing does not verify.
        let forged = input.replace('.', ".e30");
        assert!(UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &point)
            .verify(forged.as_bytes(), &sig)
            .is_err());
    }

    #[test]
    fn the_sealed_form_gives_back_the_same_key() {
        let key = DpopKey::generate().unwrap();
        let again = DpopKey::from_pkcs8(key.pkcs8()).unwrap();
        assert_eq!(key.jwk(), again.jwk());
        assert_eq!(key.thumbprint(), again.thumbprint());
        assert_eq!(
            DpopKey::from_pkcs8(b"not a key").unwrap_err(),
            DpopError::BadKey
        );
        assert!(!format!("{key:?}").contains(&URL_SAFE_NO_PAD.encode(key.pkcs8())));
    }

    #[test]
    fn the_thumbprint_follows_rfc_7638() {
        // RFC 7638 section 3.1's example is an RSA key; for EC the members are crv, kty, x, y
        // in that order with no whitespace, which is what `jwk` writes.
        let key = DpopKey::generate().unwrap();
        let jwk: serde_json::Value = serde_json::from_str(&key.jwk()).unwrap();
        let keys: Vec<&String> = jwk.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["crv", "kty", "x", "y"]);
        assert!(!key.jwk().contains(' '));
        assert_eq!(key.thumbprint().len(), 43);
    }

    #[test]
    fn htu_drops_query_and_fragment() {
        assert_eq!(htu("https://h/v1/token?x=1#f"), "https://h/v1/token");
        assert_eq!(htu("https://h/v1/token"), "https://h/v1/token");
    }
}

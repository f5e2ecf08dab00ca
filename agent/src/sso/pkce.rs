//! PKCE (RFC 7636, `S256`) and the `state` of an authorization-code login: a fresh random
//! verifier and state per login, the challenge derived from the verifier.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

/// The verifier of one login: 32 random bytes, base64url (43 characters, within RFC 7636's
/// 43..=128 unreserved characters).
pub struct Verifier(SecretString);

impl Verifier {
    pub fn generate() -> Result<Verifier, getrandom::Error> {
        let mut raw = zeroize::Zeroizing::new([0u8; 32]);
        getrandom::fill(raw.as_mut())?;
        Ok(Verifier(SecretString::from(
            URL_SAFE_NO_PAD.encode(raw.as_ref()),
        )))
    }

    /// `BASE64URL(SHA256(verifier))`, the `code_challenge` for `S256`.
    pub fn challenge(&self) -> String {
        challenge_of(self.0.expose_secret())
    }

    pub fn secret(&self) -> &SecretString {
        &self.0
    }
}

fn challenge_of(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// A random `state`, 128 bits, base64url: binds the browser's callback to the login that
/// started it.
pub fn new_state() -> Result<String, getrandom::Error> {
    let mut raw = [0u8; 16];
    getrandom::fill(&mut raw)?;
    Ok(URL_SAFE_NO_PAD.encode(raw))
}

/// What the browser's authorize URL carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthorizeRequest {
    pub redirect_uri: String,
    pub state: String,
    pub code_challenge: String,
    pub scopes: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_challenge_matches_rfc_7636_appendix_b() {
        assert_eq!(
            challenge_of("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn verifiers_and_states_are_fresh_and_well_formed() {
        let (a, b) = (Verifier::generate().unwrap(), Verifier::generate().unwrap());
        assert_ne!(a.secret().expose_secret(), b.secret().expose_secret());
        let v = a.secret().expose_secret();
        assert_eq!(v.len(), 43);
        assert!(v
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        assert_eq!(a.challenge().len(), 43);
        assert_ne!(new_state().unwrap(), new_state().unwrap());
    }
}

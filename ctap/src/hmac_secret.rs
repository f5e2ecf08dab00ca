//! The hmac-secret extension on the platform side (CTAP 2.1 §12.5) and the WebAuthn PRF salt
//! transform that maps a PRF input onto its salt.

use serde_cbor_2::Value;
use zeroize::Zeroizing;

use super::cbor::{self, Map};
use super::error::CtapError;
use super::pin_uv::{sha256, KeyAgreement, PinUvProtocol};

/// The extension's name in CTAP2 maps.
pub const EXTENSION: &str = "hmac-secret";

/// WebAuthn PRF: salt = SHA-256("WebAuthn PRF" || 0x00 || input).
pub fn prf_salt(input: &[u8]) -> [u8; 32] {
    let mut data = Vec::with_capacity(13 + input.len());
    data.extend_from_slice(b"WebAuthn PRF\x00");
    data.extend_from_slice(input);
    sha256(&data)
}

/// One getAssertion's hmac-secret exchange: the platform key, the shared secret with the
/// authenticator's key agreement key, and the protocol that derived it.
pub struct HmacSecretSession {
    protocol: PinUvProtocol,
    platform_key: Value,
    shared_secret: Zeroizing<Vec<u8>>,
}

impl HmacSecretSession {
    /// Agrees a shared secret between a fresh platform key and the authenticator's key
    /// (`device_key`, the COSE key from clientPIN getKeyAgreement).
    pub fn new(protocol: PinUvProtocol, device_key: &Value) -> Result<Self, CtapError> {
        Self::with_platform_key(protocol, &KeyAgreement::generate(), device_key)
    }

    pub fn with_platform_key(
        protocol: PinUvProtocol,
        platform: &KeyAgreement,
        device_key: &Value,
    ) -> Result<Self, CtapError> {
        Ok(HmacSecretSession {
            protocol,
            platform_key: platform.public_cose(),
            shared_secret: platform.shared_secret(protocol, device_key)?,
        })
    }

    /// The extension input for one salt: {1: keyAgreement, 2: saltEnc, 3: saltAuth,
    /// 4: pinUvAuthProtocol}.
    pub fn input(&self, salt1: &[u8; 32]) -> Result<Value, CtapError> {
        let salt_enc = self.protocol.encrypt(&self.shared_secret, salt1)?;
        self.input_from_salt_enc(salt_enc)
    }

    /// `input` with a fixed IV (protocol two), for known-answer tests.
    #[cfg(test)]
    pub fn input_with_iv(&self, salt1: &[u8; 32], iv: &[u8; 16]) -> Result<Value, CtapError> {
        let salt_enc = self
            .protocol
            .encrypt_with_iv(&self.shared_secret, iv, salt1)?;
        self.input_from_salt_enc(salt_enc)
    }

    fn input_from_salt_enc(&self, salt_enc: Vec<u8>) -> Result<Value, CtapError> {
        let salt_auth = self.protocol.authenticate(&self.shared_secret, &salt_enc)?;
        let mut m = Map::new();
        m.insert(cbor::int(1), self.platform_key.clone());
        m.insert(cbor::int(2), Value::Bytes(salt_enc));
        m.insert(cbor::int(3), Value::Bytes(salt_auth));
        m.insert(cbor::int(4), cbor::int(self.protocol.number().into()));
        Ok(Value::Map(m))
    }

    /// Decrypts the authenticator's output for one salt (32 bytes).
    pub fn output(&self, encrypted: &[u8]) -> Result<Zeroizing<[u8; 32]>, CtapError> {
        let plain = self.protocol.decrypt(&self.shared_secret, encrypted)?;
        if plain.len() != 32 {
            return Err(CtapError::Malformed("hmac-secret output is not 32 bytes"));
        }
        let mut out = Zeroizing::new([0u8; 32]);
        out.copy_from_slice(&plain);
        Ok(out)
    }

    #[cfg(test)]
    pub fn shared_secret(&self) -> &[u8] {
        &self.shared_secret
    }
}

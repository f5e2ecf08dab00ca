//! PIN/UV auth protocols one and two (CTAP 2.1 §6.5.6, §6.5.7) and the P-256 key agreement both
//! use. Only the framing is ours: ECDH, AES-256-CBC, HMAC-SHA-256, HKDF and SHA-256 are RustCrypto
//! (through crypto-glue).

use crypto_glue::aes256cbc::{
    Aes256CbcDec, Aes256CbcEnc, Aes256CbcIv, BlockModeDecrypt, BlockModeEncrypt, KeyIvInit,
};
use crypto_glue::block_padding::NoPadding;
use crypto_glue::ecdh;
use crypto_glue::ecdsa_p256::{
    self, EcdsaP256AffinePoint, EcdsaP256NonZeroScalar, EcdsaP256PrivateKey, EcdsaP256PublicKey,
};
use crypto_glue::hkdf_s256::HkdfSha256;
use crypto_glue::hmac_s256::HmacSha256;
use crypto_glue::traits::{KeyInit, Mac, ToSec1Point};
use serde_cbor_2::Value;
use zeroize::Zeroizing;

use super::cbor::{self, Map};
use super::error::CtapError;

/// COSE: kty EC2, crv P-256, and the algorithm CTAP2 uses for key agreement keys.
const COSE_KTY: i128 = 1;
const COSE_ALG: i128 = 3;
const COSE_CRV: i128 = -1;
const COSE_X: i128 = -2;
const COSE_Y: i128 = -3;
const KTY_EC2: i128 = 2;
const CRV_P256: i128 = 1;
/// "ECDH-ES + HKDF-256", which CTAP2 names for the key agreement key whatever the protocol.
pub const ALG_ECDH_ES_HKDF_256: i128 = -25;
/// ES256, for credential keys.
pub const ALG_ES256: i128 = -7;

/// A PIN/UV auth protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinUvProtocol {
    One,
    Two,
}

impl PinUvProtocol {
    pub fn number(self) -> u8 {
        match self {
            PinUvProtocol::One => 1,
            PinUvProtocol::Two => 2,
        }
    }

    pub fn from_number(n: i128) -> Option<PinUvProtocol> {
        match n {
            1 => Some(PinUvProtocol::One),
            2 => Some(PinUvProtocol::Two),
            _ => None,
        }
    }

    /// Two when the authenticator lists it, else one (CTAP 2.0 keys list nothing and speak one).
    pub fn choose(listed: &[i128]) -> PinUvProtocol {
        if listed.contains(&2) {
            PinUvProtocol::Two
        } else {
            PinUvProtocol::One
        }
    }

    /// kdf(Z): protocol one SHA-256(Z) (32 bytes); protocol two the HMAC key then the AES key,
    /// each HKDF-SHA-256 with 32 zero bytes of salt (64 bytes).
    pub fn kdf(self, z: &[u8]) -> Result<Zeroizing<Vec<u8>>, CtapError> {
        match self {
            PinUvProtocol::One => Ok(Zeroizing::new(sha256(z).to_vec())),
            PinUvProtocol::Two => {
                let mut out = Zeroizing::new(vec![0u8; 64]);
                let hk = HkdfSha256::new(Some(&[0u8; 32]), z);
                hk.expand(b"CTAP2 HMAC key", &mut out[..32])
                    .map_err(|_| CtapError::Crypto("HKDF"))?;
                hk.expand(b"CTAP2 AES key", &mut out[32..])
                    .map_err(|_| CtapError::Crypto("HKDF"))?;
                Ok(out)
            }
        }
    }

    /// encrypt(key, plaintext): protocol one AES-256-CBC with a zero IV; protocol two with a fresh
    /// random IV, returned in front of the ciphertext.
    pub fn encrypt(self, key: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CtapError> {
        let iv = match self {
            PinUvProtocol::One => [0u8; 16],
            PinUvProtocol::Two => {
                let mut iv = [0u8; 16];
                getrandom::fill(&mut iv).map_err(|_| CtapError::Crypto("no random source"))?;
                iv
            }
        };
        self.encrypt_with_iv(key, &iv, plaintext)
    }

    /// `encrypt` with a given IV (ignored by protocol one), for known-answer tests.
    pub fn encrypt_with_iv(
        self,
        key: &[u8],
        iv: &[u8; 16],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, CtapError> {
        if !plaintext.len().is_multiple_of(16) {
            return Err(CtapError::Crypto("plaintext is not whole AES blocks"));
        }
        let aes_key = self.aes_key(key)?;
        match self {
            PinUvProtocol::One => Ok(cbc_encrypt(aes_key, &[0u8; 16], plaintext)),
            PinUvProtocol::Two => {
                let mut out = iv.to_vec();
                out.extend_from_slice(&cbc_encrypt(aes_key, iv, plaintext));
                Ok(out)
            }
        }
    }

    /// decrypt(key, ciphertext), the inverse of `encrypt`.
    pub fn decrypt(self, key: &[u8], ciphertext: &[u8]) -> Result<Zeroizing<Vec<u8>>, CtapError> {
        let aes_key = self.aes_key(key)?;
        let (iv, ct) = match self {
            PinUvProtocol::One => ([0u8; 16], ciphertext),
            PinUvProtocol::Two => {
                if ciphertext.len() < 16 {
                    return Err(CtapError::Crypto("ciphertext shorter than its IV"));
                }
                let (iv, ct) = ciphertext.split_at(16);
                let mut iv16 = [0u8; 16];
                iv16.copy_from_slice(iv);
                (iv16, ct)
            }
        };
        if !ct.len().is_multiple_of(16) {
            return Err(CtapError::Crypto("ciphertext is not whole AES blocks"));
        }
        let dec = Aes256CbcDec::new(aes_key.into(), &Aes256CbcIv::from(iv));
        dec.decrypt_padded_vec::<NoPadding>(ct)
            .map(Zeroizing::new)
            .map_err(|_| CtapError::Crypto("AES-CBC decryption"))
    }

    /// authenticate(key, message): HMAC-SHA-256, the first 16 bytes for protocol one; protocol two
    /// keys it with the first 32 bytes of `key` (the HMAC half of a shared secret, or a whole
    /// pinUvAuthToken).
    pub fn authenticate(self, key: &[u8], message: &[u8]) -> Result<Vec<u8>, CtapError> {
        let mut mac = self.mac(key)?;
        mac.update(message);
        let full = mac.finalize().into_bytes();
        Ok(match self {
            PinUvProtocol::One => full[..16].to_vec(),
            PinUvProtocol::Two => full.to_vec(),
        })
    }

    /// Checks `tag` = authenticate(key, message) in constant time.
    pub fn verify(self, key: &[u8], message: &[u8], tag: &[u8]) -> bool {
        let Ok(mut mac) = self.mac(key) else {
            return false;
        };
        mac.update(message);
        match self {
            PinUvProtocol::One => tag.len() == 16 && mac.verify_truncated_left(tag).is_ok(),
            PinUvProtocol::Two => mac.verify_slice(tag).is_ok(),
        }
    }

    fn mac(self, key: &[u8]) -> Result<HmacSha256, CtapError> {
        let key = match self {
            PinUvProtocol::One => key,
            PinUvProtocol::Two => key.get(..32).ok_or(CtapError::Crypto("short HMAC key"))?,
        };
        <HmacSha256 as KeyInit>::new_from_slice(key).map_err(|_| CtapError::Crypto("HMAC key"))
    }

    fn aes_key(self, key: &[u8]) -> Result<&[u8; 32], CtapError> {
        let k = match self {
            PinUvProtocol::One => key.get(..32),
            PinUvProtocol::Two => key.get(32..64),
        };
        k.and_then(|k| k.try_into().ok())
            .ok_or(CtapError::Crypto("AES key of the wrong length"))
    }
}

fn cbc_encrypt(key: &[u8; 32], iv: &[u8; 16], plaintext: &[u8]) -> Vec<u8> {
    let enc = Aes256CbcEnc::new(key.into(), &Aes256CbcIv::from(*iv));
    enc.encrypt_padded_vec::<NoPadding>(plaintext)
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    use crypto_glue::s256::Sha256;
    use crypto_glue::traits::Digest;
    Sha256::digest(data).into()
}

/// One side's P-256 key agreement key (the platform's ephemeral key, or a device's).
pub struct KeyAgreement {
    secret: EcdsaP256PrivateKey,
}

impl KeyAgreement {
    pub fn generate() -> KeyAgreement {
        KeyAgreement {
            secret: ecdsa_p256::new_key(),
        }
    }

    /// From a known private scalar, for known-answer tests.
    #[cfg(test)]
    pub fn from_scalar(scalar: &[u8]) -> Result<KeyAgreement, CtapError> {
        EcdsaP256PrivateKey::from_slice(scalar)
            .map(|secret| KeyAgreement { secret })
            .map_err(|_| CtapError::Crypto("bad P-256 scalar"))
    }

    /// The public key as a COSE_Key: kty 2, alg -25, crv 1, x, y.
    pub fn public_cose(&self) -> Value {
        public_key_to_cose(&self.secret.public_key(), ALG_ECDH_ES_HKDF_256)
    }

    /// The shared secret with the peer's COSE public key: kdf(Z), Z the x coordinate of the
    /// shared point.
    pub fn shared_secret(
        &self,
        protocol: PinUvProtocol,
        peer: &Value,
    ) -> Result<Zeroizing<Vec<u8>>, CtapError> {
        let peer = cose_to_public_key(peer)?;
        let shared = ecdh::diffie_hellman(
            EcdsaP256NonZeroScalar::from(&self.secret),
            EcdsaP256AffinePoint::from(&peer),
        );
        protocol.kdf(shared.raw_secret_bytes())
    }
}

/// A P-256 public key as a COSE_Key map with the given algorithm.
pub fn public_key_to_cose(key: &EcdsaP256PublicKey, alg: i128) -> Value {
    let point = key.to_sec1_point(false);
    let mut m = Map::new();
    m.insert(cbor::int(COSE_KTY), cbor::int(KTY_EC2));
    m.insert(cbor::int(COSE_ALG), cbor::int(alg));
    m.insert(cbor::int(COSE_CRV), cbor::int(CRV_P256));
    m.insert(
        cbor::int(COSE_X),
        cbor::bytes(point.x().map(|x| x.as_slice()).unwrap_or_default()),
    );
    m.insert(
        cbor::int(COSE_Y),
        cbor::bytes(point.y().map(|y| y.as_slice()).unwrap_or_default()),
    );
    Value::Map(m)
}

/// Reads a COSE_Key (kty 2, crv 1) as a P-256 public key on the curve.
pub fn cose_to_public_key(v: &Value) -> Result<EcdsaP256PublicKey, CtapError> {
    let Value::Map(m) = v else {
        return Err(CtapError::Malformed("COSE key is not a map"));
    };
    if cbor::as_int(cbor::get(m, COSE_KTY), "COSE kty")? != KTY_EC2
        || cbor::as_int(cbor::get(m, COSE_CRV), "COSE crv")? != CRV_P256
    {
        return Err(CtapError::Crypto("COSE key is not P-256"));
    }
    let x = cbor::as_bytes(cbor::get(m, COSE_X), "COSE x")?;
    let y = cbor::as_bytes(cbor::get(m, COSE_Y), "COSE y")?;
    ecdsa_p256::from_coords_raw(x, y).ok_or(CtapError::Crypto("COSE key is not on P-256"))
}

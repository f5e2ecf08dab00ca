//! The vault: the cryptography that makes the touch a key and not only a policy
//! (README, "Sealed sources"; SECURITY.md for what it stops).
//!
//! - One **vault key pair** per user, X25519. The public half is stored in clear; sealing a
//!   source secret needs only it, so `source add` needs no touch.
//! - A **sealed** secret is one RFC 9180 HPKE message (base mode, the RFC's own suite A.1:
//!   DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-128-GCM) to the vault's public key, its
//!   associated data naming what it is (so a sealed blob moved to another source's slot does not
//!   open).
//! - The private half is **wrapped** once per registered FIDO credential: AES-256-GCM under a key
//!   derived with HKDF-SHA256 from that credential's hmac-secret / PRF output for a per-credential
//!   random evaluation point. The authenticator is asked for the PRF at
//!   [`prf_salt`]`(point)`, the browser's transform, on every path, so USB, software and browser
//!   touches of one credential derive the same secret.
//!
//! Nothing here is home-made: HPKE is the `hpke` crate (RustCrypto primitives), HKDF and AES-GCM
//! are RustCrypto, and `tests.rs` checks each against its published test vectors. Secrets live
//! in [`Locked`] buffers: zeroized on drop and locked in RAM where the kernel allows it.
//!
//! [`VaultKeeper`] holds `vault.json` for the agent. Which sources are sealed, when the private
//! half is unwrapped (on a verified touch) and when opened sources are wiped belong to `sources`
//! and `approval`.

mod keeper;
mod locked;
mod store;
#[cfg(test)]
mod tests;

pub use keeper::{fingerprint, VaultKeeper};
pub use locked::Locked;
pub use store::{VaultFile, VAULT_FILE};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hpke::{Deserializable, Kem as _, OpModeR, OpModeS, Serializable};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

type Kem = hpke::kem::X25519HkdfSha256;
type Kdf = hpke::kdf::HkdfSha256;
type Aead128 = hpke::aead::AesGcm128;

/// HPKE `info` for every sealed secret: the format and its version.
const SEAL_INFO: &[u8] = b"credagent sealed secret v1";
/// HKDF `info` for the key that wraps the vault's private half.
const WRAP_INFO: &[u8] = b"credagent vault wrap v1";
/// HKDF salt for keys derived from the vault's private half ([`VaultSecret::derive_key`]).
const DERIVE_SALT: &[u8] = b"credagent vault-derived key v1";
/// The prefix of the WebAuthn PRF extension's salt transform, its NUL included.
const PRF_PREFIX: &[u8] = b"WebAuthn PRF\0";

/// Length of a PRF evaluation point, of its output and of the vault's keys.
pub const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;

/// What went wrong opening something. Deliberately coarse: a wrong key, a wrong credential and a
/// tampered blob look the same from outside.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VaultError {
    #[error("the sealed data does not open with this vault (wrong vault, wrong name, or altered)")]
    Open,
    #[error("this security key's secret does not unwrap the vault (another key, or a key that answered without its hmac-secret)")]
    Unwrap,
    #[error("the vault file is malformed: {0}")]
    Format(String),
    #[error("the system random source failed: {0}")]
    Random(String),
}

/// The vault's public half: all sealing needs.
#[derive(Clone, PartialEq, Eq)]
pub struct VaultPublic(<Kem as hpke::Kem>::PublicKey);

impl std::fmt::Debug for VaultPublic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VaultPublic({})", self.to_hex())
    }
}

impl VaultPublic {
    pub fn to_bytes(&self) -> [u8; KEY_LEN] {
        let mut out = [0u8; KEY_LEN];
        out.copy_from_slice(&self.0.to_bytes());
        out
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.to_bytes())
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, VaultError> {
        <Kem as hpke::Kem>::PublicKey::from_bytes(bytes)
            .map(Self)
            .map_err(|e| VaultError::Format(format!("vault public key: {e}")))
    }
}

/// The vault's private half. It exists only between an unwrap and the end of the operation that
/// needed it; it is never written anywhere in clear.
pub struct VaultSecret {
    key: Box<<Kem as hpke::Kem>::PrivateKey>,
    public: VaultPublic,
}

impl std::fmt::Debug for VaultSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VaultSecret(for {})", self.public.to_hex())
    }
}

impl VaultSecret {
    /// A new vault key pair from the system's random source.
    pub fn generate() -> Result<Self, VaultError> {
        let mut ikm = Zeroizing::new([0u8; KEY_LEN]);
        fill_random(ikm.as_mut())?;
        Ok(Self::derive(ikm.as_ref()))
    }

    /// RFC 9180 `DeriveKeyPair`: the key pair for `ikm` (uniformly random, at least 32 bytes).
    fn derive(ikm: &[u8]) -> Self {
        let (key, public) = Kem::derive_keypair(ikm);
        Self::keep(key, VaultPublic(public))
    }

    /// Moves the private half to the heap and locks it in RAM (it zeroizes itself on drop).
    fn keep(key: <Kem as hpke::Kem>::PrivateKey, public: VaultPublic) -> Self {
        let key = Box::new(key);
        locked::lock_in_ram(&*key);
        Self { key, public }
    }

    fn from_bytes(bytes: &[u8]) -> Result<Self, VaultError> {
        let key =
            <Kem as hpke::Kem>::PrivateKey::from_bytes(bytes).map_err(|_| VaultError::Unwrap)?;
        let public = VaultPublic(Kem::sk_to_pk(&key));
        Ok(Self::keep(key, public))
    }

    pub fn public(&self) -> &VaultPublic {
        &self.public
    }

    /// A 32-byte key for `purpose`, derived from this private half with HKDF-SHA256 (RFC 5869),
    /// so that only a touch that unwrapped the vault can compute it (the MAC of `trusted.json`).
    /// Each purpose gets its own `info`, so no derived key equals another or the wrapping key.
    pub fn derive_key(&self, purpose: &[u8]) -> Zeroizing<[u8; KEY_LEN]> {
        let ikm = Zeroizing::new(self.key.to_bytes());
        let hk = hkdf::Hkdf::<Sha256>::new(Some(DERIVE_SALT), ikm.as_slice());
        let mut out = Zeroizing::new([0u8; KEY_LEN]);
        // 32 bytes is far below HKDF-SHA256's 8160-byte limit: expand cannot fail.
        let _ = hk.expand(purpose, out.as_mut());
        out
    }

    /// Opens a secret sealed with [`seal`] under `label`.
    pub fn open(&self, label: &[u8], sealed: &Sealed) -> Result<Locked, VaultError> {
        self.hpke_open(SEAL_INFO, label, &sealed.enc, &sealed.ciphertext)
    }

    /// RFC 9180 `OpenBase` (single shot, sequence 0) with this private half.
    fn hpke_open(
        &self,
        info: &[u8],
        aad: &[u8],
        enc: &[u8],
        ciphertext: &[u8],
    ) -> Result<Locked, VaultError> {
        let enc = <Kem as hpke::Kem>::EncappedKey::from_bytes(enc).map_err(|_| VaultError::Open)?;
        let plain = hpke::single_shot_open::<Aead128, Kdf, Kem>(
            &OpModeR::Base,
            &self.key,
            &enc,
            info,
            ciphertext,
            aad,
        )
        .map_err(|_| VaultError::Open)?;
        Ok(Locked::take(plain))
    }

    /// Wraps this private half for one credential, given that credential's PRF output at
    /// [`prf_salt`]`(point)`.
    pub fn wrap(
        &self,
        credential_id: &[u8],
        point: [u8; KEY_LEN],
        prf_output: &PrfOutput,
    ) -> Result<Wrapped, VaultError> {
        let cipher = wrapping_cipher(prf_output, &point)?;
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce)?;
        let aad = wrap_aad(credential_id, &self.public);
        let secret = Zeroizing::new(self.key.to_bytes());
        let ciphertext = cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: secret.as_slice(),
                    aad: &aad,
                },
            )
            .map_err(|_| VaultError::Format("cannot wrap the vault key".into()))?;
        Ok(Wrapped {
            credential_id: credential_id.to_vec(),
            point,
            nonce,
            ciphertext,
            user_verified: false,
        })
    }
}

/// The 32-byte output of a credential's hmac-secret / PRF evaluation. Zeroized on drop.
pub struct PrfOutput(Zeroizing<[u8; KEY_LEN]>);

impl std::fmt::Debug for PrfOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PrfOutput(..)")
    }
}

impl PrfOutput {
    /// Takes the output as the authenticator returned it; anything but 32 bytes is refused.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, VaultError> {
        let array: [u8; KEY_LEN] = bytes.try_into().map_err(|_| {
            VaultError::Format(format!(
                "a PRF output is {KEY_LEN} bytes, this one has {}",
                bytes.len()
            ))
        })?;
        Ok(Self(Zeroizing::new(array)))
    }
}

/// The WebAuthn PRF extension's salt transform, `SHA-256("WebAuthn PRF" || 0x00 || point)`: what
/// a browser sends to the authenticator's hmac-secret for the evaluation point `point`. The CTAP2
/// paths (USB and software) apply it themselves, so all three derive the same output.
pub fn prf_salt(point: &[u8]) -> [u8; KEY_LEN] {
    let mut hash = Sha256::new();
    hash.update(PRF_PREFIX);
    hash.update(point);
    hash.finalize().into()
}

/// A fresh random evaluation point for a newly wrapped credential.
pub fn new_point() -> Result<[u8; KEY_LEN], VaultError> {
    let mut point = [0u8; KEY_LEN];
    fill_random(&mut point)?;
    Ok(point)
}

/// A secret sealed to the vault: the HPKE encapsulated key and the ciphertext (tag included).
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed {
    pub enc: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sealed({} bytes)", self.ciphertext.len())
    }
}

impl Sealed {
    /// `v1.<enc hex>.<ciphertext hex>`: what goes into the keyring or a file.
    pub fn encode(&self) -> String {
        format!(
            "v1.{}.{}",
            hex::encode(&self.enc),
            hex::encode(&self.ciphertext)
        )
    }

    pub fn decode(text: &str) -> Result<Self, VaultError> {
        let bad = |what: &str| VaultError::Format(format!("sealed secret: {what}"));
        let mut parts = text.trim().split('.');
        if parts.next() != Some("v1") {
            return Err(bad("unknown version (expected `v1.`)"));
        }
        let enc = parts
            .next()
            .and_then(|p| hex::decode(p).ok())
            .ok_or_else(|| bad("bad encapsulated key"))?;
        let ciphertext = parts
            .next()
            .and_then(|p| hex::decode(p).ok())
            .ok_or_else(|| bad("bad ciphertext"))?;
        if parts.next().is_some() || enc.len() != KEY_LEN {
            return Err(bad("wrong shape"));
        }
        Ok(Self { enc, ciphertext })
    }
}

/// Seals `secret` to the vault under `label` (what the secret is, e.g. `source:work`). Needs
/// only the public half.
pub fn seal(public: &VaultPublic, label: &[u8], secret: &[u8]) -> Result<Sealed, VaultError> {
    let (enc, ciphertext) = hpke::single_shot_seal::<Aead128, Kdf, Kem>(
        &OpModeS::Base,
        &public.0,
        SEAL_INFO,
        secret,
        label,
    )
    .map_err(|e| VaultError::Format(format!("cannot seal: {e}")))?;
    Ok(Sealed {
        enc: enc.to_bytes().to_vec(),
        ciphertext,
    })
}

/// The vault's private half wrapped for one credential.
#[derive(Clone, PartialEq, Eq)]
pub struct Wrapped {
    /// The credential this wrap is for (its WebAuthn credential id).
    pub credential_id: Vec<u8>,
    /// The PRF evaluation point; the authenticator is asked at `prf_salt(point)`.
    pub point: [u8; KEY_LEN],
    pub nonce: [u8; NONCE_LEN],
    pub ciphertext: Vec<u8>,
    /// Whether the PRF output it was made with came from a user-verified touch (PIN or
    /// biometric). An authenticator's hmac-secret has two secrets per credential, one for
    /// touches with user verification and one for touches without (CTAP 2.1 §12.5,
    /// CredRandomWithUV / CredRandomWithoutUV), so a wrap made with one output opens only with
    /// that kind of touch: a touch lured over hidraw without the PIN yields nothing that opens
    /// a user-verified wrap. The flag itself is only a hint of which touch to ask for: set
    /// wrongly, the wrap simply does not open.
    pub user_verified: bool,
}

impl std::fmt::Debug for Wrapped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Wrapped(for {})", hex::encode(&self.credential_id))
    }
}

impl Wrapped {
    /// Unwraps the vault's private half with the credential's PRF output, and checks it is the
    /// private half of `public` (a wrap swapped in from another vault does not pass).
    pub fn unwrap(
        &self,
        public: &VaultPublic,
        prf_output: &PrfOutput,
    ) -> Result<VaultSecret, VaultError> {
        let cipher = wrapping_cipher(prf_output, &self.point)?;
        let aad = wrap_aad(&self.credential_id, public);
        let mut plain = cipher
            .decrypt(
                &Nonce::from(self.nonce),
                Payload {
                    msg: &self.ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| VaultError::Unwrap)?;
        let secret = VaultSecret::from_bytes(&plain);
        plain.zeroize();
        let secret = secret?;
        if secret.public() != public {
            return Err(VaultError::Unwrap);
        }
        Ok(secret)
    }
}

/// Fills `buf` from the system's random source.
fn fill_random(buf: &mut [u8]) -> Result<(), VaultError> {
    getrandom::fill(buf).map_err(|e| VaultError::Random(e.to_string()))
}

/// AES-256-GCM keyed with `HKDF-SHA256(salt = point, ikm = prf_output, info = WRAP_INFO)`.
fn wrapping_cipher(prf_output: &PrfOutput, point: &[u8; KEY_LEN]) -> Result<Aes256Gcm, VaultError> {
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    hkdf::Hkdf::<Sha256>::new(Some(point), prf_output.0.as_ref())
        .expand(WRAP_INFO, key.as_mut())
        .map_err(|e| VaultError::Format(format!("key derivation: {e}")))?;
    Ok(Aes256Gcm::new(&(*key).into()))
}

/// The wrap's associated data: the format, the credential and the vault it belongs to.
fn wrap_aad(credential_id: &[u8], public: &VaultPublic) -> Vec<u8> {
    let mut aad = Vec::with_capacity(WRAP_INFO.len() + 4 + credential_id.len() + KEY_LEN);
    aad.extend_from_slice(WRAP_INFO);
    // Credential ids are at most 1023 bytes (WebAuthn); the length keeps the fields apart.
    aad.extend_from_slice(
        &u32::try_from(credential_id.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    aad.extend_from_slice(credential_id);
    aad.extend_from_slice(&public.to_bytes());
    aad
}

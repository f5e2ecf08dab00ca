//! `vault.json`: the vault's public half and one wrap of its private half per credential.
//!
//! Nothing in it is secret: the wraps open only with a credential's hmac-secret output, which
//! never leaves the authenticator except inside a touch.

use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{PrfOutput, VaultError, VaultPublic, VaultSecret, Wrapped, KEY_LEN, NONCE_LEN};

/// The file's name in the state directory.
pub const VAULT_FILE: &str = "vault.json";

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileV1 {
    version: u32,
    public: String,
    wraps: Vec<WrapV1>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WrapV1 {
    credential_id: String,
    point: String,
    nonce: String,
    ciphertext: String,
    /// Absent in files written before wraps recorded it: those were all made with a touch
    /// without user verification.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    user_verified: bool,
}

/// The vault as stored: its public half and its wraps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultFile {
    pub public: VaultPublic,
    pub wraps: Vec<Wrapped>,
}

impl VaultFile {
    /// A vault with no wrap yet (the first key's wrap follows its registration touch).
    pub fn new(public: VaultPublic) -> Self {
        Self {
            public,
            wraps: Vec::new(),
        }
    }

    /// The wrap for `credential_id`, if the credential has one.
    pub fn wrap_for(&self, credential_id: &[u8]) -> Option<&Wrapped> {
        self.wraps.iter().find(|w| w.credential_id == credential_id)
    }

    /// Unwraps the private half with a touch of `credential_id` that produced `prf_output`.
    pub fn unwrap(
        &self,
        credential_id: &[u8],
        prf_output: &PrfOutput,
    ) -> Result<VaultSecret, VaultError> {
        self.wrap_for(credential_id)
            .ok_or(VaultError::Unwrap)?
            .unwrap(&self.public, prf_output)
    }

    /// Adds (or replaces) the wrap for the wrap's credential.
    pub fn put_wrap(&mut self, wrap: Wrapped) {
        self.remove_wrap(&wrap.credential_id);
        self.wraps.push(wrap);
    }

    /// Drops the wrap of a removed credential; whether there was one.
    pub fn remove_wrap(&mut self, credential_id: &[u8]) -> bool {
        let before = self.wraps.len();
        self.wraps.retain(|w| w.credential_id != credential_id);
        self.wraps.len() != before
    }

    pub fn to_json(&self) -> Result<String, VaultError> {
        let file = FileV1 {
            version: 1,
            public: self.public.to_hex(),
            wraps: self
                .wraps
                .iter()
                .map(|w| WrapV1 {
                    credential_id: hex::encode(&w.credential_id),
                    point: hex::encode(w.point),
                    nonce: hex::encode(w.nonce),
                    ciphertext: hex::encode(&w.ciphertext),
                    user_verified: w.user_verified,
                })
                .collect(),
        };
        serde_json::to_string_pretty(&file).map_err(|e| VaultError::Format(e.to_string()))
    }

    pub fn from_json(text: &str) -> Result<Self, VaultError> {
        let file: FileV1 =
            serde_json::from_str(text).map_err(|e| VaultError::Format(e.to_string()))?;
        if file.version != 1 {
            return Err(VaultError::Format(format!(
                "version {} is not known to this credagent (it reads version 1)",
                file.version
            )));
        }
        let public = VaultPublic::from_bytes(&hex_field("public", &file.public)?)?;
        let wraps = file
            .wraps
            .iter()
            .map(|w| {
                Ok(Wrapped {
                    credential_id: hex_field("credential_id", &w.credential_id)?,
                    point: fixed::<KEY_LEN>("point", &w.point)?,
                    nonce: fixed::<NONCE_LEN>("nonce", &w.nonce)?,
                    ciphertext: hex_field("ciphertext", &w.ciphertext)?,
                    user_verified: w.user_verified,
                })
            })
            .collect::<Result<_, VaultError>>()?;
        Ok(Self { public, wraps })
    }

    /// Reads `path`; `None` when there is no vault yet.
    pub fn load(path: &Path) -> Result<Option<Self>, VaultError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::from_json(&text).map(Some).map_err(|e| {
                VaultError::Format(format!(
                    "{}: {e}; restore it from a backup, or move it aside and register your keys again",
                    path.display()
                ))
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(VaultError::Format(format!("{}: {e}", path.display()))),
        }
    }

    /// Writes `path` atomically, mode 0600.
    pub fn save(&self, path: &Path) -> io::Result<()> {
        let text = self.to_json().map_err(io::Error::other)?;
        crate::util::write_atomic(path, text.as_bytes(), 0o600)
    }
}

fn hex_field(name: &str, text: &str) -> Result<Vec<u8>, VaultError> {
    hex::decode(text).map_err(|e| VaultError::Format(format!("{name}: {e}")))
}

fn fixed<const N: usize>(name: &str, text: &str) -> Result<[u8; N], VaultError> {
    hex_field(name, text)?
        .try_into()
        .map_err(|_| VaultError::Format(format!("{name}: expected {N} bytes")))
}

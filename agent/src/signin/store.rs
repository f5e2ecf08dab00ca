//! An `aws login` sign-in, kept sealed: the refresh token and the DPoP key it is bound to (and
//! the client and `login_session` they belong to) as one HPKE message to the vault's public
//! half, in `<state>/signin/<hex of the profile>.json` (0600). The AWS CLI keeps the same two
//! secrets in a plaintext file; here only a touch that unwraps the vault opens them, and the
//! 15-minute credentials they yield live in memory only.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::client::ClientId;
use super::dpop::DpopKey;
use crate::vault::{Sealed, VaultKeeper, VaultSecret};

/// The secrets of one sign-in.
pub struct LoginSecret {
    pub key: DpopKey,
    pub refresh_token: SecretString,
    pub client: ClientId,
    /// The `login_session` ARN the sign-in returned.
    pub login_session: String,
}

/// Why a sign-in was not sealed, or does not open.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "no touch has proven the vault since the agent started (a vault.json replaced behind \
         its back must receive nothing): touch once with `credctl confirm`, then sign in again"
    )]
    NotProven,
    #[error("no vault yet: register a key first (`credctl key add NAME`)")]
    NoVault,
    #[error(
        "the sealed sign-in of {profile} does not open ({detail}): run `credctl login {profile}`"
    )]
    Damaged { profile: String, detail: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The sealed form (inside the HPKE message).
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Plain {
    version: u32,
    /// The DPoP key's PKCS#8 document, base64.
    dpop_key: String,
    refresh_token: String,
    client_id: String,
    login_session: String,
}

/// The file.
#[derive(Serialize, Deserialize)]
struct File {
    version: u32,
    sealed: String,
}

/// Sealed sign-ins, one file per profile.
pub struct LoginStore {
    dir: PathBuf,
    vault: Arc<VaultKeeper>,
}

/// What binds a sealed sign-in to its profile: a file moved to another profile's name does
/// not open there.
fn label(profile: &str) -> Vec<u8> {
    format!("credagent signin login v1: {profile}").into_bytes()
}

impl LoginStore {
    /// The sign-ins kept under `state_dir`, sealed to `vault`.
    pub fn new(state_dir: &Path, vault: Arc<VaultKeeper>) -> LoginStore {
        LoginStore {
            dir: state_dir.join("signin"),
            vault,
        }
    }

    fn file(&self, profile: &str) -> PathBuf {
        self.dir.join(format!("{}.json", hex::encode(profile)))
    }

    /// Seals `secret` for `profile` (no touch: the vault's public half, once a touch proved it
    /// in this agent's life), replacing what was sealed before (a refresh's rotated token).
    pub fn seal(&self, profile: &str, secret: &LoginSecret) -> Result<(), StoreError> {
        use base64::Engine as _;
        let Some(public) = self.vault.proven_public() else {
            return Err(if self.vault.exists() {
                StoreError::NotProven
            } else {
                StoreError::NoVault
            });
        };
        let encode = |e: &dyn std::fmt::Display| StoreError::Damaged {
            profile: profile.to_owned(),
            detail: e.to_string(),
        };
        let mut fields = Plain {
            version: 1,
            dpop_key: base64::engine::general_purpose::STANDARD.encode(secret.key.pkcs8()),
            refresh_token: secret.refresh_token.expose_secret().to_owned(),
            client_id: secret.client.as_str().to_owned(),
            login_session: secret.login_session.clone(),
        };
        let plain = serde_json::to_vec(&fields).map(Zeroizing::new);
        // The copies of the two secrets are wiped, whatever serializing gave.
        zeroize::Zeroize::zeroize(&mut fields.dpop_key);
        zeroize::Zeroize::zeroize(&mut fields.refresh_token);
        let plain = plain.map_err(|e| encode(&e))?;
        let sealed =
            crate::vault::seal(&public, &label(profile), &plain).map_err(|e| encode(&e))?;
        let text = serde_json::to_string(&File {
            version: 1,
            sealed: sealed.encode(),
        })
        .map_err(|e| encode(&e))?;
        let path = self.file(profile);
        crate::util::create_private_dir(&self.dir)
            .and_then(|()| crate::util::write_atomic(&path, text.as_bytes(), 0o600))
            .map_err(|source| StoreError::Write { path, source })
    }

    /// Opens `profile`'s sealed sign-in with the vault a touch unwrapped; `None`: none sealed.
    pub fn open(
        &self,
        profile: &str,
        vault: &VaultSecret,
    ) -> Result<Option<LoginSecret>, StoreError> {
        use base64::Engine as _;
        let damaged = |detail: String| StoreError::Damaged {
            profile: profile.to_owned(),
            detail,
        };
        let text = match std::fs::read_to_string(self.file(profile)) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(damaged(e.to_string())),
        };
        let file: File = serde_json::from_str(&text).map_err(|e| damaged(e.to_string()))?;
        let sealed = Sealed::decode(&file.sealed).map_err(|e| damaged(e.to_string()))?;
        let opened = vault
            .open(&label(profile), &sealed)
            .map_err(|e| damaged(e.to_string()))?;
        let mut plain: Plain =
            serde_json::from_slice(opened.expose()).map_err(|e| damaged(e.to_string()))?;
        let der = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(&plain.dpop_key)
                .map_err(|e| damaged(e.to_string()))?,
        );
        zeroize::Zeroize::zeroize(&mut plain.dpop_key);
        let key = DpopKey::from_pkcs8(&der).map_err(|e| damaged(e.to_string()))?;
        let client = ClientId::parse(&plain.client_id)
            .ok_or_else(|| damaged(format!("unknown client {}", plain.client_id)))?;
        Ok(Some(LoginSecret {
            key,
            refresh_token: SecretString::from(plain.refresh_token),
            client,
            login_session: plain.login_session,
        }))
    }

    /// `credctl logout PROFILE`: the sealed sign-in is gone.
    pub fn forget(&self, profile: &str) -> std::io::Result<()> {
        match std::fs::remove_file(self.file(profile)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::vault::PrfOutput;
    use base64::Engine as _;

    fn secret() -> LoginSecret {
        LoginSecret {
            key: DpopKey::generate().unwrap(),
            refresh_token: SecretString::from("rt-SEALEDREFRESHTOKEN0123456789"),
            client: ClientId::SameDevice,
            login_session: "arn:aws:iam::123456789012:user/Admin".into(),
        }
    }

    #[test]
    fn a_sign_in_is_kept_sealed_and_opens_only_with_the_vault_for_its_profile() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let vault = Arc::new(VaultKeeper::load(dir.path()).unwrap());
        let store = LoginStore::new(dir.path(), vault.clone());
        assert!(matches!(
            store.seal("dev", &secret()).unwrap_err(),
            StoreError::NoVault
        ));
        let prf = PrfOutput::from_slice(&[1; 32]).unwrap();
        drop(vault.create(b"cred", [2; 32], &prf, false).unwrap());
        let login = secret();
        store.seal("dev", &login).unwrap();

        // The file holds neither secret, in any common encoding, and only its owner reads it.
        let path = store.file("dev");
        let text = std::fs::read_to_string(&path).unwrap();
        let key_b64 = base64::engine::general_purpose::STANDARD.encode(login.key.pkcs8());
        for needle in [
            login.refresh_token.expose_secret().to_owned(),
            hex::encode(login.refresh_token.expose_secret()),
            key_b64,
            hex::encode(login.key.pkcs8()),
        ] {
            assert!(!text.contains(&needle));
        }
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        let unwrapped = vault.unwrap(b"cred", &prf).unwrap();
        let opened = store.open("dev", &unwrapped).unwrap().unwrap();
        assert_eq!(
            opened.refresh_token.expose_secret(),
            login.refresh_token.expose_secret()
        );
        assert_eq!(opened.key.thumbprint(), login.key.thumbprint());
        assert_eq!(opened.client, ClientId::SameDevice);
        assert_eq!(opened.login_session, login.login_session);

        // Moved to another profile's name, it does not open there.
        std::fs::copy(&path, store.file("prod")).unwrap();
        assert!(matches!(
            store.open("prod", &unwrapped).err().unwrap(),
            StoreError::Damaged { .. }
        ));
        // Another vault's secret opens nothing.
        let other_dir = tempfile::tempdir().unwrap();
        let other = VaultKeeper::load(other_dir.path()).unwrap();
        let other_secret = other.create(b"cred", [3; 32], &prf, false).unwrap();
        assert!(store.open("dev", &other_secret).is_err());
        // Logged out: gone, and a second logout is no error.
        store.forget("dev").unwrap();
        assert!(store.open("dev", &unwrapped).unwrap().is_none());
        store.forget("dev").unwrap();
    }

    #[test]
    fn nothing_is_sealed_to_a_vault_no_touch_proved_since_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let prf = PrfOutput::from_slice(&[1; 32]).unwrap();
        drop(
            VaultKeeper::load(dir.path())
                .unwrap()
                .create(b"cred", [2; 32], &prf, false)
                .unwrap(),
        );
        let vault = Arc::new(VaultKeeper::load(dir.path()).unwrap());
        let store = LoginStore::new(dir.path(), vault.clone());
        assert!(matches!(
            store.seal("dev", &secret()).unwrap_err(),
            StoreError::NotProven
        ));
        assert!(!store.file("dev").exists());
        drop(vault.unwrap(b"cred", &prf).unwrap());
        store.seal("dev", &secret()).unwrap();
    }
}

//! [`VaultKeeper`]: the vault of one agent, as `vault.json` holds it, with the operations the
//! approval path and the sources need. It never holds the private half: `unwrap` hands it to the
//! caller, who drops it as soon as the operation that needed it is done.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use super::{PrfOutput, VaultError, VaultFile, VaultPublic, VaultSecret, KEY_LEN, VAULT_FILE};
use crate::util::LockExt;

/// The vault of this agent: loaded once at start-up, written through on every change. The copy
/// in memory is what counts while the agent runs: a `vault.json` rewritten behind its back
/// changes nothing until a restart (and then no registered key unwraps it).
pub struct VaultKeeper {
    path: PathBuf,
    file: Mutex<Option<VaultFile>>,
    /// Whether a touch proved, in this agent's life, that the public half in `file` belongs
    /// to a private half one of the user's keys unwraps (or created it). Until then nothing
    /// is sealed to it: a `vault.json` swapped behind the agent's back must receive nothing.
    proven: AtomicBool,
}

impl std::fmt::Debug for VaultKeeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultKeeper")
            .field("path", &self.path)
            .finish()
    }
}

/// A short, stable name for a vault: the first 16 hex digits of SHA-256 of its public half.
pub fn fingerprint(public: &VaultPublic) -> String {
    let digest = Sha256::digest(public.to_bytes());
    hex::encode(&digest[..8])
}

impl VaultKeeper {
    /// Loads `<state_dir>/vault.json` (none yet is fine; a damaged one is an error that says
    /// what to do).
    pub fn load(state_dir: &Path) -> Result<Self, VaultError> {
        let path = state_dir.join(VAULT_FILE);
        let file = VaultFile::load(&path)?;
        Ok(Self {
            path,
            file: Mutex::new(file),
            proven: AtomicBool::new(false),
        })
    }

    /// A keeper with no vault that writes nowhere it could matter (tests of other parts).
    #[cfg(test)]
    pub fn in_dir_for_tests(dir: &Path) -> Self {
        Self {
            path: dir.join(VAULT_FILE),
            file: Mutex::new(None),
            proven: AtomicBool::new(false),
        }
    }

    /// Whether a vault exists (a key with hmac-secret has sealed it).
    pub fn exists(&self) -> bool {
        self.file.locked().is_some()
    }

    /// The public half, to seal a new secret with: needs no touch.
    pub fn public(&self) -> Option<VaultPublic> {
        self.file.locked().as_ref().map(|f| f.public.clone())
    }

    /// The public half to seal a new secret with, once a touch has proven it in this agent's
    /// life ([`VaultKeeper::is_proven`]); `None` before: the secret must wait in memory.
    pub fn proven_public(&self) -> Option<VaultPublic> {
        if self.is_proven() {
            self.public()
        } else {
            None
        }
    }

    /// Whether a touch has unwrapped (or created) this vault since the agent started.
    pub fn is_proven(&self) -> bool {
        self.proven.load(Ordering::Acquire)
    }

    fn prove(&self) {
        self.proven.store(true, Ordering::Release);
    }

    /// The vault's fingerprint, shown by `status` so a replaced vault is visible.
    pub fn fingerprint(&self) -> Option<String> {
        self.public().map(|p| fingerprint(&p))
    }

    /// The PRF evaluation point of `credential_id`'s wrap, if it has one.
    pub fn point_for(&self, credential_id: &[u8]) -> Option<[u8; KEY_LEN]> {
        self.file
            .locked()
            .as_ref()
            .and_then(|f| f.wrap_for(credential_id).map(|w| w.point))
    }

    /// Whether `credential_id`'s wrap was made with a user-verified touch; `None` without a wrap.
    pub fn wrap_user_verified(&self, credential_id: &[u8]) -> Option<bool> {
        self.file
            .locked()
            .as_ref()
            .and_then(|f| f.wrap_for(credential_id).map(|w| w.user_verified))
    }

    /// How many credentials hold a wrap.
    pub fn wraps(&self) -> usize {
        self.file.locked().as_ref().map_or(0, |f| f.wraps.len())
    }

    /// The private half, unwrapped with the PRF output of a verified touch of `credential_id`.
    pub fn unwrap(
        &self,
        credential_id: &[u8],
        prf_output: &PrfOutput,
    ) -> Result<VaultSecret, VaultError> {
        let secret = match self.file.locked().as_ref() {
            Some(f) => f.unwrap(credential_id, prf_output)?,
            None => return Err(VaultError::Unwrap),
        };
        self.prove();
        Ok(secret)
    }

    /// Creates the vault, wrapped for its first credential. Refused if one exists: a second
    /// vault would strand every secret sealed to the first. `user_verified`: whether the touch
    /// that gave `prf_output` verified the user.
    pub fn create(
        &self,
        credential_id: &[u8],
        point: [u8; KEY_LEN],
        prf_output: &PrfOutput,
        user_verified: bool,
    ) -> Result<VaultSecret, VaultError> {
        let mut slot = self.file.locked();
        if slot.is_some() {
            return Err(VaultError::Format(
                "a vault exists already: add keys with a touch of a registered key".into(),
            ));
        }
        let secret = VaultSecret::generate()?;
        let mut file = VaultFile::new(secret.public().clone());
        let mut wrap = secret.wrap(credential_id, point, prf_output)?;
        wrap.user_verified = user_verified;
        file.put_wrap(wrap);
        file.save(&self.path).map_err(|e| self.write_error(&e))?;
        *slot = Some(file);
        self.prove();
        Ok(secret)
    }

    /// Wraps the vault's private half (`secret`, unwrapped by an authorizing touch) for a
    /// credential, replacing any wrap it had.
    pub fn add_wrap(
        &self,
        secret: &VaultSecret,
        credential_id: &[u8],
        point: [u8; KEY_LEN],
        prf_output: &PrfOutput,
        user_verified: bool,
    ) -> Result<(), VaultError> {
        let mut slot = self.file.locked();
        let Some(current) = slot.as_ref() else {
            return Err(VaultError::Unwrap);
        };
        if &current.public != secret.public() {
            return Err(VaultError::Unwrap);
        }
        let mut next = current.clone();
        let mut wrap = secret.wrap(credential_id, point, prf_output)?;
        wrap.user_verified = user_verified;
        next.put_wrap(wrap);
        next.save(&self.path).map_err(|e| self.write_error(&e))?;
        *slot = Some(next);
        Ok(())
    }

    /// Drops the wrap of a removed credential.
    pub fn remove_wrap(&self, credential_id: &[u8]) -> Result<(), VaultError> {
        let mut slot = self.file.locked();
        let Some(current) = slot.as_ref() else {
            return Ok(());
        };
        let mut next = current.clone();
        if !next.remove_wrap(credential_id) {
            return Ok(());
        }
        next.save(&self.path).map_err(|e| self.write_error(&e))?;
        *slot = Some(next);
        Ok(())
    }

    fn write_error(&self, e: &std::io::Error) -> VaultError {
        VaultError::Format(format!(
            "cannot write {}: {e}; free space or fix the permissions of the state directory",
            self.path.display()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prf(byte: u8) -> PrfOutput {
        PrfOutput::from_slice(&[byte; KEY_LEN]).unwrap()
    }

    #[test]
    fn created_with_one_key_unwrapped_by_it_and_added_to_by_it() {
        let dir = tempfile::tempdir().unwrap();
        let keeper = VaultKeeper::load(dir.path()).unwrap();
        assert!(!keeper.exists());
        assert_eq!(
            keeper.unwrap(b"a", &prf(1)).unwrap_err(),
            VaultError::Unwrap
        );
        let first = keeper.create(b"a", [7; KEY_LEN], &prf(1), false).unwrap();
        assert!(keeper.create(b"b", [8; KEY_LEN], &prf(2), false).is_err());
        assert_eq!(keeper.point_for(b"a"), Some([7; KEY_LEN]));
        assert_eq!(keeper.point_for(b"b"), None);

        let again = keeper.unwrap(b"a", &prf(1)).unwrap();
        assert_eq!(again.public(), first.public());
        assert_eq!(
            keeper.unwrap(b"a", &prf(9)).unwrap_err(),
            VaultError::Unwrap
        );

        keeper
            .add_wrap(&again, b"b", [8; KEY_LEN], &prf(2), true)
            .unwrap();
        // What was written is what a restarted agent reads.
        let reloaded = VaultKeeper::load(dir.path()).unwrap();
        assert_eq!(reloaded.wraps(), 2);
        assert_eq!(reloaded.wrap_user_verified(b"a"), Some(false));
        assert_eq!(reloaded.wrap_user_verified(b"b"), Some(true));
        assert_eq!(reloaded.wrap_user_verified(b"c"), None);
        assert_eq!(
            reloaded.unwrap(b"b", &prf(2)).unwrap().public(),
            first.public()
        );
        assert_eq!(reloaded.fingerprint(), keeper.fingerprint());
        assert_eq!(reloaded.fingerprint().unwrap().len(), 16);

        reloaded.remove_wrap(b"a").unwrap();
        assert!(VaultKeeper::load(dir.path())
            .unwrap()
            .unwrap(b"a", &prf(1))
            .is_err());
    }

    #[test]
    fn a_secret_of_another_vault_cannot_add_a_wrap() {
        let dir = tempfile::tempdir().unwrap();
        let keeper = VaultKeeper::load(dir.path()).unwrap();
        keeper.create(b"a", [7; KEY_LEN], &prf(1), false).unwrap();
        let stranger = VaultSecret::generate().unwrap();
        assert_eq!(
            keeper
                .add_wrap(&stranger, b"evil", [1; KEY_LEN], &prf(3), false)
                .unwrap_err(),
            VaultError::Unwrap
        );
        assert_eq!(keeper.wraps(), 1);
    }

    #[test]
    fn a_damaged_vault_file_is_an_error_that_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(VAULT_FILE), "{").unwrap();
        let err = VaultKeeper::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("restore it from a backup"), "{err}");
    }
}

//! The registry of FIDO keys: `<state_dir>/keys.json` (mode 0600), loaded strictly and written
//! atomically (temp file + fsync + rename + fsync of the directory).

use std::fs::{self, DirBuilder, File};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use uuid::Uuid;
use webauthn_rs::prelude::SecurityKey;

use super::error::ApprovalError;
use super::policy::AuthenticatorKind;
use crate::util::write_atomic;

/// The key store's file name inside the state directory.
pub const KEYS_FILE: &str = "keys.json";

/// The only format version this code reads and writes.
const FORMAT_VERSION: u32 = 1;

/// A keys.json larger than this is not ours (a few hundred keys take well under 1 MiB).
const MAX_FILE_SIZE: u64 = 4 << 20;

/// What `credctl key list` shows about one registered key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyInfo {
    /// The name given at registration.
    pub name: String,
    /// Registration time, unix seconds.
    pub created: u64,
    /// Time of the last successful approval, unix seconds.
    pub last_used: Option<u64>,
    /// The last signature counter seen from the key.
    pub counter: u32,
    /// Hardware, software or unknown (see `policy`).
    pub kind: AuthenticatorKind,
    /// The AAGUID the authenticator reported (absent when it sent zeros).
    pub aaguid: Option<Uuid>,
    /// The attestation statement format at registration ("packed", "none", ...).
    pub attestation_format: String,
    /// Whether the key verified the user (PIN/biometric) at registration.
    pub user_verified: bool,
    /// Whether the key holds a copy of the vault (its touch opens sealed sources).
    pub sealed: bool,
    /// Whether that copy opens only with user verification (PIN or biometric).
    pub verified_seal: bool,
}

/// One registered key as persisted.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeyRecord {
    pub name: String,
    pub created: u64,
    pub last_used: Option<u64>,
    pub counter: u32,
    pub kind: AuthenticatorKind,
    pub aaguid: Option<Uuid>,
    pub attestation_format: String,
    pub user_verified: bool,
    /// The credential as webauthn-rs persists it (public key, id, attestation, counter).
    pub credential: SecurityKey,
}

impl KeyRecord {
    pub(crate) fn info(&self) -> KeyInfo {
        KeyInfo {
            name: self.name.clone(),
            created: self.created,
            last_used: self.last_used,
            counter: self.counter,
            kind: self.kind,
            aaguid: self.aaguid,
            attestation_format: self.attestation_format.clone(),
            user_verified: self.user_verified,
            sealed: false,
            verified_seal: false,
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    version: u32,
    keys: Vec<KeyRecord>,
}

/// The registered keys, mirrored in memory; every change is written through with `save`.
pub(crate) struct KeyRegistry {
    /// `<state_dir>/keys.json`.
    path: PathBuf,
    /// In registration order.
    pub(crate) records: Vec<KeyRecord>,
}

impl KeyRegistry {
    /// Loads `<state_dir>/keys.json`. A missing file is an empty store; anything unreadable,
    /// malformed or writable by others is an error, and the file is never touched.
    pub(crate) fn load(state_dir: &Path) -> Result<Self, ApprovalError> {
        let path = state_dir.join(KEYS_FILE);
        remove_stale_temps(state_dir);
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                return Ok(Self {
                    path,
                    records: Vec::new(),
                });
            }
            Err(err) => return Err(ApprovalError::io("read", path, err)),
        };
        let meta = file
            .metadata()
            .map_err(|err| ApprovalError::io("read", &path, err))?;
        let corrupt = |detail: String| ApprovalError::StateCorrupt {
            path: path.clone(),
            detail,
        };
        if !meta.is_file() {
            return Err(corrupt("not a regular file".into()));
        }
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o022 != 0 {
            return Err(ApprovalError::StateInsecure { path, mode });
        }
        let mut text = String::new();
        (&mut file)
            .take(MAX_FILE_SIZE + 1)
            .read_to_string(&mut text)
            .map_err(|err| match err.kind() {
                io::ErrorKind::InvalidData => corrupt("not UTF-8 text".into()),
                _ => ApprovalError::io("read", &path, err),
            })?;
        if text.len() as u64 > MAX_FILE_SIZE {
            return Err(corrupt(format!("larger than {MAX_FILE_SIZE} bytes")));
        }
        let parsed: KeyFile =
            serde_json::from_str(&text).map_err(|err| corrupt(err.to_string()))?;
        if parsed.version != FORMAT_VERSION {
            return Err(corrupt(format!(
                "format version {} is not {FORMAT_VERSION}; a different credagent wrote it",
                parsed.version
            )));
        }
        for (i, record) in parsed.keys.iter().enumerate() {
            let earlier = parsed.keys.get(..i).unwrap_or_default();
            if earlier.iter().any(|r| r.name == record.name) {
                return Err(corrupt(format!("key name {} appears twice", record.name)));
            }
            if earlier
                .iter()
                .any(|r| r.credential.cred_id() == record.credential.cred_id())
            {
                return Err(corrupt(format!(
                    "the credential of {} appears twice",
                    record.name
                )));
            }
        }
        Ok(Self {
            path,
            records: parsed.keys,
        })
    }

    /// Writes the whole store atomically, creating the state directory (0700) if needed.
    pub(crate) fn save(&self) -> Result<(), ApprovalError> {
        let file = KeyFile {
            version: FORMAT_VERSION,
            keys: self.records.clone(),
        };
        let mut bytes =
            serde_json::to_vec_pretty(&file).map_err(|err| ApprovalError::Internal {
                reason: format!("cannot serialise the key store: {err}"),
            })?;
        bytes.push(b'\n');
        if let Some(dir) = self.path.parent() {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|err| ApprovalError::io("create", dir, err))?;
        }
        write_atomic(&self.path, &bytes, 0o600)
            .map_err(|err| ApprovalError::io("write", &self.path, err))
    }

    pub(crate) fn find(&self, name: &str) -> Option<&KeyRecord> {
        self.records.iter().find(|r| r.name == name)
    }

    pub(crate) fn find_by_credential(&self, cred_id: &[u8]) -> Option<&KeyRecord> {
        self.records
            .iter()
            .find(|r| r.credential.cred_id().as_slice() == cred_id)
    }

    pub(crate) fn find_by_credential_mut(&mut self, cred_id: &[u8]) -> Option<&mut KeyRecord> {
        self.records
            .iter_mut()
            .find(|r| r.credential.cred_id().as_slice() == cred_id)
    }

    #[cfg(test)]
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

/// Removes temp files left by a writer that was killed before its rename.
fn remove_stale_temps(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let prefix = crate::util::temp_prefix(KEYS_FILE);
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(&prefix) {
            continue;
        }
        if let Err(err) = fs::remove_file(entry.path()) {
            tracing::debug!(path = %entry.path().display(), %err, "cannot remove stale temp file");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_is_an_empty_store_and_save_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let store = KeyRegistry::load(&state).unwrap();
        assert!(store.records.is_empty());
        store.save().unwrap();
        let mode = fs::metadata(store.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = fs::metadata(&state).unwrap().permissions().mode() & 0o777;
        assert_eq!(dir_mode, 0o700);
        assert!(KeyRegistry::load(&state).unwrap().records.is_empty());
        // Only keys.json is left behind.
        let names: Vec<_> = fs::read_dir(&state)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(KEYS_FILE)]);
    }

    #[test]
    fn damaged_files_are_errors_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEYS_FILE);
        for (content, needle) in [
            ("{\"version\":1,\"keys\":[", "EOF"),
            ("", "EOF"),
            ("{\"version\":2,\"keys\":[]}", "format version 2"),
            ("{\"version\":1,\"keys\":[],\"extra\":1}", "unknown field"),
        ] {
            write_atomic(&path, content.as_bytes(), 0o600).unwrap();
            let err = KeyRegistry::load(dir.path()).err().unwrap();
            assert_eq!(err.code(), "state_corrupt", "{content}");
            let msg = err.to_string();
            assert!(msg.contains(&path.display().to_string()), "{msg}");
            assert!(msg.contains(needle), "{msg}");
            assert!(msg.contains("credctl key add"), "{msg}");
            assert_eq!(fs::read_to_string(&path).unwrap(), content);
        }
        fs::write(&path, [0xff, 0xfe]).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            KeyRegistry::load(dir.path()).err().unwrap().code(),
            "state_corrupt"
        );
    }

    #[test]
    fn writable_by_others_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEYS_FILE);
        write_atomic(&path, b"{\"version\":1,\"keys\":[]}", 0o600).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o620)).unwrap();
        let err = KeyRegistry::load(dir.path()).err().unwrap();
        assert_eq!(err.code(), "state_insecure");
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }

    #[test]
    fn stale_temp_files_are_removed_on_load() {
        let dir = tempfile::tempdir().unwrap();
        let stale = dir
            .path()
            .join(format!("{}deadbeef", crate::util::temp_prefix(KEYS_FILE)));
        fs::write(&stale, "half a file").unwrap();
        KeyRegistry::load(dir.path()).unwrap();
        assert!(!stale.exists());
    }
}

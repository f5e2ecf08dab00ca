//! The OS keyring that holds sources: Secret Service or Linux keyutils.
//!
//! Every keyring call blocks (D-Bus round trips, syscalls): the agent calls these from
//! `tokio::task::spawn_blocking`.

use std::fmt;
use std::sync::{Arc, Mutex};

use keyring_core::{CredentialStore, Entry, Error as KrError};
use secrecy::{ExposeSecret, SecretString};

use super::error::{Backend, SourceError};
use super::SourceCredentials;
use crate::util::LockExt;
use zeroize::{Zeroize, Zeroizing};

/// Keyring service name of source entries before they were namespaced per agent instance
/// (read only to migrate them); the user name is the source name.
pub const SERVICE: &str = "credagent";
/// Service and user of the entry listing the stored source names (keyrings can't enumerate
/// portably); the legacy service, before namespacing.
const INDEX_SERVICE: &str = "credagent-index";
const INDEX_USER: &str = "sources";
/// First line of a stored secret, so a foreign or future format is recognised.
const FORMAT_V1: &str = "credagent-source-v1";
/// First line of a sealed source: the access key id follows in clear (AWS does not treat it as
/// secret), then the secret access key sealed to the vault (`vault::Sealed::encode`).
const FORMAT_V2: &str = "credagent-source-v2";

/// A source as the keyring holds it.
pub enum Stored {
    /// Readable by anyone who can read the keyring: stored before sealing, or in a setup with
    /// no vault. Sealed at the first touch that opens it.
    Plain(SourceCredentials),
    /// The secret access key sealed to the vault: only a touch opens it.
    Sealed {
        access_key_id: String,
        sealed: crate::vault::Sealed,
    },
}

/// Source credentials in one keyring backend.
pub struct Keyring {
    backend: Backend,
    /// `credagent/<instance>`: every entry of this agent instance, apart from every other
    /// agent of the user (another HOME, the demo, the tests).
    service: String,
    /// `credagent-index/<instance>`.
    index_service: String,
    /// The OS keyring; `None` for the file backend.
    store: Option<Arc<CredentialStore>>,
    /// The directory of the file backend.
    files: Option<std::path::PathBuf>,
    /// Serialises read-modify-write of the index entry within this process.
    index_lock: Mutex<()>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("backend", &self.backend)
            .finish()
    }
}

impl Keyring {
    /// Connects to the backend (for Secret Service: opens the D-Bus session); entries live
    /// under `instance`, this agent instance's namespace.
    pub fn open(backend: Backend, instance: &str) -> Result<Keyring, SourceError> {
        let store: Arc<CredentialStore> = match backend {
            Backend::SecretService => {
                zbus_secret_service_keyring_store::Store::new().map_err(|e| {
                    SourceError::NoBackend {
                        backend,
                        detail: e.to_string(),
                    }
                })?
            }
            Backend::Keyutils => {
                linux_keyutils_keyring_store::Store::new().map_err(|e| classify(backend, "", e))?
            }
            Backend::File => {
                return Err(SourceError::NoBackend {
                    backend,
                    detail: "no state directory given".into(),
                })
            }
        };
        Ok(Keyring {
            backend,
            service: format!("{SERVICE}/{instance}"),
            index_service: format!("{INDEX_SERVICE}/{instance}"),
            store: Some(store),
            files: None,
            index_lock: Mutex::new(()),
        })
    }

    /// The file backend: sealed sources in `dir` (created 0700 on first write).
    pub fn open_files(dir: std::path::PathBuf) -> Keyring {
        Keyring {
            backend: Backend::File,
            service: String::new(),
            index_service: String::new(),
            store: None,
            files: Some(dir),
            index_lock: Mutex::new(()),
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Stores (or replaces) the credentials of source `name`.
    pub fn put(&self, name: &str, creds: &SourceCredentials) -> Result<(), SourceError> {
        validate_name(name)?;
        validate_creds(name, creds)?;
        if self.files.is_some() {
            return Err(SourceError::Platform {
                backend: self.backend,
                detail: "the file store keeps only sealed sources: register a security key \
                         first (`credctl key add`; its first touch creates the vault), then add \
                         the source again"
                    .into(),
            });
        }
        let payload = Zeroizing::new(format!(
            "{FORMAT_V1}\n{}\n{}",
            creds.access_key_id,
            creds.secret_access_key.expose_secret()
        ));
        self.write_entry(name, &payload)
    }

    /// Stores source `name` sealed: its access key id in clear, its secret sealed to the vault.
    pub fn put_sealed(
        &self,
        name: &str,
        access_key_id: &str,
        sealed: &crate::vault::Sealed,
    ) -> Result<(), SourceError> {
        validate_name(name)?;
        validate_creds(
            name,
            &SourceCredentials {
                access_key_id: access_key_id.to_owned(),
                secret_access_key: SecretString::from("sealed"),
            },
        )?;
        let payload = format!("{FORMAT_V2}\n{access_key_id}\n{}", sealed.encode());
        if let Some(dir) = &self.files {
            return super::file_store::write(dir, name, &payload);
        }
        self.write_entry(name, &payload)
    }

    /// Writes source `name`'s entry and lists it in the index.
    fn write_entry(&self, name: &str, payload: &str) -> Result<(), SourceError> {
        self.entry(&self.service, name)?
            .set_password(payload)
            .map_err(|e| classify(self.backend, name, e))?;
        self.update_index(|names| {
            if !names.iter().any(|n| n == name) {
                names.push(name.to_owned());
            }
        })
    }

    /// Reads the credentials of source `name` if they are stored unsealed; a sealed source is
    /// [`SourceError::Sealed`] (open it with the vault: [`Keyring::get_stored`]).
    pub fn get(&self, name: &str) -> Result<SourceCredentials, SourceError> {
        match self.get_stored(name)? {
            Stored::Plain(creds) => Ok(creds),
            Stored::Sealed { .. } => Err(SourceError::Sealed {
                name: name.to_owned(),
            }),
        }
    }

    /// Reads source `name` as stored, sealed or not.
    pub fn get_stored(&self, name: &str) -> Result<Stored, SourceError> {
        validate_name(name)?;
        let raw = Zeroizing::new(match &self.files {
            Some(dir) => super::file_store::read(dir, name)?,
            None => self
                .entry(&self.service, name)?
                .get_secret()
                .map_err(|e| classify(self.backend, name, e))?,
        });
        let corrupt = || SourceError::Corrupt {
            backend: self.backend,
            name: name.to_owned(),
        };
        let text = std::str::from_utf8(&raw).map_err(|_| corrupt())?;
        let mut lines = text.split('\n');
        match (lines.next(), lines.next(), lines.next(), lines.next()) {
            (Some(FORMAT_V1), Some(id), Some(secret), None)
                if !id.is_empty() && !secret.is_empty() =>
            {
                Ok(Stored::Plain(SourceCredentials {
                    access_key_id: id.to_owned(),
                    secret_access_key: SecretString::from(secret),
                }))
            }
            (Some(FORMAT_V2), Some(id), Some(sealed), None) if !id.is_empty() => {
                Ok(Stored::Sealed {
                    access_key_id: id.to_owned(),
                    sealed: crate::vault::Sealed::decode(sealed).map_err(|_| corrupt())?,
                })
            }
            _ => Err(corrupt()),
        }
    }

    /// Removes source `name`; `NotFound` if it was not there.
    pub fn delete(&self, name: &str) -> Result<(), SourceError> {
        validate_name(name)?;
        if let Some(dir) = &self.files {
            return super::file_store::delete(dir, name);
        }
        let result = self
            .entry(&self.service, name)?
            .delete_credential()
            .map_err(|e| classify(self.backend, name, e));
        // Drop the name from the index even when the entry had already vanished.
        self.update_index(|names| names.retain(|n| n != name))?;
        result
    }

    /// Names of the stored sources, sorted.
    pub fn list(&self) -> Result<Vec<String>, SourceError> {
        if let Some(dir) = &self.files {
            return super::file_store::list(dir);
        }
        let _guard = self.index_lock.locked();
        self.read_index()
    }

    /// Moves the sources stored before entries were namespaced into this instance, and
    /// returns how many moved. Each one is written and read back here before the old entry is
    /// deleted, so an interruption loses nothing (a second run finishes the move).
    pub fn adopt_legacy(&self) -> Result<usize, SourceError> {
        if self.files.is_some() {
            return Ok(0);
        }
        let names = self.read_index_of(INDEX_SERVICE)?;
        let mut moved = 0;
        for name in &names {
            let old = self.entry(SERVICE, name)?;
            let raw = match old.get_secret() {
                Ok(raw) => Zeroizing::new(raw),
                Err(KrError::NoEntry) => continue,
                Err(e) => return Err(classify(self.backend, name, e)),
            };
            let new = self.entry(&self.service, name)?;
            new.set_secret(&raw)
                .map_err(|e| classify(self.backend, name, e))?;
            let back = Zeroizing::new(
                new.get_secret()
                    .map_err(|e| classify(self.backend, name, e))?,
            );
            if *back != *raw {
                return Err(SourceError::Platform {
                    backend: self.backend,
                    detail: format!("source {name} did not read back as written; left in place"),
                });
            }
            let n = name.clone();
            self.update_index(|names| {
                if !names.contains(&n) {
                    names.push(n);
                }
            })?;
            match old.delete_credential() {
                Ok(()) | Err(KrError::NoEntry) => {}
                Err(e) => return Err(classify(self.backend, name, e)),
            }
            moved += 1;
        }
        match self.entry(INDEX_SERVICE, INDEX_USER)?.delete_credential() {
            Ok(()) | Err(KrError::NoEntry) => Ok(moved),
            Err(e) => Err(classify(self.backend, INDEX_USER, e)),
        }
    }

    fn entry(&self, service: &str, user: &str) -> Result<Entry, SourceError> {
        let store = self.store.as_ref().ok_or_else(|| SourceError::NoBackend {
            backend: self.backend,
            detail: "the file backend has no keyring entries".into(),
        })?;
        Entry::new_in_store(store, service, user).map_err(|e| classify(self.backend, user, e))
    }

    fn read_index(&self) -> Result<Vec<String>, SourceError> {
        self.read_index_of(&self.index_service)
    }

    fn read_index_of(&self, index_service: &str) -> Result<Vec<String>, SourceError> {
        match self.entry(index_service, INDEX_USER)?.get_password() {
            Ok(text) => {
                let mut names: Vec<String> = text
                    .lines()
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned)
                    .collect();
                names.sort();
                names.dedup();
                Ok(names)
            }
            Err(KrError::NoEntry) => Ok(Vec::new()),
            Err(e) => Err(classify(self.backend, INDEX_USER, e)),
        }
    }

    fn update_index(&self, change: impl FnOnce(&mut Vec<String>)) -> Result<(), SourceError> {
        // A poisoned lock only means another thread panicked mid-update; the index in the
        // keyring is still whole, so carry on.
        let _guard = self.index_lock.locked();
        let mut names = self.read_index()?;
        change(&mut names);
        names.sort();
        let entry = self.entry(&self.index_service, INDEX_USER)?;
        let result = if names.is_empty() {
            match entry.delete_credential() {
                Err(KrError::NoEntry) => Ok(()),
                other => other,
            }
        } else {
            entry.set_password(&names.join("\n"))
        };
        result.map_err(|e| classify(self.backend, INDEX_USER, e))
    }
}

fn validate_name(name: &str) -> Result<(), SourceError> {
    let reason = if name.is_empty() {
        "it is empty"
    } else if name.len() > 128 {
        "it is longer than 128 bytes"
    } else if name.chars().any(|c| c.is_control()) {
        "it contains a control character"
    } else {
        return Ok(());
    };
    Err(SourceError::InvalidName {
        name: name.to_owned(),
        reason,
    })
}

fn validate_creds(name: &str, creds: &SourceCredentials) -> Result<(), SourceError> {
    let bad = |reason| SourceError::InvalidCredentials {
        name: name.to_owned(),
        reason,
    };
    let id = &creds.access_key_id;
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(bad(
            "the access key id must be non-empty letters and digits",
        ));
    }
    let secret = creds.secret_access_key.expose_secret();
    if secret.is_empty() || secret.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(bad(
            "the secret access key must be non-empty, without spaces or newlines",
        ));
    }
    Ok(())
}

fn classify(backend: Backend, name: &str, err: KrError) -> SourceError {
    match err {
        KrError::NoEntry => SourceError::NotFound {
            backend,
            name: name.to_owned(),
        },
        KrError::NoStorageAccess(e) if backend == Backend::Keyutils => SourceError::NoBackend {
            backend,
            detail: e.to_string(),
        },
        KrError::NoStorageAccess(e) => SourceError::Locked {
            backend,
            detail: e.to_string(),
        },
        KrError::NoDefaultStore => SourceError::NoBackend {
            backend,
            detail: "no credential store".into(),
        },
        KrError::BadEncoding(mut bytes) | KrError::BadDataFormat(mut bytes, _) => {
            bytes.zeroize();
            SourceError::Corrupt {
                backend,
                name: name.to_owned(),
            }
        }
        other => SourceError::Platform {
            backend,
            detail: other.to_string(),
        },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn names_and_credentials_are_validated() {
        assert!(validate_name("").is_err());
        assert!(validate_name("a\nb").is_err());
        assert!(validate_name("my-source.prod_1").is_ok());
        let bad = SourceCredentials {
            access_key_id: "AK ID".into(),
            secret_access_key: SecretString::from("x"),
        };
        assert!(validate_creds("s", &bad).is_err());
    }
}

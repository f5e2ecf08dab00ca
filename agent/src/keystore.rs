//! Source credentials (long-lived access keys) in the OS keyring — Secret Service or Linux
//! keyutils — plus the atomic rewrite of `~/.aws/credentials` after an import.
//!
//! Every keyring call blocks (D-Bus round trips, syscalls): the agent calls these from
//! `tokio::task::spawn_blocking`.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use keyring_core::{CredentialStore, Entry, Error as KrError};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

/// Keyring service name of every source entry; the user name is the source name.
pub const SERVICE: &str = "credagent";
/// Service and user of the entry listing the stored source names (keyrings can't enumerate
/// portably).
const INDEX_SERVICE: &str = "credagent-index";
const INDEX_USER: &str = "sources";
/// First line of a stored secret, so a foreign or future format is recognised.
const FORMAT_V1: &str = "credagent-source-v1";

/// The long-lived keys of one source profile.
#[derive(Clone)]
pub struct SourceCredentials {
    pub access_key_id: String,
    pub secret_access_key: SecretString,
}

impl fmt::Debug for SourceCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"** redacted **")
            .finish()
    }
}

/// Which keyring holds the source credentials (`keyring = "..."` in config.toml).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    /// freedesktop Secret Service over D-Bus (gnome-keyring, KeePassXC…).
    SecretService,
    /// Linux kernel keyutils, in the session keyring.
    Keyutils,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::SecretService => "secret-service",
            Backend::Keyutils => "keyutils",
        })
    }
}

/// Keyring errors, each with the advice the user needs.
#[derive(Debug, thiserror::Error)]
pub enum KeystoreError {
    #[error("no {backend} keyring available ({detail}): {}", no_backend_advice(*.backend))]
    NoBackend { backend: Backend, detail: String },
    #[error("the {backend} keyring is locked ({detail}): unlock your keyring (gnome-keyring-daemon --unlock) or set keyring = \"keyutils\" in config.toml")]
    Locked { backend: Backend, detail: String },
    #[error("no source credentials named `{name}` in the {backend} keyring: add them with `credctl source add {name}`")]
    NotFound { backend: Backend, name: String },
    #[error("the {backend} keyring entry for source `{name}` is not in credagent's format: remove it and add it again with `credctl source add {name}`")]
    Corrupt { backend: Backend, name: String },
    #[error("invalid source name `{name}`: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("invalid credentials for source `{name}`: {reason}")]
    InvalidCredentials { name: String, reason: &'static str },
    #[error("{backend} keyring failure: {detail}")]
    Platform { backend: Backend, detail: String },
    #[error("cannot rewrite {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn no_backend_advice(backend: Backend) -> &'static str {
    match backend {
        Backend::SecretService => "start a Secret Service (gnome-keyring-daemon --components=secrets) in this D-Bus session, or set keyring = \"keyutils\" in config.toml",
        Backend::Keyutils => "run the agent inside a session keyring (keyctl session -) or set keyring = \"secret-service\" in config.toml",
    }
}

/// Source credentials in one keyring backend.
pub struct Keystore {
    backend: Backend,
    store: Arc<CredentialStore>,
    /// Serialises read-modify-write of the index entry within this process.
    index_lock: Mutex<()>,
}

impl fmt::Debug for Keystore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keystore")
            .field("backend", &self.backend)
            .finish()
    }
}

impl Keystore {
    /// Connects to the backend (for Secret Service: opens the D-Bus session).
    pub fn open(backend: Backend) -> Result<Keystore, KeystoreError> {
        let store: Arc<CredentialStore> = match backend {
            Backend::SecretService => {
                zbus_secret_service_keyring_store::Store::new().map_err(|e| {
                    KeystoreError::NoBackend {
                        backend,
                        detail: e.to_string(),
                    }
                })?
            }
            Backend::Keyutils => {
                linux_keyutils_keyring_store::Store::new().map_err(|e| classify(backend, "", e))?
            }
        };
        Ok(Keystore {
            backend,
            store,
            index_lock: Mutex::new(()),
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Stores (or replaces) the credentials of source `name`.
    pub fn put(&self, name: &str, creds: &SourceCredentials) -> Result<(), KeystoreError> {
        validate_name(name)?;
        validate_creds(name, creds)?;
        let payload = Zeroizing::new(format!(
            "{FORMAT_V1}\n{}\n{}",
            creds.access_key_id,
            creds.secret_access_key.expose_secret()
        ));
        self.entry(SERVICE, name)?
            .set_password(&payload)
            .map_err(|e| classify(self.backend, name, e))?;
        self.update_index(|names| {
            if !names.iter().any(|n| n == name) {
                names.push(name.to_owned());
            }
        })
    }

    /// Reads the credentials of source `name`.
    pub fn get(&self, name: &str) -> Result<SourceCredentials, KeystoreError> {
        validate_name(name)?;
        let raw = Zeroizing::new(
            self.entry(SERVICE, name)?
                .get_secret()
                .map_err(|e| classify(self.backend, name, e))?,
        );
        let corrupt = || KeystoreError::Corrupt {
            backend: self.backend,
            name: name.to_owned(),
        };
        let text = std::str::from_utf8(&raw).map_err(|_| corrupt())?;
        let mut lines = text.split('\n');
        match (lines.next(), lines.next(), lines.next(), lines.next()) {
            (Some(FORMAT_V1), Some(id), Some(secret), None)
                if !id.is_empty() && !secret.is_empty() =>
            {
                Ok(SourceCredentials {
                    access_key_id: id.to_owned(),
                    secret_access_key: SecretString::from(secret),
                })
            }
            _ => Err(corrupt()),
        }
    }

    /// Removes source `name`; `NotFound` if it was not there.
    pub fn delete(&self, name: &str) -> Result<(), KeystoreError> {
        validate_name(name)?;
        let result = self
            .entry(SERVICE, name)?
            .delete_credential()
            .map_err(|e| classify(self.backend, name, e));
        // Drop the name from the index even when the entry had already vanished.
        self.update_index(|names| names.retain(|n| n != name))?;
        result
    }

    /// Names of the stored sources, sorted.
    pub fn list(&self) -> Result<Vec<String>, KeystoreError> {
        let _guard = self.index_lock.lock().unwrap_or_else(|p| p.into_inner());
        self.read_index()
    }

    fn entry(&self, service: &str, user: &str) -> Result<Entry, KeystoreError> {
        Entry::new_in_store(&self.store, service, user).map_err(|e| classify(self.backend, user, e))
    }

    fn read_index(&self) -> Result<Vec<String>, KeystoreError> {
        match self.entry(INDEX_SERVICE, INDEX_USER)?.get_password() {
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

    fn update_index(&self, change: impl FnOnce(&mut Vec<String>)) -> Result<(), KeystoreError> {
        // A poisoned lock only means another thread panicked mid-update; the index in the
        // keyring is still whole, so carry on.
        let _guard = self.index_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut names = self.read_index()?;
        change(&mut names);
        names.sort();
        let entry = self.entry(INDEX_SERVICE, INDEX_USER)?;
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

fn validate_name(name: &str) -> Result<(), KeystoreError> {
    let reason = if name.is_empty() {
        "it is empty"
    } else if name.len() > 128 {
        "it is longer than 128 bytes"
    } else if name.chars().any(|c| c.is_control()) {
        "it contains a control character"
    } else {
        return Ok(());
    };
    Err(KeystoreError::InvalidName {
        name: name.to_owned(),
        reason,
    })
}

fn validate_creds(name: &str, creds: &SourceCredentials) -> Result<(), KeystoreError> {
    let bad = |reason| KeystoreError::InvalidCredentials {
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

fn classify(backend: Backend, name: &str, err: KrError) -> KeystoreError {
    match err {
        KrError::NoEntry => KeystoreError::NotFound {
            backend,
            name: name.to_owned(),
        },
        KrError::NoStorageAccess(e) if backend == Backend::Keyutils => KeystoreError::NoBackend {
            backend,
            detail: e.to_string(),
        },
        KrError::NoStorageAccess(e) => KeystoreError::Locked {
            backend,
            detail: e.to_string(),
        },
        KrError::NoDefaultStore => KeystoreError::NoBackend {
            backend,
            detail: "no credential store".into(),
        },
        KrError::BadEncoding(mut bytes) | KrError::BadDataFormat(mut bytes, _) => {
            bytes.zeroize();
            KeystoreError::Corrupt {
                backend,
                name: name.to_owned(),
            }
        }
        other => KeystoreError::Platform {
            backend,
            detail: other.to_string(),
        },
    }
}

/// Rewrites a shared credentials file without the `[profile]` section(s), keeping every other
/// byte. Comment and blank lines right before the next section stay (they usually describe
/// it). Atomic: temp file in the same directory, fsync, rename, fsync of the directory; the
/// file keeps its mode. Returns whether a section was removed.
pub fn rewrite_credentials_file_without(path: &Path, profile: &str) -> Result<bool, KeystoreError> {
    let io = |source| KeystoreError::Io {
        path: path.to_path_buf(),
        source,
    };
    // Follow a symlink so the link itself survives the rename.
    let target = std::fs::canonicalize(path).map_err(io)?;
    let original = Zeroizing::new(std::fs::read(&target).map_err(io)?);
    let Some(rewritten) = without_section(&original, profile) else {
        return Ok(false);
    };
    let rewritten = Zeroizing::new(rewritten);
    let mode = {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(&target).map_err(io)?.permissions().mode() & 0o7777
    };
    let dir = target.parent().unwrap_or(Path::new("."));
    let file_name = target.file_name().map(|n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(
        ".{}.credagent-{:016x}",
        file_name.unwrap_or_default(),
        rand::random::<u64>()
    ));
    let write = || -> std::io::Result<()> {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&rewritten)?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        std::fs::rename(&tmp, &target)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(|e| {
        // Best effort: the temp file may not exist if the open failed.
        let _ = std::fs::remove_file(&tmp);
        io(e)
    })?;
    Ok(true)
}

/// The section header name on this line, if it is one (`[name]`, spaces allowed inside).
fn section_name(line: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(line).ok()?.trim();
    let inner = text.strip_prefix('[')?;
    let end = inner.find(']')?;
    Some(inner[..end].trim())
}

fn is_comment_or_blank(line: &[u8]) -> bool {
    let text = String::from_utf8_lossy(line);
    let t = text.trim();
    t.is_empty() || t.starts_with('#') || t.starts_with(';')
}

/// `content` without every `[profile]` section, or `None` if there was none.
fn without_section(content: &[u8], profile: &str) -> Option<Vec<u8>> {
    // Lines with their terminators, so joining them gives back the exact bytes.
    let lines: Vec<&[u8]> = content.split_inclusive(|&b| b == b'\n').collect();
    let mut keep = vec![true; lines.len()];
    let mut removed = false;
    let mut i = 0;
    while i < lines.len() {
        if section_name(lines[i]) != Some(profile) {
            i += 1;
            continue;
        }
        removed = true;
        let mut end = i + 1;
        while end < lines.len() && section_name(lines[end]).is_none() {
            end += 1;
        }
        // Leave the comments/blank lines that lead into the next section.
        let mut cut = end;
        if end < lines.len() {
            while cut > i + 1 && is_comment_or_blank(lines[cut - 1]) {
                cut -= 1;
            }
        }
        keep[i..cut].iter_mut().for_each(|k| *k = false);
        i = end;
    }
    removed.then(|| {
        lines
            .iter()
            .zip(&keep)
            .filter(|(_, k)| **k)
            .flat_map(|(l, _)| l.iter().copied())
            .collect()
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_secret() {
        let c = SourceCredentials {
            access_key_id: "AKID".into(),
            secret_access_key: SecretString::from("hunter2"),
        };
        let s = format!("{c:?}");
        assert!(s.contains("AKID") && !s.contains("hunter2"), "{s}");
    }

    #[test]
    fn removes_only_the_section() {
        let input = "# my creds\n[default]\naws_access_key_id = A\naws_secret_access_key = S\n\n# work account\n[work]\naws_access_key_id = W\r\n; trailing\n[default]\nx=1\n[last]\nk = v";
        let out = without_section(input.as_bytes(), "default").unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "# my creds\n\n# work account\n[work]\naws_access_key_id = W\r\n; trailing\n[last]\nk = v"
        );
        assert!(without_section(input.as_bytes(), "absent").is_none());
        let out = without_section(input.as_bytes(), "last").unwrap();
        assert!(String::from_utf8(out).unwrap().ends_with("x=1\n"));
    }

    #[test]
    fn rewrite_is_atomic_and_keeps_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials");
        std::fs::write(&path, "[a]\nk=1\n\n[b]\nk=2\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(rewrite_credentials_file_without(&link, "a").unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "\n[b]\nk=2\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert!(!rewrite_credentials_file_without(&path, "a").unwrap());
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 2, "temp file left behind");
    }

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

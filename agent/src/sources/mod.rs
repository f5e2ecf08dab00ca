//! Sources: where a role chain starts. An IAM user's access key, kept in the OS keyring
//! (`keyring`, `access_key`) or, where none exists, sealed in files (`file_store`); the
//! vocabulary every source shares, Identity Center's included (`error`). [`SourceStore`] opens
//! the keyring on first use and is what the sessions read a stored source through.

mod access_key;
mod error;
mod file_store;
mod keyring;

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::DirBuilderExt;
use std::sync::{Arc, Mutex};

pub use access_key::{rewrite_credentials_file_without, SourceCredentials};
pub use error::{Backend, SourceError, SsoError};
pub use keyring::{Keyring, Stored, SERVICE};
use secrecy::{ExposeSecret, SecretString};

use crate::util::LockExt;
use crate::vault::{Locked, VaultKeeper, VaultPublic, VaultSecret};

/// The file in the state directory that names this agent instance's keyring namespace.
pub const INSTANCE_FILE: &str = "instance";

/// This agent instance's keyring namespace: the id kept in `<state_dir>/instance`, made (128
/// random bits) on first use. With it, two HOMEs of one user, the demo and the tests never see
/// or overwrite one another's sources, even in the uid-wide persistent kernel keyring.
/// The flag says whether the id was just made, i.e. this state directory had none before.
pub fn instance_id(state_dir: &std::path::Path) -> std::io::Result<(String, bool)> {
    let path = state_dir.join(INSTANCE_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let id = text.trim();
            if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Ok((id.to_owned(), false));
            }
            Err(std::io::Error::other(format!(
                "{} is damaged: it must hold the 32 hex digits naming this agent's sources in \
                 the keyring; restore it from a backup (without it the sources stored under it \
                 cannot be found)",
                path.display()
            )))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut raw = [0u8; 16];
            getrandom::fill(&mut raw).map_err(std::io::Error::other)?;
            let id = hex::encode(raw);
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(state_dir)?;
            crate::util::write_atomic(&path, id.as_bytes(), 0o600)?;
            Ok((id, true))
        }
        Err(e) => Err(e),
    }
}

/// The keyring, opened on first use so the agent starts even where no keyring is reachable.
pub struct SourceStore {
    backend: Backend,
    /// This agent instance's namespace in the keyring.
    instance: String,
    /// Move sources stored before namespacing into this instance on first open (an existing
    /// installation upgrading).
    adopt_legacy: bool,
    /// The keyring once a first call opened it.
    keyring: Mutex<Option<Arc<Keyring>>>,
    /// Where the file backend keeps sources (`<state_dir>/sources`).
    file_dir: Option<std::path::PathBuf>,
    /// The vault sources are sealed to.
    vault: Arc<VaultKeeper>,
    /// Sources a touch opened, while a session may need them: in locked, zeroized memory.
    opened: Mutex<HashMap<String, Opened>>,
}

/// A sealed source opened by a touch.
struct Opened {
    access_key_id: String,
    secret: Locked,
}

/// What a sealed source's secret is bound to: opening it under another name or key id fails,
/// so a sealed blob copied into another source's entry does not open there.
pub fn seal_label(name: &str, access_key_id: &str) -> Vec<u8> {
    let mut label = b"credagent source\0".to_vec();
    label.extend_from_slice(name.as_bytes());
    label.push(0);
    label.extend_from_slice(access_key_id.as_bytes());
    label
}

/// Seals `creds` to `public` and stores them as source `name`.
fn put_sealed(
    keyring: &Keyring,
    public: &VaultPublic,
    name: &str,
    creds: &SourceCredentials,
) -> Result<(), SourceError> {
    let sealed = crate::vault::seal(
        public,
        &seal_label(name, &creds.access_key_id),
        creds.secret_access_key.expose_secret().as_bytes(),
    )
    .map_err(|e| SourceError::Unseal {
        name: name.to_owned(),
        detail: e.to_string(),
    })?;
    keyring.put_sealed(name, &creds.access_key_id, &sealed)
}

impl SourceStore {
    pub fn new(
        backend: Backend,
        instance: String,
        adopt_legacy: bool,
        vault: Arc<VaultKeeper>,
    ) -> Self {
        SourceStore {
            backend,
            instance,
            adopt_legacy,
            keyring: Mutex::new(None),
            file_dir: None,
            vault,
            opened: Mutex::new(HashMap::new()),
        }
    }

    /// Where the file backend keeps sources: `<state_dir>/sources`.
    pub fn with_state_dir(mut self, state_dir: &std::path::Path) -> Self {
        self.file_dir = Some(state_dir.join("sources"));
        self
    }

    /// The vault sources are sealed to.
    pub fn vault(&self) -> &Arc<VaultKeeper> {
        &self.vault
    }

    /// Stores source `name` (blocking): sealed to the vault when there is one (sealing takes
    /// only the public half, but only a public half a touch has proven in this agent's life),
    /// else unsealed until a key seals the vault. Returns whether it was sealed.
    pub fn store(
        &self,
        keyring: &Keyring,
        name: &str,
        creds: &SourceCredentials,
    ) -> Result<bool, SourceError> {
        if let (Some(fingerprint), false) = (self.vault.fingerprint(), self.vault.is_proven()) {
            return Err(SourceError::VaultUnproven {
                name: name.to_owned(),
                fingerprint,
            });
        }
        self.forget(name);
        match self.vault.proven_public() {
            Some(public) => put_sealed(keyring, &public, name, creds).map(|()| true),
            None => keyring.put(name, creds).map(|()| false),
        }
    }

    /// Opens source `name` with the vault's private half, unwrapped by a verified touch, and
    /// keeps it in memory for the sessions that need it (blocking). A source stored unsealed
    /// is sealed now (migration) to the vault `secret` belongs to, and read back before use.
    pub fn unseal(
        &self,
        keyring: &Keyring,
        name: &str,
        secret: &VaultSecret,
    ) -> Result<(), SourceError> {
        self.unseal_expecting(keyring, name, secret, None)
    }

    /// [`SourceStore::unseal`], refusing (before anything is sealed or kept in memory) an entry
    /// that holds another access key than `expected`, the one the touch was shown: an entry
    /// replaced behind the agent's back never reaches the sessions that share the source.
    pub fn unseal_expecting(
        &self,
        keyring: &Keyring,
        name: &str,
        secret: &VaultSecret,
        expected: Option<&str>,
    ) -> Result<(), SourceError> {
        let failed = |detail: String| SourceError::Unseal {
            name: name.to_owned(),
            detail,
        };
        let stored = keyring.get_stored(name)?;
        if let Some(expected) = expected {
            let holds = match &stored {
                Stored::Sealed { access_key_id, .. } => access_key_id.as_str(),
                Stored::Plain(creds) => creds.access_key_id.as_str(),
            };
            if holds != expected {
                return Err(failed(format!(
                    "it now holds access key {holds}, not {expected}, the key your touch was \
                     shown: it was replaced since; nothing was opened. If you replaced it, open \
                     the role again and confirm with --accept-change"
                )));
            }
        }
        let (access_key_id, sealed) = match stored {
            Stored::Sealed {
                access_key_id,
                sealed,
            } => (access_key_id, sealed),
            Stored::Plain(creds) => {
                put_sealed(keyring, secret.public(), name, &creds)?;
                tracing::info!(source = name, "sealed a source stored before sealing");
                match keyring.get_stored(name)? {
                    Stored::Sealed {
                        access_key_id,
                        sealed,
                    } => (access_key_id, sealed),
                    Stored::Plain(_) => {
                        return Err(failed("the keyring kept the unsealed copy".into()))
                    }
                }
            }
        };
        let opened = secret
            .open(&seal_label(name, &access_key_id), &sealed)
            .map_err(|e| {
                failed(format!(
                    "{e}: it was sealed to another vault than the one your key unwraps now \
                     (vault {}). If that fingerprint is not the one you know, vault.json was \
                     replaced: restore it from a backup and restart the agent, and do not add \
                     the source again (it would be sealed to the replacement). Only if you \
                     started over on purpose: `credctl source add {name} --replace`",
                    crate::vault::fingerprint(secret.public())
                ))
            })?;
        if std::str::from_utf8(opened.expose()).is_err() {
            return Err(failed("the opened secret is not text".into()));
        }
        self.opened.locked().insert(
            name.to_owned(),
            Opened {
                access_key_id,
                secret: opened,
            },
        );
        Ok(())
    }

    /// The credentials of source `name` (blocking): opened by a touch, or stored unsealed.
    pub fn lookup(&self, keyring: &Keyring, name: &str) -> Result<SourceCredentials, SourceError> {
        if let Some(o) = self.opened.locked().get(name) {
            let text = std::str::from_utf8(o.secret.expose()).map_err(|_| SourceError::Unseal {
                name: name.to_owned(),
                detail: "the opened secret is not text".into(),
            })?;
            return Ok(SourceCredentials {
                access_key_id: o.access_key_id.clone(),
                secret_access_key: SecretString::from(text),
            });
        }
        keyring.get(name)
    }

    /// `sealed`, `open` or `unsealed`, for `source list`.
    pub fn state(&self, stored: &Stored, name: &str) -> &'static str {
        match stored {
            Stored::Plain(_) => "unsealed",
            Stored::Sealed { .. } if self.opened.locked().contains_key(name) => "open",
            Stored::Sealed { .. } => "sealed",
        }
    }

    /// Wipes the opened copy of source `name`.
    pub fn forget(&self, name: &str) {
        self.opened.locked().remove(name);
    }

    /// Wipes every opened source (lock); returns how many were open.
    pub fn forget_all(&self) -> usize {
        let all = std::mem::take(&mut *self.opened.locked());
        all.len()
    }

    /// Wipes the opened sources no session in `in_use` needs any more.
    pub fn retain_opened(&self, in_use: &HashSet<String>) {
        self.opened.locked().retain(|name, _| {
            let keep = in_use.contains(name);
            if !keep {
                tracing::debug!(source = %name, "no session needs this source: wiped");
            }
            keep
        });
    }

    /// The backend `config` names; without one, Secret Service where a session bus exists,
    /// else keyutils.
    pub fn backend_for(configured: Option<Backend>) -> Backend {
        match configured {
            Some(b) => b,
            None if std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some() => {
                Backend::SecretService
            }
            None => Backend::Keyutils,
        }
    }

    /// The keyring backend in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The open keyring (blocking: call from a blocking thread).
    pub fn get(&self) -> Result<Arc<Keyring>, SourceError> {
        let mut slot = self.keyring.locked();
        if let Some(k) = slot.as_ref() {
            return Ok(k.clone());
        }
        let k = Arc::new(match (self.backend, &self.file_dir) {
            (Backend::File, Some(dir)) => Keyring::open_files(dir.clone()),
            (backend, _) => Keyring::open(backend, &self.instance)?,
        });
        if self.adopt_legacy {
            match k.adopt_legacy() {
                Ok(0) => {}
                Ok(n) => tracing::info!(sources = n, "moved sources stored before namespacing"),
                Err(e) => tracing::warn!(error = %e, "cannot move the older sources yet"),
            }
        }
        *slot = Some(k.clone());
        Ok(k)
    }

    /// Runs `f` on the open keyring in a blocking thread.
    pub async fn with<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Keyring) -> Result<T, SourceError> + Send + 'static,
    ) -> Result<T, SourceError> {
        self.with_store(move |_, k| f(k)).await
    }

    /// Runs `f` on this store and its open keyring in a blocking thread.
    pub async fn with_store<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&SourceStore, &Keyring) -> Result<T, SourceError> + Send + 'static,
    ) -> Result<T, SourceError> {
        let this = self.clone();
        let backend = self.backend;
        tokio::task::spawn_blocking(move || f(&this, &*this.get()?))
            .await
            .map_err(|e| SourceError::Platform {
                backend,
                detail: format!("keyring task failed: {e}"),
            })?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_instance_id_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let (id, made) = instance_id(&state).unwrap();
        assert!(made);
        assert_eq!(id.len(), 32);
        assert_eq!(instance_id(&state).unwrap(), (id.clone(), false));
        let other = tempfile::tempdir().unwrap();
        assert_ne!(
            instance_id(other.path()).unwrap().0,
            id,
            "every state directory its own"
        );
        std::fs::write(state.join(INSTANCE_FILE), "junk").unwrap();
        let err = instance_id(&state).unwrap_err().to_string();
        assert!(err.contains("damaged"), "{err}");
    }

    #[test]
    fn the_file_store_keeps_only_sealed_sources_in_private_files() {
        use crate::vault::PrfOutput;
        use std::os::unix::fs::PermissionsExt;

        let dir = tempfile::tempdir().unwrap();
        let vault = Arc::new(VaultKeeper::load(dir.path()).unwrap());
        let store = SourceStore::new(Backend::File, "unused".into(), false, vault.clone())
            .with_state_dir(dir.path());
        let keyring = store.get().unwrap();
        let secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYFILESTORE";
        let creds = SourceCredentials {
            access_key_id: "AKIDFILE1".into(),
            secret_access_key: SecretString::from(secret),
        };
        // Without a vault there is nothing to seal to, and plain text is never written.
        let err = store
            .store(&keyring, "base", &creds)
            .unwrap_err()
            .to_string();
        assert!(err.contains("credctl key add"), "{err}");
        assert!(keyring.list().unwrap().is_empty());

        let prf = PrfOutput::from_slice(&[1; 32]).unwrap();
        drop(vault.create(b"cred", [2; 32], &prf, false).unwrap());
        assert!(store.store(&keyring, "base", &creds).unwrap());
        assert_eq!(keyring.list().unwrap(), vec!["base".to_owned()]);
        let sources = dir.path().join("sources");
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&sources), 0o700);
        let file = sources.join(hex::encode("base"));
        assert_eq!(mode(&file), 0o600);
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(!text.contains(secret) && !text.contains(&hex::encode(secret)));

        assert!(matches!(
            store.lookup(&keyring, "base"),
            Err(SourceError::Sealed { .. })
        ));
        let unwrapped = vault.unwrap(b"cred", &prf).unwrap();
        store.unseal(&keyring, "base", &unwrapped).unwrap();
        assert_eq!(
            store
                .lookup(&keyring, "base")
                .unwrap()
                .secret_access_key
                .expose_secret(),
            secret
        );
        keyring.delete("base").unwrap();
        assert!(matches!(
            keyring.delete("base"),
            Err(SourceError::NotFound { .. })
        ));
    }

    #[test]
    fn nothing_is_sealed_to_a_vault_no_touch_has_proven_since_start() {
        use crate::vault::PrfOutput;

        let dir = tempfile::tempdir().unwrap();
        let prf = PrfOutput::from_slice(&[1; 32]).unwrap();
        // A vault made earlier (or planted: vault.json is the attacker's to write).
        drop(
            VaultKeeper::load(dir.path())
                .unwrap()
                .create(b"cred", [2; 32], &prf, false)
                .unwrap(),
        );
        // The agent restarts: the vault is loaded, and no touch has unwrapped it yet.
        let vault = Arc::new(VaultKeeper::load(dir.path()).unwrap());
        let store = SourceStore::new(Backend::File, "unused".into(), false, vault.clone())
            .with_state_dir(dir.path());
        let keyring = store.get().unwrap();
        let creds = SourceCredentials {
            access_key_id: "AKIDFILE1".into(),
            secret_access_key: SecretString::from("wJalrXUtnFEMI/K7MDENG/bPxRfiCYUNPROVEN"),
        };
        let err = store.store(&keyring, "base", &creds).unwrap_err();
        assert!(matches!(err, SourceError::VaultUnproven { .. }), "{err}");
        assert!(err.to_string().contains("credctl confirm"), "{err}");
        assert!(keyring.list().unwrap().is_empty(), "nothing was written");
        // A touch unwraps it: from then on sources are sealed to it.
        drop(vault.unwrap(b"cred", &prf).unwrap());
        assert!(store.store(&keyring, "base", &creds).unwrap());
    }
}

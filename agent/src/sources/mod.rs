//! Sources: where a role chain starts. Today an IAM user's access key kept in the OS keyring
//! (`keyring`, `access_key`); [`SourceStore`] opens the keyring on first use and is what the
//! sessions read a source through.

mod access_key;
mod keyring;

use std::os::unix::fs::DirBuilderExt;
use std::sync::{Arc, Mutex};

pub use access_key::{rewrite_credentials_file_without, SourceCredentials};
pub use keyring::{Backend, Keyring, SourceError, SERVICE};

use crate::util::LockExt;

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
    opened: Mutex<Option<Arc<Keyring>>>,
}

impl SourceStore {
    pub fn new(backend: Backend, instance: String, adopt_legacy: bool) -> Self {
        SourceStore {
            backend,
            instance,
            adopt_legacy,
            opened: Mutex::new(None),
        }
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
        let mut slot = self.opened.locked();
        if let Some(k) = slot.as_ref() {
            return Ok(k.clone());
        }
        let k = Arc::new(Keyring::open(self.backend, &self.instance)?);
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
        let this = self.clone();
        let backend = self.backend;
        tokio::task::spawn_blocking(move || f(&*this.get()?))
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
}

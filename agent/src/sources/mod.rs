//! Sources: where a role chain starts. Today an IAM user's access key kept in the OS keyring
//! (`keyring`, `access_key`); [`SourceStore`] opens the keyring on first use and is what the
//! sessions read a source through.

mod access_key;
mod keyring;

use std::sync::{Arc, Mutex};

pub use access_key::{rewrite_credentials_file_without, SourceCredentials};
pub use keyring::{Backend, Keyring, SourceError, SERVICE};

use crate::util::LockExt;

/// The keyring, opened on first use so the agent starts even where no keyring is reachable.
pub struct SourceStore {
    backend: Backend,
    /// The keyring once a first call opened it.
    opened: Mutex<Option<Arc<Keyring>>>,
}

impl SourceStore {
    pub fn new(backend: Backend) -> Self {
        SourceStore {
            backend,
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

    /// The open keyring (blocking: call from a blocking thread).
    pub fn get(&self) -> Result<Arc<Keyring>, SourceError> {
        let mut slot = self.opened.locked();
        if let Some(k) = slot.as_ref() {
            return Ok(k.clone());
        }
        let k = Arc::new(Keyring::open(self.backend)?);
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

#[async_trait::async_trait]
impl crate::sessions::SourceLookup for Arc<SourceStore> {
    async fn source(&self, name: &str) -> Result<SourceCredentials, SourceError> {
        let name = name.to_owned();
        self.with(move |k| k.get(&name)).await
    }
}

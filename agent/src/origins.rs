//! The one seam through which sessions reach every kind of source: access keys in the keyring
//! (or the file store) and IAM Identity Center logins, behind `sessions::SourceLookup`. Wired
//! here, above both, so `sessions` knows nothing of Identity Center (the keyring it reaches
//! through `SourceLookup for Arc<SourceStore>`).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;

use crate::profiles::SsoSource;
use crate::sessions::SourceLookup;
use crate::sources::{SourceCredentials, SourceError, SourceStore, SsoError};
use crate::sso::Logins;
use crate::sts::TempCredentials;
use crate::vault::VaultSecret;

/// The agent's sources: access keys in the keyring, and IAM Identity Center logins.
pub struct Origins {
    pub store: Arc<SourceStore>,
    pub logins: Arc<Logins>,
}

#[async_trait]
impl SourceLookup for Origins {
    async fn source(&self, name: &str) -> Result<SourceCredentials, SourceError> {
        self.store
            .source(name)
            .await
            .map_err(|e| crate::profiles::locate_missing_source(e, &crate::profiles::process_env))
    }

    async fn unseal(
        &self,
        name: &str,
        vault: VaultSecret,
        expected_key: Option<String>,
    ) -> Result<(), SourceError> {
        SourceLookup::unseal(&self.store, name, vault, expected_key).await
    }

    async fn sso_credentials(
        &self,
        source: &SsoSource,
        now: SystemTime,
    ) -> Result<TempCredentials, SsoError> {
        self.logins.role_credentials(source, now).await
    }

    async fn unseal_sso(&self, source: &SsoSource, vault: VaultSecret) -> Result<(), SsoError> {
        let logins = self.logins.clone();
        let source = source.clone();
        tokio::task::spawn_blocking(move || logins.unseal(&source, &vault))
            .await
            .map_err(|e| SsoError::Other {
                code: "Task".into(),
                message: e.to_string(),
            })?
    }

    fn forget_all(&self) {
        SourceLookup::forget_all(&self.store);
        self.logins.lock();
    }

    fn retain_logins(&self, keep: &HashSet<String>) {
        self.logins.retain(keep);
    }

    fn retain_opened(&self, in_use: &HashSet<String>) {
        SourceLookup::retain_opened(&self.store, in_use);
    }
}

//! The agent's core: one value that owns the approver (WebAuthn), the role sessions (STS), the
//! endpoint tokens, pending approvals and the keyring, and answers control requests with them.

mod admin;
mod gate;
mod page;
mod pending;
mod render;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use credagent_proto::{ErrorCode, Response};

use crate::approval::Approver;
use crate::audit::{Audit, Origin};
use crate::config::{Config, KeyringBackend};
use crate::endpoint::{CredentialSource, Endpoint, Lookup};
use crate::keystore::{Backend, Keystore};
use crate::profiles::Profiles;
use crate::sessions::{SessionConfig, Sessions};
use crate::state::AgentState;
use crate::sts::{AwsSts, RetryPolicy, Retrying, StsSettings};
use crate::tokens::Tokens;

pub use admin::Conn;
pub use gate::Gate;
pub use pending::PendingApprovals;
pub use render::RenderCache;

/// Everything a control request or an HTTP request can reach.
pub struct Core {
    pub facts: AgentState,
    pub config: Config,
    pub approver: Approver,
    pub sessions: Sessions,
    pub tokens: Arc<Tokens>,
    pub keystore: Arc<LazyKeystore>,
    pub gate: Gate,
    pub pending: PendingApprovals,
    pub render: RenderCache,
    /// `AWS_CONFIG_FILE` / `~/.aws/config`, re-read before each role operation.
    pub aws_config: Option<PathBuf>,
    /// Set once the HTTP endpoint exists (it needs the core as its credential source).
    pub endpoint: std::sync::OnceLock<Arc<Endpoint>>,
}

/// The keyring, opened on first use so the agent starts even where no keyring is reachable.
pub struct LazyKeystore {
    backend: Backend,
    opened: std::sync::Mutex<Option<Arc<Keystore>>>,
}

impl LazyKeystore {
    pub fn new(backend: Backend) -> Self {
        LazyKeystore {
            backend,
            opened: std::sync::Mutex::new(None),
        }
    }

    /// The open keystore (blocking: call from a blocking thread).
    pub fn get(&self) -> Result<Arc<Keystore>, crate::keystore::KeystoreError> {
        let mut slot = self.opened.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(k) = slot.as_ref() {
            return Ok(k.clone());
        }
        let k = Arc::new(Keystore::open(self.backend)?);
        *slot = Some(k.clone());
        Ok(k)
    }
}

#[async_trait::async_trait]
impl crate::sessions::SourceLookup for LazyKeystore {
    async fn source(
        &self,
        name: &str,
    ) -> Result<crate::keystore::SourceCredentials, crate::keystore::KeystoreError> {
        let store = {
            let this = self
                .opened
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            match this {
                Some(s) => s,
                None => {
                    let backend = self.backend;
                    tokio::task::spawn_blocking(move || Keystore::open(backend).map(Arc::new))
                        .await
                        .map_err(|e| crate::keystore::KeystoreError::Platform {
                            backend,
                            detail: format!("keyring task failed: {e}"),
                        })??
                }
            }
        };
        {
            let mut slot = self.opened.lock().unwrap_or_else(|p| p.into_inner());
            if slot.is_none() {
                *slot = Some(store.clone());
            }
        }
        crate::sessions::SourceLookup::source(&store, name).await
    }
}

fn backend_for(config: &Config) -> Backend {
    match config.keyring {
        Some(KeyringBackend::SecretService) => Backend::SecretService,
        Some(KeyringBackend::Keyutils) => Backend::Keyutils,
        None if std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some() => Backend::SecretService,
        None => Backend::Keyutils,
    }
}

impl Core {
    /// Builds the core. Reads the key store; touches nothing on the network.
    pub fn new(facts: AgentState, config: Config, now: SystemTime) -> anyhow::Result<Arc<Core>> {
        let state_dir = crate::paths::state_dir()
            .context("cannot find a state directory: set HOME or XDG_STATE_HOME")?;
        let approver = Approver::new(config.approval.clone(), &state_dir, now)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let settings = StsSettings::resolve(config.sts_endpoint.as_deref(), None, &env);
        let sts = Arc::new(Retrying::new(
            Arc::new(AwsSts::new(&settings)),
            RetryPolicy::default(),
        ));
        let keystore = Arc::new(LazyKeystore::new(backend_for(&config)));
        let session_config = SessionConfig {
            session_ttl: config.session_ttl,
            idle_timeout: (config.idle_timeout > Duration::ZERO).then_some(config.idle_timeout),
            mfa_session_ttl: config.mfa_session_ttl,
            ..SessionConfig::default()
        };
        let aws_config = env("AWS_CONFIG_FILE")
            .map(PathBuf::from)
            .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".aws/config")));
        let profiles = aws_config
            .as_deref()
            .and_then(|p| Profiles::load(Some(p)).ok())
            .map(Ok)
            .unwrap_or_else(|| {
                Profiles::from_contents(std::path::Path::new("(none)"), String::new())
            })
            .context("cannot build an empty profile set")?;
        let sessions = Sessions::new(session_config, sts, keystore.clone(), profiles);
        let generation = sessions.generation().clone();
        Ok(Arc::new(Core {
            facts,
            config,
            approver,
            sessions,
            tokens: Arc::new(Tokens::new(generation.clone())),
            keystore,
            gate: Gate::default(),
            pending: PendingApprovals::default(),
            render: RenderCache::new(generation),
            aws_config,
            endpoint: std::sync::OnceLock::new(),
        }))
    }

    /// Builds the HTTP endpoint around this core.
    pub fn attach_endpoint(self: &Arc<Self>, audit: Audit) -> Arc<Endpoint> {
        let ep = Arc::new(Endpoint::new(
            self.facts.http_addr,
            self.tokens.clone(),
            self.clone(),
            audit,
            self.sessions.generation().clone(),
        ));
        let _ = self.endpoint.set(ep.clone());
        ep
    }

    /// Re-reads `~/.aws/config` so edits take effect without a restart.
    pub fn reload_profiles(&self) -> Result<(), Box<Response>> {
        let Some(path) = self.aws_config.as_deref() else {
            return Err(Box::new(Response::error(
                ErrorCode::Profile,
                "no AWS config file: set HOME or AWS_CONFIG_FILE for the agent",
            )));
        };
        match Profiles::load(Some(path)) {
            Ok(p) => {
                self.sessions.set_profiles(p);
                Ok(())
            }
            Err(e) => Err(Box::new(Response::error(ErrorCode::Profile, e.to_string()))),
        }
    }

    /// `credctl lock` / SIGUSR1: end every session, forget every current role, wipe the cache.
    pub fn lock(&self) -> usize {
        let n = self.sessions.lock();
        self.render.clear();
        self.tokens.clear_current_roles();
        self.gate.abandon_all("the agent was locked");
        if let Some(ep) = self.endpoint.get() {
            ep.set_imds_role(None);
            ep.imds_tokens.clear();
        }
        tracing::info!(
            sessions = n,
            "locked: every session ended and every cached secret wiped"
        );
        n
    }
}

impl CredentialSource for Core {
    fn lookup(&self, role: &str, now: SystemTime) -> Lookup {
        match self.sessions.get_cached_until(role, now) {
            Some((creds, until)) => Lookup::Ready {
                body: self.render.get(role, &creds, now),
                until,
            },
            None if self.sessions.open_roles(now).iter().any(|r| r == role) => Lookup::Unavailable(
                "the session is open but STS has not answered yet; retry in a moment".into(),
            ),
            None => Lookup::NotOpen,
        }
    }

    fn request_approval(&self, role: &str, origin: Origin, now: SystemTime) {
        self.pending.record(role, origin, now);
    }
}

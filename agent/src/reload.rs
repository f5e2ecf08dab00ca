//! The parts of the agent that `config.toml` decides, and `credctl reload`, which reads the
//! file again and puts it in force without ending a session or changing the port.
//!
//! Every setting but `listen` and `keyring` is one a touch vouches for (`crate::trust`): a
//! reload that changes any of them takes one touch, shown what changed (the way `credctl
//! confirm --accept-change` confirms), and nothing uses the new settings before that touch
//! verified and recorded them. A same-user process can rewrite the file and ask for a reload;
//! it cannot touch the key. Until the touch, the settings in force stay exactly as they were.
//! `listen` and `keyring` apply at the next start: the port is what every shell's
//! `AWS_CONTAINER_CREDENTIALS_FULL_URI` names, and the keyring holds the sealed sources.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, SystemTime};

use crate::approval::{Approvals, PreparedPolicy, Reconfiguration, Requester, TouchOutcome};
use crate::config::Config;
use crate::console::Consoles;
use crate::lock_signals::LockWatch;
use crate::refusal::{Code, Refusal};
use crate::sessions::{SessionConfig, Sessions};
use crate::sso::{Logins, SsoApi};
use crate::sts::{AwsSts, Retrying, StsApi, StsSettings};
use crate::trust::{Settings, Trusted};
use crate::util::{LockExt, RwLockExt};

/// How a reload went.
pub enum Reloaded {
    /// Nothing a touch vouches for changed: applied at once. `restart` names what applies only
    /// at the next start.
    Applied { restart: Vec<String> },
    /// The touch that applies it (a challenge), or how it ended.
    Touch(TouchOutcome),
}

/// What one reading of `config.toml` builds: the clients its endpoints name, the session
/// timing, and the settings a touch vouches for. Built the same way at start and at a reload.
pub struct Built {
    pub config: Config,
    pub settings: Settings,
    pub sts: Arc<dyn StsApi>,
    pub sso: Arc<dyn SsoApi>,
    /// The Identity Center overrides, named for a login's refusal.
    pub sso_overrides: Vec<String>,
    /// Every setting that sends the agent elsewhere than AWS, for `status`.
    pub overrides: Vec<String>,
    pub session: SessionConfig,
}

impl Built {
    /// Builds what `config` names; `env` is the agent's environment (the SDKs' endpoint
    /// variables). Touches nothing on the network.
    pub fn new(
        config: Config,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Built, crate::endpoint_url::EndpointError> {
        let sts = StsSettings::resolve(config.sts_endpoint.as_deref(), None, env)?;
        let mut overrides: Vec<String> = sts
            .endpoint
            .iter()
            .zip(sts.endpoint_source)
            .map(|(e, from)| format!("STS endpoint {e} ({from})"))
            .collect();
        let sso = crate::sso::SsoSettings::resolve(
            config.sso_oidc_endpoint.as_deref(),
            config.sso_endpoint.as_deref(),
        )?;
        for (url, what) in [
            (&sso.oidc_endpoint, "IAM Identity Center OIDC endpoint"),
            (&sso.portal_endpoint, "IAM Identity Center portal endpoint"),
        ] {
            if let Some(url) = url {
                overrides.push(format!("{what} {url} (config.toml)"));
            }
        }
        if let Some(url) = &config.federation_endpoint {
            overrides.push(format!(
                "federation endpoint {url} (federation_endpoint in config.toml)"
            ));
        }
        let sso_overrides = [
            ("sso_oidc_endpoint", &sso.oidc_endpoint),
            ("sso_endpoint", &sso.portal_endpoint),
        ]
        .into_iter()
        .filter_map(|(name, url)| url.as_ref().map(|u| format!("{name} = {u}")))
        .collect();
        let session = SessionConfig {
            session_ttl: config.session_ttl,
            idle_timeout: (config.idle_timeout > Duration::ZERO).then_some(config.idle_timeout),
            mfa_session_ttl: config.mfa_session_ttl,
            programs: config.program_policies(),
            ..SessionConfig::default()
        };
        Ok(Built {
            settings: config.trusted_settings(),
            sts: Arc::new(AwsSts::new(&sts)),
            sso: Arc::new(crate::sso::AwsSso::new(sso)),
            sso_overrides,
            overrides,
            session,
            config,
        })
    }
}

/// The agent's environment, as the endpoint settings read it.
pub type Env = Box<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// The parts a reload changes, and what the agent last read from `config.toml`.
pub struct Live {
    /// The file the agent reads (`--config`, else the default path), and whether it must exist.
    path: Option<PathBuf>,
    required: bool,
    /// The configuration in force (`listen` and `keyring` as the agent started with them).
    config: Mutex<Config>,
    /// SHA-256 of the content the settings in force came from (`None`: there was no file).
    seen: Mutex<Option<[u8; 32]>>,
    /// Settings the file holds that apply only at the next start.
    needs_restart: Mutex<Vec<String>>,
    overrides: RwLock<Vec<String>>,
    sts: Arc<Retrying>,
    logins: Arc<Logins>,
    consoles: Arc<Consoles>,
    sessions: Sessions,
    approvals: Arc<Approvals>,
    trusted: Arc<Trusted>,
    env: Env,
    /// The suspend and screen-lock watchers, restarted when `lock_on` changes.
    lock_watch: LockWatch,
}

/// The agent's parts that `config.toml` configures, for [`Live::new`].
pub struct Parts {
    pub sts: Arc<Retrying>,
    pub logins: Arc<Logins>,
    pub consoles: Arc<Consoles>,
    pub sessions: Sessions,
    pub approvals: Arc<Approvals>,
    pub trusted: Arc<Trusted>,
    pub lock_watch: LockWatch,
}

impl Live {
    /// `built` is in force in `parts`; `path` is the file it came from (`seen`: its digest).
    pub fn new(
        path: Option<(PathBuf, bool)>,
        seen: Option<[u8; 32]>,
        built: &Built,
        parts: Parts,
        env: Env,
    ) -> Live {
        let (path, required) = match path {
            Some((p, required)) => (Some(p), required),
            None => (None, false),
        };
        Live {
            path,
            required,
            config: Mutex::new(built.config.clone()),
            seen: Mutex::new(seen),
            needs_restart: Mutex::new(Vec::new()),
            overrides: RwLock::new(built.overrides.clone()),
            sts: parts.sts,
            logins: parts.logins,
            consoles: parts.consoles,
            sessions: parts.sessions,
            approvals: parts.approvals,
            trusted: parts.trusted,
            env,
            lock_watch: parts.lock_watch,
        }
    }

    /// The suspend and screen-lock watchers' state, for `status`.
    pub fn lock_lines(&self) -> Vec<String> {
        self.lock_watch.lines()
    }

    /// The settings in force that send the agent elsewhere than AWS.
    pub fn overrides(&self) -> Vec<String> {
        self.overrides.read_locked().clone()
    }

    /// The configuration file the settings in force came from, or the agent reads now.
    pub fn config_path(&self) -> Option<&Path> {
        let read = self.seen.locked().is_some();
        self.path.as_deref().filter(|p| read || p.exists())
    }

    /// Whether the file's content changed (or it appeared, or went) since the settings in force
    /// were read from it. A `chmod`, or a rewrite with the same content, is no change.
    pub fn config_changed(&self) -> bool {
        self.path
            .as_ref()
            .is_some_and(|p| crate::state::content_digest(p) != *self.seen.locked())
    }

    /// What the file holds that applies only at the next start.
    pub fn needs_restart(&self) -> Vec<String> {
        self.needs_restart.locked().clone()
    }

    /// `credctl reload` from `who`: reads the file, builds everything it names (nothing in
    /// force changes if any of it fails), and puts it in force, after a touch when a setting a
    /// touch vouches for changed.
    pub async fn reload(
        self: &Arc<Self>,
        who: &Requester,
        now: SystemTime,
    ) -> Result<Reloaded, Refusal> {
        let Some(path) = &self.path else {
            return Err(Refusal::new(
                Code::BadRequest,
                "this agent has no configuration file to read (no HOME or XDG_CONFIG_HOME when \
                 it started): restart it with --config FILE",
            ));
        };
        let unchanged = "; nothing changed: the agent runs with the settings it had";
        let bad =
            |e: &dyn std::fmt::Display| Refusal::new(Code::BadRequest, format!("{e}{unchanged}"));
        let (config, digest) = Config::load_seen(path, self.required).map_err(|e| bad(&e))?;
        let restart = self.restart_only(&config);
        let built =
            Built::new(config, &*self.env).map_err(|e| bad(&format!("{}: {e}", path.display())))?;
        let policy = self
            .approvals
            .prepare_policy(&built.config.approval, now)
            .map_err(|e| bad(&format!("{}: {e}", path.display())))?;
        if let Some(refused) = self.approvals.policy_locks_out(&policy) {
            return Err(bad(&format!(
                "{}: no registered key satisfies that [approval] policy ({refused}), so every \
                 touch would be refused, the one that could undo it included; register a key \
                 that does first (`credctl key add`), or keep the policy",
                path.display()
            )));
        }
        let candidate = Arc::new(Candidate {
            live: Arc::downgrade(self),
            built,
            policy,
            digest,
            restart: restart.clone(),
        });
        if candidate.built.settings == self.trusted.current() {
            // Nothing a touch vouches for changed (a comment, the order of keys, or only what
            // applies at the next start).
            candidate.apply();
            return Ok(Reloaded::Applied { restart });
        }
        Ok(Reloaded::Touch(
            self.approvals.reload_start(candidate, who, now).await,
        ))
    }

    /// What differs in `config` from the agent's start but applies only at the next one.
    fn restart_only(&self, config: &Config) -> Vec<String> {
        let running = self.config.locked();
        let mut out = Vec::new();
        if config.listen != running.listen {
            out.push(format!(
                "listen: {} in force, {} in config.toml (the port every shell's \
                 AWS_CONTAINER_CREDENTIALS_FULL_URI names)",
                running.listen, config.listen
            ));
        }
        if config.keyring != running.keyring {
            let name = |k: &Option<crate::sources::Backend>| {
                k.map_or("automatic".to_owned(), |b| b.to_string())
            };
            out.push(format!(
                "keyring: {} in force, {} in config.toml (where the sealed sources are)",
                name(&running.keyring),
                name(&config.keyring)
            ));
        }
        out
    }
}

/// A configuration read and built, waiting for the touch that puts it in force.
struct Candidate {
    /// Weak: a reload nobody touched for must not keep the agent's parts alive.
    live: Weak<Live>,
    built: Built,
    policy: PreparedPolicy,
    digest: Option<[u8; 32]>,
    restart: Vec<String>,
}

impl Reconfiguration for Candidate {
    fn settings(&self) -> &Settings {
        &self.built.settings
    }

    fn apply(&self) {
        let Some(live) = self.live.upgrade() else {
            return;
        };
        let mut config = self.built.config.clone();
        {
            // What applies only at a start stays as the agent started.
            let running = live.config.locked();
            config.listen = running.listen;
            config.keyring = running.keyring;
        }
        live.sts.replace(self.built.sts.clone());
        live.logins
            .reconfigure(self.built.sso.clone(), self.built.sso_overrides.clone());
        live.consoles
            .set_endpoint(config.federation_endpoint.as_deref());
        live.sessions.set_config(self.built.session.clone());
        live.approvals.set_policy(&self.policy, config.session_ttl);
        live.trusted.set_current(self.built.settings.clone());
        live.lock_watch.restart(&config.lock_on);
        *live.overrides.write_locked() = self.built.overrides.clone();
        *live.seen.locked() = self.digest;
        *live.needs_restart.locked() = self.restart.clone();
        *live.config.locked() = config;
        tracing::info!("config.toml reloaded: its settings are in force");
    }
}

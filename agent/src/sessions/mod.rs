//! Role sessions: opened only with an [`Approval`], answered from memory on the hot path,
//! fetched from STS with coalescing, refreshed in the background, wiped by `lock()`.

mod cache;
mod error;
mod fetch;
mod programs;
mod refresh;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use secrecy::SecretString;
use serde::Serialize;

use crate::approval::Approval;
use crate::generation::{Generation, Versioned};
use crate::profiles::Profiles;
use crate::sources::{SourceCredentials, SourceError};
use crate::sts::{StsApi, TempCredentials};
use crate::vault::VaultSecret;

use crate::util::unix_secs;
use crate::util::{LockExt, RwLockExt};
use cache::{MfaSession, RoleSlot};
pub use cache::{DEFAULT_ROLE_DURATION, MAX_CHAINED_DURATION, MIN_STS_DURATION};
pub use error::SessionError;
pub use programs::writable_by_others_than_root;
pub use programs::{Confirm, ProgramPolicies, ProgramPolicy, ProgramProblem, ProgramRefusal};

/// Longest role session one touch may open.
pub const MAX_SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Shortest role session config.toml accepts: STS issues nothing shorter than 15 minutes.
pub const MIN_SESSION_TTL: Duration = Duration::from_secs(15 * 60);

/// Session timing, from config.toml.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// How long one approval keeps a role session open (default 1 h, at most 12 h).
    pub session_ttl: Duration,
    /// End a session after this long without a credential request (`None` = never).
    pub idle_timeout: Option<Duration>,
    /// GetSessionToken lifetime for sources with `mfa_serial` (default 12 h).
    pub mfa_session_ttl: Duration,
    /// Never hand out credentials with less left than this (SDKs refresh under 15 min).
    pub min_serve_remaining: Duration,
    /// Refresh in the background once credentials have this little left.
    pub refresh_before: Duration,
    /// First delay before retrying a failed refresh; doubles per failure up to 8×.
    pub refresh_retry: Duration,
    /// Sessions opened together must not refresh together: each refreshes up to this much
    /// later than `refresh_before` says (a random share, drawn when it opens), never closer to
    /// expiry than halfway between the refresh lead and the serving margin.
    pub refresh_spread: Duration,
    /// The background refresher starts at most one refresh per this interval (5 a second), so
    /// hundreds of sessions due at once reach STS spaced out, never in one burst.
    pub refresh_pace: Duration,
    /// The roles whose sessions only some programs may use (`[roles.NAME]` in config.toml).
    pub programs: ProgramPolicies,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            session_ttl: Duration::from_secs(3600),
            idle_timeout: None,
            mfa_session_ttl: Duration::from_secs(12 * 3600),
            min_serve_remaining: Duration::from_secs(15 * 60),
            refresh_before: Duration::from_secs(25 * 60),
            refresh_retry: Duration::from_secs(60),
            refresh_spread: Duration::from_secs(5 * 60),
            refresh_pace: Duration::from_millis(200),
            programs: ProgramPolicies::default(),
        }
    }
}

/// Where sessions get a source's long-lived keys. The keyring is blocking, so the real
/// implementation hops to a blocking thread; tests use a map.
#[async_trait]
pub trait SourceLookup: Send + Sync {
    async fn source(&self, name: &str) -> Result<SourceCredentials, SourceError>;

    /// Opens sealed source `name` with the vault's private half a touch unwrapped (sealing it
    /// first if it was stored unsealed), for the sessions that need it.
    async fn unseal(
        &self,
        _name: &str,
        _vault: VaultSecret,
        _expected_key: Option<String>,
    ) -> Result<(), SourceError> {
        Ok(())
    }

    /// Credentials from IAM Identity Center for an SSO source (GetRoleCredentials).
    async fn sso_credentials(
        &self,
        source: &crate::profiles::SsoSource,
        _now: SystemTime,
    ) -> Result<crate::sts::TempCredentials, crate::sources::SsoError> {
        Err(crate::sources::SsoError::LoginNeeded {
            login: source.login_key(),
            detail: "this agent has no IAM Identity Center support wired".into(),
        })
    }

    /// Opens the sealed login of an SSO source with the vault a touch unwrapped.
    async fn unseal_sso(
        &self,
        _source: &crate::profiles::SsoSource,
        _vault: VaultSecret,
    ) -> Result<(), crate::sources::SsoError> {
        Ok(())
    }

    /// Wipes every opened source (lock).
    fn forget_all(&self) {}

    /// Wipes the opened sources no session in `in_use` needs.
    fn retain_opened(&self, _in_use: &HashSet<String>) {}

    /// Wipes the Identity Center logins whose keys are not in `keep` (a screen lock while jobs
    /// run: the logins their sessions need stay).
    fn retain_logins(&self, _keep: &HashSet<String>) {}
}

#[async_trait]
impl SourceLookup for Arc<crate::sources::SourceStore> {
    async fn source(&self, name: &str) -> Result<SourceCredentials, SourceError> {
        let name = name.to_owned();
        self.with_store(move |store, k| store.lookup(k, &name))
            .await
    }

    async fn unseal(
        &self,
        name: &str,
        vault: VaultSecret,
        expected_key: Option<String>,
    ) -> Result<(), SourceError> {
        let name = name.to_owned();
        // The private half moves into the blocking task and is dropped there, right after use.
        self.with_store(move |store, k| {
            store.unseal_expecting(k, &name, &vault, expected_key.as_deref())
        })
        .await
    }

    fn forget_all(&self) {
        let n = crate::sources::SourceStore::forget_all(self);
        if n > 0 {
            tracing::info!(sources = n, "wiped the opened sources");
        }
    }

    fn retain_opened(&self, in_use: &HashSet<String>) {
        crate::sources::SourceStore::retain_opened(self, in_use);
    }
}

/// What `open` reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SessionInfo {
    pub role: String,
    /// Unix seconds when the session ends.
    pub expires_at: u64,
    /// Unix seconds when the current credentials expire.
    pub credentials_expire_at: u64,
}

/// Per-role status for `credctl status`; no secrets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RoleStatus {
    pub role: String,
    /// What the session serves: its source and role ARNs as its touch approved them.
    pub target: String,
    pub role_arn: String,
    pub source: String,
    pub mfa: bool,
    pub opened_at: u64,
    pub session_expires_at: u64,
    pub session_remaining_secs: u64,
    pub credentials_expire_at: Option<u64>,
    pub credentials_remaining_secs: Option<u64>,
    pub next_refresh: Option<u64>,
    pub account_id: Option<String>,
    pub assumed_role_arn: Option<String>,
    pub sts_calls: u64,
    pub refreshes: u64,
    pub failures: u64,
    /// Code of the last failed fetch, cleared by the next success.
    pub last_error: Option<String>,
    /// Why the last fetch failed, in words (what status shows).
    pub last_error_message: Option<String>,
    /// Seconds this machine's clock runs ahead of STS's (negative: behind), when over a minute.
    pub clock_skew_secs: Option<i64>,
    /// Served only to its running jobs (a screen lock or the idle timeout came while they ran).
    pub held: bool,
    /// `credctl exec` jobs running on the role.
    pub jobs: usize,
}

/// All role sessions of the agent. Cheap to clone; share it between tasks.
#[derive(Clone)]
pub struct Sessions {
    inner: Arc<Inner>,
}

struct Inner {
    /// Replaced by `credctl reload`: sessions already open keep their end.
    config: RwLock<Arc<SessionConfig>>,
    sts: Arc<dyn StsApi>,
    sources: Arc<dyn SourceLookup>,
    /// Replaced wholesale when ~/.aws/config is reloaded.
    profiles: RwLock<Arc<Profiles>>,
    /// Open sessions by role name; read on every credential request. Versioned: opening,
    /// ending or locking a session changes what the endpoint serves.
    roles: Versioned<HashMap<String, Arc<RoleSlot>>>,
    /// MFA sessions by source name.
    mfa: Mutex<HashMap<String, MfaSession>>,
    /// One async lock per source so concurrent opens share one GetSessionToken.
    mfa_fetch: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Bumped by `lock()`: fetches that started before it must not store their results.
    epoch: AtomicU64,
    /// Told of each session that ends by itself (its time is up, or it sat idle): the audit.
    on_end: std::sync::OnceLock<EndHook>,
    /// The `credctl exec` jobs running per role (see [`Lease`]); replaced by `lock()`, which
    /// ends their grants too.
    leases: Mutex<HashMap<String, Arc<AtomicUsize>>>,
}

/// A `credctl exec` job running on a role, for as long as its control connection lives: the
/// role's session outlives its idle timeout and a screen lock while one runs (served to the
/// jobs only), and ends with `credctl lock` whatever runs.
pub struct Lease {
    count: Arc<AtomicUsize>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What is told of a session that ended by itself: its role, why (`expired`, `idle`), when.
pub type EndHook = Arc<dyn Fn(&str, &'static str, SystemTime) + Send + Sync>;

impl Sessions {
    pub fn new(
        config: SessionConfig,
        sts: Arc<dyn StsApi>,
        sources: Arc<dyn SourceLookup>,
        profiles: Profiles,
    ) -> Sessions {
        Sessions {
            inner: Arc::new(Inner {
                config: RwLock::new(Arc::new(Self::bounded(config))),
                sts,
                sources,
                profiles: RwLock::new(Arc::new(profiles)),
                roles: Versioned::new(HashMap::new(), Generation::default()),
                mfa: Mutex::new(HashMap::new()),
                mfa_fetch: Mutex::new(HashMap::new()),
                epoch: AtomicU64::new(0),
                on_end: std::sync::OnceLock::new(),
                leases: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn lease_count(&self, role: &str) -> Arc<AtomicUsize> {
        self.inner
            .leases
            .locked()
            .entry(role.to_owned())
            .or_default()
            .clone()
    }

    /// A job (`credctl exec`) starts on `role`: it holds the role's session until dropped.
    pub fn lease(&self, role: &str) -> Lease {
        let count = self.lease_count(role);
        count.fetch_add(1, Ordering::Relaxed);
        Lease { count }
    }

    /// Whether `role`'s session is open at `now` but serves only its running jobs (a screen
    /// lock or its idle timeout came while they ran): anyone else needs a new touch.
    pub fn held(&self, role: &str, now: SystemTime) -> bool {
        let idle = self.config().idle_timeout;
        self.slot(role)
            .is_some_and(|s| s.active(now, idle) && s.held(now, idle))
    }

    /// Whether only some programs may use `role` (cheap: the endpoint asks on every request).
    pub fn restricts(&self, role: &str) -> bool {
        let config = self.inner.config.read_locked();
        !config.programs.is_empty() && config.programs.get(role).is_some_and(|p| p.restricts())
    }

    /// Whether `process` may use `role`'s session: its program on the role's list (or granted
    /// by a touch for this session), and, where each process is confirmed, this process
    /// granted. A role without rules, or without a session, refuses nothing here.
    pub fn check_program(
        &self,
        role: &str,
        process: crate::procs::ProcessId,
    ) -> Result<(), ProgramRefusal> {
        let config = self.config();
        let Some(policy) = config.programs.get(role).filter(|p| p.restricts()) else {
            return Ok(());
        };
        let Some(slot) = self.slot(role) else {
            return Ok(());
        };
        let grants = slot.grants.locked();
        programs::check(policy, &grants, process)
    }

    /// A touch allowed `process` (or, with `process` `None`, every process running `exe`) to
    /// use `role`'s open session, until that session ends.
    pub fn allow_program(
        &self,
        role: &str,
        exe: std::path::PathBuf,
        process: Option<crate::procs::ProcessId>,
    ) -> Result<(), SessionError> {
        let slot = self
            .slot(role)
            .filter(|s| s.active(SystemTime::now(), self.config().idle_timeout))
            .ok_or_else(|| SessionError::NoSession {
                role: role.to_owned(),
            })?;
        let mut grants = slot.grants.locked();
        match process {
            Some(p) => {
                grants.processes.insert(p, exe);
            }
            None => {
                grants.programs.insert(exe);
            }
        }
        // Every answer remembered for a connection was decided without this grant.
        self.inner.roles.generation().bump();
        Ok(())
    }

    /// The sessions running jobs hold that end by `now + ahead`: (role, when, what ends: the
    /// "session", or the "MFA session" whose credentials its refreshes need, when that ends
    /// first or with it, so that extending it takes a new code), sorted by role.
    pub fn jobs_ending(
        &self,
        now: SystemTime,
        ahead: Duration,
    ) -> Vec<(String, SystemTime, &'static str)> {
        let idle = self.config().idle_timeout;
        let slots: Vec<Arc<RoleSlot>> = self.inner.roles.read().values().cloned().collect();
        let mfa = self.inner.mfa.locked();
        let mut out: Vec<(String, SystemTime, &'static str)> = slots
            .iter()
            .filter(|s| s.leased() && s.active(now, idle))
            .filter_map(|s| {
                let mut end = (s.expires_at, "session");
                if let (Some(serial), false) = (&s.spec.mfa_serial, s.spec.mfa_on_assume_role()) {
                    if let Some(m) = mfa.get(&s.spec.source).filter(|m| m.serial == *serial) {
                        if m.creds.expiration <= end.0 + Duration::from_secs(60) {
                            end = (m.creds.expiration.min(end.0), "MFA session");
                        }
                    }
                }
                (end.0 <= now + ahead).then(|| (s.spec.name.clone(), end.0, end.1))
            })
            .collect();
        out.sort();
        out
    }

    /// A screen lock: the sessions no running job holds end, as with `lock()`; those a job
    /// holds stay open for the jobs only. The MFA sessions, opened sources and Identity Center
    /// logins the held sessions need are kept; every other one is wiped. Returns how many
    /// sessions ended and the roles held, sorted.
    pub fn hold_for_jobs(&self) -> (usize, Vec<String>) {
        let ended: Vec<Arc<RoleSlot>> = {
            let mut roles = self.inner.roles.write();
            let gone: Vec<String> = roles
                .iter()
                .filter(|(_, s)| !s.leased())
                .map(|(n, _)| n.clone())
                .collect();
            gone.into_iter().filter_map(|n| roles.remove(&n)).collect()
        };
        for slot in &ended {
            let _st = slot.state.locked();
            slot.set_credentials(None);
        }
        let held: Vec<Arc<RoleSlot>> = self.inner.roles.read().values().cloned().collect();
        let mut names = Vec::with_capacity(held.len());
        let mut sources = HashSet::new();
        let mut logins = HashSet::new();
        for slot in &held {
            slot.hold();
            names.push(slot.spec.name.clone());
            sources.insert(slot.spec.source.clone());
            if let Some(sso) = &slot.spec.sso {
                logins.insert(sso.login_key());
            }
        }
        self.inner
            .mfa
            .locked()
            .retain(|source, _| sources.contains(source));
        self.inner.sources.retain_opened(&sources);
        self.inner.sources.retain_logins(&logins);
        names.sort();
        (ended.len(), names)
    }

    /// The answer generation this cache bumps; the agent shares it with its other parts.
    pub fn generation(&self) -> &Generation {
        self.inner.roles.generation()
    }

    /// Tells `hook` of every session that ends by itself from now on (set once).
    pub fn on_end(&self, hook: EndHook) {
        let _ = self.inner.on_end.set(hook);
    }

    /// The session timing in force.
    pub fn config(&self) -> Arc<SessionConfig> {
        self.inner.config.read_locked().clone()
    }

    /// Puts new timing in force (`credctl reload`): sessions opened from now on last the new
    /// `session_ttl`; open ones keep the end their touch gave them, and idle and MFA limits
    /// apply to them from now on.
    pub fn set_config(&self, config: SessionConfig) {
        *self.inner.config.write_locked() = Arc::new(Self::bounded(config));
        // The program rules may have changed: no answer remembered under the old ones stands.
        self.inner.roles.generation().bump();
    }

    fn bounded(mut config: SessionConfig) -> SessionConfig {
        config.session_ttl = config
            .session_ttl
            .clamp(Duration::from_secs(60), MAX_SESSION_TTL);
        config.mfa_session_ttl = config.mfa_session_ttl.max(MIN_STS_DURATION);
        config
    }

    /// The profiles in effect.
    pub fn profiles(&self) -> Arc<Profiles> {
        self.inner.profiles.read_locked().clone()
    }

    /// Swaps in reloaded profiles; open sessions keep the spec they were opened with.
    pub fn set_profiles(&self, profiles: Profiles) {
        *self.inner.profiles.write_locked() = Arc::new(profiles);
    }

    /// Re-reads `file` if it changed, so edits take effect without a restart.
    pub fn reload_profiles(
        &self,
        file: &crate::profiles::AwsConfigFile,
    ) -> Result<(), crate::profiles::ProfileError> {
        if let Some(profiles) = file.load_if_changed()? {
            self.set_profiles(profiles);
        }
        Ok(())
    }

    /// How long `role`'s open session has left at `now` (`None`: none is open).
    pub fn time_left(&self, role: &str, now: SystemTime) -> Option<Duration> {
        let slot = self.slot(role)?;
        slot.active(now, self.config().idle_timeout)
            .then(|| slot.expires_at.duration_since(now).unwrap_or_default())
    }

    fn slot(&self, role: &str) -> Option<Arc<RoleSlot>> {
        let roles = self.inner.roles.read();
        roles.get(role).cloned()
    }

    fn resolve(&self, role: &str) -> Result<crate::profiles::RoleSpec, SessionError> {
        let profiles = Arc::clone(&self.inner.profiles.read_locked());
        profiles.resolve(role).map_err(|e| SessionError::Profile {
            role: role.to_owned(),
            message: e.to_string(),
        })
    }

    /// The MFA device the CLI must ask a code for before opening `role`, if any: `Some` when
    /// the role's source has `mfa_serial` and no MFA session covering a new session.
    pub fn mfa_needed(&self, role: &str, now: SystemTime) -> Result<Option<String>, SessionError> {
        let spec = self.resolve(role)?;
        let Some(serial) = spec.mfa_serial.clone() else {
            return Ok(None);
        };
        if spec.mfa_on_assume_role() {
            // Each AssumeRole of such a role takes its own code.
            return Ok(Some(serial));
        }
        let until = now + self.config().session_ttl;
        let mfa = self.inner.mfa.locked();
        let covered = mfa
            .get(&spec.source)
            .is_some_and(|m| m.serial == serial && m.creds.expiration >= until);
        Ok((!covered).then_some(serial))
    }

    /// Opens (or re-opens) the session for `role`. The only way in: it consumes an
    /// [`Approval`] for this very role. Fetches credentials before returning, so the caller
    /// learns at once about a refused role; on failure no session stays open.
    pub async fn open(
        &self,
        role: &str,
        approval: Approval,
        mfa_code: Option<SecretString>,
        now: SystemTime,
    ) -> Result<SessionInfo, SessionError> {
        if approval.role() != role {
            return Err(SessionError::ApprovalMismatch {
                approved: approval.role().to_owned(),
                requested: role.to_owned(),
            });
        }
        let mut approval = approval;
        let approved_target = approval.target().map(str::to_owned);
        let vault = approval.take_vault();
        drop(approval);
        let spec = self.resolve(role)?;
        // The touch approved what it was shown: if ~/.aws/config was edited between the
        // challenge and the answer, the session does not open something else. (The source's
        // key, which the target may name, is compared once the source is open, below.)
        if let Some(approved) = &approved_target {
            let now_target = spec.target();
            let same = *approved == now_target
                || approved
                    .strip_prefix(&format!("source {} (key ", spec.source))
                    .is_some_and(|_| spec.sso.is_none());
            if !same {
                return Err(SessionError::ChangedDuringTouch {
                    role: role.to_owned(),
                    approved: approved.clone(),
                    now: now_target,
                });
            }
        }
        if let Some(vault) = vault {
            match &spec.sso {
                Some(sso) => self
                    .inner
                    .sources
                    .unseal_sso(sso, vault)
                    .await
                    .map_err(|error| SessionError::Sso {
                        role: role.to_owned(),
                        error,
                    })?,
                None => self
                    .inner
                    .sources
                    .unseal(
                        &spec.source,
                        vault,
                        approved_target
                            .as_deref()
                            .and_then(crate::profiles::RoleSpec::source_key_in)
                            .filter(|(source, _)| *source == spec.source)
                            .map(|(_, key)| key.to_owned()),
                    )
                    .await
                    .map_err(|e| SessionError::from_source_error(&spec, &e))?,
            }
        }
        // The key the touch was shown must be the key the source holds now: an entry replaced
        // behind the agent's back (between the challenge and the touch) opens nothing.
        if let (Some(approved), None) = (&approved_target, &spec.sso) {
            if *approved != spec.target() {
                let opened = self
                    .inner
                    .sources
                    .source(&spec.source)
                    .await
                    .map_err(|e| SessionError::from_source_error(&spec, &e))?;
                let now_target = spec.target_with_key(Some(&opened.access_key_id));
                if *approved != now_target {
                    return Err(SessionError::ChangedDuringTouch {
                        role: role.to_owned(),
                        approved: approved.clone(),
                        now: now_target,
                    });
                }
            }
        }
        if let Some(serial) = &spec.mfa_serial {
            // Without a code: an MFA session of the source, or (for a role taking the code on
            // its own AssumeRole) this role's credentials still servable, carried over below.
            let covered = if spec.mfa_on_assume_role() {
                self.slot(role).is_some_and(|prev| {
                    prev.spec == spec && prev.servable(now, &self.config()).is_some()
                })
            } else {
                self.usable_mfa(&spec.source, serial, now).is_some()
            };
            if mfa_code.is_none() && !covered {
                return Err(SessionError::MfaRequired {
                    role: role.to_owned(),
                    source_name: spec.source.clone(),
                    serial: serial.clone(),
                });
            }
        }
        let epoch = self.inner.epoch.load(Ordering::SeqCst);
        let slot = Arc::new(RoleSlot::new(
            spec,
            now,
            self.config().session_ttl,
            epoch,
            self.inner.roles.generation().clone(),
            self.lease_count(role),
        ));
        slot.set_spread(rand::random::<u16>() % 1000);
        let previous = {
            let mut roles = self.inner.roles.write();
            roles.insert(role.to_owned(), Arc::clone(&slot))
        };
        // Re-opening keeps still-good credentials that fit inside the new session; not when a
        // code came with it: those credentials hang on the MFA session the code renews (a
        // running job's session extended before its MFA session ends).
        let previous = previous.filter(|p| p.spec == slot.spec);
        // What touches allowed programs to do with the session carries over to its renewal.
        if let Some(prev) = &previous {
            *slot.grants.locked() = std::mem::take(&mut *prev.grants.locked());
        }
        if let Some(prev) = previous.filter(|_| mfa_code.is_none()) {
            let deadline = slot.credential_deadline(&self.config());
            if let Some(c) = prev.credentials().filter(|c| c.expiration <= deadline) {
                slot.set_credentials(Some(c));
            }
        }
        match self.fetch_coalesced(&slot, now, false, mfa_code).await {
            Ok(creds) => Ok(SessionInfo {
                role: role.to_owned(),
                expires_at: unix_secs(slot.expires_at),
                credentials_expire_at: unix_secs(creds.expiration),
            }),
            Err(e) => {
                self.remove_if_current(role, &slot);
                Err(e)
            }
        }
    }

    fn remove_if_current(&self, role: &str, slot: &Arc<RoleSlot>) {
        let removed = {
            let mut roles = self.inner.roles.write();
            match roles.get(role) {
                Some(cur) if Arc::ptr_eq(cur, slot) => roles.remove(role),
                _ => None,
            }
        };
        drop(removed);
    }

    /// Hot path: credentials for `role` from memory, or `None` (no session, session over,
    /// nothing cached, or less than `min_serve_remaining` left). Never waits on STS.
    pub fn get_cached(&self, role: &str, now: SystemTime) -> Option<Arc<TempCredentials>> {
        self.get_cached_until(role, now, false)
            .map(|(creds, _)| creds)
    }

    /// Like [`Sessions::get_cached`], with the time until which the clock alone keeps them
    /// servable without another use (a connection's memo of the answer never outlives it): the
    /// session's end, the serving margin, and the idle timeout counted from this use. A held
    /// session answers only a running job's token (`job`).
    pub fn get_cached_until(
        &self,
        role: &str,
        now: SystemTime,
        job: bool,
    ) -> Option<(Arc<TempCredentials>, SystemTime)> {
        let slot = self.slot(role)?;
        let config = &self.config();
        if !job && slot.held(now, config.idle_timeout) {
            return None;
        }
        let creds = slot.servable(now, config)?;
        slot.touch(now);
        let mut until = slot.serve_until(&creds, config);
        if let Some(idle) = config.idle_timeout.filter(|i| !i.is_zero()) {
            until = until.min(now + idle);
        }
        Some((creds, until))
    }

    /// Credentials for `role`, calling STS if the cache cannot answer. Concurrent callers for
    /// one role share a single STS call and its result.
    pub async fn credentials(
        &self,
        role: &str,
        now: SystemTime,
    ) -> Result<Arc<TempCredentials>, SessionError> {
        let no_session = || SessionError::NoSession {
            role: role.to_owned(),
        };
        let slot = self.slot(role).ok_or_else(no_session)?;
        if !slot.active(now, self.config().idle_timeout) {
            self.remove_if_current(role, &slot);
            return Err(no_session());
        }
        if let Some(c) = slot.servable(now, &self.config()) {
            slot.touch(now);
            return Ok(c);
        }
        let creds = self.fetch_coalesced(&slot, now, false, None).await?;
        slot.touch(now);
        Ok(creds)
    }

    /// Roles with an open session, sorted.
    pub fn open_roles(&self, now: SystemTime) -> Vec<String> {
        let roles = self.inner.roles.read();
        let mut names: Vec<String> = roles
            .iter()
            .filter(|(_, s)| s.active(now, self.config().idle_timeout))
            .map(|(n, _)| n.clone())
            .collect();
        names.sort();
        names
    }

    /// Ends the sessions whose role `matches` (a logout ends the roles opened on that login) and
    /// drops their credentials; returns their names, sorted.
    pub fn end_where(&self, matches: impl Fn(&crate::profiles::RoleSpec) -> bool) -> Vec<String> {
        let ended: Vec<(String, Arc<RoleSlot>)> = {
            let mut roles = self.inner.roles.write();
            let names: Vec<String> = roles
                .iter()
                .filter(|(_, s)| matches(&s.spec))
                .map(|(n, _)| n.clone())
                .collect();
            names
                .into_iter()
                .filter_map(|n| roles.remove(&n).map(|s| (n, s)))
                .collect()
        };
        let mut names = Vec::with_capacity(ended.len());
        for (name, slot) in ended {
            let _st = slot.state.locked();
            slot.set_credentials(None);
            tracing::info!(role = %name, "session ended with its login");
            names.push(name);
        }
        names.sort();
        names
    }

    /// Ends every session and drops every cached secret (role and MFA credentials); returns
    /// how many role sessions ended. Fetches in flight finish into the void.
    pub fn lock(&self) -> usize {
        self.inner.epoch.fetch_add(1, Ordering::SeqCst);
        let roles = std::mem::take(&mut *self.inner.roles.write());
        let mfa = std::mem::take(&mut *self.inner.mfa.locked());
        let n = roles.len();
        for slot in roles.values() {
            // Under the slot's state lock, where a fetch in flight checks the epoch.
            let _st = slot.state.locked();
            slot.set_credentials(None);
        }
        drop(roles);
        drop(mfa);
        // The jobs' grants end too: their tokens are revoked, and a session opened after this
        // one starts with no job on it.
        self.inner.leases.locked().clear();
        self.inner.sources.forget_all();
        n
    }

    /// Wipes the opened sources that no active session needs any more.
    pub(super) fn release_unused_sources(&self, now: SystemTime) {
        let idle = self.config().idle_timeout;
        let in_use: HashSet<String> = self
            .inner
            .roles
            .read()
            .values()
            .filter(|s| s.active(now, idle))
            .map(|s| s.spec.source.clone())
            .collect();
        self.inner.sources.retain_opened(&in_use);
    }

    /// Status of every open session at `now`, sorted by role.
    pub fn status(&self, now: SystemTime) -> Vec<RoleStatus> {
        let slots: Vec<Arc<RoleSlot>> = {
            let roles = self.inner.roles.read();
            roles.values().cloned().collect()
        };
        let config = &self.config();
        let mut out: Vec<RoleStatus> = slots
            .iter()
            .filter(|s| s.active(now, config.idle_timeout))
            .map(|s| {
                let creds = s.credentials();
                let next_refresh = s.next_refresh(config).map(unix_secs);
                let st = s.state.locked();
                RoleStatus {
                    role: s.spec.name.clone(),
                    target: s.spec.target(),
                    role_arn: s.spec.role_arn.clone(),
                    source: s.spec.source.clone(),
                    mfa: s.spec.mfa_serial.is_some(),
                    opened_at: unix_secs(s.opened_at),
                    session_expires_at: unix_secs(s.expires_at),
                    session_remaining_secs: secs_left(s.expires_at, now),
                    credentials_expire_at: creds.as_ref().map(|c| unix_secs(c.expiration)),
                    credentials_remaining_secs: creds.as_ref().map(|c| c.remaining(now).as_secs()),
                    next_refresh,
                    account_id: creds.as_ref().and_then(|c| c.account_id.clone()),
                    assumed_role_arn: creds.as_ref().and_then(|c| c.assumed_role_arn.clone()),
                    sts_calls: st.sts_calls,
                    refreshes: st.refreshes,
                    failures: st.failures,
                    last_error: st.last_error.as_ref().map(|e| e.code().to_owned()),
                    last_error_message: st.last_error.as_ref().map(|e| e.to_string()),
                    clock_skew_secs: s.clock_skew(),
                    held: s.held(now, config.idle_timeout),
                    jobs: s.jobs(),
                }
            })
            .collect();
        out.sort_by(|a, b| a.role.cmp(&b.role));
        out
    }
}

// `Sessions` is shared between the HTTP endpoint, the control socket and the refresher.
const _: fn() = || {
    fn shared<T: Send + Sync + Clone + 'static>() {}
    shared::<Sessions>();
};

fn secs_left(t: SystemTime, now: SystemTime) -> u64 {
    t.duration_since(now).map(|d| d.as_secs()).unwrap_or(0)
}

#[async_trait]
impl crate::approval::SessionOpener for Sessions {
    fn allow_program(
        &self,
        role: &str,
        exe: std::path::PathBuf,
        process: Option<crate::procs::ProcessId>,
    ) -> Result<(), crate::refusal::Refusal> {
        Sessions::allow_program(self, role, exe, process).map_err(|e| e.refusal())
    }

    async fn open_approved(
        &self,
        approval: Approval,
        mfa_code: Option<SecretString>,
        now: SystemTime,
    ) -> Result<crate::approval::Opened, crate::refusal::Refusal> {
        let role = approval.role().to_owned();
        match self.open(&role, approval, mfa_code, now).await {
            // The control socket adds the region (control::sessions).
            Ok(info) => Ok(crate::approval::Opened {
                role,
                expires_at: info.expires_at,
            }),
            Err(e) => {
                tracing::warn!(role, code = e.code(), "session did not open");
                let mut r = e.refusal();
                r.message = format!(
                    "your key was accepted, but the session did not open: {}",
                    r.message
                );
                Err(r)
            }
        }
    }
}

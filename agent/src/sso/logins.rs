//! [`Logins`]: one IAM Identity Center login per `[sso-session]` (or legacy start URL), shared
//! by every profile and every waiter that uses it.
//!
//! - A login is started once (device code or PKCE in the browser); callers that ask while it
//!   runs join it and wait for the same outcome.
//! - The access token lives in memory only. The refresh token and the client registration it
//!   needs are sealed to the vault in `<state_dir>/sso/` (ciphertext, like a source): after a
//!   restart or `lock`, a touch opens them again. Without a vault they stay in memory only.
//! - Role credentials come from GetRoleCredentials with a valid access token, refreshed with
//!   the refresh token when it runs out (one refresh at a time per login).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::refusal::{Code, Refusal};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::pkce::{self, AuthorizeRequest, Verifier};
use super::{ClientRequest, Grant, PkceClient, Registration, SsoApi, SsoError, TokenSet};
use crate::profiles::SsoSource;
use crate::sts::TempCredentials;
use crate::util::{unix_secs, LockExt};
use crate::vault::{Sealed, VaultKeeper, VaultSecret};

/// An access token is refreshed once it has less than this left.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(10 * 60);
/// How long a browser login may take.
const PKCE_TTL: Duration = Duration::from_secs(10 * 60);

/// The outcome of a login attempt, for its waiters: the access token's expiry, or why not.
type Outcome = Option<Result<SystemTime, String>>;

#[derive(Default)]
struct Login {
    registration: Option<Registration>,
    /// Client registrations kept for new logins until they expire: one for the browser (it
    /// names the redirect) and one for the device code.
    clients: HashMap<bool, Registration>,
    access: Option<(SecretString, SystemTime)>,
    refresh: Option<SecretString>,
    /// The refresh token in memory is not sealed yet: no touch had proven the vault when it
    /// came (a `vault.json` swapped behind the agent's back must receive nothing). The next
    /// touch that opens this login seals it.
    seal_pending: bool,
    /// The login under way.
    pending: Option<Pending>,
    /// Why the last attempt failed, for a waiter that asks just after (a sign-in denied
    /// before `credctl` began to wait).
    failed: Option<String>,
}

/// A login under way: what the person must do, until when, which flow, and its outcome.
struct Pending {
    reply: LoginState,
    expires_at: SystemTime,
    device_code: bool,
    outcome: watch::Sender<Outcome>,
}

/// A browser login waiting for its callback.
struct Callback {
    login: String,
    region: String,
    registration: Registration,
    verifier: Verifier,
    expires_at: SystemTime,
}

/// What is sealed per login: enough to refresh without a new login.
#[derive(Serialize, Deserialize)]
struct SealedLogin {
    client_id: String,
    client_secret: String,
    client_expires_at: u64,
    refresh_token: String,
}

impl Drop for SealedLogin {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.client_secret.zeroize();
        self.refresh_token.zeroize();
    }
}

#[derive(Serialize, Deserialize)]
struct LoginFile {
    version: u32,
    sealed: String,
}

/// Every IAM Identity Center login of this agent.
pub struct Logins {
    /// Replaced by `credctl reload` when the endpoints change.
    api: std::sync::RwLock<Arc<dyn SsoApi>>,
    vault: Arc<VaultKeeper>,
    /// Endpoint overrides receive a login only once a touch has confirmed them.
    trusted: Arc<crate::trust::Trusted>,
    /// The overrides in force, named for the refusal (empty: AWS's endpoints).
    overrides: std::sync::RwLock<Vec<String>>,
    dir: PathBuf,
    /// `http://127.0.0.1:PORT/oauth/callback`, the PKCE redirect.
    redirect_uri: String,
    logins: Mutex<HashMap<String, Login>>,
    callbacks: Mutex<HashMap<String, Callback>>,
    /// One start or refresh at a time (rare operations; keeps two from racing).
    serial: tokio::sync::Mutex<()>,
    /// Logins being started right now (before their pending entry exists): a request for one
    /// of them joins it rather than start (and touch for) another.
    starting: Mutex<std::collections::HashSet<String>>,
    /// How many holds each login has ([`LoginHold`]: the connection that started or joined it,
    /// each `AwaitLogin`): when the last goes away before the login ends (Ctrl-C), the login is
    /// cancelled.
    waiting: Mutex<HashMap<String, usize>>,
}

/// Someone who wants login `login` to go on: the control connection that started or joined it
/// (held until that connection closes) and each `AwaitLogin`. When the last hold goes while the
/// login is still under way, the person abandoned it (Ctrl-C on `credctl login`): it is
/// cancelled, so nothing keeps polling or accepts a sign-in for a command nobody runs any more.
pub struct LoginHold {
    logins: Arc<Logins>,
    login: String,
}

impl Drop for LoginHold {
    fn drop(&mut self) {
        let last = {
            let mut waiting = self.logins.waiting.locked();
            let n = waiting.entry(self.login.clone()).or_insert(1);
            *n = n.saturating_sub(1);
            let last = *n == 0;
            if last {
                waiting.remove(&self.login);
            }
            last
        };
        if last {
            self.logins.cancel(&self.login);
        }
    }
}

fn label(login: &str) -> Vec<u8> {
    let mut l = b"credagent sso login\0".to_vec();
    l.extend_from_slice(login.as_bytes());
    l
}

fn login_required(login: &str, why: &str) -> Refusal {
    Refusal::new(
        Code::LoginRequired,
        format!("{why}: run `credctl login {login}`"),
    )
}

/// Where an Identity Center login stands, as `credctl login` is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginState {
    /// Under way: the person opens `authorize_url` (PKCE), or enters `user_code` at
    /// `verification_uri` (device code), before `expires_at`.
    Pending {
        login: String,
        authorize_url: Option<String>,
        user_code: Option<String>,
        verification_uri: Option<String>,
        verification_uri_complete: Option<String>,
        /// Unix seconds.
        expires_at: u64,
    },
    /// Logged in; the access token lasts until `expires_at` (unix seconds).
    LoggedIn { login: String, expires_at: u64 },
}

impl Logins {
    pub fn new(
        api: Arc<dyn SsoApi>,
        vault: Arc<VaultKeeper>,
        trusted: Arc<crate::trust::Trusted>,
        overrides: Vec<String>,
        state_dir: &std::path::Path,
        http_port: u16,
    ) -> Logins {
        Logins {
            api: std::sync::RwLock::new(api),
            vault,
            trusted,
            overrides: std::sync::RwLock::new(overrides),
            dir: state_dir.join("sso"),
            redirect_uri: format!("http://127.0.0.1:{http_port}/oauth/callback"),
            logins: Mutex::new(HashMap::new()),
            callbacks: Mutex::new(HashMap::new()),
            serial: tokio::sync::Mutex::new(()),
            starting: Mutex::new(std::collections::HashSet::new()),
            waiting: Mutex::new(HashMap::new()),
        }
    }

    /// The Identity Center client in force.
    fn api(&self) -> Arc<dyn SsoApi> {
        crate::util::RwLockExt::read_locked(&self.api).clone()
    }

    /// Puts another Identity Center client (and its endpoint overrides, named for refusals) in
    /// force: `credctl reload`, after a touch confirmed the new endpoints. Logins under way
    /// finish with the client they started with.
    pub fn reconfigure(&self, api: Arc<dyn SsoApi>, overrides: Vec<String>) {
        *crate::util::RwLockExt::write_locked(&self.api) = api;
        *crate::util::RwLockExt::write_locked(&self.overrides) = overrides;
    }

    fn file(&self, login: &str) -> PathBuf {
        self.dir
            .join(format!("{}.json", hex::encode(login.as_bytes())))
    }

    /// Whether `source` can give credentials, at once or after a touch opens its sealed
    /// refresh token: checked before asking for the touch, so the person logs in first.
    pub fn usable(&self, source: &SsoSource, now: SystemTime) -> bool {
        let key = source.login_key();
        let ready = self.logins.locked().get(&key).is_some_and(|l| {
            l.refresh.is_some() || l.access.as_ref().is_some_and(|(_, exp)| *exp > now)
        });
        ready || self.file(&key).exists()
    }

    /// Whether `credctl login` for `source` would only join a login under way or answer with
    /// the valid one (nothing new is started or sealed), rather than start one.
    pub fn joins_or_ready(&self, source: &SsoSource, now: SystemTime) -> bool {
        let key = source.login_key();
        if self.starting.locked().contains(&key) {
            return true;
        }
        self.logins.locked().get(&key).is_some_and(|l| {
            l.pending.as_ref().is_some_and(|p| p.expires_at > now)
                || l.access
                    .as_ref()
                    .is_some_and(|(_, exp)| *exp > now + REFRESH_MARGIN)
        })
    }

    /// `credctl login`: joins the login under way, answers `LoggedIn` when a usable one
    /// exists, or starts one.
    ///
    /// `may_start`: whether this request may start a new login (its connection proved the vault
    /// with a touch); without it, it may only join one or reuse a valid one.
    pub async fn start(
        self: &Arc<Self>,
        source: &SsoSource,
        device_code: bool,
        now: SystemTime,
        may_start: bool,
    ) -> Result<LoginState, Refusal> {
        /// Takes the login off `starting` however the start ends, a dropped request included.
        struct Starting<'a>(&'a Mutex<std::collections::HashSet<String>>, String);
        impl Drop for Starting<'_> {
            fn drop(&mut self) {
                self.0.locked().remove(&self.1);
            }
        }
        let _starting = may_start.then(|| {
            let key = source.login_key();
            self.starting.locked().insert(key.clone());
            Starting(&self.starting, key)
        });
        // As the AWS CLI v2 decides (`awscli/customizations/sso/utils.py`, `do_sso_login`):
        // the authorization-code flow needs an `[sso-session]`; a legacy profile (`sso_start_url`
        // in the profile itself) logs in with the device code.
        let device_code = device_code || source.session.is_none();
        self.start_serial(source, device_code, now, may_start).await
    }

    async fn start_serial(
        self: &Arc<Self>,
        source: &SsoSource,
        device_code: bool,
        now: SystemTime,
        may_start: bool,
    ) -> Result<LoginState, Refusal> {
        let key = source.login_key();
        let _turn = self.serial.lock().await;
        {
            let logins = self.logins.locked();
            if let Some(l) = logins.get(&key) {
                if let Some(p) = &l.pending {
                    // Join the login under way, unless the person asked for the other flow
                    // (a browser login nobody can finish here, say): that one then replaces
                    // it, and its waiters get the new one's outcome.
                    if p.expires_at > now && p.device_code == device_code {
                        return Ok(p.reply.clone());
                    }
                }
                if let Some((_, exp)) = &l.access {
                    if *exp > now + REFRESH_MARGIN {
                        return Ok(LoginState::LoggedIn {
                            login: key,
                            expires_at: unix_secs(*exp),
                        });
                    }
                }
            }
        }
        // A login sends the client registration, the device code or the authorization code,
        // and then the tokens, to the OIDC endpoint: an override that no touch confirmed in
        // this agent's life (config.toml rewritten, agent restarted) receives none of it.
        let overrides = crate::util::RwLockExt::read_locked(&self.overrides).clone();
        if !overrides.is_empty() && !self.trusted.confirmed() {
            return Err(Refusal::new(
                Code::Refused,
                format!(
                    "this agent logs in to IAM Identity Center through {}, set in config.toml, \
                     and no touch has confirmed that since the agent started: run `credctl \
                     confirm` (a touch; it shows any change made behind the agent's back), then \
                     `credctl login {key}` again",
                    overrides.join(" and ")
                ),
            ));
        }
        if !may_start {
            return Err(Refusal::new(
                Code::TouchRequired,
                "an IAM Identity Center login takes a touch of your security key: it proves the \
                 vault its tokens are sealed to is yours",
            ));
        }
        self.begin(source, device_code, now)
            .await
            .map_err(|e| login_required(&key, &format!("the login could not start ({e})")))
    }

    async fn begin(
        self: &Arc<Self>,
        source: &SsoSource,
        device_code: bool,
        now: SystemTime,
    ) -> Result<LoginState, SsoError> {
        let key = source.login_key();
        let region = source.sso_region.clone();
        let pkce = (!device_code).then(|| PkceClient {
            redirect_uri: self.redirect_uri.clone(),
            issuer_url: source.start_url.clone(),
        });
        // A registration for the other grant cannot be reused: PKCE clients name their
        // redirect, device clients none.
        // The authorization-code client always asks for a scope: `sso:account:access` when
        // none is configured (botocore `SSOTokenFetcherAuth._register_client`:
        // `scopes or [_AUTH_GRANT_DEFAULT_SCOPE]`).
        let scopes = if pkce.is_some() && source.scopes.is_empty() {
            vec![crate::profiles::DEFAULT_SSO_SCOPES.to_owned()]
        } else {
            source.scopes.clone()
        };
        let request = ClientRequest {
            scopes,
            pkce: pkce.clone(),
        };
        let kept = self
            .logins
            .locked()
            .get(&key)
            .and_then(|l| l.clients.get(&device_code).cloned())
            .filter(|r| r.expires_at > now + Duration::from_secs(3600));
        let registration = match kept {
            Some(r) => r,
            None => {
                let r = self.api().register_client(&region, &request, now).await?;
                self.logins
                    .locked()
                    .entry(key.clone())
                    .or_default()
                    .clients
                    .insert(device_code, r.clone());
                r
            }
        };
        let tx = self
            .logins
            .locked()
            .get(&key)
            .and_then(|l| l.pending.as_ref().map(|p| p.outcome.clone()))
            .unwrap_or_else(|| watch::channel(None).0);
        let (reply, expires_at) = if device_code {
            let auth = self
                .api()
                .start_device_authorization(&region, &registration, &source.start_url, now)
                .await?;
            let reply = LoginState::Pending {
                login: key.clone(),
                authorize_url: None,
                user_code: Some(auth.user_code.clone()),
                verification_uri: Some(auth.verification_uri.clone()),
                verification_uri_complete: auth.verification_uri_complete.clone(),
                expires_at: unix_secs(auth.expires_at),
            };
            let expires_at = auth.expires_at;
            self.spawn_device_poll(key.clone(), region, registration, auth, tx.clone());
            (reply, expires_at)
        } else {
            let verifier = Verifier::generate().map_err(random_error)?;
            let state = pkce::new_state().map_err(random_error)?;
            let url = self.api().authorize_url(
                &region,
                &registration,
                &AuthorizeRequest {
                    redirect_uri: self.redirect_uri.clone(),
                    state: state.clone(),
                    code_challenge: verifier.challenge(),
                    scopes: request.scopes.clone(),
                },
            );
            let expires_at = now + PKCE_TTL;
            self.callbacks.locked().insert(
                state,
                Callback {
                    login: key.clone(),
                    region,
                    registration,
                    verifier,
                    expires_at,
                },
            );
            let reply = LoginState::Pending {
                login: key.clone(),
                authorize_url: Some(url),
                user_code: None,
                verification_uri: None,
                verification_uri_complete: None,
                expires_at: unix_secs(expires_at),
            };
            (reply, expires_at)
        };
        let mut logins = self.logins.locked();
        let entry = logins.entry(key).or_default();
        entry.failed = None;
        entry.pending = Some(Pending {
            reply: reply.clone(),
            expires_at,
            device_code,
            outcome: tx,
        });
        Ok(reply)
    }

    fn spawn_device_poll(
        self: &Arc<Self>,
        key: String,
        region: String,
        registration: Registration,
        auth: super::DeviceAuthorization,
        tx: watch::Sender<Outcome>,
    ) {
        let api = self.api();
        let this = self.clone();
        tokio::spawn(async move {
            let mut interval = auth.interval;
            let grant = Grant::DeviceCode(auth.device_code.clone());
            loop {
                tokio::time::sleep(interval).await;
                // Cancelled or failed meanwhile: stop asking.
                let ended = this
                    .logins
                    .locked()
                    .get(&key)
                    .is_none_or(|l| l.pending.is_none());
                if ended {
                    break;
                }
                let now = SystemTime::now();
                if now > auth.expires_at {
                    this.fail(
                        &key,
                        "the device code expired before the login was approved",
                    );
                    break;
                }
                match api.create_token(&region, &registration, &grant, now).await {
                    Ok(tokens) => {
                        this.finish(&key, registration, tokens);
                        break;
                    }
                    Err(SsoError::Pending) => {}
                    Err(SsoError::SlowDown) => interval += Duration::from_secs(5),
                    Err(SsoError::Transient { .. }) => {}
                    Err(e) => {
                        this.fail(&key, &e.for_login(&key).to_string());
                        break;
                    }
                }
            }
            drop(tx);
        });
    }

    /// Waits for the login under way for `login` (or answers at once if it is usable).
    pub async fn wait(
        self: &Arc<Self>,
        login: &str,
        now: SystemTime,
    ) -> Result<LoginState, Refusal> {
        let (rx, until) = {
            let logins = self.logins.locked();
            match logins.get(login) {
                Some(Login {
                    pending: Some(p), ..
                }) => (p.outcome.subscribe(), p.expires_at),
                Some(Login {
                    access: Some((_, exp)),
                    ..
                }) if *exp > now => {
                    return Ok(LoginState::LoggedIn {
                        login: login.to_owned(),
                        expires_at: unix_secs(*exp),
                    })
                }
                Some(Login {
                    failed: Some(why), ..
                }) => return Err(login_required(login, why)),
                _ => return Err(login_required(login, "no login is under way")),
            }
        };
        // Held while this credctl waits: if it goes away (Ctrl-C) and nobody else holds the
        // login, the login is cancelled. A login that ended meanwhile cancels nothing.
        let _hold = self.hold(login);
        // Bounded by the login's own expiry (the device code's `expires_in`, or the browser
        // sign-in's 10 minutes), so no waiter hangs on a sign-in nobody finishes.
        let left = until
            .duration_since(now)
            .unwrap_or_default()
            .saturating_add(Duration::from_secs(1));
        let mut rx = rx;
        let outcome = tokio::time::timeout(left, async {
            loop {
                if let Some(outcome) = rx.borrow_and_update().clone() {
                    return Some(outcome);
                }
                if rx.changed().await.is_err() {
                    return None;
                }
            }
        })
        .await;
        match outcome {
            Ok(Some(Ok(exp))) => Ok(LoginState::LoggedIn {
                login: login.to_owned(),
                expires_at: unix_secs(exp),
            }),
            Ok(Some(Err(why))) => Err(login_required(login, &why)),
            Ok(None) => Err(login_required(login, "the login ended without a result")),
            Err(_) => {
                self.fail(login, "the sign-in was not completed in time");
                Err(login_required(
                    login,
                    "the sign-in was not completed in time",
                ))
            }
        }
    }

    /// The browser came back with `error=` (the person pressed Deny, or Identity Center
    /// refused): the login that `state` names fails at once, and its waiters are told. A state
    /// nobody issued changes nothing (a web page cannot end a login it does not know).
    pub fn denied(&self, state: &str, error: &str) -> bool {
        let Some(cb) = self.callbacks.locked().remove(state) else {
            return false;
        };
        let printable: String = error
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(64)
            .collect();
        self.fail(
            &cb.login,
            &format!("IAM Identity Center answered {printable} (the sign-in was denied)"),
        );
        true
    }

    /// The browser came back to `/oauth/callback` with `state` and `code`. The state is
    /// single-use: a replayed or forged callback finds nothing.
    pub async fn callback(
        &self,
        state: &str,
        code: &str,
        now: SystemTime,
    ) -> Result<(), CallbackError> {
        let Some(cb) = self.callbacks.locked().remove(state) else {
            return Err(CallbackError::Unknown);
        };
        if cb.expires_at < now {
            self.fail(&cb.login, "the browser sign-in took too long");
            return Err(CallbackError::Expired);
        }
        let grant = Grant::AuthorizationCode {
            code: SecretString::from(code),
            verifier: cb.verifier.secret().clone(),
            redirect_uri: self.redirect_uri.clone(),
        };
        match self
            .api()
            .create_token(&cb.region, &cb.registration, &grant, now)
            .await
        {
            Ok(tokens) => {
                self.finish(&cb.login, cb.registration, tokens);
                Ok(())
            }
            Err(e) => {
                let e = e.for_login(&cb.login);
                self.fail(&cb.login, &e.to_string());
                Err(CallbackError::Refused(e))
            }
        }
    }

    /// Opens the sealed refresh token of `source`'s login with the vault a touch unwrapped.
    /// Nothing sealed (no login yet, or a login kept in memory) is fine.
    pub fn unseal(&self, source: &SsoSource, vault: &VaultSecret) -> Result<(), SsoError> {
        let key = source.login_key();
        let unsealed = {
            let logins = self.logins.locked();
            match logins.get(&key) {
                Some(l) if l.refresh.is_some() => Some(
                    l.seal_pending
                        .then(|| l.registration.clone().zip(l.refresh.clone()))
                        .flatten(),
                ),
                _ => None,
            }
        };
        if let Some(to_seal) = unsealed {
            // A login that came before any touch proved the vault: this touch has, so seal it
            // now (outside the lock every login shares).
            if let Some((reg, refresh)) = to_seal {
                match self.seal(&key, &reg, &refresh) {
                    Ok(()) => {
                        if let Some(l) = self.logins.locked().get_mut(&key) {
                            l.seal_pending = false;
                        }
                        tracing::info!(login = %key, "sealed the login kept in memory until a touch proved the vault");
                    }
                    Err(e) => {
                        tracing::warn!(login = %key, error = %e, "the refresh token stays in memory only")
                    }
                }
            }
            return Ok(());
        }
        let text = match std::fs::read_to_string(self.file(&key)) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                return Err(SsoError::Other {
                    code: "LoginFile".into(),
                    message: e.to_string(),
                })
            }
        };
        let damaged = |detail: String| SsoError::LoginNeeded {
            login: key.clone(),
            detail: format!("the sealed login does not open: {detail}"),
        };
        let file: LoginFile = serde_json::from_str(&text).map_err(|e| damaged(e.to_string()))?;
        let sealed = Sealed::decode(&file.sealed).map_err(|e| damaged(e.to_string()))?;
        let opened = vault
            .open(&label(&key), &sealed)
            .map_err(|e| damaged(e.to_string()))?;
        let login: SealedLogin =
            serde_json::from_slice(opened.expose()).map_err(|e| damaged(e.to_string()))?;
        let mut logins = self.logins.locked();
        let entry = logins.entry(key).or_default();
        entry.registration = Some(Registration {
            client_id: login.client_id.clone(),
            client_secret: SecretString::from(login.client_secret.as_str()),
            expires_at: UNIX_EPOCH + Duration::from_secs(login.client_expires_at),
        });
        entry.refresh = Some(SecretString::from(login.refresh_token.as_str()));
        Ok(())
    }

    /// Credentials for `source`'s account and permission set: GetRoleCredentials with a valid
    /// access token, refreshing it first when it runs out.
    pub async fn role_credentials(
        &self,
        source: &SsoSource,
        now: SystemTime,
    ) -> Result<TempCredentials, SsoError> {
        let key = source.login_key();
        let region = &source.sso_region;
        let token = self.access_token(source, now, false).await?;
        match self
            .api()
            .get_role_credentials(region, &token, &source.account_id, &source.role_name)
            .await
        {
            Err(SsoError::Unauthorized { .. }) => {
                // Logged out or revoked early: one refresh, then give up.
                let token = self.access_token(source, now, true).await?;
                self.api()
                    .get_role_credentials(region, &token, &source.account_id, &source.role_name)
                    .await
                    .map_err(|e| e.for_login(&key))
            }
            other => other.map_err(|e| e.for_login(&key)),
        }
    }

    /// A usable access token: the one in memory, or a refreshed one.
    async fn access_token(
        &self,
        source: &SsoSource,
        now: SystemTime,
        force_refresh: bool,
    ) -> Result<SecretString, SsoError> {
        let key = source.login_key();
        let current = |logins: &HashMap<String, Login>| {
            logins
                .get(&key)
                .and_then(|l| l.access.as_ref())
                .filter(|(_, exp)| *exp > now + Duration::from_secs(60))
                .map(|(t, _)| t.clone())
        };
        if !force_refresh {
            if let Some(t) = current(&self.logins.locked()) {
                return Ok(t);
            }
        }
        let _turn = self.serial.lock().await;
        if !force_refresh {
            // Someone else refreshed while we waited.
            if let Some(t) = current(&self.logins.locked()) {
                return Ok(t);
            }
        }
        self.refresh(source, now).await
    }

    async fn refresh(&self, source: &SsoSource, now: SystemTime) -> Result<SecretString, SsoError> {
        let key = source.login_key();
        let (registration, refresh) = {
            let logins = self.logins.locked();
            let login = logins.get(&key);
            match (
                login.and_then(|l| l.registration.clone()),
                login.and_then(|l| l.refresh.clone()),
            ) {
                (Some(r), Some(t)) => (r, t),
                _ => {
                    return Err(SsoError::LoginNeeded {
                        login: key,
                        detail: "no usable login (never logged in, logged out, or expired)".into(),
                    })
                }
            }
        };
        match self
            .api()
            .create_token(
                &source.sso_region,
                &registration,
                &Grant::Refresh(refresh),
                now,
            )
            .await
        {
            Ok(tokens) => {
                let access = tokens.access_token.clone();
                self.finish(&key, registration, tokens);
                tracing::info!(login = %key, "refreshed the IAM Identity Center access token");
                Ok(access)
            }
            Err(e) => {
                if matches!(e, SsoError::LoginNeeded { .. }) {
                    // Revoked or expired for good: forget it, so nothing keeps retrying.
                    self.forget(&key);
                }
                Err(e.for_login(&key))
            }
        }
    }

    /// The accounts the login can reach, each with its permission sets (ListAccounts, then
    /// ListAccountRoles per account), sorted by account id.
    pub async fn discover(
        &self,
        source: &SsoSource,
        now: SystemTime,
    ) -> Result<Vec<(super::Account, Vec<String>)>, SsoError> {
        let key = source.login_key();
        let token = self.access_token(source, now, false).await?;
        let region = &source.sso_region;
        let mut accounts = self
            .api()
            .list_accounts(region, &token)
            .await
            .map_err(|e| e.for_login(&key))?;
        accounts.sort_by(|a, b| a.account_id.cmp(&b.account_id));
        let mut out = Vec::with_capacity(accounts.len());
        for account in accounts {
            let mut roles = self
                .api()
                .list_account_roles(region, &token, &account.account_id)
                .await
                .map_err(|e| e.for_login(&key))?;
            roles.sort();
            out.push((account, roles));
        }
        Ok(out)
    }

    /// Refreshes, ahead of time, the access tokens of logins whose refresh token is open.
    pub async fn refresh_due(&self, sources: &[SsoSource], now: SystemTime) {
        for source in sources {
            let due = self
                .logins
                .locked()
                .get(&source.login_key())
                .is_some_and(|l| {
                    l.refresh.is_some()
                        && l.access
                            .as_ref()
                            .is_none_or(|(_, exp)| *exp <= now + REFRESH_MARGIN)
                });
            if due {
                if let Err(e) = self.access_token(source, now, true).await {
                    tracing::warn!(login = %source.login_key(), code = e.code(), error = %e, "background refresh failed");
                }
            }
        }
    }

    /// `lock`: wipes every token from memory; the sealed refresh tokens need a touch again.
    pub fn lock(&self) {
        self.logins.locked().clear();
        self.callbacks.locked().clear();
    }

    /// A screen lock while jobs run: wipes every login but those in `keep` (which the jobs'
    /// sessions need), and every sign-in under way.
    pub fn retain(&self, keep: &std::collections::HashSet<String>) {
        self.logins.locked().retain(|key, _| keep.contains(key));
        self.callbacks.locked().clear();
    }

    /// `credctl logout`: revokes the access token (best effort) and forgets the login.
    pub async fn logout(&self, source: &SsoSource) {
        let key = source.login_key();
        let access = self
            .logins
            .locked()
            .get(&key)
            .and_then(|l| l.access.as_ref().map(|(t, _)| t.clone()));
        if let Some(token) = access {
            if let Err(e) = self.api().logout(&source.sso_region, &token).await {
                tracing::warn!(login = %key, code = e.code(), "logout was not confirmed by IAM Identity Center");
            }
        }
        self.forget(&key);
    }

    /// A login finished (device code, browser callback or refresh): the tokens go to memory,
    /// the refresh token and its client are sealed to the vault, and the waiters are told.
    fn finish(&self, key: &str, registration: Registration, tokens: TokenSet) {
        let expires_at = tokens.expires_at;
        let (pending, to_seal) = {
            let mut logins = self.logins.locked();
            let login = logins.entry(key.to_owned()).or_default();
            login.access = Some((tokens.access_token, expires_at));
            if let Some(refresh) = tokens.refresh_token {
                login.refresh = Some(refresh);
            }
            let to_seal = login.refresh.clone().map(|r| (registration.clone(), r));
            login.registration = Some(registration);
            (login.pending.take(), to_seal)
        };
        // Sealing writes a file: outside the lock every login shares.
        if let Some((reg, refresh)) = to_seal {
            let sealed = self.seal(key, &reg, &refresh);
            if let Err(e) = &sealed {
                tracing::warn!(login = %key, error = %e, "the refresh token stays in memory only");
            }
            if let Some(l) = self.logins.locked().get_mut(key) {
                l.seal_pending = sealed.is_err();
            }
        }
        if let Some(p) = pending {
            let _ = p.outcome.send(Some(Ok(expires_at)));
        }
        tracing::info!(login = %key, "IAM Identity Center login ready");
    }

    /// A login attempt failed: its waiters are told why.
    /// A hold on login `key` (see [`LoginHold`]).
    pub fn hold(self: &Arc<Self>, key: &str) -> LoginHold {
        *self.waiting.locked().entry(key.to_owned()).or_default() += 1;
        LoginHold {
            logins: Arc::clone(self),
            login: key.to_owned(),
        }
    }

    /// Cancels the login under way for `key`, if one is: its waiters are told, its device code
    /// is no longer polled, and a browser sign-in for it finds nothing when it comes back.
    fn cancel(&self, key: &str) {
        let under_way = self
            .logins
            .locked()
            .get(key)
            .is_some_and(|l| l.pending.is_some());
        if under_way {
            self.callbacks.locked().retain(|_, cb| cb.login != key);
            self.fail(
                key,
                "the login was cancelled: the credctl waiting for it was interrupted",
            );
        }
    }

    fn fail(&self, key: &str, why: &str) {
        let pending = self.logins.locked().get_mut(key).and_then(|l| {
            // A registration Identity Center no longer honours must not be reused.
            l.clients.clear();
            l.failed = Some(why.to_owned());
            l.pending.take()
        });
        if let Some(p) = pending {
            let _ = p.outcome.send(Some(Err(why.to_owned())));
        }
        tracing::warn!(login = %key, why, "IAM Identity Center login failed");
    }

    /// Seals the refresh token and its client to the vault (no touch: the public half).
    fn seal(
        &self,
        key: &str,
        registration: &Registration,
        refresh: &SecretString,
    ) -> Result<(), SealError> {
        let Some(public) = self.vault.proven_public() else {
            return Err(if self.vault.exists() {
                SealError::NotProven
            } else {
                SealError::NoVault
            });
        };
        let plain = zeroize::Zeroizing::new(
            serde_json::to_vec(&SealedLogin {
                client_id: registration.client_id.clone(),
                client_secret: registration.client_secret.expose_secret().to_owned(),
                client_expires_at: unix_secs(registration.expires_at),
                refresh_token: refresh.expose_secret().to_owned(),
            })
            .map_err(|e| SealError::Encode(e.to_string()))?,
        );
        let sealed = crate::vault::seal(&public, &label(key), &plain)
            .map_err(|e| SealError::Encode(e.to_string()))?;
        let text = serde_json::to_string(&LoginFile {
            version: 1,
            sealed: sealed.encode(),
        })
        .map_err(|e| SealError::Encode(e.to_string()))?;
        let path = self.file(key);
        crate::util::create_private_dir(&self.dir)
            .and_then(|()| crate::util::write_atomic(&path, text.as_bytes(), 0o600))
            .map_err(|source| SealError::Write { path, source })
    }

    fn forget(&self, key: &str) {
        self.logins.locked().remove(key);
        let _ = std::fs::remove_file(self.file(key));
    }
}

/// Why the browser's return to `/oauth/callback` was not taken, as its page says.
#[derive(Debug, thiserror::Error)]
pub enum CallbackError {
    #[error("this sign-in link is unknown or was already used: run `credctl login` again")]
    Unknown,
    #[error("this sign-in expired: run `credctl login` again")]
    Expired,
    #[error("{0}")]
    Refused(SsoError),
}

/// Why a login's refresh token stays in memory only.
#[derive(Debug, thiserror::Error)]
enum SealError {
    #[error(
        "no touch has proven the vault since the agent started (a vault.json replaced behind \
         its back must receive nothing): it is sealed at your next touch"
    )]
    NotProven,
    #[error("no vault yet (register a key with hmac-secret)")]
    NoVault,
    #[error("cannot seal the login: {0}")]
    Encode(String),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn random_error(e: getrandom::Error) -> SsoError {
    SsoError::Other {
        code: "Random".into(),
        message: e.to_string(),
    }
}

//! The agent's `aws login` sign-ins, one per profile: the browser sign-in (one per profile
//! however many wait for it), the code redeemed with a fresh DPoP key, the refresh token and
//! key sealed to the vault at once (or kept in memory until a touch proves the vault), the
//! 15-minute credentials in memory, refreshed with the same key when less than 5 minutes are
//! left (as botocore's `LoginCredentialFetcher` does) and never with a touch; `lock` wipes all
//! of it from memory, and a touch's vault opens the sealed sign-in again without a new one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use secrecy::SecretString;
use tokio::sync::watch;

use super::client::{ClientId, Signin, SigninError};
use super::dpop::DpopKey;
use super::store::{LoginSecret, LoginStore, StoreError};
use crate::sts::TempCredentials;
use crate::util::LockExt;
use crate::vault::VaultSecret;

/// Refresh when less than this is left (botocore's `_REFRESH_THRESHOLD`).
pub const REFRESH_WITHIN: Duration = Duration::from_secs(5 * 60);
/// How long a browser sign-in may take (the AWS CLI waits as long for its callback).
pub const SIGN_IN_WITHIN: Duration = Duration::from_secs(600);

/// Where each region's Sign-In service is: the partition's, or the `signin_endpoint` override
/// a touch confirmed.
pub type EndpointFor = Box<dyn Fn(&str) -> String + Send + Sync>;

/// A sign-in under way: its browser comes back with `state`.
struct Pending {
    profile: String,
    region: String,
    key: DpopKey,
    verifier: crate::sso::pkce::Verifier,
    authorize_url: String,
    started: SystemTime,
    outcome: watch::Sender<Option<Result<String, SigninError>>>,
}

#[derive(Default)]
struct Login {
    /// The sign-in's secrets, open (after the sign-in, or a touch unsealed them).
    secret: Option<Arc<tokio::sync::Mutex<LoginSecret>>>,
    region: String,
    credentials: Option<Arc<TempCredentials>>,
    /// Signed in before a touch proved the vault: sealed at the next touch.
    seal_pending: bool,
}

/// What `start` hands back: where the browser goes, and the state its return will carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    pub authorize_url: String,
    pub state: String,
}

/// Every sign-in of the agent.
pub struct SigninLogins {
    store: LoginStore,
    endpoint_for: EndpointFor,
    /// `http://127.0.0.1:PORT/oauth/callback`, the agent's.
    redirect_uri: String,
    logins: Mutex<HashMap<String, Login>>,
    /// By state.
    pending: Mutex<HashMap<String, Pending>>,
}

impl SigninLogins {
    pub fn new(store: LoginStore, endpoint_for: EndpointFor, redirect_uri: String) -> SigninLogins {
        SigninLogins {
            store,
            endpoint_for,
            redirect_uri,
            logins: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
        }
    }

    fn service(&self, region: &str, profile: &str) -> Result<Signin, SigninError> {
        Signin::new(&(self.endpoint_for)(region), profile)
    }

    /// Starts `profile`'s browser sign-in in `region`, or joins the one under way: one sign-in
    /// serves every waiter.
    pub fn start(
        &self,
        profile: &str,
        region: &str,
        now: SystemTime,
    ) -> Result<Started, SigninError> {
        let mut pending = self.pending.locked();
        pending.retain(|_, p| p.started + SIGN_IN_WITHIN > now);
        if let Some((state, p)) = pending.iter().find(|(_, p)| p.profile == profile) {
            return Ok(Started {
                authorize_url: p.authorize_url.clone(),
                state: state.clone(),
            });
        }
        let random = |e: &dyn std::fmt::Display| SigninError::Unreachable {
            endpoint: "this machine".into(),
            detail: format!("the random generator failed: {e}"),
        };
        let key = DpopKey::generate().map_err(|e| random(&e))?;
        let verifier = crate::sso::pkce::Verifier::generate().map_err(|e| random(&e))?;
        let state = uuid::Uuid::new_v4().to_string();
        let authorize_url = self.service(region, profile)?.authorize_url(
            ClientId::SameDevice,
            &state,
            &verifier.challenge(),
            &self.redirect_uri,
        );
        let (outcome, _) = watch::channel(None);
        pending.insert(
            state.clone(),
            Pending {
                profile: profile.to_owned(),
                region: region.to_owned(),
                key,
                verifier,
                authorize_url: authorize_url.clone(),
                started: now,
                outcome,
            },
        );
        Ok(Started {
            authorize_url,
            state,
        })
    }

    /// Whether a sign-in under way waits for a browser coming back with `state`.
    pub fn expects(&self, state: &str) -> bool {
        self.pending.locked().contains_key(state)
    }

    /// The browser came back with `code` for `state`: the code is redeemed with the sign-in's
    /// key, the secrets sealed, the credentials kept; every waiter is told. Returns the
    /// profile.
    pub async fn callback(
        &self,
        state: &str,
        code: SecretString,
        now: SystemTime,
    ) -> Result<String, SigninError> {
        let Some(p) = self.pending.locked().remove(state) else {
            return Err(SigninError::Refused {
                code: "UnknownState".into(),
                message: "this sign-in link is unknown or was already used: run `credctl login` \
                          again"
                    .into(),
            });
        };
        let result = self.redeem(&p, code, now).await;
        let _ = p.outcome.send(Some(result.clone()));
        result.map(|_| p.profile.clone())
    }

    async fn redeem(
        &self,
        p: &Pending,
        code: SecretString,
        now: SystemTime,
    ) -> Result<String, SigninError> {
        if p.started + SIGN_IN_WITHIN <= now {
            return Err(SigninError::CodeExpired {
                profile: p.profile.clone(),
            });
        }
        let service = self.service(&p.region, &p.profile)?;
        let tokens = service
            .exchange_code(
                &p.key,
                ClientId::SameDevice,
                &code,
                p.verifier.secret(),
                &self.redirect_uri,
                now,
            )
            .await?;
        let login_session = tokens
            .login_session
            .clone()
            .ok_or_else(|| SigninError::Protocol {
                detail: "the code exchange returned no ID token".into(),
            })?;
        let key = DpopKey::from_pkcs8(p.key.pkcs8()).map_err(|e| SigninError::Protocol {
            detail: e.to_string(),
        })?;
        let secret = LoginSecret {
            key,
            refresh_token: tokens.refresh_token,
            client: ClientId::SameDevice,
            login_session: login_session.clone(),
        };
        let sealed = self.store.seal(&p.profile, &secret);
        if let Err(e) = &sealed {
            tracing::warn!(profile = %p.profile, error = %e, "the sign-in stays in memory only until a touch proves the vault");
        }
        let mut logins = self.logins.locked();
        let login = logins.entry(p.profile.clone()).or_default();
        login.secret = Some(Arc::new(tokio::sync::Mutex::new(secret)));
        login.region = p.region.clone();
        login.credentials = Some(Arc::new(tokens.credentials));
        login.seal_pending = sealed.is_err();
        tracing::info!(profile = %p.profile, "AWS sign-in ready");
        Ok(login_session)
    }

    /// Waits (at most until the sign-in's time is up) for `profile`'s sign-in under way: its
    /// `login_session`.
    pub async fn wait(&self, profile: &str) -> Result<String, SigninError> {
        let rx = self
            .pending
            .locked()
            .values()
            .find(|p| p.profile == profile)
            .map(|p| p.outcome.subscribe());
        let Some(mut rx) = rx else {
            return Err(SigninError::Refused {
                code: "NoSignIn".into(),
                message: format!(
                    "no sign-in of {profile} is under way: run `credctl login {profile}`"
                ),
            });
        };
        let got = tokio::time::timeout(SIGN_IN_WITHIN, rx.wait_for(Option::is_some)).await;
        match got {
            Ok(Ok(v)) => v.clone().unwrap_or_else(|| {
                Err(SigninError::Refused {
                    code: "Ended".into(),
                    message: "the sign-in ended without a result".into(),
                })
            }),
            _ => Err(SigninError::CodeExpired {
                profile: profile.to_owned(),
            }),
        }
    }

    /// Opens `profile`'s sealed sign-in with the vault a touch unwrapped (and seals one kept in
    /// memory until a touch proved the vault). Nothing sealed is no error: the session that
    /// needs it says to sign in.
    pub fn open(&self, profile: &str, region: &str, vault: &VaultSecret) -> Result<(), StoreError> {
        let pending_seal = {
            let logins = self.logins.locked();
            logins
                .get(profile)
                .filter(|l| l.seal_pending)
                .and_then(|l| l.secret.clone())
        };
        if let Some(secret) = pending_seal {
            if let Ok(s) = secret.try_lock() {
                self.store.seal(profile, &s)?;
                if let Some(l) = self.logins.locked().get_mut(profile) {
                    l.seal_pending = false;
                }
            }
            return Ok(());
        }
        if self
            .logins
            .locked()
            .get(profile)
            .is_some_and(|l| l.secret.is_some())
        {
            return Ok(());
        }
        if let Some(secret) = self.store.open(profile, vault)? {
            let mut logins = self.logins.locked();
            let login = logins.entry(profile.to_owned()).or_default();
            login.secret = Some(Arc::new(tokio::sync::Mutex::new(secret)));
            login.region = region.to_owned();
        }
        Ok(())
    }

    /// `profile`'s credentials at `now`: from memory while more than 5 minutes are left, else
    /// refreshed with the sign-in's key (the rotated refresh token sealed again). Never asks
    /// for a touch: a sign-in not open says what to do.
    pub async fn credentials(
        &self,
        profile: &str,
        now: SystemTime,
    ) -> Result<Arc<TempCredentials>, SigninError> {
        let (secret, region, cached) = {
            let logins = self.logins.locked();
            let Some(l) = logins.get(profile).filter(|l| l.secret.is_some()) else {
                return Err(SigninError::NotOpen {
                    profile: profile.to_owned(),
                });
            };
            (l.secret.clone(), l.region.clone(), l.credentials.clone())
        };
        if let Some(c) = cached.filter(|c| c.remaining(now) > REFRESH_WITHIN) {
            return Ok(c);
        }
        let Some(secret) = secret else {
            return Err(SigninError::NotOpen {
                profile: profile.to_owned(),
            });
        };
        // One refresh at a time per sign-in: the refresh token is spent by each.
        let mut s = secret.lock().await;
        if let Some(c) = self
            .logins
            .locked()
            .get(profile)
            .and_then(|l| l.credentials.clone())
            .filter(|c| c.remaining(now) > REFRESH_WITHIN)
        {
            return Ok(c);
        }
        let tokens = self
            .service(&region, profile)?
            .refresh(&s.key, s.client, &s.refresh_token, now)
            .await?;
        s.refresh_token = tokens.refresh_token;
        let sealed = self.store.seal(profile, &s);
        let creds = Arc::new(tokens.credentials);
        if let Some(l) = self.logins.locked().get_mut(profile) {
            l.credentials = Some(creds.clone());
            l.seal_pending = sealed.is_err();
        }
        Ok(creds)
    }

    /// `lock`: every secret and credential in memory, and every sign-in under way, is gone.
    pub fn lock(&self) {
        self.logins.locked().clear();
        self.pending.locked().clear();
    }

    /// `credctl logout PROFILE`: forgotten, sealed copy included.
    pub fn logout(&self, profile: &str) -> std::io::Result<()> {
        self.logins.locked().remove(profile);
        self.pending.locked().retain(|_, p| p.profile != profile);
        self.store.forget(profile)
    }
}

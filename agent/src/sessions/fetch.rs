//! Getting credentials from STS for one session: one caller at a time per role (the others
//! wait and share the outcome), MFA sessions per source, and the hop-by-hop AssumeRole chain.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use secrecy::SecretString;

use crate::profiles::Hop;
use crate::sts::{CallerCredentials, Denial, MfaToken, StsError, TempCredentials};

use super::cache::{MfaSession, RoleSlot, MIN_STS_DURATION};
use super::{SessionError, Sessions};
use crate::util::unix_secs;
use crate::util::LockExt;

/// An MFA session with less than this left is not used for a new call.
const MFA_MIN_LEFT: Duration = Duration::from_secs(5 * 60);

impl Sessions {
    /// Fetches credentials for `slot` unless someone else just did: callers queue on the
    /// slot's async lock, and a caller that waited while a fetch completed takes that
    /// fetch's result (success or error) instead of calling STS again. With `force`, fresh
    /// cached credentials do not stop a fetch (background refresh).
    pub(super) async fn fetch_coalesced(
        &self,
        slot: &Arc<RoleSlot>,
        now: SystemTime,
        force: bool,
        mfa_code: Option<SecretString>,
    ) -> Result<Arc<TempCredentials>, SessionError> {
        let config = &self.config();
        let seen_seq = slot.state.locked().fetch_seq;
        let _fetching = slot.fetch.lock().await;
        {
            let st = slot.state.locked();
            if st.fetch_seq != seen_seq {
                if let Some(err) = &st.last_error {
                    return Err(err.clone());
                }
                if let Some(c) = slot.servable(now, config) {
                    return Ok(c);
                }
            }
        }
        if !force {
            if let Some(c) = slot.servable(now, config) {
                return Ok(c);
            }
        }
        let requested = slot.final_duration(now, config);
        let result = self
            .fetch_chain(slot, now, mfa_code)
            .await
            .and_then(|creds| {
                slot.observe_lifetime(&creds, now, requested);
                // Credentials that could not be handed out at once are no success: storing them
                // and asking again at the next tick is how a skewed clock or a short role used to
                // flood STS. Back off instead, and say why.
                let margin = slot.serve_margin(config);
                let left = creds.remaining(now);
                if left < margin {
                    return Err(SessionError::Sts {
                        role: slot.spec.name.clone(),
                        source_name: slot.spec.source.clone(),
                        role_arn: slot.spec.role_arn.clone(),
                        error: Box::new(StsError::Transient {
                            op: crate::sts::StsOp::AssumeRole,
                            detail: format!(
                                "the credentials STS returned expire in {} s, less than the {} s \
                             they must have left to be served (is this machine's clock right?)",
                                left.as_secs(),
                                margin.as_secs()
                            ),
                        }),
                    });
                }
                Ok(creds)
            });
        // The epoch is read under the slot's state lock, which `lock()` takes after bumping it
        // to wipe the slot: either these credentials are stored before the wipe, or they are
        // refused here. Nothing survives a lock.
        let mut st = slot.state.locked();
        let locked = self.inner.epoch.load(Ordering::SeqCst) != slot.epoch;
        let result = match result {
            Ok(_) if locked => Err(SessionError::Locked {
                role: slot.spec.name.clone(),
            }),
            other => other,
        };
        st.fetch_seq += 1;
        match result {
            Ok(creds) => {
                let creds = Arc::new(creds);
                slot.set_credentials(Some(Arc::clone(&creds)));
                st.last_error = None;
                st.retry_after = None;
                st.consecutive_failures = 0;
                if force {
                    st.refreshes += 1;
                }
                tracing::info!(
                    role = %slot.spec.name,
                    expires = unix_secs(creds.expiration),
                    "credentials fetched"
                );
                Ok(creds)
            }
            Err(err) => {
                st.failures += 1;
                st.consecutive_failures = st.consecutive_failures.saturating_add(1);
                let factor = 1u32 << (st.consecutive_failures - 1).min(3);
                st.retry_after = Some(now + config.refresh_retry.saturating_mul(factor));
                st.last_error = Some(err.clone());
                tracing::warn!(role = %slot.spec.name, code = err.code(), error = %err, "credential fetch failed");
                Err(err)
            }
        }
    }

    /// Source (or MFA session) → every hop, one AssumeRole each, in order.
    async fn fetch_chain(
        &self,
        slot: &RoleSlot,
        now: SystemTime,
        mfa_code: Option<SecretString>,
    ) -> Result<TempCredentials, SessionError> {
        let spec = &slot.spec;
        let mut caller = match (&spec.sso, &spec.mfa_serial) {
            (Some(sso), _) => {
                slot.state.locked().sts_calls += 1;
                let creds =
                    self.inner
                        .sources
                        .sso_credentials(sso, now)
                        .await
                        .map_err(|error| SessionError::Sso {
                            role: spec.name.clone(),
                            error,
                        })?;
                if spec.chain.is_empty() {
                    // The permission set itself is the role.
                    return Ok(creds);
                }
                CallerCredentials::from(&creds)
            }
            (None, Some(serial)) if spec.mfa_on_assume_role() => {
                // More than an hour: the code goes on the role's own AssumeRole, signed with
                // the source's keys (see `RoleSpec::mfa_on_assume_role`). Every call needs a
                // fresh code, so a refresh cannot happen in the background: the session asks
                // for one duration and is opened again with a code after it.
                let Some(code) = mfa_code else {
                    return Err(SessionError::MfaRequired {
                        role: spec.name.clone(),
                        source_name: spec.source.clone(),
                        serial: serial.clone(),
                    });
                };
                let hop = &spec.chain[0];
                let caller = CallerCredentials::from(&self.source_credentials(slot).await?);
                slot.state.locked().sts_calls += 1;
                let mfa = MfaToken {
                    serial,
                    code: &code,
                };
                return self
                    .inner
                    .sts
                    .assume_role(
                        &caller,
                        hop,
                        slot.final_duration(now, &self.config()),
                        &session_name(hop),
                        spec.region.as_deref(),
                        Some(mfa),
                    )
                    .await
                    .map_err(|error| self.sts_error(slot, &hop.role_arn, error));
            }
            (None, Some(serial)) => CallerCredentials::from(
                self.ensure_mfa(slot, serial, mfa_code, now).await?.as_ref(),
            ),
            (None, None) => CallerCredentials::from(&self.source_credentials(slot).await?),
        };
        let region = spec.region.as_deref();
        let last = spec.chain.len().saturating_sub(1);
        let mut out = None;
        for (i, hop) in spec.chain.iter().enumerate() {
            // Intermediate credentials are used at once, so ask for the minimum.
            let duration = if i == last {
                slot.final_duration(now, &self.config())
            } else {
                MIN_STS_DURATION
            };
            slot.state.locked().sts_calls += 1;
            let creds = self
                .inner
                .sts
                .assume_role(&caller, hop, duration, &session_name(hop), region, None)
                .await
                .map_err(|error| self.sts_error(slot, &hop.role_arn, error))?;
            caller = CallerCredentials::from(&creds);
            out = Some(creds);
        }
        out.ok_or_else(|| SessionError::Profile {
            role: spec.name.clone(),
            message: "the role has no role_arn hop".into(),
        })
    }

    fn sts_error(&self, slot: &RoleSlot, role_arn: &str, error: StsError) -> SessionError {
        // Session credentials STS no longer accepts are useless: forget them so the next
        // open asks for a new MFA code.
        if slot.spec.mfa_serial.is_some()
            && matches!(
                error.denial(),
                Some(Denial::ExpiredToken | Denial::MfaInvalid)
            )
        {
            self.inner.mfa.locked().remove(&slot.spec.source);
        }
        SessionError::Sts {
            role: slot.spec.name.clone(),
            source_name: slot.spec.source.clone(),
            role_arn: role_arn.to_owned(),
            error: Box::new(error),
        }
    }

    async fn source_credentials(
        &self,
        slot: &RoleSlot,
    ) -> Result<crate::sources::SourceCredentials, SessionError> {
        let spec = &slot.spec;
        self.inner
            .sources
            .source(&spec.source)
            .await
            .map_err(|e| SessionError::from_source_error(spec, &e))
    }

    /// The MFA session of `source` if it is for `serial` and has a few minutes left.
    pub(super) fn usable_mfa(
        &self,
        source: &str,
        serial: &str,
        now: SystemTime,
    ) -> Option<Arc<TempCredentials>> {
        let mfa = self.inner.mfa.locked();
        mfa.get(source)
            .filter(|m| m.serial == serial && m.creds.remaining(now) >= MFA_MIN_LEFT)
            .map(|m| Arc::clone(&m.creds))
    }

    /// MFA session credentials for the slot's source: the cached ones when they last the
    /// whole role session (or no code was given), else a GetSessionToken with `code`.
    /// Concurrent callers for one source share one GetSessionToken.
    async fn ensure_mfa(
        &self,
        slot: &RoleSlot,
        serial: &str,
        code: Option<SecretString>,
        now: SystemTime,
    ) -> Result<Arc<TempCredentials>, SessionError> {
        let spec = &slot.spec;
        let source_lock = {
            let mut locks = self.inner.mfa_fetch.locked();
            Arc::clone(locks.entry(spec.source.clone()).or_default())
        };
        let _guard = source_lock.lock().await;
        let cached = self.usable_mfa(&spec.source, serial, now);
        if let Some(m) = &cached {
            if code.is_none() || m.expiration >= slot.credential_deadline(&self.config()) {
                return Ok(Arc::clone(m));
            }
        }
        let Some(code) = code else {
            return Err(SessionError::MfaRequired {
                role: spec.name.clone(),
                source_name: spec.source.clone(),
                serial: serial.to_owned(),
            });
        };
        let source = CallerCredentials::from(&self.source_credentials(slot).await?);
        slot.state.locked().sts_calls += 1;
        let creds = self
            .inner
            .sts
            .get_session_token(
                &source,
                serial,
                &code,
                self.config().mfa_session_ttl,
                spec.region.as_deref(),
            )
            .await
            .map_err(|error| self.sts_error(slot, serial, error))?;
        let creds = Arc::new(creds);
        // The epoch is read under the MFA map's lock, which `lock()` takes after bumping it:
        // either this insert lands before the lock wipes the map, or it sees the new epoch.
        let mut mfa = self.inner.mfa.locked();
        if self.inner.epoch.load(Ordering::SeqCst) != slot.epoch {
            return Err(SessionError::Locked {
                role: spec.name.clone(),
            });
        }
        mfa.insert(
            spec.source.clone(),
            MfaSession {
                serial: serial.to_owned(),
                creds: Arc::clone(&creds),
            },
        );
        Ok(creds)
    }
}

/// The hop's `role_session_name`, else the default.
fn session_name(hop: &Hop) -> String {
    hop.role_session_name
        .clone()
        .unwrap_or_else(default_session_name)
}

/// `credagent-$USER` (STS allows `[\w+=,.@-]`, 2 to 64 characters): the user's name shows in
/// CloudTrail next to every call made with the role.
pub fn default_session_name() -> String {
    let user = std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(|| {
            nix::unistd::User::from_uid(nix::unistd::getuid())
                .ok()
                .flatten()
                .map(|u| u.name)
        })
        .unwrap_or_else(|| format!("uid{}", nix::unistd::getuid()));
    let clean: String = user
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "+=,.@-_".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    let mut name = format!("credagent-{clean}");
    name.truncate(64);
    name
}

//! Per-role session state: the credential snapshot read on the hot path, the coalescing lock,
//! metrics, and the time rules (when to serve, when to refresh, how long to ask for).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::generation::{Generation, Versioned};
use crate::profiles::RoleSpec;
use crate::sts::TempCredentials;

use super::{SessionConfig, SessionError};
use crate::util::LockExt;

/// STS's minimum DurationSeconds.
pub const MIN_STS_DURATION: Duration = Duration::from_secs(900);
/// AssumeRole's default DurationSeconds when the profile sets none.
pub const DEFAULT_ROLE_DURATION: Duration = Duration::from_secs(3600);
/// AWS caps role chaining (AssumeRole signed with role credentials) at one hour.
pub const MAX_CHAINED_DURATION: Duration = Duration::from_secs(3600);

fn unix_millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Counters and refresh bookkeeping; behind a short std mutex.
#[derive(Debug, Default)]
pub(crate) struct SlotState {
    pub sts_calls: u64,
    pub refreshes: u64,
    pub failures: u64,
    /// Earliest time the refresher may try again after a failure.
    pub retry_after: Option<SystemTime>,
    /// Failed refreshes in a row (drives the retry backoff).
    pub consecutive_failures: u32,
    /// Bumped by every completed fetch; waiters compare it to share one result.
    pub fetch_seq: u64,
    /// Outcome of the last completed fetch, if it failed.
    pub last_error: Option<SessionError>,
}

/// One open role session.
pub(crate) struct RoleSlot {
    pub spec: RoleSpec,
    pub opened_at: SystemTime,
    /// The session ends here, whatever the credentials say.
    pub expires_at: SystemTime,
    /// The lock generation this session was opened in; a `lock()` bumps the agent's.
    pub epoch: u64,
    /// Last time credentials were handed out (idle timeout), in unix milliseconds.
    last_used_ms: AtomicU64,
    /// The hot-path snapshot: readers clone the `Arc` and go. Versioned: a new snapshot
    /// changes what the endpoint serves.
    creds: Versioned<Option<Arc<TempCredentials>>>,
    /// Held by whoever is calling STS for this role; everyone else waits on it.
    pub fetch: tokio::sync::Mutex<()>,
    /// Set while the background refresher works on this role.
    pub refreshing: AtomicBool,
    /// How long the last credentials were good for when they arrived, in seconds (0: none yet).
    /// Shorter than asked for when STS capped them or this machine's clock runs ahead: the
    /// margins follow what was observed, not what was asked.
    lifetime_secs: AtomicU64,
    /// How far this machine's clock runs ahead of STS's, in seconds, as measured from the last
    /// credentials (asked-for duration against the expiry STS set); 0 within a minute.
    skew_secs: std::sync::atomic::AtomicI64,
    pub state: Mutex<SlotState>,
    /// This session's share of `refresh_spread`, in thousandths (drawn when it opens).
    spread_permille: AtomicU64,
    /// The `credctl exec` jobs running on this role (shared by every session of the role, so
    /// a re-opened session keeps them): while one runs, the session outlives its idle timeout
    /// and a screen lock, served to those jobs only.
    leases: Arc<AtomicUsize>,
    /// Held for its running jobs (a screen lock came while they ran): served to them only;
    /// anyone else needs a new touch.
    held: AtomicBool,
    /// The processes and programs touches allowed to use this session (`[roles.NAME]`).
    pub grants: Mutex<super::programs::Grants>,
}

impl RoleSlot {
    pub fn new(
        spec: RoleSpec,
        now: SystemTime,
        ttl: Duration,
        epoch: u64,
        generation: Generation,
        leases: Arc<AtomicUsize>,
    ) -> RoleSlot {
        RoleSlot {
            spec,
            opened_at: now,
            expires_at: now + ttl,
            epoch,
            last_used_ms: AtomicU64::new(unix_millis(now)),
            creds: Versioned::new(None, generation),
            fetch: tokio::sync::Mutex::new(()),
            refreshing: AtomicBool::new(false),
            lifetime_secs: AtomicU64::new(0),
            skew_secs: std::sync::atomic::AtomicI64::new(0),
            state: Mutex::new(SlotState::default()),
            spread_permille: AtomicU64::new(0),
            leases,
            held: AtomicBool::new(false),
            grants: Mutex::new(Default::default()),
        }
    }

    /// Whether a `credctl exec` job runs on this role.
    pub fn leased(&self) -> bool {
        self.leases.load(Ordering::Relaxed) > 0
    }

    /// How many `credctl exec` jobs run on this role.
    pub fn jobs(&self) -> usize {
        self.leases.load(Ordering::Relaxed)
    }

    /// Holds the session for its running jobs only (a screen lock).
    pub fn hold(&self) {
        self.held.store(true, Ordering::Relaxed);
    }

    /// Whether the session serves its running jobs only at `now`: held by a screen lock, or
    /// past its idle timeout while a job runs.
    pub fn held(&self, now: SystemTime, idle: Option<Duration>) -> bool {
        self.held.load(Ordering::Relaxed) || self.idle_over(now, idle)
    }

    fn idle_over(&self, now: SystemTime, idle: Option<Duration>) -> bool {
        match idle {
            Some(idle) if !idle.is_zero() => {
                let last =
                    UNIX_EPOCH + Duration::from_millis(self.last_used_ms.load(Ordering::Relaxed));
                now.duration_since(last).unwrap_or(Duration::ZERO) > idle
            }
            _ => false,
        }
    }

    /// Sets this session's share of the refresh spread, in thousandths (0..1000).
    pub fn set_spread(&self, permille: u16) {
        self.spread_permille
            .store(u64::from(permille.min(999)), Ordering::Relaxed);
    }

    /// How much later than the refresh lead this session refreshes: its share of
    /// `refresh_spread`, at most half the time between the lead and the serving margin, so a
    /// refresh (and a retry after a failure) still comes well before the credentials stop
    /// being served.
    pub fn refresh_delay(&self, config: &SessionConfig) -> Duration {
        let room = self
            .refresh_lead(config)
            .saturating_sub(self.serve_margin(config))
            / 2;
        let spread = config.refresh_spread.min(room);
        spread.mul_f64(self.spread_permille.load(Ordering::Relaxed) as f64 / 1000.0)
    }

    /// Whether the session is still open at `now`: not past its end, and either a job runs on
    /// it or it is neither held nor idle too long.
    pub fn active(&self, now: SystemTime, idle: Option<Duration>) -> bool {
        if now >= self.expires_at {
            return false;
        }
        self.leased() || !(self.held.load(Ordering::Relaxed) || self.idle_over(now, idle))
    }

    pub fn touch(&self, now: SystemTime) {
        self.last_used_ms
            .fetch_max(unix_millis(now), Ordering::Relaxed);
    }

    pub fn credentials(&self) -> Option<Arc<TempCredentials>> {
        self.creds.read().clone()
    }

    /// Records how long credentials that arrived at `now` are good for, and the clock skew
    /// against STS they show: they were asked for `requested`.
    pub fn observe_lifetime(&self, creds: &TempCredentials, now: SystemTime, requested: Duration) {
        let left = creds.remaining(now);
        self.lifetime_secs
            .store(left.as_secs().max(1), Ordering::Relaxed);
        let ahead = requested.as_secs() as i64 - left.as_secs() as i64;
        let skew = if ahead.abs() > 60 { ahead } else { 0 };
        self.skew_secs.store(skew, Ordering::Relaxed);
    }

    /// The clock skew against STS measured from the last credentials (seconds this machine is
    /// ahead), if it is more than a minute.
    pub fn clock_skew(&self) -> Option<i64> {
        Some(self.skew_secs.load(Ordering::Relaxed)).filter(|s| *s != 0)
    }

    /// The role's duration as asked, or the last credentials' observed lifetime if shorter.
    fn lifetime(&self) -> Duration {
        match self.lifetime_secs.load(Ordering::Relaxed) {
            0 => self.role_duration(),
            s => self.role_duration().min(Duration::from_secs(s)),
        }
    }

    /// Replaces the snapshot; the old credentials are dropped (and zeroized) once the last
    /// reader lets go of them.
    pub fn set_credentials(&self, creds: Option<Arc<TempCredentials>>) {
        let old = std::mem::replace(&mut *self.creds.write(), creds);
        drop(old);
    }

    /// The credentials if they may be handed out at `now`.
    pub fn servable(
        &self,
        now: SystemTime,
        config: &SessionConfig,
    ) -> Option<Arc<TempCredentials>> {
        if !self.active(now, config.idle_timeout) {
            return None;
        }
        self.credentials()
            .filter(|c| c.remaining(now) >= self.serve_margin(config))
    }

    /// When credentials servable now stop being servable by the clock alone: the session's
    /// end, or the moment they fall under the serving margin (whichever comes first).
    pub fn serve_until(&self, creds: &TempCredentials, config: &SessionConfig) -> SystemTime {
        let margin_reached = creds
            .expiration
            .checked_sub(self.serve_margin(config))
            .unwrap_or(UNIX_EPOCH);
        self.expires_at.min(margin_reached)
    }

    /// Latest expiry a credential of this session may have: the session's end plus the
    /// serving margin, so credentials stay servable until the session's last minute and
    /// never outlive it by more than that margin (15 min, STS's own minimum).
    pub fn credential_deadline(&self, config: &SessionConfig) -> SystemTime {
        self.expires_at + self.serve_margin(config)
    }

    /// The duration STS is asked for on the final hop: the profile's `duration_seconds` (or
    /// AssumeRole's default), at most one hour when chained (signed with temporary
    /// credentials: another role's, Identity Center's, or an MFA session's), as STS allows.
    pub fn role_duration(&self) -> Duration {
        let mut wanted = self
            .spec
            .chain
            .last()
            .and_then(|h| h.duration_seconds)
            .map(|s| Duration::from_secs(u64::from(s)))
            .unwrap_or(DEFAULT_ROLE_DURATION);
        if self.spec.is_chained() {
            wanted = wanted.min(MAX_CHAINED_DURATION);
        }
        wanted
    }

    /// Least time left for credentials to be handed out: the configured margin (15 min, where
    /// SDKs start refreshing), but a third of the role's duration for short roles, so that a
    /// 15-minute role still serves (SDKs then ask again more often, and get the same answer
    /// from memory).
    pub fn serve_margin(&self, config: &SessionConfig) -> Duration {
        config.min_serve_remaining.min(self.lifetime() / 3)
    }

    /// How long before expiry to refresh: the configured lead (25 min), but half the role's
    /// duration for short roles, so each credential is used for half its life and STS is
    /// asked once per half duration, never in a loop.
    pub fn refresh_lead(&self, config: &SessionConfig) -> Duration {
        config.refresh_before.min(self.lifetime() / 2)
    }

    /// DurationSeconds for the final hop at `now`: the profile's (or AssumeRole's default),
    /// at most one hour when chained, capped to what the session has left (plus the serving
    /// margin), never below STS's 900 s.
    pub fn final_duration(&self, now: SystemTime, config: &SessionConfig) -> Duration {
        let wanted = self.role_duration();
        // A clock ahead of STS's makes STS's expiry come early by local time: ask for that
        // much more, within the role's own duration.
        let ahead = Duration::from_secs(self.skew_secs.load(Ordering::Relaxed).max(0) as u64);
        let left = self
            .credential_deadline(config)
            .duration_since(now)
            .unwrap_or(Duration::ZERO);
        wanted.min(left + ahead).max(MIN_STS_DURATION)
    }

    /// When the refresher should next act: `refresh_before` ahead of expiry, unless a fresh
    /// call could not extend the credentials (they already reach the session's deadline);
    /// pushed back by a failure's retry delay.
    pub fn next_refresh(&self, config: &SessionConfig) -> Option<SystemTime> {
        let creds = self.credentials()?;
        let deadline = self.credential_deadline(config);
        if creds.expiration + Duration::from_secs(60) >= deadline {
            return None;
        }
        let due = creds
            .expiration
            .checked_sub(self.refresh_lead(config))
            .unwrap_or(UNIX_EPOCH)
            + self.refresh_delay(config);
        let retry_after = self.state.locked().retry_after;
        Some(retry_after.map_or(due, |r| r.max(due)))
    }
}

/// A GetSessionToken session for one source (MFA), shared by every role on that source.
pub(crate) struct MfaSession {
    pub serial: String,
    pub creds: Arc<TempCredentials>,
}

//! Outstanding WebAuthn ceremonies: unguessable ids, the 60 s expiry, single use, the cap on
//! how many may be pending, and the growing delay after failed approvals.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::error::ApprovalError;

/// How long a challenge stays valid after it was issued.
pub const CEREMONY_TTL: Duration = Duration::from_secs(60);

/// How many ceremonies may be outstanding at once, so a flood cannot grow memory.
pub const MAX_CEREMONIES: usize = 64;

/// The first delay after a failed approval; it doubles with each further failure.
pub const FIRST_FAILURE_DELAY: Duration = Duration::from_millis(250);

/// The longest delay after failed approvals.
pub const MAX_FAILURE_DELAY: Duration = Duration::from_secs(8);

/// Names one outstanding registration or approval (a random v4 UUID).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CeremonyId(Uuid);

impl CeremonyId {
    fn random() -> Self {
        Self(Uuid::new_v4())
    }
}

impl fmt::Display for CeremonyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for CeremonyId {
    type Err = uuid::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self)
    }
}

/// Whether a ceremony started at `started` is past its lifetime at `now`. A clock that went
/// backwards by more than the lifetime also ends it, so nothing can live forever.
fn expired(started: SystemTime, now: SystemTime) -> bool {
    let age = now
        .duration_since(started)
        .or_else(|_| started.duration_since(now))
        .unwrap_or(Duration::MAX);
    age >= CEREMONY_TTL
}

/// The table of outstanding ceremonies. `T` is the state webauthn-rs needs to finish one.
pub(crate) struct Ceremonies<T> {
    /// Start time and state of each outstanding ceremony.
    pending: HashMap<CeremonyId, (SystemTime, T)>,
}

impl<T> Ceremonies<T> {
    pub(crate) fn new() -> Self {
        Self {
            pending: HashMap::new(),
        }
    }

    /// Drops every ceremony that has expired at `now`.
    pub(crate) fn prune(&mut self, now: SystemTime) {
        self.pending
            .retain(|_, (started, _)| !expired(*started, now));
    }

    /// Whether another ceremony can start at `now` (after pruning expired ones).
    pub(crate) fn check_room(&mut self, now: SystemTime) -> Result<(), ApprovalError> {
        self.prune(now);
        if self.pending.len() >= MAX_CEREMONIES {
            tracing::warn!(
                pending = self.pending.len(),
                "refusing a new WebAuthn ceremony: too many outstanding"
            );
            return Err(ApprovalError::TooManyCeremonies);
        }
        Ok(())
    }

    /// Stores a new ceremony started at `now` and returns its id.
    pub(crate) fn insert(
        &mut self,
        now: SystemTime,
        state: T,
    ) -> Result<CeremonyId, ApprovalError> {
        self.check_room(now)?;
        let id = CeremonyId::random();
        self.pending.insert(id, (now, state));
        Ok(id)
    }

    /// Removes the ceremony (whatever happens next, it cannot be used again) and returns its
    /// state if it has not expired.
    pub(crate) fn take(&mut self, id: CeremonyId, now: SystemTime) -> Result<T, ApprovalError> {
        let (started, state) = self
            .pending
            .remove(&id)
            .ok_or(ApprovalError::UnknownCeremony)?;
        if expired(started, now) {
            return Err(ApprovalError::ChallengeExpired);
        }
        Ok(state)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.pending.len()
    }
}

/// Counts consecutive failed approvals and turns them into a delay the caller waits out.
#[derive(Debug, Default)]
pub(crate) struct FailureBackoff {
    /// Failed approvals since the last successful one.
    consecutive: u32,
}

impl FailureBackoff {
    pub(crate) fn record_failure(&mut self) {
        self.consecutive = self.consecutive.saturating_add(1);
    }

    pub(crate) fn record_success(&mut self) {
        self.consecutive = 0;
    }

    /// Zero after a success; then 250 ms, 500 ms, 1 s, ... up to 8 s.
    pub(crate) fn delay(&self) -> Duration {
        if self.consecutive == 0 {
            return Duration::ZERO;
        }
        let doublings = (self.consecutive - 1).min(16);
        FIRST_FAILURE_DELAY
            .saturating_mul(1u32 << doublings)
            .min(MAX_FAILURE_DELAY)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn take_is_single_use_and_expires() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut c = Ceremonies::new();
        let id = c.insert(t0, "state").unwrap();
        assert_eq!(c.take(id, t0 + Duration::from_secs(59)).unwrap(), "state");
        assert_eq!(c.take(id, t0).unwrap_err().code(), "unknown_ceremony");

        let id = c.insert(t0, "state").unwrap();
        let err = c.take(id, t0 + Duration::from_secs(61)).unwrap_err();
        assert_eq!(err.code(), "challenge_expired");
        // An expired ceremony is gone too.
        assert_eq!(c.take(id, t0).unwrap_err().code(), "unknown_ceremony");

        // A clock that jumps back more than the lifetime ends the ceremony as well.
        let id = c.insert(t0, "state").unwrap();
        let err = c.take(id, t0 - Duration::from_secs(120)).unwrap_err();
        assert_eq!(err.code(), "challenge_expired");
    }

    #[test]
    fn cap_and_prune() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut c = Ceremonies::new();
        for _ in 0..MAX_CEREMONIES {
            c.insert(t0, ()).unwrap();
        }
        let err = c.insert(t0 + Duration::from_secs(1), ()).unwrap_err();
        assert_eq!(err.code(), "too_many_ceremonies");
        assert_eq!(c.len(), MAX_CEREMONIES);
        // Once they expire they are pruned and there is room again.
        c.insert(t0 + Duration::from_secs(61), ()).unwrap();
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn ids_round_trip_as_strings() {
        let id = CeremonyId::random();
        assert_eq!(id.to_string().parse::<CeremonyId>().unwrap(), id);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{id}\""));
        assert!("nope".parse::<CeremonyId>().is_err());
    }

    #[test]
    fn backoff_doubles_to_a_cap_and_resets() {
        let mut b = FailureBackoff::default();
        assert_eq!(b.delay(), Duration::ZERO);
        let expected = [250, 500, 1000, 2000, 4000, 8000, 8000];
        for ms in expected {
            b.record_failure();
            assert_eq!(b.delay(), Duration::from_millis(ms));
        }
        for _ in 0..100 {
            b.record_failure();
        }
        assert_eq!(b.delay(), MAX_FAILURE_DELAY);
        b.record_success();
        assert_eq!(b.delay(), Duration::ZERO);
    }
}

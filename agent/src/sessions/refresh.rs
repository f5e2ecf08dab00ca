//! Background upkeep: ending sessions that are over, and refreshing credentials before they
//! drop under the serving threshold. Time comes in as `now` so tests drive it.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::cache::RoleSlot;
use super::{SessionError, Sessions};

impl Sessions {
    /// Ends the sessions that are over at `now` (past their end or idle too long) and drops
    /// their credentials; returns their role names.
    pub fn sweep(&self, now: SystemTime) -> Vec<String> {
        let idle = self.config().idle_timeout;
        let over = |roles: &std::collections::HashMap<String, Arc<RoleSlot>>| -> Vec<String> {
            roles
                .iter()
                .filter(|(_, s)| !s.active(now, idle))
                .map(|(n, _)| n.clone())
                .collect()
        };
        // Look first under the read lock: a write would bump the answer generation and
        // invalidate every connection's memo for nothing.
        if over(&self.inner.roles.read()).is_empty() {
            return Vec::new();
        }
        let ended: Vec<(String, Arc<RoleSlot>)> = {
            let mut roles = self.inner.roles.write();
            over(&roles)
                .into_iter()
                .filter_map(|n| roles.remove(&n).map(|s| (n, s)))
                .collect()
        };
        let mut names = Vec::with_capacity(ended.len());
        for (name, slot) in ended {
            slot.set_credentials(None);
            let why = if now >= slot.expires_at {
                "expired"
            } else if slot.held(now, None) {
                "jobs ended"
            } else {
                "idle"
            };
            tracing::info!(role = %name, why, "session ended");
            if let Some(hook) = self.inner.on_end.get() {
                hook(&name, why, now);
            }
            names.push(name);
        }
        names.sort();
        names
    }

    /// Roles whose credentials should be refreshed at `now`, sorted. Skips roles already
    /// being refreshed, roles waiting out a failure's retry delay, and roles whose
    /// credentials already last to the end of the session.
    pub fn refresh_due(&self, now: SystemTime) -> Vec<String> {
        let roles = self.inner.roles.read();
        let mut due: Vec<String> = roles
            .iter()
            .filter(|(_, s)| s.active(now, self.config().idle_timeout))
            .filter(|(_, s)| !s.refreshing.load(Ordering::SeqCst))
            .filter(|(_, s)| s.next_refresh(&self.config()).is_some_and(|t| t <= now))
            .map(|(n, _)| n.clone())
            .collect();
        due.sort();
        due
    }

    /// Refreshes `role` now. On failure the still-valid credentials keep being served and
    /// the refresher tries again after a growing delay.
    pub async fn refresh(&self, role: &str, now: SystemTime) -> Result<(), SessionError> {
        let slot = self.slot(role).ok_or_else(|| SessionError::NoSession {
            role: role.to_owned(),
        })?;
        if slot.refreshing.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let _clear = ClearOnDrop(&slot);
        self.fetch_coalesced(&slot, now, true, None)
            .await
            .map(|_| ())
    }

    /// Runs forever: every `tick`, sweeps ended sessions and refreshes the due ones, each in
    /// its own task, paced (see [`paced`]). Spawn it, and abort it (or drop the runtime) to
    /// stop.
    pub async fn run_refresher<C>(self, tick: Duration, clock: C)
    where
        C: Fn() -> SystemTime + Send + Sync + 'static,
    {
        let clock = Arc::new(clock);
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            let now = clock();
            self.sweep(now);
            self.release_unused_sources(now);
            let due = self.refresh_due(now);
            for (role, delay) in paced(due, tick, self.config().refresh_pace) {
                let sessions = self.clone();
                let clock = Arc::clone(&clock);
                tokio::spawn(async move {
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    if let Err(e) = sessions.refresh(&role, clock()).await {
                        tracing::warn!(role = %role, code = e.code(), error = %e, "refresh failed");
                    }
                });
            }
        }
    }
}

/// When each due refresh starts within one tick: one per `pace`, and no more than fit in the
/// tick, so STS sees at most one call per `pace` from the refresher however many sessions are
/// due; the rest stay due and go in the next ticks (they still have their refresh lead).
pub fn paced(due: Vec<String>, tick: Duration, pace: Duration) -> Vec<(String, Duration)> {
    let fit = if pace.is_zero() {
        usize::MAX
    } else {
        usize::try_from(tick.as_nanos() / pace.as_nanos())
            .unwrap_or(usize::MAX)
            .max(1)
    };
    due.into_iter()
        .take(fit)
        .enumerate()
        .map(|(i, role)| {
            (
                role,
                pace.saturating_mul(u32::try_from(i).unwrap_or(u32::MAX)),
            )
        })
        .collect()
}

/// Clears a slot's `refreshing` flag however the refresh ends (even if its task is aborted).
struct ClearOnDrop<'a>(&'a RoleSlot);

impl Drop for ClearOnDrop<'_> {
    fn drop(&mut self) {
        self.0.refreshing.store(false, Ordering::SeqCst);
    }
}

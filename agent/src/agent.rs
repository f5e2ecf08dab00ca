//! The agent as a whole: the one place that ends everything at once (`lock`) and that stops
//! the agent (`shutdown`). Every way in — `credctl lock`, SIGUSR1, the suspend and
//! screen-lock watchers, `credctl stop`, SIGTERM — calls here, so they cannot drift apart.
//! Built by `server::wire` from the parts it locks; it holds nothing that holds it.

use std::sync::Arc;
use std::time::SystemTime;

use tokio_util::sync::CancellationToken;

use crate::approval::{Approvals, PendingApprovals};
use crate::audit::{Audit, Event, Origin, Peer};
use crate::http::endpoint::Endpoint;
use crate::lock_signals::LockOn;
use crate::sessions::Sessions;
use crate::tokens::Tokens;

/// What `lock` ends, and the token that stops the agent.
pub struct Agent {
    sessions: Sessions,
    endpoint: Arc<Endpoint>,
    tokens: Arc<Tokens>,
    approvals: Arc<Approvals>,
    pending: Arc<PendingApprovals>,
    audit: Audit,
    shutdown: CancellationToken,
}

impl Agent {
    pub fn new(
        sessions: Sessions,
        endpoint: Arc<Endpoint>,
        tokens: Arc<Tokens>,
        (approvals, pending): (Arc<Approvals>, Arc<PendingApprovals>),
        audit: Audit,
        shutdown: CancellationToken,
    ) -> Agent {
        Agent {
            sessions,
            endpoint,
            tokens,
            approvals,
            pending,
            audit,
            shutdown,
        }
    }

    /// Asks ahead of time, once per end, for the touch that extends each running job's session
    /// (or the MFA session under it) ending within `ahead`: a pending approval that the desktop
    /// notification, `credctl watch` and `status` show, naming the job. Returns the roles
    /// asked about.
    pub fn ask_ahead(&self, now: SystemTime, ahead: std::time::Duration) -> Vec<String> {
        let ending = self.sessions.jobs_ending(now, ahead);
        if ending.is_empty() {
            return Vec::new();
        }
        let jobs = self.tokens.list();
        let uid = nix::unistd::getuid().as_raw();
        let mut asked = Vec::new();
        for (role, at, what) in ending {
            let job = jobs
                .iter()
                .filter(|t| t.kind == "exec" && t.role.as_deref() == Some(role.as_str()))
                .find_map(|t| t.holder)
                .map_or(0, |h| h.pid);
            self.pending
                .record_ending(&role, Origin::Unix { uid, pid: job }, (at, what), now);
            asked.push(role);
        }
        asked
    }

    /// Ends every session and ceremony, revokes every role-bound token, forgets every shell's
    /// current role and wipes every cached secret; audited as asked by `by` (`why`: what
    /// asked, when it is not a person at the control socket). Returns the sessions ended.
    pub fn lock(&self, by: &Peer, why: Option<&'static str>, now: SystemTime) -> usize {
        let n = self.end_everything();
        let mut event = Event::action("lock", by, None);
        if let Some(why) = why {
            event = event.subject(why);
        }
        self.audit.record(now, event);
        n
    }

    fn end_everything(&self) -> usize {
        let n = self.sessions.lock();
        self.endpoint.wipe();
        self.tokens.clear_current_roles();
        let revoked = self.tokens.revoke_role_bound();
        self.approvals.abandon_all("the agent was locked");
        tracing::info!(
            sessions = n,
            tokens_revoked = revoked,
            "locked: every session ended, every role-bound token revoked and every cached \
             secret wiped"
        );
        n
    }

    /// Locks for a signal or watcher: the sender is not known, so the agent's own uid, no pid.
    pub fn lock_for(&self, why: &'static str) -> usize {
        self.lock(&Agent::itself(), Some(why), SystemTime::now())
    }

    /// A screen lock: as `lock`, except that the sessions a running `credctl exec` job holds
    /// stay open for those jobs only (their tokens stay; nobody else is served them, and
    /// nothing new opens without a touch). Audited as a lock, naming the roles held. Returns
    /// the roles held.
    pub fn lock_but_jobs(&self, why: &'static str) -> Vec<String> {
        let (ended, held) = self.sessions.hold_for_jobs();
        self.endpoint.wipe();
        self.tokens.clear_current_roles();
        let revoked = self.tokens.revoke_role_bound_but_jobs();
        self.approvals.abandon_all("the agent was locked");
        tracing::info!(
            sessions = ended,
            tokens_revoked = revoked,
            held = ?held,
            "locked, but for the sessions running jobs hold"
        );
        let subject = if held.is_empty() {
            why.to_owned()
        } else {
            format!("{why}; held for running jobs: {}", held.join(", "))
        };
        self.audit.record(
            SystemTime::now(),
            Event::action("lock", &Agent::itself(), None).subject(&subject),
        );
        held
    }

    /// What a lock watcher's signal does: a screen lock spares the sessions running jobs hold
    /// (a `terraform apply` goes on while the person is away); a suspend ends everything, as
    /// `credctl lock` and SIGUSR1 do (nothing runs while the machine sleeps, and a sleeping
    /// laptop is the one that gets carried off).
    pub fn lock_on_signal(&self, trigger: LockOn) {
        match trigger {
            LockOn::ScreenLock => {
                self.lock_but_jobs(trigger.reason());
            }
            LockOn::Suspend => {
                self.lock_for(trigger.reason());
            }
        }
    }

    /// The agent itself as the actor of what no person asked over the socket.
    pub fn itself() -> Peer {
        Origin::Unix {
            uid: nix::unistd::getuid().as_raw(),
            pid: 0,
        }
        .into()
    }

    /// Stops the agent: ends everything as `lock` does (no secret outlives the process's
    /// last moments), then every listener and task watching `stopping()` ends.
    pub fn shutdown(&self) {
        self.end_everything();
        self.shutdown.cancel();
    }

    /// Cancelled when the agent stops.
    pub fn stopping(&self) -> &CancellationToken {
        &self.shutdown
    }
}

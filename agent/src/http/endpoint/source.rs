//! The endpoint's view of the role sessions: cached credentials, rendered once per set, and a
//! pending approval recorded for a role nobody has opened.

use std::sync::Arc;
use std::time::SystemTime;

use super::{CredentialSource, Lookup, RenderCache};
use crate::approval::PendingApprovals;
use crate::audit::Origin;
use crate::procs::ProcessId;
use crate::sessions::{ProgramRefusal, Sessions};

/// [`CredentialSource`] over the agent's sessions.
pub struct SessionSource {
    sessions: Sessions,
    pending: Arc<PendingApprovals>,
    /// Response bodies rendered once per set of credentials.
    render: RenderCache,
}

impl SessionSource {
    pub fn new(sessions: Sessions, pending: Arc<PendingApprovals>) -> SessionSource {
        let render = RenderCache::new(sessions.generation().clone());
        SessionSource {
            sessions,
            pending,
            render,
        }
    }
}

impl CredentialSource for SessionSource {
    fn lookup(&self, role: &str, now: SystemTime, job: bool) -> Lookup {
        match self.sessions.get_cached_until(role, now, job) {
            Some((creds, until)) => Lookup::Ready {
                body: self.render.get(role, &creds, now),
                until,
            },
            // Held for its running jobs: to anyone else it is not open (a touch opens it).
            None if !job && self.sessions.held(role, now) => {
                self.render.forget(role);
                Lookup::NotOpen
            }
            None if self.sessions.open_roles(now).iter().any(|r| r == role) => {
                self.render.forget(role);
                Lookup::Unavailable(
                    "the session is open but STS has not answered yet; retry in a moment".into(),
                )
            }
            None => {
                self.render.forget(role);
                Lookup::NotOpen
            }
        }
    }

    fn request_approval(&self, role: &str, origin: Origin, now: SystemTime) {
        self.pending.record(role, origin, now);
    }

    fn wipe(&self) {
        self.render.clear();
    }

    fn restricts(&self, role: &str) -> bool {
        self.sessions.restricts(role)
    }

    fn check_program(&self, role: &str, process: ProcessId) -> Result<(), ProgramRefusal> {
        self.sessions.check_program(role, process)
    }

    fn request_program(&self, role: &str, refusal: &ProgramRefusal, now: SystemTime) {
        self.pending.record_program(
            role,
            crate::approval::ProgramAsk {
                process: refusal.process,
                exe: refusal
                    .exe
                    .as_ref()
                    .map(|e| e.display().to_string())
                    .unwrap_or_default(),
                command_line: refusal.process.command_line(),
            },
            now,
        );
    }
}

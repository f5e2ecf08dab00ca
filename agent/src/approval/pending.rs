//! Pending approvals: roles an SDK asked for while no session was open, and running jobs'
//! sessions about to end (a touch ahead of time extends them). `credctl watch` lists them and
//! takes the touch; a request expires after a few minutes of silence, an extension when the
//! session it would extend has ended.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use crate::audit::Origin;
use crate::util::LockExt;

/// A pending approval expires this long after its latest request.
pub const PENDING_TTL: Duration = Duration::from_secs(300);
/// At most this many roles pending at once (a flood of made-up role names cannot grow memory).
const MAX_PENDING: usize = 256;

struct Rec {
    first_seen: SystemTime,
    last_seen: SystemTime,
    requests: u64,
    origin: Origin,
    /// A running job's session ends then (what ends: "session", "MFA session").
    ends: Option<(SystemTime, &'static str)>,
    /// A program the role's rules do not serve (yet) asked for it.
    program: Option<ProgramAsk>,
}

/// A process refused by a role's program rules, which a touch may allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramAsk {
    pub process: crate::procs::ProcessId,
    pub exe: String,
    pub command_line: String,
}

impl Rec {
    /// A first request, now, from `origin`.
    fn new(now: SystemTime, origin: Origin) -> Rec {
        Rec {
            first_seen: now,
            last_seen: now,
            requests: 1,
            origin,
            ends: None,
            program: None,
        }
    }

    fn live(&self, now: SystemTime) -> bool {
        self.last_seen + PENDING_TTL > now || self.ends.is_some_and(|(at, _)| at > now)
    }
}

/// What a pending approval announces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Announcement {
    /// A program asked for a role with no session open.
    Requested(String),
    /// A running job's session (`ending`: or the MFA session under it) ends in `secs`.
    Ending {
        role: String,
        ending: &'static str,
        secs: u64,
    },
    /// A program the role's rules do not serve asked for it.
    Program { role: String, exe: String, pid: i32 },
}

/// A role requested over the endpoint with no session open, for `status` and `credctl watch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRole {
    pub role: String,
    /// Unix seconds of the first and latest request.
    pub first_seen: u64,
    pub last_seen: u64,
    pub requests: u64,
    pub peer_pid: Option<i32>,
    pub peer_exe: Option<String>,
    /// For an extension: when the running job's session (or its MFA session) ends, and which.
    pub ends: Option<(u64, &'static str)>,
    /// For a program the role's rules refused: which, to allow with a touch.
    pub program: Option<ProgramAsk>,
}

/// Pending approvals by role.
#[derive(Default)]
pub struct PendingApprovals {
    by_role: Mutex<HashMap<String, Rec>>,
    /// Announces new pending roles (desktop notification).
    notify: Mutex<Option<tokio::sync::mpsc::UnboundedSender<Announcement>>>,
}

impl PendingApprovals {
    /// Sends the name of every newly pending role to `tx`.
    pub fn announce_to(&self, tx: tokio::sync::mpsc::UnboundedSender<Announcement>) {
        *self.notify.locked() = Some(tx);
    }

    /// Records a request for `role` (cheap; called on the request path).
    pub fn record(&self, role: &str, origin: Origin, now: SystemTime) {
        let fresh = self.upsert(
            role,
            now,
            |rec| {
                rec.last_seen = now;
                rec.requests += 1;
                rec.origin = origin;
                false
            },
            || Rec::new(now, origin),
        );
        if fresh {
            self.announce(Announcement::Requested(role.to_owned()));
        }
    }

    /// A running job's session (or the MFA session under it, `ending`) ends at `ends_at`: asks
    /// once, ahead of time, for the touch that extends it (`Open` with `renew`). `origin` is
    /// the job.
    pub fn record_ending(
        &self,
        role: &str,
        origin: Origin,
        (ends_at, ending): (SystemTime, &'static str),
        now: SystemTime,
    ) {
        let ask = self.upsert(
            role,
            now,
            |rec| {
                if rec.ends.is_some_and(|(at, _)| at == ends_at) {
                    return false;
                }
                rec.ends = Some((ends_at, ending));
                rec.last_seen = now;
                rec.origin = origin;
                true
            },
            || Rec {
                requests: 0,
                ends: Some((ends_at, ending)),
                ..Rec::new(now, origin)
            },
        );
        if ask {
            self.announce(Announcement::Ending {
                role: role.to_owned(),
                ending,
                secs: ends_at.duration_since(now).unwrap_or_default().as_secs(),
            });
        }
    }

    /// A process the role's program rules refused asked for `role`: a touch may allow it
    /// (`credctl allow`, `credctl watch`). Announced once per process.
    pub fn record_program(&self, role: &str, ask: ProgramAsk, now: SystemTime) {
        let origin = Origin::Unix {
            uid: nix::unistd::getuid().as_raw(),
            pid: ask.process.pid,
        };
        let announce = Announcement::Program {
            role: role.to_owned(),
            exe: ask.exe.clone(),
            pid: ask.process.pid,
        };
        let process = ask.process;
        // Taken by whichever of the two closures runs.
        let ask = std::cell::Cell::new(Some(ask));
        let new_asker = self.upsert(
            role,
            now,
            |rec| {
                rec.last_seen = now;
                rec.requests += 1;
                if rec.program.as_ref().is_some_and(|p| p.process == process) {
                    return false;
                }
                rec.origin = origin;
                rec.program = ask.take();
                true
            },
            || Rec {
                program: ask.take(),
                ..Rec::new(now, origin)
            },
        );
        if new_asker {
            self.announce(announce);
        }
    }

    /// `role`'s record changed by `update` (which says whether to announce), or, while there
    /// is room, a new one from `new` (announced). Whether to announce.
    fn upsert(
        &self,
        role: &str,
        now: SystemTime,
        update: impl FnOnce(&mut Rec) -> bool,
        new: impl FnOnce() -> Rec,
    ) -> bool {
        let mut map = self.by_role.locked();
        if let Some(rec) = map.get_mut(role) {
            return update(rec);
        }
        map.retain(|_, r| r.live(now));
        if map.len() >= MAX_PENDING {
            return false;
        }
        map.insert(role.to_owned(), new());
        true
    }

    fn announce(&self, what: Announcement) {
        if let Some(tx) = self.notify.locked().as_ref() {
            let _ = tx.send(what);
        }
    }

    /// How many roles are waiting for an approval now (no /proc scan: cheap enough for a
    /// shell prompt).
    pub fn count(&self, now: SystemTime) -> usize {
        self.by_role
            .locked()
            .values()
            .filter(|r| r.live(now))
            .count()
    }

    /// The process the role's program rules refused last, if one is pending.
    pub fn program_ask(&self, role: &str) -> Option<ProgramAsk> {
        self.by_role
            .locked()
            .get(role)
            .and_then(|r| r.program.clone())
    }

    /// The role was opened: it is no longer pending.
    pub fn resolve(&self, role: &str) {
        self.by_role.locked().remove(role);
    }

    /// Live pending approvals, oldest first, with the requesting process resolved where it can
    /// still be (this scans /proc: call it off the request path).
    pub fn list(&self, now: SystemTime) -> Vec<PendingRole> {
        type Seen = (
            String,
            u64,
            u64,
            u64,
            Origin,
            Option<(u64, &'static str)>,
            Option<ProgramAsk>,
        );
        let recs: Vec<Seen> = {
            let mut map = self.by_role.locked();
            map.retain(|_, r| r.live(now));
            map.iter()
                .map(|(k, r)| {
                    (
                        k.clone(),
                        crate::util::unix_secs(r.first_seen),
                        crate::util::unix_secs(r.last_seen),
                        r.requests,
                        r.origin,
                        r.ends.map(|(at, what)| (crate::util::unix_secs(at), what)),
                        r.program.clone(),
                    )
                })
                .collect()
        };
        let inodes: Vec<u32> = recs
            .iter()
            .filter_map(|r| match r.4 {
                Origin::Tcp { inode, .. } => Some(inode),
                Origin::Unix { .. } => None,
            })
            .collect();
        let procs = if inodes.is_empty() {
            HashMap::new()
        } else {
            crate::audit::processes_for_inodes(&inodes)
        };
        let mut out: Vec<PendingRole> = recs
            .into_iter()
            .map(
                |(role, first_seen, last_seen, requests, origin, ends, program)| {
                    let (peer_pid, peer_exe) = match origin {
                        Origin::Tcp { inode, .. } => match procs.get(&inode) {
                            Some((pid, exe)) => (Some(*pid), exe.clone()),
                            None => (None, None),
                        },
                        Origin::Unix { pid, .. } => (Some(pid), crate::procs::exe_of(pid)),
                    };
                    PendingRole {
                        role,
                        first_seen,
                        last_seen,
                        requests,
                        peer_pid,
                        peer_exe,
                        ends,
                        program,
                    }
                },
            )
            .collect();
        out.sort_by_key(|p| p.first_seen);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_counts_and_expires() {
        let p = PendingApprovals::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let o = Origin::Unix {
            uid: 1,
            pid: std::process::id() as i32,
        };
        p.record("prod", o, t0);
        p.record("prod", o, t0 + Duration::from_secs(5));
        let l = p.list(t0 + Duration::from_secs(10));
        assert_eq!(l.len(), 1);
        assert_eq!(
            (l[0].requests, l[0].first_seen, l[0].last_seen),
            (2, 1000, 1005)
        );
        assert!(l[0].peer_exe.is_some());
        assert!(p.list(t0 + Duration::from_secs(5) + PENDING_TTL).is_empty());
    }

    #[test]
    fn resolve_removes_and_flood_is_capped() {
        let p = PendingApprovals::default();
        let now = SystemTime::now();
        let o = Origin::Tcp { uid: 1, inode: 0 };
        for i in 0..1000 {
            p.record(&format!("r{i}"), o, now);
        }
        assert_eq!(p.list(now).len(), MAX_PENDING);
        p.resolve("r0");
        assert_eq!(p.list(now).len(), MAX_PENDING - 1);
    }

    #[test]
    fn a_job_ending_is_asked_once_per_end_and_lasts_until_that_end() {
        let p = PendingApprovals::default();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        p.announce_to(tx);
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let o = Origin::Unix { uid: 1, pid: 0 };
        let end = t0 + Duration::from_secs(600);
        p.record_ending("prod", o, (end, "session"), t0);
        p.record_ending("prod", o, (end, "session"), t0 + Duration::from_secs(15));
        assert_eq!(
            rx.try_recv().unwrap(),
            Announcement::Ending {
                role: "prod".into(),
                ending: "session",
                secs: 600
            }
        );
        assert!(rx.try_recv().is_err(), "asked once for one end");
        // Past the usual five minutes of a request, it stands until the session ends.
        let l = p.list(t0 + Duration::from_secs(400));
        assert_eq!(l[0].ends, Some((crate::util::unix_secs(end), "session")));
        assert!(p.list(end).is_empty());
        // A new end (the session was extended, and ends again) is asked again.
        p.record_ending("prod", o, (end + Duration::from_secs(900), "session"), end);
        assert!(rx.try_recv().is_ok());
    }
}

//! Pending approvals: roles an SDK asked for while no session was open. `credctl watch` lists
//! them and takes the touch; they expire after a few minutes of silence.

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
}

/// Pending approvals by role.
#[derive(Default)]
pub struct PendingApprovals {
    by_role: Mutex<HashMap<String, Rec>>,
    /// Announces new pending roles (desktop notification).
    notify: Mutex<Option<tokio::sync::mpsc::UnboundedSender<String>>>,
}

impl PendingApprovals {
    /// Sends the name of every newly pending role to `tx`.
    pub fn announce_to(&self, tx: tokio::sync::mpsc::UnboundedSender<String>) {
        *self.notify.locked() = Some(tx);
    }

    /// Records a request for `role` (cheap; called on the request path).
    pub fn record(&self, role: &str, origin: Origin, now: SystemTime) {
        let mut map = self.by_role.locked();
        if let Some(rec) = map.get_mut(role) {
            rec.last_seen = now;
            rec.requests += 1;
            rec.origin = origin;
            return;
        }
        map.retain(|_, r| r.last_seen + PENDING_TTL > now);
        if map.len() >= MAX_PENDING {
            return;
        }
        map.insert(
            role.to_owned(),
            Rec {
                first_seen: now,
                last_seen: now,
                requests: 1,
                origin,
            },
        );
        drop(map);
        if let Some(tx) = self.notify.locked().as_ref() {
            let _ = tx.send(role.to_owned());
        }
    }

    /// How many roles are waiting for an approval now (no /proc scan: cheap enough for a
    /// shell prompt).
    pub fn count(&self, now: SystemTime) -> usize {
        self.by_role
            .locked()
            .values()
            .filter(|r| r.last_seen + PENDING_TTL > now)
            .count()
    }

    /// The role was opened: it is no longer pending.
    pub fn resolve(&self, role: &str) {
        self.by_role.locked().remove(role);
    }

    /// Live pending approvals, oldest first, with the requesting process resolved where it can
    /// still be (this scans /proc: call it off the request path).
    pub fn list(&self, now: SystemTime) -> Vec<PendingRole> {
        let recs: Vec<(String, u64, u64, u64, Origin)> = {
            let mut map = self.by_role.locked();
            map.retain(|_, r| r.last_seen + PENDING_TTL > now);
            map.iter()
                .map(|(k, r)| {
                    (
                        k.clone(),
                        crate::util::unix_secs(r.first_seen),
                        crate::util::unix_secs(r.last_seen),
                        r.requests,
                        r.origin,
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
            .map(|(role, first_seen, last_seen, requests, origin)| {
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
                }
            })
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
}

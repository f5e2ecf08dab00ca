//! The gate in front of role sessions: at most one WebAuthn ceremony per role at a time. The
//! first client to ask leads it (it gets the challenge and takes the touch); everyone else who
//! asks for the same role meanwhile waits for that ceremony's outcome. Registrations use the same
//! bookkeeping so the browser page can serve both.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use crate::util::LockExt;
use credagent_proto::{ErrorCode, Response, Secret};
use tokio::sync::watch;

/// A ceremony nobody finished within this long is stale: followers give up, a new Open replaces
/// it. (The challenge itself expires after 60 s.)
pub const CEREMONY_STALE: Duration = Duration::from_secs(90);

/// Pseudo-roles for "an existing key authorizes registering key NAME". AWS profile names cannot
/// hold whitespace, so the space keeps them apart from every role: no session can open under one.
const KEY_ADD: &str = "key add: ";

/// The pseudo-role that authorizes registering a key named `name`.
pub fn key_add_role(name: &str) -> String {
    format!("{KEY_ADD}{name}")
}

/// The key name, if `role` is a key-add pseudo-role.
pub fn key_add_name(role: &str) -> Option<&str> {
    role.strip_prefix(KEY_ADD)
}

/// How the outcome of an abandoned ceremony starts; followers then lead a new one.
pub const ABANDONED: &str = "the client taking the touch went away";

/// What a ceremony is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Approve { role: String },
    Register { name: String },
}

struct Ceremony {
    kind: Kind,
    options: serde_json::Value,
    /// The control connection that leads it (0: none, e.g. `watch` or the browser).
    leader: u64,
    started: SystemTime,
    /// Set when an answer arrives: a ceremony is answered once.
    claimed: bool,
    /// Connections waiting for the browser to answer; if one of them goes away unanswered, the
    /// ceremony ends, so a role is never blocked by a page nobody will touch.
    awaiters: Vec<u64>,
    mfa_code: Option<Secret>,
    /// Who asked, for the approval page.
    requester: String,
    tx: watch::Sender<Option<Response>>,
}

/// How an `Open` proceeds.
pub enum Begin {
    /// This caller leads: here is the ceremony id.
    Lead(String),
    /// A ceremony for the role is under way: wait on this.
    Follow(watch::Receiver<Option<Response>>),
}

/// What the approval page shows for a ceremony.
pub struct View {
    pub kind: Kind,
    pub options: serde_json::Value,
    pub requester: String,
}

#[derive(Default)]
pub struct Gate {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    ceremonies: HashMap<String, Ceremony>,
    /// role → id of its ceremony.
    by_role: HashMap<String, String>,
}

impl Inner {
    fn finish(&mut self, id: &str, outcome: Response) {
        if let Some(c) = self.ceremonies.remove(id) {
            if let Kind::Approve { role } = &c.kind {
                if self.by_role.get(role).is_some_and(|x| x == id) {
                    self.by_role.remove(role);
                }
            }
            let _ = c.tx.send(Some(outcome));
        }
    }

    fn prune(&mut self, now: SystemTime) {
        let stale: Vec<String> = self
            .ceremonies
            .iter()
            .filter(|(_, c)| c.started + CEREMONY_STALE <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in stale {
            self.finish(
                &id,
                Response::error(
                    ErrorCode::ApprovalFailed,
                    "nobody touched a security key in time: run the command again",
                ),
            );
        }
    }
}

impl Gate {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.locked()
    }

    /// Joins the ceremony under way for `role`, or starts one with `start` (which must return a
    /// new ceremony id and its options) and leads it. Atomic: two callers never both lead.
    pub fn open_or_join<E>(
        &self,
        role: &str,
        leader: u64,
        requester: String,
        mfa_code: Option<Secret>,
        now: SystemTime,
        start: impl FnOnce() -> Result<(String, serde_json::Value), E>,
    ) -> Result<Begin, E> {
        let mut inner = self.lock();
        inner.prune(now);
        if let Some(id) = inner.by_role.get(role) {
            if let Some(c) = inner.ceremonies.get(id) {
                return Ok(Begin::Follow(c.tx.subscribe()));
            }
        }
        let (id, options) = start()?;
        let (tx, _) = watch::channel(None);
        inner.ceremonies.insert(
            id.clone(),
            Ceremony {
                kind: Kind::Approve {
                    role: role.to_owned(),
                },
                options,
                leader,
                started: now,
                claimed: false,
                awaiters: Vec::new(),
                mfa_code,
                requester,
                tx,
            },
        );
        inner.by_role.insert(role.to_owned(), id.clone());
        Ok(Begin::Lead(id))
    }

    /// The control connection leading ceremony `id`.
    pub fn leader(&self, id: &str) -> Option<u64> {
        self.lock().ceremonies.get(id).map(|c| c.leader)
    }

    /// Records a registration ceremony.
    pub fn register(
        &self,
        id: &str,
        name: &str,
        options: serde_json::Value,
        leader: u64,
        now: SystemTime,
    ) {
        let mut inner = self.lock();
        inner.prune(now);
        let (tx, _) = watch::channel(None);
        inner.ceremonies.insert(
            id.to_owned(),
            Ceremony {
                kind: Kind::Register {
                    name: name.to_owned(),
                },
                options,
                leader,
                started: now,
                claimed: false,
                awaiters: Vec::new(),
                mfa_code: None,
                requester: "credctl key add".into(),
                tx,
            },
        );
    }

    /// The options of an unanswered ceremony (for the approval page and the leader).
    pub fn view(&self, id: &str) -> Option<View> {
        let inner = self.lock();
        let c = inner.ceremonies.get(id).filter(|c| !c.claimed)?;
        Some(View {
            kind: c.kind.clone(),
            options: c.options.clone(),
            requester: c.requester.clone(),
        })
    }

    /// Claims a ceremony for its one answer. `None` if unknown or already answered.
    pub fn claim(&self, id: &str) -> Option<(Kind, Option<Secret>)> {
        let mut inner = self.lock();
        let c = inner.ceremonies.get_mut(id)?;
        if c.claimed {
            return None;
        }
        c.claimed = true;
        Some((c.kind.clone(), c.mfa_code.take()))
    }

    /// Waits for the outcome of ceremony `id` (answered elsewhere, e.g. in the browser).
    pub fn subscribe(&self, id: &str, conn: u64) -> Option<watch::Receiver<Option<Response>>> {
        let mut inner = self.lock();
        let c = inner.ceremonies.get_mut(id)?;
        c.awaiters.push(conn);
        Some(c.tx.subscribe())
    }

    /// Ends ceremony `id` with `outcome` for everyone waiting on it.
    pub fn finish(&self, id: &str, outcome: Response) {
        self.lock().finish(id, outcome);
    }

    /// The control connection `conn` went away: its unanswered, unawaited ceremonies end.
    pub fn abandon_conn(&self, conn: u64) {
        let mut inner = self.lock();
        let ids: Vec<String> = inner
            .ceremonies
            .iter()
            .filter(|(_, c)| (c.leader == conn || c.awaiters.contains(&conn)) && !c.claimed)
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            inner.finish(
                &id,
                Response::error(
                    ErrorCode::ApprovalFailed,
                    format!("{ABANDONED}: run the command again"),
                ),
            );
        }
    }

    /// Ends every ceremony (lock, shutdown).
    pub fn abandon_all(&self, why: &str) {
        let mut inner = self.lock();
        let ids: Vec<String> = inner.ceremonies.keys().cloned().collect();
        for id in ids {
            inner.finish(&id, Response::error(ErrorCode::ApprovalFailed, why));
        }
    }
}

/// Waits for a ceremony outcome, for at most `CEREMONY_STALE`.
pub async fn wait(mut rx: watch::Receiver<Option<Response>>) -> Response {
    let got = tokio::time::timeout(CEREMONY_STALE, rx.wait_for(|v| v.is_some())).await;
    match got {
        Ok(Ok(v)) => v
            .clone()
            .unwrap_or_else(|| Response::error(ErrorCode::Internal, "no outcome")),
        Ok(Err(_)) => Response::error(
            ErrorCode::ApprovalFailed,
            "the approval was abandoned: run the command again",
        ),
        Err(_) => Response::error(
            ErrorCode::ApprovalFailed,
            "nobody touched a security key in time: run the command again",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start(id: &str) -> Result<(String, serde_json::Value), ()> {
        Ok((id.to_owned(), serde_json::json!({"c": id})))
    }

    #[tokio::test]
    async fn one_leader_many_followers_one_outcome() {
        let g = Gate::default();
        let now = SystemTime::now();
        let Begin::Lead(id) = g
            .open_or_join("prod", 1, "t".into(), None, now, || start("c1"))
            .unwrap()
        else {
            panic!("first caller must lead")
        };
        let mut followers = Vec::new();
        for _ in 0..20 {
            match g
                .open_or_join("prod", 2, "t".into(), None, now, || start("never"))
                .unwrap()
            {
                Begin::Follow(rx) => followers.push(tokio::spawn(wait(rx))),
                Begin::Lead(_) => panic!("a second leader"),
            }
        }
        // Another role gets its own ceremony.
        assert!(matches!(
            g.open_or_join("dev", 3, "t".into(), None, now, || start("c2"))
                .unwrap(),
            Begin::Lead(_)
        ));
        assert!(g.claim(&id).is_some());
        assert!(g.claim(&id).is_none(), "a ceremony is answered once");
        g.finish(
            &id,
            Response::Opened {
                role: "prod".into(),
                expires_at: 7,
            },
        );
        for f in followers {
            assert_eq!(
                f.await.unwrap(),
                Response::Opened {
                    role: "prod".into(),
                    expires_at: 7
                }
            );
        }
        // Finished: the next open leads again.
        assert!(matches!(
            g.open_or_join("prod", 1, "t".into(), None, now, || start("c3"))
                .unwrap(),
            Begin::Lead(_)
        ));
    }

    #[tokio::test]
    async fn leader_or_awaiter_going_away_releases_followers() {
        let g = Gate::default();
        let now = SystemTime::now();
        g.open_or_join("prod", 1, "t".into(), None, now, || start("a"))
            .unwrap();
        let Begin::Follow(rx) = g
            .open_or_join("prod", 2, "t".into(), None, now, || start("x"))
            .unwrap()
        else {
            panic!("second caller must follow")
        };
        g.abandon_conn(1);
        assert!(matches!(
            wait(rx).await,
            Response::Error {
                code: ErrorCode::ApprovalFailed,
                ..
            }
        ));

        // The browser flow: the leader awaits its own ceremony; another client may await too.
        g.open_or_join("dev", 1, "t".into(), None, now, || start("b"))
            .unwrap();
        let rx = g.subscribe("b", 1).unwrap();
        let rx3 = g.subscribe("b", 3).unwrap();
        g.finish("b", Response::Ok);
        assert_eq!(wait(rx).await, Response::Ok);
        assert_eq!(wait(rx3).await, Response::Ok);
        g.open_or_join("dev", 1, "t".into(), None, now, || start("c"))
            .unwrap();
        let rx = g.subscribe("c", 4).unwrap();
        g.abandon_conn(4);
        assert!(
            g.view("c").is_none(),
            "an unanswered page nobody waits for must not block the role"
        );
        assert!(matches!(
            wait(rx).await,
            Response::Error {
                code: ErrorCode::ApprovalFailed,
                ..
            }
        ));
    }

    #[test]
    fn stale_ceremonies_are_replaced() {
        let g = Gate::default();
        let now = SystemTime::now();
        g.open_or_join("prod", 1, "t".into(), None, now, || start("old"))
            .unwrap();
        let later = now + CEREMONY_STALE;
        match g
            .open_or_join("prod", 2, "t".into(), None, later, || start("new"))
            .unwrap()
        {
            Begin::Lead(id) => assert_eq!(id, "new"),
            Begin::Follow(_) => panic!("stale ceremony was joined"),
        }
        assert!(g.view("old").is_none());
    }
}

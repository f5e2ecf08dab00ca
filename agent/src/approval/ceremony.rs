//! The one ceremony table: every WebAuthn ceremony, a registration or an approval, from its
//! challenge to its outcome. Ids are unguessable; a challenge is answered once (its WebAuthn
//! state is taken by the first answer) and within 60 s; at most 64 are outstanding. It also
//! coalesces: while an approval for a role is under way, everyone else who asks for that role
//! follows it and gets its outcome. The growing delay after failed approvals lives here too.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use secrecy::SecretString as Secret;

use super::TouchOutcome;
use crate::refusal::Code;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use uuid::Uuid;

use super::error::ApprovalError;

/// How long a challenge stays valid: the touch must come within it. `credctl` waits by the
/// same figure; the control edge checks at compile time that the protocol states it alike.
pub const CEREMONY_TTL: Duration = Duration::from_secs(60);
/// How long an answered ceremony may take to reach its outcome (verifying the touch and
/// opening the session, STS retries included); the longest a follower waits. Checked against
/// the protocol's figure like `CEREMONY_TTL`.
pub const OUTCOME_WAIT: Duration = Duration::from_secs(90);

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

/// Whether a ceremony started at `started` is past `lifetime` at `now`. A clock that went
/// backwards by more than the lifetime also ends it, so nothing can live forever.
fn expired(started: SystemTime, now: SystemTime, lifetime: Duration) -> bool {
    let age = now
        .duration_since(started)
        .or_else(|_| started.duration_since(now))
        .unwrap_or(Duration::MAX);
    age >= lifetime
}

/// What an approval touch is for. On the wire (`Challenge.role`, the audit) each has the name
/// [`Purpose::wire`] gives it; inside the agent it is this type, never a parsed string.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Purpose {
    /// Open the session of this role.
    Role(String),
    /// A touch of a registered key allows registering the key named here.
    KeyAdd(String),
    /// The new key's own touch, which seals the vault to it (`approval::seal`).
    KeySeal(String),
    /// A touch of a registered key allows removing the key named here (`force`: even the last).
    KeyRemove { name: String, force: bool },
    /// `credctl confirm`: unwrap the vault and check (or confirm) the settings; opens nothing.
    Confirm,
    /// `credctl key pin`: move touch-only copies of the vault to the keys' PIN; opens nothing.
    MoveToPin,
    /// `credctl reload`: confirm the settings config.toml says now, then put them in force.
    Reload,
    /// `credctl allow`: let a process (or, with `process` `None`, every process of the
    /// program `exe`) use `role`'s open session despite the role's program rules. `shown` is
    /// what the touch is for, in words.
    AllowProgram {
        role: String,
        exe: std::path::PathBuf,
        process: Option<crate::procs::ProcessId>,
        shown: String,
    },
}

impl Purpose {
    /// The name this purpose has on the wire and in the audit. Key changes keep the pseudo-role
    /// names older clients know (`key seal: NAME`); AWS profile names hold no whitespace, so no
    /// role is ever named like one.
    pub fn wire(&self) -> String {
        match self {
            Purpose::Role(role) => role.clone(),
            Purpose::KeyAdd(name) => format!("key add: {name}"),
            Purpose::KeySeal(name) => format!("key seal: {name}"),
            Purpose::KeyRemove { name, force: false } => format!("key remove: {name}"),
            Purpose::KeyRemove { name, force: true } => format!("key remove --force: {name}"),
            Purpose::Confirm => "confirm settings".to_owned(),
            Purpose::MoveToPin => "key pin".to_owned(),
            Purpose::Reload => "reload settings".to_owned(),
            Purpose::AllowProgram { role, .. } => format!("allow program: {role}"),
        }
    }

    /// The role, if this touch opens one.
    pub fn role(&self) -> Option<&str> {
        match self {
            Purpose::Role(role) => Some(role),
            _ => None,
        }
    }

    /// What a key change is about, in words; `None` for anything else.
    pub fn key_change(&self) -> Option<String> {
        match self {
            Purpose::KeyAdd(name) => Some(format!("adding the key {name}")),
            Purpose::KeySeal(name) => Some(format!("sealing your sources to the new key {name}")),
            Purpose::KeyRemove { name, .. } => Some(format!("removing the key {name}")),
            Purpose::MoveToPin => {
                Some("moving your keys' copies of the vault to their PIN".to_owned())
            }
            Purpose::Role(_)
            | Purpose::Confirm
            | Purpose::Reload
            | Purpose::AllowProgram { .. } => None,
        }
    }

    /// What the touch is for, in words ("role prod", "adding the key laptop").
    pub fn describe(&self) -> String {
        match self {
            Purpose::Role(role) => format!("role {role}"),
            Purpose::Confirm => "confirming the agent's settings".to_owned(),
            Purpose::Reload => "applying the settings config.toml has now".to_owned(),
            Purpose::AllowProgram { shown, .. } => shown.clone(),
            other => other.key_change().unwrap_or_default(),
        }
    }
}

impl From<&str> for Purpose {
    /// A role name.
    fn from(role: &str) -> Self {
        Purpose::Role(role.to_owned())
    }
}

impl From<&Purpose> for Purpose {
    fn from(p: &Purpose) -> Self {
        p.clone()
    }
}

/// How the outcome of an abandoned ceremony starts; followers then lead a new one.
pub const ABANDONED: &str = "the client taking the touch went away";

/// What a ceremony is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// An assertion (a touch of a registered key, or of the new key to seal it).
    Approve(Purpose),
    /// A new key's registration.
    Register { name: String },
}

/// Who leads a new ceremony: the control connection (0: none, e.g. the browser), a
/// description of the process for the approval page, and the MFA code the role needs.
#[derive(Default)]
pub struct Lead {
    pub conn: u64,
    pub requester: String,
    pub mfa_code: Option<Secret>,
    /// What the touch opens, resolved when the ceremony starts (source and role ARNs): the
    /// session that opens must be exactly this.
    pub target: Option<String>,
    /// The leader's `--accept-change`: the changes to settings or to the role's target that
    /// were shown before this touch may be applied by it (`crate::trust`).
    pub accept_change: bool,
    /// The leader as the audit names it, so a ceremony nobody touched is audited against it.
    pub who: Option<crate::audit::Peer>,
}

/// A ceremony that ended because nobody touched a key in time, for the audit.
#[derive(Debug, Clone)]
pub struct Expired {
    pub kind: Kind,
    pub requester: String,
    pub who: Option<crate::audit::Peer>,
}

/// How an approval request proceeds.
pub enum Begin {
    /// This caller leads: the ceremony id and the options for its authenticator.
    Lead(CeremonyId, serde_json::Value),
    /// A ceremony for the role is under way: wait on this for its outcome.
    Follow(watch::Receiver<Option<TouchOutcome>>),
}

/// What the approval page shows for an unanswered ceremony.
pub struct View {
    pub kind: Kind,
    pub options: serde_json::Value,
    pub requester: String,
    /// The control connection that leads it (0: none).
    pub leader: u64,
    /// What the touch opens (source and role ARNs), when it opens a role.
    pub target: Option<String>,
    /// When it began: it expires `CEREMONY_TTL` later.
    pub started: SystemTime,
}

/// A ceremony taken by its one answer.
pub(crate) struct Claimed<S> {
    pub kind: Kind,
    pub state: S,
    pub mfa_code: Option<Secret>,
    pub leader: u64,
    pub target: Option<String>,
    pub accept_change: bool,
}

struct Entry<S> {
    started: SystemTime,
    kind: Kind,
    /// The WebAuthn state; taken by the first answer, so a ceremony is answered once.
    state: Option<S>,
    options: serde_json::Value,
    /// The control connection that leads it (0: none).
    leader: u64,
    /// Connections waiting for the browser to answer; if one of them goes away unanswered, the
    /// ceremony ends, so a role is never blocked by a page nobody will touch.
    awaiters: Vec<u64>,
    mfa_code: Option<Secret>,
    requester: String,
    who: Option<crate::audit::Peer>,
    target: Option<String>,
    accept_change: bool,
    /// SHA-256 of the secret the first page load of this ceremony was given (a cookie): only
    /// that page may load it again or answer it.
    page: Option<[u8; 32]>,
    tx: watch::Sender<Option<TouchOutcome>>,
}

impl<S> Entry<S> {
    fn claimed(&self) -> bool {
        self.state.is_none()
    }

    /// Past its time: unanswered after the challenge's lifetime, or answered but without an
    /// outcome after `OUTCOME_WAIT`.
    fn stale(&self, now: SystemTime) -> bool {
        let lifetime = if self.claimed() {
            OUTCOME_WAIT
        } else {
            CEREMONY_TTL
        };
        expired(self.started, now, lifetime)
    }
}

/// Every outstanding ceremony, by id, and the approval under way for each role.
pub(crate) struct Ceremonies<S> {
    entries: HashMap<CeremonyId, Entry<S>>,
    by_role: HashMap<Purpose, CeremonyId>,
    /// Woken whenever a ceremony ends, for those waiting for their turn.
    ended: std::sync::Arc<tokio::sync::Notify>,
    /// Outcomes of ceremonies that ended lately, for their leader alone: `credctl` prints the
    /// browser page's address, then asks for the outcome, and the page may be faster.
    recent: std::collections::VecDeque<Recent>,
    /// Ceremonies that timed out and are not audited yet.
    expired: Vec<Expired>,
    /// The page session of each leading control connection (SHA-256 of its secret): every
    /// ceremony that connection leads next (the steps of one key change) belongs to the same
    /// page, so a program that read a later step's address cannot answer it.
    pages: HashMap<u64, [u8; 32]>,
}

/// What a load of the approval page may do.
#[derive(Debug, PartialEq, Eq)]
pub enum PageLoad {
    /// The first load: this secret (hex) binds the page session; set it as a cookie.
    Bound(String),
    /// A load by the page session the ceremony belongs to.
    Same,
}

/// How the page session of a ceremony is named: its leader's, or (no leader) its own.
pub fn page_key(id: CeremonyId, leader: u64) -> String {
    if leader == 0 {
        id.to_string()
    } else {
        format!("c{leader}")
    }
}

fn page_hash(secret: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(secret.as_bytes()).into()
}

/// An ended ceremony's outcome, kept a while for its leader.
struct Recent {
    id: CeremonyId,
    leader: u64,
    /// Kept until then: the longest the ceremony itself could have lasted.
    until: SystemTime,
    outcome: TouchOutcome,
}

/// How many ended ceremonies' outcomes are kept.
const RECENT: usize = 16;

/// Whether only the leader may await or answer a ceremony of this kind: a registration, a
/// key change (whose outcome for a key add is the registration challenge), and a reload (whose
/// touch applies the changes its leader was shown, and no one else's).
pub(crate) fn bound(kind: &Kind) -> bool {
    match kind {
        Kind::Register { .. } => true,
        Kind::Approve(purpose) => purpose.key_change().is_some() || *purpose == Purpose::Reload,
    }
}

/// The outcome of a ceremony whose page a second program opened or answered.
fn page_taken() -> TouchOutcome {
    TouchOutcome::refused(
        Code::Refused,
        "the approval page was opened or answered by a second program, not only by the page \
         credctl opened: the approval was cancelled and nothing was approved. If you did not \
         open the page twice yourself, a program on this machine read its address; check your \
         processes, then run the command again",
    )
}

/// The outcome of a key registration whose page was loaded without the page session of the
/// touch that authorized it.
fn registration_outside_session() -> TouchOutcome {
    TouchOutcome::refused(
        Code::Refused,
        "a new key's registration page was opened outside the browser session of the touch \
         that allowed it, so it was cancelled and nothing was registered: in the browser, add a \
         key with `credctl key add NAME --browser` (the allowing touch and the new key's \
         registration then happen on one page), or register it with `--authenticator usb`. If \
         you did not open that page, a program on this machine read its address: check your \
         processes",
    )
}

fn timed_out() -> TouchOutcome {
    TouchOutcome::refused(
        Code::ApprovalFailed,
        "nobody touched a security key in time: run the command again",
    )
}

impl<S> Ceremonies<S> {
    pub(crate) fn new() -> Self {
        Self {
            entries: HashMap::new(),
            by_role: HashMap::new(),
            ended: std::sync::Arc::new(tokio::sync::Notify::new()),
            recent: std::collections::VecDeque::new(),
            expired: Vec::new(),
            pages: HashMap::new(),
        }
    }

    /// Woken whenever a ceremony ends.
    pub(crate) fn ended(&self) -> std::sync::Arc<tokio::sync::Notify> {
        self.ended.clone()
    }

    /// The role of the approval under way, if one is: one touch at a time, so a process
    /// cannot slip a ceremony for another role in front of the one the person is about to
    /// touch for, and assertions of one key are verified in the order they were made.
    pub(crate) fn approval_under_way(&mut self, now: SystemTime) -> Option<Purpose> {
        self.prune(now);
        self.entries.values().find_map(|e| match &e.kind {
            Kind::Approve(purpose) => Some(purpose.clone()),
            Kind::Register { .. } => None,
        })
    }

    /// The ceremonies that wait for a touch or for their outcome: what each is for, who asked,
    /// and when it began (for `status`, and for a client about to wait behind one).
    pub(crate) fn in_progress(&mut self, now: SystemTime) -> Vec<(Kind, String, SystemTime)> {
        self.prune(now);
        let mut all: Vec<_> = self
            .entries
            .values()
            .map(|e| (e.kind.clone(), e.requester.clone(), e.started))
            .collect();
        all.sort_by_key(|(_, _, started)| *started);
        all
    }

    /// Ends ceremonies past their time; their followers learn why, and the audit learns of
    /// them through [`Ceremonies::take_expired`].
    pub(crate) fn prune(&mut self, now: SystemTime) {
        self.recent.retain(|r| r.until > now);
        let stale: Vec<CeremonyId> = self
            .entries
            .iter()
            .filter(|(_, e)| e.stale(now))
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            if let Some(e) = self.entries.get(&id) {
                if self.expired.len() < MAX_CEREMONIES * 4 {
                    self.expired.push(Expired {
                        kind: e.kind.clone(),
                        requester: e.requester.clone(),
                        who: e.who.clone(),
                    });
                }
            }
            self.finish(id, timed_out());
        }
    }

    /// The ceremonies that timed out since the last call (pruning first).
    pub(crate) fn take_expired(&mut self, now: SystemTime) -> Vec<Expired> {
        self.prune(now);
        std::mem::take(&mut self.expired)
    }

    /// Refuses a new ceremony when too many are outstanding.
    pub(crate) fn check_room(&mut self, now: SystemTime) -> Result<(), ApprovalError> {
        self.prune(now);
        if self.entries.len() >= MAX_CEREMONIES {
            tracing::warn!(
                pending = self.entries.len(),
                "refusing a new WebAuthn ceremony: too many outstanding"
            );
            return Err(ApprovalError::TooManyCeremonies);
        }
        Ok(())
    }

    /// The outcome channel of the approval under way for `role`, if there is one.
    pub(crate) fn follow(
        &mut self,
        purpose: impl Into<Purpose>,
        now: SystemTime,
    ) -> Option<watch::Receiver<Option<TouchOutcome>>> {
        self.prune(now);
        let id = self.by_role.get(&purpose.into())?;
        self.entries.get(id).map(|e| e.tx.subscribe())
    }

    /// Records a new ceremony led by `lead`; an approval becomes the one under way for its role.
    pub(crate) fn insert(
        &mut self,
        now: SystemTime,
        kind: Kind,
        state: S,
        options: serde_json::Value,
        lead: Lead,
    ) -> Result<CeremonyId, ApprovalError> {
        self.check_room(now)?;
        let id = CeremonyId::random();
        if let Kind::Approve(purpose) = &kind {
            self.by_role.insert(purpose.clone(), id);
        }
        let (tx, _) = watch::channel(None);
        self.entries.insert(
            id,
            Entry {
                started: now,
                kind,
                state: Some(state),
                options,
                leader: lead.conn,
                awaiters: Vec::new(),
                mfa_code: lead.mfa_code,
                requester: lead.requester,
                who: lead.who,
                target: lead.target,
                accept_change: lead.accept_change,
                page: self
                    .pages
                    .get(&lead.conn)
                    .copied()
                    .filter(|_| lead.conn != 0),
                tx,
            },
        );
        Ok(id)
    }

    /// Takes ceremony `id` for its one answer. The entry stays, answered, until its outcome is
    /// known, so those who ask for the role meanwhile still follow it.
    pub(crate) fn take(
        &mut self,
        id: CeremonyId,
        now: SystemTime,
    ) -> Result<Claimed<S>, ApprovalError> {
        let entry = self
            .entries
            .get_mut(&id)
            .filter(|e| !e.claimed())
            .ok_or(ApprovalError::UnknownCeremony)?;
        if expired(entry.started, now, CEREMONY_TTL) {
            self.finish(id, timed_out());
            return Err(ApprovalError::ChallengeExpired);
        }
        let state = entry.state.take().ok_or(ApprovalError::UnknownCeremony)?;
        Ok(Claimed {
            kind: entry.kind.clone(),
            state,
            mfa_code: entry.mfa_code.take(),
            leader: entry.leader,
            target: entry.target.clone(),
            accept_change: entry.accept_change,
        })
    }

    /// An unanswered ceremony.
    pub(crate) fn view(&self, id: CeremonyId) -> Option<View> {
        let e = self.entries.get(&id).filter(|e| !e.claimed())?;
        Some(View {
            kind: e.kind.clone(),
            options: e.options.clone(),
            requester: e.requester.clone(),
            leader: e.leader,
            target: e.target.clone(),
            started: e.started,
        })
    }

    /// Waits for the outcome of ceremony `id` as connection `conn` (answered elsewhere, e.g. in
    /// the browser).
    pub(crate) fn subscribe(
        &mut self,
        id: CeremonyId,
        conn: u64,
    ) -> Option<watch::Receiver<Option<TouchOutcome>>> {
        if let Some(e) = self.entries.get_mut(&id) {
            if bound(&e.kind) && conn != e.leader {
                return None;
            }
            e.awaiters.push(conn);
            return Some(e.tx.subscribe());
        }
        let r = self
            .recent
            .iter()
            .find(|r| r.id == id && r.leader == conn)?;
        let (_tx, rx) = watch::channel(Some(r.outcome.clone()));
        Some(rx)
    }

    /// Ends ceremony `id` with `outcome` for everyone waiting on it.
    pub(crate) fn finish(&mut self, id: CeremonyId, outcome: TouchOutcome) {
        if let Some(e) = self.entries.remove(&id) {
            if let Kind::Approve(purpose) = &e.kind {
                if self.by_role.get(purpose) == Some(&id) {
                    self.by_role.remove(purpose);
                }
            }
            if e.leader != 0 {
                if self.recent.len() >= RECENT {
                    self.recent.pop_front();
                }
                self.recent.push_back(Recent {
                    id,
                    leader: e.leader,
                    until: e.started + OUTCOME_WAIT,
                    outcome: outcome.clone(),
                });
            }
            let _ = e.tx.send(Some(outcome));
            self.ended.notify_waiters();
        }
    }

    /// A load of the approval page for ceremony `id`, presenting the page secret it holds (its
    /// cookie), if any. The first load binds the ceremony (and every later ceremony of the same
    /// leader) to a new secret. A load without that secret is a second program that read the
    /// page's address (from `xdg-open`'s command line, say): the ceremony ends at once, so
    /// neither it nor the person's page can answer it, and both are told why.
    ///
    /// With `keys_registered`, a registration or a new key's seal step never begins a page
    /// session: any key can answer those, so a program that loaded the page first could enrol
    /// its own key. They are loaded only by the session their authorizing touch began.
    pub(crate) fn load_page(
        &mut self,
        id: CeremonyId,
        presented: Option<&str>,
        keys_registered: bool,
    ) -> Result<PageLoad, ApprovalError> {
        let e = self
            .entries
            .get_mut(&id)
            .filter(|e| !e.claimed())
            .ok_or(ApprovalError::UnknownCeremony)?;
        let anyone_can_answer = matches!(
            e.kind,
            Kind::Register { .. } | Kind::Approve(Purpose::KeySeal(_))
        );
        match (e.page, presented) {
            (None, _) if anyone_can_answer && keys_registered => {
                tracing::warn!(ceremony = %id, "a key registration page loaded outside the session of its authorizing touch: the ceremony ends");
                self.finish(id, registration_outside_session());
                Err(ApprovalError::PageTaken)
            }
            (None, _) => {
                let mut raw = [0u8; 32];
                getrandom::fill(&mut raw).map_err(|e| ApprovalError::Internal {
                    reason: format!("the system random source failed: {e}"),
                })?;
                let secret = hex::encode(raw);
                let hash = page_hash(&secret);
                e.page = Some(hash);
                if e.leader != 0 {
                    self.pages.insert(e.leader, hash);
                }
                Ok(PageLoad::Bound(secret))
            }
            (Some(bound), Some(p))
                if subtle::ConstantTimeEq::ct_eq(&bound[..], &page_hash(p)[..]).into() =>
            {
                Ok(PageLoad::Same)
            }
            (Some(_), _) => {
                tracing::warn!(ceremony = %id, "a second program opened the approval page: the ceremony ends");
                self.finish(id, page_taken());
                Err(ApprovalError::PageTaken)
            }
        }
    }

    /// Whether an answer from the approval page carries the secret of the page session that
    /// ceremony `id` belongs to (a page must have loaded it first).
    pub(crate) fn check_page(
        &mut self,
        id: CeremonyId,
        presented: Option<&str>,
    ) -> Result<(), ApprovalError> {
        let e = self
            .entries
            .get(&id)
            .filter(|e| !e.claimed())
            .ok_or(ApprovalError::UnknownCeremony)?;
        match (e.page, presented) {
            (Some(bound), Some(p))
                if subtle::ConstantTimeEq::ct_eq(&bound[..], &page_hash(p)[..]).into() =>
            {
                Ok(())
            }
            _ => {
                tracing::warn!(ceremony = %id, "an answer from outside the approval page's session: the ceremony ends");
                self.finish(id, page_taken());
                Err(ApprovalError::PageTaken)
            }
        }
    }

    /// The control connection `conn` went away: the ceremonies it leads end, unanswered (a
    /// connection that only awaited or followed one leaves it to its leader).
    pub(crate) fn abandon_conn(&mut self, conn: u64) {
        self.pages.remove(&conn);
        for e in self.entries.values_mut() {
            e.awaiters.retain(|c| *c != conn);
        }
        let ids: Vec<CeremonyId> = self
            .entries
            .iter()
            .filter(|(_, e)| e.leader == conn && !e.claimed())
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.finish(
                id,
                TouchOutcome::refused(
                    Code::ApprovalFailed,
                    format!("{ABANDONED}: run the command again"),
                ),
            );
        }
    }

    /// Ends every ceremony (lock, shutdown).
    pub(crate) fn abandon_all(&mut self, why: &str) {
        let ids: Vec<CeremonyId> = self.entries.keys().copied().collect();
        for id in ids {
            self.finish(id, TouchOutcome::refused(Code::ApprovalFailed, why));
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// Waits for a ceremony's outcome, for at most `OUTCOME_WAIT`.
pub async fn wait(mut rx: watch::Receiver<Option<TouchOutcome>>) -> TouchOutcome {
    let got = tokio::time::timeout(OUTCOME_WAIT, rx.wait_for(|v| v.is_some())).await;
    match got {
        Ok(Ok(v)) => v
            .clone()
            .unwrap_or_else(|| TouchOutcome::refused(Code::Internal, "no outcome")),
        Ok(Err(_)) => TouchOutcome::refused(
            Code::ApprovalFailed,
            "the approval was abandoned: run the command again",
        ),
        Err(_) => timed_out(),
    }
}

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

    fn t0() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000)
    }

    fn approve(role: &str) -> Kind {
        Kind::Approve(Purpose::Role(role.into()))
    }

    fn lead(conn: u64) -> Lead {
        Lead {
            conn,
            requester: "t".into(),
            ..Lead::default()
        }
    }

    fn opened() -> TouchOutcome {
        TouchOutcome::Opened(crate::approval::Opened {
            role: "prod".into(),
            expires_at: 7,
        })
    }

    #[test]
    fn take_is_single_use_and_expires() {
        let mut c = Ceremonies::new();
        let id = c
            .insert(
                t0(),
                approve("a"),
                "state",
                serde_json::Value::Null,
                lead(1),
            )
            .unwrap();
        let claimed = c.take(id, t0() + Duration::from_secs(59)).unwrap();
        assert_eq!(claimed.state, "state");
        assert_eq!(claimed.leader, 1);
        assert_eq!(
            c.take(id, t0()).err().expect("refused").code(),
            "unknown_ceremony"
        );
        assert!(c.view(id).is_none(), "an answered ceremony is not shown");

        let id = c
            .insert(
                t0(),
                approve("b"),
                "state",
                serde_json::Value::Null,
                lead(1),
            )
            .unwrap();
        let err = c
            .take(id, t0() + Duration::from_secs(61))
            .err()
            .expect("refused");
        assert_eq!(err.code(), "challenge_expired");
        // An expired ceremony is gone too.
        assert_eq!(
            c.take(id, t0()).err().expect("refused").code(),
            "unknown_ceremony"
        );

        // A clock that jumps back more than the lifetime ends the ceremony as well.
        let id = c
            .insert(
                t0(),
                approve("c"),
                "state",
                serde_json::Value::Null,
                lead(1),
            )
            .unwrap();
        let err = c
            .take(id, t0() - Duration::from_secs(120))
            .err()
            .expect("refused");
        assert_eq!(err.code(), "challenge_expired");
    }

    #[test]
    fn cap_and_prune() {
        let mut c = Ceremonies::new();
        for i in 0..MAX_CEREMONIES {
            c.insert(
                t0(),
                approve(&format!("r{i}")),
                (),
                serde_json::Value::Null,
                lead(1),
            )
            .unwrap();
        }
        let err = c
            .insert(
                t0() + Duration::from_secs(1),
                approve("x"),
                (),
                serde_json::Value::Null,
                lead(1),
            )
            .unwrap_err();
        assert_eq!(err.code(), "too_many_ceremonies");
        assert_eq!(c.len(), MAX_CEREMONIES);
        // Once they expire they are pruned and there is room again.
        c.insert(
            t0() + Duration::from_secs(61),
            approve("x"),
            (),
            serde_json::Value::Null,
            lead(1),
        )
        .unwrap();
        assert_eq!(c.len(), 1);
    }

    #[tokio::test]
    async fn one_leader_many_followers_one_outcome() {
        let mut c = Ceremonies::new();
        assert!(c.follow("prod", t0()).is_none(), "nothing under way yet");
        let id = c
            .insert(
                t0(),
                approve("prod"),
                (),
                serde_json::json!({"c": 1}),
                lead(1),
            )
            .unwrap();
        let followers: Vec<_> = (0..20)
            .map(|_| tokio::spawn(wait(c.follow("prod", t0()).expect("follows"))))
            .collect();
        assert!(
            c.follow("dev", t0()).is_none(),
            "another role gets its own ceremony"
        );
        c.take(id, t0()).unwrap();
        assert!(
            c.follow("prod", t0()).is_some(),
            "an answered ceremony is still followed until its outcome"
        );
        c.finish(id, opened());
        for f in followers {
            assert_eq!(f.await.unwrap(), opened());
        }
        assert!(
            c.follow("prod", t0()).is_none(),
            "finished: the next asker leads"
        );
    }

    #[tokio::test]
    async fn leader_or_awaiter_going_away_releases_followers() {
        let mut c = Ceremonies::new();
        c.insert(t0(), approve("prod"), (), serde_json::Value::Null, lead(1))
            .unwrap();
        let rx = c.follow("prod", t0()).unwrap();
        c.abandon_conn(1);
        assert!(matches!(
            wait(rx).await,
            TouchOutcome::Refused(crate::refusal::Refusal {
                code: Code::ApprovalFailed,
                ..
            })
        ));

        // The browser flow: the leader awaits its own ceremony; another client may await too.
        let b = c
            .insert(t0(), approve("dev"), (), serde_json::Value::Null, lead(1))
            .unwrap();
        let rx = c.subscribe(b, 1).unwrap();
        let rx3 = c.subscribe(b, 3).unwrap();
        c.finish(b, TouchOutcome::Done);
        assert_eq!(wait(rx).await, TouchOutcome::Done);
        assert_eq!(wait(rx3).await, TouchOutcome::Done);
        let d = c
            .insert(t0(), approve("dev"), (), serde_json::Value::Null, lead(1))
            .unwrap();
        let rx = c.subscribe(d, 4).unwrap();
        // Another client that only awaited goes away: the leader's ceremony goes on.
        c.abandon_conn(4);
        assert!(
            c.view(d).is_some(),
            "an awaiter cancelled the leader's ceremony"
        );
        // The leader goes away: it ends, and whoever still waits learns why.
        let rx5 = c.subscribe(d, 5).unwrap();
        c.abandon_conn(1);
        assert!(
            c.view(d).is_none(),
            "an unanswered page nobody leads must not block the role"
        );
        drop(rx);
        assert!(matches!(
            wait(rx5).await,
            TouchOutcome::Refused(crate::refusal::Refusal {
                code: Code::ApprovalFailed,
                ..
            })
        ));
    }

    #[test]
    fn the_first_page_load_binds_the_ceremony_and_a_second_loader_ends_it() {
        let mut c = Ceremonies::<()>::new();
        let id = c
            .insert(t0(), approve("prod"), (), serde_json::Value::Null, lead(1))
            .unwrap();
        let PageLoad::Bound(secret) = c.load_page(id, None, true).unwrap() else {
            panic!("the first load binds");
        };
        assert_eq!(
            c.load_page(id, Some(&secret), true).unwrap(),
            PageLoad::Same
        );
        assert!(c.check_page(id, Some(&secret)).is_ok());
        // A program that read the address loads it without the secret (or with a guess).
        assert!(matches!(
            c.load_page(id, Some("00"), true),
            Err(ApprovalError::PageTaken)
        ));
        assert!(c.view(id).is_none(), "the ceremony ended");
    }

    #[test]
    fn later_steps_of_one_leader_belong_to_its_page_and_nobody_elses() {
        let mut c = Ceremonies::<()>::new();
        let first = c
            .insert(
                t0(),
                approve("key add: new"),
                (),
                serde_json::Value::Null,
                lead(7),
            )
            .unwrap();
        let PageLoad::Bound(secret) = c.load_page(first, None, true).unwrap() else {
            panic!("the first load binds");
        };
        c.finish(first, TouchOutcome::Done);
        // The registration step: same leader, so the same page session.
        let next = c
            .insert(
                t0(),
                Kind::Register { name: "new".into() },
                (),
                serde_json::Value::Null,
                lead(7),
            )
            .unwrap();
        assert_eq!(
            c.load_page(next, Some(&secret), true).unwrap(),
            PageLoad::Same
        );
        // An answer without the secret (a program that read the new address) is refused and
        // ends the step.
        assert!(matches!(
            c.check_page(next, None),
            Err(ApprovalError::PageTaken)
        ));
        assert!(c.view(next).is_none());
        // Another leader's ceremony is not bound to this page.
        let other = c
            .insert(t0(), approve("dev"), (), serde_json::Value::Null, lead(8))
            .unwrap();
        assert!(matches!(
            c.load_page(other, None, true).unwrap(),
            PageLoad::Bound(_)
        ));
    }

    #[test]
    fn a_registration_never_begins_a_page_session_once_keys_exist() {
        let mut c = Ceremonies::<()>::new();
        let reg = c
            .insert(
                t0(),
                Kind::Register { name: "new".into() },
                (),
                serde_json::Value::Null,
                lead(3),
            )
            .unwrap();
        // A program loads it first: it gets no session, and the registration ends.
        assert!(matches!(
            c.load_page(reg, None, true),
            Err(ApprovalError::PageTaken)
        ));
        assert!(c.view(reg).is_none());
        let seal = c
            .insert(
                t0(),
                approve_purpose(Purpose::KeySeal("new".into())),
                (),
                serde_json::Value::Null,
                lead(4),
            )
            .unwrap();
        assert!(c.load_page(seal, None, true).is_err());
        // The very first key (no keys yet) may be registered on a page of its own.
        let first = c
            .insert(
                t0(),
                Kind::Register {
                    name: "first".into(),
                },
                (),
                serde_json::Value::Null,
                lead(5),
            )
            .unwrap();
        assert!(matches!(
            c.load_page(first, None, false).unwrap(),
            PageLoad::Bound(_)
        ));
    }

    fn approve_purpose(p: Purpose) -> Kind {
        Kind::Approve(p)
    }

    #[test]
    fn an_answer_from_a_page_that_never_loaded_is_refused() {
        let mut c = Ceremonies::<()>::new();
        let id = c
            .insert(t0(), approve("prod"), (), serde_json::Value::Null, lead(1))
            .unwrap();
        assert!(matches!(
            c.check_page(id, None),
            Err(ApprovalError::PageTaken)
        ));
    }

    #[tokio::test]
    async fn a_leader_asking_late_still_gets_the_outcome_and_nobody_else_does() {
        let mut c = Ceremonies::new();
        let id = c
            .insert(
                t0(),
                Kind::Register { name: "k".into() },
                (),
                serde_json::Value::Null,
                lead(7),
            )
            .unwrap();
        assert!(
            c.subscribe(id, 8).is_none(),
            "a registration is the leader's alone"
        );
        c.finish(id, opened());
        // The page answered before credctl asked.
        assert_eq!(
            wait(c.subscribe(id, 7).expect("kept for the leader")).await,
            opened()
        );
        assert!(c.subscribe(id, 8).is_none(), "only for the leader");
        c.prune(t0() + OUTCOME_WAIT);
        assert!(c.subscribe(id, 7).is_none(), "not forever");
    }

    #[tokio::test]
    async fn stale_ceremonies_end_and_are_replaced() {
        let mut c = Ceremonies::new();
        let old = c
            .insert(t0(), approve("prod"), (), serde_json::Value::Null, lead(1))
            .unwrap();
        let rx = c.follow("prod", t0()).unwrap();
        assert!(c.follow("prod", t0() + CEREMONY_TTL).is_none());
        assert!(c.view(old).is_none());
        assert_eq!(wait(rx).await, timed_out());

        // Answered ceremonies get longer: the session may still be opening.
        let id = c
            .insert(t0(), approve("prod"), (), serde_json::Value::Null, lead(1))
            .unwrap();
        c.take(id, t0() + Duration::from_secs(59)).unwrap();
        assert!(c.follow("prod", t0() + CEREMONY_TTL).is_some());
        assert!(c.follow("prod", t0() + OUTCOME_WAIT).is_none());
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

    #[test]
    fn a_ceremony_nobody_touched_is_reported_once_with_who_asked() {
        let mut c: Ceremonies<()> = Ceremonies::new();
        let who = crate::audit::Peer {
            origin: crate::audit::Origin::Unix { uid: 1000, pid: 42 },
            exe: Some("/usr/bin/credctl".into()),
        };
        let asked = Lead {
            who: Some(who),
            requester: "pid 42 (/usr/bin/credctl)".into(),
            ..lead(3)
        };
        let answered = c
            .insert(t0(), approve("dev"), (), serde_json::Value::Null, lead(4))
            .unwrap();
        c.insert(t0(), approve("prod"), (), serde_json::Value::Null, asked)
            .unwrap();
        c.finish(answered, opened());
        assert!(c.take_expired(t0() + CEREMONY_TTL / 2).is_empty());
        let expired = c.take_expired(t0() + CEREMONY_TTL + Duration::from_secs(1));
        assert_eq!(
            expired.len(),
            1,
            "only the one nobody answered: {expired:?}"
        );
        assert_eq!(expired[0].kind, approve("prod"));
        assert_eq!(expired[0].requester, "pid 42 (/usr/bin/credctl)");
        assert_eq!(
            expired[0].who.as_ref().unwrap().origin,
            crate::audit::Origin::Unix { uid: 1000, pid: 42 }
        );
        assert!(
            c.take_expired(t0() + CEREMONY_TTL * 2).is_empty(),
            "reported once"
        );
    }
}

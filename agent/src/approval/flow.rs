//! The touch, end to end: every path that starts, joins or answers a WebAuthn ceremony (from
//! `credctl` or the browser page) comes through [`Approvals`], which verifies the answer with
//! the [`Approver`] and, for a role, opens the session it approved.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use secrecy::SecretString as Secret;

use super::{Challenge, ChallengeStep, Opened, TouchOutcome};
use crate::refusal::Code;
use secrecy::SecretString;
use webauthn_rs::prelude::{PublicKeyCredential, RegisterPublicKeyCredential};

use super::ceremony::{self, Begin, Claimed, Kind, Lead, Purpose, View};
use super::pending::PendingApprovals;
use super::seal::{prf_enabled, PrfAnswer};
use super::Registered;
use super::{Approval, ApprovalError, Approver, CeremonyId, KeyInfo, State};
use crate::audit::{Audit, Event, Peer};
use crate::trust::{Change, Trusted, Verdict};

/// What a verified touch opens: the role sessions (implemented by `sessions`, which this
/// module must not depend on).
#[async_trait::async_trait]
pub trait SessionOpener: Send + Sync {
    /// Opens the session `approval` approved.
    async fn open_approved(
        &self,
        approval: Approval,
        mfa_code: Option<SecretString>,
        now: SystemTime,
    ) -> Result<Opened, crate::refusal::Refusal>;

    /// A touch allowed `process` (or every process of `exe`) to use `role`'s open session.
    fn allow_program(
        &self,
        role: &str,
        exe: std::path::PathBuf,
        process: Option<crate::procs::ProcessId>,
    ) -> Result<(), crate::refusal::Refusal>;
}

/// Who asks for a ceremony: the control connection (0 for none) and a description of the
/// requesting process for the approval page.
pub struct Requester {
    pub conn: u64,
    pub description: String,
    /// The connection as the audit names it.
    pub who: Option<Peer>,
}

impl Requester {
    fn lead(&self, mfa_code: Option<Secret>, target: Option<String>, accept_change: bool) -> Lead {
        Lead {
            conn: self.conn,
            requester: self.description.clone(),
            mfa_code,
            target,
            accept_change,
            who: self.who.clone(),
        }
    }
}

/// Who sends an answer: a control connection, or the approval page with the page secret its
/// request carried (its cookie), if any.
#[derive(Clone, Debug)]
pub enum AnsweredBy {
    Conn(u64),
    Page(Option<String>),
}

/// A parsed answer to a ceremony.
enum Answer {
    /// With whether the client says the new credential evaluates the PRF.
    Register(RegisterPublicKeyCredential, bool),
    /// With the PRF output the touch brought, if any.
    Approve(Box<PublicKeyCredential>, PrfAnswer),
}

/// The approval path: the relying party, the ceremony table, pending approvals, and what a
/// verified touch opens.
pub struct Approvals {
    approver: Approver,
    pending: Arc<PendingApprovals>,
    opener: Arc<dyn SessionOpener>,
    /// Touches, sessions opened and key changes, accepted or refused, with who asked.
    audit: Audit,
    /// What the touches vouched for: settings, endpoints, role targets (`trusted.json`).
    trusted: Arc<Trusted>,
    /// `http://localhost:PORT`: the only origin an answer may come from.
    origin: String,
    /// The control connections whose own `confirm` touch unwrapped the vault, and when: a
    /// secret handed over on such a connection (a source, a login) goes to a vault the person
    /// just proved is theirs, not to whatever `vault.json` and `keys.json` say now.
    touched: std::sync::Mutex<std::collections::HashMap<u64, SystemTime>>,
    /// When a `confirm` touch last succeeded, whoever led it: a login requested meanwhile by
    /// another connection waits a moment for the login that touch starts, and joins it.
    last_confirm: std::sync::Mutex<Option<SystemTime>>,
    /// How long a session opened by one touch lasts, shown with each challenge.
    session_ttl: std::sync::RwLock<Duration>,
    /// The configuration the `credctl reload` touch under way would put in force.
    reload: std::sync::Mutex<Option<Arc<dyn Reconfiguration>>>,
}

/// A touch the agent is asking for right now, for `status` and for a client about to wait
/// behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InProgress {
    /// What the touch is for, in words ("role prod", "adding the key laptop").
    pub what: String,
    /// The process that asked, as the agent names it.
    pub requester: String,
    /// Unix seconds when it began.
    pub started_at: u64,
}

/// `config.toml` read again, checked, and ready to put in force: what a `credctl reload` touch
/// vouches for. Built by the agent's wiring (`crate::reload`), which owns the parts it changes.
pub trait Reconfiguration: Send + Sync {
    /// The settings a touch vouches for, as they would be.
    fn settings(&self) -> &crate::trust::Settings;
    /// Puts it in force; called once the touch verified and recorded [`Self::settings`] (or,
    /// with no key registered and no vault, at once).
    fn apply(&self);
}

/// The ceremony named by `id`, if it is one.
fn ceremony_id(id: &str) -> Option<CeremonyId> {
    id.parse().ok()
}

impl Approvals {
    pub fn new(
        approver: Approver,
        pending: Arc<PendingApprovals>,
        opener: Arc<dyn SessionOpener>,
        audit: Audit,
        trusted: Arc<Trusted>,
        http_port: u16,
        session_ttl: Duration,
    ) -> Approvals {
        Approvals {
            approver,
            pending,
            opener,
            audit,
            trusted,
            origin: format!("http://localhost:{http_port}"),
            touched: std::sync::Mutex::new(std::collections::HashMap::new()),
            last_confirm: std::sync::Mutex::new(None),
            session_ttl: std::sync::RwLock::new(session_ttl),
            reload: std::sync::Mutex::new(None),
        }
    }

    /// Puts the policy and session length of a reload in force (its `apply`).
    pub fn set_policy(&self, policy: &super::PreparedPolicy, session_ttl: Duration) {
        self.approver.set_policy(policy);
        *crate::util::RwLockExt::write_locked(&self.session_ttl) = session_ttl;
    }

    /// The approval policy `policy` loaded (its CA files read), to check before a reload's
    /// touch.
    pub fn prepare_policy(
        &self,
        policy: &super::ApprovalPolicy,
        now: SystemTime,
    ) -> Result<super::PreparedPolicy, ApprovalError> {
        self.approver.prepare_policy(policy, now)
    }

    /// Why no registered key would satisfy `policy` (see [`super::Approver::locks_out`]).
    pub fn policy_locks_out(&self, policy: &super::PreparedPolicy) -> Option<String> {
        self.approver.locks_out(policy)
    }

    /// What the reload touch under way would confirm, for the approval page.
    pub fn reload_changes(&self) -> Vec<String> {
        let reload = crate::util::LockExt::locked(&self.reload).clone();
        reload
            .map(|r| {
                self.trusted
                    .preview_against(r.settings(), None)
                    .iter()
                    .map(ToString::to_string)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `credctl reload`: `candidate` (settings that differ from those in force) is put in
    /// force by one touch that sees what changed, the way `credctl confirm --accept-change`
    /// confirms: the touch unwraps the vault, and the settings are recorded under its MAC
    /// before anything uses them. With no key registered and no vault there is nothing a
    /// touch could protect, and the settings apply at once, as they would at a start.
    pub async fn reload_start(
        &self,
        candidate: Arc<dyn Reconfiguration>,
        who: &Requester,
        now: SystemTime,
    ) -> TouchOutcome {
        if self.approver.keys().is_empty() {
            if self.approver.vault().exists() || self.approver.vault_lost() {
                return TouchOutcome::refused(
                    Code::Refused,
                    "no security key is registered, yet a vault exists: no touch can confirm new \
                     settings. Restore keys.json from a backup and restart the agent",
                );
            }
            candidate.apply();
            if let Some(peer) = &who.who {
                self.audit.record(
                    now,
                    Event::action("settings_reloaded", peer, None)
                        .subject("no key registered yet: applied without a touch"),
                );
            }
            return TouchOutcome::Done;
        }
        let changes = if self.approver.vault().exists() {
            self.trusted.preview_against(candidate.settings(), None)
        } else {
            Vec::new()
        };
        let purpose = if changes.is_empty() {
            "to apply the settings config.toml has now".to_owned()
        } else {
            format!(
                "to apply these changes to the agent's settings:{}",
                changes
                    .iter()
                    .map(|c| format!("\n  {c}"))
                    .collect::<String>()
            )
        };
        match self
            .take_turn(&Purpose::Reload, who, None, None, true, now)
            .await
        {
            Ok(Begin::Lead(id, options)) => {
                *crate::util::LockExt::locked(&self.reload) = Some(candidate);
                self.pseudo_challenge(id, &Purpose::Reload, purpose, options)
            }
            Ok(Begin::Follow(rx)) => ceremony::wait(rx).await,
            Err(e) => e.outcome(),
        }
    }

    /// What a touch for `role` (with its `target`; none: a touch for no role) would have to
    /// confirm, as the files say now (not verified: shown before the touch, which decides).
    pub fn preview_changes(&self, role: Option<(&str, &str)>) -> Vec<Change> {
        // Without a vault there is no key to vouch with (no key yet, or an unsealed setup).
        if !self.approver.vault().exists() {
            return Vec::new();
        }
        self.trusted.preview(role)
    }

    /// The touches being asked for now, for `status` and for a client about to wait behind one.
    /// Audits the ceremonies that timed out (nobody touched a key for them) as refused
    /// touches, `timed_out`, with who asked.
    pub fn audit_expired(&self, now: SystemTime) {
        for expired in self.approver.take_expired(now) {
            let what = match &expired.kind {
                Kind::Approve(purpose) => purpose.wire(),
                Kind::Register { name } => format!("key add: {name}"),
            };
            let who = expired.who.unwrap_or_else(|| {
                Peer::from(crate::audit::Origin::Unix {
                    uid: nix::unistd::getuid().as_raw(),
                    pid: 0,
                })
            });
            tracing::info!(what = %what, requester = %expired.requester, "nobody touched a key in time");
            self.audit.record(
                now,
                Event::action("touch", &who, Some("timed_out")).role(&what),
            );
        }
    }

    pub fn in_progress(&self, now: SystemTime) -> Vec<InProgress> {
        self.audit_expired(now);
        self.approver
            .in_progress(now)
            .into_iter()
            .map(|(kind, requester, started)| InProgress {
                what: match &kind {
                    Kind::Register { name } => format!("registering the key {name}"),
                    Kind::Approve(purpose) => purpose.describe(),
                },
                requester: if requester.is_empty() {
                    "the approval page".to_owned()
                } else {
                    requester
                },
                started_at: crate::util::unix_secs(started),
            })
            .collect()
    }

    /// Whether the settings in force are what a touch confirmed, in words, for `status`.
    pub fn settings_state(&self) -> String {
        if !self.approver.vault().exists() {
            return "not authenticated: no vault yet (register a key with `credctl key add`)"
                .into();
        }
        let changes = self.preview_changes(None);
        if !changes.is_empty() {
            return format!(
                "CHANGED since a touch confirmed them ({}): see `credctl confirm`",
                changes.len()
            );
        }
        if self.trusted.confirmed() {
            "confirmed by a touch since the agent started".into()
        } else {
            "as last confirmed (the next touch checks them)".into()
        }
    }

    /// The registered keys.
    pub fn keys(&self) -> Vec<KeyInfo> {
        self.approver.keys()
    }

    /// The vault's fingerprint, once a key has sealed it.
    pub fn vault_fingerprint(&self) -> Option<String> {
        self.approver.vault().fingerprint()
    }

    /// Whether touches must unwrap the vault.
    pub fn sealing(&self) -> super::Sealing {
        self.approver.sealing()
    }

    /// Whether touches must verify the user.
    pub fn user_verification(&self) -> super::UserVerification {
        self.approver.user_verification()
    }

    fn challenge(
        &self,
        id: &str,
        role: Option<&str>,
        target: Option<String>,
        options: serde_json::Value,
    ) -> TouchOutcome {
        TouchOutcome::Challenge(Box::new(Challenge {
            ceremony_id: id.to_owned(),
            origin: self.origin.clone(),
            role: role.map(str::to_owned),
            purpose: None,
            session_secs: role.map(|_| self.session_ttl().as_secs()),
            target,
            approve_url: format!("{}/approve/{id}", self.origin),
            options,
            step: if role.is_some() {
                ChallengeStep::OpenRole
            } else {
                ChallengeStep::Register
            },
        }))
    }

    /// The challenge of a touch that opens no session (a key change, `confirm`): its
    /// pseudo-role and, in words, what it is for.
    fn pseudo_challenge(
        &self,
        id: CeremonyId,
        purpose: &Purpose,
        what: String,
        options: serde_json::Value,
    ) -> TouchOutcome {
        TouchOutcome::Challenge(Box::new(Challenge {
            ceremony_id: id.to_string(),
            origin: self.origin.clone(),
            role: Some(purpose.wire()),
            purpose: Some(what),
            session_secs: None,
            target: None,
            approve_url: format!("{}/approve/{id}", self.origin),
            options,
            step: match purpose {
                Purpose::Role(_) => ChallengeStep::OpenRole,
                Purpose::KeySeal(_) => ChallengeStep::SealNewKey,
                _ => ChallengeStep::Authorize,
            },
        }))
    }

    /// An unanswered ceremony, for the approval page.
    pub fn view(&self, id: &str) -> Option<View> {
        self.approver.view(ceremony_id(id)?)
    }

    /// A load of the approval page for ceremony `id` presenting `secret` (its cookie): the
    /// ceremony, and whether this load bound the page session (then with the secret to set).
    /// A second loader ends the ceremony and is audited.
    pub fn load_page(
        &self,
        id: &str,
        secret: Option<&str>,
        who: &Peer,
        now: SystemTime,
    ) -> Result<(View, super::PageLoad), ApprovalError> {
        let cid = ceremony_id(id).ok_or(ApprovalError::UnknownCeremony)?;
        let view = self
            .approver
            .view(cid)
            .ok_or(ApprovalError::UnknownCeremony)?;
        match self.approver.load_page(cid, secret) {
            Ok(load) => Ok((view, load)),
            Err(e) => {
                self.audit.record(
                    now,
                    Event::action("page_load", who, Some(e.code())).subject(id),
                );
                Err(e)
            }
        }
    }

    /// "This wasn't me" on the approval page: ends ceremony `id` unanswered, tells its leader
    /// why, and audits it. Only the page session the ceremony belongs to may (another caller
    /// ends it too, as a page taken). Returns what the ceremony was for.
    pub fn deny(
        &self,
        id: &str,
        secret: Option<&str>,
        who: &Peer,
        now: SystemTime,
    ) -> Result<String, ApprovalError> {
        let cid = ceremony_id(id).ok_or(ApprovalError::UnknownCeremony)?;
        let view = self
            .approver
            .view(cid)
            .ok_or(ApprovalError::UnknownCeremony)?;
        let what = match &view.kind {
            Kind::Approve(purpose) => purpose.wire(),
            Kind::Register { name } => format!("key add: {name}"),
        };
        if let Err(e) = self.approver.check_page(cid, secret) {
            self.audit.record(
                now,
                Event::action("page_answer", who, Some(e.code())).subject(id),
            );
            return Err(e);
        }
        self.approver.conclude(
            cid,
            TouchOutcome::refused(
                Code::ApprovalFailed,
                "you declined this request on the approval page: nothing was opened. If you did \
                 not run this command, a program running as you asked for it: see `credctl \
                 audit` for the process",
            ),
        );
        tracing::warn!(what = %what, requester = %view.requester, "declined on the approval page");
        self.audit
            .record(now, Event::action("touch", who, Some("denied")).role(&what));
        Ok(what)
    }

    /// How long a session opened by one touch lasts.
    pub fn session_ttl(&self) -> Duration {
        *crate::util::RwLockExt::read_locked(&self.session_ttl)
    }

    /// `credctl key add`. The first key registers directly; every later one needs a touch of a
    /// key already registered first, so a process of the user cannot enrol its own "key" (say, a
    /// fake authenticator) and then approve roles without the person.
    pub async fn key_add_start(
        &self,
        name: &str,
        accept_change: bool,
        who: &Requester,
        now: SystemTime,
    ) -> TouchOutcome {
        if let Err(e) = self.approver.check_new_key_name(name) {
            return e.outcome();
        }
        if self.approver.keys().is_empty() {
            // The first key's touch makes the vault and adopts the settings it runs with (trust
            // on first use). Settings that send secrets elsewhere than AWS or weaken the
            // approval are shown first and adopted only when the person says so: a program
            // that wiped the state and edited config.toml must not have them adopted unseen.
            let risky = self.trusted.risky();
            if !risky.is_empty() && !accept_change {
                return TouchOutcome::refused(
                    Code::Refused,
                    format!(
                        "your first key's touch will vouch for these settings of config.toml, \
                         which send secrets elsewhere than AWS or weaken the approval:\n{}\nIf \
                         you set them yourself, run `credctl key add {name} --accept-change`; if \
                         not, a program changed config.toml: fix it first. If you had keys \
                         registered before, a program may have removed your state: restore \
                         keys.json, vault.json and trusted.json from a backup instead",
                        risky
                            .iter()
                            .map(|r| format!("  {r}"))
                            .collect::<Vec<_>>()
                            .join("\n")
                    ),
                );
            }
            return self.registration_challenge(name, who.conn, None, now);
        }
        let purpose = Purpose::KeyAdd(name.to_owned());
        match self.take_turn(&purpose, who, None, None, false, now).await {
            Ok(Begin::Lead(id, options)) => self.pseudo_challenge(
                id,
                &purpose,
                format!("with a key you registered before, to allow adding the new key {name}"),
                options,
            ),
            Ok(Begin::Follow(rx)) => ceremony::wait(rx).await,
            Err(e) => e.outcome(),
        }
    }

    /// A registration ceremony for a new key named `name`, led by control connection `leader`
    /// and allowed by `authorization` (none for the first key).
    fn registration_challenge(
        &self,
        name: &str,
        leader: u64,
        authorization: Option<Approval>,
        now: SystemTime,
    ) -> TouchOutcome {
        let lead = Lead {
            conn: leader,
            requester: "credctl key add".into(),
            ..Lead::default()
        };
        match self
            .approver
            .start_registration_led(name, lead, authorization, now)
        {
            // The options as recorded: with the PRF request the typed challenge lacks.
            Ok((id, _)) => match self.approver.view(id) {
                Some(view) => self.challenge(&id.to_string(), None, None, view.options),
                None => TouchOutcome::refused(
                    Code::NotFound,
                    "the registration expired at once: run the command again",
                ),
            },
            Err(e) => e.outcome(),
        }
    }

    /// `credctl key remove`: the cheap checks first (the key exists; the last one only with
    /// `--force`), then a touch of a registered key, which removes it.
    pub async fn key_remove_start(
        &self,
        name: &str,
        force: bool,
        who: &Requester,
        now: SystemTime,
    ) -> TouchOutcome {
        if let Err(e) = self.approver.check_removal(name, force) {
            return e.outcome();
        }
        let purpose = Purpose::KeyRemove {
            name: name.to_owned(),
            force,
        };
        match self.take_turn(&purpose, who, None, None, false, now).await {
            Ok(Begin::Lead(id, options)) => self.pseudo_challenge(
                id,
                &purpose,
                format!("to allow removing the key {name}"),
                options,
            ),
            // open_or_join refuses to let anyone follow a key change.
            Ok(Begin::Follow(_)) => {
                TouchOutcome::refused(Code::Internal, "a key change was followed: this is a bug")
            }
            Err(e) => e.outcome(),
        }
    }

    /// The registration answer of `credctl key add`.
    pub async fn key_add_finish(
        self: &Arc<Self>,
        id: &str,
        credential: serde_json::Value,
        conn: u64,
        who: &Peer,
        now: SystemTime,
    ) -> TouchOutcome {
        match self.view(id).map(|v| v.kind) {
            Some(Kind::Register { .. }) => {
                self.answer_detached(
                    id.to_owned(),
                    credential,
                    AnsweredBy::Conn(conn),
                    who.clone(),
                    now,
                )
                .await
            }
            Some(Kind::Approve(_)) => {
                TouchOutcome::refused(Code::BadRequest, "that ceremony opens a role; send approve")
            }
            None => TouchOutcome::refused(Code::NotFound, "no such ceremony (finished or expired)"),
        }
    }

    /// Leads or follows the ceremony for `role` (the caller checked that no session is open
    /// and that an MFA code is there if the role needs one).
    pub async fn open(
        &self,
        role: &str,
        target: String,
        mfa_code: Option<Secret>,
        accept_change: bool,
        who: &Requester,
        now: SystemTime,
    ) -> TouchOutcome {
        let purpose = Purpose::Role(role.to_owned());
        let begin = self
            .take_turn(
                &purpose,
                who,
                mfa_code,
                Some(target.clone()),
                accept_change,
                now,
            )
            .await;
        match &begin {
            Ok(Begin::Lead(id, _)) => {
                tracing::debug!(role, ceremony = %id, "open: leading a ceremony")
            }
            Ok(Begin::Follow(_)) => tracing::debug!(role, "open: following the ceremony under way"),
            Err(_) => tracing::debug!(role, "open: cannot start a ceremony"),
        }
        match begin {
            Ok(Begin::Lead(id, options)) => {
                let changes = if accept_change {
                    self.preview_changes(Some((role, &target)))
                } else {
                    Vec::new()
                };
                let mut challenge =
                    self.challenge(&id.to_string(), Some(role), Some(target), options);
                if let (TouchOutcome::Challenge(c), false) = (&mut challenge, changes.is_empty()) {
                    let purpose = &mut c.purpose;
                    // The touch confirms these too: say so where the person is asked.
                    *purpose = Some(format!(
                        "to open role {role} and confirm these changes:{}",
                        changes
                            .iter()
                            .map(|c| format!("\n  {c}"))
                            .collect::<String>()
                    ));
                }
                challenge
            }
            Ok(Begin::Follow(rx)) => ceremony::wait(rx).await,
            Err(e) => e.outcome(),
        }
    }

    /// Joins or leads the approval for `role`, waiting (up to `OUTCOME_WAIT`) while an approval
    /// for another role is under way: one touch at a time.
    async fn take_turn(
        &self,
        purpose: &Purpose,
        who: &Requester,
        mfa_code: Option<Secret>,
        target: Option<String>,
        accept_change: bool,
        now: SystemTime,
    ) -> Result<Begin, ApprovalError> {
        let deadline = tokio::time::Instant::now() + ceremony::OUTCOME_WAIT;
        loop {
            let ended = self.approver.ceremony_ended();
            let turn = ended.notified();
            tokio::pin!(turn);
            // Registered before the check, so an end between the check and the wait is seen.
            turn.as_mut().enable();
            let elapsed = deadline.saturating_duration_since(tokio::time::Instant::now());
            let now = now + ceremony::OUTCOME_WAIT.saturating_sub(elapsed);
            match self.approver.open_or_join(
                purpose,
                who.lead(mfa_code.clone(), target.clone(), accept_change),
                now,
            ) {
                Err(ApprovalError::Busy { role: other }) => {
                    tracing::debug!(purpose = %purpose.wire(), waiting_for = %other, "one touch at a time: waiting");
                    if tokio::time::timeout_at(deadline, turn).await.is_err() {
                        return Err(ApprovalError::Busy { role: other });
                    }
                }
                result => return result,
            }
        }
    }

    /// `credctl` waits for ceremony `id` to be answered elsewhere (the browser page).
    pub async fn await_ceremony(&self, id: &str, conn: u64) -> TouchOutcome {
        match ceremony_id(id).and_then(|id| self.approver.subscribe(id, conn)) {
            Some(rx) => ceremony::wait(rx).await,
            None => TouchOutcome::refused(Code::NotFound, "no such ceremony (finished or expired)"),
        }
    }

    /// The control connection `conn` went away: its unanswered ceremonies end.
    pub fn abandon_conn(&self, conn: u64) {
        self.approver.abandon_conn(conn);
        crate::util::LockExt::locked(&self.touched).remove(&conn);
    }

    /// `source add` stored `source` holding `key_id` for a connection the person's touch proved:
    /// the next touch records that key as the one the source holds.
    pub fn source_added(&self, source: &str, key_id: &str) {
        self.trusted.source_added(source, key_id);
    }

    /// Whether a `confirm` touch is under way or succeeded within the last 2 s (its connection
    /// is probably about to start what it touched for).
    pub fn confirm_recent(&self, now: SystemTime) -> bool {
        let under_way = self
            .approver
            .in_progress(now)
            .iter()
            .any(|(kind, _, _)| matches!(kind, Kind::Approve(Purpose::Confirm)));
        under_way
            || crate::util::LockExt::locked(&self.last_confirm).is_some_and(|at| {
                now.duration_since(at)
                    .is_ok_and(|d| d < Duration::from_secs(2))
            })
    }

    /// Whether a secret handed over on connection `conn` may be stored: this connection's own
    /// touch unwrapped the vault within the last 10 minutes, or there is nothing to seal to and
    /// nothing to prove (no vault and no key registered: a fresh install, where the source is
    /// stored unsealed and says so). A missing `vault.json` while keys are registered is no
    /// fresh install: the sixth attack review deleted it and the next `source add` stored the
    /// secret unsealed in the keyring, silently. Then the touch is required, and it is refused:
    /// an approval never makes a vault (see `seal::evals_for`).
    pub fn may_seal_for(&self, conn: u64, now: SystemTime) -> bool {
        // `keys.json` deleted too is still no fresh install while `trusted.json` names the
        // vault that was lost.
        if !self.approver.vault().exists()
            && self.approver.keys().is_empty()
            && !self.approver.vault_lost()
        {
            return true;
        }
        crate::util::LockExt::locked(&self.touched)
            .get(&conn)
            .is_some_and(|at| {
                now.duration_since(*at)
                    .is_ok_and(|d| d < Duration::from_secs(600))
            })
    }

    /// Ends every ceremony (lock, shutdown).
    pub fn abandon_all(&self, why: &str) {
        self.approver.abandon_all(why);
    }

    /// The one answer to ceremony `id` (from credctl or the browser page). The answer is parsed
    /// before the ceremony is claimed, so junk cannot burn a live ceremony.
    ///
    /// `from` is the control connection that sent the answer, or the browser page. A
    /// registration or a key change is answered only by the connection that started it; the page
    /// answers only with the secret of the page session the ceremony belongs to
    /// (`Ceremonies::load_page`).
    pub async fn answer(
        &self,
        id: &str,
        mut credential: serde_json::Value,
        from: AnsweredBy,
        who: &Peer,
        now: SystemTime,
    ) -> TouchOutcome {
        let gone = || {
            TouchOutcome::refused(
                Code::NotFound,
                "no such ceremony (already answered or expired): run the command again",
            )
        };
        let Some(cid) = ceremony_id(id) else {
            return gone();
        };
        let Some(view) = self.approver.view(cid) else {
            return gone();
        };
        if let AnsweredBy::Conn(c) = &from {
            if ceremony::bound(&view.kind) && *c != view.leader {
                return TouchOutcome::refused(
                    Code::Refused,
                    "this ceremony belongs to another credctl: only the command that started it \
                     can answer it",
                );
            }
        }
        let parsed = match &view.kind {
            Kind::Register { .. } => {
                let prf = prf_enabled(&credential);
                serde_json::from_value::<RegisterPublicKeyCredential>(credential)
                    .map(|c| Answer::Register(c, prf))
                    .map_err(|e| format!("malformed registration: {e}"))
            }
            Kind::Approve { .. } => match PrfAnswer::take(&mut credential) {
                Ok(prf) => serde_json::from_value::<PublicKeyCredential>(credential)
                    .map(|c| Answer::Approve(Box::new(c), prf))
                    .map_err(|e| format!("malformed assertion: {e}")),
                Err(e) => Err(format!("malformed PRF output: {e}")),
            },
        };
        let answer = match parsed {
            Ok(a) => a,
            Err(msg) => return TouchOutcome::refused(Code::BadRequest, msg),
        };
        // Junk is refused above without burning the ceremony; a well-formed answer from outside
        // the leader's page session ends it.
        if let AnsweredBy::Page(secret) = &from {
            if let Err(e) = self.approver.check_page(cid, secret.as_deref()) {
                self.audit.record(
                    now,
                    Event::action("page_answer", who, Some(e.code())).subject(id),
                );
                return e.outcome();
            }
        }
        let claimed = match self.approver.claim(cid, now) {
            Ok(c) => c,
            Err(ApprovalError::UnknownCeremony) => return gone(),
            Err(e) => return self.refused(&e).await,
        };
        let outcome = match answer {
            Answer::Register(cred, prf) => {
                self.finish_registration(claimed, &cred, prf, who, now)
                    .await
            }
            Answer::Approve(cred, prf) => self.finish_approval(claimed, &cred, prf, who, now).await,
        };
        self.approver.conclude(cid, outcome.clone());
        outcome
    }

    /// [`Approvals::answer`], run to completion whatever happens to the caller: a client that
    /// goes away after its touch (during a slow STS call, say) must leave neither a claimed
    /// ceremony its followers wait on nor a half-open session behind.
    pub async fn answer_detached(
        self: &Arc<Self>,
        id: String,
        credential: serde_json::Value,
        from: AnsweredBy,
        who: Peer,
        now: SystemTime,
    ) -> TouchOutcome {
        let this = self.clone();
        tokio::spawn(async move { this.answer(&id, credential, from, &who, now).await })
            .await
            .unwrap_or_else(|e| {
                TouchOutcome::refused(Code::Internal, format!("the approval task failed: {e}"))
            })
    }

    /// A refused answer: wait the growing delay, then reply.
    async fn refused(&self, e: &ApprovalError) -> TouchOutcome {
        tokio::time::sleep(self.approver.failure_delay()).await;
        e.outcome()
    }

    async fn finish_registration(
        &self,
        claimed: Claimed<State>,
        cred: &RegisterPublicKeyCredential,
        prf: bool,
        who: &Peer,
        now: SystemTime,
    ) -> TouchOutcome {
        let name = match &claimed.kind {
            Kind::Register { name } => name.clone(),
            Kind::Approve(purpose) => purpose.wire(),
        };
        let result = self
            .approver
            .finish_registration_claimed(claimed, cred, prf, now);
        match result {
            Ok(Registered::Seal(id, options)) => {
                tracing::info!(key = %name, "registration verified; the seal touch follows");
                TouchOutcome::Challenge(Box::new(Challenge {
                    ceremony_id: id.to_string(),
                    origin: self.origin.clone(),
                    role: Some(Purpose::KeySeal(name.clone()).wire()),
                    purpose: Some(format!(
                        "once more with the new key {name}, to seal your sources to it"
                    )),
                    session_secs: None,
                    target: None,
                    approve_url: format!("{}/approve/{id}", self.origin),
                    options,
                    step: ChallengeStep::SealNewKey,
                }))
            }
            Ok(Registered::Added(k)) => self.key_added(&name, Ok(k), who, now).await,
            Err(e) => self.key_added(&name, Err(e), who, now).await,
        }
    }

    /// The end of `key add`: audited, and the new key's info or the refusal.
    async fn key_added(
        &self,
        name: &str,
        result: Result<KeyInfo, ApprovalError>,
        who: &Peer,
        now: SystemTime,
    ) -> TouchOutcome {
        let refused = result.as_ref().err().map(ApprovalError::code);
        self.audit
            .record(now, Event::action("key_add", who, refused).subject(name));
        match result {
            Ok(k) => {
                tracing::info!(key = %k.name, sealed = k.sealed, "security key registered");
                TouchOutcome::KeyAdded(Box::new(k))
            }
            Err(e) => {
                tracing::warn!(code = e.code(), "key registration refused");
                self.refused(&e).await
            }
        }
    }

    /// A touch answered an approval: for a key-add pseudo-role, the registration challenge
    /// for the new key follows; for a role, the session opens.
    async fn finish_approval(
        &self,
        mut claimed: Claimed<State>,
        cred: &PublicKeyCredential,
        prf: PrfAnswer,
        who: &Peer,
        now: SystemTime,
    ) -> TouchOutcome {
        let Kind::Approve(purpose) = claimed.kind.clone() else {
            return TouchOutcome::refused(
                Code::BadRequest,
                "the answer does not match the ceremony",
            );
        };
        let role = purpose.wire();
        if let Purpose::KeySeal(name) = &purpose {
            let result = self
                .approver
                .finish_seal_claimed(claimed, cred, prf.output, now)
                .map(|(info, created)| {
                    if let Some(secret) = created {
                        self.adopt_settings(&secret, who, now);
                    }
                    info
                });
            return self.key_added(name, result, who, now).await;
        }
        let (leader, mfa_code, accept) = (
            claimed.leader,
            claimed.mfa_code.take(),
            claimed.accept_change,
        );
        let approval = match self
            .approver
            .finish_approval_claimed(claimed, &purpose, cred, prf, now)
        {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(role = %role, code = e.code(), "approval refused");
                self.audit
                    .record(now, Event::action("touch", who, Some(e.code())).role(&role));
                if let Some(replaced) = self.replaced_vault(&e) {
                    tokio::time::sleep(self.approver.failure_delay()).await;
                    return replaced;
                }
                return self.refused(&e).await;
            }
        };
        self.audit.record(
            now,
            Event::action("touch", who, None)
                .role(&role)
                .subject(approval.key_name()),
        );
        // What this touch relies on must be what a touch confirmed: checked after the unwrap
        // (only the vault's key can vouch) and before anything leaves the agent.
        if let Err(reply) = self.check_trusted(&approval, accept, who, now) {
            return *reply;
        }
        match &purpose {
            Purpose::MoveToPin => {
                if approval.vault_secret().is_some() && leader != 0 {
                    crate::util::LockExt::locked(&self.touched).insert(leader, now);
                }
                self.audit.record(
                    now,
                    Event::action("key_pin", who, None).subject(approval.key_name()),
                );
                TouchOutcome::Done
            }
            Purpose::Confirm => {
                if approval.vault_secret().is_some() && leader != 0 {
                    crate::util::LockExt::locked(&self.touched).insert(leader, now);
                }
                *crate::util::LockExt::locked(&self.last_confirm) = Some(now);
                TouchOutcome::Done
            }
            Purpose::Reload => {
                // `check_trusted` verified and recorded this candidate's settings.
                let Some(candidate) = crate::util::LockExt::locked(&self.reload).take() else {
                    return TouchOutcome::refused(
                        Code::ApprovalFailed,
                        "the reload this touch was for is gone: run `credctl reload` again",
                    );
                };
                candidate.apply();
                if approval.vault_secret().is_some() && leader != 0 {
                    crate::util::LockExt::locked(&self.touched).insert(leader, now);
                }
                self.audit.record(
                    now,
                    Event::action("settings_reloaded", who, None).subject(approval.key_name()),
                );
                TouchOutcome::Done
            }
            Purpose::KeyAdd(name) => {
                tracing::info!(
                    new_key = %name,
                    by = approval.key_name(),
                    "adding a key was authorized"
                );
                self.registration_challenge(name, leader, Some(approval), now)
            }
            Purpose::KeyRemove { name, force } => {
                let result = self.approver.remove_key(name, *force, approval);
                let refused = result.as_ref().err().map(ApprovalError::code);
                self.audit
                    .record(now, Event::action("key_remove", who, refused).subject(name));
                match result {
                    Ok(()) => TouchOutcome::Done,
                    Err(e) => e.outcome(),
                }
            }
            // Answered above: the seal step never reaches here.
            Purpose::KeySeal(_) => TouchOutcome::refused(
                Code::Internal,
                "a seal touch reached the approval path: this is a bug",
            ),
            Purpose::AllowProgram {
                role,
                exe,
                process,
                shown,
            } => {
                let result = self.opener.allow_program(role, exe.clone(), *process);
                let refused = result.as_ref().err().map(|r| r.code.as_str());
                self.audit.record(
                    now,
                    Event::action("program_allow", who, refused)
                        .role(role)
                        .subject(shown),
                );
                match result {
                    Ok(()) => {
                        self.pending.resolve(role);
                        TouchOutcome::Done
                    }
                    Err(r) => TouchOutcome::Refused(r),
                }
            }
            Purpose::Role(role) => {
                tracing::info!(
                    role = %role,
                    key = approval.key_name(),
                    "touch verified; opening the session"
                );
                self.open_session(approval, mfa_code, who, now).await
            }
        }
    }

    /// The touch that created the vault confirms the settings the agent runs with (trust on
    /// first use), and says so.
    fn adopt_settings(&self, secret: &crate::vault::VaultSecret, who: &Peer, now: SystemTime) {
        let refused = match self.trusted.adopt(secret) {
            Ok(()) => None,
            Err(e) => {
                tracing::warn!(error = %e, "the first settings record was not written; the next touch will ask to confirm them");
                Some("write_failed")
            }
        };
        self.audit.record(
            now,
            Event::action("settings_adopted", who, refused).subject("the vault's first touch"),
        );
    }

    /// A key that holds no copy of the vault, or cannot unwrap it, while `vault.json` names
    /// another vault than the one `trusted.json` says your touches confirmed: say that the file
    /// was replaced, rather than blame the key.
    fn replaced_vault(&self, e: &ApprovalError) -> Option<TouchOutcome> {
        if !matches!(
            e,
            ApprovalError::KeyNotSealed { .. } | ApprovalError::VaultUnwrap { .. }
        ) {
            return None;
        }
        let confirmed = self.trusted.recorded_vault()?;
        let now = self.approver.vault().fingerprint()?;
        (confirmed != now).then(|| {
            TouchOutcome::refused(
                e.refusal_code(),
                format!(
                    "vault.json was replaced: your touches confirmed vault {confirmed}, and \
                     vault.json now holds vault {now}, which your key does not open. Nothing \
                     was opened. Restore vault.json from a backup and restart the agent; do not \
                     add sources until `credctl status` shows vault {confirmed} again"
                ),
            )
        })
    }

    /// Checks the settings (and a role's target) against what touches confirmed before
    /// (`crate::trust`); the refusal, audited, is the reply. An unsealed setup (a touch that
    /// unwrapped nothing) has no key to check with: its approvals are policy only, as `status`
    /// says.
    fn check_trusted(
        &self,
        approval: &Approval,
        accept: bool,
        who: &Peer,
        now: SystemTime,
    ) -> Result<(), Box<TouchOutcome>> {
        let role = approval.role();
        let Some(secret) = approval.vault_secret() else {
            if !self.approver.vault().exists() {
                // No vault at all (no key with hmac-secret yet): policy-only, as `status` says.
                return Ok(());
            }
            // A vault exists, and this touch unwrapped nothing: no key can vouch for the
            // settings, so nothing that relies on them may open (`sealing = "allow-unsealed"`
            // written behind the agent's back must not switch the check off).
            self.audit.record(
                now,
                Event::action("change_refused", who, Some("not_sealed"))
                    .role(role)
                    .subject("a touch that unwraps no vault while one exists"),
            );
            return Err(Box::new(TouchOutcome::refused(
                Code::Refused,
                format!(
                    "key {} holds no copy of your vault, so its touch cannot confirm the \
                     agent's settings; nothing was opened or sent. Touch with a key that \
                     holds one (`credctl key list` shows which), or if vault.json or \
                     config.toml changed behind the agent's back, put them back",
                    approval.key_name()
                ),
            )));
        };
        let target = match (approval.purpose(), approval.target()) {
            (Purpose::Role(role), Some(target)) => Some((role.as_str(), target)),
            _ => None,
        };
        // A reload's touch vouches for the settings it would put in force, not those in force.
        let reload = match approval.purpose() {
            Purpose::Reload => crate::util::LockExt::locked(&self.reload).clone(),
            _ => None,
        };
        match self.trusted.verify_settings(
            secret,
            reload.as_ref().map(|r| r.settings()),
            target,
            accept,
        ) {
            Ok(Verdict::Unchanged) => Ok(()),
            Ok(Verdict::Accepted(changes)) => {
                let all = join_changes(&changes);
                tracing::warn!(role, changes = %all, "changes confirmed by a touch");
                // One line for all: the audit merges identical events of one batch.
                self.audit.record(
                    now,
                    Event::action("change_accepted", who, None)
                        .role(role)
                        .subject(&all),
                );
                Ok(())
            }
            Err(e) => {
                self.audit.record(
                    now,
                    Event::action("change_refused", who, Some("not_confirmed"))
                        .role(role)
                        .subject(&join_changes(e.changes())),
                );
                tracing::warn!(role, error = %e, "touch refused: unconfirmed changes");
                Err(Box::new(TouchOutcome::refused(
                    Code::Refused,
                    format!(
                        "{e}\nnothing was opened or sent. If you made these changes, confirm \
                         them with a touch: `{}`. If you did not, someone else edited your \
                         files: put back what was there (config.toml, ~/.aws/config) and \
                         restart the agent",
                        confirm_command(approval.purpose())
                    ),
                )))
            }
        }
    }

    /// `credctl confirm`: a touch that unwraps the vault and checks (or, with
    /// `accept_change`, confirms) the settings, opening nothing.
    /// The settings changed since the last confirming touch, when `accept_change` lets this
    /// touch vouch for them (or there are none); else the refusal that shows them.
    fn settings_changes_accepted(
        &self,
        accept_change: bool,
    ) -> Result<Vec<crate::trust::Change>, Box<TouchOutcome>> {
        let changes = self.preview_changes(None);
        if !changes.is_empty() && !accept_change {
            return Err(Box::new(TouchOutcome::refused(
                Code::Refused,
                changes_before_touch(&changes, None),
            )));
        }
        Ok(changes)
    }

    /// `credctl key pin`: a touch of each key whose copy of the vault opens with a touch
    /// alone, without the PIN, then with it; the copy moves to the PIN. Settings changed since
    /// the last confirmation are shown first and need `accept_change`, as for `confirm`.
    pub async fn key_pin_start(
        &self,
        accept_change: bool,
        who: &Requester,
        now: SystemTime,
    ) -> TouchOutcome {
        if let Err(refused) = self.settings_changes_accepted(accept_change) {
            return *refused;
        }
        let fingerprint = self
            .approver
            .vault()
            .fingerprint()
            .unwrap_or_else(|| "(none)".into());
        match self
            .take_turn(&Purpose::MoveToPin, who, None, None, accept_change, now)
            .await
        {
            Ok(Begin::Lead(id, options)) => self.pseudo_challenge(
                id,
                &Purpose::MoveToPin,
                format!(
                    "to move your keys' copies of vault {fingerprint} to their PIN (a touch \
                     without the PIN, then one with it)"
                ),
                options,
            ),
            Ok(Begin::Follow(rx)) => ceremony::wait(rx).await,
            Err(e) => e.outcome(),
        }
    }

    pub async fn confirm_start(
        &self,
        accept_change: bool,
        who: &Requester,
        now: SystemTime,
    ) -> TouchOutcome {
        let changes = match self.settings_changes_accepted(accept_change) {
            Ok(changes) => changes,
            Err(refused) => return *refused,
        };
        let purpose = if changes.is_empty() {
            "to confirm the agent's settings".to_owned()
        } else {
            format!(
                "to confirm these changes:{}",
                changes
                    .iter()
                    .map(|c| format!("\n  {c}"))
                    .collect::<String>()
            )
        };
        match self
            .take_turn(&Purpose::Confirm, who, None, None, accept_change, now)
            .await
        {
            Ok(Begin::Lead(id, options)) => {
                self.pseudo_challenge(id, &Purpose::Confirm, purpose, options)
            }
            Ok(Begin::Follow(rx)) => ceremony::wait(rx).await,
            Err(e) => e.outcome(),
        }
    }

    /// `credctl allow`: the touch that lets a process (or a program) use an open session the
    /// role's program rules would refuse it. `shown` says which, in words.
    pub async fn allow_program_start(
        &self,
        purpose: Purpose,
        who: &Requester,
        now: SystemTime,
    ) -> TouchOutcome {
        let shown = purpose.describe();
        match self.take_turn(&purpose, who, None, None, false, now).await {
            Ok(Begin::Lead(id, options)) => self.pseudo_challenge(id, &purpose, shown, options),
            Ok(Begin::Follow(rx)) => ceremony::wait(rx).await,
            Err(e) => e.outcome(),
        }
    }

    async fn open_session(
        &self,
        approval: Approval,
        mfa_code: Option<Secret>,
        who: &Peer,
        now: SystemTime,
    ) -> TouchOutcome {
        let role = approval.role().to_owned();
        let key = approval.key_name().to_owned();
        let reply = self.opener.open_approved(approval, mfa_code, now).await;
        let refused = match &reply {
            Ok(_) => {
                self.pending.resolve(&role);
                None
            }
            Err(r) => Some(r.code.as_str()),
        };
        self.audit.record(
            now,
            Event::action("session_open", who, refused)
                .role(&role)
                .subject(&key),
        );
        match reply {
            Ok(opened) => TouchOutcome::Opened(opened),
            Err(r) => TouchOutcome::Refused(r),
        }
    }
}

/// Changes as one line, for the audit.
pub fn join_changes(changes: &[Change]) -> String {
    changes
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// The command that confirms changes for a touch for `purpose`.
fn confirm_command(purpose: &Purpose) -> String {
    match purpose {
        Purpose::Role(role) => format!("credctl use {role} --accept-change"),
        _ => "credctl confirm --accept-change".to_owned(),
    }
}

/// The refusal before a touch: what changed, as the files say, and how to confirm it.
pub fn changes_before_touch(changes: &[Change], role: Option<&str>) -> String {
    let purpose = role.map_or(Purpose::Confirm, Purpose::from);
    let mut out =
        String::from("what a touch would rely on changed since a touch last confirmed it:");
    for c in changes {
        out.push_str("\n  ");
        out.push_str(&c.to_string());
    }
    out.push_str(&format!(
        "\nif you made these changes, run `{}` and touch your key; if you did not, someone else \
         edited your files: put back what was there (config.toml, ~/.aws/config) and restart the \
         agent",
        confirm_command(&purpose)
    ));
    out
}

//! Approval: where the touch is verified. The agent is the WebAuthn relying party (`rp`); it
//! keeps the registered keys (`keys`) under a policy (`policy`), issues single-use role-bound
//! challenges, runs every ceremony through one table with coalescing (`ceremony`, `flow`), records
//! pending approvals (`pending`), and hands out `Approval`, the only proof that a role session
//! may open.
//!
//! `Approver`'s API is synchronous and takes the time as a parameter; `Approvals` (`flow`) is
//! the async layer that waits for touches and opens sessions. State sits behind one
//! `std::sync::Mutex`, held only for map and key-store updates (never across I/O with a peer).

mod ceremony;
mod error;
mod flow;
mod keys;
mod outcome;
pub mod pending;
mod policy;
mod rp;
mod seal;
#[cfg(test)]
mod seal_tests;
#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use webauthn_rs::prelude::{
    CreationChallengeResponse, PublicKeyCredential, RegisterPublicKeyCredential,
    RequestChallengeResponse,
};

pub use ceremony::{
    page_key, wait, Begin, CeremonyId, Kind, Lead, PageLoad, Purpose, View, CEREMONY_TTL,
    MAX_CEREMONIES, MAX_FAILURE_DELAY, OUTCOME_WAIT,
};
pub use error::ApprovalError;
pub use flow::{
    changes_before_touch, join_changes, AnsweredBy, Approvals, InProgress, Reconfiguration,
    Requester, SessionOpener,
};
pub use keys::{KeyInfo, KEYS_FILE};
pub use outcome::{Challenge, ChallengeStep, Opened, TouchOutcome};
pub use pending::{Announcement, PendingApprovals, PendingRole, ProgramAsk};
pub use policy::{
    known_software, ApprovalPolicy, AuthenticatorKind, Sealing, UserVerification,
    KNOWN_SOFTWARE_AAGUIDS,
};
pub use rp::{RP_ID, RP_NAME};
pub use seal::{prf_enabled, prf_output, PrfAnswer, PRF_WITHOUT_UV};

use crate::util::unix_secs;
use crate::util::LockExt;
use ceremony::{Ceremonies, Claimed, FailureBackoff};
use keys::{KeyRecord, KeyRegistry};
use rp::{AuthState, RegState, RelyingParty};

use crate::vault::{VaultKeeper, VaultSecret, KEY_LEN};

/// Proof that a verified touch approved `role`. Only `Approver::finish_approval` makes one.
#[derive(Debug)]
#[must_use]
pub struct Approval {
    /// What the touch was for.
    purpose: Purpose,
    /// Its wire name (the role's name for a role), for [`Approval::role`].
    role: String,
    key_name: String,
    approved_at: SystemTime,
    /// What the touch was shown to open (source and role ARNs), when known.
    target: Option<String>,
    /// The vault's private half, unwrapped by this touch; taken by whoever opens the sources
    /// and dropped right after.
    vault: Option<VaultSecret>,
}

impl Approval {
    /// The role this approval opens (for another purpose, its wire name, which names no role).
    pub fn role(&self) -> &str {
        &self.role
    }

    /// What the touch was for.
    pub fn purpose(&self) -> &Purpose {
        &self.purpose
    }

    /// What the touch was shown to open (source and role ARNs), when known: the session must
    /// open exactly this.
    pub fn target(&self) -> Option<&str> {
        self.target.as_deref()
    }

    /// The registered key that was touched.
    pub fn key_name(&self) -> &str {
        &self.key_name
    }

    /// When the touch was verified (the `now` given to `finish_approval`).
    pub fn approved_at(&self) -> SystemTime {
        self.approved_at
    }

    /// The vault's private half this touch unwrapped, lent (to check `trusted.json` under it).
    pub fn vault_secret(&self) -> Option<&VaultSecret> {
        self.vault.as_ref()
    }

    /// The vault's private half this touch unwrapped (none: an unsealed setup's policy-only
    /// approval). Take it, open what is needed, drop it.
    pub fn take_vault(&mut self) -> Option<VaultSecret> {
        self.vault.take()
    }

    /// An approval for tests of code that consumes approvals, approved now.
    #[cfg(any(test, feature = "test-approval"))]
    pub fn for_tests(role: impl Into<String>) -> Self {
        // Reading the clock is fine here: this constructor exists only for tests.
        Self::for_tests_at(role, SystemTime::now())
    }

    /// An approval for tests, approved at `approved_at`.
    #[cfg(any(test, feature = "test-approval"))]
    pub fn for_tests_at(role: impl Into<String>, approved_at: SystemTime) -> Self {
        let role = role.into();
        Self {
            purpose: Purpose::Role(role.clone()),
            role,
            key_name: "test-key".into(),
            approved_at,
            target: None,
            vault: None,
        }
    }
}

/// The WebAuthn state of a ceremony in progress.
enum State {
    /// `authorized`: a touch of a registered key allowed this registration. Without it, it
    /// may only become the first key.
    Registration {
        state: RegState,
        authorized: bool,
        /// The vault the authorizing touch unwrapped, to be wrapped for the new key.
        vault: Option<VaultSecret>,
    },
    Approval {
        state: AuthState,
    },
    /// The new key's own touch, which gives its PRF output (see `seal`).
    Seal {
        state: AuthState,
        record: Box<KeyRecord>,
        point: [u8; KEY_LEN],
        authorized: bool,
        vault: Option<VaultSecret>,
    },
}

/// What a verified registration leads to.
pub enum Registered {
    /// The key is stored (a setup that allows unsealed keys, for a key without PRF).
    Added(KeyInfo),
    /// The new key must be touched once more to seal the vault to it: this ceremony.
    Seal(CeremonyId, serde_json::Value),
}

/// Mutable state, behind the approver's mutex.
struct Inner {
    /// Registered keys, written through to keys.json.
    store: KeyRegistry,
    /// Outstanding registrations and approvals.
    ceremonies: Ceremonies<State>,
    /// Consecutive failed approvals, for `failure_delay`.
    backoff: FailureBackoff,
}

/// An approval policy checked and loaded, ready for [`Approver::set_policy`].
pub struct PreparedPolicy {
    rp: Arc<RelyingParty>,
    sealing: Sealing,
}

/// The agent's WebAuthn relying party and key registry. `Send + Sync`; share it in an `Arc`.
pub struct Approver {
    /// webauthn-rs and the policy-specific flows; replaced by `credctl reload` after a touch
    /// confirmed the new policy.
    rp: std::sync::RwLock<Arc<RelyingParty>>,
    /// This agent's HTTP port: the relying party's origin, the same under every policy.
    port: u16,
    inner: Mutex<Inner>,
    /// The vault (`vault.json`): wrapped for each sealed key.
    vault: Arc<VaultKeeper>,
    /// Whether every touch must unwrap the vault.
    sealing: std::sync::RwLock<Sealing>,
    /// The vault `trusted.json` names while `vault.json` is missing: a vault existed, so no
    /// touch may make a new one (it would strand every sealed source), and the refusal says so.
    lost_vault: Option<String>,
}

impl Approver {
    /// Loads the policy's CA files and `<state_dir>/keys.json` (missing = no keys), for the
    /// agent's own origin `http://localhost:PORT`. `now` is used to warn about attestation CAs
    /// that are not currently valid.
    /// The approver of the keys registered in `state_dir`, touches unwrapping `vault` (loaded
    /// from the same directory by whoever wires the agent, and shared with the sources).
    pub fn new(
        policy: ApprovalPolicy,
        state_dir: &Path,
        vault: Arc<VaultKeeper>,
        port: u16,
        now: SystemTime,
    ) -> Result<Self, ApprovalError> {
        let ca_list = policy::load_attestation_cas(&policy.attestation_ca, now)?;
        let rp = RelyingParty::new(&policy, ca_list, port)?;
        let store = KeyRegistry::load(state_dir)?;
        let lost_vault = if vault.exists() {
            None
        } else {
            crate::trust::recorded_vault(state_dir)
        };
        Ok(Self {
            rp: std::sync::RwLock::new(Arc::new(rp)),
            port,
            inner: Mutex::new(Inner {
                store,
                ceremonies: Ceremonies::new(),
                backoff: FailureBackoff::default(),
            }),
            vault,
            sealing: std::sync::RwLock::new(policy.sealing),
            lost_vault,
        })
    }

    /// `policy` ready to put in force, its CA files loaded: everything that can fail is done
    /// here, before the touch that confirms it.
    pub fn prepare_policy(
        &self,
        policy: &ApprovalPolicy,
        now: SystemTime,
    ) -> Result<PreparedPolicy, ApprovalError> {
        let ca_list = policy::load_attestation_cas(&policy.attestation_ca, now)?;
        Ok(PreparedPolicy {
            rp: Arc::new(RelyingParty::new(policy, ca_list, self.port)?),
            sealing: policy.sealing,
        })
    }

    /// Why no registered key would be eligible under `prepared`, key by key (`None`: one is,
    /// or none is registered yet): such a policy would refuse every touch, the one that could
    /// undo it included.
    pub fn locks_out(&self, prepared: &PreparedPolicy) -> Option<String> {
        let inner = self.lock();
        let records = &inner.store.records;
        let refused: Vec<String> = records
            .iter()
            .filter_map(|r| prepared.rp.refusal(r))
            .collect();
        (!records.is_empty() && refused.len() == records.len()).then(|| refused.join("; "))
    }

    /// Puts a prepared policy in force: ceremonies started from now on follow it.
    pub fn set_policy(&self, prepared: &PreparedPolicy) {
        *crate::util::RwLockExt::write_locked(&self.rp) = prepared.rp.clone();
        *crate::util::RwLockExt::write_locked(&self.sealing) = prepared.sealing;
    }

    fn rp(&self) -> Arc<RelyingParty> {
        crate::util::RwLockExt::read_locked(&self.rp).clone()
    }

    /// Whether `trusted.json` names a vault that `vault.json` no longer holds (deleted or
    /// lost): no fresh install, whatever else is missing.
    pub fn vault_lost(&self) -> bool {
        self.lost_vault.is_some()
    }

    /// The vault, shared with the sources (which seal to its public half).
    pub fn vault(&self) -> &Arc<VaultKeeper> {
        &self.vault
    }

    /// Whether touches must unwrap the vault.
    pub fn sealing(&self) -> Sealing {
        *crate::util::RwLockExt::read_locked(&self.sealing)
    }

    /// Whether touches must verify the user.
    pub fn user_verification(&self) -> UserVerification {
        self.rp().user_verification()
    }

    /// Whether key `name` holds a copy of the vault.
    fn sealed(&self, record: &KeyRecord) -> bool {
        self.vault
            .point_for(record.credential.cred_id().as_slice())
            .is_some()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // No code under this lock panics; if something ever did, the maps are still
        // consistent (every update is a single insert/remove), so keep serving.
        self.inner.locked()
    }

    /// Starts registering the first key, called `name`. Send the challenge to the
    /// authenticator. With keys registered already, use
    /// [`Approver::start_registration_authorized`].
    pub fn start_registration(
        &self,
        name: &str,
        now: SystemTime,
    ) -> Result<(CeremonyId, CreationChallengeResponse), ApprovalError> {
        self.start_registration_led(name, Lead::default(), None, now)
    }

    /// Starts registering key `name`, allowed by `authorization`: a verified touch of a
    /// registered key for [`Purpose::KeyAdd`]`(name)`.
    pub fn start_registration_authorized(
        &self,
        name: &str,
        authorization: Approval,
        lead: Lead,
        now: SystemTime,
    ) -> Result<(CeremonyId, CreationChallengeResponse), ApprovalError> {
        self.start_registration_led(name, lead, Some(authorization), now)
    }

    /// A registration ceremony led by `lead`: the first key, or one `authorization` allows.
    pub(crate) fn start_registration_led(
        &self,
        name: &str,
        lead: Lead,
        authorization: Option<Approval>,
        now: SystemTime,
    ) -> Result<(CeremonyId, CreationChallengeResponse), ApprovalError> {
        validate("key name", name, 64)?;
        let mut inner = self.lock();
        if inner.store.find(name).is_some() {
            return Err(ApprovalError::KeyExists { name: name.into() });
        }
        inner.ceremonies.check_room(now)?;
        let (authorized, vault) = match authorization {
            Some(mut a) if a.purpose == Purpose::KeyAdd(name.to_owned()) => (true, a.vault.take()),
            None if inner.store.records.is_empty() => (false, None),
            _ => {
                return Err(ApprovalError::NotAuthorized {
                    what: format!("adding the key {name}"),
                })
            }
        };
        let exclude = inner
            .store
            .records
            .iter()
            .map(|r| r.credential.cred_id().clone())
            .collect();
        let (challenge, state) = self.rp().start_registration(name, exclude)?;
        let kind = Kind::Register { name: name.into() };
        let mut options = options_json(&challenge)?;
        seal::request_prf_at_creation(&mut options);
        let state = State::Registration {
            state,
            authorized,
            vault,
        };
        let id = inner.ceremonies.insert(now, kind, state, options, lead)?;
        Ok((id, challenge))
    }

    /// Verifies the authenticator's answer, stores the new key and ends the ceremony.
    pub fn finish_registration(
        &self,
        id: CeremonyId,
        credential: &RegisterPublicKeyCredential,
        now: SystemTime,
    ) -> Result<KeyInfo, ApprovalError> {
        let result = self
            .claim(id, now)
            .and_then(|claimed| self.finish_registration_claimed(claimed, credential, false, now))
            .and_then(|step| match step {
                Registered::Added(info) => Ok(info),
                Registered::Seal(..) => Err(ApprovalError::Internal {
                    reason: "a key with PRF needs its sealing touch".into(),
                }),
            });
        self.conclude_with(id, &result);
        result
    }

    /// Ends ceremony `id` with `result`, for callers that answer and conclude in one step.
    fn conclude_with<T>(&self, id: CeremonyId, result: &Result<T, ApprovalError>) {
        let outcome = match result {
            Ok(_) => TouchOutcome::Done,
            Err(e) => e.outcome(),
        };
        self.conclude(id, outcome);
    }

    /// Takes ceremony `id` for its one answer.
    fn claim(&self, id: CeremonyId, now: SystemTime) -> Result<Claimed<State>, ApprovalError> {
        self.lock().ceremonies.take(id, now)
    }

    /// Verifies a registration answer for a claimed ceremony and stores the new key.
    fn finish_registration_claimed(
        &self,
        claimed: Claimed<State>,
        credential: &RegisterPublicKeyCredential,
        prf_enabled: bool,
        now: SystemTime,
    ) -> Result<Registered, ApprovalError> {
        let leader = claimed.leader;
        let (
            Kind::Register { name },
            State::Registration {
                state,
                authorized,
                vault,
            },
        ) = (claimed.kind, claimed.state)
        else {
            return Err(ApprovalError::UnknownCeremony);
        };
        let registered = self.rp().finish_registration(credential, &state)?;
        let kind = policy::classify(registered.aaguid, registered.attested_by_ca);
        if kind == AuthenticatorKind::Software && !self.rp().allows_software() {
            let what = known_software(registered.aaguid).unwrap_or("software");
            tracing::warn!(key = %name, authenticator = what, "refused a software authenticator");
            return Err(ApprovalError::SoftwareAuthenticatorRefused { what: what.into() });
        }
        let record = KeyRecord {
            name: name.clone(),
            created: unix_secs(now),
            last_used: None,
            counter: registered.counter,
            kind,
            aaguid: registered.aaguid,
            attestation_format: registered.attestation_format,
            user_verified: registered.user_verified,
            credential: registered.key,
        };
        if prf_enabled {
            let lead = Lead {
                conn: leader,
                requester: "credctl key add".into(),
                ..Lead::default()
            };
            let mut inner = self.lock();
            inner.ceremonies.check_room(now)?;
            let (id, options) =
                self.start_seal(&mut inner, record, authorized, vault, lead, now)?;
            return Ok(Registered::Seal(id, options));
        }
        if self.sealing() == Sealing::Required {
            return Err(ApprovalError::NoPrf { key: name });
        }
        self.commit_key(record, authorized).map(Registered::Added)
    }

    /// Stores a verified new key: refused if, meanwhile, its name or credential was taken, or
    /// (for an unauthorized first key) another key was registered.
    fn commit_key(&self, record: KeyRecord, authorized: bool) -> Result<KeyInfo, ApprovalError> {
        let name = record.name.clone();
        let mut inner = self.lock();
        // Checked again at the moment of commit: a key registered meanwhile (say, a first key
        // that raced this one) turns an unauthorized registration into a refused one.
        if !authorized && !inner.store.records.is_empty() {
            return Err(ApprovalError::NotAuthorized {
                what: format!("adding the key {name}"),
            });
        }
        if inner.store.find(&name).is_some() {
            return Err(ApprovalError::KeyExists { name });
        }
        if let Some(existing) = inner.store.find_by_credential(record.credential.cred_id()) {
            return Err(ApprovalError::CredentialExists {
                name: existing.name.clone(),
            });
        }
        let mut info = record.info();
        info.sealed = self.sealed(&record);
        inner.store.records.push(record);
        if let Err(err) = inner.store.save() {
            // Keep memory equal to disk: a key that was not persisted is not registered.
            inner.store.records.pop();
            return Err(err);
        }
        tracing::info!(key = %name, kind = ?info.kind, "registered a security key");
        Ok(info)
    }

    /// Starts an approval for `role`: the challenge is valid for that role only, once, for 60 s.
    pub fn start_approval(
        &self,
        purpose: impl Into<Purpose>,
        now: SystemTime,
    ) -> Result<(CeremonyId, RequestChallengeResponse), ApprovalError> {
        let purpose = purpose.into();
        validate("role name", &purpose.wire(), 256)?;
        let mut inner = self.lock();
        self.start_approval_locked(&mut inner, &purpose, Lead::default(), now)
    }

    /// Joins the approval under way for `role`, or starts one led by `lead`. Atomic: two
    /// callers never both lead. While an approval for another role is under way, refuses with
    /// [`ApprovalError::Busy`]: one touch at a time.
    pub fn open_or_join(
        &self,
        purpose: impl Into<Purpose>,
        lead: Lead,
        now: SystemTime,
    ) -> Result<Begin, ApprovalError> {
        let purpose = &purpose.into();
        validate("role name", &purpose.wire(), 256)?;
        let mut inner = self.lock();
        if let Some(rx) = inner.ceremonies.follow(purpose, now) {
            // A key change belongs to the connection that asked: nobody else may follow it
            // (and receive, say, the registration challenge its touch releases).
            if let Some(what) = purpose.key_change() {
                return Err(ApprovalError::KeyChangePending { what });
            }
            if *purpose == Purpose::Reload {
                // Each reload shows its own changes and takes its own touch: a second one
                // waits for its turn instead of taking the first one's outcome as its own.
                drop(rx);
                return Err(ApprovalError::Busy {
                    role: purpose.describe(),
                });
            }
            return Ok(Begin::Follow(rx));
        }
        if let Some(other) = inner.ceremonies.approval_under_way(now) {
            return Err(ApprovalError::Busy {
                role: other.describe(),
            });
        }
        let (id, _) = self.start_approval_locked(&mut inner, purpose, lead, now)?;
        let options = inner
            .ceremonies
            .view(id)
            .map(|v| v.options)
            .ok_or(ApprovalError::UnknownCeremony)?;
        Ok(Begin::Lead(id, options))
    }

    fn start_approval_locked(
        &self,
        inner: &mut Inner,
        purpose: &Purpose,
        lead: Lead,
        now: SystemTime,
    ) -> Result<(CeremonyId, RequestChallengeResponse), ApprovalError> {
        if inner.store.records.is_empty() {
            return Err(ApprovalError::NoKeys);
        }
        inner.ceremonies.check_room(now)?;
        let mut keys = Vec::new();
        let mut eligible = Vec::new();
        let mut refused = Vec::new();
        for record in &inner.store.records {
            match self.rp().refusal(record) {
                None => {
                    keys.push(record.credential.clone());
                    eligible.push(record);
                }
                Some(reason) => refused.push(reason),
            }
        }
        if keys.is_empty() {
            return Err(ApprovalError::NoEligibleKeys {
                refused: refused.join("; "),
            });
        }
        let evals = self.evals_for(&eligible);
        let (challenge, state) = self.rp().start_authentication(&keys)?;
        let kind = Kind::Approve(purpose.clone());
        let mut options = options_json(&challenge)?;
        seal::request_prf_eval(&mut options, &evals);
        self.adapt_to_wraps(&mut options, &eligible, *purpose == Purpose::MoveToPin);
        let state = State::Approval { state };
        let id = inner.ceremonies.insert(now, kind, state, options, lead)?;
        Ok((id, challenge))
    }

    /// Verifies a touch for ceremony `id`, which must have been started for `role`. The
    /// ceremony is consumed whatever the outcome. After a failure, wait `failure_delay()`.
    pub fn finish_approval(
        &self,
        id: CeremonyId,
        purpose: impl Into<Purpose>,
        credential: &PublicKeyCredential,
        now: SystemTime,
    ) -> Result<Approval, ApprovalError> {
        let purpose = purpose.into();
        let result = self.claim(id, now).and_then(|claimed| {
            self.verify_approval(claimed, &purpose, credential, PrfAnswer::default(), now)
        });
        self.conclude_with(id, &result);
        self.account(&purpose, result)
    }

    /// [`Approver::finish_approval`] for a ceremony already claimed by its answer.
    fn finish_approval_claimed(
        &self,
        claimed: Claimed<State>,
        purpose: &Purpose,
        credential: &PublicKeyCredential,
        prf: PrfAnswer,
        now: SystemTime,
    ) -> Result<Approval, ApprovalError> {
        let result = self.verify_approval(claimed, purpose, credential, prf, now);
        self.account(purpose, result)
    }

    /// Feeds an approval's outcome to the growing delay.
    fn account(
        &self,
        purpose: &Purpose,
        result: Result<Approval, ApprovalError>,
    ) -> Result<Approval, ApprovalError> {
        let role = purpose.wire();
        let mut inner = self.lock();
        match &result {
            Ok(approval) => {
                inner.backoff.record_success();
                tracing::info!(role = %approval.role, key = %approval.key_name, "role approved");
            }
            Err(err) if counts_as_failure(err) => {
                inner.backoff.record_failure();
                tracing::info!(role = %role, code = err.code(), "approval refused");
            }
            Err(_) => {}
        }
        result
    }

    fn verify_approval(
        &self,
        claimed: Claimed<State>,
        purpose: &Purpose,
        credential: &PublicKeyCredential,
        prf: PrfAnswer,
        now: SystemTime,
    ) -> Result<Approval, ApprovalError> {
        let target = claimed.target;
        let (Kind::Approve(expected), State::Approval { state }) = (claimed.kind, claimed.state)
        else {
            return Err(ApprovalError::UnknownCeremony);
        };
        if expected != *purpose {
            return Err(ApprovalError::RoleMismatch {
                expected: expected.wire(),
                requested: purpose.wire(),
            });
        }
        let role = expected.wire();
        let verified = self.rp().finish_authentication(credential, &state);
        let mut inner = self.lock();
        let result = match verified {
            Ok(result) => result,
            Err(err) => {
                let key = inner
                    .store
                    .find_by_credential(&credential.raw_id)
                    .map(|r| r.name.clone());
                let err = rp::assertion_error(err, credential, key);
                if let ApprovalError::CounterRegression { key } = &err {
                    tracing::warn!(key = %key, role = %role, "signature counter went backwards: possible cloned key");
                }
                return Err(err);
            }
        };
        let Some(record) = inner.store.find_by_credential_mut(result.cred_id()) else {
            return Err(ApprovalError::AssertionInvalid {
                reason: "the key was removed while the touch was pending".into(),
            });
        };
        // webauthn-rs compared the counter with the snapshot taken when this ceremony started;
        // compare with the latest stored value too, so a clone answering an older, still
        // pending ceremony is caught.
        let counter = result.counter();
        if (counter > 0 || record.counter > 0) && counter <= record.counter {
            tracing::warn!(
                key = %record.name, role = %role, stored = record.counter, presented = counter,
                "signature counter went backwards: possible cloned key"
            );
            return Err(ApprovalError::CounterRegression {
                key: record.name.clone(),
            });
        }
        let changed = record
            .credential
            .update_credential(&result)
            .unwrap_or(false);
        record.counter = counter;
        record.last_used = Some(unix_secs(now));
        let key_name = record.name.clone();
        tracing::debug!(key = %key_name, changed, "persisting counter and last use");
        // Always persist: last_used changed even when webauthn-rs saw no credential change,
        // and a counter must be on disk before the approval is used (kill -9 safety).
        inner.store.save()?;
        drop(inner);
        // The key verified; now the touch must also open the vault. A key enrolled by editing
        // keys.json has no wrap, and one whose secret does not unwrap is refused here.
        let vault = self.unseal_for(
            &key_name,
            result.cred_id().as_slice(),
            prf,
            result.user_verified(),
            expected == Purpose::MoveToPin,
        )?;
        Ok(Approval {
            purpose: expected,
            role,
            key_name,
            approved_at: now,
            target,
            vault,
        })
    }

    /// Woken whenever a ceremony ends (for callers waiting for their turn).
    pub fn ceremony_ended(&self) -> std::sync::Arc<tokio::sync::Notify> {
        self.lock().ceremonies.ended()
    }

    /// An unanswered ceremony, for the approval page.
    pub fn view(&self, id: CeremonyId) -> Option<View> {
        self.lock().ceremonies.view(id)
    }

    /// The ceremonies that timed out, nobody having touched a key, since the last call.
    pub fn take_expired(&self, now: SystemTime) -> Vec<ceremony::Expired> {
        self.lock().ceremonies.take_expired(now)
    }

    /// The ceremonies in progress: what each is for, who asked, since when.
    pub fn in_progress(&self, now: SystemTime) -> Vec<(Kind, String, SystemTime)> {
        self.lock().ceremonies.in_progress(now)
    }

    /// A load of the approval page for ceremony `id` with the page secret it presents.
    pub fn load_page(
        &self,
        id: CeremonyId,
        presented: Option<&str>,
    ) -> Result<PageLoad, ApprovalError> {
        let mut inner = self.lock();
        // A page session may begin only at a touch the attacker cannot give (a registered key
        // that unwraps the vault). A registration or seal step can be answered by any key, so
        // it must belong to the session its authorizing touch began in; without keys there is
        // nothing to protect (anyone may register the first key).
        let keys = !inner.store.records.is_empty();
        inner.ceremonies.load_page(id, presented, keys)
    }

    /// Whether a page answer for ceremony `id` comes from the page session it belongs to.
    pub fn check_page(&self, id: CeremonyId, presented: Option<&str>) -> Result<(), ApprovalError> {
        self.lock().ceremonies.check_page(id, presented)
    }

    /// The outcome channel of ceremony `id`, awaited by control connection `conn`.
    pub fn subscribe(
        &self,
        id: CeremonyId,
        conn: u64,
    ) -> Option<tokio::sync::watch::Receiver<Option<TouchOutcome>>> {
        self.lock().ceremonies.subscribe(id, conn)
    }

    /// Ends ceremony `id` with its outcome, for everyone waiting on it.
    pub fn conclude(&self, id: CeremonyId, outcome: TouchOutcome) {
        self.lock().ceremonies.finish(id, outcome);
    }

    /// The control connection `conn` went away: its unanswered ceremonies end.
    pub fn abandon_conn(&self, conn: u64) {
        self.lock().ceremonies.abandon_conn(conn);
    }

    /// Ends every ceremony (lock, shutdown).
    pub fn abandon_all(&self, why: &str) {
        self.lock().ceremonies.abandon_all(why);
    }

    /// How long the caller should wait before answering after failed approvals (0 after a
    /// success; 250 ms doubling to 8 s). The approver never sleeps itself.
    pub fn failure_delay(&self) -> Duration {
        self.lock().backoff.delay()
    }

    /// The registered keys, in registration order.
    pub fn keys(&self) -> Vec<KeyInfo> {
        self.lock()
            .store
            .records
            .iter()
            .map(|r| {
                let mut info = r.info();
                info.sealed = self.sealed(r);
                info.verified_seal = self
                    .vault
                    .wrap_user_verified(r.credential.cred_id().as_slice())
                    .unwrap_or(false);
                info
            })
            .collect()
    }

    /// Whether key `name` may be removed (it exists; the last one only with `force`): the
    /// checks that need no touch, made before asking for one.
    pub fn check_removal(&self, name: &str, force: bool) -> Result<(), ApprovalError> {
        let inner = self.lock();
        if inner.store.find(name).is_none() {
            return Err(ApprovalError::UnknownKey { name: name.into() });
        }
        if inner.store.records.len() == 1 && !force {
            return Err(ApprovalError::LastKey { name: name.into() });
        }
        Ok(())
    }

    /// Removes key `name`, allowed by `authorization`: a verified touch of a registered key for
    /// [`Purpose::KeyRemove`]` { name, force }`. Refuses to remove the last key unless `force`.
    pub fn remove_key(
        &self,
        name: &str,
        force: bool,
        authorization: Approval,
    ) -> Result<(), ApprovalError> {
        let wanted = Purpose::KeyRemove {
            name: name.to_owned(),
            force,
        };
        if authorization.purpose != wanted {
            return Err(ApprovalError::NotAuthorized {
                what: format!("removing the key {name}"),
            });
        }
        let mut inner = self.lock();
        let index = inner
            .store
            .records
            .iter()
            .position(|r| r.name == name)
            .ok_or_else(|| ApprovalError::UnknownKey { name: name.into() })?;
        if inner.store.records.len() == 1 && !force {
            return Err(ApprovalError::LastKey { name: name.into() });
        }
        let removed = inner.store.records.remove(index);
        if let Err(err) = inner.store.save() {
            inner.store.records.insert(index, removed);
            return Err(err);
        }
        drop(inner);
        // Its copy of the vault goes with it: a key removed from keys.json and put back by
        // hand unwraps nothing.
        if let Err(e) = self
            .vault
            .remove_wrap(removed.credential.cred_id().as_slice())
        {
            tracing::warn!(key = %name, error = %e, "the removed key's vault copy stays in vault.json");
        }
        tracing::info!(key = %name, by = %authorization.key_name, "removed a security key");
        Ok(())
    }
}

/// A challenge as the JSON the authenticator drivers and the page take.
fn options_json<T: serde::Serialize>(challenge: &T) -> Result<serde_json::Value, ApprovalError> {
    serde_json::to_value(challenge).map_err(|e| ApprovalError::Internal {
        reason: format!("cannot encode the challenge: {e}"),
    })
}

/// Whether `role` can name a role at all (non-empty, at most 256 printable characters): checked
/// where it is typed, before any touch.
pub fn check_role_name(role: &str) -> Result<(), ApprovalError> {
    validate("role name", role, 256)
}

impl Approver {
    /// Whether `name` can name a new key (non-empty, at most 64 printable characters, not
    /// taken): checked before the authorizing touch.
    pub fn check_new_key_name(&self, name: &str) -> Result<(), ApprovalError> {
        validate("key name", name, 64)?;
        if self.lock().store.find(name).is_some() {
            return Err(ApprovalError::KeyExists { name: name.into() });
        }
        Ok(())
    }
}

/// Failures that feed the growing delay: anything a wrong or hostile answer can cause.
fn counts_as_failure(err: &ApprovalError) -> bool {
    matches!(
        err,
        ApprovalError::UnknownCeremony
            | ApprovalError::ChallengeExpired
            | ApprovalError::RoleMismatch { .. }
            | ApprovalError::OriginRefused { .. }
            | ApprovalError::UserNotVerified
            | ApprovalError::AssertionInvalid { .. }
            | ApprovalError::CounterRegression { .. }
    )
}

/// Names must be non-empty, short and free of control characters (they end up in logs).
fn validate(what: &'static str, value: &str, max_chars: usize) -> Result<(), ApprovalError> {
    let reason = if value.trim().is_empty() {
        "it is empty"
    } else if value.chars().count() > max_chars {
        "it is too long"
    } else if value.chars().any(char::is_control) {
        "it contains control characters"
    } else {
        return Ok(());
    };
    Err(ApprovalError::InvalidName {
        what,
        reason: format!("{reason} (at most {max_chars} printable characters)"),
    })
}

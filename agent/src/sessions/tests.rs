//! Session behaviour against a fake STS with driven time.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};

use super::cache::RoleSlot;
use super::*;
use crate::approval::Approval;
use crate::profiles::{Hop, Profiles};
use crate::sources::{Backend, SourceCredentials, SourceError};
use crate::sts::{classify_code, CallerCredentials, MfaToken, StsError, StsOp};

const CONFIG: &str = "\
[profile base]
[profile dev]
role_arn = arn:aws:iam::111111111111:role/dev
source_profile = base
[profile prod]
role_arn = arn:aws:iam::222222222222:role/prod
source_profile = dev
duration_seconds = 7200
role_session_name = alice
[profile mfasrc]
mfa_serial = arn:aws:iam::111111111111:mfa/alice
[profile a]
role_arn = arn:aws:iam::111111111111:role/a
source_profile = mfasrc
[profile b]
role_arn = arn:aws:iam::111111111111:role/b
source_profile = mfasrc
[profile longmfa]
role_arn = arn:aws:iam::111111111111:role/longmfa
source_profile = mfasrc
duration_seconds = 28800
[profile orphan]
role_arn = arn:aws:iam::111111111111:role/orphan
source_profile = nosuchkeys
[profile typo]
role_arn = arn:aws:iam::111111111111:role/typo
source_profile = bsae
[profile nosuchkeys]
region = eu-west-1
[profile short]
role_arn = arn:aws:iam::111111111111:role/short
source_profile = base
duration_seconds = 900
";

const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

fn t0() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

fn at(mins: u64) -> SystemTime {
    t0() + Duration::from_secs(mins * 60)
}

#[derive(Debug, Clone)]
struct Call {
    op: &'static str,
    target: String,
    caller: String,
    duration: Duration,
    session_name: String,
}

#[derive(Default)]
struct FakeSts {
    /// STS's own clock, which sets the expiration of what it issues.
    now: Mutex<Option<SystemTime>>,
    assume_calls: AtomicU32,
    gst_calls: AtomicU32,
    calls: Mutex<Vec<Call>>,
    fail: Mutex<Option<StsError>>,
    delay: Mutex<Duration>,
    /// Calls that have begun (before their delay), to act while they are in flight.
    started: AtomicU32,
    /// MFA serials sent on AssumeRole itself (no GetSessionToken).
    mfa_on_assume: Mutex<Vec<String>>,
}

impl FakeSts {
    fn set_now(&self, t: SystemTime) {
        *self.now.lock().unwrap() = Some(t);
    }
    fn fail_with(&self, err: Option<StsError>) {
        *self.fail.lock().unwrap() = err;
    }
    fn set_delay(&self, d: Duration) {
        *self.delay.lock().unwrap() = d;
    }
    fn assumes(&self) -> u32 {
        self.assume_calls.load(Ordering::SeqCst)
    }
    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    async fn issue(
        &self,
        op: &'static str,
        target: &str,
        caller: &CallerCredentials,
        duration: Duration,
        session_name: &str,
    ) -> Result<TempCredentials, StsError> {
        self.started.fetch_add(1, Ordering::SeqCst);
        let delay = *self.delay.lock().unwrap();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let n = self.calls.lock().unwrap().len();
        self.calls.lock().unwrap().push(Call {
            op,
            target: target.to_owned(),
            caller: caller.access_key_id.clone(),
            duration,
            session_name: session_name.to_owned(),
        });
        if let Some(err) = self.fail.lock().unwrap().clone() {
            return Err(err);
        }
        let now = self.now.lock().unwrap().unwrap_or_else(t0);
        let role = target.rsplit('/').next().unwrap_or("x");
        Ok(TempCredentials {
            access_key_id: format!("ASIA{n}"),
            secret_access_key: SecretString::from(format!("secret-{n}")),
            session_token: SecretString::from(format!("token-{n}")),
            expiration: now + duration,
            account_id: Some("111111111111".into()),
            assumed_role_arn: (op == "AssumeRole")
                .then(|| format!("arn:aws:sts::111111111111:assumed-role/{role}/{session_name}")),
        })
    }
}

#[async_trait]
impl StsApi for FakeSts {
    async fn assume_role(
        &self,
        creds: &CallerCredentials,
        hop: &Hop,
        duration: Duration,
        session_name: &str,
        _region: Option<&str>,
        mfa: Option<MfaToken<'_>>,
    ) -> Result<TempCredentials, StsError> {
        self.assume_calls.fetch_add(1, Ordering::SeqCst);
        if let Some(m) = mfa {
            if m.code.expose_secret() != "123456" {
                return Err(classify_code(
                    StsOp::AssumeRole,
                    "AccessDenied",
                    "MultiFactorAuthentication failed with invalid MFA one time pass code.",
                    Some(403),
                ));
            }
            self.mfa_on_assume.lock().unwrap().push(m.serial.to_owned());
        }
        self.issue("AssumeRole", &hop.role_arn, creds, duration, session_name)
            .await
    }

    async fn get_session_token(
        &self,
        creds: &CallerCredentials,
        mfa_serial: &str,
        code: &SecretString,
        duration: Duration,
        _region: Option<&str>,
    ) -> Result<TempCredentials, StsError> {
        self.gst_calls.fetch_add(1, Ordering::SeqCst);
        if code.expose_secret() != "123456" {
            return Err(classify_code(
                StsOp::GetSessionToken,
                "AccessDenied",
                "MultiFactorAuthentication failed with invalid MFA one time pass code.",
                Some(403),
            ));
        }
        self.issue("GetSessionToken", mfa_serial, creds, duration, "")
            .await
    }
}

struct FakeSources(HashMap<String, SourceCredentials>);

#[async_trait]
impl SourceLookup for FakeSources {
    async fn source(&self, name: &str) -> Result<SourceCredentials, SourceError> {
        self.0
            .get(name)
            .cloned()
            .ok_or_else(|| SourceError::NotFound {
                backend: Backend::Keyutils,
                name: name.to_owned(),
            })
    }
}

/// Sessions over the fake STS, each refreshing exactly `refresh_before` ahead of expiry (no
/// spread), so the tests can name the minute a refresh comes.
fn setup(config: SessionConfig) -> (Sessions, Arc<FakeSts>) {
    setup_spread(SessionConfig {
        refresh_spread: Duration::ZERO,
        ..config
    })
}

fn setup_spread(config: SessionConfig) -> (Sessions, Arc<FakeSts>) {
    let sts = Arc::new(FakeSts::default());
    let mut src = HashMap::new();
    for (name, id) in [("base", "AKIDBASE"), ("mfasrc", "AKIDMFA")] {
        src.insert(
            name.to_owned(),
            SourceCredentials {
                access_key_id: id.into(),
                secret_access_key: SecretString::from(SECRET),
            },
        );
    }
    let profiles = Profiles::from_contents(Path::new("/test/config"), CONFIG.into()).unwrap();
    let sessions = Sessions::new(config, sts.clone(), Arc::new(FakeSources(src)), profiles);
    (sessions, sts)
}

fn hours(h: u64) -> SessionConfig {
    SessionConfig {
        session_ttl: Duration::from_secs(h * 3600),
        ..SessionConfig::default()
    }
}

async fn open(s: &Sessions, role: &str, now: SystemTime) -> Result<SessionInfo, SessionError> {
    s.open(role, Approval::for_tests(role), None, now).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coalesces_concurrent_fetches_into_one_call() {
    let (s, sts) = setup(hours(1));
    open(&s, "dev", t0()).await.unwrap();
    assert_eq!(sts.assumes(), 1);
    // At +50 min the first credentials have 10 min left: every caller needs a fetch.
    sts.set_now(at(50));
    sts.set_delay(Duration::from_millis(100));
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move { s.credentials("dev", at(50)).await })
        })
        .collect();
    let mut keys = Vec::new();
    for t in tasks {
        keys.push(t.await.unwrap().unwrap().access_key_id.clone());
    }
    assert_eq!(sts.assumes(), 2, "50 callers must share one AssumeRole");
    assert!(keys.iter().all(|k| k == &keys[0]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_share_one_failure() {
    let (s, sts) = setup(hours(1));
    open(&s, "dev", t0()).await.unwrap();
    sts.set_delay(Duration::from_millis(100));
    sts.fail_with(Some(classify_code(
        StsOp::AssumeRole,
        "AccessDenied",
        "no",
        Some(403),
    )));
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move { s.credentials("dev", at(50)).await })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap_err().code(), "sts_denied");
    }
    assert_eq!(sts.assumes(), 2);
}

#[tokio::test]
async fn chains_hop_by_hop() {
    let (s, sts) = setup(hours(1));
    let info = open(&s, "prod", t0()).await.unwrap();
    let calls = sts.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].target, "arn:aws:iam::111111111111:role/dev");
    assert_eq!(calls[0].caller, "AKIDBASE");
    assert_eq!(
        calls[0].duration, MIN_STS_DURATION,
        "intermediate hop asks the minimum"
    );
    assert!(calls[0].session_name.starts_with("credagent-"));
    assert_eq!(calls[1].target, "arn:aws:iam::222222222222:role/prod");
    assert_eq!(
        calls[1].caller, "ASIA0",
        "second hop signed with the first hop's credentials"
    );
    assert_eq!(
        calls[1].duration, MAX_CHAINED_DURATION,
        "7200 s capped to 1 h when chained"
    );
    assert_eq!(calls[1].session_name, "alice");
    let creds = s.get_cached("prod", at(1)).unwrap();
    assert_eq!(creds.access_key_id, "ASIA1");
    assert!(creds
        .assumed_role_arn
        .as_deref()
        .unwrap()
        .contains("assumed-role/prod/alice"));
    assert_eq!(info.credentials_expire_at, info.expires_at);
}

#[tokio::test]
async fn duration_is_capped_by_session_and_floored() {
    let (s, sts) = setup(hours(1));
    open(&s, "dev", t0()).await.unwrap();
    assert_eq!(sts.calls()[0].duration, DEFAULT_ROLE_DURATION);
    // At +45 min, 15 min of session + 15 min margin are left.
    sts.set_now(at(46));
    s.credentials("dev", at(46)).await.unwrap();
    assert_eq!(sts.calls()[1].duration, Duration::from_secs(29 * 60));

    let (s, sts) = setup(hours(12));
    open(&s, "dev", t0()).await.unwrap();
    assert_eq!(
        sts.calls()[0].duration,
        DEFAULT_ROLE_DURATION,
        "profile default stays 1 h"
    );

    let spec = Profiles::from_contents(Path::new("c"), CONFIG.into())
        .unwrap()
        .resolve("dev")
        .unwrap();
    let slot = RoleSlot::new(
        spec,
        t0(),
        Duration::from_secs(3600),
        0,
        Default::default(),
        Default::default(),
    );
    let config = SessionConfig::default();
    assert_eq!(
        slot.final_duration(at(90), &config),
        MIN_STS_DURATION,
        "floor 900 s"
    );
    assert_eq!(
        slot.final_duration(at(55), &config),
        Duration::from_secs(20 * 60)
    );

    let (s, _) = setup(hours(48));
    assert_eq!(
        s.config().session_ttl,
        MAX_SESSION_TTL,
        "session ttl clamped to 12 h"
    );
}

#[tokio::test]
async fn refresh_is_due_25_minutes_before_expiry() {
    let (s, sts) = setup(hours(2));
    open(&s, "dev", t0()).await.unwrap(); // expires at +60
    assert!(s.refresh_due(at(34)).is_empty());
    assert_eq!(s.refresh_due(at(35)), ["dev"]);
    let st = &s.status(at(34))[0];
    assert_eq!(st.next_refresh, Some(crate::util::unix_secs(at(35))));
    sts.set_now(at(35));
    s.refresh("dev", at(35)).await.unwrap(); // 1 h more: expires at +95
    assert!(s.refresh_due(at(36)).is_empty());
    assert_eq!(s.refresh_due(at(70)), ["dev"]);
    sts.set_now(at(105));
    s.refresh("dev", at(105)).await.unwrap(); // up to the session's end + 15: +135
    assert_eq!(sts.calls()[2].duration, Duration::from_secs(30 * 60));
    assert!(
        s.refresh_due(at(119)).is_empty(),
        "nothing more to gain before the session ends"
    );
    let st = &s.status(at(106))[0];
    assert_eq!((st.refreshes, st.sts_calls, st.failures), (2, 3, 0));
    assert_eq!(st.next_refresh, None);
}

#[tokio::test]
async fn failed_refresh_keeps_serving_and_retries_later() {
    let (s, sts) = setup(hours(2));
    open(&s, "dev", t0()).await.unwrap();
    let before = s.get_cached("dev", at(35)).unwrap().access_key_id.clone();
    sts.fail_with(Some(classify_code(
        StsOp::AssumeRole,
        "Throttling",
        "slow down",
        Some(400),
    )));
    let err = s.refresh("dev", at(35)).await.unwrap_err();
    assert!(err.is_transient());
    assert_eq!(err.code(), "sts_unavailable");
    assert_eq!(s.get_cached("dev", at(36)).unwrap().access_key_id, before);
    assert!(
        s.refresh_due(at(35)).is_empty(),
        "waits out the retry delay"
    );
    assert_eq!(s.refresh_due(at(36)), ["dev"]);
    assert_eq!(
        s.status(at(36))[0].last_error.as_deref(),
        Some("sts_unavailable")
    );
    s.refresh("dev", at(36)).await.unwrap_err();
    assert!(
        s.refresh_due(at(37)).is_empty(),
        "second failure doubles the delay"
    );
    assert_eq!(s.refresh_due(at(38)), ["dev"]);
    sts.fail_with(None);
    sts.set_now(at(38));
    s.refresh("dev", at(38)).await.unwrap();
    assert_ne!(s.get_cached("dev", at(38)).unwrap().access_key_id, before);
    let st = &s.status(at(38))[0];
    assert_eq!(
        (st.failures, st.refreshes, st.last_error.clone()),
        (2, 1, None)
    );
}

#[tokio::test]
async fn never_serves_credentials_with_less_than_15_minutes() {
    let (s, sts) = setup(hours(1));
    open(&s, "dev", t0()).await.unwrap(); // expires at +60
    assert!(s.get_cached("dev", at(45)).is_some());
    let late = at(45) + Duration::from_secs(1);
    assert!(s.get_cached("dev", late).is_none());
    sts.set_now(late);
    let fresh = s.credentials("dev", late).await.unwrap();
    assert!(fresh.remaining(late) >= Duration::from_secs(15 * 60));
    assert!(s.get_cached("dev", late).is_some());
    assert!(s.get_cached("dev", at(60)).is_none(), "session over");
    assert_eq!(
        s.credentials("dev", at(60)).await.unwrap_err().code(),
        "no_session"
    );
}

#[tokio::test]
async fn idle_timeout_ends_the_session() {
    let config = SessionConfig {
        idle_timeout: Some(Duration::from_secs(600)),
        ..SessionConfig::default()
    };
    let (s, _) = setup(config);
    open(&s, "dev", t0()).await.unwrap();
    assert!(s.get_cached("dev", at(9)).is_some());
    assert!(
        s.get_cached("dev", at(18)).is_some(),
        "use at +9 kept it alive"
    );
    assert!(s.get_cached("dev", at(29)).is_none());
    let told = Arc::new(Mutex::new(Vec::new()));
    let t = told.clone();
    s.on_end(Arc::new(move |role: &str, why: &'static str, _| {
        t.lock().unwrap().push((role.to_owned(), why));
    }));
    assert_eq!(s.sweep(at(29)), ["dev"]);
    assert_eq!(*told.lock().unwrap(), [("dev".to_owned(), "idle")]);
}

#[tokio::test]
async fn a_running_job_holds_its_session_through_the_idle_timeout_for_itself_only() {
    let config = SessionConfig {
        idle_timeout: Some(Duration::from_secs(600)),
        ..SessionConfig::default()
    };
    let (s, _) = setup(config);
    open(&s, "dev", t0()).await.unwrap();
    let job = s.lease("dev");
    // Idle past the timeout: open for the job, not for anyone else.
    assert!(s.held("dev", at(11)));
    assert!(s.get_cached_until("dev", at(11), false).is_none());
    assert!(s.get_cached_until("dev", at(11), true).is_some());
    assert!(
        s.sweep(at(11)).is_empty(),
        "a job's session does not end idle"
    );
    let told = Arc::new(Mutex::new(Vec::new()));
    let t = told.clone();
    s.on_end(Arc::new(move |role: &str, why: &'static str, _| {
        t.lock().unwrap().push((role.to_owned(), why));
    }));
    // The job ends: so does the session it held, once idle.
    drop(job);
    assert_eq!(s.sweep(at(30)), ["dev"]);
    assert_eq!(*told.lock().unwrap(), [("dev".to_owned(), "idle")]);
}

#[tokio::test]
async fn a_screen_lock_ends_every_session_but_those_jobs_hold() {
    let (s, _) = setup(hours(1));
    open(&s, "dev", t0()).await.unwrap();
    open(&s, "prod", t0()).await.unwrap();
    let job = s.lease("prod");
    let dev = Arc::downgrade(&s.get_cached("dev", at(1)).unwrap());
    assert_eq!(s.hold_for_jobs(), (1, vec!["prod".to_owned()]));
    assert!(dev.upgrade().is_none(), "dev's secret is gone");
    assert!(s.get_cached("dev", at(1)).is_none());
    assert!(s.held("prod", at(1)), "held, however recently used");
    assert!(s.get_cached_until("prod", at(1), false).is_none());
    assert!(s.get_cached_until("prod", at(1), true).is_some());
    // A touch opens it again, for everyone; the job still counts.
    open(&s, "prod", at(2)).await.unwrap();
    assert!(!s.held("prod", at(3)));
    assert!(s.get_cached("prod", at(3)).is_some());
    assert_eq!(s.status(at(3))[0].jobs, 1);
    // `lock` ends it whatever runs, and a session opened later starts with no job on it.
    assert_eq!(s.lock(), 1);
    open(&s, "prod", at(4)).await.unwrap();
    assert_eq!(s.status(at(4))[0].jobs, 0);
    drop(job);
    assert_eq!(s.status(at(4))[0].jobs, 0);
}

#[tokio::test]
async fn a_held_session_ends_when_its_last_job_does() {
    let (s, _) = setup(hours(1));
    open(&s, "prod", t0()).await.unwrap();
    let job = s.lease("prod");
    s.hold_for_jobs();
    assert!(s.sweep(at(1)).is_empty());
    drop(job);
    let told = Arc::new(Mutex::new(Vec::new()));
    let t = told.clone();
    s.on_end(Arc::new(move |role: &str, why: &'static str, _| {
        t.lock().unwrap().push((role.to_owned(), why));
    }));
    assert_eq!(s.sweep(at(1)), ["prod"]);
    assert_eq!(*told.lock().unwrap(), [("prod".to_owned(), "jobs ended")]);
}

#[tokio::test]
async fn lock_wipes_everything() {
    let (s, _) = setup(hours(1));
    open(&s, "dev", t0()).await.unwrap();
    s.open("a", Approval::for_tests("a"), Some("123456".into()), t0())
        .await
        .unwrap();
    let creds = s.get_cached("dev", at(1)).unwrap();
    let weak = Arc::downgrade(&creds);
    drop(creds);
    assert_eq!(s.lock(), 2);
    assert!(
        weak.upgrade().is_none(),
        "no copy of the secret survives the lock"
    );
    assert!(s.get_cached("dev", at(1)).is_none());
    assert_eq!(
        s.credentials("dev", at(1)).await.unwrap_err().code(),
        "no_session"
    );
    assert!(s.status(at(1)).is_empty());
    assert_eq!(
        s.mfa_needed("b", at(1)).unwrap().as_deref(),
        Some("arn:aws:iam::111111111111:mfa/alice")
    );
}

#[tokio::test]
async fn mfa_session_token_once_for_two_roles() {
    let (s, sts) = setup(hours(1));
    assert!(s.mfa_needed("dev", t0()).unwrap().is_none());
    assert!(s.mfa_needed("a", t0()).unwrap().is_some());
    let err = open(&s, "a", t0()).await.unwrap_err();
    assert_eq!(err.code(), "mfa_required");
    assert_eq!(sts.calls().len(), 0);
    let err = s
        .open("a", Approval::for_tests("a"), Some("000000".into()), t0())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "mfa_invalid");
    assert!(err.to_string().contains("fresh code"), "{err}");

    s.open("a", Approval::for_tests("a"), Some("123456".into()), t0())
        .await
        .unwrap();
    assert!(s.mfa_needed("b", at(1)).unwrap().is_none());
    s.open("b", Approval::for_tests("b"), None, at(1))
        .await
        .unwrap();
    assert_eq!(
        sts.gst_calls.load(Ordering::SeqCst),
        2,
        "one failed + one good"
    );
    let calls = sts.calls();
    let ok_gst = calls.iter().filter(|c| c.op == "GetSessionToken").count();
    assert_eq!(ok_gst, 1);
    let assumes: Vec<_> = calls.iter().filter(|c| c.op == "AssumeRole").collect();
    assert_eq!(assumes.len(), 2);
    assert!(
        assumes.iter().all(|c| c.caller == "ASIA0"),
        "both roles use the MFA session"
    );
    assert_eq!(calls[0].duration, Duration::from_secs(12 * 3600));
}

#[tokio::test]
async fn mfa_roles_respect_the_chaining_limit() {
    // A role assumed with an MFA session's credentials is chained: at most one hour, whatever
    // the session would allow.
    let (s, sts) = setup(hours(12));
    s.open("a", Approval::for_tests("a"), Some("123456".into()), t0())
        .await
        .unwrap();
    let calls = sts.calls();
    assert_eq!(calls[0].op, "GetSessionToken");
    assert_eq!(calls[1].op, "AssumeRole");
    assert_eq!(calls[1].duration, MAX_CHAINED_DURATION);

    // Eight hours: the code goes on AssumeRole itself, signed with the source's own keys, as
    // the AWS CLI does; no GetSessionToken, and the full duration.
    assert_eq!(
        s.mfa_needed("longmfa", at(1)).unwrap().as_deref(),
        Some("arn:aws:iam::111111111111:mfa/alice"),
        "a fresh code every time, even with an MFA session open"
    );
    let err = open(&s, "longmfa", at(1)).await.unwrap_err();
    assert_eq!(err.code(), "mfa_required");
    let err = s
        .open(
            "longmfa",
            Approval::for_tests("longmfa"),
            Some("000000".into()),
            at(1),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), "mfa_invalid");
    s.open(
        "longmfa",
        Approval::for_tests("longmfa"),
        Some("123456".into()),
        at(1),
    )
    .await
    .unwrap();
    let calls = sts.calls();
    let last = calls.last().unwrap();
    assert_eq!(last.op, "AssumeRole");
    assert_eq!(
        last.caller, "AKIDMFA",
        "signed with the source's long-lived key"
    );
    assert_eq!(last.duration, Duration::from_secs(8 * 3600));
    assert_eq!(sts.mfa_on_assume.lock().unwrap().len(), 1);
    assert_eq!(sts.gst_calls.load(Ordering::SeqCst), 1, "only role a's");
    // Re-opened without a code while its credentials are good: they carry over.
    open(&s, "longmfa", at(2)).await.unwrap();
    assert_eq!(sts.calls().len(), calls.len());
}

#[tokio::test]
async fn approval_for_another_role_is_refused() {
    let (s, sts) = setup(hours(1));
    let err = s
        .open("prod", Approval::for_tests("dev"), None, t0())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "approval_mismatch");
    assert_eq!(sts.calls().len(), 0);
    assert!(s.open_roles(t0()).is_empty());
}

#[tokio::test]
async fn refusals_name_role_and_source_and_leave_nothing_open() {
    let (s, sts) = setup(hours(1));
    sts.fail_with(Some(classify_code(
        StsOp::AssumeRole,
        "AccessDenied",
        "not authorized",
        Some(403),
    )));
    let err = open(&s, "dev", t0()).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("role dev") && msg.contains("source `base`") && msg.contains("trust policy"),
        "{msg}"
    );
    assert!(s.open_roles(t0()).is_empty());
    sts.fail_with(Some(classify_code(
        StsOp::AssumeRole,
        "InvalidClientTokenId",
        "bad",
        Some(403),
    )));
    let err = open(&s, "dev", t0()).await.unwrap_err();
    assert_eq!(err.code(), "source_key_invalid");
    assert!(err.to_string().contains("credctl source add base"), "{err}");
    let err = open(&s, "orphan", t0()).await.unwrap_err();
    assert_eq!(err.code(), "source_missing");
    assert!(
        err.to_string().contains("credctl source add nosuchkeys"),
        "{err}"
    );
    let err = open(&s, "typo", t0()).await.unwrap_err();
    assert_eq!(err.code(), "source_missing");
    assert!(err.to_string().contains("check for a typo"), "{err}");
    let err = open(&s, "nope", t0()).await.unwrap_err();
    assert_eq!(err.code(), "profile");
}

#[tokio::test]
async fn status_has_no_secrets() {
    let (s, _) = setup(hours(1));
    open(&s, "dev", t0()).await.unwrap();
    let json = serde_json::to_string(&s.status(at(1))).unwrap();
    assert!(json.contains("\"role\":\"dev\""), "{json}");
    assert!(!json.contains("secret-0") && !json.contains("token-0") && !json.contains(SECRET));
    let creds = s.get_cached("dev", at(1)).unwrap();
    let dbg = format!("{creds:?}");
    assert!(
        !dbg.contains("secret-0") && !dbg.contains("token-0"),
        "{dbg}"
    );
}

#[tokio::test(start_paused = true)]
async fn background_refresher_follows_the_clock() {
    let (s, sts) = setup(hours(2));
    open(&s, "dev", t0()).await.unwrap();
    let clock = Arc::new(Mutex::new(t0()));
    let c = clock.clone();
    let task = tokio::spawn(
        s.clone()
            .run_refresher(Duration::from_secs(30), move || *c.lock().unwrap()),
    );
    tokio::time::sleep(Duration::from_secs(61)).await;
    assert_eq!(sts.assumes(), 1);
    *clock.lock().unwrap() = at(36);
    sts.set_now(at(36));
    tokio::time::sleep(Duration::from_secs(31)).await;
    assert_eq!(sts.assumes(), 2);
    assert_eq!(s.status(at(36))[0].refreshes, 1);
    *clock.lock().unwrap() = at(121);
    tokio::time::sleep(Duration::from_secs(31)).await;
    assert!(
        s.open_roles(at(121)).is_empty(),
        "swept at the session's end"
    );
    task.abort();
}

#[tokio::test]
async fn every_change_an_answer_can_see_moves_the_generation_and_nothing_else_does() {
    let (s, sts) = setup(hours(1));
    let g = s.generation().clone();
    let moved = |before: u64| g.current() > before;

    let before = g.current();
    open(&s, "dev", t0()).await.unwrap();
    assert!(moved(before), "open");

    // Reads, and a sweep that ends nothing, leave memos alone.
    let before = g.current();
    let (creds, until) = s.get_cached_until("dev", at(1), false).unwrap();
    assert!(s.sweep(at(2)).is_empty());
    assert!(s.credentials("dev", at(3)).await.is_ok());
    assert_eq!(g.current(), before);

    // Until: the credentials fall under the 15-minute margin before the session ends.
    assert_eq!(until, creds.expiration - Duration::from_secs(15 * 60));
    assert!(s.get_cached("dev", until).is_some());
    assert!(s
        .get_cached("dev", until + Duration::from_secs(1))
        .is_none());

    // A refresh replaces the snapshot.
    sts.set_now(at(50));
    let before = g.current();
    s.credentials("dev", at(50)).await.unwrap();
    assert!(moved(before), "refresh");
    // Near the end the session's own end is the limit.
    let (_, until) = s.get_cached_until("dev", at(50), false).unwrap();
    assert_eq!(until, at(60));

    let before = g.current();
    assert_eq!(s.sweep(at(60)), ["dev"]);
    assert!(moved(before), "expiry sweep");

    open(&s, "dev", at(61)).await.unwrap();
    let before = g.current();
    s.lock();
    assert!(moved(before), "lock");
}

#[tokio::test]
async fn the_idle_timeout_bounds_how_long_an_answer_may_be_repeated() {
    let config = SessionConfig {
        idle_timeout: Some(Duration::from_millis(500)),
        ..SessionConfig::default()
    };
    let (s, _) = setup(config);
    open(&s, "dev", t0()).await.unwrap();
    let now = t0() + Duration::from_secs(1);
    // Opening counts as a use; a use at +1 s keeps it alive until +1.5 s, and no longer.
    assert!(s
        .get_cached("dev", t0() + Duration::from_millis(400))
        .is_some());
    let (_, until) = s
        .get_cached_until("dev", now - Duration::from_millis(100), false)
        .unwrap();
    assert_eq!(until, now + Duration::from_millis(400));
    assert!(s
        .get_cached("dev", until + Duration::from_millis(1))
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_racing_a_hundred_opens_leaves_nothing_behind() {
    let (s, sts) = setup(hours(1));
    sts.set_delay(Duration::from_millis(100));
    // 100 opens in flight: 90 of a plain role, 10 of an MFA role (GetSessionToken, then
    // AssumeRole; the MFA fetches of one source queue behind each other).
    let begun = Arc::new(AtomicU32::new(0));
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let s = s.clone();
            let begun = begun.clone();
            tokio::spawn(async move {
                // Counted in the same poll that runs the open up to its first wait, where it
                // records its session with the epoch it started in.
                begun.fetch_add(1, Ordering::SeqCst);
                if i % 10 != 0 {
                    open(&s, "dev", t0()).await
                } else {
                    s.open("a", Approval::for_tests("a"), Some("123456".into()), t0())
                        .await
                }
            })
        })
        .collect();
    // Lock once every open has begun and STS calls are under way, none answered yet.
    let in_flight = || {
        begun.load(Ordering::SeqCst) == 100
            && sts.started.load(Ordering::SeqCst) >= 2
            && sts.calls().is_empty()
    };
    for _ in 0..200 {
        if in_flight() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(in_flight(), "the opens never reached STS");
    // The last counted opens finish recording their session (microseconds; STS answers in 100 ms).
    tokio::time::sleep(Duration::from_millis(20)).await;
    s.lock();
    for t in tasks {
        let r = t.await.unwrap();
        assert!(
            r.is_err(),
            "an open begun before the lock succeeded after it: {r:?}"
        );
    }
    assert!(s.status(t0()).is_empty(), "a session survived the lock");
    assert!(s.get_cached("dev", t0()).is_none());
    assert!(s.get_cached("a", t0()).is_none());
    assert_eq!(
        s.mfa_needed("a", t0()).unwrap().as_deref(),
        Some("arn:aws:iam::111111111111:mfa/alice"),
        "an MFA session survived the lock"
    );
}

/// Serves `role` and refreshes what is due, minute by minute from `from` to `to`, like the
/// agent's refresher; returns the minutes at which nothing could be served.
async fn drive(s: &Sessions, role: &str, from: u64, to: u64) -> Vec<u64> {
    let mut dark = Vec::new();
    for m in from..=to {
        for r in s.refresh_due(at(m)) {
            let _ = s.refresh(&r, at(m)).await;
        }
        if s.get_cached(role, at(m)).is_none() {
            dark.push(m);
        }
    }
    dark
}

#[tokio::test]
async fn a_fifteen_minute_role_serves_all_session_long_on_schedule() {
    let (s, sts) = setup(hours(1));
    open(&s, "short", t0()).await.unwrap();
    assert_eq!(sts.assumes(), 1);
    // The first 7 minutes are served from the first credentials, with no other STS call.
    for m in 0..=7 {
        sts.set_now(at(m));
        assert!(s.get_cached("short", at(m)).is_some(), "minute {m}");
        assert!(s.refresh_due(at(m)).is_empty(), "minute {m}");
    }
    assert_eq!(sts.assumes(), 1, "one STS call while the credentials last");
    // Over the whole hour: served every minute, refreshed every 7.5 minutes, never in a loop.
    let dark = {
        let mut dark = Vec::new();
        for m in 8..=59 {
            sts.set_now(at(m));
            dark.extend(drive(&s, "short", m, m).await);
        }
        dark
    };
    assert!(dark.is_empty(), "nothing served at minutes {dark:?}");
    let calls = sts.assumes();
    assert!(
        (7..=9).contains(&calls),
        "{calls} AssumeRole calls in an hour"
    );
}

#[tokio::test]
async fn a_clock_running_ahead_of_sts_neither_darkens_nor_floods() {
    let (s, sts) = setup(hours(1));
    // This machine's clock is 35 minutes ahead of STS: an hour's credentials arrive with 25
    // minutes left by the local clock.
    sts.set_now(t0() - Duration::from_secs(35 * 60));
    open(&s, "dev", t0()).await.unwrap();
    let mut calls_per_minute = Vec::new();
    for m in 0..=59 {
        sts.set_now(at(m) - Duration::from_secs(35 * 60));
        let before = sts.assumes();
        let dark = drive(&s, "dev", m, m).await;
        assert!(dark.is_empty(), "nothing served at minute {m}");
        calls_per_minute.push(sts.assumes() - before);
    }
    assert!(
        calls_per_minute.iter().all(|c| *c <= 1),
        "more than one STS call in a minute: {calls_per_minute:?}"
    );
    let total: u32 = calls_per_minute.iter().sum();
    assert!(
        total <= 6,
        "{total} AssumeRole calls in an hour: {calls_per_minute:?}"
    );
}

#[tokio::test]
async fn sessions_opened_together_refresh_spread_out_and_paced() {
    // Many profiles, all opened within the same second: their refreshes must not all come due
    // in the same second (issue: 300 sessions sending 300 AssumeRole calls at once).
    let mut config_text = String::from("[profile base]\n");
    for i in 0..300 {
        config_text.push_str(&format!(
            "[profile r{i}]\nrole_arn = arn:aws:iam::111111111111:role/r{i}\nsource_profile = base\n"
        ));
    }
    let (s, _) = setup_spread(SessionConfig::default());
    s.set_profiles(Profiles::from_contents(Path::new("/test/config"), config_text).unwrap());
    for i in 0..300 {
        open(&s, &format!("r{i}"), t0()).await.unwrap();
    }
    // Due times: within the spread (5 min after the 25-min lead), and never many per second.
    let mut per_second: HashMap<u64, usize> = HashMap::new();
    let config = s.config().clone();
    for i in 0..300 {
        let slot = s.slot(&format!("r{i}")).unwrap();
        let due = slot.next_refresh(&config).unwrap();
        let creds = slot.credentials().unwrap();
        let lead = creds.expiration.duration_since(due).unwrap();
        assert!(
            lead <= Duration::from_secs(25 * 60) && lead >= Duration::from_secs(20 * 60),
            "{lead:?}"
        );
        let sec = due.duration_since(UNIX_EPOCH).unwrap().as_secs();
        *per_second.entry(sec).or_default() += 1;
    }
    let worst = per_second.values().copied().max().unwrap();
    assert!(worst <= 10, "{worst} refreshes due in one second");
    assert!(
        per_second.len() > 100,
        "spread over {} seconds",
        per_second.len()
    );

    // And however many are due at once, the refresher starts one per pace within a tick.
    let due: Vec<String> = (0..300).map(|i| format!("r{i}")).collect();
    let plan = super::refresh::paced(due, Duration::from_secs(15), config.refresh_pace);
    assert_eq!(
        plan.len(),
        75,
        "15 s at 5 a second; the rest wait for the next ticks"
    );
    for (i, (_, delay)) in plan.iter().enumerate() {
        assert_eq!(*delay, Duration::from_millis(200) * i as u32);
    }
    assert!(plan.last().unwrap().1 < Duration::from_secs(15));
}

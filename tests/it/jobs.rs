//! Jobs that outlive a lock: while a `credctl exec` command runs, its role stays served to it
//! through the idle timeout and a screen lock, and to nobody else; `credctl lock` ends it all.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use credagent_proto::{read_frame, write_frame, Request, Response};

use crate::stack::{private_bus, Stack};
use crate::util::{bin, hello, wait_until};

/// `demo`'s session as `status --json` shows it (`null`: none open).
fn session(s: &Stack) -> serde_json::Value {
    let status: serde_json::Value = serde_json::from_str(&s.ok(&["status", "--json"])).unwrap();
    status["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "demo")
        .map(|r| r["session"].clone())
        .unwrap_or(serde_json::Value::Null)
}

/// Tells the job to make its next request, and waits for the status code it got.
fn job_request(dir: &Path, n: u32) -> String {
    std::fs::write(dir.join(format!("go{n}")), "").unwrap();
    let done = dir.join(format!("done{n}"));
    wait_until(Duration::from_secs(20), || done.exists()).expect("the job answered");
    std::fs::read_to_string(done).unwrap().trim().to_owned()
}

/// A new requester's request on the control socket, answered.
fn ask(s: &Stack, request: &Request) -> Response {
    let (mut sock, _) = hello(&s.env.sock).unwrap();
    write_frame(&mut sock, request).unwrap();
    read_frame(&mut sock).unwrap()
}

/// Refused, saying to open the role with a touch.
fn refused_for_held(reply: Response) {
    match reply {
        Response::Error { message, .. } => {
            assert!(
                message.contains("open only for") && message.contains("credctl use demo"),
                "{message}"
            )
        }
        other => panic!("a new requester got a held session: {other:?}"),
    }
}

#[test]
fn an_exec_outlives_the_idle_timeout_and_a_screen_lock_but_not_credctl_lock() {
    let (_bus, bus) = private_bus();
    let s = Stack::new_with_env(
        "",
        "idle_timeout = \"2s\"\nlock_on = [\"screen-lock\"]",
        &[("DBUS_SESSION_BUS_ADDRESS", &bus)],
    )
    .with_key_and_source();
    wait_until(Duration::from_secs(10), || {
        crate::lock_signals::watched(&s, "ScreenSaver)") > 0
    })
    .expect("the screen lock is watched");

    // Another program's grant on the same role, from before the job started.
    let other = s.unopened_role_token("demo");

    // The job: each request waits for the test's go, and reports its status code.
    let dir = s.env.dir.path().join("job");
    std::fs::create_dir(&dir).unwrap();
    let script = "for n in 1 2 3; do \
                    while [ ! -e \"$JOB/go$n\" ]; do sleep 0.05; done; \
                    curl -s -o /dev/null -w '%{http_code}' -H \"Authorization: \
                    $AWS_CONTAINER_AUTHORIZATION_TOKEN\" \"$AWS_CONTAINER_CREDENTIALS_FULL_URI\" \
                    > \"$JOB/done$n.tmp\"; mv \"$JOB/done$n.tmp\" \"$JOB/done$n\"; \
                  done";
    let mut job = s
        .env
        .command(bin("credctl"))
        .env("CREDCTL_AUTHENTICATOR", s.soft_arg())
        .env("JOB", &dir)
        .args(["exec", "demo", "--", "sh", "-c", script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(20), || {
        session(&s)["jobs"].as_array().is_some_and(|j| j.len() == 1)
    })
    .unwrap_or_else(|| panic!("the job never ran; agent log:\n{}", s.agent.log_text()));
    assert_eq!(
        s.ecs(Some(&other), &[]).0,
        200,
        "an open session serves every grant"
    );

    // Idle past the timeout: the session stays open, for the job only.
    std::thread::sleep(Duration::from_secs(3));
    let held = session(&s);
    assert_eq!(held["held"], true, "{held}");
    assert_eq!(
        s.ecs(Some(&other), &[]).0,
        403,
        "another grant is not served"
    );
    assert_eq!(
        job_request(&dir, 1),
        "200",
        "the job is served past the idle timeout"
    );

    // The screen locks: everything else ends; the job's session is held for it.
    crate::lock_signals::emit(
        &bus,
        "/org/freedesktop/ScreenSaver",
        "org.freedesktop.ScreenSaver.ActiveChanged",
        &["boolean:true"],
    );
    wait_until(Duration::from_secs(10), || {
        s.ecs(Some(&other), &[]).0 == 401
    })
    .expect("the screen lock revoked the other grant");
    let held = session(&s);
    assert_eq!(held["held"], true, "{held}");
    // A new requester gets nothing without a touch: no token of its own (a job's token
    // included), no credentials.
    refused_for_held(ask(
        &s,
        &Request::TokenForRole {
            role: "demo".into(),
            scoped: true,
            purpose: "exec".into(),
            holder: None,
        },
    ));
    refused_for_held(ask(
        &s,
        &Request::Credentials {
            role: "demo".into(),
            export: true,
        },
    ));
    assert_eq!(
        job_request(&dir, 2),
        "200",
        "the job is served through the lock"
    );

    // `credctl lock` ends everything, the job's grant included.
    s.ok(&["lock"]);
    assert_eq!(session(&s), serde_json::Value::Null);
    assert_eq!(
        job_request(&dir, 3),
        "401",
        "the job's grant ended with credctl lock"
    );
    let out = job.wait().unwrap();
    assert!(out.success());

    let audit =
        std::fs::read_to_string(s.env.home.join(".local/state/credagent/audit.jsonl")).unwrap();
    assert!(
        audit.contains("screen-lock; held for running jobs: demo"),
        "{audit}"
    );
}

#[test]
fn a_touch_opens_a_held_session_for_everyone_again() {
    let (_bus, bus) = private_bus();
    let s = Stack::new_with_env(
        "",
        "lock_on = [\"screen-lock\"]",
        &[("DBUS_SESSION_BUS_ADDRESS", &bus)],
    )
    .with_key_and_source();
    wait_until(Duration::from_secs(10), || {
        s.ok(&["status"]).contains("ScreenSaver): watched")
    })
    .expect("the screen lock is watched");
    let mut job = s
        .env
        .command(bin("credctl"))
        .env("CREDCTL_AUTHENTICATOR", s.soft_arg())
        .args(["exec", "demo", "--", "sleep", "30"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(20), || {
        session(&s)["jobs"].as_array().is_some_and(|j| j.len() == 1)
    })
    .expect("the job runs");
    crate::lock_signals::emit(
        &bus,
        "/org/freedesktop/ScreenSaver",
        "org.freedesktop.ScreenSaver.ActiveChanged",
        &["boolean:true"],
    );
    wait_until(Duration::from_secs(10), || session(&s)["held"] == true).expect("held");
    // The person comes back and opens the role: one touch, and it serves everyone again.
    let before = crate::stack::key_counter(&s);
    let token = s.role_token("demo");
    assert_eq!(crate::stack::key_counter(&s), before + 1, "one touch");
    assert_eq!(s.ecs(Some(&token), &[]).0, 200);
    assert_eq!(session(&s)["held"], serde_json::Value::Null);
    // The job ends: the session it held does not end with it, since the touch opened it.
    job.kill().unwrap();
    job.wait().unwrap();
    wait_until(Duration::from_secs(10), || session(&s)["jobs"].is_null()).expect("job gone");
    assert_eq!(s.ecs(Some(&token), &[]).0, 200);
}

#[test]
fn a_running_job_is_asked_ahead_to_extend_an_mfa_session_that_would_end_under_it() {
    // 15-minute role and MFA sessions: the MFA session ends with the role's, and extending it
    // takes a new code. The agent asks 14m50s ahead, so within seconds here.
    let s = Stack::new_with_env(
        "",
        "session_ttl = \"15m\"\nmfa_session_ttl = \"15m\"",
        &[
            ("CREDAGENT_JOBS_TICK", "1s"),
            ("CREDAGENT_EXTEND_AHEAD", "14m 50s"),
        ],
    );
    let s = s.with_source_mfa_serial().with_key_and_source();
    let mut job = s
        .env
        .command(bin("credctl"))
        .env("CREDCTL_AUTHENTICATOR", s.soft_arg())
        .args(["exec", "demo", "--mfa-code", "123456", "--", "sleep", "60"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pending = || -> Vec<serde_json::Value> {
        let status: serde_json::Value = serde_json::from_str(&s.ok(&["status", "--json"])).unwrap();
        status["pending"].as_array().cloned().unwrap_or_default()
    };
    wait_until(Duration::from_secs(30), || {
        pending()
            .iter()
            .any(|p| p["role"] == "demo" && p["ending"] == "MFA session")
    })
    .unwrap_or_else(|| panic!("nobody was asked; agent log:\n{}", s.agent.log_text()));
    let asked = pending();
    let ends_at = asked[0]["ends_at"].as_u64().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        ends_at > now && ends_at <= now + 15 * 60,
        "asked before the end: {asked:?}"
    );
    assert!(
        s.ok(&["status"]).contains("credctl use --renew demo"),
        "status says how to extend it"
    );
    // Asked once: the question stands, it is not repeated with every tick.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(pending().len(), 1);

    // `credctl watch` takes the touch, with a new code: a new MFA session, the job's session
    // extended, the question answered.
    let before = crate::stack::key_counter(&s);
    s.ok(&["watch", "--once", "--mfa-code", "654321"]);
    assert_eq!(crate::stack::key_counter(&s), before + 1, "one touch");
    assert_eq!(s.sts.calls("GetSessionToken").len(), 2, "a new MFA session");
    assert!(
        !pending()
            .iter()
            .any(|p| p["ends_at"].as_u64() == Some(ends_at)),
        "the question was answered"
    );
    job.kill().unwrap();
    job.wait().unwrap();
}

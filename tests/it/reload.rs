//! `credctl reload`: an edited config.toml applied without ending a session or changing the
//! port, and only after a touch that was shown what changed.

use std::io::Write;

use credagent_proto::{read_frame, write_frame, Request, Response};

use crate::stack::{key_counter, Stack};
use crate::util::{stderr, stdout};

fn status_json(s: &Stack) -> serde_json::Value {
    serde_json::from_str(&s.ok(&["status", "--json"])).unwrap()
}

fn config_path(s: &Stack) -> std::path::PathBuf {
    s.env.home.join(".config/credagent/config.toml")
}

/// A top-level line, placed before the `[approval]` table.
fn with_top_level(text: &str, line: &str) -> String {
    text.replacen("[approval]", &format!("{line}\n[approval]"), 1)
}

#[test]
fn an_edited_config_applies_with_one_touch_keeping_sessions_and_the_port() {
    let s = Stack::new("", "").with_key_and_source();
    let token = s.role_token("demo");
    assert_eq!(s.ecs(Some(&token), &[]).0, 200);
    let before = status_json(&s);
    let path = config_path(&s);
    let text = std::fs::read_to_string(&path).unwrap();

    // A comment is no setting: status points at the change, and reload needs no touch.
    std::fs::write(&path, format!("{text}\n# edited\n")).unwrap();
    let status = s.ok(&["status"]);
    assert!(
        status.contains("CHANGED since the agent read it") && status.contains("credctl reload"),
        "{status}"
    );
    assert_eq!(status_json(&s)["config_changed"], true);
    let doctor = stdout(&s.credctl(&["doctor"]));
    assert!(
        doctor.contains("changed since the agent read it") && doctor.contains("credctl reload"),
        "{doctor}"
    );
    let counter = key_counter(&s);
    let out = s.ok(&["reload"]);
    assert!(out.contains("nothing needed one"), "{out}");
    assert_eq!(key_counter(&s), counter, "no touch for a comment");
    assert_eq!(status_json(&s)["config_changed"], false);

    // Settings a touch vouches for: shown, then applied by that touch.
    let edited = with_top_level(
        &text,
        "federation_endpoint = \"http://127.0.0.1:9/federation\"\nsession_ttl = \"2h\"\nmfa_session_ttl = \"12h\"",
    );
    std::fs::write(&path, &edited).unwrap();
    assert!(!s
        .ok(&["status"])
        .contains("federation endpoint http://127.0.0.1:9"));
    let out = s.credctl(&["reload"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let shown = stderr(&out);
    assert!(
        shown.contains("federation_endpoint") && shown.contains("session_ttl"),
        "the touch is shown what changed: {shown}"
    );
    assert!(
        stdout(&out).contains("every session stays open"),
        "{}",
        stdout(&out)
    );
    assert_eq!(key_counter(&s), counter + 1, "one touch");

    let after = status_json(&s);
    assert_eq!(
        after["http_addr"], before["http_addr"],
        "the port is the same"
    );
    assert_eq!(after["config_changed"], false);
    assert!(
        after["overrides"].as_array().unwrap().iter().any(|o| o
            .as_str()
            .unwrap()
            .contains("http://127.0.0.1:9/federation")),
        "{after}"
    );
    // The session opened before is still served, to the same token.
    assert_eq!(s.ecs(Some(&token), &[]).0, 200);
    assert!(after["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["name"] == "demo"));
    // The touch recorded what it confirmed: the next touch sees no change.
    let trusted: serde_json::Value = serde_json::from_slice(
        &std::fs::read(s.env.home.join(".local/state/credagent/trusted.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(trusted["settings"]["session_ttl"], "2h", "{trusted}");
    assert!(
        !s.ok(&["status"]).contains("CHANGED since a touch"),
        "the settings in force are the ones confirmed"
    );
    // The new session length is what the next touch offers.
    s.ok(&["lock"]);
    let opened = stderr(&s.credctl(&["use", "demo"]));
    assert!(opened.contains("(session 2h)"), "{opened}");
}

#[test]
fn a_reload_nobody_touched_for_changes_nothing() {
    let s = Stack::new("", "").with_key_and_source();
    let path = config_path(&s);
    let text = std::fs::read_to_string(&path).unwrap();
    // What a same-user program would do: point STS elsewhere and ask for a reload.
    let evil = text.replace(&s.sts.url, "http://127.0.0.1:9/");
    assert_ne!(evil, text);
    std::fs::write(&path, &evil).unwrap();
    let (mut sock, _) = crate::util::hello(&s.env.sock).unwrap();
    write_frame(&mut sock, &Request::Reload).unwrap();
    match read_frame(&mut sock).unwrap() {
        Response::Challenge(c) => {
            let purpose = c.purpose.unwrap_or_default();
            assert!(
                purpose.contains("sts_endpoint") && purpose.contains("http://127.0.0.1:9/"),
                "{purpose}"
            );
        }
        other => panic!("a reload that changes sts_endpoint needs a touch: {other:?}"),
    }
    drop(sock);

    // Nothing changed: the old endpoint is in force, and a role opens through it.
    let status = status_json(&s);
    assert_eq!(status["config_changed"], true);
    let overrides = status["overrides"].to_string();
    assert!(
        overrides.contains(&s.sts.url) && !overrides.contains("127.0.0.1:9/"),
        "{overrides}"
    );
    let token = s.role_token("demo");
    assert_eq!(s.ecs(Some(&token), &[]).0, 200);
    assert!(
        !s.sts.calls("AssumeRole").is_empty(),
        "STS as configured before was called"
    );
    let audit = std::fs::read_to_string(s.env.home.join(".local/state/credagent/audit.jsonl"))
        .unwrap_or_default();
    assert!(!audit.contains("settings_reloaded"), "{audit}");
}

#[test]
fn a_broken_or_restart_only_config_is_said_and_loses_nothing() {
    let s = Stack::new("", "").with_key_and_source();
    let token = s.role_token("demo");
    let path = config_path(&s);
    let text = std::fs::read_to_string(&path).unwrap();
    let http = status_json(&s)["http_addr"].clone();

    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    writeln!(f, "session_ttl = \"forever\"").unwrap();
    drop(f);
    let out = s.credctl(&["reload"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("config.toml") && err.contains("nothing changed"),
        "{err}"
    );
    assert_eq!(s.ecs(Some(&token), &[]).0, 200, "the session is untouched");

    // listen: the port every shell names; it applies at the next start, and both say so.
    std::fs::write(
        &path,
        with_top_level(&text, "listen = \"127.0.0.1:0\"\nidle_timeout = \"0s\""),
    )
    .unwrap();
    let counter = key_counter(&s);
    let out = s.ok(&["reload"]);
    assert_eq!(
        key_counter(&s),
        counter,
        "no setting a touch vouches for changed"
    );
    assert!(!out.contains("listen"), "127.0.0.1:0 is what runs: {out}");
    std::fs::write(&path, with_top_level(&text, "listen = \"127.0.0.1:1\"")).unwrap();
    let out = s.ok(&["reload"]);
    assert!(
        out.contains("listen") && out.contains("127.0.0.1:1") && out.contains("starts again"),
        "{out}"
    );
    let status = s.ok(&["status"]);
    assert!(status.contains("restart    listen"), "{status}");
    assert_eq!(status_json(&s)["http_addr"], http);
    assert_eq!(s.ecs(Some(&token), &[]).0, 200);
}

/// A reload led by another program is touched for what it showed; a second reload waits for
/// its turn and shows, and takes a touch for, its own changes: it never reports the first one's
/// outcome as its own.
#[test]
fn a_second_reload_takes_its_own_touch_for_its_own_changes() {
    let s = Stack::new("", "").with_key_and_source();
    let path = config_path(&s);
    let text = std::fs::read_to_string(&path).unwrap();
    // The other program's reload: it would point STS elsewhere. It waits for a touch.
    std::fs::write(&path, text.replace(&s.sts.url, "http://127.0.0.1:9/")).unwrap();
    let (mut first, _) = crate::util::hello(&s.env.sock).unwrap();
    write_frame(&mut first, &Request::Reload).unwrap();
    assert!(matches!(
        read_frame::<_, Response>(&mut first).unwrap(),
        Response::Challenge(_)
    ));
    // The person's own edit, and their reload while the first waits.
    std::fs::write(&path, with_top_level(&text, "session_ttl = \"2h\"")).unwrap();
    let mut mine = s
        .env
        .command(crate::util::bin("credctl"))
        .env("CREDCTL_AUTHENTICATOR", s.soft_arg())
        .arg("reload")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    assert!(
        mine.try_wait().unwrap().is_none(),
        "the second reload waits for its turn"
    );
    // The first one's leader goes away: the second leads its own touch.
    drop(first);
    let out = mine.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let shown = stderr(&out);
    assert!(
        shown.contains("session_ttl") && !shown.contains("127.0.0.1:9/"),
        "its own changes, only: {shown}"
    );
    let status = status_json(&s);
    let overrides = status["overrides"].to_string();
    assert!(
        overrides.contains(&s.sts.url) && !overrides.contains("127.0.0.1:9/"),
        "{overrides}"
    );
    assert_eq!(status["config_changed"], false);
}

/// A policy no registered key satisfies would refuse every touch, the one that could undo it
/// included: reload says so and applies nothing.
#[test]
fn a_reload_that_would_lock_out_every_key_is_refused() {
    let s = Stack::new("", "").with_key_and_source();
    let path = config_path(&s);
    let text = std::fs::read_to_string(&path).unwrap();
    let strict = text.replace(
        "allow_software_authenticators = true",
        "allow_software_authenticators = false",
    );
    assert_ne!(strict, text);
    std::fs::write(&path, strict).unwrap();
    let counter = key_counter(&s);
    let out = s.credctl(&["reload"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("no registered key satisfies") && err.contains("nothing changed"),
        "{err}"
    );
    assert_eq!(key_counter(&s), counter, "no touch was asked for");
    // The key still opens roles.
    let token = s.role_token("demo");
    assert_eq!(s.ecs(Some(&token), &[]).0, 200);

    // A value that would steer the terminal showing the changes is refused too.
    std::fs::write(
        &path,
        with_top_level(
            &text,
            "federation_endpoint = \"https://signin.aws.amazon.com/federation\\r\\u001b[2K\"",
        ),
    )
    .unwrap();
    let out = s.credctl(&["reload"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        !stderr(&out).contains('\u{1b}'),
        "no escape reaches the terminal: {:?}",
        stderr(&out)
    );
    assert!(status_json(&s)["overrides"]
        .to_string()
        .contains(&s.sts.url));
}

//! No way around the touch: a second process of the same user, with the control socket and a
//! software authenticator of its own but no touch of a registered key, can neither remove the
//! user's key, nor enrol its own, nor take over the user's key-add ceremony. The user's key
//! keeps working throughout.

use credagent_proto::{read_frame, write_frame, ErrorCode, Request, Response};

use crate::stack::Stack;
use crate::util::{bin, hello, stderr};

/// `credctl ARGS` as the attacker: the same user and socket, its own software authenticator.
fn as_attacker(s: &Stack, args: &[&str]) -> std::process::Output {
    let evil = format!("soft:{}", s.env.home.join("attacker.cbor").display());
    s.env
        .command(bin("credctl"))
        .env("CREDCTL_AUTHENTICATOR", &evil)
        .args(args)
        .output()
        .unwrap()
}

fn key_names(s: &Stack) -> Vec<String> {
    let keys: serde_json::Value = serde_json::from_str(&s.ok(&["key", "list", "--json"])).unwrap();
    keys.as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap().to_owned())
        .collect()
}

fn request(sock: &mut std::os::unix::net::UnixStream, req: &Request) -> Response {
    write_frame(sock, req).unwrap();
    read_frame(sock).unwrap()
}

#[test]
fn the_key_swap_is_refused_without_a_touch() {
    let s = Stack::new("", "").with_key_and_source();
    assert_eq!(key_names(&s), ["soft"]);

    // Remove the user's key, with and without --force: the attacker's touch is no touch of a
    // registered key.
    for args in [
        &["key", "remove", "soft", "--force"][..],
        &["key", "remove", "soft"][..],
    ] {
        let out = as_attacker(&s, args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = stderr(&out);
        assert!(
            err.contains("nothing was removed") || err.contains("only registered key"),
            "{err}"
        );
    }
    // Enrol its own key: it must first be authorized by a registered key.
    let out = as_attacker(&s, &["key", "add", "evil"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("touch"), "{}", stderr(&out));
    assert_eq!(key_names(&s), ["soft"], "nothing changed");

    // The attacker's key opens nothing; the user's still does.
    let out = as_attacker(&s, &["env", "demo"]);
    assert!(!out.status.success(), "the attacker opened a role");
    s.role_token("demo");

    // The user removes a key with a touch: first a second key, authorized by the first.
    let spare = format!("soft:{}", s.env.home.join("spare.cbor").display());
    s.ok(&[
        "key",
        "add",
        "spare",
        "--authenticator",
        &spare,
        "--authorizer",
        &s.soft_arg(),
    ]);
    assert_eq!(key_names(&s), ["soft", "spare"]);
    s.ok(&["key", "remove", "spare"]);
    assert_eq!(key_names(&s), ["soft"]);
}

#[test]
fn a_key_add_ceremony_cannot_be_joined_or_answered_by_another_connection() {
    let s = Stack::new("", "").with_key_and_source();
    let (mut user, _) = hello(&s.env.sock).unwrap();
    let (mut attacker, _) = hello(&s.env.sock).unwrap();

    let id = match request(
        &mut user,
        &Request::KeyAddStart {
            name: "laptop".into(),
            accept_change: false,
        },
    ) {
        Response::Challenge(c) => {
            let (ceremony_id, role) = (c.ceremony_id, c.role);
            assert_eq!(
                role.as_deref(),
                Some("key add: laptop"),
                "an authorizing touch comes first"
            );
            ceremony_id
        }
        other => panic!("{other:?}"),
    };
    // The hijack: a second KeyAddStart for the same name used to follow the user's ceremony
    // and receive the registration challenge the user's touch released.
    match request(
        &mut attacker,
        &Request::KeyAddStart {
            name: "laptop".into(),
            accept_change: false,
        },
    ) {
        Response::Error { code, message } => {
            assert_eq!(code, ErrorCode::Refused, "{message}");
            assert!(message.contains("waits for its touch"), "{message}");
        }
        other => panic!("the attacker joined the key add: {other:?}"),
    }
    // Nor may it answer the user's ceremony, even knowing its id.
    match request(
        &mut attacker,
        &Request::Approve {
            ceremony_id: id.clone(),
            credential: serde_json::json!({}),
        },
    ) {
        Response::Error { code, message } => {
            assert_eq!(code, ErrorCode::Refused, "{message}");
            assert!(message.contains("another credctl"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // The user's ceremony is still there: junk from the user is refused without burning it,
    // and the user's key still opens roles afterwards.
    match request(
        &mut user,
        &Request::Approve {
            ceremony_id: id,
            credential: serde_json::json!({}),
        },
    ) {
        Response::Error { code, .. } => assert_eq!(code, ErrorCode::BadRequest),
        other => panic!("{other:?}"),
    }
    drop(user);
    s.role_token("demo");
}

/// One touch at a time: while the user is asked to touch for one role, a request for another
/// role waits instead of putting a second ceremony in front of the key, and gets its own as soon
/// as the first one ends.
#[test]
fn a_second_role_waits_for_the_touch_under_way() {
    let s = Stack::new(
        "[profile other]\nrole_arn = arn:aws:iam::123456789012:role/other\nsource_profile = SOURCE\n",
        "",
    )
    .with_key_and_source();
    let (mut user, _) = hello(&s.env.sock).unwrap();
    match request(
        &mut user,
        &Request::Open {
            role: "demo".into(),
            mfa_code: None,
            accept_change: false,
            renew: false,
        },
    ) {
        Response::Challenge(c) => assert_eq!(c.role.as_deref(), Some("demo")),
        other => panic!("{other:?}"),
    }
    let sock = s.env.sock.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let other = std::thread::spawn(move || {
        let (mut c, _) = hello(&sock).unwrap();
        c.set_read_timeout(Some(std::time::Duration::from_secs(60)))
            .unwrap();
        let r = request(
            &mut c,
            &Request::Open {
                role: "other".into(),
                mfa_code: None,
                accept_change: false,
                renew: false,
            },
        );
        tx.send(r).unwrap();
        c
    });
    // While demo's ceremony waits for its touch, other gets no challenge of its own...
    assert!(
        rx.recv_timeout(std::time::Duration::from_secs(1)).is_err(),
        "a second ceremony was started while the first waited for its touch"
    );
    // ...and gets one as soon as demo's ends (here: its client goes away).
    drop(user);
    match rx.recv_timeout(std::time::Duration::from_secs(30)) {
        Ok(Response::Challenge(c)) => assert_eq!(c.role.as_deref(), Some("other")),
        other => panic!("{other:?}"),
    }
    drop(other.join().unwrap());
}

/// A profile whose role ARN changed since it was last approved is not opened silently: the
/// person sees old and new and confirms, as with a changed ssh host key; both are audited.
#[test]
fn a_changed_role_arn_needs_an_explicit_confirmation() {
    let s = Stack::new("", "").with_key_and_source();
    s.role_token("demo");
    s.ok(&["lock"]);
    let config = s.env.home.join(".aws/config");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("role/demo", "role/admin")).unwrap();

    let out = s.credctl(&["env", "demo"]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("role/demo") && err.contains("role/admin") && err.contains("--accept-change"),
        "{err}"
    );
    let out = s.credctl(&["env", "demo", "--accept-change"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let audit_path = s.env.home.join(".local/state/credagent/audit.jsonl");
    let read = || std::fs::read_to_string(&audit_path).unwrap_or_default();
    crate::util::wait_until(std::time::Duration::from_secs(10), || {
        read().contains("change_refused") && read().contains("change_accepted")
    })
    .unwrap_or_else(|| panic!("{}", read()));
    let audit = read();
    let line = |action: &str| {
        audit
            .lines()
            .find(|l| l.contains(action))
            .unwrap_or_default()
            .to_owned()
    };
    let refused = line("change_refused");
    assert!(
        refused.contains("not_confirmed") && refused.contains("role/admin"),
        "{refused}"
    );
    let accepted = line("change_accepted");
    assert!(
        accepted.contains("\"done\"") && accepted.contains("role/admin"),
        "{accepted}"
    );
    // Confirmed once, it opens as usual from then on.
    s.ok(&["lock"]);
    s.role_token("demo");
}

/// Busy is visible: while the agent asks for a touch for one role, `status` lists it with who
/// asked, and a `credctl` that must wait behind it says for what and for whom before waiting;
/// it gets its own touch once the first one ends.
#[test]
fn a_credctl_waiting_behind_another_approval_says_for_what_and_whom() {
    use std::io::{BufRead, BufReader};
    let s = Stack::new(
        "[profile other]\nrole_arn = arn:aws:iam::123456789012:role/other\nsource_profile = SOURCE\n",
        "",
    )
    .with_key_and_source();
    let (mut user, _) = hello(&s.env.sock).unwrap();
    match request(
        &mut user,
        &Request::Open {
            role: "demo".into(),
            mfa_code: None,
            accept_change: false,
            renew: false,
        },
    ) {
        Response::Challenge(c) => assert_eq!(c.role.as_deref(), Some("demo")),
        other => panic!("{other:?}"),
    }
    let status = s.ok(&["status"]);
    assert!(
        status.contains("touching") && status.contains("role demo, asked by"),
        "{status}"
    );
    let json: serde_json::Value = serde_json::from_str(&s.ok(&["status", "--json"])).unwrap();
    assert_eq!(json["approvals"][0]["what"], "role demo", "{json}");

    let mut waiting = s
        .env
        .command(crate::util::bin("credctl"))
        .env("CREDCTL_AUTHENTICATOR", s.soft_arg())
        .args(["env", "other"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut said = BufReader::new(waiting.stderr.take().unwrap());
    let mut line = String::new();
    said.read_line(&mut line).unwrap();
    assert!(
        line.contains("waiting: the agent is asking for a touch for role demo, asked by"),
        "{line}"
    );
    // The first approval ends (its client goes away): the waiting one gets its own touch.
    drop(user);
    let out = waiting.wait_with_output().unwrap();
    assert!(out.status.success(), "{line}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("AWS_CONTAINER_AUTHORIZATION_TOKEN"));
}

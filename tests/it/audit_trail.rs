//! Every security-relevant event is in the audit, with the process that asked: touches accepted
//! and refused, sessions opened, lock, keys and sources added and removed, tokens issued and
//! revoked.

use std::time::Duration;

use crate::stack::Stack;
use crate::util::{bin, wait_until};

fn lines(s: &Stack) -> Vec<serde_json::Value> {
    std::fs::read_to_string(s.env.home.join(".local/state/credagent/audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The audit line for `channel` with `outcome` (and `subject`, if given).
fn find(
    s: &Stack,
    channel: &str,
    outcome: &str,
    subject: Option<&str>,
) -> Option<serde_json::Value> {
    lines(s).into_iter().find(|l| {
        l["channel"] == channel
            && l["outcome"] == outcome
            && subject.is_none_or(|x| l["subject"] == x)
    })
}

fn expect(s: &Stack, channel: &str, outcome: &str, subject: Option<&str>) -> serde_json::Value {
    wait_until(Duration::from_secs(10), || {
        find(s, channel, outcome, subject).is_some()
    })
    .unwrap_or_else(|| {
        panic!(
            "no {outcome} {channel} {subject:?} line in the audit:\n{:#?}",
            lines(s)
        )
    });
    find(s, channel, outcome, subject).unwrap()
}

#[test]
fn every_security_relevant_event_is_audited_with_who_asked() {
    let s = Stack::new("", "").with_key_and_source();
    // A byte-for-byte copy of the user's key, taken before the key is used: a clone.
    let clone = s.env.home.join("clone.cbor");
    std::fs::copy(&s.soft, &clone).unwrap();
    let token = s.role_token("demo");
    let id = token.split('_').nth(1).unwrap().to_owned();
    s.ok(&["token", "revoke", &id]);
    s.ok(&["lock"]);
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
    s.ok(&["key", "remove", "spare"]);
    // A touch of the clone (its counter went backwards): refused, and audited as such.
    let out = s
        .env
        .command(bin("credctl"))
        .args(["env", "demo", "--authenticator"])
        .arg(format!("soft:{}", clone.display()))
        .output()
        .unwrap();
    assert!(!out.status.success());
    s.ok(&["source", "remove", &s.source]);

    let key_add = expect(&s, "key_add", "done", Some("soft"));
    assert!(
        key_add["peer_exe"]
            .as_str()
            .unwrap_or("")
            .ends_with("credctl"),
        "the process that asked is named: {key_add}"
    );
    assert!(key_add["peer_pid"].as_i64().is_some(), "{key_add}");
    expect(&s, "source_add", "done", Some(&s.source));
    expect(&s, "touch", "done", Some("soft"));
    let touches: Vec<serde_json::Value> = lines(&s)
        .into_iter()
        .filter(|l| l["channel"] == "touch" && l["outcome"] == "done")
        .collect();
    // The touch that opened demo, and the one that proved the vault before the source was
    // sealed to it, each audited as what it was for.
    assert!(
        touches
            .iter()
            .any(|t| t["role"] == "demo" && t["subject"] == "soft"),
        "{touches:#?}"
    );
    assert!(
        touches.iter().any(|t| t["role"] == "confirm settings"),
        "{touches:#?}"
    );
    let opened = expect(&s, "session_open", "done", Some("soft"));
    assert_eq!(opened["role"], "demo");
    let issued = expect(&s, "token_issue", "done", Some("env"));
    assert_eq!(issued["token_id"], id.as_str());
    assert_eq!(issued["role"], "demo");
    let revoked = expect(&s, "token_revoke", "done", None);
    assert_eq!(revoked["token_id"], id.as_str());
    expect(&s, "lock", "done", None);
    expect(&s, "key_add", "done", Some("spare"));
    expect(&s, "key_remove", "done", Some("spare"));
    expect(&s, "source_remove", "done", Some(&s.source));
    let refused = expect(&s, "touch", "refused", None);
    assert_eq!(refused["role"], "demo");
    assert!(refused["reason"].as_str().is_some(), "{refused}");
    // The human view shows them too.
    let text = String::from_utf8(s.credctl(&["audit"]).stdout).unwrap();
    assert!(
        text.contains("key_remove") && text.contains("[spare]"),
        "{text}"
    );
}

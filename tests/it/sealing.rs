//! Sealed sources end to end, with the software authenticator speaking CTAP2 hmac-secret: the
//! keyring, the state files and HOME hold only ciphertext; only a touch of a registered key that
//! holds the vault opens a source; a same-user attacker who rewrites keys.json, vault.json or
//! config.toml and restarts the agent opens nothing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;

use crate::stack::{Stack, SECRET_KEY};
use crate::util::{bin, stderr, stdout, wait_until};

fn state_dir(s: &Stack) -> PathBuf {
    s.env.home.join(".local/state/credagent")
}

/// Every encoding the secret could be written in.
fn forms(secret: &str) -> Vec<Vec<u8>> {
    let b = secret.as_bytes();
    let engines = [
        base64::engine::general_purpose::STANDARD,
        base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ];
    let mut out = vec![
        b.to_vec(),
        hex::encode(b).into_bytes(),
        hex::encode_upper(b).into_bytes(),
    ];
    out.extend(engines.iter().map(|e| e.encode(b).into_bytes()));
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Files under `dir` (recursively) that hold the secret in any form.
fn files_with_secret(dir: &Path, secret: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file() {
                let bytes = std::fs::read(&path).unwrap_or_default();
                if forms(secret).iter().any(|f| contains(&bytes, f)) {
                    found.push(path);
                }
            }
        }
    }
    found
}

fn keyctl(args: &[&str]) -> String {
    let out = Command::new("keyctl").args(args).output().expect("keyctl");
    assert!(out.status.success(), "keyctl {args:?}: {}", stderr(&out));
    stdout(&out)
}

/// The payloads of this agent's entries in the kernel keyring (the suite runs under
/// `keyctl session -`; keyutils entries are linked into the user's persistent keyring).
fn keyring_payloads(s: &Stack) -> Vec<Vec<u8>> {
    let instance = std::fs::read_to_string(state_dir(s).join("instance")).unwrap();
    let instance = instance.trim();
    let persistent = keyctl(&["get_persistent", "@s"]);
    let mut payloads = Vec::new();
    for id in keyctl(&["rlist", persistent.trim()]).split_whitespace() {
        let Ok(out) = Command::new("keyctl").args(["rdescribe", id]).output() else {
            continue;
        };
        if !stdout(&out).contains(instance) {
            continue;
        }
        let out = Command::new("keyctl").args(["pipe", id]).output().unwrap();
        payloads.push(out.stdout);
    }
    payloads
}

fn keyring_holds_secret(s: &Stack) -> bool {
    keyring_payloads(s)
        .iter()
        .any(|p| forms(SECRET_KEY).iter().any(|f| contains(p, f)))
}

fn json(s: &Stack, args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&s.ok(args)).unwrap()
}

fn source_state(s: &Stack) -> String {
    let list = s.ok(&["source", "list"]);
    let line = list
        .lines()
        .find(|l| l.starts_with(&s.source))
        .unwrap_or_else(|| panic!("no source line in {list}"));
    line.split_whitespace().nth(2).unwrap().to_owned()
}

fn audit(s: &Stack) -> Vec<serde_json::Value> {
    std::fs::read_to_string(state_dir(s).join("audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn stop(s: &mut Stack) {
    s.ok(&["stop"]);
    assert!(
        s.agent.wait_exit(Duration::from_secs(10)).is_some(),
        "agent did not stop"
    );
}

/// Starts the agent again; the endpoint may have moved to another port.
fn start(s: &mut Stack) {
    s.agent = s.env.agent(&[]);
    s.http = json(s, &["status", "--json"])["http_addr"]
        .as_str()
        .unwrap()
        .to_owned();
}

fn restart(s: &mut Stack) {
    stop(s);
    start(s);
}

/// Waits for the audit line of `channel` refused for `reason`.
fn expect_refused(s: &Stack, channel: &str, reason: &str) {
    wait_until(Duration::from_secs(10), || {
        audit(s)
            .iter()
            .any(|l| l["channel"] == channel && l["outcome"] == "refused" && l["reason"] == reason)
    })
    .unwrap_or_else(|| panic!("no {channel} refused for {reason} in {:#?}", audit(s)));
}

#[test]
fn a_sealed_source_is_ciphertext_at_rest_and_opens_only_with_a_touch() {
    let mut s = Stack::new("", "").with_key_and_source();
    let status = json(&s, &["status", "--json"]);
    assert_eq!(status["vault"].as_str().map(str::len), Some(16), "{status}");
    assert_eq!(status["sealing"], "required");
    assert_eq!(status["unsealed_keys"], serde_json::json!([]));
    assert_eq!(json(&s, &["key", "list", "--json"])[0]["sealed"], true);
    assert_eq!(source_state(&s), "sealed");

    // A touch opens it, for the session.
    let token = s.role_token("demo");
    assert_eq!(s.ecs(Some(&token), &[]).0, 200);
    assert_eq!(source_state(&s), "open");

    // Lock wipes it: sealed again, nothing served until the next touch.
    s.ok(&["lock"]);
    assert_eq!(source_state(&s), "sealed");
    assert_eq!(s.ecs(Some(&token), &[]).0, 401, "lock revoked the token");
    assert_eq!(s.ecs(Some(&s.unopened_role_token("demo")), &[]).0, 403);

    // At rest, with the agent stopped: no form of the secret in HOME (which holds the state
    // directory, the config, the software authenticator's file) or in the keyring.
    stop(&mut s);
    assert_eq!(
        files_with_secret(&s.env.home, SECRET_KEY),
        Vec::<PathBuf>::new()
    );
    assert!(
        !keyring_payloads(&s).is_empty(),
        "the search saw this agent's entries"
    );
    assert!(!keyring_holds_secret(&s), "the keyring holds the secret");

    // After a restart, nothing is open until a touch.
    start(&mut s);
    assert_eq!(source_state(&s), "sealed");
    let token = s.unopened_role_token("demo");
    assert_eq!(s.ecs(Some(&token), &[]).0, 403);
    let token = s.role_token("demo");
    assert_eq!(s.ecs(Some(&token), &[]).0, 200);
}

#[test]
fn a_source_stored_before_the_vault_is_sealed_by_the_first_touch_that_opens_it() {
    let s = Stack::new("", "").with_source();
    // Before any key: stored as it was, and said so (the positive control of the search).
    assert_eq!(source_state(&s), "UNSEALED");
    assert!(keyring_holds_secret(&s));
    s.ok(&["key", "add", "soft", "--accept-change"]);
    assert_eq!(
        source_state(&s),
        "UNSEALED",
        "sealed only by a touch that opens it"
    );
    let token = s.role_token("demo");
    assert_eq!(s.ecs(Some(&token), &[]).0, 200, "nothing was lost");
    assert_eq!(source_state(&s), "open");
    assert!(
        !keyring_holds_secret(&s),
        "migrated: only ciphertext is left"
    );
}

#[test]
fn a_second_key_opens_what_the_first_sealed() {
    let s = Stack::new("", "").with_key_and_source();
    let second = s.env.home.join("second.cbor");
    let out = s
        .env
        .command(bin("credctl"))
        .args(["key", "add", "second", "--authenticator"])
        .arg(format!("soft:{}", second.display()))
        .args(["--authorizer", &s.soft_arg()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("holds a copy of your vault"),
        "{}",
        stdout(&out)
    );
    let keys = json(&s, &["key", "list", "--json"]);
    assert_eq!(keys.as_array().unwrap().len(), 2);
    assert!(
        keys.as_array().unwrap().iter().all(|k| k["sealed"] == true),
        "{keys}"
    );

    // The second key alone opens the sealed source.
    let out = s
        .env
        .command(bin("credctl"))
        .args(["env", "demo", "--authenticator"])
        .arg(format!("soft:{}", second.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let token = crate::stack::token_from_exports(&stdout(&out));
    assert_eq!(s.ecs(Some(&token), &[]).0, 200);
}

/// The attacker's own software key, registered with a scratch agent of its own.
fn attacker_keys() -> (PathBuf, Stack) {
    let scratch = Stack::new("", "");
    scratch.ok(&["key", "add", "evil", "--accept-change"]);
    let soft = scratch.soft.clone();
    (soft, scratch)
}

/// The attacker's touch: its own key, and it confirms whatever changed (it made the changes).
fn touch_with(s: &Stack, soft: &Path) -> std::process::Output {
    s.env
        .command(bin("credctl"))
        .args(["env", "demo", "--accept-change", "--authenticator"])
        .arg(format!("soft:{}", soft.display()))
        .output()
        .unwrap()
}

#[test]
fn replaced_key_and_vault_files_open_nothing() {
    let mut s = Stack::new("", "").with_key_and_source();
    let (evil_soft, scratch) = attacker_keys();
    let evil_state = scratch.env.home.join(".local/state/credagent");

    // keys.json listing only the attacker's key; the agent restarted.
    stop(&mut s);
    std::fs::copy(
        evil_state.join("keys.json"),
        state_dir(&s).join("keys.json"),
    )
    .unwrap();
    start(&mut s);
    let out = touch_with(&s, &evil_soft);
    assert!(
        !out.status.success(),
        "the attacker's touch opened the role"
    );
    assert!(
        stderr(&out).contains("holds no copy of the vault in vault.json"),
        "{}",
        stderr(&out)
    );
    expect_refused(&s, "touch", "key_not_sealed");

    // Its own vault.json too: its touch unwraps its own vault, which opens no source of ours.
    std::fs::copy(
        evil_state.join("vault.json"),
        state_dir(&s).join("vault.json"),
    )
    .unwrap();
    restart(&mut s);
    let out = touch_with(&s, &evil_soft);
    assert!(
        !out.status.success(),
        "the attacker's vault opened the role"
    );
    assert!(stderr(&out).contains("another vault"), "{}", stderr(&out));
    expect_refused(&s, "session_open", "sealed");
    assert!(!keyring_holds_secret(&s));
}

#[test]
fn a_config_that_allows_unsealed_keys_opens_nothing_sealed() {
    let mut s = Stack::new("", "").with_key_and_source();
    let (evil_soft, scratch) = attacker_keys();
    let evil_state = scratch.env.home.join(".local/state/credagent");
    stop(&mut s);
    std::fs::copy(
        evil_state.join("keys.json"),
        state_dir(&s).join("keys.json"),
    )
    .unwrap();
    let config = s.env.home.join(".config/credagent/config.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("[approval]\n", "[approval]\nsealing = \"allow-unsealed\"\n"),
    )
    .unwrap();
    start(&mut s);
    let status = json(&s, &["status", "--json"]);
    assert_eq!(status["sealing"], "allow-unsealed");
    assert_eq!(status["unsealed_keys"], serde_json::json!(["evil"]));
    assert!(s.ok(&["status"]).contains("UNSEALED"));

    // The policy now lets the attacker's key approve by policy, but while a vault exists a touch
    // that unwraps nothing cannot vouch for the settings: refused before anything opens (found
    // by the attack review: a trusted.json rewritten to match was otherwise never checked).
    let out = touch_with(&s, &evil_soft);
    assert!(!out.status.success(), "the role opened");
    assert!(
        stderr(&out).contains("holds no copy of your vault"),
        "{}",
        stderr(&out)
    );
    assert_eq!(source_state(&s), "sealed");
    let token = s.unopened_role_token("demo");
    assert_eq!(s.ecs(Some(&token), &[]).0, 403);
    expect_refused(&s, "change_refused", "not_sealed");
}

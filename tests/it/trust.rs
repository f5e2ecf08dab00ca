//! The rule of the threat model: nothing a same-user process can write decides what a touch
//! opens or where a secret goes, unless a touch authenticated it. Each test plays that process
//! (it edits the agent's files and restarts it, but never touches the user's key) and expects
//! nothing served, nothing sent, and the change shown at the user's next touch.

use std::net::TcpListener;
use std::process::Stdio;
use std::time::Duration;

use crate::stack::{key_counter, Stack};
use crate::util::{bin, stderr, stdout};

fn state_dir(s: &Stack) -> std::path::PathBuf {
    s.env.home.join(".local/state/credagent")
}

fn config_path(s: &Stack) -> std::path::PathBuf {
    s.env.home.join(".config/credagent/config.toml")
}

fn edit(path: &std::path::Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(
        text.contains(from),
        "{} has no {from:?}:\n{text}",
        path.display()
    );
    std::fs::write(path, text.replace(from, to)).unwrap();
}

fn restart(s: &mut Stack) {
    s.ok(&["stop"]);
    assert!(
        s.agent.wait_exit(Duration::from_secs(10)).is_some(),
        "agent did not stop"
    );
    s.agent = s.env.agent(&[]);
    let status: serde_json::Value = serde_json::from_str(&s.ok(&["status", "--json"])).unwrap();
    s.http = status["http_addr"].as_str().unwrap().to_owned();
}

fn audit_lines(s: &Stack, action: &str) -> Vec<String> {
    std::fs::read_to_string(state_dir(s).join("audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&format!("\"{action}\"")))
        .map(str::to_owned)
        .collect()
}

/// `credctl source add NAME --stdin` with `lines` (key id, then secret), touching the user's
/// software key when asked if `touch`.
fn add_source(s: &Stack, name: &str, lines: &str, touch: bool) -> std::process::Output {
    use std::io::Write;
    let mut cmd = s.env.command(crate::util::bin("credctl"));
    if touch {
        cmd.env("CREDCTL_AUTHENTICATOR", s.soft_arg());
    }
    let mut child = cmd
        .args(["source", "add", name, "--stdin", "--replace"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(lines.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// A `prod` profile on the same source as `demo`.
const PROD: &str =
    "[profile prod]\nrole_arn = arn:aws:iam::123456789012:role/prod\nsource_profile = SOURCE\n";

/// A stack whose `demo` a touch opened once (so its target and its source's key are recorded),
/// then locked: the next use needs a touch again.
fn opened_then_locked(extra_aws: &str) -> Stack {
    let s = Stack::new(extra_aws, "").with_key_and_source();
    s.role_token("demo");
    s.ok(&["lock"]);
    s
}

/// The attacker, with no touch: the keyring switched to files and an old-format, unsealed entry
/// holding its own access key planted as the stack's source (the agent picks it up on restart).
fn plant_attacker_source(s: &Stack) {
    edit(
        &config_path(s),
        "keyring = \"keyutils\"",
        "keyring = \"file\"",
    );
    let dir = state_dir(s).join("sources");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join(hex::encode(&s.source)),
        "credagent-source-v1\nAKIAATTACKERKEY00001\nattackerSecretAccessKey0123456789abcdef",
    )
    .unwrap();
}

/// `approved.json` was the attack: re-point `dev` at prod's ARN in `~/.aws/config`, rewrite the
/// record of what `dev` was approved as, restart. The record is MAC'd under the vault now: the
/// routine touch for `dev` is refused with old and new, and nothing reaches STS.
#[test]
fn a_repointed_role_with_its_record_rewritten_opens_nothing_until_confirmed() {
    let mut s = opened_then_locked(PROD);
    restart(&mut s);
    let trusted = state_dir(&s).join("trusted.json");
    assert!(
        std::fs::read_to_string(&trusted)
            .unwrap()
            .contains("role/demo"),
        "the touch recorded what demo opened"
    );
    // The attacker: demo now points at prod's role, and the record agrees.
    edit(
        &s.env.home.join(".aws/config"),
        "role/demo\n",
        "role/prod\n",
    );
    edit(&trusted, "role/demo", "role/prod");
    restart(&mut s);
    let before = s.sts.calls("AssumeRole").len();
    let out = s.credctl(&["env", "demo"]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("rewritten behind the agent's back"), "{err}");
    assert!(err.contains("credctl use demo --accept-change"), "{err}");
    assert_eq!(
        s.sts.calls("AssumeRole").len(),
        before,
        "nothing reached STS"
    );
    crate::util::wait_until(Duration::from_secs(10), || {
        !audit_lines(&s, "change_refused").is_empty()
    })
    .expect("the refusal is audited");
    // The person made the change after all: confirmed with a touch, it opens.
    let out = s.credctl(&["env", "demo", "--accept-change"]);
    assert!(out.status.success(), "{}", stderr(&out));
    crate::util::wait_until(Duration::from_secs(10), || {
        audit_lines(&s, "change_accepted")
            .iter()
            .any(|l| l.contains("role/prod"))
    })
    .unwrap_or_else(|| panic!("{:?}", audit_lines(&s, "change_accepted")));
    // And from then on without a word.
    s.ok(&["lock"]);
    assert!(s.credctl(&["env", "demo"]).status.success());
}

/// Each weakening of the policy in config.toml, with a restart: refused before the touch (no
/// touch is asked for), each setting named with old and new; `--accept-change` applies it.
#[test]
fn a_policy_weakened_behind_the_agents_back_is_shown_and_needs_a_confirming_touch() {
    let mut s = opened_then_locked("");
    edit(
        &config_path(&s),
        "[approval]\n",
        "session_ttl = \"12h\"\nlock_on = []\nmfa_session_ttl = \"36h\"\n[approval]\nuser_verification = \"discouraged\"\n",
    );
    restart(&mut s);
    let counter = key_counter(&s);
    let out = s.credctl(&["env", "demo"]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let err = stderr(&out);
    for needle in [
        "session_ttl in config.toml: was 1h, now 12h",
        "lock_on in config.toml: was [suspend, screen-lock], now []",
        "mfa_session_ttl in config.toml: was 12h, now 1day 12h",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
    assert!(!err.contains("\\n"), "real newlines, not escapes: {err}");
    assert_eq!(key_counter(&s), counter, "no touch was asked for");
    let status = s.ok(&["status"]);
    assert!(
        status.contains("settings   CHANGED since a touch"),
        "{status}"
    );
    // `credctl confirm` refuses the same way without --accept-change…
    let out = s.credctl(&["confirm"]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    // …and confirms with it (one touch), after which the role opens as usual.
    s.ok(&["confirm", "--accept-change"]);
    assert_eq!(key_counter(&s), counter + 1);
    let status = s.ok(&["status"]);
    assert!(
        status.contains("settings   confirmed by a touch since the agent started"),
        "{status}"
    );
    assert!(s.credctl(&["env", "demo"]).status.success());
}

/// An endpoint override planted in config.toml, and another in the agent's environment, with a
/// restart: the listener they name receives nothing; the refusal names the setting.
#[test]
fn planted_endpoint_overrides_receive_nothing() {
    let mut s = opened_then_locked("");
    let trap = TcpListener::bind("127.0.0.1:0").unwrap();
    trap.set_nonblocking(true).unwrap();
    let relay = format!("http://{}", trap.local_addr().unwrap());
    let config = std::fs::read_to_string(config_path(&s)).unwrap();
    let sts_line = config
        .lines()
        .find(|l| l.starts_with("sts_endpoint"))
        .unwrap()
        .to_owned();
    edit(
        &config_path(&s),
        &sts_line,
        &format!("sts_endpoint = \"{relay}\"\nfederation_endpoint = \"{relay}\""),
    );
    // The agent's own environment too: never read for endpoints.
    s.env
        .extra_env
        .push(("AWS_ENDPOINT_URL_STS".into(), relay.clone()));
    s.env
        .extra_env
        .push(("AWS_ENDPOINT_URL".into(), relay.clone()));
    s.env.extra_env.push(("HTTPS_PROXY".into(), relay.clone()));
    s.env
        .extra_env
        .push(("SSL_CERT_FILE".into(), "/nonexistent/planted-ca.pem".into()));
    restart(&mut s);
    let log = s.agent.log_text();
    assert!(
        log.contains("ignoring SSL_CERT_FILE") && log.contains("ignoring AWS_ENDPOINT_URL_STS"),
        "{log}"
    );
    let out = s.credctl(&["env", "demo"]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("sts_endpoint in config.toml: was {}", s.sts.url))
            && err.contains(&format!("now {relay}")),
        "{err}"
    );
    assert!(err.contains("federation_endpoint"), "{err}");
    // The attacker's own process cannot confirm with the user's key; nothing was sent.
    assert!(trap.accept().is_err(), "the planted endpoint was contacted");
    // Put back, the environment alone changes nothing: the configured STS serves.
    edit(
        &config_path(&s),
        &format!("sts_endpoint = \"{relay}\"\nfederation_endpoint = \"{relay}\""),
        &sts_line,
    );
    restart(&mut s);
    let before = s.sts.calls("AssumeRole").len();
    let out = s.credctl(&["env", "demo"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(s.sts.calls("AssumeRole").len() > before);
    assert!(
        trap.accept().is_err(),
        "the environment's endpoint was contacted"
    );
    let status = stdout(&s.credctl(&["status"]));
    assert!(!status.contains(&relay), "{status}");
}

/// A swapped `vault.json`: nothing is sealed to a vault that no touch has proven since the agent
/// started, so `source add` is refused (and says how to prove it), not sealed to the attacker.
#[test]
fn nothing_is_sealed_to_a_vault_no_touch_proved_since_the_restart() {
    let mut s = Stack::new("", "").with_key_and_source();
    // The attacker's own vault, made by a scratch agent with its own key.
    let scratch = Stack::new("", "");
    scratch.ok(&["key", "add", "evil", "--accept-change"]);
    let evil_vault = scratch.env.home.join(".local/state/credagent/vault.json");
    std::fs::copy(&evil_vault, state_dir(&s).join("vault.json")).unwrap();
    restart(&mut s);
    let out = add_source(
        &s,
        "second",
        "AKIAIOSFODNN7SECOND1\nwJalrXUtnFEMI/K7MDENG/bPxRfiCYSECONDKEY\n",
        true,
    );
    assert!(!out.status.success(), "sealed to an unproven vault");
    // Adding a source takes the user's touch, which cannot unwrap the attacker's vault.
    let err = stderr(&out);
    assert!(err.contains("takes a touch"), "{err}");
    assert!(err.contains("vault.json was replaced"), "{err}");
    let list = s.ok(&["source", "list"]);
    assert!(!list.contains("second"), "{list}");
    // The user's touch cannot unwrap the attacker's vault: the swap is named, and nothing opens.
    let out = s.credctl(&["confirm"]);
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("vault.json was replaced"),
        "{}",
        stderr(&out)
    );
}

/// `vault.json` deleted and the agent restarted: the user's next touch must not make a new
/// vault (every sealed source would become unopenable); it says what happened.
#[test]
fn a_deleted_vault_is_not_replaced_by_the_next_touch() {
    let mut s = opened_then_locked("");
    let vault = state_dir(&s).join("vault.json");
    let before = std::fs::read(&vault).unwrap();
    std::fs::remove_file(&vault).unwrap();
    restart(&mut s);
    let out = s.credctl(&["env", "demo", "--accept-change"]);
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("vault.json is missing"),
        "{}",
        stderr(&out)
    );
    assert!(!vault.exists(), "a new vault was made");
    // Nor is a source added now stored unsealed (the sixth attack review's way to a secret).
    let out =
        s.env
            .command(bin("credctl"))
            .env("CREDCTL_AUTHENTICATOR", s.soft_arg())
            .args(["source", "add", "sneaky", "--stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(
                    b"AKIAIOSFODNN7NEWSRC2\nNEWSECRETxxxxxxxxxxxxxxVictimTypedThis99\n",
                )?;
                c.wait_with_output()
            })
            .unwrap();
    assert!(
        !out.status.success() && stderr(&out).contains("vault.json is missing"),
        "{:?}: {}{}",
        out.status,
        stdout(&out),
        stderr(&out)
    );
    assert!(
        !s.ok(&["source", "list"]).contains("sneaky"),
        "nothing was stored"
    );
    assert!(!vault.exists(), "a new vault was made");
    // Restored, it opens as before.
    std::fs::write(&vault, before).unwrap();
    restart(&mut s);
    assert!(s.credctl(&["env", "demo"]).status.success());
}

/// `keys.json` deleted along with `vault.json` looks like a fresh install, but `trusted.json`
/// still names the vault: a source added now is not stored unsealed either.
#[test]
fn deleting_the_keys_as_well_makes_no_fresh_install_for_a_new_source() {
    let mut s = opened_then_locked("");
    for f in ["vault.json", "keys.json"] {
        std::fs::remove_file(state_dir(&s).join(f)).unwrap();
    }
    restart(&mut s);
    let out = add_source(
        &s,
        "sneaky",
        "AKIAIOSFODNN7NEWSRC2\nNEWSECRETxxxxxxxxxxxxxxVictimTypedThis99\n",
        true,
    );
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(
        !s.ok(&["source", "list"]).contains("sneaky"),
        "nothing was stored"
    );
}

/// The second attack review's swap: keys.json, vault.json and trusted.json all replaced by the
/// attacker's own (validly MAC'd) set, the agent restarted, and the attacker's own key touched
/// once, so "a touch proved the vault" holds. The user's next `source add` must still not be
/// sealed to that vault: adding a source takes the user's own touch on that same command, which
/// the swapped keys.json does not accept.
#[test]
fn a_swapped_state_proved_by_the_attackers_touch_receives_no_new_source() {
    let mut s = Stack::new("", "").with_key_and_source();
    let scratch = Stack::new("", "");
    scratch.ok(&["key", "add", "evil", "--accept-change"]);
    let evil_state = scratch.env.home.join(".local/state/credagent");
    s.ok(&["stop"]);
    assert!(s.agent.wait_exit(Duration::from_secs(10)).is_some());
    for f in ["keys.json", "vault.json", "trusted.json"] {
        std::fs::copy(evil_state.join(f), state_dir(&s).join(f)).unwrap();
    }
    s.agent = s.env.agent(&[]);
    // The attacker touches its own key: the swapped vault is now "proven" in this agent.
    let out = s
        .env
        .command(crate::util::bin("credctl"))
        .args(["confirm", "--accept-change", "--authenticator"])
        .arg(scratch.soft_arg())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    // The user adds a source, touching their own key when asked.
    let out = add_source(
        &s,
        "newsrc",
        "AKIAIOSFODNN7NEWSRC1\nwJalrXUtnFEMI/K7MDENG/bPxRfiCYNEWSOURCE\n",
        true,
    );
    assert!(!out.status.success(), "sealed to the attacker's vault");
    assert!(stderr(&out).contains("takes a touch"), "{}", stderr(&out));
    let list = s.ok(&["source", "list"]);
    assert!(!list.contains("newsrc"), "{list}");
}

/// With every state file removed the agent looks new: a source added then is stored unsealed
/// (as on a fresh install, until a key seals it), and credctl says so loudly.
#[test]
fn a_source_added_with_no_key_is_called_unsealed() {
    let s = Stack::new("", "");
    let out = add_source(
        &s,
        "bare",
        "AKIAIOSFODNN7BARESRC\nwJalrXUtnFEMI/K7MDENG/bPxRfiCYBARESOURCE\n",
        false,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("warning: UNSEALED"),
        "{}",
        stdout(&out)
    );
    s.ok(&["source", "remove", "bare"]);
}

/// The third attack review's substitution: with no touch, a process replaces the source's entry
/// by one holding its own access key (here: the keyring switched to files and an old-format,
/// unsealed entry planted). The touch vouches for the key the source holds, not only its name,
/// so the user's routine touch is refused as a change and nothing is signed with that key.
#[test]
fn a_source_entry_replaced_behind_the_agents_back_opens_nothing() {
    let mut s = opened_then_locked("");
    plant_attacker_source(&s);
    restart(&mut s);
    let before = s.sts.calls("AssumeRole").len();
    let out = s.credctl(&["env", "demo"]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("AKIAIOSFODNN7EXAMPLE") && err.contains("AKIAATTACKERKEY00001"),
        "{err}"
    );
    assert_eq!(
        s.sts.calls("AssumeRole").len(),
        before,
        "nothing was signed"
    );
}

/// The fourth attack review: a source entry replaced with another key, then a role the user
/// never opened on that source. The key a source holds is recorded per source (by `source add`
/// with the person's touch, and by the first touch that opens it), so a role seen for the first
/// time does not adopt the planted key.
#[test]
fn a_planted_source_key_is_refused_for_a_role_never_opened() {
    let mut s = opened_then_locked(PROD);
    plant_attacker_source(&s);
    restart(&mut s);
    let before = s.sts.calls("AssumeRole").len();
    let out = s.credctl(&["env", "prod"]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("holds access key AKIAATTACKERKEY00001"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        s.sts.calls("AssumeRole").len(),
        before,
        "nothing was signed"
    );
}

/// Replacing a source's key yourself (`source add`, which takes your touch) is no change to
/// confirm: the next touch records the key you stored.
#[test]
fn a_source_replaced_with_source_add_opens_without_confirmation() {
    let s = opened_then_locked("");
    let out = add_source(
        &s,
        &s.source,
        "AKIAIOSFODNN7ROTATED\nwJalrXUtnFEMI/K7MDENG/bPxRfiCYROTATEDKEY\n",
        true,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = s.credctl(&["env", "demo"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// What a program of the user's gets from the key without its PIN (it talks to the device
/// itself, as it could over `/dev/hidraw*`): the hmac-secret output of a touch without user
/// verification at the evaluation point vault.json names. Whether that output unwraps the
/// vault, offline.
fn lured_touch_opens_the_vault(s: &Stack) -> bool {
    let vault = credagent::vault::VaultFile::load(&state_dir(s).join("vault.json"))
        .unwrap()
        .expect("a vault");
    assert_eq!(vault.wraps.len(), 1);
    let wrap = &vault.wraps[0];
    let mut key = credctl::authenticator::soft::SoftAuthenticator::open(&s.soft).unwrap();
    let output = key
        .prf_without_uv("localhost", &wrap.credential_id, &wrap.point)
        .unwrap();
    let output = credagent::vault::PrfOutput::from_slice(output.as_slice()).unwrap();
    vault.unwrap(&wrap.credential_id, &output).is_ok()
}

fn wrap_user_verified(s: &Stack) -> bool {
    let vault = credagent::vault::VaultFile::load(&state_dir(s).join("vault.json"))
        .unwrap()
        .unwrap();
    vault.wraps[0].user_verified
}

/// User verification by default: a touch lured over hidraw without the PIN yields an output
/// that opens nothing. A touch-only setup (the attack works there: the control) moves its
/// wrap to the PIN at its next approval through credctl.
#[test]
fn a_touch_lured_without_the_pin_opens_nothing() {
    let mut s =
        Stack::new("", "approval.user_verification = \"discouraged\"").with_key_and_source();
    s.ok(&["env", "demo"]);
    assert!(!wrap_user_verified(&s));
    assert!(
        lured_touch_opens_the_vault(&s),
        "touch-only: a touch without the PIN opens the vault"
    );
    let status = s.ok(&["status"]);
    assert!(status.contains("TOUCH ONLY"), "{status}");
    assert!(s.ok(&["key", "list"]).contains("sealed, TOUCH ONLY"));

    // Back to the default: a routine approval neither opens the touch-only wrap nor asks for a
    // touch without the PIN; it says to run `credctl key pin`, which moves the wrap (a touch
    // without the PIN, then one with it) and confirms the changed setting.
    edit(
        &config_path(&s),
        "user_verification = \"discouraged\"\n",
        "",
    );
    restart(&mut s);
    let out = s.credctl(&["env", "demo", "--accept-change"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("credctl key pin"), "{}", stderr(&out));
    assert!(
        !stderr(&out).contains("without the PIN, to move"),
        "{}",
        stderr(&out)
    );
    assert!(!wrap_user_verified(&s));
    let out = s.credctl(&["key", "pin", "--accept-change"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("once more, without the PIN"),
        "{}",
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("moved key soft's copy"),
        "{}",
        stdout(&out)
    );
    assert!(wrap_user_verified(&s));
    assert!(
        !lured_touch_opens_the_vault(&s),
        "a touch without the PIN must open nothing"
    );
    assert!(s
        .agent
        .log_text()
        .contains("moved the key's copy of the vault"));

    // From now on one touch with the PIN does, and the wrong PIN opens nothing.
    let out = s.credctl(&["env", "demo"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("once more"), "{}", stderr(&out));
    s.ok(&["lock"]);
    let out = s
        .env
        .command(bin("credctl"))
        .env("CREDCTL_AUTHENTICATOR", s.soft_arg())
        .env("CREDCTL_SOFT_PIN", "000000")
        .args(["env", "demo"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("wrong PIN"), "{}", stderr(&out));
    let status = s.ok(&["status"]);
    assert!(!status.contains("TOUCH ONLY"), "{status}");
    assert!(s.ok(&["key", "list"]).contains("sealed, PIN/biometric"));
}

/// The seventh attack review: `vault.json` and `trusted.json` deleted, the user's key set to
/// approve touch-only in `keys.json` and in `config.toml`, agent restarted; one touch of the
/// user's key taken without its PIN made a vault of its own and adopted the weaker policy, and
/// the user's next source went to it. Now no touch of a registered key makes a vault.
#[test]
fn a_deleted_vault_is_not_remade_by_a_touch_without_the_pin() {
    let mut s = Stack::new("", "").with_key_and_source();
    s.ok(&["env", "demo"]);
    s.ok(&["stop"]);
    assert!(s.agent.wait_exit(Duration::from_secs(10)).is_some());
    for file in ["vault.json", "trusted.json"] {
        std::fs::remove_file(state_dir(&s).join(file)).unwrap();
    }
    edit(
        &state_dir(&s).join("keys.json"),
        "\"registration_policy\": \"required\"",
        "\"registration_policy\": \"discouraged\"",
    );
    let config = std::fs::read_to_string(config_path(&s)).unwrap();
    std::fs::write(
        config_path(&s),
        config.replace(
            "[approval]\n",
            "[approval]\nuser_verification = \"discouraged\"\n",
        ),
    )
    .unwrap();
    s.agent = s.env.agent(&[]);
    // The attacker's touch of the user's key, without the PIN.
    let out = s
        .env
        .command(bin("credctl"))
        .env("CREDCTL_AUTHENTICATOR", s.soft_arg())
        .env_remove("CREDCTL_SOFT_PIN")
        .args(["confirm"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("vault.json is missing"),
        "{}",
        stderr(&out)
    );
    assert!(
        !state_dir(&s).join("vault.json").exists(),
        "no vault was made"
    );
    assert!(!s.agent.log_text().contains("created the vault"));
    // The user's routine command says what to restore, and opens nothing.
    let out = s.credctl(&["env", "demo"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("Restore vault.json"),
        "{}",
        stderr(&out)
    );
}

/// The ninth attack review: keys.json, vault.json and trusted.json deleted and config.toml
/// pointed at the attacker's STS, touch-only: the user's re-registration adopted it all unseen.
/// Now the first key's touch shows such settings first and vouches for them only when told to.
#[test]
fn a_first_key_adopts_redirecting_or_weaker_settings_only_when_told() {
    let s = Stack::new("", "approval.user_verification = \"discouraged\"");
    let out = s.credctl(&["key", "add", "mine"]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("sts_endpoint = http://127.0.0.1")
            && err.contains("approval.user_verification = discouraged (default: required)")
            && err.contains("--accept-change")
            && err.contains("restore keys.json, vault.json and trusted.json"),
        "{err}"
    );
    let keys: serde_json::Value = serde_json::from_str(&s.ok(&["key", "list", "--json"])).unwrap();
    assert!(keys.as_array().unwrap().is_empty(), "nothing registered");
    assert!(!state_dir(&s).join("vault.json").exists());
    s.ok(&["key", "add", "mine", "--accept-change"]);
    assert!(state_dir(&s).join("vault.json").exists());
}

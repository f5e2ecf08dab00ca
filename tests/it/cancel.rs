//! A client that goes away after its touch, during a slow STS call, leaves neither a dead
//! ceremony nor a half-open session: the session opens all the same, and whoever asks next is
//! served without another touch.

use std::time::Duration;

use crate::stack::{key_counter, token_from_exports, Stack};
use crate::util::{bin, wait_until};

#[test]
fn a_client_killed_after_its_touch_still_opens_the_session() {
    let s = Stack::new("", "").with_key_and_source();
    let before = key_counter(&s);
    // The next STS call takes 3 s.
    std::fs::write(&s.sts.faults, "0 3000\n").unwrap();
    let mut first = s
        .env
        .command(bin("credctl"))
        .env("CREDCTL_AUTHENTICATOR", s.soft_arg())
        .args(["env", "demo"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Touched, and STS is being asked: now the client goes away.
    wait_until(Duration::from_secs(20), || {
        !s.sts.calls("AssumeRole").is_empty()
    })
    .expect("the touch reached STS");
    first.kill().unwrap();
    first.wait().unwrap();
    assert_eq!(key_counter(&s), before + 1, "one touch was taken");

    // The next client gets the session the touch opened, without a touch of its own.
    let token = token_from_exports(&s.ok(&["env", "demo"]));
    assert_eq!(s.ecs(Some(&token), &[]).0, 200);
    assert_eq!(key_counter(&s), before + 1, "no second touch");
    assert_eq!(s.sts.calls("AssumeRole").len(), 1, "no second STS call");
    let opened = std::fs::read_to_string(s.env.home.join(".local/state/credagent/audit.jsonl"))
        .unwrap()
        .lines()
        .filter(|l| l.contains("\"session_open\"") && l.contains("\"done\""))
        .count();
    assert_eq!(opened, 1, "the session opened once");
}

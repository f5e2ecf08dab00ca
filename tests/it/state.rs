//! One agent per state directory; an orphaned agent can be found and stopped; start-up errors
//! reach whoever started the agent; an agent that stops drains its audit.

use std::time::Duration;

use crate::stack::Stack;
use crate::util::{bin, stderr, wait_until, TestEnv};

#[test]
fn a_second_agent_on_the_same_state_directory_refuses_and_names_the_first() {
    let env = TestEnv::new();
    let first = env.agent(&[]);
    // Another socket, the same HOME (after logout removed XDG_RUNTIME_DIR, or the /tmp
    // fallback): the state directory is what two agents would fight over.
    let other_sock = env.dir.path().join("other/agent.sock");
    let out = env
        .command(bin("credagent"))
        .args(["--foreground", "--socket", other_sock.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&format!("pid {}", first.child.id())) && err.contains("credctl stop"),
        "{err}"
    );
    assert!(
        !other_sock.exists(),
        "the second agent left a socket behind"
    );
}

#[test]
fn an_orphaned_agent_is_found_and_stopped() {
    let env = TestEnv::new();
    let mut agent = env.agent(&[]);
    // Its socket disappears, as when logout removes XDG_RUNTIME_DIR while it lingers.
    std::fs::remove_file(&env.sock).unwrap();
    let out = env.credctl(&["stop"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("orphaned agent"),
        "{out:?}"
    );
    wait_until(Duration::from_secs(10), || {
        matches!(agent.child.try_wait(), Ok(Some(_)))
    })
    .expect("the orphaned agent stopped");
}

#[test]
fn start_up_errors_are_reported_with_their_real_cause() {
    let env = TestEnv::new();
    let state = env.home.join(".local/state/credagent");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::set_permissions(&state, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    std::fs::write(state.join("keys.json"), "{\"version\":1,\"keys\":[").unwrap();
    std::fs::set_permissions(
        state.join("keys.json"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let out = env.credctl(&["start"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("keys.json") && err.contains("damaged"),
        "{err}"
    );
    assert!(!err.contains("serves only its own user"), "{err}");
}

#[test]
fn a_request_served_right_before_stop_is_in_the_audit() {
    let s = Stack::new("", "").with_key_and_source();
    let token = s.role_token("demo");
    let id = token.split('_').nth(1).unwrap().to_owned();
    assert_eq!(s.ecs(Some(&token), &[]).0, 200);
    s.ok(&["stop"]);
    let audit =
        std::fs::read_to_string(s.env.home.join(".local/state/credagent/audit.jsonl")).unwrap();
    assert!(
        audit
            .lines()
            .any(|l| l.contains("\"served\"") && l.contains(&id) && l.contains("\"ecs\"")),
        "the last request before stop is missing:\n{audit}"
    );
    assert!(audit.lines().any(|l| l.contains("\"stop\"")), "{audit}");
}

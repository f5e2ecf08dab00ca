//! Another user flooding the agent with connections fills neither its log nor its disk: every
//! refusal is audited (merged into counted lines), and the log says so at most once per period.

use std::path::Path;
use std::time::Duration;

use crate::util::{self, as_user, wait_until, TestEnv};

const ATTEMPTS: u64 = 300;

fn audited_refusals(env: &TestEnv) -> u64 {
    std::fs::read_to_string(env.home.join(".local/state/credagent/audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["reason"] == "other_user" && l["channel"] == "http")
        .map(|l| l["count"].as_u64().unwrap_or(1))
        .sum()
}

#[test]
fn a_flood_of_refused_connections_leaves_the_log_bounded() {
    let user = util::other_user();
    let env = TestEnv::new();
    let agent = env.agent(&[]);
    let status: serde_json::Value =
        serde_json::from_slice(&env.credctl(&["status", "--json"]).stdout).unwrap();
    let port = status["http_addr"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .to_owned();
    let script = format!(
        "import socket\nfor _ in range({ATTEMPTS}):\n    s = socket.create_connection(('127.0.0.1', \
         {port}))\n    s.settimeout(5)\n    s.recv(1)\n    s.close()\n"
    );
    let out = as_user(user, Path::new("/usr/bin/python3"), &["-c", &script]);
    assert!(out.status.success(), "{out:?}");

    // The positive control: every one of them was refused and audited.
    wait_until(Duration::from_secs(10), || {
        audited_refusals(&env) == ATTEMPTS
    })
    .unwrap_or_else(|| panic!("{} of {ATTEMPTS} refusals audited", audited_refusals(&env)));
    let logged = agent
        .log_text()
        .matches("refused http connection from another user")
        .count();
    assert!(
        (1..=2).contains(&logged),
        "{logged} log lines for {ATTEMPTS} refusals"
    );
}

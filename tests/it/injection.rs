//! Names chosen by other processes never reach the terminal raw: a process whose executable is
//! named with escape sequences shows up in `credctl audit` with its control characters escaped.

use std::os::unix::fs::PermissionsExt;

use crate::stack::Stack;
use crate::util::wait_until;

/// A copy of curl named `name` that asks the agent with `token`, then waits on a listener that
/// never answers: alive (so the agent can name it) until killed. The listener goes with it.
fn hostile_curl(
    s: &Stack,
    name: &str,
    token: &str,
) -> (std::process::Child, std::net::TcpListener) {
    let evil = s.env.dir.path().join(name);
    std::fs::copy("/usr/bin/curl", &evil).unwrap();
    std::fs::set_permissions(&evil, std::fs::Permissions::from_mode(0o755)).unwrap();
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hang = format!("http://{}/", silent.local_addr().unwrap());
    let curl = std::process::Command::new(&evil)
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-o",
            "/dev/null",
            "--max-time",
            "60",
        ])
        .args(["-H", &format!("Authorization: {token}")])
        .args([&s.ecs_uri(), &hang])
        .spawn()
        .unwrap();
    (curl, silent)
}

#[test]
fn a_hostile_executable_name_is_shown_escaped_in_the_audit() {
    let s = Stack::new("", "").with_key_and_source();
    let token = s.role_token("demo");
    // A copy of curl whose name clears the screen and retitles the terminal.
    let (mut curl, _silent) = hostile_curl(&s, "evil\x1b[2J\x1b]0;pwn\x07", &token);
    let shown = || String::from_utf8(s.credctl(&["audit"]).stdout).unwrap();
    wait_until(std::time::Duration::from_secs(10), || {
        shown().contains("evil\\u{1b}[2J\\u{1b}]0;pwn\\u{7}")
    })
    .unwrap_or_else(|| {
        panic!(
            "the hostile name is not in the audit, escaped:\n{}",
            shown()
        )
    });
    let _ = curl.kill();
    let _ = curl.wait();
    for view in [
        shown(),
        String::from_utf8(s.credctl(&["audit", "--json"]).stdout).unwrap(),
    ] {
        assert!(
            !view.contains('\x1b') && !view.contains('\x07'),
            "a control character reached the terminal:\n{view:?}"
        );
    }
}

/// A pending approval names the program that asked: `credctl status` and `credctl watch` show
/// that name escaped, so it cannot rewrite the lines around the touch prompt (found by an
/// attack review that wiped the real role's line and printed another in its place).
#[test]
fn a_hostile_executable_name_is_shown_escaped_by_status_and_watch() {
    let s = Stack::new("", "").with_key_and_source();
    let token = s.unopened_role_token("demo");
    let (mut curl, _silent) = hostile_curl(
        &s,
        "aws\x1b[2K\r\nfake: role sandbox requested by terraform\x1b[8m",
        &token,
    );
    wait_until(std::time::Duration::from_secs(10), || {
        s.ok(&["status"]).contains("fake: role sandbox")
    })
    .expect("the request is pending");
    let status = s.ok(&["status"]);
    let watch = s.credctl(&["watch", "--once"]);
    let _ = curl.kill();
    let _ = curl.wait();
    let watched = crate::util::stderr(&watch);
    for view in [&status, &watched] {
        assert!(
            !view.contains('\x1b') && !view.contains('\r'),
            "a control character reached the terminal:\n{view:?}"
        );
    }
    assert!(watched.contains("role demo requested by"), "{watched}");
}

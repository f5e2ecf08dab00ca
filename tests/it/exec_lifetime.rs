//! An `exec` token lives exactly as long as its command: the control connection that scopes it
//! is never closed for idleness, while an idle connection holding nothing is.

use std::io::Read;
use std::time::Duration;

use crate::stack::Stack;
use crate::util::{hello, stdout};

#[test]
fn an_exec_outlives_the_control_idle_timeout() {
    // A 2 s idle limit stands in for the real 300 s: the rule under test is that a connection
    // holding exec tokens has no limit at all, whatever its value.
    let s = Stack::new_with_env("", "", &[("CREDAGENT_CONTROL_IDLE", "2s")]).with_key_and_source();

    // The positive control: a greeted connection that sends nothing is closed after the limit.
    let (mut idle, _) = hello(&s.env.sock).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut buf = [0u8; 1];
    assert_eq!(
        idle.read(&mut buf).unwrap(),
        0,
        "the idle connection was not closed"
    );

    // The command sleeps past the limit, then asks for credentials with its token.
    let out = s.credctl(&[
        "exec",
        "demo",
        "--",
        "sh",
        "-c",
        "sleep 5; curl -s -o /dev/null -w '%{http_code}' -H \"Authorization: \
         $AWS_CONTAINER_AUTHORIZATION_TOKEN\" \"$AWS_CONTAINER_CREDENTIALS_FULL_URI\"",
    ]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        stdout(&out),
        "200",
        "the exec token died with the idle timeout"
    );
}

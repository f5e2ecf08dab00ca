//! The agent's environment is explicit: a shell pointed at a local emulator (direnv setting
//! `AWS_ENDPOINT_URL`) starts an agent that sends nothing there; endpoint overrides come from
//! config.toml, and `credctl status` shows every one in force.

use std::net::TcpListener;

use crate::stack::Stack;
use crate::util::{bin, stderr, stdout};

#[test]
fn a_shell_full_of_endpoint_variables_sends_nothing_there() {
    let s = Stack::new("", "");
    // The stack's own agent is a foreground one; stop it and let credctl start one from a
    // polluted shell, as a user would.
    s.ok(&["stop"]);
    let trap = TcpListener::bind("127.0.0.1:0").unwrap();
    trap.set_nonblocking(true).unwrap();
    let emulator = format!("http://{}", trap.local_addr().unwrap());
    let polluted = |s: &Stack, args: &[&str]| {
        s.env
            .command(bin("credctl"))
            .env("CREDCTL_AUTHENTICATOR", s.soft_arg())
            .env("AWS_ENDPOINT_URL", &emulator)
            .env("AWS_ENDPOINT_URL_STS", &emulator)
            .env("AWS_REGION", "eu-west-3")
            .args(args)
            .output()
            .unwrap()
    };
    let out = polluted(&s, &["start"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let s = s.with_key_and_source();
    let out = polluted(&s, &["env", "demo"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        trap.accept().is_err(),
        "the agent sent a request to the shell's emulator"
    );
    assert!(
        !s.sts.calls("AssumeRole").is_empty(),
        "the role was opened through the configured STS"
    );
    let status = stdout(&polluted(&s, &["status"]));
    assert!(
        status.contains("override") && status.contains("sts_endpoint in config.toml"),
        "{status}"
    );
    s.ok(&["stop"]);
}

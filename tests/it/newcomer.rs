//! What a new user trips over: SDKs silently preferring other credentials, secrets echoed in
//! errors, and exit statuses that disagree with the documented table.

use std::io::Write;
use std::process::Stdio;

use crate::stack::{assert_demo_arn, Stack, BOTO3_WHOAMI};
use crate::util::{bin, stderr, stdout};

const STATIC_KEYS: &str =
    "[default]\naws_access_key_id = AKIAIOSFODNN7STATIC\naws_secret_access_key = \
     wJalrXUtnFEMI/K7MDENG/bPxRfiCYSTATICKEY\n";

/// boto3 under `credctl exec demo`, with the caller's shell environment `vars`.
fn exec_whoami(s: &Stack, vars: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = s.env.command(bin("credctl"));
    cmd.env("CREDCTL_AUTHENTICATOR", s.soft_arg())
        .env("AWS_ENDPOINT_URL_STS", &s.sts.moto_url)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .args(["exec", "demo", "--", "python3", "-c", BOTO3_WHOAMI]);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[test]
fn no_silent_bypass_by_a_default_profile_or_aws_profile() {
    let s = Stack::new("[profile static]\nregion = us-east-1\n", "").with_key_and_source();
    std::fs::write(s.env.home.join(".aws/credentials"), STATIC_KEYS).unwrap();

    // botocore reads [default] before the container provider: exec's command must still get
    // the role, and the user is told how to fix the file.
    let out = exec_whoami(&s, &[]);
    assert_demo_arn("exec with [default] keys in ~/.aws/credentials", &out);
    assert!(
        stderr(&out).contains("--import-profile default --remove-from-file"),
        "{}",
        stderr(&out)
    );
    // AWS_PROFILE left set by the user would win too (or fail): exec's command does not see it.
    let out = exec_whoami(
        &s,
        &[("AWS_PROFILE", "static"), ("AWS_DEFAULT_PROFILE", "static")],
    );
    assert_demo_arn("exec with AWS_PROFILE set", &out);

    // start unsets them in the shell and says so.
    let exports = s.ok(&["start"]);
    for v in ["AWS_PROFILE", "AWS_DEFAULT_PROFILE"] {
        assert!(exports.contains(&format!("unset {v};")), "{exports}");
    }
    assert!(
        exports.lines().any(|l| l.starts_with("# credagent unsets")),
        "{exports}"
    );
    // use warns about what this shell still has.
    let out = s
        .env
        .command(bin("credctl"))
        .env("CREDCTL_AUTHENTICATOR", s.soft_arg())
        .env(
            "AWS_CONTAINER_AUTHORIZATION_TOKEN",
            crate::stack::token_from_exports(&exports),
        )
        .env("AWS_PROFILE", "static")
        .args(["use", "demo"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("AWS_PROFILE is set in this shell"), "{err}");
    assert!(err.contains("[default]"), "{err}");
}

#[test]
fn a_swapped_secret_is_never_echoed() {
    let s = Stack::new("", "");
    let secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYSWAPPEDKEY";
    let mut child = s
        .env
        .command(bin("credctl"))
        .args(["source", "add", "swapped", "--stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{secret}\nAKIAIOSFODNN7EXAMPLE\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("swapped"), "{}", stderr(&out));
    for text in [stdout(&out), stderr(&out), s.agent.log_text()] {
        assert!(!text.contains(secret) && !text.contains("wJalr"), "{text}");
    }
    assert!(
        !s.ok(&["source", "list"]).contains("swapped"),
        "nothing was stored"
    );
}

#[test]
fn exec_exits_like_a_shell_when_the_command_cannot_run() {
    let s = Stack::new("", "").with_key_and_source();
    let missing = s.credctl(&["exec", "demo", "--", "no-such-command-credagent"]);
    assert_eq!(missing.status.code(), Some(127), "{}", stderr(&missing));
    let not_exec = s.env.dir.path().join("not-executable");
    std::fs::write(&not_exec, "#!/bin/sh\n").unwrap();
    let denied = s.credctl(&["exec", "demo", "--", not_exec.to_str().unwrap()]);
    assert_eq!(denied.status.code(), Some(126), "{}", stderr(&denied));
    let own = s.credctl(&["exec", "demo", "--", "sh", "-c", "exit 42"]);
    assert_eq!(own.status.code(), Some(42));
}

//! The real SDKs against the agent: Rust aws-config's default chain (tests/probe), the JS SDK
//! v3 (tests/js/sts-probe.mjs) and boto3 (tests/py/boto3_probe.py), each via the ECS endpoint and
//! via IMDSv2, each printing the assumed-role ARN that moto's GetCallerIdentity returns.

use std::process::Command;
use std::time::Duration;

use crate::stack::{assert_demo_arn, Stack};
use crate::util::{aws_config_probe, repo, stderr, wait_until};

/// The three SDK probes as commands.
fn probes() -> Vec<(&'static str, Command)> {
    let mut js = Command::new("node");
    js.arg(repo().join("tests/js/sts-probe.mjs"));
    let mut py = Command::new("python3");
    py.arg(repo().join("tests/py/boto3_probe.py"));
    vec![
        ("rust aws-config", Command::new(aws_config_probe())),
        ("js sdk v3", js),
        ("boto3", py),
    ]
}

/// Applies a scrubbed environment for `s` plus `vars` to `cmd`.
fn scrubbed(s: &Stack, cmd: &mut Command, vars: &[(&str, String)]) {
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", &s.env.home)
        .env("AWS_ENDPOINT_URL_STS", &s.sts.moto_url)
        .env("AWS_REGION", "us-east-1")
        .current_dir(&s.env.home);
    for (k, v) in vars {
        cmd.env(k, v);
    }
}

#[test]
fn every_sdk_gets_the_role_through_ecs() {
    let s = Stack::new("", "").with_key_and_source();
    let token = s.role_token("demo");
    let file = s.env.home.join("token");
    s.ok(&["env", "demo", "--token-file", file.to_str().unwrap()]);
    for (what, mut cmd) in probes() {
        scrubbed(
            &s,
            &mut cmd,
            &[
                ("AWS_CONTAINER_CREDENTIALS_FULL_URI", s.ecs_uri()),
                ("AWS_CONTAINER_AUTHORIZATION_TOKEN", token.clone()),
                ("AWS_EC2_METADATA_DISABLED", "true".into()),
            ],
        );
        assert_demo_arn(&format!("{what} via ECS (token)"), &cmd.output().unwrap());
    }
    for (what, mut cmd) in probes() {
        scrubbed(
            &s,
            &mut cmd,
            &[
                ("AWS_CONTAINER_CREDENTIALS_FULL_URI", s.ecs_uri()),
                (
                    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                    file.display().to_string(),
                ),
                ("AWS_EC2_METADATA_DISABLED", "true".into()),
            ],
        );
        assert_demo_arn(
            &format!("{what} via ECS (token file)"),
            &cmd.output().unwrap(),
        );
    }
}

#[test]
fn every_sdk_gets_the_role_through_imds() {
    let s = Stack::new("", "").with_key_and_source();
    s.role_token("demo");
    s.ok(&["imds", "demo"]);
    for (what, mut cmd) in probes() {
        scrubbed(
            &s,
            &mut cmd,
            &[(
                "AWS_EC2_METADATA_SERVICE_ENDPOINT",
                format!("http://{}", s.http),
            )],
        );
        assert_demo_arn(&format!("{what} via IMDSv2"), &cmd.output().unwrap());
    }
}

/// How many requests the agent has refused as `bad_token` so far (audit lines merge repeats
/// into a `count`).
fn bad_token_refusals(s: &Stack) -> u64 {
    std::fs::read_to_string(s.env.home.join(".local/state/credagent/audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|l| l["outcome"] == "refused" && l["reason"] == "bad_token")
        .map(|l| l["count"].as_u64().unwrap_or(1))
        .sum()
}

#[test]
fn every_sdk_fails_fast_on_a_revoked_or_wrong_token() {
    let s = Stack::new("", "").with_key_and_source();
    s.role_token("demo");
    for (what, mut cmd) in probes() {
        scrubbed(
            &s,
            &mut cmd,
            &[
                ("AWS_CONTAINER_CREDENTIALS_FULL_URI", s.ecs_uri()),
                (
                    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
                    "cat1_0123456789abcdef_00".into(),
                ),
                ("AWS_EC2_METADATA_DISABLED", "true".into()),
            ],
        );
        let before = bad_token_refusals(&s);
        let out = cmd.output().unwrap();
        assert!(!out.status.success(), "{what} succeeded with a wrong token");
        // The SDK gave up on the agent's answer (a 401 for the token: SDKs retry a few times,
        // JS 4 × 1 s), not on a request the agent left hanging.
        wait_until(Duration::from_secs(10), || bad_token_refusals(&s) > before).unwrap_or_else(
            || {
                panic!(
                    "{what}: the agent refused none of its requests: {}",
                    stderr(&out)
                )
            },
        );
    }
    // The agent is still healthy.
    assert_eq!(s.ecs(Some(&s.role_token("demo")), &[]).0, 200);
}

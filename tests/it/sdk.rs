//! The real SDKs against the agent: Rust aws-config's default chain (tests/probe), the JS SDK
//! v3 (tests/js/sts-probe.mjs) and boto3 (tests/py/boto3_probe.py), each via the ECS endpoint and
//! via IMDSv2, each printing the assumed-role ARN that moto's GetCallerIdentity returns.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::stack::{assert_demo_arn, Stack};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// The Rust probe, built by scripts/test (`cargo build --manifest-path tests/probe/Cargo.toml`).
fn rust_probe() -> PathBuf {
    let from_env = std::env::var_os("CREDAGENT_AWS_CONFIG_PROBE").map(PathBuf::from);
    let candidates = from_env.into_iter().chain([
        repo().join("tests/probe/target/debug/aws-config-probe"),
        std::env::var_os("CARGO_TARGET_DIR")
            .map(|d| PathBuf::from(d).join("debug/aws-config-probe"))
            .unwrap_or_default(),
    ]);
    candidates.into_iter().find(|p| p.is_file()).unwrap_or_else(|| {
        panic!("the aws-config probe is not built: run `cargo build --manifest-path tests/probe/Cargo.toml` (scripts/test does)")
    })
}

/// The three SDK probes as commands.
fn probes() -> Vec<(&'static str, Command)> {
    let mut js = Command::new("node");
    js.arg(repo().join("tests/js/sts-probe.mjs"));
    let mut py = Command::new("python3");
    py.arg(repo().join("tests/py/boto3_probe.py"));
    vec![
        ("rust aws-config", Command::new(rust_probe())),
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
        let t0 = std::time::Instant::now();
        let out = cmd.output().unwrap();
        assert!(!out.status.success(), "{what} succeeded with a wrong token");
        // SDKs retry a few times (JS 4 × 1 s); none waits on the agent itself.
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(15),
            "{what}: {:?}",
            t0.elapsed()
        );
    }
    // The agent is still healthy.
    assert_eq!(s.ecs(Some(&s.role_token("demo")), &[]).0, 200);
}

//! tests/py/sso_server.py, the local IAM Identity Center (SSO OIDC and the SSO portal) that the
//! IAM Identity Center sources are tested against, checked here against the real AWS clients:
//! tests/py/sso_selftest.py drives it with botocore's `sso-oidc` and `sso` clients (device code,
//! PKCE authorization code as the AWS CLI v2 builds it, refresh, portal, logout), botocore's SSO
//! credential provider from a `[sso-session]` profile and the installed AWS CLI v1, with moto as
//! STS for the chained AssumeRole. A fake that the real clients disagree with would make every
//! SSO test above it prove nothing.

use std::process::Output;

use crate::stack::spawn_listening;
use crate::util::{repo, stderr, stdout, TestEnv};

/// Starts moto and the fake (with `args`, its settings) and runs the self-test against them.
fn selftest(args: &[&str]) -> Output {
    let env = TestEnv::new();
    let dir = env.dir.path();
    let mut moto = std::process::Command::new("python3");
    moto.arg(repo().join("tests/py/moto_sts.py"));
    let (_moto, mport) = spawn_listening(
        moto,
        "moto (pip install 'moto[server]')",
        &dir.join("moto.log"),
    );
    let mut fake = std::process::Command::new("python3");
    fake.arg(repo().join("tests/py/sso_server.py")).args(args);
    let (_fake, sport) = spawn_listening(fake, "the SSO fake", &dir.join("sso.log"));
    let out = env
        .command("python3")
        .arg(repo().join("tests/py/sso_selftest.py"))
        .args([
            format!("http://127.0.0.1:{sport}"),
            format!("http://127.0.0.1:{mport}"),
        ])
        .output()
        .expect("run sso_selftest.py");
    assert!(
        out.status.success(),
        "sso_selftest.py {args:?} failed ({}):\n--- stdout\n{}\n--- stderr\n{}\n--- the fake's log\n{}",
        out.status,
        stdout(&out),
        stderr(&out),
        std::fs::read_to_string(dir.join("sso.log")).unwrap_or_default()
    );
    out
}

#[test]
fn sso_fake_agrees_with_the_real_clients() {
    let out = selftest(&[]);
    let text = stdout(&out);
    for step in [
        "CreateToken before approval: AuthorizationPendingException",
        "CreateToken (authorization_code) with the code verifier",
        "CreateToken with a replayed code: InvalidGrantException",
        "CreateToken with a rotated-out refresh token: InvalidGrantException",
        "50 parallel GetRoleCredentials",
        "chained AssumeRole at moto",
        "botocore refreshed the token",
        "boto3 profile chained on the SSO profile",
        "aws (v1) sts get-caller-identity --profile chained",
        "sso_selftest: all checks passed",
    ] {
        assert!(
            text.contains(step),
            "no {step:?} in the self-test's output:\n{text}"
        );
    }
}

#[test]
fn sso_fake_without_rotation_and_short_tokens_agrees_with_the_real_clients() {
    let out = selftest(&[
        "access_token_lifetime=300",
        "rotate_refresh_tokens=false",
        "refresh_tokens=always",
    ]);
    let text = stdout(&out);
    for step in [
        "refresh without rotation: the same refresh token, usable again",
        "botocore refreshed the token",
        "sso_selftest: all checks passed",
    ] {
        assert!(
            text.contains(step),
            "no {step:?} in the self-test's output:\n{text}"
        );
    }
}

//! The credential endpoint under hostile and heavy use: bad tokens, DNS rebinding, browser
//! requests, SSRF through a proxy, IMDSv2, the AWS CLI, idle connection floods; and the audit
//! lines each case leaves.

use std::net::TcpStream;
use std::time::Duration;

use crate::stack::{assert_demo_arn, Stack, BOTO3_WHOAMI};
use crate::util::{stdout, wait_until};

fn audit_lines(s: &Stack) -> Vec<serde_json::Value> {
    std::fs::read_to_string(s.env.home.join(".local/state/credagent/audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn has_reason(s: &Stack, reason: &str) -> bool {
    audit_lines(s)
        .iter()
        .any(|l| l["outcome"] == "refused" && l["reason"] == reason)
}

#[test]
fn hostile_requests_are_refused_and_audited() {
    let s = Stack::new("", "").with_key_and_source();
    let token = s.role_token("demo");
    assert_eq!(s.ecs(Some(&token), &[]).0, 200);

    let (code, body) = s.ecs(Some("cat1_0000000000000000_00"), &[]);
    assert_eq!(code, 401, "{body}");
    let (code, _) = s.ecs(None, &[]);
    assert_eq!(code, 401);
    let (code, body) = s.ecs(Some(&token), &["Host: evil.example"]);
    assert_eq!(code, 403, "{body}");
    let (code, body) = s.ecs(
        Some(&token),
        &[&format!(
            "Host: evil.example:{}",
            s.http.rsplit(':').next().unwrap()
        )],
    );
    assert_eq!(code, 403, "{body}");
    let (code, body) = s.ecs(Some(&token), &["Origin: https://evil.example"]);
    assert_eq!(code, 403, "{body}");
    let (code, _) = s.ecs(Some(&token), &["Sec-Fetch-Mode: no-cors"]);
    assert_eq!(code, 403);
    // IMDS token through a proxy (SSRF): refused.
    let out = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT"])
        .args([
            "-H",
            "X-aws-ec2-metadata-token-ttl-seconds: 60",
            "-H",
            "X-Forwarded-For: 10.0.0.1",
        ])
        .arg(format!("http://{}/latest/api/token", s.http))
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "403");

    // boto3 with a wrong token fails fast with an auth error; the agent is still healthy.
    let t0 = std::time::Instant::now();
    let out = s
        .sdk_command("python3", "cat1_0000000000000000_ff")
        .args(["-c", BOTO3_WHOAMI])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    assert_eq!(s.ecs(Some(&token), &[]).0, 200);

    wait_until(Duration::from_secs(5), || {
        [
            "bad_token",
            "missing_token",
            "bad_host",
            "browser_request",
            "forwarded",
        ]
        .iter()
        .all(|r| has_reason(&s, r))
    })
    .unwrap_or_else(|| panic!("audit lines missing: {:#?}", audit_lines(&s)));
    let served = audit_lines(&s)
        .into_iter()
        .find(|l| l["outcome"] == "served")
        .unwrap();
    assert_eq!(served["role"], "demo");
    assert_eq!(served["channel"], "ecs");
    assert_eq!(served["peer_uid"], nix::unistd::getuid().as_raw());
    assert!(served["token_id"].as_str().unwrap().len() == 16);
}

#[test]
fn imds_serves_only_the_chosen_role_to_boto3_and_the_aws_cli() {
    let s = Stack::new("", "").with_key_and_source();
    s.role_token("demo");
    let imds = |program: &str, args: &[&str]| {
        s.env
            .command(program)
            .env(
                "AWS_EC2_METADATA_SERVICE_ENDPOINT",
                format!("http://{}", s.http),
            )
            .env("AWS_ENDPOINT_URL_STS", &s.sts.moto_url)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .args(args)
            .output()
            .unwrap()
    };
    // No role chosen for IMDS: the SDK finds no credentials.
    let out = imds("python3", &["-c", BOTO3_WHOAMI]);
    assert!(!out.status.success(), "{}", stdout(&out));
    s.ok(&["imds", "demo"]);
    let out = imds("python3", &["-c", BOTO3_WHOAMI]);
    assert_demo_arn("sdk", &out);
    let out = imds(
        "aws",
        &[
            "sts",
            "get-caller-identity",
            "--query",
            "Arn",
            "--output",
            "text",
        ],
    );
    assert_demo_arn("sdk", &out);
    wait_until(Duration::from_secs(5), || {
        audit_lines(&s)
            .iter()
            .any(|l| l["channel"] == "imds" && l["outcome"] == "served")
    })
    .expect("imds issuance audited");
    // After lock IMDS serves nothing.
    s.ok(&["lock"]);
    let out = imds("python3", &["-c", BOTO3_WHOAMI]);
    assert!(!out.status.success());
}

#[test]
fn aws_cli_through_ecs() {
    let s = Stack::new("", "").with_key_and_source();
    let token = s.role_token("demo");
    let out = s
        .sdk_command("aws", &token)
        .args([
            "sts",
            "get-caller-identity",
            "--query",
            "Arn",
            "--output",
            "text",
        ])
        .output()
        .unwrap();
    assert_demo_arn("aws cli", &out);
}

#[test]
fn two_thousand_idle_connections_do_not_starve_an_sdk() {
    let s = Stack::new("", "").with_key_and_source();
    let token = s.role_token("demo");
    let (soft, hard) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    if soft < 4096 {
        nix::sys::resource::setrlimit(
            nix::sys::resource::Resource::RLIMIT_NOFILE,
            hard.min(8192),
            hard,
        )
        .unwrap();
    }
    let idle: Vec<TcpStream> = (0..2000)
        .map(|_| TcpStream::connect(&s.http).expect("connect"))
        .collect();
    let out = s
        .sdk_command("python3", &token)
        .args(["-c", BOTO3_WHOAMI])
        .output()
        .unwrap();
    assert_demo_arn("sdk", &out);
    drop(idle);
    assert!(
        s.agent
            .log_text()
            .lines()
            .all(|l| !l.contains("accept failed")),
        "{}",
        s.agent.log_text()
    );
}

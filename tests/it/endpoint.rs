//! The credential endpoint under hostile and heavy use: bad tokens, DNS rebinding, browser
//! requests, SSRF through a proxy, IMDSv2, the AWS CLI, idle connection floods; and the audit
//! lines each case leaves.

use std::net::TcpStream;
use std::time::Duration;

use crate::stack::{assert_demo_arn, Stack, BOTO3_WHOAMI};
use crate::util::{stderr, stdout, wait_until};

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

    // boto3 with a wrong token fails fast with an auth error: it gives up on the agent's 401
    // answer, not on a timeout. The agent is still healthy.
    let out = s
        .sdk_command("python3", "cat1_0000000000000000_ff")
        .args(["-c", BOTO3_WHOAMI])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("non 200 response 401") && err.contains("bad_token"),
        "{err}"
    );
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

/// One HTTP/1.1 keep-alive connection to the agent, as an SDK's connection pool holds it.
struct KeepAlive {
    stream: std::io::BufReader<TcpStream>,
    host: String,
}

impl KeepAlive {
    fn connect(s: &Stack) -> KeepAlive {
        let stream = TcpStream::connect(&s.http).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        KeepAlive {
            stream: std::io::BufReader::new(stream),
            host: s.http.clone(),
        }
    }

    /// Sends one request and reads its response: (status, body).
    fn request(&mut self, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
        use std::io::{BufRead, Read, Write};
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.host);
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        self.stream.get_mut().write_all(req.as_bytes()).unwrap();
        let mut status = String::new();
        self.stream.read_line(&mut status).unwrap();
        let code: u16 = status
            .split_whitespace()
            .nth(1)
            .unwrap_or_else(|| panic!("no status line: {status:?}"))
            .parse()
            .unwrap();
        let mut length = 0;
        loop {
            let mut line = String::new();
            self.stream.read_line(&mut line).unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let lower = line.to_ascii_lowercase();
            assert!(
                !lower.starts_with("connection: close"),
                "the agent closed a keep-alive connection"
            );
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        self.stream.read_exact(&mut body).unwrap();
        (code, String::from_utf8(body).unwrap())
    }

    fn ecs(&mut self, token: &str) -> u16 {
        self.request("GET", "/v1/credentials", &[("Authorization", token)])
            .0
    }
}

/// Sum of the `count`s of served ECS lines for one token.
fn served_count(s: &Stack, token: &str) -> u64 {
    let id = token.split('_').nth(1).unwrap();
    audit_lines(s)
        .iter()
        .filter(|l| l["outcome"] == "served" && l["token_id"] == id)
        .map(|l| l["count"].as_u64().unwrap_or(1))
        .sum()
}

#[test]
fn revocation_lock_and_role_switches_reach_an_open_keep_alive_connection_at_once() {
    use std::io::{BufRead, Write};
    let s = Stack::new("", "").with_key_and_source();
    s.role_token("demo");

    // An exec token serves only its command's process tree: the command and a grandchild of
    // it are served, while this test process, outside the tree, is refused even with the token
    // in hand. The command waits for a line on stdin.
    let fetch = "curl -s -o /dev/null -w '%{http_code}' -H \"Authorization: $AWS_CONTAINER_AUTHORIZATION_TOKEN\" \"$AWS_CONTAINER_CREDENTIALS_FULL_URI\"";
    let mut exec = s
        .env
        .command(crate::util::bin("credctl"))
        .env("CREDCTL_AUTHENTICATOR", s.soft_arg())
        .args([
            "exec",
            "demo",
            "--",
            "sh",
            "-c",
            &format!(
                "echo \"$AWS_CONTAINER_AUTHORIZATION_TOKEN\"; {fetch}; echo; sh -c \"sh -c '{}'\"; echo; read line",
                fetch.replace('\'', "").replace('"', "\\\"")
            ),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(exec.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let exec_token = line.trim().to_owned();
    assert!(exec_token.starts_with("cat1_"), "{line:?}");
    for who in ["the command", "its grandchild"] {
        line.clear();
        out.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "200", "{who}");
    }
    let mut conn = KeepAlive::connect(&s);
    let (code, body) = conn.request("GET", "/v1/credentials", &[("Authorization", &exec_token)]);
    assert_eq!(code, 401, "a process outside the command's tree: {body}");
    assert!(body.contains("token_elsewhere"), "{body}");
    let status: serde_json::Value = serde_json::from_str(&s.ok(&["status", "--json"])).unwrap();
    assert_eq!(status["tokens_refused_elsewhere"], 1);
    writeln!(exec.stdin.take().unwrap()).unwrap();
    assert!(exec.wait().unwrap().success());

    // Every request on a keep-alive connection is audited, memo or not.
    let token = s.role_token("demo");
    for _ in 0..50 {
        assert_eq!(conn.ecs(&token), 200);
    }
    wait_until(Duration::from_secs(5), || served_count(&s, &token) == 50)
        .unwrap_or_else(|| panic!("served {} of 50", served_count(&s, &token)));

    // A role-bound token, then lock: the next request on the connection is refused.
    let token = s.role_token("demo");
    assert_eq!(conn.ecs(&token), 200);
    assert_eq!(conn.ecs(&token), 200);
    let unopened = s.unopened_role_token("demo");
    assert_eq!(conn.ecs(&unopened), 200);
    s.ok(&["lock"]);
    let (code, body) = conn.request("GET", "/v1/credentials", &[("Authorization", &token)]);
    assert_eq!(code, 401, "lock revokes role-bound tokens: {body}");
    let (code, body) = conn.request("GET", "/v1/credentials", &[("Authorization", &unopened)]);
    assert_eq!(code, 401, "{body}");

    // IMDS on the same connection: a role switch and a lock both apply to the next request.
    let token = s.role_token("demo");
    let (code, imds_token) = conn.request(
        "PUT",
        "/latest/api/token",
        &[("X-aws-ec2-metadata-token-ttl-seconds", "60")],
    );
    assert_eq!(code, 200);
    let creds = "/latest/meta-data/iam/security-credentials/demo";
    let imds = |conn: &mut KeepAlive| {
        conn.request("GET", creds, &[("X-aws-ec2-metadata-token", &imds_token)])
            .0
    };
    s.ok(&["imds", "demo"]);
    assert_eq!(imds(&mut conn), 200);
    assert_eq!(imds(&mut conn), 200);
    s.ok(&["imds", "--off"]);
    assert_eq!(imds(&mut conn), 404);
    s.ok(&["imds", "demo"]);
    assert_eq!(imds(&mut conn), 200);
    assert_eq!(conn.ecs(&token), 200);
    s.ok(&["lock"]);
    assert_eq!(imds(&mut conn), 401, "lock forgets IMDS tokens");
    assert_eq!(conn.ecs(&token), 401, "lock revokes role-bound tokens");
}

/// Whether the agent has closed `stream` (EOF or reset), without waiting.
fn closed(stream: &mut TcpStream) -> bool {
    use std::io::Read;
    stream.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 1024];
    let closed = loop {
        match stream.read(&mut buf) {
            Ok(0) => break true,
            // Whatever the agent said before closing (e.g. a 408) is not the question.
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break false,
            Err(_) => break true,
        }
    };
    stream.set_nonblocking(false).unwrap();
    closed
}

#[test]
fn idle_and_trickling_connections_are_closed_and_busy_ones_are_not() {
    use std::io::Write;
    let s = Stack::new("", "").with_key_and_source();
    let token = s.role_token("demo");
    // Never finishes its request head.
    let mut trickle = TcpStream::connect(&s.http).unwrap();
    trickle
        .write_all(b"GET /v1/credentials HTTP/1.1\r\nHost: ")
        .unwrap();
    // One answered request, then silence.
    let mut idle = KeepAlive::connect(&s);
    assert_eq!(idle.ecs(&token), 200);
    // A request every 2 s on one connection, until the agent has closed both others: the busy
    // one outlives them, so the agent closes for silence, not for age. (The deadline only stops
    // a broken agent from hanging the test; the idle timeout is 5 s.)
    let mut busy = KeepAlive::connect(&s);
    wait_until(Duration::from_secs(60), || {
        assert_eq!(busy.ecs(&token), 200, "a busy connection stays open");
        if closed(&mut trickle) && closed(idle.stream.get_mut()) {
            return true;
        }
        std::thread::sleep(Duration::from_secs(2));
        false
    })
    .expect("the agent closes idle and trickling connections");
    assert_eq!(busy.ecs(&token), 200, "a busy connection stays open");
}

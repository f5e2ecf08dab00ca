//! Requests that a proxy or parser could read two ways (a repeated `Host` or credential header,
//! an absolute-form target naming another authority) get 400 and an audit line, and the same
//! request written once is served: the refusal is about the ambiguity, not the request.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::stack::Stack;
use crate::util::wait_until;

/// Sends `head` (a request head without the final blank line) and returns the status code.
fn status(addr: &str, head: &str) -> u16 {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(format!("{head}\r\nConnection: close\r\n\r\n").as_bytes())
        .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {out:?}"))
}

/// Refusals for ambiguity in the audit (identical events are merged into one line with a count).
fn ambiguous_refusals(s: &Stack) -> u64 {
    std::fs::read_to_string(s.env.home.join(".local/state/credagent/audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["outcome"] == "refused" && l["reason"] == "ambiguous_request")
        .map(|l| l["count"].as_u64().unwrap_or(1))
        .sum()
}

#[test]
fn requests_read_two_ways_get_400_and_an_audit_line() {
    let s = Stack::new("", "").with_key_and_source();
    let token = s.role_token("demo");
    let host = format!("Host: {}", s.http);
    let auth = format!("Authorization: {token}");

    // The positive control: the same request, written once, is served.
    let good = format!("GET /v1/credentials HTTP/1.1\r\n{host}\r\n{auth}");
    assert_eq!(status(&s.http, &good), 200);

    let port = s.http.rsplit(':').next().unwrap();
    let cases = [
        // A second Host, first ours, then another (a proxy might route by the second).
        format!("GET /v1/credentials HTTP/1.1\r\n{host}\r\nHost: evil.example\r\n{auth}"),
        // The same Host twice.
        format!("GET /v1/credentials HTTP/1.1\r\n{host}\r\n{host}\r\n{auth}"),
        // Two Authorization headers: which one was checked?
        format!("GET /v1/credentials HTTP/1.1\r\n{host}\r\n{auth}\r\nAuthorization: cat1_x"),
        // Absolute form naming another authority, with our own Host.
        format!("GET http://evil.example:{port}/v1/credentials HTTP/1.1\r\n{host}\r\n{auth}"),
        // Two IMDS token TTLs on a token PUT.
        format!(
            "PUT /latest/api/token HTTP/1.1\r\n{host}\r\nX-aws-ec2-metadata-token-ttl-seconds: \
             60\r\nX-aws-ec2-metadata-token-ttl-seconds: 21600\r\nContent-Length: 0"
        ),
        // The approval page is screened too.
        format!("GET /approve/x HTTP/1.1\r\nHost: localhost:{port}\r\nHost: evil.example"),
    ];
    for head in &cases {
        assert_eq!(status(&s.http, head), 400, "{head}");
    }
    // Absolute form naming the agent itself is no ambiguity.
    let own = format!(
        "GET http://{}/v1/credentials HTTP/1.1\r\n{host}\r\n{auth}",
        s.http
    );
    assert_eq!(status(&s.http, &own), 200);

    wait_until(Duration::from_secs(5), || {
        ambiguous_refusals(&s) == cases.len() as u64
    })
    .unwrap_or_else(|| {
        panic!(
            "{} ambiguous_request refusals audited",
            ambiguous_refusals(&s)
        )
    });
}

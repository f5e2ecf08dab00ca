//! Request-level defences shared by every route: `Host` pinning against DNS rebinding, refusal
//! of browser requests, and the error body every SDK can read.

use std::net::SocketAddr;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};

/// Everything a request handler needs to know about the listener.
pub struct HttpContext {
    pub addr: SocketAddr,
    /// The `Host` values we accept (`127.0.0.1:PORT`, `localhost:PORT`, `[::1]:PORT`).
    allowed_hosts: [String; 3],
}

impl HttpContext {
    pub fn new(addr: SocketAddr) -> Self {
        let port = addr.port();
        HttpContext {
            addr,
            allowed_hosts: [
                format!("127.0.0.1:{port}"),
                format!("localhost:{port}"),
                format!("[::1]:{port}"),
            ],
        }
    }

    /// Whether `host` names this endpoint (case-insensitive, exact port).
    pub fn host_allowed(&self, host: &str) -> bool {
        self.allowed_hosts
            .iter()
            .any(|h| h.eq_ignore_ascii_case(host))
    }
}

/// A JSON error body that every SDK can read: both `code`/`message` and `Code`/`Message`.
pub fn error_response(status: StatusCode, code: &str, message: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({
        "code": code, "message": message, "Code": code, "Message": message,
    });
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// Why a request is refused before any route sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    /// The stable code, in the body and in the audit line.
    pub reason: &'static str,
    message: &'static str,
}

impl Refusal {
    const fn new(status: StatusCode, reason: &'static str, message: &'static str) -> Refusal {
        Refusal {
            status,
            reason,
            message,
        }
    }

    pub fn response(&self) -> Response<Full<Bytes>> {
        error_response(self.status, self.reason, self.message)
    }
}

const AMBIGUOUS: Refusal = Refusal::new(
    StatusCode::BAD_REQUEST,
    "ambiguous_request",
    "a request must carry exactly one Host and at most one credential header, and name no \
     other authority than this agent",
);
const BAD_HOST: Refusal = Refusal::new(
    StatusCode::FORBIDDEN,
    "bad_host",
    "the Host header must be 127.0.0.1, localhost or [::1] with this agent's port",
);
const BROWSER: Refusal = Refusal::new(
    StatusCode::FORBIDDEN,
    "browser_request",
    "credentials are never served to web pages",
);

/// Headers a proxy and this agent could read two ways if repeated: the authority and every
/// header that carries a credential or an IMDS token request.
const SINGLE_HEADERS: [&str; 4] = [
    "host",
    "authorization",
    "x-aws-ec2-metadata-token",
    "x-aws-ec2-metadata-token-ttl-seconds",
];

/// Refuses requests that a proxy or parser could read two ways: a repeated `Host` or credential
/// header, or an absolute-form target naming another authority than this agent.
pub fn check_unambiguous<B>(ctx: &HttpContext, req: &Request<B>) -> Option<Refusal> {
    let headers = req.headers();
    if SINGLE_HEADERS
        .iter()
        .any(|h| headers.get_all(*h).iter().nth(1).is_some())
    {
        return Some(AMBIGUOUS);
    }
    if let Some(authority) = req.uri().authority() {
        let own_scheme = req.uri().scheme_str().is_none_or(|s| s == "http");
        if !own_scheme || !ctx.host_allowed(authority.as_str()) {
            return Some(AMBIGUOUS);
        }
    }
    None
}

/// Request-level checks shared by every credential route. Returns the refusal, if any.
pub fn check_request<B>(ctx: &HttpContext, req: &Request<B>) -> Option<Refusal> {
    if let Some(r) = check_unambiguous(ctx, req) {
        return Some(r);
    }
    let host = req
        .headers()
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok());
    match host {
        Some(h) if ctx.host_allowed(h) => {}
        _ => return Some(BAD_HOST),
    }
    let browserish = req.headers().keys().any(|k| {
        let k = k.as_str();
        k == "origin" || k == "referer" || k.starts_with("sec-fetch-")
    });
    if browserish {
        return Some(BROWSER);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().uri("/creds");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn host_must_name_this_port() {
        let ctx = HttpContext::new("127.0.0.1:4321".parse().unwrap());
        for ok in [
            "127.0.0.1:4321",
            "localhost:4321",
            "LOCALHOST:4321",
            "[::1]:4321",
        ] {
            assert!(check_request(&ctx, &req(&[("host", ok)])).is_none(), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:4321",
            "127.0.0.1",
            "127.0.0.1:1",
            "localhost",
        ] {
            let r = check_request(&ctx, &req(&[("host", bad)])).unwrap();
            assert_eq!(r.status, StatusCode::FORBIDDEN, "{bad}");
        }
        assert!(check_request(&ctx, &req(&[])).is_some());
    }

    #[test]
    fn browser_requests_are_refused() {
        let ctx = HttpContext::new("127.0.0.1:4321".parse().unwrap());
        for h in ["origin", "referer", "sec-fetch-mode", "sec-fetch-site"] {
            let r = check_request(&ctx, &req(&[("host", "127.0.0.1:4321"), (h, "x")])).unwrap();
            assert_eq!(r.status, StatusCode::FORBIDDEN, "{h}");
        }
    }

    #[test]
    fn requests_read_two_ways_are_refused() {
        let ctx = HttpContext::new("127.0.0.1:4321".parse().unwrap());
        let host = ("host", "127.0.0.1:4321");
        for repeated in SINGLE_HEADERS {
            let r = check_request(
                &ctx,
                &req(&[host, (repeated, "127.0.0.1:4321"), (repeated, "x")]),
            )
            .unwrap_or_else(|| panic!("repeated {repeated} was accepted"));
            assert_eq!(
                (r.status, r.reason),
                (StatusCode::BAD_REQUEST, "ambiguous_request")
            );
        }
        // One of each is fine.
        let one_each: Vec<(&str, &str)> = SINGLE_HEADERS
            .iter()
            .map(|h| (*h, "127.0.0.1:4321"))
            .collect();
        assert!(check_request(&ctx, &req(&one_each)).is_none());

        let target = |uri: &str| {
            Request::builder()
                .uri(uri)
                .header("host", "127.0.0.1:4321")
                .body(())
                .unwrap()
        };
        for bad in [
            "http://evil.example/v1/credentials",
            "http://127.0.0.1:1/v1/credentials",
            "https://127.0.0.1:4321/v1/credentials",
        ] {
            let r = check_request(&ctx, &target(bad)).unwrap();
            assert_eq!(r.reason, "ambiguous_request", "{bad}");
        }
        assert!(check_request(&ctx, &target("http://localhost:4321/v1/credentials")).is_none());
        assert!(check_request(&ctx, &target("/v1/credentials")).is_none());
    }

    #[test]
    fn errors_carry_both_cases() {
        let r = error_response(StatusCode::FORBIDDEN, "c", "m");
        assert_eq!(r.headers()[CONTENT_TYPE], "application/json");
    }
}

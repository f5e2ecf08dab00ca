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

/// Request-level checks shared by every route. Returns the refusal, if any.
pub fn check_request<B>(ctx: &HttpContext, req: &Request<B>) -> Option<Response<Full<Bytes>>> {
    let host = req
        .headers()
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok());
    match host {
        Some(h) if ctx.host_allowed(h) => {}
        _ => {
            return Some(error_response(
                StatusCode::FORBIDDEN,
                "bad_host",
                "the Host header must be 127.0.0.1, localhost or [::1] with this agent's port",
            ))
        }
    }
    let browserish = req.headers().keys().any(|k| {
        let k = k.as_str();
        k == "origin" || k == "referer" || k.starts_with("sec-fetch-")
    });
    if browserish {
        return Some(error_response(
            StatusCode::FORBIDDEN,
            "browser_request",
            "credentials are never served to web pages",
        ));
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
            assert_eq!(r.status(), StatusCode::FORBIDDEN, "{bad}");
        }
        assert!(check_request(&ctx, &req(&[])).is_some());
    }

    #[test]
    fn browser_requests_are_refused() {
        let ctx = HttpContext::new("127.0.0.1:4321".parse().unwrap());
        for h in ["origin", "referer", "sec-fetch-mode", "sec-fetch-site"] {
            let r = check_request(&ctx, &req(&[("host", "127.0.0.1:4321"), (h, "x")])).unwrap();
            assert_eq!(r.status(), StatusCode::FORBIDDEN, "{h}");
        }
    }

    #[test]
    fn errors_carry_both_cases() {
        let r = error_response(StatusCode::FORBIDDEN, "c", "m");
        assert_eq!(r.headers()[CONTENT_TYPE], "application/json");
    }
}

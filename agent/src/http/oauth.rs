//! `http://127.0.0.1:PORT/oauth/callback`: where the browser comes back from IAM Identity
//! Center's sign-in with the authorization code of a PKCE login.
//!
//! Only a top-level browser navigation to exactly the registered redirect is taken: `Host` must
//! be `127.0.0.1:PORT`, no `Origin` (a page's `fetch` or form would carry one), and, when the
//! browser says, `Sec-Fetch-Mode: navigate`. The `state` must name a login under way and is
//! used once, so a replayed or forged callback exchanges nothing. The code is never logged.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};

use super::pages::{BrowserPage, CALLBACK_PATH};
use crate::audit::{Audit, Event, Outcome};
use crate::http::Origin;
use crate::sso::Logins;

/// The OAuth callback route.
pub struct Callback {
    logins: Arc<Logins>,
    audit: Audit,
    /// `127.0.0.1:PORT`, the only `Host` of the registered redirect.
    host: String,
}

impl Callback {
    pub fn new(logins: Arc<Logins>, audit: Audit, addr: std::net::SocketAddr) -> Callback {
        Callback {
            logins,
            audit,
            host: format!("127.0.0.1:{}", addr.port()),
        }
    }

    fn audit(&self, now: SystemTime, origin: Origin, refused: Option<&'static str>) {
        self.audit.record(
            now,
            Event {
                channel: "oauth_callback",
                role: None,
                token_id: None,
                origin,
                outcome: if refused.is_some() {
                    Outcome::Refused
                } else {
                    Outcome::Done
                },
                reason: refused,
                subject: None,
                exe: None,
            },
        );
    }
}

fn page(status: StatusCode, title: &str, text: &str) -> Response<Full<Bytes>> {
    // The approval page's look; no script, and only this inline style is allowed in.
    let body = format!(
        "<!doctype html><meta charset=utf-8><meta name=viewport \
         content=\"width=device-width, initial-scale=1\"><title>credagent</title>\
         <style>body{{font:16px/1.5 system-ui,sans-serif;max-width:34rem;margin:3rem auto;\
         padding:0 1rem;color:#1d1d1f}}h1{{font-size:1.4rem}}.box{{border:1px solid #ccc;\
         border-radius:8px;padding:1rem 1.2rem;margin:1rem 0}}.ok{{color:#17702c}}\
         .err{{color:#b3261e}}</style><h1 class={}>{}</h1><div class=box><p>{}</p></div>",
        if status.is_success() { "ok" } else { "err" },
        escape(title),
        escape(text)
    );
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        "content-security-policy",
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'"),
    );
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    headers.insert("cache-control", HeaderValue::from_static("no-store"));
    resp
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The value of query parameter `name`, percent-decoded.
fn param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| decode(v))
    })
}

fn decode(v: &str) -> String {
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'+' {
            out.push(b' ');
            i += 1;
            continue;
        }
        if b == b'%' {
            if let Some(hex) = bytes
                .get(i + 1..i + 3)
                .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
            {
                let text = std::str::from_utf8(hex).unwrap_or("00");
                out.push(u8::from_str_radix(text, 16).unwrap_or(0));
                i += 3;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[async_trait::async_trait]
impl BrowserPage for Callback {
    async fn handle(
        &self,
        req: Request<hyper::body::Incoming>,
        origin: Origin,
        now: SystemTime,
    ) -> Response<Full<Bytes>> {
        let headers = req.headers();
        if req.method() != Method::GET || req.uri().path() != CALLBACK_PATH {
            self.audit(now, origin, Some("bad_request"));
            return page(StatusCode::NOT_FOUND, "Not found", "No such page.");
        }
        if !super::pages::host_is(headers, &[&self.host]) {
            self.audit(now, origin, Some("bad_host"));
            return page(
                StatusCode::MISDIRECTED_REQUEST,
                "Wrong address",
                "The sign-in must come back to 127.0.0.1 on credagent's port.",
            );
        }
        let navigating = headers
            .get("sec-fetch-mode")
            .is_none_or(|m| m.as_bytes() == b"navigate");
        if headers.contains_key(hyper::header::ORIGIN) || !navigating {
            self.audit(now, origin, Some("browser_origin"));
            return page(
                StatusCode::FORBIDDEN,
                "Refused",
                "Only the browser's own sign-in redirect may come here.",
            );
        }
        let query = req.uri().query().unwrap_or("");
        if let Some(error) = param(query, "error") {
            // With the state this login issued, the login fails now rather than waiting for
            // its expiry (users press Deny).
            if let Some(state) = param(query, "state") {
                self.logins.denied(&state, &error);
            }
            self.audit(now, origin, Some("sign_in_refused"));
            return page(
                StatusCode::BAD_REQUEST,
                "Sign-in refused",
                &format!("IAM Identity Center said: {error}. Run `credctl login` again."),
            );
        }
        let (Some(state), Some(code)) = (param(query, "state"), param(query, "code")) else {
            self.audit(now, origin, Some("bad_request"));
            return page(
                StatusCode::BAD_REQUEST,
                "Incomplete sign-in",
                "The link carries no state or code. Run `credctl login` again.",
            );
        };
        match self.logins.callback(&state, &code, now).await {
            Ok(()) => {
                self.audit(now, origin, None);
                page(
                    StatusCode::OK,
                    "Signed in",
                    "credagent has your IAM Identity Center login. You can close this tab.",
                )
            }
            Err(why) => {
                self.audit(now, origin, Some("bad_state"));
                page(
                    StatusCode::BAD_REQUEST,
                    "Sign-in not accepted",
                    &why.to_string(),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_decoded() {
        let q = "code=a%2Bb%3D&state=x+y&empty=&bad=%zz&tail=%4";
        assert_eq!(param(q, "code").as_deref(), Some("a+b="));
        assert_eq!(param(q, "state").as_deref(), Some("x y"));
        assert_eq!(param(q, "empty").as_deref(), Some(""));
        assert_eq!(param(q, "bad").as_deref(), Some("%zz"));
        assert_eq!(param(q, "tail").as_deref(), Some("%4"));
        assert_eq!(param(q, "missing"), None);
    }

    #[test]
    fn pages_escape_what_they_show() {
        let r = page(StatusCode::OK, "<t>", "a & \"b\"");
        assert_eq!(r.status(), StatusCode::OK);
    }
}

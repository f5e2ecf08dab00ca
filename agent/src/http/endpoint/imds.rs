//! IMDSv2 (`AWS_EC2_METADATA_SERVICE_ENDPOINT=http://127.0.0.1:PORT`): session tokens from
//! `PUT /latest/api/token`, then the role list and the role's credentials.
//!
//! Which role IMDS serves is deliberate: none, until the user names one with `credctl imds ROLE`.
//! IMDS has no way to carry a per-shell secret, so it serves exactly that one approved role to
//! every process of the user that asks, and nothing after `credctl lock`.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use sha2::{Digest, Sha256};

use super::memo::{Memo, Offer};
use super::{json_ok, Endpoint};
use crate::audit::{ConnAudit, Origin};
use crate::generation::{Generation, Versioned};
use crate::http::checks::error_response;

const TTL_HEADER: &str = "x-aws-ec2-metadata-token-ttl-seconds";
const TOKEN_HEADER: &str = "x-aws-ec2-metadata-token";
const MAX_TTL: u64 = 21_600;
/// Live IMDS session tokens kept at most; the oldest are dropped past it.
const MAX_TOKENS: usize = 4096;

/// IMDS session tokens: SHA-256 of the token → expiry.
#[cfg_attr(test, derive(Default))]
pub struct ImdsTokens {
    /// Versioned: dropping a token can change an answer a connection remembers.
    /// Token hash → expiry, by the wall clock and by the monotonic clock: a token is live only
    /// while both say so, so a wall clock stepped back cannot stretch it.
    live: Versioned<HashMap<[u8; 32], (SystemTime, std::time::Instant)>>,
}

impl ImdsTokens {
    pub fn new(generation: Generation) -> ImdsTokens {
        ImdsTokens {
            live: Versioned::new(HashMap::new(), generation),
        }
    }

    fn issue(&self, ttl: Duration, now: SystemTime) -> Result<String, getrandom::Error> {
        let mut raw = [0u8; 32];
        getrandom::fill(&mut raw)?;
        let token = hex::encode(raw);
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut live = self.live.write();
        let mono = std::time::Instant::now();
        if live.len() >= MAX_TOKENS {
            live.retain(|_, (wall, until)| *wall > now && *until > mono);
        }
        if live.len() >= MAX_TOKENS {
            if let Some(oldest) = live.iter().min_by_key(|(_, e)| e.1).map(|(k, _)| *k) {
                live.remove(&oldest);
            }
        }
        live.insert(key, (now + ttl, mono + ttl));
        Ok(token)
    }

    /// The expiry of `token` if it is live at `now`.
    fn valid_until(&self, token: &[u8], now: SystemTime) -> Option<SystemTime> {
        let key: [u8; 32] = Sha256::digest(token).into();
        let live = self.live.read();
        let (wall, mono) = live.get(&key).copied()?;
        (wall > now && mono > std::time::Instant::now()).then_some(wall)
    }

    /// Forgets every IMDS token (after `credctl lock`).
    pub fn clear(&self) {
        self.live.write().clear();
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    resp
}

pub(super) fn handle<B>(
    ep: &Endpoint,
    req: &Request<B>,
    rest: &str,
    origin: Origin,
    now: SystemTime,
    audit: &ConnAudit,
    memo: &mut Memo,
) -> Response<Full<Bytes>> {
    if rest == "api/token" {
        return put_token(ep, req, origin, now, audit);
    }
    // `security-credentials-extended` is IMDS credentials v2.1, which newer SDKs ask first
    // (and fall back from on a 404) for the `AccountId` in the body; both bodies carry it.
    const CREDS: &str = "meta-data/iam/security-credentials";
    let tail = rest
        .strip_prefix(CREDS)
        .map(|t| t.strip_prefix("-extended").unwrap_or(t));
    let Some(tail) = tail else {
        return error_response(
            StatusCode::NOT_FOUND,
            "not_found",
            "not served by credagent",
        );
    };
    if req.method() != Method::GET {
        return error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "use GET",
        );
    }
    let presented = req.headers().get(TOKEN_HEADER);
    let path = req.uri().path();
    if let Some(body) =
        presented.and_then(|t| memo.recall(path, t.as_bytes(), now, ep.generation.current(), audit))
    {
        return json_ok(body);
    }
    // Read before the token and the session are looked at (see `crate::generation`).
    let generation = ep.generation.current();
    let token = presented.and_then(|t| {
        ep.imds_tokens
            .valid_until(t.as_bytes(), now)
            .map(|until| (t, until))
    });
    let Some((token, token_until)) = token else {
        ep.refused(audit, now, "imds", None, None, origin, "bad_imds_token");
        return error_response(
            StatusCode::UNAUTHORIZED,
            "bad_imds_token",
            "missing or expired IMDSv2 token: PUT /latest/api/token first",
        );
    };
    let role = ep.imds_role();
    match (tail, role) {
        ("" | "/", Some(role)) => text(StatusCode::OK, role.to_string()),
        (_, None) => {
            ep.refused(audit, now, "imds", None, None, origin, "no_imds_role");
            error_response(
                StatusCode::NOT_FOUND,
                "no_imds_role",
                "IMDS serves no role yet: run `credctl imds ROLE` to choose the one it serves",
            )
        }
        (name, Some(role)) if name.strip_prefix('/') == Some(&*role) => {
            let offer = Offer {
                generation,
                key: token.as_bytes(),
                path,
                until: Some(token_until),
            };
            ep.serve_role(
                audit,
                "imds",
                &role,
                (None, false),
                origin,
                now,
                |r| &r.imds,
                (memo, offer),
            )
        }
        (name, Some(_)) => {
            let asked = name.trim_start_matches('/');
            ep.refused(
                audit,
                now,
                "imds",
                Some(asked.into()),
                None,
                origin,
                "not_imds_role",
            );
            error_response(
                StatusCode::NOT_FOUND,
                "not_imds_role",
                &format!("IMDS does not serve role {asked}: run `credctl imds {asked}` to switch"),
            )
        }
    }
}

fn put_token<B>(
    ep: &Endpoint,
    req: &Request<B>,
    origin: Origin,
    now: SystemTime,
    audit: &ConnAudit,
) -> Response<Full<Bytes>> {
    if req.method() != Method::PUT {
        return error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "use PUT",
        );
    }
    // A proxy in front of us (an SSRF through a local web app) adds X-Forwarded-For; EC2's
    // IMDS refuses such token requests, and so do we.
    if req.headers().contains_key("x-forwarded-for") {
        ep.refused(audit, now, "imds", None, None, origin, "forwarded");
        return error_response(
            StatusCode::FORBIDDEN,
            "forwarded",
            "IMDS token requests through a proxy (X-Forwarded-For) are refused",
        );
    }
    let ttl = req
        .headers()
        .get(TTL_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|t| (1..=MAX_TTL).contains(t));
    let Some(ttl) = ttl else {
        return error_response(
            StatusCode::BAD_REQUEST,
            "bad_ttl",
            "X-aws-ec2-metadata-token-ttl-seconds must be 1 to 21600",
        );
    };
    match ep.imds_tokens.issue(Duration::from_secs(ttl), now) {
        Ok(token) => {
            let mut resp = text(StatusCode::OK, token);
            resp.headers_mut()
                .insert(HeaderName::from_static(TTL_HEADER), HeaderValue::from(ttl));
            resp
        }
        Err(_) => error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the system random generator failed",
        ),
    }
}

#[cfg(test)]
mod clock_tests {
    use super::*;

    #[test]
    fn a_wall_clock_stepped_back_cannot_stretch_an_imds_token() {
        let tokens = ImdsTokens::new(Generation::default());
        let now = SystemTime::now();
        let token = tokens.issue(Duration::from_millis(300), now).unwrap();
        assert!(tokens.valid_until(token.as_bytes(), now).is_some());
        std::thread::sleep(Duration::from_millis(400));
        // By a wall clock stepped an hour back the token would have hours left.
        let earlier = now - Duration::from_secs(3600);
        assert!(tokens.valid_until(token.as_bytes(), earlier).is_none());
    }
}

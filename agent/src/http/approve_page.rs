//! The browser approval page, `http://localhost:PORT/approve/<ceremony>`: plain WebAuthn in the
//! user's browser, so platform authenticators and phones can approve too.
//!
//! The ceremony id (122 random bits) names the ceremony, but is no capability on its own: it
//! travels on `xdg-open`'s command line, which every process of the user can read. The first load
//! of a ceremony's page gets a page secret (an `HttpOnly`, `SameSite=Strict` cookie); every later
//! ceremony of the same `credctl` (the steps of one key change) belongs to that page session, and
//! only a request carrying its secret may load or answer it. A second loader ends the ceremony
//! and both are told. The page and its script are static and served with a strict CSP; the
//! answer is accepted only from the page's own origin `http://localhost:PORT`, and the `Host`
//! check has already refused DNS-rebinding names.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, ORIGIN};
use hyper::{Method, Request, Response, StatusCode};

use super::checks::error_response;
use super::pages::BrowserPage;
use crate::approval::{
    page_key, AnsweredBy, Approvals, Kind, Opened, PageLoad, Purpose, TouchOutcome,
};
use crate::audit::Origin;
use crate::refusal::{Code, Refusal};
use crate::sessions::Sessions;

const PAGE: &str = include_str!("../../assets/approve.html");
const SCRIPT: &str = include_str!("../../assets/approve.js");
/// Largest credential JSON the page may post.
const MAX_BODY: usize = 16 * 1024;
/// Longest the page's answer may take to arrive once its headers have.
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The page's handler: it answers ceremonies through the approval path.
pub struct Page {
    approvals: Arc<Approvals>,
    /// For the ARN a role resolves to, shown on the page.
    sessions: Sessions,
    origin: String,
    port: u16,
}

fn with_headers(
    mut resp: Response<Full<Bytes>>,
    content_type: &'static str,
) -> Response<Full<Bytes>> {
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; \
             frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        ),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    resp
}

fn ok(body: impl Into<Bytes>, content_type: &'static str) -> Response<Full<Bytes>> {
    with_headers(Response::new(Full::new(body.into())), content_type)
}

/// The value of cookie `name` in a request's `Cookie` headers.
fn cookie<'a>(headers: &'a hyper::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(hyper::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

impl Page {
    /// The name of the page-session cookie of ceremony `id` (cookies ignore ports: the port is
    /// in the name, so two agents never mix theirs).
    fn cookie_name(&self, id: &str) -> Option<String> {
        let view = self.approvals.view(id)?;
        let cid = id.parse().ok()?;
        Some(format!(
            "credagent_page_{}_{}",
            self.port,
            page_key(cid, view.leader)
        ))
    }

    fn options(
        &self,
        id: &str,
        headers: &hyper::HeaderMap,
        who: Origin,
        now: SystemTime,
    ) -> Response<Full<Bytes>> {
        let not_found = || {
            error_response(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such ceremony: it was answered or expired",
            )
        };
        let Some(name) = self.cookie_name(id) else {
            return not_found();
        };
        let (view, load) =
            match self
                .approvals
                .load_page(id, cookie(headers, &name), &who.into(), now)
            {
                Ok(v) => v,
                Err(crate::approval::ApprovalError::PageTaken) => {
                    return error_response(
                        StatusCode::FORBIDDEN,
                        "page_taken",
                        &crate::approval::ApprovalError::PageTaken.to_string(),
                    )
                }
                Err(_) => return not_found(),
            };
        let body = match &view.kind {
            Kind::Approve(Purpose::KeyRemove { name, .. }) => serde_json::json!({
                "kind": "authorize_key_remove", "name": name,
                "requester": view.requester, "options": view.options,
            }),
            // The new key's second touch in `key add`: it gives the key's PRF output, which
            // wraps the vault for it (approval::seal).
            Kind::Approve(Purpose::KeySeal(name)) => serde_json::json!({
                "kind": "seal_key", "name": name,
                "requester": view.requester, "options": view.options,
            }),
            Kind::Approve(Purpose::KeyAdd(name)) => serde_json::json!({
                "kind": "authorize_key_add", "name": name,
                "requester": view.requester, "options": view.options,
            }),
            Kind::Approve(Purpose::MoveToPin) => serde_json::json!({
                "kind": "key_pin", "requester": view.requester, "options": view.options,
            }),
            Kind::Approve(Purpose::Confirm) => serde_json::json!({
                "kind": "confirm", "requester": view.requester, "options": view.options,
            }),
            Kind::Approve(purpose @ Purpose::AllowProgram { role, .. }) => serde_json::json!({
                "kind": "allow_program", "role": role, "what": purpose.describe(),
                "requester": view.requester, "options": view.options,
            }),
            Kind::Approve(Purpose::Reload) => serde_json::json!({
                "kind": "reload", "changes": self.approvals.reload_changes(),
                "requester": view.requester, "options": view.options,
            }),
            Kind::Approve(Purpose::Role(role)) => {
                let spec = self.sessions.profiles().resolve(role).ok();
                serde_json::json!({
                "kind": "approve", "role": role, "requester": view.requester,
                // An Identity Center role's ARN only AWS knows: its account and permission set
                // are shown instead.
                "role_arn": spec.as_ref().filter(|s| s.sso.is_none() || !s.chain.is_empty()).map(|s| s.role_arn.clone()),
                "sso_account": spec.as_ref().and_then(|s| s.sso.as_ref()).map(|s| s.account_id.clone()),
                "sso_permission_set": spec.as_ref().and_then(|s| s.sso.as_ref()).map(|s| s.role_name.clone()),
                // An Identity Center login is no "source": the page names it as what it is.
                "target": match (spec.as_ref(), view.target.as_deref()) {
                    (Some(spec), Some(target)) => match &spec.sso {
                        Some(sso) => {
                            let prefix = format!("source {} ({})", spec.source, sso.describe());
                            Some(match target.strip_prefix(&prefix) {
                                Some(rest) => format!("{}{rest}", sso.describe()),
                                None => target.to_owned(),
                            })
                        }
                        None => Some(target.to_owned()),
                    },
                    (_, target) => target.map(str::to_owned),
                },
                "session_secs": self.approvals.session_ttl().as_secs(), "options": view.options,
                })
            }
            Kind::Register { name } => serde_json::json!({
                "kind": "register", "name": name, "requester": view.requester, "options": view.options,
            }),
        };
        let mut body = body;
        let left = crate::approval::CEREMONY_TTL
            .saturating_sub(now.duration_since(view.started).unwrap_or_default());
        body["expires_in_secs"] = serde_json::json!(left.as_secs());
        let mut resp = ok(body.to_string(), "application/json");
        if let PageLoad::Bound(secret) = load {
            // Scoped to the page's own paths, unreadable by scripts, never sent cross-site;
            // it lives as long as the longest key change could.
            let value =
                format!("{name}={secret}; Path=/approve/; HttpOnly; SameSite=Strict; Max-Age=600");
            if let Ok(v) = HeaderValue::from_str(&value) {
                resp.headers_mut().insert(hyper::header::SET_COOKIE, v);
            }
        }
        resp
    }

    /// A POST from the agent's own page (its `Origin`), with the page secret it holds for
    /// ceremony `id`, if any; else the refusal (`what`: what the page would have done).
    fn own_page_secret(
        &self,
        id: &str,
        headers: &hyper::HeaderMap,
        what: &str,
    ) -> Result<Option<String>, Box<Response<Full<Bytes>>>> {
        let origin_ok =
            headers.get(ORIGIN).and_then(|o| o.to_str().ok()) == Some(self.origin.as_str());
        if !origin_ok {
            return Err(Box::new(error_response(
                StatusCode::FORBIDDEN,
                "bad_origin",
                &format!("answers are {what} only from the agent's own page"),
            )));
        }
        Ok(self
            .cookie_name(id)
            .and_then(|name| cookie(headers, &name).map(str::to_owned)))
    }

    /// "This wasn't me": the page session ends the ceremony, unanswered.
    fn deny(
        &self,
        id: &str,
        req: &Request<hyper::body::Incoming>,
        who: Origin,
        now: SystemTime,
    ) -> Response<Full<Bytes>> {
        let secret = match self.own_page_secret(id, req.headers(), "declined") {
            Ok(secret) => secret,
            Err(refused) => return *refused,
        };
        match self.approvals.deny(id, secret.as_deref(), &who.into(), now) {
            Ok(what) => ok(
                serde_json::json!({ "message": format!(
                    "Declined: nothing was opened for {what}. If you did not ask for it, a \
                     program running as you did: `credctl audit` names it."
                ) })
                .to_string(),
                "application/json",
            ),
            Err(crate::approval::ApprovalError::UnknownCeremony) => error_response(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such request: it was answered or expired",
            ),
            Err(e) => error_response(StatusCode::FORBIDDEN, e.code(), &e.to_string()),
        }
    }

    async fn finish(
        &self,
        id: &str,
        req: Request<hyper::body::Incoming>,
        who: Origin,
        now: SystemTime,
    ) -> Response<Full<Bytes>> {
        let secret = match self.own_page_secret(id, req.headers(), "accepted") {
            Ok(secret) => secret,
            Err(refused) => return *refused,
        };
        let kind = self.approvals.view(id).map(|v| v.kind);
        // Bounded in size and in time: a client trickling its body must not keep the
        // connection busy (the idle tick spares busy connections).
        let read = Limited::new(req.into_body(), MAX_BODY).collect();
        let body = match tokio::time::timeout(BODY_TIMEOUT, read).await {
            Ok(Ok(b)) => b.to_bytes(),
            Ok(Err(_)) => {
                return error_response(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    "credential too large",
                )
            }
            Err(_) => {
                return error_response(
                    StatusCode::REQUEST_TIMEOUT,
                    "too_slow",
                    "the answer did not arrive in time: touch again",
                )
            }
        };
        let credential: serde_json::Value = match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    &format!("malformed credential: {e}"),
                )
            }
        };
        match self
            .approvals
            .answer_detached(
                id.to_owned(),
                credential,
                AnsweredBy::Page(secret),
                who.into(),
                now,
            )
            .await
        {
            TouchOutcome::Done => {
                let message = match kind {
                    Some(Kind::Approve(Purpose::Confirm)) => {
                        "Confirmed: your key opened the vault and the agent's settings are the \
                         ones your touches vouched for. You can close this tab."
                    }
                    Some(Kind::Approve(Purpose::AllowProgram { .. })) => {
                        "Allowed: the program may use the role until its session ends. You can \
                         close this tab."
                    }
                    Some(Kind::Approve(Purpose::Reload)) => {
                        "Applied: credagent now runs with the settings config.toml has; every \
                         session stays open. You can close this tab."
                    }
                    _ => "Done: the key was removed. You can close this tab.",
                };
                ok(
                    serde_json::json!({ "message": message }).to_string(),
                    "application/json",
                )
            }
            TouchOutcome::Opened(Opened { role, .. }) => ok(
                serde_json::json!({"message": format!("Approved: role {role} is open. You can close this tab.")})
                    .to_string(),
                "application/json",
            ),
            // After the registration comes the new key's seal touch; after an authorizing
            // touch, the registration.
            TouchOutcome::Challenge(c) => {
                let next = self.approvals.view(&c.ceremony_id).map(|v| v.kind);
                let message = match next {
                    Some(Kind::Approve(Purpose::KeySeal(name))) => format!(
                        "Key \u{201c}{name}\u{201d} answered. One more step: touch it once more \
                         on the page credctl opens next, to seal your sources to it. The key is \
                         not stored until then."
                    ),
                    _ => "Authorized. Now register the new key on the page credctl opens next."
                        .to_owned(),
                };
                ok(
                    serde_json::json!({ "message": message }).to_string(),
                    "application/json",
                )
            }
            TouchOutcome::KeyAdded(key) => {
                let message = if key.sealed {
                    format!(
                        "Security key \u{201c}{}\u{201d} registered and sealed: it holds its copy \
                         of your vault and can open your sources. You can close this tab.",
                        key.name
                    )
                } else {
                    format!(
                        "Security key \u{201c}{}\u{201d} registered, UNSEALED: its touch \
                         approves by policy only. You can close this tab.",
                        key.name
                    )
                };
                ok(
                    serde_json::json!({ "message": message }).to_string(),
                    "application/json",
                )
            }
            TouchOutcome::Refused(Refusal { code, message }) => {
                let status = match code {
                    Code::BadRequest => StatusCode::BAD_REQUEST,
                    Code::NotFound => StatusCode::NOT_FOUND,
                    Code::StsUnavailable | Code::Internal => StatusCode::SERVICE_UNAVAILABLE,
                    _ => StatusCode::FORBIDDEN,
                };
                error_response(status, code.as_str(), &message)
            }
        }
    }
}

#[async_trait::async_trait]
impl BrowserPage for Page {
    async fn handle(
        &self,
        req: Request<hyper::body::Incoming>,
        origin: Origin,
        now: SystemTime,
    ) -> Response<Full<Bytes>> {
        // WebAuthn's origin is http://localhost:PORT: the page must be loaded under that name.
        let localhost = format!("localhost:{}", self.port);
        if !super::pages::host_is(req.headers(), &[&localhost]) {
            return error_response(
                StatusCode::MISDIRECTED_REQUEST,
                "use_localhost",
                &format!(
                    "open the approval page as {}{}",
                    self.origin,
                    req.uri().path()
                ),
            );
        }
        let path = req.uri().path().trim_start_matches("/approve/").to_owned();
        let mut parts = path.splitn(2, '/');
        let (first, rest) = (parts.next().unwrap_or(""), parts.next());
        match (req.method().clone(), first, rest) {
            (Method::GET, "app.js", None) => ok(SCRIPT, "text/javascript; charset=utf-8"),
            (Method::GET, id, None) if !id.is_empty() => ok(PAGE, "text/html; charset=utf-8"),
            (Method::GET, id, Some("options")) => self.options(id, req.headers(), origin, now),
            (Method::POST, id, Some("finish")) => self.finish(id, req, origin, now).await,
            (Method::POST, id, Some("deny")) => self.deny(id, &req, origin, now),
            (Method::GET, id, Some("state")) => {
                let live = self.approvals.view(id).is_some();
                ok(
                    serde_json::json!({ "live": live }).to_string(),
                    "application/json",
                )
            }
            _ => error_response(StatusCode::NOT_FOUND, "not_found", "no such page"),
        }
    }
}

impl Page {
    /// The page for the listener on `addr`.
    pub fn new(approvals: Arc<Approvals>, sessions: Sessions, addr: std::net::SocketAddr) -> Page {
        Page {
            approvals,
            sessions,
            origin: format!("http://localhost:{}", addr.port()),
            port: addr.port(),
        }
    }
}

//! The credential endpoint's routes: the ECS container-credentials protocol (`/v1/credentials`)
//! and IMDSv2 (`/latest/...`). Every answer comes from memory: a role without an approved
//! session is refused at once (and an approval is requested), never waited for.

mod ecs;
mod imds;
mod memo;
mod render;
mod source;

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};

use super::checks::{check_request, check_unambiguous, error_response, HttpContext};
use super::pages::{BrowserPage, APPROVE_PREFIX, CALLBACK_PATH, CONSOLE_PATH};
use crate::audit::{Audit, ConnAudit, Event, Origin, Outcome};
use crate::generation::{Generation, Versioned};
use crate::procs::ProcessId;
use crate::sessions::{ProgramProblem, ProgramRefusal};
use crate::tokens::{TokenId, Tokens};

pub use imds::ImdsTokens;
pub use memo::Memo;
pub use render::{account_of, render, RenderCache};
pub use source::SessionSource;

/// The path of the ECS credentials route; `credctl` prints it in `AWS_CONTAINER_CREDENTIALS_FULL_URI`.
pub const ECS_PATH: &str = "/v1/credentials";

/// Pre-rendered response bodies for one set of credentials (built once per STS call, shared by
/// every request until the next refresh; the buffers are zeroed when the last user drops them).
pub struct Rendered {
    pub ecs: Bytes,
    pub imds: Bytes,
}

/// What the cache holds for a role right now.
pub enum Lookup {
    /// Servable; by the clock alone, until `until` (the session's end or the serving margin).
    Ready {
        body: Arc<Rendered>,
        until: SystemTime,
    },
    /// No approved session: the user must touch their key.
    NotOpen,
    /// A session is open but no usable credentials are cached (STS failing); transient.
    Unavailable(String),
}

/// The in-memory credential cache, as the endpoint sees it.
pub trait CredentialSource: Send + Sync {
    /// Answers from memory, without waiting on anything. `job`: the token is a running
    /// `credctl exec` job's, which a session held for its jobs still serves.
    fn lookup(&self, role: &str, now: SystemTime, job: bool) -> Lookup;
    /// Records that `origin` wants `role` (a pending approval), without waiting.
    fn request_approval(&self, role: &str, origin: Origin, now: SystemTime);
    /// Forgets every rendered credential body (lock).
    fn wipe(&self) {}
    /// Whether only some programs may use `role` (config.toml `[roles.NAME]`).
    fn restricts(&self, _role: &str) -> bool {
        false
    }
    /// Whether `process` may use `role`.
    fn check_program(&self, _role: &str, _process: ProcessId) -> Result<(), ProgramRefusal> {
        Ok(())
    }
    /// Records that a process the rules refused wants `role` (a pending approval).
    fn request_program(&self, _role: &str, _refusal: &ProgramRefusal, _now: SystemTime) {}
}

/// Everything the routes share.
pub struct Endpoint {
    pub ctx: HttpContext,
    /// The agent's answer generation (shared with the tokens, sessions and caches): a
    /// connection's memo is good only while it stands still.
    pub generation: Generation,
    pub tokens: Arc<Tokens>,
    pub imds_tokens: ImdsTokens,
    /// The one role IMDS serves, chosen with `credctl imds ROLE`; none by default.
    imds_role: Versioned<Option<Arc<str>>>,
    pub source: Arc<dyn CredentialSource>,
    pub audit: Audit,
    /// The browser approval page, when the agent serves one.
    approval_page: Option<Arc<dyn BrowserPage>>,
    /// The IAM Identity Center sign-in callback (`/oauth/callback`), when served.
    oauth_callback: Option<Arc<dyn BrowserPage>>,
    /// The one-time console links (`/console/ID`), when served.
    console: Option<Arc<dyn BrowserPage>>,
    /// Where the clients of bound tokens held their last connections.
    pub hints: crate::procs::SocketHints,
}

/// A 200 JSON response around a shared body.
fn json_ok(body: Bytes) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

impl Endpoint {
    /// The endpoint on `addr`, serving `tokens` from `source`; `generation` is the one the
    /// tokens and the source bump.
    pub fn new(
        addr: std::net::SocketAddr,
        tokens: Arc<Tokens>,
        source: Arc<dyn CredentialSource>,
        audit: Audit,
        generation: Generation,
        approval_page: Option<Arc<dyn BrowserPage>>,
    ) -> Endpoint {
        Endpoint {
            ctx: HttpContext::new(addr),
            tokens,
            imds_tokens: ImdsTokens::new(generation.clone()),
            imds_role: Versioned::new(None, generation.clone()),
            generation,
            source,
            audit,
            approval_page,
            oauth_callback: None,
            console: None,
            hints: crate::procs::SocketHints::default(),
        }
    }

    /// Serves the one-time console links with `page`.
    pub fn with_console(mut self, page: Arc<dyn BrowserPage>) -> Endpoint {
        self.console = Some(page);
        self
    }

    /// Serves the IAM Identity Center sign-in callback with `page`.
    pub fn with_oauth_callback(mut self, page: Arc<dyn BrowserPage>) -> Endpoint {
        self.oauth_callback = Some(page);
        self
    }

    /// An endpoint with no tokens and no approval page, for fuzzing the routes.
    pub fn for_fuzzing(
        addr: std::net::SocketAddr,
        source: Arc<dyn CredentialSource>,
        audit: Audit,
    ) -> Endpoint {
        let generation = Generation::default();
        let tokens = Arc::new(Tokens::new(generation.clone()));
        Endpoint::new(addr, tokens, source, audit, generation, None)
    }

    /// The approval page, if it serves `path` (it needs the request body, so it is the one
    /// route that is not answered synchronously).
    pub fn approval_page_for(&self, path: &str) -> Option<&Arc<dyn BrowserPage>> {
        if path.starts_with(APPROVE_PREFIX) {
            self.approval_page.as_ref()
        } else if path == CALLBACK_PATH {
            self.oauth_callback.as_ref()
        } else if path.starts_with(CONSOLE_PATH) {
            self.console.as_ref()
        } else {
            None
        }
    }

    /// Refuses (and audits) an ambiguous request to the approval page, which does its own
    /// `Host` and origin checks.
    pub fn screen_page_request<B>(
        &self,
        req: &Request<B>,
        origin: Origin,
        now: SystemTime,
        audit: &ConnAudit,
    ) -> Option<Response<Full<Bytes>>> {
        let refusal = check_unambiguous(&self.ctx, req)?;
        self.refused(
            audit,
            now,
            "approval_page",
            None,
            None,
            origin,
            refusal.reason,
        );
        Some(refusal.response())
    }

    /// Chooses the one role IMDS serves (`None`: serve nothing).
    pub fn set_imds_role(&self, role: Option<Arc<str>>) {
        *self.imds_role.write() = role;
    }

    /// The role IMDS serves now.
    pub fn imds_role(&self) -> Option<Arc<str>> {
        self.imds_role.read().clone()
    }

    /// Lock: forget the IMDS role, every IMDS token and every rendered credential body.
    pub fn wipe(&self) {
        self.set_imds_role(None);
        self.imds_tokens.clear();
        self.source.wipe();
    }

    /// Answers one request (every route but the approval page) from a connection whose peer is
    /// `origin`, from memory, at once. `memo` is the connection's memo of its last answer.
    pub fn handle<B>(
        &self,
        req: &Request<B>,
        origin: Origin,
        now: SystemTime,
        audit: &ConnAudit,
        memo: &mut Memo,
    ) -> Response<Full<Bytes>> {
        if let Some(refusal) = check_request(&self.ctx, req) {
            self.refused(audit, now, "http", None, None, origin, refusal.reason);
            return refusal.response();
        }
        let path = req.uri().path();
        if path == ECS_PATH {
            return ecs::handle(self, req, origin, now, audit, memo);
        }
        if let Some(rest) = path.strip_prefix("/latest/") {
            return imds::handle(self, req, rest, origin, now, audit, memo);
        }
        error_response(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such endpoint: point AWS_CONTAINER_CREDENTIALS_FULL_URI at the URI `credctl start` prints",
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn refused(
        &self,
        audit: &ConnAudit,
        now: SystemTime,
        channel: &'static str,
        role: Option<Arc<str>>,
        token_id: Option<TokenId>,
        origin: Origin,
        reason: &'static str,
    ) {
        audit.record(
            now,
            &Event {
                channel,
                role,
                token_id,
                origin,
                outcome: Outcome::Refused,
                reason: Some(reason),
                subject: None,
                exe: None,
            },
        );
    }

    /// Checks every process that holds the peer socket of `origin` against `role`'s rules.
    fn programs_holding(&self, role: &str, origin: Origin) -> Result<(), ProgramRefusal> {
        let unknown = |pid: i32| ProgramRefusal {
            process: ProcessId { pid, start: 0 },
            exe: None,
            why: ProgramProblem::Unknown,
        };
        let Origin::Tcp { inode, .. } = origin else {
            return Err(unknown(0));
        };
        let holders = crate::procs::holders_of(inode);
        if holders.is_empty() {
            return Err(unknown(0));
        }
        for process in holders {
            self.source.check_program(role, process)?;
        }
        Ok(())
    }

    /// Serves `role`'s cached credentials (body chosen by `pick`) or refuses at once. A served
    /// answer is left in the connection's memo as `offer` describes.
    #[allow(clippy::too_many_arguments)]
    fn serve_role(
        &self,
        audit: &ConnAudit,
        channel: &'static str,
        role: &Arc<str>,
        (token_id, job): (Option<TokenId>, bool),
        origin: Origin,
        now: SystemTime,
        pick: fn(&Rendered) -> &Bytes,
        (memo, offer): (&mut Memo, memo::Offer<'_>),
    ) -> Response<Full<Bytes>> {
        // A role only some programs may use: every process holding this connection's socket
        // must be one (a socket passed on or inherited is held by each).
        if self.source.restricts(role) {
            if let Err(refusal) = self.programs_holding(role, origin) {
                self.refused(
                    audit,
                    now,
                    channel,
                    Some(role.clone()),
                    token_id,
                    origin,
                    "program_not_allowed",
                );
                if refusal.approvable() {
                    self.source.request_program(role, &refusal, now);
                }
                return error_response(
                    StatusCode::FORBIDDEN,
                    "program_not_allowed",
                    &refusal.message(role),
                );
            }
        }
        match self.source.lookup(role, now, job) {
            Lookup::Ready { body, until } => {
                let event = Event {
                    channel,
                    role: Some(role.clone()),
                    token_id,
                    origin,
                    outcome: Outcome::Served,
                    reason: None,
                    subject: None,
                    exe: None,
                };
                audit.record(now, &event);
                let body = pick(&body);
                memo.remember(offer, until, now, body, event);
                json_ok(body.clone())
            }
            Lookup::NotOpen => {
                self.source.request_approval(role, origin, now);
                self.refused(
                    audit,
                    now,
                    channel,
                    Some(role.clone()),
                    token_id,
                    origin,
                    "not_approved",
                );
                error_response(
                    StatusCode::FORBIDDEN,
                    "not_approved",
                    &format!(
                        "no approved session for role {role}: run `credctl use {role}` and touch \
                         your security key"
                    ),
                )
            }
            Lookup::Unavailable(why) => {
                self.refused(
                    audit,
                    now,
                    channel,
                    Some(role.clone()),
                    token_id,
                    origin,
                    "unavailable",
                );
                error_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    &format!("credentials for role {role} are not available yet: {why}"),
                )
            }
        }
    }
}

/// Holds a credential body and zeroes it when the last response using it is gone.
pub struct ZeroizingBody(pub zeroize::Zeroizing<Vec<u8>>);

impl AsRef<[u8]> for ZeroizingBody {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Rendered {
    /// Wraps two rendered bodies so that `Bytes` clones share them without copying.
    pub fn new(ecs: zeroize::Zeroizing<Vec<u8>>, imds: zeroize::Zeroizing<Vec<u8>>) -> Rendered {
        Rendered {
            ecs: Bytes::from_owner(ZeroizingBody(ecs)),
            imds: Bytes::from_owner(ZeroizingBody(imds)),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;

//! Token requests: endpoint tokens for a shell, a role (`env`) or a command (`exec`, revoked
//! with its connection), the shell's current role (`use`), listing and revoking tokens, and the
//! role IMDS serves.

use std::time::SystemTime;

use credagent_proto::{ErrorCode, Response, Secret};
use secrecy::{ExposeSecret, SecretString};

use super::{Conn, Control};
use crate::audit::{Event, Peer};
use crate::http::endpoint::ECS_PATH;
use crate::procs::ProcessId;
use crate::tokens::{Binding, IssueError, TokenId};

impl Control {
    /// The process a token is given to: for `exec` (`scoped`), the requester itself (the
    /// command runs as its child); else the `holder` the requester names, which must be the
    /// requester or one of its ancestors (its shell). `Ok(None)`: unbound, as asked.
    pub(super) fn holder(
        &self,
        conn: &Conn,
        scoped: bool,
        holder: Option<i32>,
    ) -> Result<Option<ProcessId>, Box<Response>> {
        let pid = match (scoped, holder) {
            (true, _) => conn.pid,
            (false, Some(pid)) => pid,
            (false, None) => return Ok(None),
        };
        let refuse = |why: String| {
            Box::new(Response::error(
                ErrorCode::BadRequest,
                format!("{why}: a token is given to the process that asks, or to its shell"),
            ))
        };
        let Some(process) = ProcessId::of(pid) else {
            return Err(refuse(format!("no process {pid} runs")));
        };
        if !process.is_ancestor_or_self_of(conn.pid) {
            return Err(refuse(format!(
                "process {pid} is not the requester (pid {}) nor one of its ancestors",
                conn.pid
            )));
        }
        // An ancestor outside the requester's login session (init, `systemd --user`, a tmux
        // server) would make the token good for nearly every process: the holder is the
        // requester's shell or closer.
        if crate::procs::session_of(pid) != crate::procs::session_of(conn.pid) {
            return Err(refuse(format!(
                "process {pid} is outside the requester's session (a service manager, a \
                 terminal multiplexer's server): name the shell, or ask for an unbound token \
                 (CREDCTL_TOKEN_HOLDER=none)"
            )));
        }
        Ok(Some(process))
    }

    /// A shell's token (`credctl start`), for `holder`'s tree.
    pub(super) fn token_shell(
        &self,
        holder: Option<i32>,
        conn: &Conn,
        now: SystemTime,
    ) -> Response {
        let holder = match self.holder(conn, false, holder) {
            Ok(h) => h,
            Err(refused) => return *refused,
        };
        self.issue(
            Binding::Shell { current: None },
            "shell",
            holder,
            (conn.peer(), None),
            now,
        )
    }

    /// A token bound to `role`: an `exec` token (`scoped`) dies with this connection.
    pub(super) fn token_for_role(
        &self,
        role: String,
        scoped: bool,
        purpose: &str,
        holder: Option<i32>,
        conn: &mut Conn,
        now: SystemTime,
    ) -> Response {
        if let Err(e) = crate::approval::check_role_name(&role) {
            return Response::from(e.refusal());
        }
        let holder = match self.holder(conn, scoped, holder) {
            Ok(h) => h,
            Err(refused) => return *refused,
        };
        let purpose = if scoped {
            "exec"
        } else if purpose == "env" {
            "env"
        } else {
            "role"
        };
        let who = conn.peer();
        let lease = scoped.then(|| self.sessions.lease(&role));
        let reply = self.issue(
            Binding::Role { role: role.into() },
            purpose,
            holder,
            (who, scoped.then_some(&mut *conn)),
            now,
        );
        // The job runs from now until its connection closes: its role's session stays open for
        // it through a screen lock and the idle timeout.
        if let (Some(lease), Response::Token { .. }) = (lease, &reply) {
            conn.leases.push(lease);
        }
        reply
    }

    /// `credctl use`: the shell whose token this is serves `role` from now on.
    pub(super) fn use_role(&self, token: Secret, role: &str) -> Response {
        // A name that could not be a profile's never reaches the pending list or a terminal.
        if let Err(e) = crate::approval::check_role_name(role) {
            return Response::from(e.refusal());
        }
        let t = SecretString::from(token.expose().to_owned());
        match self.tokens.set_current(&t, role) {
            Ok(_) => Response::Ok,
            Err(e) => Response::error(
                ErrorCode::BadToken,
                format!("{e}: this shell's token is not known to the agent: run `eval \"$(credctl start)\"`"),
            ),
        }
    }

    /// The live tokens, without their secrets.
    pub(super) fn token_list(&self) -> Response {
        Response::Tokens {
            tokens: self
                .tokens
                .list()
                .into_iter()
                .map(|t| credagent_proto::TokenInfo {
                    id: t.id,
                    kind: t.kind,
                    role: t.role,
                    created: t.created,
                    last_used: t.last_used,
                    holder: t.holder.map(|h| match h.exe() {
                        Some(exe) => format!("pid {} ({exe})", h.pid),
                        None => format!("pid {} (gone)", h.pid),
                    }),
                })
                .collect(),
        }
    }

    pub(super) fn token_revoke(&self, id: &str, conn: &Conn, now: SystemTime) -> Response {
        if self.tokens.revoke_str(id) {
            let mut event = Event::action("token_revoke", &conn.peer(), None);
            event.token_id = TokenId::parse(id);
            self.audit(now, event);
            Response::Ok
        } else {
            Response::error(
                ErrorCode::NotFound,
                format!("no live token with id {id}: see `credctl token list`"),
            )
        }
    }

    /// The role IMDS serves: only a role that can open, so the choice does not silently serve
    /// nothing.
    pub(super) fn imds(&self, role: Option<String>) -> Response {
        if let Some(r) = &role {
            if let Err(resp) = self.fresh_profiles() {
                return *resp;
            }
            if let Err(e) = self.sessions.profiles().resolve(r) {
                return Response::error(ErrorCode::Profile, e.to_string());
            }
        }
        self.endpoint.set_imds_role(role.map(Into::into));
        Response::Ok
    }

    pub(super) fn issue(
        &self,
        binding: Binding,
        purpose: &str,
        holder: Option<ProcessId>,
        (who, scoped): (Peer, Option<&mut Conn>),
        now: SystemTime,
    ) -> Response {
        let binding_role = binding.role().cloned();
        match self.tokens.issue(binding, purpose, holder, now) {
            Ok((id, token)) => {
                if let Some(conn) = scoped {
                    conn.scoped_tokens.push(id);
                }
                let mut event = Event::action("token_issue", &who, None)
                    .token(id)
                    .subject(purpose);
                event.role = binding_role;
                self.audit(now, event);
                Response::Token {
                    token: Secret::new(token.expose_secret()),
                    token_id: id.to_string(),
                    uri: format!("http://{}{ECS_PATH}", self.facts.http_addr),
                }
            }
            Err(e @ IssueError::TooMany) => Response::error(ErrorCode::Refused, e.to_string()),
            Err(e) => Response::error(ErrorCode::Internal, e.to_string()),
        }
    }
}

//! Token requests: endpoint tokens for a shell, a role (`env`) or a command (`exec`, revoked
//! with its connection), the shell's current role (`use`), listing and revoking tokens, and the
//! role IMDS serves.

use std::time::SystemTime;

use credagent_proto::{ErrorCode, Response, Secret};
use secrecy::{ExposeSecret, SecretString};

use super::{Conn, Control};
use crate::audit::{Event, Peer};
use crate::http::endpoint::ECS_PATH;
use crate::tokens::{Binding, IssueError, TokenId};

impl Control {
    /// A token bound to `role`: an `exec` token (`scoped`) dies with this connection.
    pub(super) fn token_for_role(
        &self,
        role: String,
        scoped: bool,
        purpose: &str,
        conn: &mut Conn,
        now: SystemTime,
    ) -> Response {
        let purpose = if scoped {
            "exec"
        } else if purpose == "env" {
            "env"
        } else {
            "role"
        };
        let who = conn.peer();
        self.issue(
            Binding::Role { role: role.into() },
            purpose,
            (who, scoped.then_some(conn)),
            now,
        )
    }

    /// `credctl use`: the shell whose token this is serves `role` from now on.
    pub(super) fn use_role(&self, token: Secret, role: &str) -> Response {
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
        (who, scoped): (Peer, Option<&mut Conn>),
        now: SystemTime,
    ) -> Response {
        let binding_role = binding.role().cloned();
        match self.tokens.issue(binding, purpose, now) {
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

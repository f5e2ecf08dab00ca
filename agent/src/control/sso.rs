//! IAM Identity Center requests: `credctl login` (start or join a login, then wait for it) and
//! `credctl logout`.

use std::time::SystemTime;

use credagent_proto::{ErrorCode, Response};

use super::{Conn, Control};
use crate::audit::Event;
use crate::sso::LoginState;

impl Control {
    /// `credctl login`: start the login, or join the one under way.
    pub(super) async fn login(
        &self,
        login: String,
        device_code: bool,
        conn: &mut Conn,
        now: SystemTime,
    ) -> Response {
        let source = match self.sso_login(&login) {
            Ok(s) => s,
            Err(r) => return *r,
        };
        // Starting a login: its tokens are sealed to the vault and serve every role
        // opened on it, so the person proves with a touch on this connection that the
        // vault is theirs. Joining the login under way (fifty requesters, one login)
        // starts and seals nothing.
        let may_start = self.approvals.may_seal_for(conn.id, now);
        if !may_start && !self.logins.joins_or_ready(&source, now) {
            // Another connection's touch is under way (or just ended): it is probably
            // about to start this login. Wait a little for it, and join it.
            // Time stays a parameter: `now` advanced by the wait itself.
            let waited = tokio::time::Instant::now();
            for _ in 0..40 {
                let t = now + waited.elapsed();
                if !self.approvals.confirm_recent(t) || self.logins.joins_or_ready(&source, t) {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
        let reply = if may_start || self.logins.joins_or_ready(&source, now) {
            login_reply(
                self.logins
                    .start(&source, device_code, now, may_start)
                    .await,
            )
        } else {
            super::sources::touch_required("an IAM Identity Center login")
        };
        let refused = match &reply {
            Response::Error { code, .. } => Some(code.as_str()),
            _ => None,
        };
        self.audit(
            now,
            Event::action("login", &conn.peer(), refused).subject(&source.login_key()),
        );
        // This connection wants the login: until it closes, or it awaits and the login
        // ends, the login goes on.
        if let Response::LoginPending { login, .. } = &reply {
            conn.login_holds.push(self.logins.hold(login));
        }
        reply
    }

    /// Waits for the login under way.
    pub(super) async fn await_login(&self, login: &str, now: SystemTime) -> Response {
        login_reply(self.logins.wait(login, now).await)
    }

    /// `credctl logout`: the login and the role sessions opened on it end.
    pub(super) async fn logout(&self, login: String, conn: &Conn, now: SystemTime) -> Response {
        let source = match self.sso_login(&login) {
            Ok(s) => s,
            Err(r) => return *r,
        };
        self.audit(
            now,
            Event::action("logout", &conn.peer(), None).subject(&source.login_key()),
        );
        self.logins.logout(&source).await;
        // The roles opened on this login go with it: credentials it issued are not
        // served on after the person logged out.
        let key = source.login_key();
        let ended = self
            .sessions
            .end_where(|spec| spec.sso.as_ref().is_some_and(|s| s.login_key() == key));
        Response::LoggedOut { login, ended }
    }

    /// `credctl roles --discover`: the accounts and permission sets the login reaches.
    pub(super) async fn sso_discover(&self, login: String, now: SystemTime) -> Response {
        let source = match self.sso_login(&login) {
            Ok(s) => s,
            Err(r) => return *r,
        };
        match self.logins.discover(&source, now).await {
            Ok(found) => Response::SsoAccounts {
                session: source.session.clone(),
                start_url: source.start_url.clone(),
                sso_region: source.sso_region.clone(),
                accounts: found
                    .into_iter()
                    .map(|(a, roles)| credagent_proto::SsoAccountInfo {
                        account_id: a.account_id,
                        account_name: a.account_name,
                        email: a.email,
                        roles,
                    })
                    .collect(),
            },
            Err(e) => crate::sessions::SessionError::Sso {
                role: format!("discovery of {login}"),
                error: e,
            }
            .refusal()
            .into(),
        }
    }

    /// The login `name` names, from a fresh read of `~/.aws/config`.
    fn sso_login(&self, name: &str) -> Result<crate::profiles::SsoSource, Box<Response>> {
        self.fresh_profiles()?;
        self.sessions
            .profiles()
            .sso_login(name)
            .map_err(|e| Box::new(Response::error(ErrorCode::Profile, e.to_string())))
    }
}

/// Where a login stands, as the control protocol says it.
fn login_reply(state: Result<LoginState, crate::refusal::Refusal>) -> Response {
    match state {
        Ok(LoginState::Pending {
            login,
            authorize_url,
            user_code,
            verification_uri,
            verification_uri_complete,
            expires_at,
        }) => Response::LoginPending {
            login,
            authorize_url,
            user_code,
            verification_uri,
            verification_uri_complete,
            expires_at,
        },
        Ok(LoginState::LoggedIn { login, expires_at }) => Response::LoggedIn { login, expires_at },
        Err(refusal) => refusal.into(),
    }
}

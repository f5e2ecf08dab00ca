//! IAM Identity Center requests: `credctl login` (start or join a login, then wait for it) and
//! `credctl logout`.

use std::time::SystemTime;

use credagent_proto::{ErrorCode, Request, Response};

use super::{Conn, Control};
use crate::audit::Event;

impl Control {
    pub(super) async fn sso_family(&self, req: Request, conn: &Conn, now: SystemTime) -> Response {
        match req {
            Request::Login { login, device_code } => {
                let source = match self.sso_login(&login) {
                    Ok(s) => s,
                    Err(r) => return *r,
                };
                let reply = self.logins.start(&source, device_code, now).await;
                let refused = match &reply {
                    Response::Error { code, .. } => Some(code.as_str()),
                    _ => None,
                };
                self.audit(
                    now,
                    Event::action("login", &conn.peer(), refused).subject(&source.login_key()),
                );
                reply
            }
            Request::AwaitLogin { login } => self.logins.wait(&login, now).await,
            Request::Logout { login } => {
                let source = match self.sso_login(&login) {
                    Ok(s) => s,
                    Err(r) => return *r,
                };
                self.audit(
                    now,
                    Event::action("logout", &conn.peer(), None).subject(&source.login_key()),
                );
                self.logins.logout(&source).await
            }
            Request::SsoDiscover { login } => {
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
                    .to_response(),
                }
            }
            _ => super::misrouted(),
        }
    }

    /// The login `name` names, from a fresh read of `~/.aws/config`.
    fn sso_login(&self, name: &str) -> Result<crate::profiles::SsoSource, Box<Response>> {
        self.sessions.reload_profiles(&self.aws_config)?;
        self.sessions
            .profiles()
            .sso_login(name)
            .map_err(|e| Box::new(Response::error(ErrorCode::Profile, e.to_string())))
    }
}

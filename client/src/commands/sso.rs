//! `credctl login` and `credctl logout`: IAM Identity Center.

use std::path::Path;

use credagent_proto::{Request, Response};

use crate::agent::{unexpected, Agent};
use crate::cli::AuthArgs;
use crate::error::{Failure, Result};

/// `credctl login LOGIN`.
pub fn login(socket: &Path, login: &str, device_code: bool, touch: &AuthArgs) -> Result<String> {
    let mut agent = Agent::connect_or_fail(socket)?;
    let (name, expires_at) = run_login(&mut agent, login, device_code, touch)?;
    Ok(format!(
        "logged in to IAM Identity Center ({name}); the access token is refreshed in the \
         background ({} left now). Open a role with `credctl use ROLE`: each takes a touch.\n",
        crate::text::time_left(expires_at)
    ))
}

/// Starts or joins the login, tells the person what to do, and waits for it.
pub(crate) fn run_login(
    agent: &mut Agent,
    login: &str,
    device_code: bool,
    touch: &AuthArgs,
) -> Result<(String, u64)> {
    let request = Request::Login {
        login: login.to_owned(),
        device_code,
    };
    let pending = match super::keys::request_with_touch(agent, &request, touch)? {
        Response::LoggedIn { login, expires_at } => return Ok((login, expires_at)),
        pending @ Response::LoginPending { .. } => pending,
        other => return Err(unexpected(&other)),
    };
    let Response::LoginPending {
        login: name,
        authorize_url,
        user_code,
        verification_uri,
        verification_uri_complete,
        ..
    } = pending
    else {
        return Err(unexpected(&pending));
    };
    match (authorize_url, user_code, verification_uri) {
        (Some(url), _, _) => {
            eprintln!("credctl: sign in to IAM Identity Center in your browser: {url}");
            let _ = crate::touch::open_browser(&url);
        }
        (None, Some(code), Some(uri)) => {
            eprintln!(
                "credctl: on any device, open {uri} and enter the code {code} (check that the \
                 page shows this same code)"
            );
            if let Some(complete) = verification_uri_complete {
                eprintln!("credctl: or open {complete}");
            }
        }
        _ => {
            return Err(Failure::failed(
                "the agent started a login but said neither where to sign in nor which code to \
                 enter: update credagent",
            ))
        }
    }
    eprintln!("credctl: waiting for the sign-in…");
    match agent.request(&Request::AwaitLogin {
        login: name.clone(),
    })? {
        Response::LoggedIn { login, expires_at } => Ok((login, expires_at)),
        other => Err(unexpected(&other)),
    }
}

/// `credctl logout LOGIN`.
pub fn logout(socket: &Path, login: &str) -> Result<String> {
    let mut agent = Agent::connect_or_fail(socket)?;
    match agent.request(&Request::Logout {
        login: login.to_owned(),
    })? {
        Response::Ok => Ok(format!(
            "logged out of {login}: its tokens are revoked and forgotten\n"
        )),
        Response::LoggedOut { ended, .. } => {
            let mut out = format!("logged out of {login}: its tokens are revoked and forgotten\n");
            if !ended.is_empty() {
                out.push_str(&format!(
                    "ended the role sessions opened on it: {}\n",
                    ended
                        .iter()
                        .map(|r| crate::text::printable(r))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            Ok(out)
        }
        other => Err(unexpected(&other)),
    }
}

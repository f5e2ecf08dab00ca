//! Opening a role from the command line: the `Open` request, then whatever it takes first (an
//! MFA code, an IAM Identity Center login, a touch), as every command that needs a session does.

use credagent_proto::{Request, Response};

use crate::agent::{unexpected, Agent};
use crate::cli::TouchArgs;
use crate::error::{Failure, Result};
use crate::touch::{answer, say_what_we_wait_behind, Authenticator};

/// An open role session, as the agent reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenedRole {
    /// The session's end (Unix seconds).
    pub expires_at: u64,
    /// The role's region from its profile or chain (`None`: none, or an agent that does not
    /// say).
    pub region: Option<String>,
    /// The role's account (`None`: an agent that does not say).
    pub account_id: Option<String>,
}

/// Keeps the agent's reason for the login (expired, never logged in) and drops its advice to run
/// `credctl login`, which credctl is about to do itself.
fn say_why_login(message: &str) {
    let reason = message
        .split(": run `credctl login")
        .next()
        .unwrap_or(message)
        .trim();
    if !reason.is_empty() {
        eprintln!("credctl: {}", crate::text::printable(reason));
    }
}

/// An MFA code is the six digits an authenticator app or token shows (STS's `TokenCode`).
fn check_mfa_code(code: &str) -> Result<()> {
    if code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(());
    }
    Err(crate::error::Failure::usage(
        "an MFA code is the 6 digits your authenticator app or token shows now; nothing was \
         sent (no touch, no STS call): run the command again with the current code",
    ))
}

/// Opens `role` (touching if needed, asking for an MFA code if the source needs one).
pub fn open_role(agent: &mut Agent, role: &str, args: &TouchArgs) -> Result<OpenedRole> {
    // A mistyped --authenticator is a usage error before anything happens, not after the
    // agent started a ceremony.
    let auth = Authenticator::choose(&args.auth)?;
    // A code that cannot be one is refused before any touch or STS call.
    if let Some(code) = &args.mfa_code {
        check_mfa_code(code)?;
    }
    let mut mfa_code = args.mfa_code.clone().map(credagent_proto::Secret::new);
    let mut asked = false;
    let mut logged_in = false;
    say_what_we_wait_behind(agent, &format!("role {role}"));
    loop {
        let resp = agent.raw(&Request::Open {
            role: role.to_owned(),
            mfa_code: mfa_code.clone(),
            accept_change: args.accept_change,
            renew: args.renew,
        })?;
        match resp {
            Response::Opened {
                expires_at,
                region,
                account_id,
                ..
            } => {
                return Ok(OpenedRole {
                    expires_at,
                    region,
                    account_id,
                })
            }
            Response::Error {
                code: credagent_proto::ErrorCode::MfaRequired,
                message,
            } if !asked => {
                let code = crate::prompt::ask(
                    &format!("{message}\nMFA code: "),
                    false,
                    &format!("pass the code with `--mfa-code CODE` ({message})"),
                )?;
                check_mfa_code(code.trim())?;
                mfa_code = Some(credagent_proto::Secret::new(code.trim()));
                asked = true;
            }
            Response::Error {
                code: credagent_proto::ErrorCode::LoginRequired,
                message,
            } if !logged_in => {
                // Log in first (one login for the whole sso-session), then the touch. The
                // agent's "run credctl login" is what a script would need; here credctl does it.
                say_why_login(&message);
                eprintln!("credctl: logging in first; the touch for {role} follows");
                crate::commands::sso::run_login(agent, role, login_by_device_code(), &args.auth)?;
                logged_in = true;
            }
            Response::Error { code, message } => {
                return Err(Failure::new(crate::agent::exit_for(code), message))
            }
            other => {
                let c = crate::ceremony::challenge(other)?;
                return match answer(agent, &auth, &c)? {
                    Response::Opened {
                        expires_at,
                        region,
                        account_id,
                        ..
                    } => Ok(OpenedRole {
                        expires_at,
                        region,
                        account_id,
                    }),
                    other => Err(unexpected(&other)),
                };
            }
        }
    }
}

/// Whether an on-demand login uses the device code (`CREDCTL_SSO_DEVICE_CODE=1`, for machines
/// without a browser) rather than the browser.
fn login_by_device_code() -> bool {
    std::env::var("CREDCTL_SSO_DEVICE_CODE").is_ok_and(|v| v == "1" || v == "true")
}

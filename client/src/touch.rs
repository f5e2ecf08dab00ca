//! Answering the agent's WebAuthn challenges: with a USB security key, in the browser, or with
//! the software authenticator (tests and demos only). All three are verified by the same agent
//! code; this module only carries the challenge to the authenticator and the answer back.

use credagent_proto::{Request, Response};

use crate::agent::{unexpected, Agent};
use crate::cli::{AuthArgs, TouchArgs};
use crate::error::{Failure, Result};

/// Where the touch comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authenticator {
    Usb,
    Browser,
    Soft(std::path::PathBuf),
}

impl Authenticator {
    /// From `--authenticator`/`--browser`, else `$CREDCTL_AUTHENTICATOR`, else `usb`.
    pub fn choose(args: &AuthArgs) -> Result<Authenticator> {
        if args.browser {
            return Ok(Authenticator::Browser);
        }
        let spec = args
            .authenticator
            .clone()
            .or_else(|| {
                std::env::var("CREDCTL_AUTHENTICATOR")
                    .ok()
                    .filter(|s| !s.is_empty())
            })
            .unwrap_or_else(|| "usb".into());
        Self::parse(&spec)
    }

    pub fn parse(spec: &str) -> Result<Authenticator> {
        match spec {
            "usb" => Ok(Authenticator::Usb),
            "browser" => Ok(Authenticator::Browser),
            s if s.starts_with("soft:") && s.len() > 5 => Ok(Authenticator::Soft(s[5..].into())),
            other => Err(Failure::usage(format!(
                "unknown authenticator {other:?}: use usb, browser or soft:FILE"
            ))),
        }
    }
}

/// A challenge from the agent.
pub struct Challenge {
    pub ceremony_id: String,
    pub origin: String,
    pub role: Option<String>,
    pub purpose: Option<String>,
    pub session_secs: Option<u64>,
    /// What the touch opens: the source and every role ARN of the chain.
    pub target: Option<String>,
    pub approve_url: String,
    pub options: serde_json::Value,
}

impl Challenge {
    pub fn from_response(r: Response) -> Result<Challenge> {
        match r {
            Response::Challenge {
                ceremony_id,
                origin,
                role,
                purpose,
                session_secs,
                target,
                approve_url,
                options,
            } => Ok(Challenge {
                ceremony_id,
                origin,
                role,
                purpose,
                session_secs,
                target,
                approve_url,
                options,
            }),
            other => Err(unexpected(&other)),
        }
    }

    pub fn what(&self) -> String {
        if let Some(p) = &self.purpose {
            return p.clone();
        }
        // The touch approves what the agent resolved, not a name: show it.
        let opens = self
            .target
            .as_deref()
            .map(|t| format!(": {}", crate::text::printable(t)))
            .unwrap_or_default();
        match (&self.role, self.session_secs) {
            (Some(role), Some(s)) => {
                format!("to open role {role} (session {}){opens}", human(s))
            }
            (Some(role), None) => format!("to open role {role}{opens}"),
            (None, _) => "to register it with credagent".into(),
        }
    }
}

fn human(secs: u64) -> String {
    match (secs / 3600, secs / 60 % 60) {
        (0, m) => format!("{m}m"),
        (h, 0) => format!("{h}h"),
        (h, m) => format!("{h}h{m}m"),
    }
}

/// Takes the touch for `c` and returns the agent's verdict (`Opened` / `KeyAdded` / error).
pub fn answer(agent: &mut Agent, auth: &Authenticator, c: &Challenge) -> Result<Response> {
    if touch_only(&c.options) {
        eprintln!(
            "credctl: warning: this touch needs no PIN ([approval] user_verification = \
             \"discouraged\"): a program that reaches your key can take one as well; remove \
             that line from config.toml unless you chose it"
        );
    }
    match auth {
        Authenticator::Browser => {
            eprintln!(
                "credctl: approve in your browser {}: {}",
                c.what(),
                c.approve_url
            );
            let _ = open_browser(&c.approve_url);
            agent.request(&Request::AwaitCeremony {
                ceremony_id: c.ceremony_id.clone(),
            })
        }
        Authenticator::Soft(path) => soft(agent, path, c),
        Authenticator::Usb => usb(agent, c),
    }
}

/// Whether an approval's options ask for a touch without user verification (a touch-only
/// policy; registrations and approvals alike).
fn touch_only(options: &serde_json::Value) -> bool {
    let pk = &options["publicKey"];
    pk["userVerification"] == "discouraged"
        || pk["authenticatorSelection"]["userVerification"] == "discouraged"
}

/// Opens `url` with `xdg-open`; whether it did. When it did not, says to open it by hand.
pub(crate) fn open_browser(url: &str) -> bool {
    let opened = std::process::Command::new("xdg-open")
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !opened {
        eprintln!("credctl: open that address in a browser on this machine");
    }
    opened
}

#[cfg(feature = "soft-authenticator")]
fn soft(agent: &mut Agent, path: &std::path::Path, c: &Challenge) -> Result<Response> {
    use crate::authenticator::ctap::prf;
    use crate::authenticator::soft::{SoftAuthenticator, SoftError};
    use crate::error::Exit;
    eprintln!(
        "credctl: WARNING: using the INSECURE software authenticator {} (tests and demos only: \
         anyone who copies that file holds your \"key\")",
        path.display()
    );
    eprintln!("credctl: software authenticator signing {}", c.what());
    let origin = url_parse(&c.origin)?;
    let mut token = SoftAuthenticator::open_or_create(path)
        .map_err(|e| Failure::failed(format!("software authenticator {}: {e}", path.display())))?;
    let refused = |e: SoftError| {
        Failure::new(
            Exit::NotApproved,
            format!("the software authenticator refused: {e}"),
        )
    };
    let credential = if c.role.is_some() {
        let (options, prf) = prf::parse_authentication(&c.options).map_err(Failure::failed)?;
        let rp_id = options.public_key.rp_id.clone();
        let (cred, output) = token
            .authenticate_with_prf(&origin, options, prf.clone())
            .map_err(refused)?;
        let mut answer =
            prf::authentication_answer(&cred, output.as_deref()).map_err(Failure::failed)?;
        if let Some(input) = without_uv_input(&c.options, &cred.raw_id, prf.as_ref()) {
            say_moving_to_user_verification();
            let touch_only = token
                .prf_without_uv(&rp_id, &cred.raw_id, input)
                .map_err(refused)?;
            add_without_uv(&mut answer, &touch_only);
        }
        Ok(answer)
    } else {
        let (options, want_prf) = prf::parse_registration(&c.options).map_err(Failure::failed)?;
        let (cred, enabled) = token
            .register_with_prf(&origin, options, want_prf)
            .map_err(refused)?;
        prf::registration_answer(&cred, enabled)
    }
    .map_err(Failure::failed)?;
    approve(agent, c, credential)
}

/// The PRF input of `credential` when the agent also asks for its output from a touch without
/// user verification ([`credagent_proto::PRF_WITHOUT_UV`]): its copy of the vault predates user
/// verification and moves now.
#[cfg(any(feature = "soft-authenticator", feature = "usb"))]
pub(crate) fn without_uv_input<'a>(
    options: &serde_json::Value,
    credential: &[u8],
    prf: Option<&'a crate::authenticator::ctap::prf::PrfInputs>,
) -> Option<&'a [u8]> {
    use base64::Engine as _;
    let id = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(credential);
    let listed = options
        .get(credagent_proto::PRF_WITHOUT_UV)?
        .as_array()?
        .iter()
        .any(|v| v.as_str() == Some(id.as_str()));
    listed.then(|| prf?.input_for(Some(credential)))?
}

/// Adds the touch-only output to an answer ([`credagent_proto::PRF_WITHOUT_UV`]).
#[cfg(any(feature = "soft-authenticator", feature = "usb"))]
pub(crate) fn add_without_uv(answer: &mut serde_json::Value, output: &[u8; 32]) {
    use base64::Engine as _;
    if let Some(o) = answer.as_object_mut() {
        o.insert(
            credagent_proto::PRF_WITHOUT_UV.into(),
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(output)
                .into(),
        );
    }
}

#[cfg(any(feature = "soft-authenticator", feature = "usb"))]
pub(crate) fn say_moving_to_user_verification() {
    eprintln!(
        "credctl: this key's copy of your vault still opens with a touch alone: touch the key \
         once more, without the PIN, to move it to PIN protection"
    );
}

/// Sends the answer to the agent, then overwrites the strings of the answer (a PRF output is a
/// secret) in our copy.
#[cfg(any(feature = "soft-authenticator", feature = "usb"))]
pub(crate) fn approve(
    agent: &mut Agent,
    c: &Challenge,
    credential: serde_json::Value,
) -> Result<Response> {
    let mut request = Request::Approve {
        ceremony_id: c.ceremony_id.clone(),
        credential,
    };
    let verdict = agent.request(&request);
    if let Request::Approve { credential, .. } = &mut request {
        crate::authenticator::ctap::prf::scrub_json(credential);
    }
    verdict
}

#[cfg(feature = "soft-authenticator")]
fn url_parse(s: &str) -> Result<webauthn_authenticator_rs::prelude::Url> {
    webauthn_authenticator_rs::prelude::Url::parse(s)
        .map_err(|e| Failure::failed(format!("the agent sent a bad origin {s:?}: {e}")))
}

#[cfg(not(feature = "soft-authenticator"))]
fn soft(_agent: &mut Agent, _path: &std::path::Path, _c: &Challenge) -> Result<Response> {
    Err(Failure::failed(
        "this credctl was built without the software authenticator (cargo feature \
         `soft-authenticator`, for tests and demos); use --authenticator usb or browser",
    ))
}

#[cfg(feature = "usb")]
fn usb(agent: &mut Agent, c: &Challenge) -> Result<Response> {
    crate::authenticator::usb::answer(agent, c, &c.what())
}

#[cfg(not(feature = "usb"))]
fn usb(_agent: &mut Agent, _c: &Challenge) -> Result<Response> {
    Err(Failure::failed(
        "this credctl was built without USB security-key support (cargo feature `usb`); use \
         --browser to approve in a browser",
    ))
}

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
                let c = Challenge::from_response(other)?;
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

/// Sends `req`; when the agent answers that it needs this connection's touch first (the request
/// hands over a secret to seal), takes that touch (`credctl confirm`'s) and sends it again.
pub fn request_with_touch(agent: &mut Agent, req: &Request, auth: &AuthArgs) -> Result<Response> {
    match agent.raw(req)? {
        Response::Error {
            code: credagent_proto::ErrorCode::TouchRequired,
            message,
        } => {
            // Another requester may be starting the same login right now (fifty processes at
            // once): after a short, per-process pause, ask again; the agent holds the request
            // while another's touch is under way and joins the login it starts.
            std::thread::sleep(std::time::Duration::from_millis(u64::from(
                std::process::id() % 300,
            )));
            match agent.raw(req)? {
                Response::Error {
                    code: credagent_proto::ErrorCode::TouchRequired,
                    ..
                } => {}
                Response::Error { code, message } => {
                    return Err(Failure::new(crate::agent::exit_for(code), message))
                }
                other => return Ok(other),
            }
            eprintln!("credctl: {message}");
            crate::commands::keys::confirm_on(agent, false, auth)?;
            // A touch this credctl only followed (another one led it) credits that one: the
            // login it starts is then joined here. Give it a moment, then touch ourselves.
            for _ in 0..20 {
                match agent.raw(req)? {
                    Response::Error {
                        code: credagent_proto::ErrorCode::TouchRequired,
                        ..
                    } => std::thread::sleep(std::time::Duration::from_millis(150)),
                    Response::Error { code, message } => {
                        return Err(Failure::new(crate::agent::exit_for(code), message))
                    }
                    other => return Ok(other),
                }
            }
            crate::commands::keys::confirm_on(agent, false, auth)?;
            agent.request(req)
        }
        Response::Error { code, message } => {
            Err(Failure::new(crate::agent::exit_for(code), message))
        }
        other => Ok(other),
    }
}

/// One touch at a time: when the agent is asking for a touch for something else, say for what
/// and for whom before waiting behind it (the agent holds this request until that one is
/// touched or times out), so nobody touches for the wrong thing while this one waits.
pub(crate) fn say_what_we_wait_behind(agent: &mut Agent, mine: &str) {
    let Ok(Response::Status(info)) = agent.raw(&Request::Status) else {
        return;
    };
    let this = if mine.is_empty() {
        "this one".to_owned()
    } else {
        format!("this one ({mine})")
    };
    for a in info.approvals.iter().filter(|a| a.what != mine) {
        eprintln!(
            "credctl: waiting: the agent is asking for a touch for {}, asked by {}; {this} \
             follows once that one is touched or times out (at most {} s). Touch only for what \
             your authenticator shows",
            crate::text::printable(&a.what),
            crate::text::printable(&a.requester),
            credagent_proto::timeouts::OUTCOME_WAIT.as_secs()
        );
    }
}

/// Whether an on-demand login uses the device code (`CREDCTL_SSO_DEVICE_CODE=1`, for machines
/// without a browser) rather than the browser.
fn login_by_device_code() -> bool {
    std::env::var("CREDCTL_SSO_DEVICE_CODE").is_ok_and(|v| v == "1" || v == "true")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_touch_only_challenge_is_recognised() {
        let approve = serde_json::json!({"publicKey": {"userVerification": "discouraged"}});
        let register = serde_json::json!({"publicKey": {"authenticatorSelection":
            {"userVerification": "discouraged"}}});
        assert!(touch_only(&approve) && touch_only(&register));
        let verified = serde_json::json!({"publicKey": {"userVerification": "required"}});
        assert!(!touch_only(&verified) && !touch_only(&serde_json::json!({})));
    }

    #[test]
    fn parses_authenticator_specs() {
        assert_eq!(Authenticator::parse("usb").unwrap(), Authenticator::Usb);
        assert_eq!(
            Authenticator::parse("browser").unwrap(),
            Authenticator::Browser
        );
        assert_eq!(
            Authenticator::parse("soft:/x/y").unwrap(),
            Authenticator::Soft("/x/y".into())
        );
        assert!(Authenticator::parse("soft:").is_err());
        assert!(Authenticator::parse("yubikey")
            .unwrap_err()
            .message
            .contains("usb, browser or soft:FILE"));
    }
}

//! Answering the agent's WebAuthn challenges: with a USB security key, in the browser, or with
//! the software authenticator (tests and demos only). All three are verified by the same agent
//! code; this module only carries the challenge to the authenticator and the answer back.

use credagent_proto::{Request, Response};

use crate::agent::Agent;
use crate::ceremony::{Challenge, Describe};
use crate::cli::AuthArgs;
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

/// Takes the touch for `c` and returns the agent's verdict (`Opened` / `KeyAdded` / error).
pub fn answer(agent: &mut Agent, auth: &Authenticator, c: &Challenge) -> Result<Response> {
    if crate::ceremony::touch_only(&c.options) {
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
        // The drivers only touch; the answer goes to the agent from here, as it does for all.
        Authenticator::Soft(path) => {
            let answer = soft(path, c)?;
            send(agent, c, answer)
        }
        Authenticator::Usb => {
            let answer = usb(c)?;
            send(agent, c, answer)
        }
    }
}

/// Sends a driver's answer to the agent: its verdict.
#[cfg(any(feature = "soft-authenticator", feature = "usb"))]
fn send(agent: &mut Agent, c: &Challenge, answer: serde_json::Value) -> Result<Response> {
    crate::ceremony::approve(agent, c, answer)
}

/// Without a driver there is never an answer to send (both drivers refuse first).
#[cfg(not(any(feature = "soft-authenticator", feature = "usb")))]
fn send(_agent: &mut Agent, _c: &Challenge, _answer: serde_json::Value) -> Result<Response> {
    Err(Failure::failed(
        "this credctl was built without an authenticator driver; approve with --browser",
    ))
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
fn soft(path: &std::path::Path, c: &Challenge) -> Result<serde_json::Value> {
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
    if c.role.is_some() {
        let (options, prf) = prf::parse_authentication(&c.options).map_err(Failure::failed)?;
        let rp_id = options.public_key.rp_id.clone();
        let (cred, output) = token
            .authenticate_with_prf(&origin, options, prf.clone())
            .map_err(refused)?;
        let mut answer =
            prf::authentication_answer(&cred, output.as_deref()).map_err(Failure::failed)?;
        if let Some(input) =
            crate::ceremony::without_uv_input(&c.options, &cred.raw_id, prf.as_ref())
        {
            crate::ceremony::say_moving_to_user_verification();
            let touch_only = token
                .prf_without_uv(&rp_id, &cred.raw_id, input)
                .map_err(refused)?;
            crate::ceremony::add_without_uv(&mut answer, &touch_only);
        }
        Ok(answer)
    } else {
        let (options, want_prf) = prf::parse_registration(&c.options).map_err(Failure::failed)?;
        let (cred, enabled) = token
            .register_with_prf(&origin, options, want_prf)
            .map_err(refused)?;
        prf::registration_answer(&cred, enabled)
    }
    .map_err(Failure::failed)
}

#[cfg(feature = "soft-authenticator")]
fn url_parse(s: &str) -> Result<webauthn_authenticator_rs::prelude::Url> {
    webauthn_authenticator_rs::prelude::Url::parse(s)
        .map_err(|e| Failure::failed(format!("the agent sent a bad origin {s:?}: {e}")))
}

#[cfg(not(feature = "soft-authenticator"))]
fn soft(_path: &std::path::Path, _c: &Challenge) -> Result<serde_json::Value> {
    Err(Failure::failed(
        "this credctl was built without the software authenticator (cargo feature \
         `soft-authenticator`, for tests and demos); use --authenticator usb or browser",
    ))
}

#[cfg(feature = "usb")]
fn usb(c: &Challenge) -> Result<serde_json::Value> {
    crate::authenticator::usb::touch(c, &c.what())
}

#[cfg(not(feature = "usb"))]
fn usb(_c: &Challenge) -> Result<serde_json::Value> {
    Err(Failure::failed(
        "this credctl was built without USB security-key support (cargo feature `usb`); use \
         --browser to approve in a browser",
    ))
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

#[cfg(test)]
mod tests {
    use super::*;

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

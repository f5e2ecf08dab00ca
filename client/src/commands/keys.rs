//! `credctl key add | list | remove`.

use std::path::Path;

use credagent_proto::{KeyInfo, Request, Response};

use crate::agent::{unexpected, Agent};
use crate::cli::AuthArgs;
use crate::error::{Failure, Result};
use crate::text::utc_date;
use crate::touch::{answer, Authenticator};

pub fn add(
    socket: &Path,
    name: Option<String>,
    touch: &AuthArgs,
    authorizer: Option<&str>,
    accept_change: bool,
) -> Result<String> {
    let mut agent = Agent::connect_or_fail(socket)?;
    let name = match name {
        Some(n) => n,
        None => {
            let n = match agent.request(&Request::KeyList)? {
                Response::Keys { keys } => keys.len(),
                other => return Err(unexpected(&other)),
            };
            format!("key-{}", n + 1)
        }
    };
    let mut resp = agent.request(&Request::KeyAddStart {
        name: name.clone(),
        accept_change,
    })?;
    let auth = Authenticator::choose(touch)?;
    // With keys registered already, the first touch (an existing key) authorizes the second
    // (the new key).
    let mut authorizer = authorizer.map(Authenticator::parse).transpose()?;
    loop {
        match resp {
            Response::KeyAdded { key } => {
                let mut out = format!(
                    "registered security key {} ({} authenticator, {})\n",
                    key.name,
                    key.kind,
                    if key.sealed {
                        "holds a copy of your vault"
                    } else {
                        "UNSEALED: its touch approves by policy only"
                    }
                );
                if let Ok(Response::Keys { keys }) = agent.request(&Request::KeyList) {
                    if keys.len() < 2 {
                        out.push_str(
                            "warning: only one key is registered. Your sources are sealed to \
                             your keys: lose this one and they are lost with it. Register a \
                             second key with `credctl key add`.\n",
                        );
                    }
                }
                return Ok(out);
            }
            Response::Challenge(c) => {
                let c = *c;
                let sealing = c.seals_new_key();
                let authorizing = c.role.is_some() && !sealing;
                let by = match (authorizing, authorizer.take()) {
                    (true, Some(a)) => a,
                    _ => auth.clone(),
                };
                if sealing {
                    eprintln!(
                        "credctl: touch the new key {name} once more to seal your sources to it"
                    );
                }
                resp = answer(&mut agent, &by, &c).map_err(|f| {
                    if authorizing {
                        Failure::new(
                            f.exit,
                            format!(
                                "adding a key needs a touch of a key registered before, and that \
                                 touch failed ({f}); touch one of the keys in `credctl key list` \
                                 when asked"
                            ),
                        )
                    } else {
                        f
                    }
                })?;
            }
            other => return Err(unexpected(&other)),
        }
    }
}

pub fn render(keys: &[KeyInfo]) -> String {
    if keys.is_empty() {
        return "no security keys registered: add one with `credctl key add`\n".into();
    }
    let mut out = format!(
        "{:<20} {:<10} {:<10} {:<10} {:>8}  {}\n",
        "NAME", "KIND", "CREATED", "LAST USED", "COUNTER", "SEALING"
    );
    for k in keys {
        out.push_str(&format!(
            "{:<20} {:<10} {:<10} {:<10} {:>8}  {}\n",
            k.name,
            k.kind,
            utc_date(k.created),
            k.last_used.map(utc_date).unwrap_or_else(|| "never".into()),
            k.counter,
            match (k.sealed, k.verified_seal) {
                (true, true) => "sealed, PIN/biometric",
                (true, false) => "sealed, TOUCH ONLY",
                (false, _) => "UNSEALED",
            }
        ));
    }
    out
}

pub fn list(socket: &Path, json: bool) -> Result<String> {
    let mut agent = Agent::connect_or_fail(socket)?;
    match agent.request(&Request::KeyList)? {
        Response::Keys { keys } if json => serde_json::to_string_pretty(&keys)
            .map(|s| s + "\n")
            .map_err(|e| Failure::failed(e.to_string())),
        Response::Keys { keys } => Ok(render(&keys)),
        other => Err(unexpected(&other)),
    }
}

/// `credctl confirm`: a touch that opens nothing; it unwraps the vault and checks (or, with
/// `accept_change`, confirms) the agent's settings.
pub fn confirm(socket: &Path, accept_change: bool, touch: &AuthArgs) -> Result<String> {
    let mut agent = Agent::connect_or_fail(socket)?;
    confirm_on(&mut agent, accept_change, touch)?;
    Ok(if accept_change {
        "confirmed: the agent's settings are now the ones your touches vouch for\n".to_owned()
    } else {
        "confirmed: the agent's settings are the ones your touches vouched for\n".to_owned()
    })
}

/// The confirming touch on an open connection (also what a source add or a login takes first).
pub(crate) fn confirm_on(agent: &mut Agent, accept_change: bool, touch: &AuthArgs) -> Result<()> {
    // Whatever else is being touched for, even another credctl's confirming touch (which this
    // one would only follow: a touch it did not lead proves nothing for it), is said first.
    crate::touch::say_what_we_wait_behind(agent, "");
    let resp = agent.request(&Request::Confirm { accept_change })?;
    let c = match resp {
        Response::Challenge(c) => *c,
        // Another credctl's confirming touch was under way, and this one followed it.
        Response::Ok => return Ok(()),
        other => return Err(unexpected(&other)),
    };
    let auth = Authenticator::choose(touch)?;
    match answer(agent, &auth, &c).map_err(|f| {
        Failure::new(
            f.exit,
            format!("the confirming touch failed ({f}); nothing was confirmed"),
        )
    })? {
        Response::Ok => Ok(()),
        other => Err(unexpected(&other)),
    }
}

/// `credctl reload`: the agent reads config.toml again; settings a touch vouches for apply
/// after one touch, which is shown what changed.
pub fn reload(socket: &Path, touch: &AuthArgs) -> Result<String> {
    let mut agent = Agent::connect_or_fail(socket)?;
    crate::touch::say_what_we_wait_behind(&mut agent, "");
    let mut shown = true;
    match agent.request(&Request::Reload)? {
        Response::Reloaded { restart } => {
            let mut out = "config.toml read again: nothing a touch vouches for changed, so \
                           nothing needed one\n"
                .to_owned();
            out.push_str(&restart_lines(&restart));
            return Ok(out);
        }
        Response::Challenge(c) => {
            let auth = Authenticator::choose(touch)?;
            match answer(&mut agent, &auth, &c).map_err(|f| {
                Failure::new(
                    f.exit,
                    format!(
                        "the touch failed ({f}); nothing changed: the agent keeps the settings \
                         it had"
                    ),
                )
            })? {
                Response::Ok => {}
                other => return Err(unexpected(&other)),
            }
        }
        // No key registered yet: nothing a touch could protect, applied at once.
        Response::Ok => shown = false,
        other => return Err(unexpected(&other)),
    }
    let mut out = if shown {
        "reloaded: the agent now runs with the settings your touch was shown; every session \
         stays open and the port is the same\n"
    } else {
        "reloaded: no key is registered yet, so config.toml's settings apply without a touch \
         (your first key's touch vouches for them)\n"
    }
    .to_owned();
    if let Ok(Response::Status(info)) = agent.request(&Request::Status) {
        if info.config_changed {
            out.push_str(
                "config.toml changed again while the touch was asked for: those changes are \
                 not applied; run `credctl reload` again to see them\n",
            );
        }
        out.push_str(&restart_lines(&info.config_needs_restart));
    }
    Ok(out)
}

/// The settings that apply only at the next start, and how to get there.
fn restart_lines(restart: &[String]) -> String {
    if restart.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "these apply only when the agent starts again (`credctl stop`, then `credctl start`; \
         sessions end and shells need `eval \"$(credctl start)\"` again):\n",
    );
    for line in restart {
        out.push_str(&format!("  {line}\n"));
    }
    out
}

/// The registered keys whose copy of the vault still opens with a touch alone.
fn touch_only_keys(agent: &mut Agent) -> Result<Vec<String>> {
    match agent.request(&Request::KeyList)? {
        Response::Keys { keys } => Ok(keys
            .into_iter()
            .filter(|k| k.sealed && !k.verified_seal)
            .map(|k| k.name)
            .collect()),
        other => Err(unexpected(&other)),
    }
}

/// `credctl key pin`: moves the keys' copies of the vault that still open with a touch alone
/// to their PIN (one touch without the PIN, one with it).
pub fn pin(socket: &Path, accept_change: bool, touch: &AuthArgs) -> Result<String> {
    let mut agent = Agent::connect_or_fail(socket)?;
    let before = touch_only_keys(&mut agent)?;
    if before.is_empty() {
        return Ok("every key's copy of your vault opens only with its PIN already\n".into());
    }
    crate::touch::say_what_we_wait_behind(&mut agent, "");
    let resp = agent.request(&Request::KeyPin { accept_change })?;
    let c = match resp {
        Response::Challenge(c) => *c,
        other => return Err(unexpected(&other)),
    };
    let auth = Authenticator::choose(touch)?;
    match answer(&mut agent, &auth, &c)? {
        Response::Ok => {}
        other => return Err(unexpected(&other)),
    }
    let after = touch_only_keys(&mut agent)?;
    let moved: Vec<&String> = before.iter().filter(|k| !after.contains(k)).collect();
    let mut out = String::new();
    for k in &moved {
        out.push_str(&format!(
            "moved key {k}'s copy of your vault to its PIN: a touch without it opens nothing now\n"
        ));
    }
    if !after.is_empty() {
        out.push_str(&format!(
            "still touch-only: {} (run `credctl key pin` with each of them)\n",
            after.join(", ")
        ));
    }
    out.push_str(
        "copies of vault.json made before stay openable by a touch alone: see SECURITY.md\n",
    );
    Ok(out)
}

/// `credctl key remove`: the agent answers with a challenge that a registered key must sign.
pub fn remove(socket: &Path, name: &str, force: bool, touch: &AuthArgs) -> Result<String> {
    let mut agent = Agent::connect_or_fail(socket)?;
    let resp = agent.request(&Request::KeyRemove {
        name: name.to_owned(),
        force,
    })?;
    let c = match resp {
        Response::Challenge(c) => *c,
        other => return Err(unexpected(&other)),
    };
    let auth = Authenticator::choose(touch)?;
    match answer(&mut agent, &auth, &c).map_err(|f| {
        Failure::new(
            f.exit,
            format!(
                "removing a key needs a touch of a registered key, and that touch failed ({f}); \
                 nothing was removed"
            ),
        )
    })? {
        Response::Ok => {}
        other => return Err(unexpected(&other)),
    }
    let mut out = format!("removed security key {name}\n");
    if force {
        if let Ok(Response::Keys { keys }) = agent.request(&Request::KeyList) {
            if keys.is_empty() {
                out.push_str("warning: no key is registered now, so no role session can open: `credctl key add`\n");
            }
        }
    }
    Ok(out)
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
            confirm_on(agent, false, auth)?;
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
            confirm_on(agent, false, auth)?;
            agent.request(req)
        }
        Response::Error { code, message } => {
            Err(Failure::new(crate::agent::exit_for(code), message))
        }
        other => Ok(other),
    }
}

//! `credctl source add | list | remove`: long-lived source keys, kept in the agent's keyring.

use std::io::BufRead;
use std::path::Path;

use credagent_proto::{Request, Response, Secret};

use crate::agent::{unexpected, Agent};
use crate::cli::AuthArgs;
use crate::error::{Failure, Result};

use crate::bypass::credentials_file;

fn looks_like_key_id(s: &str) -> bool {
    (16..=128).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Checks the key id without ever echoing what was typed: when the lines are swapped, the
/// "key id" is the secret.
fn check_key_id(id: &str, secret: &str) -> Result<()> {
    if looks_like_key_id(id) {
        return Ok(());
    }
    let why = if looks_like_key_id(secret) {
        "the two lines look swapped: the access key id (AKIA…) comes first, the secret access \
         key second"
    } else {
        "the access key id must be 16 to 128 letters and digits (AKIA…)"
    };
    Err(Failure::usage(format!("{why}; nothing was stored")))
}

/// Refuses, before any touch, an import from a credentials file that does not exist or has no
/// `[profile]` section (the agent reads and checks the file itself; this only spares a touch).
fn check_profile_present(path: &Path, profile: &str) -> Result<()> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Failure::usage(format!(
                "there is no credentials file at {} (set AWS_SHARED_CREDENTIALS_FILE if yours is \
                 elsewhere); nothing was asked of your key",
                path.display()
            )))
        }
        // Unreadable here: the agent says why.
        Err(_) => return Ok(()),
    };
    let sections: Vec<&str> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix('[')?.strip_suffix(']'))
        .map(str::trim)
        .collect();
    if sections.contains(&profile) {
        return Ok(());
    }
    Err(Failure::usage(format!(
        "{} has no profile [{}]{}; nothing was asked of your key",
        path.display(),
        crate::text::printable(profile),
        if sections.is_empty() {
            String::new()
        } else {
            format!(
                " (it has: {})",
                sections
                    .iter()
                    .map(|s| crate::text::printable(s).into_owned())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    )))
}

pub fn add(
    socket: &Path,
    name: &str,
    stdin: bool,
    import: Option<&str>,
    remove_from_file: bool,
    replace: bool,
    touch: &AuthArgs,
) -> Result<String> {
    let mut agent = Agent::connect_or_fail(socket)?;
    // Before a secret is typed or a file touched: a source of this name is never replaced by
    // accident.
    if !replace {
        if let Response::Sources { sources } = agent.request(&Request::SourceList)? {
            if let Some(s) = sources.iter().find(|s| s.name == name) {
                return Err(Failure::usage(format!(
                    "a source named {name} is stored already (key …{}): nothing was stored; \
                     pass --replace to replace it (sessions open on it keep the old key until \
                     they end), or pick another name",
                    crate::text::printable(&s.key_id_suffix)
                )));
            }
        }
    }
    if let Some(profile) = import {
        let path = credentials_file();
        // Before the touch: a file or profile that is not there costs none.
        check_profile_present(&path, profile)?;
        crate::commands::keys::request_with_touch(
            &mut agent,
            &Request::SourceImport {
                name: name.to_owned(),
                path: path.to_string_lossy().into_owned(),
                profile: profile.to_owned(),
                remove_from_file,
            },
            touch,
        )?;
        let mut out = format!(
            "stored source {name} (from profile {profile} of {})\n",
            path.display()
        );
        out.push_str(&unsealed_warning(&mut agent));
        if remove_from_file {
            out.push_str(&format!(
                "removed profile {profile}'s keys from {} (any other settings of it stay)\n",
                path.display()
            ));
        } else {
            out.push_str(&format!(
                "the keys are still in {} in plain text: rerun with --remove-from-file to delete them there\n",
                path.display()
            ));
        }
        return Ok(out);
    }
    let (key_id, secret) = if stdin {
        let mut lines = std::io::stdin().lock().lines();
        let mut next = |what: &str| -> Result<String> {
            lines
                .next()
                .transpose()
                .map_err(|e| Failure::failed(format!("cannot read standard input: {e}")))?
                .map(|l| l.trim().to_owned())
                .filter(|l| !l.is_empty())
                .ok_or_else(|| Failure::usage(format!("standard input ended before the {what}: give the key id on the first line and the secret on the second; nothing was stored")))
        };
        let id = next("access key id")?;
        let secret = next("secret access key")?;
        (id, Secret::new(secret))
    } else {
        let id = crate::prompt::ask(
            "AWS access key id: ",
            false,
            "use --stdin (key id, then secret)",
        )?;
        let secret = crate::prompt::ask(
            "AWS secret access key (hidden): ",
            true,
            "use --stdin (key id, then secret)",
        )?;
        (id.trim().to_owned(), Secret::new(secret.trim()))
    };
    let key_id = zeroize::Zeroizing::new(key_id);
    check_key_id(&key_id, secret.expose())?;
    if key_id.starts_with("ASIA") {
        return Err(Failure::usage(format!(
            "{} is a temporary access key (issued by STS: it expires within hours and needs \
             its session token), so it cannot be a source; nothing was stored. A source is a \
             long-lived IAM user access key (AKIA…); for short-lived credentials from a \
             sign-in, use an IAM Identity Center profile (`sso_session`) and `credctl login`",
            key_id.as_str()
        )));
    }
    if secret.expose().len() < 16 {
        return Err(Failure::usage(
            "the secret access key is too short (AWS secret keys are 40 characters); nothing was \
             stored",
        ));
    }
    crate::commands::keys::request_with_touch(
        &mut agent,
        &Request::SourceAdd {
            name: name.to_owned(),
            access_key_id: key_id.to_string(),
            secret_access_key: secret,
        },
        touch,
    )?;
    let mut out = format!("stored source {name}\n");
    out.push_str(&unsealed_warning(&mut agent));
    Ok(out)
}

/// With no security key registered there is no vault: the source sits in the keyring in
/// clear until a key seals it. Say so loudly (a wiped state directory looks like this too).
fn unsealed_warning(agent: &mut Agent) -> String {
    match agent.request(&Request::KeyList) {
        Ok(Response::Keys { keys }) if keys.is_empty() => "warning: UNSEALED: no security key \
            is registered, so this source is readable in the keyring until you register one \
            (`credctl key add`) and open a role with it. If you had keys registered, your \
            agent's state was removed: do not add sources until you know why\n"
            .to_owned(),
        _ => String::new(),
    }
}

pub fn list(socket: &Path, json: bool) -> Result<String> {
    let mut agent = Agent::connect_or_fail(socket)?;
    match agent.request(&Request::SourceList)? {
        Response::Sources { sources } if json => serde_json::to_string_pretty(&sources)
            .map(|s| s + "\n")
            .map_err(|e| Failure::failed(e.to_string())),
        Response::Sources { sources } if sources.is_empty() => {
            Ok("no sources stored: add one with `credctl source add NAME`\n".into())
        }
        Response::Sources { sources } => {
            let mut out = format!("{:<24} {:<9} {}\n", "SOURCE", "KEY ID", "STATE");
            for s in sources {
                let state = match s.state.as_str() {
                    "unsealed" => "UNSEALED (readable in the keyring; sealed at the next touch)",
                    "" => "unknown (older agent)",
                    other => other,
                };
                out.push_str(&format!("{:<24} …{:<8} {state}\n", s.name, s.key_id_suffix));
            }
            Ok(out)
        }
        other => Err(unexpected(&other)),
    }
}

pub fn remove(socket: &Path, name: &str) -> Result<String> {
    let mut agent = Agent::connect_or_fail(socket)?;
    agent.request(&Request::SourceRemove {
        name: name.to_owned(),
    })?;
    Ok(format!("removed source {name}\n"))
}

#[cfg(test)]
mod tests {
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

    #[test]
    fn key_ids_are_checked_and_never_echoed() {
        assert!(super::check_key_id("AKIAIOSFODNN7EXAMPLE", SECRET).is_ok());
        assert!(super::check_key_id("short", SECRET).is_err());
        assert!(super::check_key_id("AKIA IOSFODNN7EXAMPLE", SECRET).is_err());
        // Swapped lines: the secret sits where the key id belongs.
        let err = super::check_key_id(SECRET, "AKIAIOSFODNN7EXAMPLE").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("swapped"), "{msg}");
        assert!(!msg.contains(SECRET) && !msg.contains("wJalr"), "{msg}");
        assert_eq!(err.exit, crate::error::Exit::Usage);
    }
}

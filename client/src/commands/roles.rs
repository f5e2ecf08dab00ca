//! `credctl roles`: roles from ~/.aws/config and their sessions.

use std::path::Path;

use credagent_proto::{Request, Response, RoleInfo};

use crate::agent::{unexpected, Agent};
use crate::error::{Failure, Result};

pub fn remaining(secs: u64) -> String {
    format!("{}h{:02}m", secs / 3600, secs / 60 % 60)
}

pub fn render(roles: &[RoleInfo]) -> String {
    if roles.is_empty() {
        return "no roles: add profiles with role_arn and source_profile to ~/.aws/config\n".into();
    }
    let mut out = format!(
        "{:<20} {:<14} {:<4} {}\n",
        "ROLE", "SESSION", "MFA", "CHAIN"
    );
    for r in roles {
        let session = match (&r.session, &r.problem) {
            (Some(s), _) if s.serves_approved.is_some() => {
                format!("OPEN AS BEFORE {}", remaining(s.remaining_secs))
            }
            (Some(s), _) => format!("open {}", remaining(s.remaining_secs)),
            (None, Some(_)) => "BROKEN".into(),
            (None, None) => "none".into(),
        };
        // Profile names come from ~/.aws/config: printed with control characters escaped.
        out.push_str(&format!(
            "{:<20} {:<14} {:<4} {}\n",
            crate::text::printable(&r.name),
            session,
            if r.mfa { "yes" } else { "no" },
            if let (true, Some(sso)) = (r.chain.len() < 2, &r.sso_role) {
                format!(
                    "{} in {} (IAM Identity Center)",
                    crate::text::printable(&sso.permission_set),
                    crate::text::printable(&sso.account_id)
                )
            } else if r.chain.is_empty() {
                crate::text::printable(&r.role_arn).into_owned()
            } else {
                r.chain
                    .iter()
                    .map(|c| crate::text::printable(c))
                    .collect::<Vec<_>>()
                    .join(" → ")
            }
        ));
        if let Some(approved) = r.session.as_ref().and_then(|s| s.serves_approved.as_ref()) {
            out.push_str(&format!(
                "    └ the open session serves what its touch approved, {}; ~/.aws/config now \
                 says otherwise: `credctl lock` ends it, and the next touch opens the role as the \
                 file says (and shows the change)\n",
                crate::text::printable(approved)
            ));
        }
        if let Some(sso) = &r.sso {
            out.push_str(&format!(
                "    └ IAM Identity Center {}: {}\n",
                sso.login,
                if sso.logged_in {
                    "logged in".to_owned()
                } else {
                    format!("login needed (`credctl login {}`)", sso.login)
                }
            ));
        }
        if let Some(p) = &r.problem {
            out.push_str(&format!("    └ cannot be opened: {p}\n"));
        }
    }
    // A summary after the table, which may be a thousand lines long.
    let open = roles.iter().filter(|r| r.session.is_some()).count();
    let broken = roles
        .iter()
        .filter(|r| r.session.is_none() && r.problem.is_some())
        .count();
    out.push_str(&format!(
        "{} role{}: {open} open, {broken} broken\n",
        roles.len(),
        if roles.len() == 1 { "" } else { "s" }
    ));
    out
}

/// A profile name for an account and permission set: `<account name or id>-<role>`, with
/// every character the AWS config parsers reject turned into `-`.
fn profile_name(account: &credagent_proto::SsoAccountInfo, role: &str) -> String {
    let base = account
        .account_name
        .as_deref()
        .filter(|n| !n.is_empty())
        .unwrap_or(&account.account_id);
    format!("{base}-{role}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_-./%@:+".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// A permission-set name as IAM Identity Center allows them (`[\w+=,.@-]`, 1 to 32), so that
/// it can go into an INI line as it is; anything else (a newline would start a line of its own,
/// such as `credential_process = …`) is left out of `--config`.
fn plain_permission_set(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_+=,.@-".contains(&b))
}

/// `credctl roles --discover LOGIN [--config [--region REGION]]`: `config` is `Some(region)`
/// with --config.
pub fn discover(
    socket: &Path,
    login: &str,
    json: bool,
    config: Option<Option<String>>,
) -> Result<String> {
    let mut agent = Agent::connect_or_fail(socket)?;
    let resp = agent.request(&Request::SsoDiscover {
        login: login.to_owned(),
    })?;
    let Response::SsoAccounts {
        session,
        start_url,
        sso_region,
        accounts,
    } = resp
    else {
        return Err(unexpected(&resp));
    };
    if json {
        return serde_json::to_string_pretty(&accounts)
            .map(|s| s + "\n")
            .map_err(|e| Failure::failed(e.to_string()));
    }
    if accounts.is_empty() {
        return Ok(format!("{login} can reach no account\n"));
    }
    let mut out = String::new();
    if let Some(region) = config {
        // Without a region SDKs call the global STS endpoint and fail on regional services:
        // every profile gets one, the Identity Center region unless --region says otherwise.
        let region = match region {
            Some(r) => r,
            None => {
                eprintln!(
                    "credctl: each profile gets region = {} (the Identity Center region); pass \
                     --region REGION for another",
                    crate::text::printable(&sso_region)
                );
                sso_region.clone()
            }
        };
        if !crate::region::valid(&region) {
            return Err(Failure::usage(format!(
                "the Identity Center region {} is not a region name: pass --region REGION",
                crate::text::printable(&region)
            )));
        }
        for a in &accounts {
            let account_ok =
                a.account_id.len() == 12 && a.account_id.bytes().all(|b| b.is_ascii_digit());
            for role in &a.roles {
                if !account_ok || !plain_permission_set(role) {
                    eprintln!(
                        "credctl: left out account {} role {}: not an account id and \
                         permission-set name as AWS spells them, so not written into an AWS \
                         config file",
                        crate::text::printable(&a.account_id),
                        crate::text::printable(role)
                    );
                    continue;
                }
                out.push_str(&format!("[profile {}]\n", profile_name(a, role)));
                match &session {
                    Some(s) => out.push_str(&format!("sso_session = {s}\n")),
                    None => out.push_str(&format!(
                        "sso_start_url = {start_url}\nsso_region = {sso_region}\n"
                    )),
                }
                out.push_str(&format!(
                    "sso_account_id = {}\nsso_role_name = {role}\nregion = {region}\n\n",
                    a.account_id
                ));
            }
        }
        return Ok(out);
    }
    out.push_str(&format!(
        "{:<14} {:<24} {}\n",
        "ACCOUNT", "NAME", "PERMISSION SETS"
    ));
    // Names come from the portal: printed with control characters escaped.
    for a in &accounts {
        out.push_str(&format!(
            "{:<14} {:<24} {}\n",
            crate::text::printable(&a.account_id),
            crate::text::printable(a.account_name.as_deref().unwrap_or("-")),
            a.roles
                .iter()
                .map(|r| crate::text::printable(r))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    out.push_str(&format!(
        "(paste-ready profiles: `credctl roles --discover {login} --config >> ~/.aws/config`)\n"
    ));
    Ok(out)
}

/// A warning when this shell's `AWS_CONFIG_FILE` names another file than the agent reads.
pub fn config_mismatch(agent_file: Option<&str>) -> Option<String> {
    let mine = std::env::var("AWS_CONFIG_FILE")
        .ok()
        .filter(|v| !v.is_empty())?;
    if Some(mine.as_str()) == agent_file {
        return None;
    }
    Some(format!(
        "warning: this shell's AWS_CONFIG_FILE is {mine}, but the agent reads {}: the agent \
         uses its own; to change it, restart the agent from a shell where AWS_CONFIG_FILE is \
         what you want (`credctl stop`, then `eval \"$(credctl start)\"`)",
        agent_file.unwrap_or("no AWS config file")
    ))
}

pub fn roles(socket: &Path, json: bool) -> Result<String> {
    let mut agent = Agent::connect_or_fail(socket)?;
    match agent.request(&Request::Roles)? {
        Response::Roles { roles, .. } if json => serde_json::to_string_pretty(&roles)
            .map(|s| s + "\n")
            .map_err(|e| Failure::failed(e.to_string())),
        Response::Roles { roles, aws_config } => {
            let mut out = render(&roles);
            if let Some(file) = &aws_config {
                out.push_str(&format!(
                    "(roles from {file}, the agent's AWS config file)\n"
                ));
            }
            if let Some(w) = config_mismatch(aws_config.as_deref()) {
                eprintln!("credctl: {w}");
            }
            Ok(out)
        }
        other => Err(unexpected(&other)),
    }
}

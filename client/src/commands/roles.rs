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
        let session = match &r.session {
            Some(s) => format!("open {}", remaining(s.remaining_secs)),
            None => "none".into(),
        };
        out.push_str(&format!(
            "{:<20} {:<14} {:<4} {}\n",
            r.name,
            session,
            if r.mfa { "yes" } else { "no" },
            if r.chain.is_empty() {
                r.role_arn.clone()
            } else {
                r.chain.join(" → ")
            }
        ));
    }
    out
}

pub fn roles(socket: &Path, json: bool) -> Result<String> {
    let mut agent = Agent::connect_or_fail(socket)?;
    match agent.request(&Request::Roles)? {
        Response::Roles { roles } if json => serde_json::to_string_pretty(&roles)
            .map(|s| s + "\n")
            .map_err(|e| Failure::failed(e.to_string())),
        Response::Roles { roles } => Ok(render(&roles)),
        other => Err(unexpected(&other)),
    }
}

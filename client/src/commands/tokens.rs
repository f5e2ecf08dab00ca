//! `credctl token list | revoke`: the live endpoint tokens, never their secrets.

use std::path::Path;

use credagent_proto::{Request, Response, TokenInfo};

use crate::agent::{unexpected, Agent};
use crate::error::{Failure, Result};
use crate::text::{printable, utc_minute};

pub fn render(tokens: &[TokenInfo]) -> String {
    if tokens.is_empty() {
        return "no live endpoint tokens\n".into();
    }
    let mut out = format!(
        "{:<16}  {:<6}  {:<24}  {:<16}  {:<16}  {}\n",
        "ID", "KIND", "ROLE", "CREATED (UTC)", "LAST USED", "HOLDER"
    );
    for t in tokens {
        out.push_str(&format!(
            "{:<16}  {:<6}  {:<24}  {:<16}  {:<16}  {}\n",
            t.id,
            t.kind,
            printable(t.role.as_deref().unwrap_or("-")),
            utc_minute(t.created),
            t.last_used
                .map(utc_minute)
                .unwrap_or_else(|| "never".into()),
            printable(
                t.holder
                    .as_deref()
                    .unwrap_or("UNBOUND (anyone holding it may use it)")
            )
        ));
    }
    out
}

pub fn list(socket: &Path, json: bool) -> Result<String> {
    let mut agent = Agent::connect_or_fail(socket)?;
    match agent.request(&Request::TokenList)? {
        Response::Tokens { tokens } if json => serde_json::to_string_pretty(&tokens)
            .map(|s| s + "\n")
            .map_err(|e| Failure::failed(e.to_string())),
        Response::Tokens { tokens } => Ok(render(&tokens)),
        other => Err(unexpected(&other)),
    }
}

pub fn revoke(socket: &Path, id: &str) -> Result<String> {
    let mut agent = Agent::connect_or_fail(socket)?;
    match agent.request(&Request::TokenRevoke { id: id.to_owned() })? {
        Response::Ok => Ok(format!("revoked token {id}: it is refused from now on\n")),
        other => Err(unexpected(&other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_table_without_secrets() {
        let out = render(&[TokenInfo {
            id: "0011223344556677".into(),
            kind: "exec".into(),
            role: Some("prod".into()),
            created: 1_795_912_526,
            last_used: None,
            holder: Some("pid 42 (/usr/bin/bash)".into()),
        }]);
        assert!(out.contains("0011223344556677  exec    prod"), "{out}");
        assert!(out.contains("2026-11-29 "), "{out}");
        assert!(out.contains("never"), "{out}");
        assert!(out.contains("pid 42 (/usr/bin/bash)"), "{out}");
        assert_eq!(render(&[]), "no live endpoint tokens\n");
    }
}

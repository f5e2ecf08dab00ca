//! `credctl status`: what the agent is doing.

use std::path::Path;

use credagent_proto::{Request, Response, StatusInfo};

use crate::agent::{unexpected, Agent};
use crate::error::{Failure, Result};
use crate::identity::Verified;
use crate::text::printable;

/// `credctl prompt`: one short line for a shell prompt. Never an error: a prompt must not
/// print one on every line, so no token, no agent or an unknown token print what they are in a
/// word, or nothing.
pub fn prompt(socket: &Path, json: bool) -> String {
    let token = std::env::var("AWS_CONTAINER_AUTHORIZATION_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
        .or_else(|| {
            std::env::var_os("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")
                .and_then(|p| std::fs::read_to_string(p).ok())
                .map(|t| t.trim().to_owned())
        });
    let Some(token) = token else {
        return String::new();
    };
    let Ok(mut agent) = Agent::connect(socket) else {
        return if json {
            "{\"agent\":false}\n".into()
        } else {
            "no agent\n".into()
        };
    };
    let Ok(Response::Prompt {
        role,
        remaining_secs,
        pending,
        known,
    }) = agent.request(&Request::Prompt {
        token: credagent_proto::Secret::new(token),
    })
    else {
        return String::new();
    };
    if json {
        return serde_json::json!({
            "agent": true, "known": known, "role": role,
            "remaining_secs": remaining_secs, "pending": pending,
        })
        .to_string()
            + "\n";
    }
    if !known {
        return "stale token\n".into();
    }
    let mut out = match (&role, remaining_secs) {
        (Some(r), Some(s)) => format!("{} {}", printable(r), crate::commands::roles::remaining(s)),
        (Some(r), None) => format!("{} closed", printable(r)),
        (None, _) => String::new(),
    };
    if pending > 0 {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&format!("!{pending}"));
    }
    if out.is_empty() {
        return out;
    }
    out + "\n"
}

fn human_duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// Renders a status report for people; `identity` is what credctl established about the process
/// behind the socket before it sent anything.
pub fn render(info: &StatusInfo, identity: &Verified) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "agent      running (pid {}), version {}\n",
        info.pid, info.agent_version
    ));
    out.push_str(&format!(
        "uptime     {}\n",
        human_duration(info.uptime_secs)
    ));
    out.push_str(&format!("socket     {}\n", info.socket));
    out.push_str(&format!("identity   {}\n", identity.describe()));
    out.push_str(&format!("endpoint   http://{}\n", info.http_addr));
    out.push_str(&format!(
        "config     {}{}\n",
        printable(info.config_path.as_deref().unwrap_or("(defaults)")),
        if info.config_changed {
            " (CHANGED since the agent read it: `credctl reload` applies it, with a touch that \
             shows what changed; sessions stay open and the port stays the same)"
        } else {
            ""
        }
    ));
    for line in &info.config_needs_restart {
        out.push_str(&format!(
            "restart    {}: applies when the agent starts again\n",
            printable(line)
        ));
    }
    out.push_str(&format!(
        "aws config {}\n",
        printable(info.aws_config.as_deref().unwrap_or("(none)"))
    ));
    for o in &info.overrides {
        out.push_str(&format!("override   {}\n", printable(o)));
    }
    if !info.settings.is_empty() {
        out.push_str(&format!("settings   {}\n", printable(&info.settings)));
    }
    if let Some(w) = crate::commands::roles::config_mismatch(info.aws_config.as_deref()) {
        eprintln!("credctl: {w}");
    }
    out.push_str(&format!(
        "keys       {} registered{}\n",
        info.keys,
        if info.keys == 0 {
            " (add one: `credctl key add`)"
        } else {
            ""
        }
    ));
    out.push_str(&format!(
        "sealing    {}\n",
        sealing_line(
            &info.sealing,
            info.vault.as_deref(),
            info.keys,
            &info.unsealed_keys
        ) + &user_verification_line(&info.user_verification, &info.touch_only_keys)
    ));
    if !info.lock_on.is_empty() {
        for (i, line) in lock_on_lines(&info.lock_on).iter().enumerate() {
            let head = if i == 0 { "lock on" } else { "" };
            out.push_str(&format!("{head:<10} {}\n", printable(line)));
        }
    }
    out.push_str(&format!(
        "imds       {}\n",
        info.imds_role.as_deref().unwrap_or("serves no role")
    ));
    if info.sessions.is_empty() {
        out.push_str("sessions   none\n");
    } else {
        // The count first: with hundreds open, the list is for scrolling, the line for reading.
        out.push_str(&format!("sessions   {} open\n", info.sessions.len()));
        for r in &info.sessions {
            if let Some(s) = &r.session {
                out.push_str(&format!(
                    "  {:<18} {} left, STS calls {}, refreshes {}, failures {}{}\n",
                    r.name,
                    crate::commands::roles::remaining(s.remaining_secs),
                    s.sts_calls,
                    s.refreshes,
                    s.failures,
                    s.last_error
                        .as_deref()
                        .map(|e| format!(" (last error: {e})"))
                        .unwrap_or_default()
                ));
                if let Some(m) = &s.last_error_message {
                    out.push_str(&format!("    └ {}\n", crate::text::printable(m)));
                }
                if let Some(approved) = &s.serves_approved {
                    out.push_str(&format!(
                        "    └ serves what its touch approved, {}; ~/.aws/config now says \
                         otherwise (`credctl lock` ends it)\n",
                        crate::text::printable(approved)
                    ));
                }
                if s.held {
                    out.push_str(
                        "    └ held for its running jobs only (the screen locked or it went \
                         idle while they ran): anyone else needs `credctl use` and a touch\n",
                    );
                }
                for job in &s.jobs {
                    out.push_str(&format!(
                        "    └ job: {} (`credctl exec`; the session stays open for it)\n",
                        crate::text::printable(job)
                    ));
                }
                if let Some(skew) = s.clock_skew_secs {
                    out.push_str(&format!(
                        "    └ this machine's clock is {} s {} STS's: check NTP\n",
                        skew.abs(),
                        if skew > 0 { "ahead of" } else { "behind" }
                    ));
                }
            }
        }
    }
    if !info.approvals.is_empty() {
        out.push_str("touching   (one touch at a time: every other approval waits for these)\n");
        for a in &info.approvals {
            out.push_str(&format!(
                "  {}, asked by {}, {} s ago\n",
                crate::text::printable(&a.what),
                crate::text::printable(&a.requester),
                now_secs().saturating_sub(a.started_at)
            ));
        }
    }
    if !info.pending.is_empty() {
        out.push_str("pending    (run `credctl watch`, or `credctl use ROLE`)\n");
        for p in &info.pending {
            if let (Some(exe), Some(pid)) = (&p.program, p.program_pid) {
                out.push_str(&format!(
                    "  {:<18} {} (pid {pid}: {}) is not allowed by its rules: `credctl allow {} \
                     --pid {pid}` (a touch)\n",
                    crate::text::printable(&p.role),
                    crate::text::printable(exe),
                    crate::text::printable(p.command_line.as_deref().unwrap_or("")),
                    crate::text::printable(&p.role)
                ));
                continue;
            }
            if let (Some(at), Some(what)) = (p.ends_at, &p.ending) {
                out.push_str(&format!(
                    "  {:<18} its {} ends in {} under a running job ({}): `credctl use --renew \
                     {}` extends it\n",
                    crate::text::printable(&p.role),
                    crate::text::printable(what),
                    crate::commands::roles::remaining(at.saturating_sub(now_secs())),
                    crate::text::printable(
                        p.peer_exe.as_deref().unwrap_or("a process that has exited")
                    ),
                    crate::text::printable(&p.role)
                ));
                continue;
            }
            out.push_str(&format!(
                "  {:<18} {} request(s) from {}\n",
                crate::text::printable(&p.role),
                p.requests,
                crate::text::printable(
                    p.peer_exe.as_deref().unwrap_or("a process that has exited")
                )
            ));
        }
    }
    out
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `credctl status [--json]`.
pub fn status(socket: &Path, json: bool) -> Result<String> {
    let mut agent = Agent::connect_or_fail(socket)?;
    let info = match agent.request(&Request::Status)? {
        Response::Status(info) => info,
        other => return Err(unexpected(&other)),
    };
    if json {
        let encode = |e: serde_json::Error| Failure::failed(format!("cannot encode status: {e}"));
        let mut value = serde_json::to_value(&info).map_err(encode)?;
        if let Some(fields) = value.as_object_mut() {
            fields.insert("agent_identity".into(), identity_json(&agent.identity));
        }
        let mut s = serde_json::to_string_pretty(&value).map_err(encode)?;
        s.push('\n');
        Ok(s)
    } else {
        Ok(render(&info, &agent.identity))
    }
}

/// What credctl checked of the agent process, and against which binary: `binary_from` says
/// whether `CREDAGENT_BIN` chose it.
pub fn identity_json(v: &Verified) -> serde_json::Value {
    serde_json::json!({
        "pid": v.pid,
        "check": v.assurance.key(),
        "binary": v.binary.path.display().to_string(),
        "binary_from": v.binary.origin.key(),
    })
}

/// The `sealing` line of `status`: the vault, and loudly any key or setup that is unsealed.
fn sealing_line(mode: &str, vault: Option<&str>, keys: usize, unsealed: &[String]) -> String {
    // Keys registered and no vault: vault.json is gone, no fresh start (no touch makes a vault
    // now; a new one would strand every sealed source).
    let missing = vault.is_none() && keys > 0 && mode == "required";
    let mut line = match vault {
        Some(fp) => format!("vault {fp}"),
        None if missing => "vault.json MISSING while keys are registered: restore it from a \
             backup and restart the agent (no touch makes a new vault)"
            .into(),
        None => "no vault yet (the first key you register makes it)".into(),
    };
    if !unsealed.is_empty() && !missing {
        line.push_str(&format!(
            "; UNSEALED keys (their touch opens no sealed source): {}",
            unsealed.join(", ")
        ));
    }
    if mode == "allow-unsealed" {
        line.push_str(
            "; UNSEALED setup allowed ([approval] sealing = \"allow-unsealed\"): sources \
             approved by keys without hmac-secret stay readable in the keyring",
        );
    }
    line
}

/// The lock signals, one line per outcome in a stable order: the signals that share an outcome
/// (the same D-Bus error, say) on one line, the error said once.
fn lock_on_lines(reports: &[String]) -> Vec<String> {
    let mut by_outcome: Vec<(String, Vec<String>)> = Vec::new();
    for report in reports {
        let (signal, outcome) = report
            .split_once(": ")
            .unwrap_or((report.as_str(), "unknown"));
        match by_outcome.iter_mut().find(|(o, _)| o == outcome) {
            Some((_, signals)) => signals.push(signal.to_owned()),
            None => by_outcome.push((outcome.to_owned(), vec![signal.to_owned()])),
        }
    }
    by_outcome.sort_by(|a, b| a.0.cmp(&b.0));
    by_outcome
        .into_iter()
        .map(|(outcome, mut signals)| {
            signals.sort();
            format!("{}: {outcome}", signals.join(", "))
        })
        .collect()
}

/// What the `sealing` line adds about user verification: nothing when every copy of the vault
/// needs the PIN, loudly when a touch alone opens it.
fn user_verification_line(mode: &str, touch_only: &[String]) -> String {
    let mut line = String::new();
    if mode == "discouraged" {
        line.push_str(
            "; TOUCH ONLY ([approval] user_verification = \"discouraged\"): a touch without \
             the key's PIN approves, and a program that reaches the key can take such a touch",
        );
    }
    if !touch_only.is_empty() {
        line.push_str(&format!(
            "; keys whose copy of the vault opens with a touch alone: {}{}",
            touch_only.join(", "),
            if mode == "required" {
                " (`credctl key pin` moves them to their PIN)"
            } else {
                ""
            }
        ));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_vault_is_called_missing_not_a_fresh_start() {
        let line = sealing_line("required", None, 1, &["mine".into()]);
        assert!(line.contains("vault.json MISSING"), "{line}");
        assert!(!line.contains("UNSEALED"), "{line}");
        let fresh = sealing_line("required", None, 0, &[]);
        assert!(fresh.contains("no vault yet"), "{fresh}");
        let loose = sealing_line("allow-unsealed", None, 1, &["old".into()]);
        assert!(
            loose.contains("UNSEALED keys") && !loose.contains("MISSING"),
            "{loose}"
        );
    }

    #[test]
    fn lock_signals_that_fail_alike_share_a_line() {
        let err = "not watched (no system bus: connection refused)";
        let reports = vec![
            format!("screen-lock (logind session Lock): {err}"),
            "screen-lock (org.gnome.ScreenSaver): watched".to_owned(),
            format!("suspend (logind PrepareForSleep): {err}"),
        ];
        let lines = lock_on_lines(&reports);
        assert_eq!(
            lines,
            vec![
                format!(
                    "screen-lock (logind session Lock), suspend (logind PrepareForSleep): {err}"
                ),
                "screen-lock (org.gnome.ScreenSaver): watched".to_owned(),
            ]
        );
        // The same reports in another order give the same lines.
        let mut shuffled = reports.clone();
        shuffled.reverse();
        assert_eq!(lock_on_lines(&shuffled), lines);
    }

    #[test]
    fn the_sealing_line_says_when_a_touch_alone_opens_the_vault() {
        assert_eq!(user_verification_line("required", &[]), "");
        let weak = user_verification_line("discouraged", &["yubi".into()]);
        assert!(weak.contains("TOUCH ONLY"), "{weak}");
        assert!(weak.contains("alone: yubi"), "{weak}");
        let moving = user_verification_line("required", &["old".into()]);
        assert!(moving.contains("credctl key pin"), "{moving}");
        assert!(!moving.contains("TOUCH ONLY"), "{moving}");
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(65), "1m 5s");
        assert_eq!(human_duration(3 * 3600 + 120), "3h 2m");
        assert_eq!(human_duration(2 * 86_400 + 3600), "2d 1h");
    }
}

//! `credctl doctor [--json]`: what stands between this shell and working credentials, each check
//! with a verdict and the command that fixes it. Exits 1 when any check fails.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use credagent_proto::{Request, Response, StatusInfo};
use serde::Serialize;

use crate::agent::{Agent, ConnectError};
use crate::identity::Verified;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Ok,
    Warn,
    Fail,
    /// Nothing to judge yet (e.g. the clock, before any role was opened).
    Unknown,
}

/// One check.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub verdict: Verdict,
    pub detail: String,
    /// The command that fixes it: pasted into a shell, it runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
    /// What to do, in words, where no command does it (or what the command leaves to you).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub how: Option<String>,
}

fn check(name: &'static str, verdict: Verdict, detail: impl Into<String>) -> Check {
    Check {
        name,
        verdict,
        detail: detail.into(),
        fix: None,
        how: None,
    }
}

impl Check {
    fn fix(mut self, fix: impl Into<String>) -> Check {
        self.fix = Some(fix.into());
        self
    }

    fn how(mut self, how: impl Into<String>) -> Check {
        self.how = Some(how.into());
        self
    }
}

/// `text` as one sh word: single-quoted unless it needs no quotes.
fn sh_quote(text: &str) -> String {
    if !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+:@%,".contains(&b))
    {
        return text.to_owned();
    }
    format!("'{}'", text.replace('\'', "'\\''"))
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Runs every check; returns the report and whether any failed.
pub fn doctor(socket: &Path, json: bool) -> (String, bool) {
    let mut checks = Vec::new();
    let agent = Agent::connect(socket);
    let status = match agent {
        Ok(mut agent) => {
            checks.push(version_check(&agent));
            checks.push(identity_check(&agent.identity));
            let status = match agent.request(&Request::Status) {
                Ok(Response::Status(s)) => Some(*s),
                _ => None,
            };
            checks.push(keyring_check(&mut agent));
            status
        }
        Err(ConnectError::NotRunning(_)) => {
            checks.push(
                check(
                    "agent",
                    Verdict::Fail,
                    format!("no agent answers at {}", socket.display()),
                )
                .fix("eval \"$(credctl start)\""),
            );
            None
        }
        Err(ConnectError::Other(f)) => {
            checks.push(check("agent", Verdict::Fail, f.message));
            None
        }
    };
    checks.extend(shell_checks(status.as_ref()));
    checks.push(authenticator_check());
    checks.push(ptrace_check(
        std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope")
            .ok()
            .as_deref(),
    ));
    checks.extend(file_checks(status.as_ref()));
    if let Some(s) = &status {
        if s.config_changed {
            checks.push(
                check(
                    "config",
                    Verdict::Warn,
                    format!(
                        "{} changed since the agent read it: the agent still runs with what it \
                         read before",
                        s.config_path.as_deref().unwrap_or("config.toml")
                    ),
                )
                .fix("credctl reload")
                .how("a touch that shows what changed applies it; sessions stay open and the port stays the same"),
            );
        }
        for line in &s.config_needs_restart {
            checks.push(
                check(
                    "config",
                    Verdict::Warn,
                    format!("{line}: applies only when the agent starts again"),
                )
                .fix("credctl stop")
                .how("the next credctl command starts the agent with the new file; open sessions end and shells need `eval \"$(credctl start)\"` again"),
            );
        }
        checks.push(sealing_check(s));
        if s.vault.is_some() {
            checks.push(user_verification_check(s));
        }
        checks.push(clock_check(s));
    }
    let failed = checks.iter().any(|c| c.verdict == Verdict::Fail);
    let out = if json {
        serde_json::to_string_pretty(&checks).unwrap_or_default() + "\n"
    } else {
        render(&checks)
    };
    (out, failed)
}

fn render(checks: &[Check]) -> String {
    let mut out = String::new();
    for c in checks {
        let mark = match c.verdict {
            Verdict::Ok => "ok  ",
            Verdict::Warn => "WARN",
            Verdict::Fail => "FAIL",
            Verdict::Unknown => "?   ",
        };
        out.push_str(&format!("{mark} {:<14} {}\n", c.name, c.detail));
        if let Some(fix) = &c.fix {
            out.push_str(&format!("     {:<14} fix: {fix}\n", ""));
        }
        if let Some(how) = &c.how {
            out.push_str(&format!("     {:<14} how: {how}\n", ""));
        }
    }
    out
}

fn version_check(agent: &Agent) -> Check {
    let mine = env!("CARGO_PKG_VERSION");
    let theirs = agent.agent_version();
    if theirs == mine {
        check(
            "agent",
            Verdict::Ok,
            format!("running (pid {}, version {theirs})", agent.pid()),
        )
    } else {
        check(
            "agent",
            Verdict::Warn,
            format!("the agent is version {theirs}, this credctl {mine}"),
        )
        .fix("credctl stop && eval \"$(credctl start)\"")
    }
}

/// Which process credctl found behind the socket, and which binary it trusts as the agent (the
/// detail names `CREDAGENT_BIN` when that variable chose it).
fn identity_check(v: &Verified) -> Check {
    match v.assurance {
        crate::identity::Assurance::SetgidGroup => check("agent binary", Verdict::Ok, v.describe()),
        _ => check("agent binary", Verdict::Warn, v.describe()).how(
            "install the credagent package (it installs credagent set-group-id), or accept that \
             a program of yours could start the agent with code of its own",
        ),
    }
}

fn keyring_check(agent: &mut Agent) -> Check {
    match agent.raw(&Request::SourceList) {
        Ok(Response::Sources { sources }) => check(
            "keyring",
            Verdict::Ok,
            format!("reachable ({} source(s))", sources.len()),
        ),
        Ok(Response::Error { message, .. }) => check("keyring", Verdict::Fail, message)
            .how("unlock the keyring (log in to the desktop session), or set keyring = \"file\" in config.toml and credctl stop"),
        Ok(_) | Err(_) => check("keyring", Verdict::Unknown, "the agent did not say"),
    }
}

/// The variables that make SDKs in this shell use something else than the agent, the agent's
/// endpoint, and the region.
fn shell_checks(status: Option<&StatusInfo>) -> Vec<Check> {
    let mut out = Vec::new();
    if env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI").is_some() {
        out.push(
            check(
                "relative-uri",
                Verdict::Fail,
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI is set: SDKs use it instead of the \
                 agent's FULL_URI",
            )
            .fix("unset AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"),
        );
    }
    let shadowing: Vec<&str> = crate::bypass::SHADOWING
        .iter()
        .copied()
        .filter(|v| *v != "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI" && env(v).is_some())
        .collect();
    if shadowing.is_empty() {
        out.push(check(
            "shadowing",
            Verdict::Ok,
            "no AWS_ACCESS_KEY_ID, AWS_PROFILE or similar in this shell",
        ));
    } else {
        out.push(
            check(
                "shadowing",
                Verdict::Fail,
                format!("{} set: SDKs use it before the agent", shadowing.join(", ")),
            )
            .fix(format!("unset {}", shadowing.join(" "))),
        );
    }
    if let Some(w) = crate::bypass::warning() {
        out.push(
            check(
                "credentials",
                Verdict::Fail,
                w.trim_start_matches("warning: ").to_owned(),
            )
            .fix("credctl source add default --import-profile default --remove-from-file"),
        );
    }
    if let Some(w) = crate::bypass::config_warning() {
        out.push(
            check(
                "config-default",
                Verdict::Fail,
                w.trim_start_matches("warning: ").to_owned(),
            )
            .fix(crate::bypass::rename_default_command(
                &crate::bypass::config_file(),
            )),
        );
    }
    let uri = env("AWS_CONTAINER_CREDENTIALS_FULL_URI");
    let token = env("AWS_CONTAINER_AUTHORIZATION_TOKEN")
        .or_else(|| env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"));
    let here = status.map(|s| s.http_addr.clone());
    out.push(match (uri, token, here) {
        (Some(u), Some(_), Some(addr)) if uri_host(&u) == Some(addr.as_str()) => {
            match probe_token(&u) {
                Ok(()) => check(
                    "endpoint",
                    Verdict::Ok,
                    format!("this shell points SDKs at {u}, and the agent takes its token"),
                ),
                Err(why) => check(
                    "endpoint",
                    Verdict::Fail,
                    format!(
                        "this shell points SDKs at {u}, but the agent refuses its token: {why}"
                    ),
                )
                .fix("eval \"$(credctl start)\""),
            }
        }
        (Some(u), Some(_), Some(addr)) => check(
            "endpoint",
            Verdict::Fail,
            format!("this shell points SDKs at {u}, but the agent listens on {addr}"),
        )
        .fix("eval \"$(credctl start)\""),
        (Some(_), Some(_), None) => check(
            "endpoint",
            Verdict::Unknown,
            "set, but no agent to compare with",
        ),
        _ => check(
            "endpoint",
            Verdict::Warn,
            "this shell does not point SDKs at the agent (no FULL_URI and token)",
        )
        .fix("eval \"$(credctl start)\"")
        .how("or run commands with credctl exec ROLE -- CMD"),
    });
    let bad_region: Vec<String> = ["AWS_REGION", "AWS_DEFAULT_REGION"]
        .iter()
        .filter_map(|v| env(v).map(|r| (v, r)))
        .filter(|(_, r)| !crate::region::valid(r))
        .map(|(v, r)| format!("{v}={}", crate::text::printable(&r)))
        .collect();
    out.push(if !bad_region.is_empty() {
        check(
            "region",
            Verdict::Fail,
            format!(
                "{} is not a region name: SDKs refuse it",
                bad_region.join(", ")
            ),
        )
        .fix("unset AWS_REGION AWS_DEFAULT_REGION")
        .how("then export AWS_REGION=YOUR-REGION, or let credctl exec / env set the role's")
    } else if env("AWS_REGION").is_some() || env("AWS_DEFAULT_REGION").is_some() {
        check("region", Verdict::Ok, "this shell sets a region")
    } else {
        check(
            "region",
            Verdict::Warn,
            "this shell sets no region: SDKs without a profile region fail",
        )
        .fix("export AWS_REGION=us-east-1")
        .how("use your region; credctl exec / env set the role's")
    });
    out
}

/// Whether a HID device's report descriptor declares the FIDO usage page (0xF1D0).
/// The `host:port` of an `http://` URI.
fn uri_host(uri: &str) -> Option<&str> {
    uri.strip_prefix("http://")?.split(['/', '?', '#']).next()
}

/// Asks the endpoint at `uri` with this shell's token (from `AWS_CONTAINER_AUTHORIZATION_TOKEN`
/// or its `_FILE`), as an SDK would; `Err` names why the agent refused it (a revoked, unknown or
/// malformed token). A refusal for another reason (no role chosen yet) still means the token is
/// taken. The answer's body, credentials included, is dropped unread.
fn probe_token(uri: &str) -> Result<(), String> {
    use std::io::{Read, Write};
    let token = match env("AWS_CONTAINER_AUTHORIZATION_TOKEN") {
        Some(t) => zeroize::Zeroizing::new(t),
        None => {
            let file = env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE").unwrap_or_default();
            zeroize::Zeroizing::new(
                std::fs::read_to_string(&file)
                    .map_err(|e| {
                        format!("cannot read AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE {file}: {e}")
                    })?
                    .trim()
                    .to_owned(),
            )
        }
    };
    let rest = uri
        .strip_prefix("http://")
        .ok_or("the FULL_URI is not http://")?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    if token.contains(['\r', '\n']) {
        return Err("the token holds a line break".into());
    }
    let mut stream =
        std::net::TcpStream::connect(host).map_err(|e| format!("cannot connect: {e}"))?;
    let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(5)));
    let request = zeroize::Zeroizing::new(format!(
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: {}\r\nConnection: close\r\n\r\n",
        token.as_str()
    ));
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("cannot send: {e}"))?;
    let mut answer = zeroize::Zeroizing::new(Vec::new());
    let _ = stream.take(64 * 1024).read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    let status = text.split(' ').nth(1).unwrap_or("");
    if status != "401" && status != "403" {
        return Ok(());
    }
    let code = text
        .split_once("\r\n\r\n")
        .and_then(|(_, body)| serde_json::from_str::<serde_json::Value>(body).ok())
        .and_then(|v| {
            v.get("code")
                .or_else(|| v.get("Code"))
                .and_then(|c| c.as_str())
                .map(str::to_owned)
        });
    match code.as_deref() {
        Some("bad_token") | Some("malformed_token") | None => Err(format!(
            "HTTP {status} {}",
            code.unwrap_or_else(|| "refused".into())
        )),
        // Taken, but refused for something else (no role chosen, a locked agent): other checks
        // and `credctl status` say why.
        Some(_) => Ok(()),
    }
}

fn is_fido(descriptor: &[u8]) -> bool {
    descriptor.windows(3).any(|w| w == [0x06, 0xD0, 0xF1])
}

fn authenticator_check() -> Check {
    let mut fido = Vec::new();
    let mut unusable = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/sys/class/hidraw") {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let desc = std::fs::read(e.path().join("device/report_descriptor")).unwrap_or_default();
            if !is_fido(&desc) {
                continue;
            }
            let dev = PathBuf::from("/dev").join(&name);
            let usable = nix::unistd::access(
                &dev,
                nix::unistd::AccessFlags::R_OK | nix::unistd::AccessFlags::W_OK,
            )
            .is_ok();
            if usable {
                fido.push(name);
            } else {
                unusable.push(name);
            }
        }
    }
    // A browser needs a display here (or $BROWSER set to one that does not).
    let display = env("DISPLAY").is_some() || env("WAYLAND_DISPLAY").is_some();
    let browser = env("BROWSER").is_some() || (display && which("xdg-open"));
    if !fido.is_empty() {
        return check(
            "authenticator",
            Verdict::Ok,
            format!("security key(s) on {}", fido.join(", ")),
        );
    }
    if !unusable.is_empty() {
        return check(
            "authenticator",
            Verdict::Warn,
            format!(
                "security key(s) on {} that you may not open",
                unusable.join(", ")
            ),
        )
        .how("install your distribution's udev rules for FIDO keys (e.g. the libfido2 package), then replug the key");
    }
    if browser {
        check(
            "authenticator",
            Verdict::Ok,
            "no USB security key, but a browser for --browser approvals",
        )
    } else {
        check(
            "authenticator",
            Verdict::Warn,
            if display {
                "no USB security key and no browser (xdg-open or $BROWSER)"
            } else {
                "no USB security key, and no display for a browser here (DISPLAY and \
                 WAYLAND_DISPLAY unset): --browser prints an address only a browser on this \
                 machine can use"
            },
        )
        .how("plug in your key, or approve from a browser on this machine (credctl use ROLE --browser)")
    }
}

fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
}

/// The state directory `credctl` expects the agent to use.
fn state_dir() -> PathBuf {
    let base = env("XDG_STATE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env("HOME").unwrap_or_default()).join(".local/state"));
    base.join("credagent")
}

fn file_checks(status: Option<&StatusInfo>) -> Vec<Check> {
    let me = nix::unistd::getuid().as_raw();
    let mut problems = Vec::new();
    let dir = state_dir();
    let mut want = vec![(dir.clone(), 0o700, true)];
    for f in ["keys.json", "vault.json"] {
        want.push((dir.join(f), 0o600, false));
    }
    if let Some(config) = status.and_then(|s| s.config_path.clone()) {
        want.push((PathBuf::from(config), 0o644, false));
    }
    for (path, max, is_dir) in want {
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let mode = meta.permissions().mode() & 0o777;
        if meta.uid() != me {
            problems.push(format!("{} belongs to uid {}", path.display(), meta.uid()));
        } else if mode & !max != 0 || (is_dir && !meta.is_dir()) {
            problems.push(format!("{} has mode {mode:o}", path.display()));
        }
    }
    let config = status.and_then(|s| s.config_path.clone());
    let verdict = if !problems.is_empty() {
        let d = sh_quote(&dir.display().to_string());
        let mut fix = format!("chown -R \"$(id -u)\" {d} && chmod 700 {d} && chmod 600 {d}/*.json");
        if let Some(c) = &config {
            fix.push_str(&format!(" && chmod go-w {}", sh_quote(c)));
        }
        check("files", Verdict::Fail, problems.join("; ")).fix(fix)
    } else if !dir.exists() {
        check(
            "files",
            Verdict::Ok,
            format!(
                "{} does not exist yet: the agent makes it, private, when it first starts",
                dir.display()
            ),
        )
    } else {
        check(
            "files",
            Verdict::Ok,
            format!("{} and its files are yours and private", dir.display()),
        )
    };
    vec![verdict]
}

fn sealing_check(s: &StatusInfo) -> Check {
    match (&s.vault, s.unsealed_keys.is_empty(), s.sealing.as_str()) {
        (None, _, _) if s.keys == 0 => check("sealing", Verdict::Warn, "no security key yet")
            .fix("credctl key add"),
        (None, _, "required") => check(
            "sealing",
            Verdict::Fail,
            "vault.json is MISSING while keys are registered: no touch opens a sealed source, \
             and none makes a new vault",
        )
        .how("restore vault.json from a backup into the state directory, then credctl stop"),
        (None, _, _) => check(
            "sealing",
            Verdict::Warn,
            "UNSEALED: no key has sealed the vault yet (keys without hmac-secret, or no touch since)",
        )
        .how("register a FIDO2 key (one with hmac-secret, nearly every key since 2019): credctl key add"),
        (Some(fp), true, "required") => check(
            "sealing",
            Verdict::Ok,
            format!("sources sealed to vault {fp}; every key holds a copy"),
        ),
        (Some(fp), _, mode) => check(
            "sealing",
            Verdict::Warn,
            format!(
                "vault {fp}, but UNSEALED keys: {} (sealing = {mode})",
                if s.unsealed_keys.is_empty() {
                    "none".to_owned()
                } else {
                    s.unsealed_keys.join(", ")
                }
            ),
        )
        .how("remove unsealed keys (credctl key remove NAME), set sealing = \"required\" in config.toml, then credctl stop"),
    }
}

fn user_verification_check(s: &StatusInfo) -> Check {
    match (s.user_verification.as_str(), s.touch_only_keys.is_empty()) {
        ("discouraged", _) => check(
            "user verification",
            Verdict::Warn,
            "TOUCH ONLY: a touch without the key's PIN opens the vault ([approval] \
             user_verification = \"discouraged\"), so a program that reaches the key can take one",
        )
        .how(
            "remove user_verification = \"discouraged\" from config.toml, then credctl stop, \
             then credctl key pin --accept-change",
        ),
        (_, false) => check(
            "user verification",
            Verdict::Warn,
            format!(
                "keys whose copy of the vault still opens with a touch alone: {}",
                s.touch_only_keys.join(", ")
            ),
        )
        .fix("credctl key pin")
        .how("only if you used touch-only approvals before; if you never did, vault.json was replaced: restore it instead"),
        _ => check(
            "user verification",
            Verdict::Ok,
            "every key's copy of the vault opens only with its PIN or biometric",
        ),
    }
}

/// Whether your other processes may attach a debugger to any of yours (Yama's `ptrace_scope`,
/// the file's content; `None`: no Yama). Tokens bound to a process tree and per-role program
/// rules assume they may not: an attached process runs code inside the tree, or inside a
/// listed program.
fn ptrace_check(scope: Option<&str>) -> Check {
    let weak = |detail: &str| {
        check("ptrace", Verdict::Warn, detail.to_owned())
            .fix("echo 'kernel.yama.ptrace_scope = 1' | sudo tee /etc/sysctl.d/10-ptrace.conf && sudo sysctl --system")
            .how("with scope 1 a process may debug only its own descendants, so one of yours cannot run code inside another's tree (a token's holder, a program a role allows)")
    };
    match scope.map(str::trim) {
        None => weak(
            "no Yama: any of your processes may attach to any other and run code inside it, so              a token bound to a process tree, or a role's program list, stops only programs that              do not try that",
        ),
        Some("0") => weak(
            "kernel.yama.ptrace_scope = 0: any of your processes may attach to any other and              run code inside it, so a token bound to a process tree, or a role's program list,              stops only programs that do not try that",
        ),
        Some(s) => check(
            "ptrace",
            Verdict::Ok,
            format!("kernel.yama.ptrace_scope = {s}: your processes cannot attach to each other's"),
        ),
    }
}

fn clock_check(s: &StatusInfo) -> Check {
    let skews: Vec<i64> = s
        .sessions
        .iter()
        .filter_map(|r| r.session.as_ref()?.clock_skew_secs)
        .collect();
    let opened = s.sessions.iter().any(|r| r.session.is_some());
    match skews.iter().max_by_key(|v| v.abs()) {
        Some(worst) => check(
            "clock",
            Verdict::Fail,
            format!("this machine's clock is {worst} s off STS's"),
        )
        .fix("sudo timedatectl set-ntp true"),
        None if opened => check("clock", Verdict::Ok, "within a minute of STS's"),
        None => check(
            "clock",
            Verdict::Unknown,
            "measured against STS once a role is open",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fido_devices_are_told_by_their_usage_page() {
        // A FIDO U2F/CTAPHID report descriptor starts with Usage Page (0xF1D0).
        assert!(is_fido(&[0x06, 0xD0, 0xF1, 0x09, 0x01, 0xA1, 0x01]));
        // A keyboard: Usage Page (Generic Desktop), Usage (Keyboard).
        assert!(!is_fido(&[0x05, 0x01, 0x09, 0x06, 0xA1, 0x01]));
    }

    #[test]
    fn only_the_agents_own_address_is_probed_with_the_token() {
        assert_eq!(
            uri_host("http://127.0.0.1:9/v1/credentials"),
            Some("127.0.0.1:9")
        );
        // An address that only mentions the agent's is another host: no token goes there.
        assert_eq!(
            uri_host("http://evil.example/?127.0.0.1:9"),
            Some("evil.example")
        );
        assert_eq!(uri_host("https://127.0.0.1:9/"), None);
    }

    #[test]
    fn paths_are_quoted_for_sh() {
        assert_eq!(sh_quote("/home/a/.local/state"), "/home/a/.local/state");
        assert_eq!(sh_quote("/home/a b/it's"), "'/home/a b/it'\\''s'");
    }

    #[test]
    fn the_report_marks_every_verdict_and_fix() {
        let text = render(&[
            check("a", Verdict::Ok, "fine"),
            check("b", Verdict::Fail, "broken").fix("do this"),
        ]);
        assert!(text.contains("ok   a"));
        assert!(text.contains("FAIL b"));
        assert!(text.contains("fix: do this"));
    }

    #[test]
    fn ptrace_without_yama_or_at_scope_zero_is_weaker() {
        assert_eq!(ptrace_check(None).verdict, Verdict::Warn);
        assert_eq!(ptrace_check(Some("0\n")).verdict, Verdict::Warn);
        assert!(ptrace_check(Some("0"))
            .fix
            .unwrap()
            .contains("ptrace_scope = 1"));
        assert_eq!(ptrace_check(Some("1\n")).verdict, Verdict::Ok);
        assert_eq!(ptrace_check(Some("3")).verdict, Verdict::Ok);
    }
}

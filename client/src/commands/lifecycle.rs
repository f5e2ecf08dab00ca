//! `credctl start` and `credctl stop`: the agent's life cycle.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use credagent_proto::{Request, Response};

use crate::agent::{unexpected, Agent, ConnectError};
use crate::cli::ShellKind;
use crate::error::{Exit, Failure, Result};
use crate::shell::{path_value, render, EnvLine};

/// Starts the agent (detached) and waits until it answers.
/// What the agent keeps of the starting shell's environment: where the user's files and
/// session services are, and nothing that could send it elsewhere. A shell that direnv pointed
/// at a local emulator (`AWS_ENDPOINT_URL`, `AWS_REGION`, …) must not decide, for the rest of
/// the login session, where the agent sends the user's source keys and MFA codes; endpoint
/// overrides belong in config.toml.
const AGENT_ENV: &[&str] = &[
    "HOME",
    "USER",
    "LOGNAME",
    "PATH",
    "LANG",
    "LC_ALL",
    "TZ",
    "XDG_RUNTIME_DIR",
    "XDG_CONFIG_HOME",
    "XDG_STATE_HOME",
    "XDG_DATA_HOME",
    "DBUS_SESSION_BUS_ADDRESS",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
];

/// Whether the agent inherits variable `name` from `credctl start`.
pub fn agent_inherits(name: &str) -> bool {
    AGENT_ENV.contains(&name) || name.starts_with("CREDAGENT_")
}

fn spawn_agent(socket: &Path, config: Option<&Path>) -> Result<Agent> {
    // The one binary every command then accepts as the agent (`identity`).
    let bin = crate::identity::agent_binary().path;
    let mut cmd = Command::new(&bin);
    cmd.env_clear()
        .envs(std::env::vars_os().filter(|(k, _)| agent_inherits(&k.to_string_lossy())));
    cmd.arg("--socket").arg(socket);
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| {
            Failure::failed(format!(
                "cannot run {}: {e}; install credagent next to credctl or set CREDAGENT_BIN",
                bin.display()
            ))
        })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(Failure::failed(format!(
            "the agent did not start: {}",
            stderr.trim().trim_start_matches("credagent: ")
        )));
    }
    // The listeners are bound before the agent detaches, so it should answer at once; allow for
    // a slow machine.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match Agent::connect(socket) {
            Ok(a) => return Ok(a),
            Err(ConnectError::NotRunning(e)) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e.into_failure(socket)),
        }
    }
}

/// `credctl start`.
pub fn start(socket: &Path, shell: ShellKind, config: Option<&Path>) -> Result<String> {
    // Refuse a socket path this shell cannot carry before an agent is started on it.
    let sock = path_value(shell, "CREDAGENT_SOCK", socket)?;
    let mut agent = match Agent::connect(socket) {
        Ok(mut a) => {
            if let Some(c) = config {
                // An option that cannot apply is refused, not ignored.
                let running = match a.request(&Request::Status)? {
                    Response::Status(info) => info.config_path,
                    other => return Err(unexpected(&other)),
                };
                return Err(Failure::usage(format!(
                    "an agent is running already (with {}), so --config {} cannot apply: stop it \
                     first (`credctl stop`), then start again with --config",
                    running.as_deref().unwrap_or("the default config"),
                    c.display()
                )));
            }
            a
        }
        Err(ConnectError::NotRunning(_)) => spawn_agent(socket, config)?,
        Err(ConnectError::Other(f)) => return Err(f),
    };
    // A token of its own for the shell that evaluates this output: `credctl use` makes a role
    // current for it.
    let holder = crate::holder::shell().map_err(Failure::usage)?;
    let (token, uri) = match agent.request(&Request::TokenShell { holder })? {
        Response::Token { token, uri, .. } => (token, uri),
        other => return Err(unexpected(&other)),
    };
    let mut lines = vec![
        EnvLine::Set("CREDAGENT_SOCK", sock),
        EnvLine::Set("AWS_CONTAINER_CREDENTIALS_FULL_URI", &uri),
        EnvLine::Set("AWS_CONTAINER_AUTHORIZATION_TOKEN", token.expose()),
        EnvLine::Unset("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"),
    ];
    lines.extend(
        crate::commands::session::SHADOWING
            .iter()
            .map(|v| EnvLine::Unset(v)),
    );
    let mut out = render(shell, &lines)?;
    // Named only when this shell has them: a line about nothing is noise.
    let set: Vec<&str> = crate::commands::session::SHADOWING
        .iter()
        .copied()
        .filter(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty()))
        .collect();
    if !set.is_empty() {
        // On stderr: a comment in what `eval` runs is never seen.
        eprintln!(
            "credctl: unsetting this shell's {}: SDKs would use them before the agent",
            set.join(", ")
        );
    }
    out.push_str(&format!("echo Agent pid {};\n", agent.pid));
    for w in crate::bypass::file_warnings() {
        eprintln!("credctl: {w}");
    }
    Ok(out)
}

/// Whether process `pid` still runs (a zombie waiting for its parent does not).
fn running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// The state directory's lock file: `$XDG_STATE_HOME/credagent/agent.lock`.
fn state_lock_file() -> Option<std::path::PathBuf> {
    let base = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".local/state"))
        })?;
    Some(base.join("credagent/agent.lock"))
}

/// An agent of ours that still holds this state directory although its socket is gone (after
/// logout removed `$XDG_RUNTIME_DIR`, say): its pid and the socket it listened on.
fn orphaned_agent() -> Option<(i32, String)> {
    use std::os::unix::fs::MetadataExt;
    let text = std::fs::read_to_string(state_lock_file()?).ok()?;
    let mut lines = text.lines();
    let pid: i32 = lines.next()?.trim().parse().ok()?;
    let sock = lines.next().unwrap_or("").to_owned();
    let proc_dir = std::path::PathBuf::from(format!("/proc/{pid}"));
    let mine = std::fs::metadata(&proc_dir).ok()?.uid() == nix::unistd::getuid().as_raw();
    let exe = std::fs::read_link(proc_dir.join("exe")).ok()?;
    let is_agent = exe
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("credagent"));
    (mine && is_agent).then_some((pid, sock))
}

/// `credctl stop`: asks the agent to stop and waits until its socket is gone. With no agent on
/// the socket, stops an orphaned agent that still holds the state directory.
pub fn stop(socket: &Path) -> Result<String> {
    let mut agent = match Agent::connect(socket) {
        Ok(a) => a,
        Err(ConnectError::NotRunning(e)) => {
            let Some((pid, sock)) = orphaned_agent() else {
                return Err(crate::agent::not_running(socket, &e));
            };
            // An agent whose socket is still there is not orphaned: this was the wrong socket
            // (a stale CREDAGENT_SOCK, a --socket typo, another XDG_RUNTIME_DIR). Stopping it
            // would end every shell's sessions; say where it is instead.
            let live = std::fs::symlink_metadata(&sock).is_ok_and(|m| {
                use std::os::unix::fs::FileTypeExt;
                m.file_type().is_socket()
            });
            if live {
                return Err(Failure::new(
                    Exit::NoAgent,
                    format!(
                        "no agent at {}; the agent of this state directory (pid {pid}) listens on {sock} and was left running: to stop it, run `credctl --socket {sock} stop`{}",
                        socket.display(),
                        if std::env::var_os("CREDAGENT_SOCK").is_some() {
                            " (CREDAGENT_SOCK names another socket: unset it or fix it)"
                        } else {
                            ""
                        }
                    ),
                ));
            }
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            )
            .map_err(|e| Failure::failed(format!("cannot stop the agent (pid {pid}): {e}")))?;
            return Ok(format!(
                "no agent at {}, but an orphaned agent (pid {pid}, listening on {sock}, whose \
                 socket is gone) held this state directory: it was told to stop\n",
                socket.display()
            ));
        }
        Err(ConnectError::Other(f)) => return Err(f),
    };
    let pid = agent.pid;
    match agent.request(&Request::Stop)? {
        Response::Stopping => {}
        other => return Err(unexpected(&other)),
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        // The agent removes its socket last, after draining its audit.
        let alive = running(pid);
        if !socket.exists() || !alive {
            return Ok(format!("agent (pid {pid}) stopped\n"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(Failure::new(
        Exit::Failed,
        format!("agent (pid {pid}) did not stop within 10 s; end it with `kill {pid}`"),
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_agent_keeps_no_endpoint_or_credential_variables() {
        for kept in [
            "HOME",
            "XDG_RUNTIME_DIR",
            "DBUS_SESSION_BUS_ADDRESS",
            "CREDAGENT_LOG",
        ] {
            assert!(super::agent_inherits(kept), "{kept}");
        }
        for dropped in [
            "AWS_ENDPOINT_URL",
            "AWS_ENDPOINT_URL_STS",
            "AWS_REGION",
            "AWS_ACCESS_KEY_ID",
            "AWS_PROFILE",
            "HTTPS_PROXY",
            "LD_PRELOAD",
        ] {
            assert!(!super::agent_inherits(dropped), "{dropped}");
        }
    }
}

//! Commands that use role sessions: `use`, `exec`, `env`, `credential-process`, `imds`, `lock`,
//! `watch`.

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use credagent_proto::{Request, Response, Secret};

use crate::agent::{unexpected, Agent};
use crate::cli::{ShellKind, TouchArgs};
use crate::commands::open::{open_role, OpenedRole};
use crate::error::{Exit, Failure, Result};
use crate::region::{plan, use_hint, Plan};
use crate::shell::{check, path_value, render, EnvLine};

pub use crate::bypass::SHADOWING;

/// Time left until `expires_at` (Unix seconds), as `1h05m left`.
fn until(expires_at: u64) -> String {
    format!("{} left", crate::text::time_left(expires_at))
}

fn token_of(resp: Response) -> Result<(Secret, String, String)> {
    match resp {
        Response::Token {
            token,
            token_id,
            uri,
        } => Ok((token, token_id, uri)),
        other => Err(unexpected(&other)),
    }
}

/// `credctl use ROLE`.
pub fn use_role(socket: &Path, role: &str, touch: &TouchArgs) -> Result<String> {
    let mut agent = Agent::connect_or_fail(socket)?;
    let opened = open_role(&mut agent, role, touch)?;
    let expires = opened.expires_at;
    let Some(token) = std::env::var("AWS_CONTAINER_AUTHORIZATION_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
    else {
        return Err(Failure::failed(format!(
            "role {role} is open ({}), but this shell has no agent token: run `eval \"$(credctl start)\"` first, or use `credctl exec {role} -- CMD`",
            until(expires)
        )));
    };
    agent.request(&Request::Use {
        token: Secret::new(token),
        role: role.to_owned(),
    })?;
    // Say so when an SDK started here would not ask the agent at all.
    for w in crate::bypass::shell_warnings() {
        eprintln!("credctl: {w}");
    }
    // The endpoint serves credentials, not a region: say how to give this shell the role's.
    if let Some(hint) = use_hint(role, opened.region.as_deref(), &caller_env) {
        eprintln!("credctl: {hint}");
    }
    Ok(format!(
        "role {role} is current for this shell ({})\n",
        until(expires)
    ))
}

/// credctl's own environment: the caller's, for the region rules (crate::region).
pub fn caller_env(var: &str) -> Option<String> {
    std::env::var(var).ok()
}

/// The region variables for `role` (see crate::region), with any warning printed.
pub fn region_plan(flag: Option<&str>, role: &str, opened: &OpenedRole) -> Plan {
    let p = plan(flag, role, opened.region.as_deref(), &caller_env);
    if let Some(w) = &p.warning {
        eprintln!("credctl: {w}");
    }
    p
}

/// The role's account for scripts (and the SDKs' account-based endpoints), set by `env` and
/// `exec`, whose role is fixed; not by `start`, whose shell switches roles.
const ACCOUNT_VAR: &str = "AWS_ACCOUNT_ID";

/// An AWS account id: twelve digits.
fn plain_account(a: &str) -> bool {
    a.len() == 12 && a.bytes().all(|b| b.is_ascii_digit())
}

/// `credctl env ROLE`.
pub fn env(
    socket: &Path,
    role: &str,
    shell: ShellKind,
    touch: &TouchArgs,
    token_file: Option<(&Path, bool)>,
    region: Option<&str>,
) -> Result<String> {
    // What is at the path is checked before anything is asked of the agent: a file that is not
    // an earlier token file is never replaced without --force, and no token is made for a
    // file that cannot be written.
    if let Some((path, force)) = token_file {
        check_token_file_target(path, force)?;
    }
    let token_file = token_file.map(|(p, _)| p);
    // An SDK started from another directory must find the file: the export names it by its
    // absolute path.
    let absolute = token_file
        .map(std::path::absolute)
        .transpose()
        .map_err(|e| Failure::usage(format!("cannot make the token file path absolute: {e}")))?;
    let token_file = absolute.as_deref();
    // Refuse a token file path this shell cannot carry before asking for a touch.
    let file_str = token_file
        .map(|p| path_value(shell, "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", p))
        .transpose()?;
    let mut agent = Agent::connect_or_fail(socket)?;
    let opened = open_role(&mut agent, role, touch)?;
    let regions = region_plan(region, role, &opened);
    // A token file is for programs started elsewhere (an IDE, a unit): unbound, and `token
    // list` says so; printed exports are for the shell that evaluates them.
    let holder = match token_file {
        Some(_) => None,
        None => crate::holder::shell().map_err(Failure::usage)?,
    };
    let (token, token_id, uri) = token_of(agent.request(&Request::TokenForRole {
        role: role.to_owned(),
        scoped: false,
        purpose: "env".into(),
        holder,
    })?)?;
    // Check every value before the token file is written, so a refusal leaves nothing behind.
    check(shell, "AWS_CONTAINER_CREDENTIALS_FULL_URI", &uri)?;
    if token_file.is_none() {
        check(shell, "AWS_CONTAINER_AUTHORIZATION_TOKEN", token.expose())?;
    }
    let mut lines = vec![EnvLine::Set("AWS_CONTAINER_CREDENTIALS_FULL_URI", &uri)];
    match token_file.zip(file_str) {
        Some((path, file_str)) => {
            if let Err(mut e) = write_token_file(path, token.expose()) {
                // A token nobody holds must not stay live.
                let _ = agent.request(&Request::TokenRevoke { id: token_id });
                e.message
                    .push_str("; the token made for it was revoked, and nothing was exported");
                return Err(e);
            }
            lines.push(EnvLine::Set(
                "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                file_str,
            ));
            lines.push(EnvLine::Unset("AWS_CONTAINER_AUTHORIZATION_TOKEN"));
        }
        None => {
            lines.push(EnvLine::Set(
                "AWS_CONTAINER_AUTHORIZATION_TOKEN",
                token.expose(),
            ));
            lines.push(EnvLine::Unset("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"));
        }
    }
    lines.extend(SHADOWING.iter().map(|v| EnvLine::Unset(v)));
    // Region names are plain (crate::region::valid): every shell carries them.
    lines.extend(regions.set.iter().map(|(k, v)| EnvLine::Set(k, v)));
    // Digits only (checked by the agent): every shell carries it.
    if let Some(account) = opened.account_id.as_deref().filter(|a| plain_account(a)) {
        lines.push(EnvLine::Set(ACCOUNT_VAR, account));
    }
    Ok(render(shell, &lines)?)
}

/// Whether `text` is what [`write_token_file`] writes: one endpoint token (`cat1_<id>_<secret>`).
fn is_token(text: &[u8]) -> bool {
    text.strip_prefix(b"cat1_").is_some_and(|rest| {
        !rest.is_empty()
            && rest
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-')
    })
}

/// Refuses a `--token-file` target that writing would harm: anything but a missing file or an
/// earlier token file (a symbolic link, whose link would be replaced, or another file) without
/// `force`; never a directory or a device; and a path whose directory does not exist.
fn check_token_file_target(path: &Path, force: bool) -> Result<()> {
    let p = path.display();
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.is_dir() {
        return Err(Failure::usage(format!(
            "cannot write the token file {p}: {} is not a directory; create it first (nothing was asked of the agent)",
            dir.display()
        )));
    }
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Failure::usage(format!("cannot inspect {p}: {e}"))),
    };
    let keep = "nothing was written and no token was made";
    if meta.file_type().is_symlink() {
        return if force {
            Ok(())
        } else {
            Err(Failure::usage(format!(
                "{p} is a symbolic link: the token file would replace the link itself, not what it points to; {keep}. Name the file it points to, or pass --force to replace the link"
            )))
        };
    }
    if !meta.is_file() {
        return Err(Failure::usage(format!(
            "{p} exists and is not a regular file; {keep}: pick another path"
        )));
    }
    // An earlier token file is at most a few hundred bytes.
    let earlier = meta.len() <= 512 && std::fs::read(path).is_ok_and(|b| is_token(&b));
    if earlier || force {
        return Ok(());
    }
    Err(Failure::usage(format!(
        "{p} exists and is not a credctl token file: {keep}. Pick another path, or pass \
         --force to replace it"
    )))
}

/// Writes the token atomically, mode 0600, with no trailing newline (SDKs read it verbatim).
pub fn write_token_file(path: &Path, token: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        std::process::id()
    ));
    let fail = |e: std::io::Error| {
        Failure::failed(format!(
            "cannot write the token file {}: {e}",
            path.display()
        ))
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(fail)?;
    f.write_all(token.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        fail(e)
    })
}

/// The child of `credctl exec`, for the signal forwarder.
static CHILD: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(sig: libc_int) {
    let pid = CHILD.load(Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill(2) is async-signal-safe; pid is our own child.
        unsafe {
            nix::libc::kill(pid, sig);
        }
    }
}

#[allow(non_camel_case_types)]
type libc_int = nix::libc::c_int;

/// `credctl exec ROLE -- CMD…`: returns CMD's exit status.
pub fn exec(
    socket: &Path,
    role: &str,
    touch: &TouchArgs,
    region: Option<&str>,
    cmd: &[String],
) -> Result<u8> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    use std::os::unix::process::ExitStatusExt;
    let mut agent = Agent::connect_or_fail(socket)?;
    let opened = open_role(&mut agent, role, touch)?;
    // The command inherits credctl's environment: a region the caller set stays as it is.
    let regions = region_plan(region, role, &opened);
    // Scoped: the agent revokes this token when this connection closes, i.e. when we exit,
    // however we exit.
    let (token, token_id, uri) = token_of(agent.request(&Request::TokenForRole {
        role: role.to_owned(),
        scoped: true,
        purpose: "exec".into(),
        holder: None,
    })?)?;
    let (program, args) = cmd
        .split_first()
        .ok_or_else(|| Failure::failed("no command given after --"))?;
    let mut command = std::process::Command::new(program);
    command
        .args(args)
        .env("AWS_CONTAINER_CREDENTIALS_FULL_URI", &uri)
        .env("AWS_CONTAINER_AUTHORIZATION_TOKEN", token.expose())
        .env_remove("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE");
    for v in SHADOWING {
        command.env_remove(v);
    }
    for (k, v) in &regions.set {
        command.env(k, v);
    }
    if let Some(account) = opened.account_id.as_deref().filter(|a| plain_account(a)) {
        command.env(ACCOUNT_VAR, account);
    }
    // Keys in the credentials file's default profile would win over the agent: the command
    // gets no credentials file, so the agent is what its SDKs pick.
    if let Some(w) = crate::bypass::warning() {
        eprintln!("credctl: {w}; this command runs without that file");
        command.env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null");
    }
    // A default profile in the config file that yields credentials wins too; the command needs
    // that file for its regions and profiles, so it is only said.
    if let Some(w) = crate::bypass::config_warning() {
        eprintln!("credctl: {w}");
    }
    let mut child = command.spawn().map_err(|e| {
        let (exit, what) = match e.kind() {
            std::io::ErrorKind::NotFound => (Exit::CommandNotFound, "check the name and PATH"),
            std::io::ErrorKind::PermissionDenied => {
                (Exit::CannotExecute, "check that it is executable")
            }
            _ => (Exit::Failed, "check the command"),
        };
        Failure::new(exit, format!("cannot run {program}: {e}; {what}"))
    })?;
    drop(token);
    CHILD.store(child.id() as i32, Ordering::SeqCst);
    let action = SigAction::new(
        SigHandler::Handler(forward),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
    ] {
        // SAFETY: the handler only reads an atomic and calls kill(2), both async-signal-safe.
        let _ = unsafe { sigaction(sig, &action) };
    }
    let status = child
        .wait()
        .map_err(|e| Failure::failed(format!("waiting for {program}: {e}")))?;
    // Revoke explicitly and wait for the answer, so that the token is dead when we return: the
    // revocation on close happens after the agent notices the close, a moment later. If this
    // request fails, the close still revokes it.
    let _ = agent.request(&Request::TokenRevoke { id: token_id });
    drop(agent);
    Ok(match (status.code(), status.signal()) {
        (Some(c), _) => c as u8,
        (None, Some(s)) => 128u8.saturating_add(s as u8),
        _ => 1,
    })
}

/// A role's current credentials, as the agent hands them to `credential-process` and `export`.
pub struct RoleCredentials {
    pub access_key_id: String,
    pub secret_access_key: Secret,
    pub session_token: Secret,
    /// `YYYY-MM-DDTHH:MM:SSZ`.
    pub expiration: String,
    pub account_id: Option<String>,
}

/// Opens `role` if needed (touch) and asks the agent for its current credentials: the one way
/// credentials leave the agent for a person's stdout (`credential-process`, `export`).
pub fn role_credentials(
    socket: &Path,
    role: &str,
    touch: &TouchArgs,
    export: bool,
) -> Result<(OpenedRole, RoleCredentials)> {
    let mut agent = Agent::connect_or_fail(socket)?;
    let opened = open_role(&mut agent, role, touch)?;
    match agent.request(&Request::Credentials {
        role: role.to_owned(),
        export,
    })? {
        Response::Credentials {
            access_key_id,
            secret_access_key,
            session_token,
            expiration,
            account_id,
        } => Ok((
            opened,
            RoleCredentials {
                access_key_id,
                secret_access_key,
                session_token,
                expiration,
                account_id,
            },
        )),
        other => Err(unexpected(&other)),
    }
}

/// `credctl credential-process ROLE`: Version 1 JSON on stdout, nothing else (no region: the
/// format has no field for one), with `AccountId` when known, which botocore
/// (`ProcessProvider._get_account_id`), aws-config and the JS SDK read for account-based
/// endpoints.
pub fn credential_process(socket: &Path, role: &str, touch: &TouchArgs) -> Result<String> {
    let (_, c) = role_credentials(socket, role, touch, false)?;
    let mut body = serde_json::json!({
        "Version": 1,
        "AccessKeyId": c.access_key_id,
        "SecretAccessKey": c.secret_access_key.expose(),
        "SessionToken": c.session_token.expose(),
        "Expiration": c.expiration,
    });
    if let Some(account) = &c.account_id {
        body["AccountId"] = account.as_str().into();
    }
    Ok(format!("{body}\n"))
}

/// `credctl imds ROLE|--off`.
pub fn imds(socket: &Path, role: Option<String>) -> Result<String> {
    let mut agent = Agent::connect_or_fail(socket)?;
    agent.request(&Request::Imds { role: role.clone() })?;
    let Some(r) = role else {
        return Ok("IMDS serves no role\n".into());
    };
    // Say "once its session is open" only when it is not.
    let open = match agent.request(&Request::Status)? {
        Response::Status(info) => info.sessions.iter().any(|s| s.name == r),
        _ => false,
    };
    let r = crate::text::printable(&r);
    Ok(if open {
        format!("IMDS now serves role {r}\n")
    } else {
        format!("IMDS now serves role {r} once its session is open: `credctl use {r}`\n")
    })
}

/// `credctl lock`.
pub fn lock(socket: &Path) -> Result<String> {
    let mut agent = Agent::connect_or_fail(socket)?;
    agent.request(&Request::Lock)?;
    Ok("every session ended and every cached credential wiped\n".into())
}

/// `credctl allow`: the touch that lets process `pid` (every process of its program, with
/// `program`) use `role`'s session.
pub fn allow(
    socket: &Path,
    role: &str,
    pid: i32,
    program: bool,
    touch: &crate::cli::AuthArgs,
) -> Result<String> {
    let mut agent = Agent::connect_or_fail(socket)?;
    allow_on(&mut agent, role, pid, program, touch)?;
    Ok(if program {
        format!("every process of that program may use role {role} until its session ends\n")
    } else {
        format!("process {pid} may use role {role} until its session ends\n")
    })
}

fn allow_on(
    agent: &mut Agent,
    role: &str,
    pid: i32,
    program: bool,
    touch: &crate::cli::AuthArgs,
) -> Result<()> {
    crate::touch::say_what_we_wait_behind(agent, "");
    let c = match agent.request(&Request::AllowProgram {
        role: role.to_owned(),
        pid,
        program,
    })? {
        Response::Challenge(c) => *c,
        Response::Ok => return Ok(()),
        other => return Err(unexpected(&other)),
    };
    let auth = crate::touch::Authenticator::choose(touch)?;
    match crate::touch::answer(agent, &auth, &c).map_err(|f| {
        Failure::new(
            f.exit,
            format!("the touch failed ({f}); the program was not allowed"),
        )
    })? {
        Response::Ok => Ok(()),
        other => Err(unexpected(&other)),
    }
}

/// `credctl watch`: takes the touch for each role an SDK asks for.
pub fn watch(socket: &Path, touch: &TouchArgs, once: bool) -> Result<String> {
    let mut agent = Agent::connect_or_fail(socket)?;
    let mut handled: HashSet<(String, u64, Option<u64>, Option<i32>)> = HashSet::new();
    if !once {
        eprintln!("credctl: watching for approvals (Ctrl-C to stop)");
    }
    loop {
        let pending = match agent.request(&Request::Pending)? {
            Response::Pending { pending } => pending,
            other => return Err(unexpected(&other)),
        };
        for p in pending {
            if !handled.insert((p.role.clone(), p.first_seen, p.ends_at, p.program_pid)) {
                continue;
            }
            // Names chosen by whoever asked (the role a token was bound to, the executable's
            // name) are shown escaped, never raw.
            let shown = crate::text::printable(&p.role);
            let who = match (&p.peer_exe, p.peer_pid) {
                (Some(exe), Some(pid)) => {
                    format!("{} (pid {pid})", crate::text::printable(exe))
                }
                (None, Some(pid)) => format!("pid {pid}"),
                _ => "a process that has exited".into(),
            };
            // A program the role's rules refused: allowed (this process) with a touch.
            if let (Some(exe), Some(pid)) = (&p.program, p.program_pid) {
                eprintln!(
                    "credctl: {} (pid {pid}: {}) asked for role {}, which its rules do not let \
                     it use",
                    crate::text::printable(exe),
                    crate::text::printable(p.command_line.as_deref().unwrap_or("")),
                    shown
                );
                match allow_on(&mut agent, &p.role, pid, false, &touch.auth) {
                    Ok(()) => eprintln!("credctl: pid {pid} may use role {shown}"),
                    Err(f) => eprintln!("credctl: pid {pid} not allowed: {f}",),
                }
                continue;
            }
            // A running job's session about to end is extended with a touch for a new one.
            let mut touch = touch.clone();
            if let (Some(at), Some(what)) = (p.ends_at, &p.ending) {
                eprintln!(
                    "credctl: the {} of role {} ends under a running job, {who} ({}): touch to \
                     extend it",
                    crate::text::printable(what),
                    shown,
                    until(at)
                );
                touch.renew = true;
            } else {
                eprintln!(
                    "credctl: role {} requested by {who} ({} request(s))",
                    shown, p.requests
                );
            }
            match open_role(&mut agent, &p.role, &touch) {
                Ok(o) => eprintln!("credctl: role {shown} is open ({})", until(o.expires_at)),
                Err(f) => eprintln!("credctl: role {shown} not opened: {f}"),
            }
        }
        if once {
            return Ok(String::new());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

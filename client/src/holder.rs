//! Which process a token is given to. A shell's token (`credctl start`, `credctl env`) serves
//! only the shell that evaluates the output and its descendants, so the same token copied out
//! of `/proc/PID/environ` is worthless to any other process; `credctl exec`'s token serves only
//! the command (the agent binds it to credctl itself, the command's parent).

/// `CREDCTL_TOKEN_HOLDER`: a pid (the requester or one of its ancestors) to give the token
/// to, or `none` for a token anyone who holds it may present.
pub const HOLDER_VAR: &str = "CREDCTL_TOKEN_HOLDER";

/// The parent pid and the identity (executable and command line) of `pid`.
fn parent_and_identity(pid: i32) -> Option<(i32, (std::path::PathBuf, Vec<u8>))> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let ppid = rest.split_whitespace().nth(1)?.parse().ok()?;
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some((ppid, (exe, cmdline)))
}

/// The shell that will evaluate this credctl's output: its parent, past any subshell (a fork
/// of the shell, same program and command line, that `$(…)` may run credctl in and that exits
/// with it). `Ok(None)`: unbound, as `CREDCTL_TOKEN_HOLDER=none` asks.
pub fn shell() -> Result<Option<i32>, String> {
    match std::env::var(HOLDER_VAR) {
        Ok(v) if v == "none" => return Ok(None),
        Ok(v) => {
            return v.parse::<i32>().map(Some).map_err(|_| {
                format!(
                    "{HOLDER_VAR}={v:?} is not a pid: give a pid, or `none` for an unbound token"
                )
            })
        }
        Err(_) => {}
    }
    let mut pid = nix::unistd::getppid().as_raw();
    for _ in 0..64 {
        let Some((ppid, me)) = parent_and_identity(pid) else {
            break;
        };
        match parent_and_identity(ppid) {
            Some((_, parent)) if ppid > 1 && parent == me => pid = ppid,
            _ => break,
        }
    }
    Ok(Some(pid))
}

//! What the agent checks and opens before it detaches, so that a failure reaches whoever started
//! it (credctl prints it) instead of surfacing in a log after the fork: the state directory (its
//! owner and mode, and the lock that makes one agent its only user), the key registry and the
//! attestation CAs, the audit log and the keyring namespace.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::Context;
use nix::fcntl::{Flock, FlockArg};

use crate::approval::Approver;
use crate::config::Config;

/// The lock file that makes one agent the only user of a state directory.
pub const STATE_LOCK: &str = "agent.lock";

/// Everything opened before the fork.
pub struct Prepared {
    pub state_dir: PathBuf,
    /// Held for the agent's whole life.
    pub state_lock: Flock<File>,
    pub approver: Approver,
    /// The vault, shared by the approver (which unwraps it) and the sources (sealed to it).
    pub vault: std::sync::Arc<crate::vault::VaultKeeper>,
    pub audit_file: File,
    pub audit_path: PathBuf,
    /// The keyring namespace of this agent instance.
    pub instance: String,
    /// Move sources stored before namespacing into this instance.
    pub adopt_legacy: bool,
}

/// Refuses a state directory that another user owns or that others may enter; creates it 0700
/// if missing.
pub fn check_state_dir(dir: &Path) -> anyhow::Result<()> {
    crate::util::create_private_dir(dir)
        .with_context(|| format!("cannot create the state directory {}", dir.display()))?;
    let meta = std::fs::symlink_metadata(dir)
        .with_context(|| format!("cannot inspect {}", dir.display()))?;
    let me = nix::unistd::getuid().as_raw();
    if !meta.is_dir() {
        anyhow::bail!(
            "the state directory {} is not a directory (a symlink?): move it away and start \
             again",
            dir.display()
        );
    }
    if meta.uid() != me {
        anyhow::bail!(
            "the state directory {} is owned by uid {}, not you: keys, counters and the audit \
             live there; remove it or set XDG_STATE_HOME to a directory of yours",
            dir.display(),
            meta.uid()
        );
    }
    if meta.mode() & 0o077 != 0 {
        anyhow::bail!(
            "the state directory {} is open to others (mode {:o}): run `chmod 700 {}`",
            dir.display(),
            meta.mode() & 0o777,
            dir.display()
        );
    }
    Ok(())
}

/// Takes the state directory's lock, recording this agent's pid and socket in it; names the
/// agent holding it otherwise.
pub fn lock_state_dir(dir: &Path, socket: &Path) -> anyhow::Result<Flock<File>> {
    let path = dir.join(STATE_LOCK);
    let file = crate::util::open_lock_file(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(mut locked) => {
            write_owner(&mut locked, socket)
                .with_context(|| format!("cannot write {}", path.display()))?;
            Ok(locked)
        }
        Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            let (pid, sock) = parse_owner(&text);
            anyhow::bail!(
                "an agent already running (pid {}) uses the state directory {}{}: two agents on \
                 one state would overwrite each other's keys; stop it first with `credctl \
                 stop{}`",
                pid.map_or("unknown".into(), |p| p.to_string()),
                dir.display(),
                sock.as_deref()
                    .map(|s| format!(" (it listens on {s})"))
                    .unwrap_or_default(),
                sock.as_deref()
                    .map(|s| format!(" --socket {s}"))
                    .unwrap_or_default(),
            )
        }
        Err((_, errno)) => Err(anyhow::anyhow!("cannot lock {}: {errno}", path.display())),
    }
}

/// Records the running agent (after a detaching fork, the child calls this again).
pub fn write_owner(lock: &mut File, socket: &Path) -> std::io::Result<()> {
    lock.set_len(0)?;
    lock.rewind()?;
    write!(lock, "{}\n{}\n", std::process::id(), socket.display())?;
    lock.sync_data()
}

/// The pid and socket recorded in a state lock file.
pub fn parse_owner(text: &str) -> (Option<u32>, Option<String>) {
    let mut lines = text.lines();
    let pid = lines.next().and_then(|l| l.trim().parse().ok());
    let sock = lines.next().map(str::to_owned).filter(|s| !s.is_empty());
    (pid, sock)
}

/// The state directory, checked and locked for this agent.
pub struct State {
    dir: PathBuf,
    lock: Flock<File>,
}

/// Checks the state directory and takes its lock, naming the agent that holds it otherwise.
pub fn take_state(socket: &Path) -> anyhow::Result<State> {
    let dir = crate::paths::state_dir()
        .context("cannot find a state directory: set HOME or XDG_STATE_HOME")?;
    check_state_dir(&dir)?;
    let lock = lock_state_dir(&dir, socket)?;
    Ok(State { dir, lock })
}

/// Checks and opens the rest of what the agent needs, before it detaches.
pub fn prepare(state: State, config: &Config, http_port: u16) -> anyhow::Result<Prepared> {
    let State {
        dir: state_dir,
        lock: state_lock,
    } = state;
    // A state directory that has keys but no instance id predates namespacing: its agent
    // adopts the sources stored before, once.
    let upgrading = state_dir.join(crate::approval::KEYS_FILE).exists();
    let vault = std::sync::Arc::new(
        crate::vault::VaultKeeper::load(&state_dir)
            .with_context(|| format!("cannot read the vault in {}", state_dir.display()))?,
    );
    let approver = Approver::new(
        config.approval.clone(),
        &state_dir,
        vault.clone(),
        http_port,
        SystemTime::now(),
    )
    .context("cannot set up the approvals")?;
    let audit_path = state_dir.join("audit.jsonl");
    let audit_file = crate::audit::open(&audit_path)
        .with_context(|| format!("cannot open the audit log {}", audit_path.display()))?;
    let (instance, made) = crate::sources::instance_id(&state_dir)
        .with_context(|| format!("cannot set up {}", state_dir.display()))?;
    Ok(Prepared {
        state_dir,
        state_lock,
        approver,
        vault,
        audit_file,
        audit_path,
        instance,
        adopt_legacy: made && upgrading,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_agent_per_state_directory() {
        let dir = tempfile::tempdir().unwrap();
        let sock = Path::new("/run/user/1/credagent/agent.sock");
        let first = lock_state_dir(dir.path(), sock).unwrap();
        let err = lock_state_dir(dir.path(), Path::new("/tmp/other.sock"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        assert!(
            err.contains("credctl stop --socket /run/user/1/credagent/agent.sock"),
            "{err}"
        );
        drop(first);
        lock_state_dir(dir.path(), sock).unwrap();
    }

    #[test]
    fn a_state_directory_open_to_others_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        check_state_dir(&state).unwrap();
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
        let err = check_state_dir(&state).unwrap_err().to_string();
        assert!(err.contains("chmod 700"), "{err}");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&state, &link).unwrap();
        assert!(
            check_state_dir(&link).is_err(),
            "a symlink in place of the state directory"
        );
    }
}

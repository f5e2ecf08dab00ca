//! Which program listens on the control socket, checked before a byte is sent to it.
//!
//! [`crate::trust`] makes sure the socket and the process behind it belong to the user. That does
//! not stop code running as the user: it can restart the agent on another path and listen at the
//! usual one itself, a relay that reads every `Approve` (the key's PRF output, which with
//! `vault.json` opens the vault). So credctl also checks *what* listens: the process that made
//! the listening socket (`SO_PEERPIDFD`, else `SO_PEERCRED`'s pid; the agent re-stamps its
//! socket after it detaches and when systemd hands it over, so that process is the agent) must
//! run the very file credctl would start as the agent ([`agent_binary`]: same device and inode
//! as `/proc/PID/exe`), and must still be the same process once the check is over (its pidfd
//! still names it; without pidfds, its start time is unchanged), so a pid reused in between
//! cannot pass.
//!
//! What the kernel shows: `/proc/PID/exe` of a non-dumpable process (the agent makes itself one)
//! is hidden from the other processes of its user unless they are root or hold `CAP_SYS_PTRACE`.
//! As root, the executable is compared (ownership in `/proc` means nothing then). As anyone
//! else, a peer whose executable credctl *can* see is dumpable, so it is not a hardened
//! credagent and is refused whatever it runs; a peer that hides it is non-dumpable (its `/proc`
//! entries belong to root), and that is all a non-root process can learn: `SECURITY.md` says
//! what this leaves open.

use std::ffi::{OsStr, OsString};
use std::fs::Metadata;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::libc;
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};

use crate::error::{Exit, Failure};

/// How long a peer that is not (yet) the agent may take to become it: an agent that just
/// detached may not have re-stamped its socket yet. Only a refusal waits this long.
pub const SETTLE: Duration = Duration::from_secs(2);

/// Where credctl found the `credagent` it starts and trusts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Named by `$CREDAGENT_BIN`.
    Env,
    /// Next to the running `credctl`.
    BesideCredctl,
    /// The first `credagent` on `$PATH`.
    Path,
    /// Nowhere: credctl cannot start an agent, nor recognise one.
    Missing,
}

impl Origin {
    /// For `status --json` and `doctor --json`.
    pub fn key(self) -> &'static str {
        match self {
            Origin::Env => "CREDAGENT_BIN",
            Origin::BesideCredctl => "beside credctl",
            Origin::Path => "PATH",
            Origin::Missing => "not found",
        }
    }
}

/// The `credagent` binary credctl starts, and so the only program it talks to.
#[derive(Debug, Clone)]
pub struct AgentBinary {
    pub path: PathBuf,
    pub origin: Origin,
}

impl AgentBinary {
    /// The path and where it came from, for messages.
    pub fn describe(&self) -> String {
        let p = self.path.display();
        match self.origin {
            Origin::Env => format!("{p}, set by CREDAGENT_BIN"),
            Origin::BesideCredctl => format!("{p}, beside credctl"),
            Origin::Path => format!("{p}, found on PATH"),
            Origin::Missing => "credagent, found neither beside credctl nor on PATH".into(),
        }
    }
}

/// Finds the `credagent` binary: `$CREDAGENT_BIN` (a bare name is looked up on `$PATH`), else
/// next to `credctl`, else the first on `$PATH`. `credctl start` runs it, and every command
/// talks only to a process running this same file.
pub fn agent_binary() -> AgentBinary {
    find_agent_binary(
        std::env::var_os("CREDAGENT_BIN"),
        std::env::var_os("PATH"),
        std::env::current_exe().ok(),
    )
}

/// [`agent_binary`] with its inputs given: the variables and credctl's own path.
fn find_agent_binary(
    env_bin: Option<OsString>,
    path_var: Option<OsString>,
    credctl: Option<PathBuf>,
) -> AgentBinary {
    let on_path = |name: &OsStr| path_var.as_deref().and_then(|p| on_path(p, name));
    if let Some(p) = env_bin.filter(|p| !p.is_empty()) {
        // As `Command` does: a name without a slash is a program on PATH.
        let path = if p.as_encoded_bytes().contains(&b'/') {
            PathBuf::from(p)
        } else {
            on_path(&p).unwrap_or_else(|| PathBuf::from(p))
        };
        return AgentBinary {
            path,
            origin: Origin::Env,
        };
    }
    if let Some(me) = credctl {
        let sibling = me.with_file_name("credagent");
        if sibling.is_file() {
            return AgentBinary {
                path: sibling,
                origin: Origin::BesideCredctl,
            };
        }
    }
    match on_path(OsStr::new("credagent")) {
        Some(path) => AgentBinary {
            path,
            origin: Origin::Path,
        },
        None => AgentBinary {
            path: PathBuf::from("credagent"),
            origin: Origin::Missing,
        },
    }
}

/// The first executable file `name` in a directory of `path_var` (as `$PATH`).
fn on_path(path_var: &OsStr, name: &OsStr) -> Option<PathBuf> {
    std::env::split_paths(path_var)
        .filter(|d| !d.as_os_str().is_empty())
        .map(|d| d.join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// What the check could establish about the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assurance {
    /// It listened with the group of the set-group-id credagent credctl would start, a group
    /// none of the user's processes has: the kernel vouches for it, root or not.
    SetgidGroup,
    /// It runs the same file as the `credagent` credctl would start.
    SameBinary,
    /// It is not dumpable, and its executable is hidden from non-root processes: all that can be
    /// told without root.
    NotDumpable,
}

impl Assurance {
    /// For `status --json` and `doctor --json`.
    pub fn key(self) -> &'static str {
        match self {
            Assurance::SetgidGroup => "setgid-group",
            Assurance::SameBinary => "same-file",
            Assurance::NotDumpable => "not-dumpable",
        }
    }
}

/// A peer that passed: its pid, what was established, and against which binary.
#[derive(Debug, Clone)]
pub struct Verified {
    pub pid: i32,
    pub assurance: Assurance,
    pub binary: AgentBinary,
}

impl Verified {
    /// One line for `status` and `doctor`.
    pub fn describe(&self) -> String {
        match self.assurance {
            Assurance::SetgidGroup => format!(
                "pid {} listens with the group of the set-group-id credagent credctl starts \
                 ({}), which none of your processes can take on",
                self.pid,
                self.binary.describe()
            ),
            Assurance::SameBinary => format!(
                "pid {} runs the credagent credctl starts ({}); WEAKER: that file is not \
                 set-group-id, so a program of yours could have started it with code of its own \
                 (LD_PRELOAD): install the package (it installs credagent set-group-id) for the \
                 kernel to vouch for the agent",
                self.pid,
                self.binary.describe()
            ),
            Assurance::NotDumpable => format!(
                "pid {} is not dumpable, as credagent makes itself; the kernel hides its \
                 executable from non-root processes, so only root can compare it with {}; \
                 WEAKER: install the package (credagent set-group-id) for the kernel to vouch \
                 for the agent",
                self.pid,
                self.binary.describe()
            ),
        }
    }
}

/// Why the process behind the socket is not taken for the agent.
#[derive(Debug)]
pub enum Mismatch {
    /// The process that made the listening socket has exited (its pid may be another's now).
    Gone { pid: i32 },
    /// It runs another program (`exe` as `/proc/PID/exe` names it).
    OtherProgram { pid: i32, exe: String },
    /// It runs credagent but is dumpable: its memory is open to the user's other processes.
    Dumpable { pid: i32 },
    /// The credagent credctl starts is set-group-id, and the socket was not listened on with
    /// that group: whatever runs there, it is not that binary.
    WrongGroup { pid: i32, gid: u32, group: u32 },
    /// credctl cannot find (or stat) the credagent it would start.
    NoBinary { binary: AgentBinary, err: io::Error },
    /// `/proc` would not tell.
    Uninspectable { pid: i32, err: io::Error },
}

impl Mismatch {
    /// Whether the same socket may pass a moment later: an agent that has just detached
    /// carries its exited parent's credentials until it re-stamps the socket. (The agent takes
    /// no socket from another process, so another program behind the socket never becomes the
    /// agent.)
    pub fn transient(&self) -> bool {
        matches!(self, Mismatch::Gone { .. })
    }

    /// The refusal, with what was found and what to do.
    pub fn into_failure(self, socket: &Path) -> Failure {
        let s = socket.display();
        let restart = format!(
            "remove the socket (`rm {s}`) and start the agent again (`eval \"$(credctl start)\"`)"
        );
        let holders = format!("`ss -xlp src {s}` lists every process holding the socket");
        let message = match self {
            Mismatch::OtherProgram { pid, exe } => {
                let binary = agent_binary();
                let replaced = exe.ends_with(" (deleted)");
                let mut m = format!(
                    "the process listening on {s} (pid {pid}) runs {exe}, not the credagent \
                     credctl starts ({}): it is not your agent, and nothing was sent to it.",
                    binary.describe()
                );
                if replaced {
                    m.push_str(&format!(
                        " Its executable was replaced or removed after it started (an upgrade?), \
                         so credctl cannot tell it from an impostor. If it is your old agent, stop \
                         it with `kill {pid}` (`credctl stop` will not talk to it) and start the \
                         agent again (`eval \"$(credctl start)\"`)."
                    ));
                } else {
                    m.push_str(&format!(
                        " If you did not start it, treat it as an attempt to capture your \
                         security key's secret: see what it is (`ps -o pid,args -p {pid}`; \
                         {holders}), stop it (`kill {pid}`; `credctl stop` will not talk to it), \
                         {restart}, and check your login scripts and user services for what \
                         planted it. If it is a credagent you run from elsewhere, name that \
                         binary with CREDAGENT_BIN=/path/to/credagent."
                    ));
                }
                m
            }
            Mismatch::Gone { pid } => format!(
                "the process that opened the socket {s} (pid {pid}) has exited, so credctl \
                 cannot tell which program listens there now, and sent it nothing. An agent \
                 started by an older credagent can leave this; otherwise something else holds \
                 the socket: {holders}; stop what holds it (`kill PID`; `credctl stop` will not \
                 talk to it), then {restart}."
            ),
            Mismatch::WrongGroup { pid, gid, group } => format!(
                "the process listening on {s} (pid {pid}) listened with group {gid}, but the \
                 credagent credctl starts ({}) is set-group-id to group {group}, which every \
                 credagent listens with and none of your processes can take on: it is not your \
                 agent, and nothing was sent to it. If you did not start it, treat it as an \
                 attempt to capture your security key's secret: see what it is (`ps -o \
                 pid,args -p {pid}`; {holders}), stop it (`kill {pid}`), {restart}, and check \
                 your login scripts and user services for what planted it.",
                agent_binary().describe()
            ),
            Mismatch::Dumpable { pid } => format!(
                "the process listening on {s} (pid {pid}) runs credagent but is dumpable: your \
                 other processes could read its memory, which credagent never allows, so nothing \
                 was sent to it; stop it (`kill {pid}`) and {restart}."
            ),
            Mismatch::NoBinary { binary, err } => format!(
                "credctl cannot find the credagent it starts ({}: {err}), so it cannot tell \
                 whether the process listening on {s} is your agent, and sent it nothing; install \
                 credagent next to credctl, or name it with CREDAGENT_BIN=/path/to/credagent",
                binary.describe()
            ),
            Mismatch::Uninspectable { pid, err } => format!(
                "cannot inspect the process listening on {s} (pid {pid}: {err}), so credctl \
                 cannot tell whether it is your agent, and sent it nothing; check that /proc is \
                 mounted and shows your own processes (no `hidepid` for you), and see what \
                 listens ({holders})"
            ),
        };
        Failure::new(Exit::Untrusted, message)
    }
}

/// Checks that the process behind `stream` runs `binary` (as far as the kernel shows; see the
/// module), without sending anything on `stream`.
pub fn check(stream: &UnixStream, binary: &AgentBinary) -> Result<Verified, Mismatch> {
    let expected = match binary.origin {
        Origin::Missing => Err(io::Error::from(io::ErrorKind::NotFound)),
        _ => std::fs::metadata(&binary.path),
    }
    .map_err(|err| Mismatch::NoBinary {
        binary: binary.clone(),
        err,
    })?;
    let peer = Peer::of(stream)?;
    let group = match setgid_group(&expected, &own_groups()) {
        Some(group) => {
            let gid = getsockopt(stream, PeerCredentials)
                .map_err(|e| Mismatch::Uninspectable {
                    pid: peer.pid,
                    err: e.into(),
                })?
                .gid();
            if gid != group {
                return Err(Mismatch::WrongGroup {
                    pid: peer.pid,
                    gid,
                    group,
                });
            }
            true
        }
        None => false,
    };
    let found = identify(peer.pid, &expected, nix::unistd::geteuid().is_root()).map(|a| {
        if group {
            Assurance::SetgidGroup
        } else {
            a
        }
    });
    // Whatever was read above was read of this very process only if it is still the one that
    // made the socket now.
    if !peer.still_there() {
        return Err(Mismatch::Gone { pid: peer.pid });
    }
    Ok(Verified {
        pid: peer.pid,
        assurance: found?,
        binary: binary.clone(),
    })
}

/// The group a set-group-id `credagent` runs with, when that proves something: the binary has
/// the set-group-id bit and the group is none of this process's own (a group the user is in,
/// any of the user's processes can listen with).
fn setgid_group(binary: &Metadata, own: &[u32]) -> Option<u32> {
    (binary.mode() & 0o2000 != 0 && !own.contains(&binary.gid())).then(|| binary.gid())
}

/// This process's real, effective and supplementary groups.
fn own_groups() -> Vec<u32> {
    let mut groups: Vec<u32> = nix::unistd::getgroups()
        .unwrap_or_default()
        .into_iter()
        .map(|g| g.as_raw())
        .collect();
    groups.push(nix::unistd::getgid().as_raw());
    groups.push(nix::unistd::getegid().as_raw());
    groups
}

/// What `/proc/PID` says of process `pid` against the expected binary's metadata. `root`: we
/// are root, so ownership in `/proc` tells nothing and the executable is always visible.
fn identify(pid: i32, expected: &Metadata, root: bool) -> Result<Assurance, Mismatch> {
    let exe_link = PathBuf::from(format!("/proc/{pid}/exe"));
    let gone_or = |err: io::Error| match err.kind() {
        io::ErrorKind::NotFound => Mismatch::Gone { pid },
        _ => Mismatch::Uninspectable { pid, err },
    };
    // The kernel gives a non-dumpable process's /proc entries (other than the world-readable
    // directories) to root: for a non-root peer, that is how its dumpability shows.
    let not_dumpable = if root {
        None
    } else {
        Some(std::fs::symlink_metadata(&exe_link).map_err(gone_or)?.uid() == 0)
    };
    match std::fs::metadata(&exe_link) {
        Ok(m) if (m.dev(), m.ino()) == (expected.dev(), expected.ino()) => {
            if not_dumpable == Some(false) {
                Err(Mismatch::Dumpable { pid })
            } else {
                Ok(Assurance::SameBinary)
            }
        }
        Ok(_) => Err(Mismatch::OtherProgram {
            pid,
            exe: std::fs::read_link(&exe_link)
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| "a program that cannot be named".into()),
        }),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied && not_dumpable == Some(true) => {
            Ok(Assurance::NotDumpable)
        }
        Err(e) => Err(gone_or(e)),
    }
}

/// The process that made the listening socket, held so that a reused pid is noticed.
struct Peer {
    pid: i32,
    handle: Handle,
}

enum Handle {
    /// A pidfd (`SO_PEERPIDFD`, Linux 6.5+): names that process and no other, ever.
    Pidfd(OwnedFd),
    /// Older kernels: the pid and its start time, read before the check.
    StartTime(u64),
}

impl Peer {
    fn of(stream: &UnixStream) -> Result<Peer, Mismatch> {
        let cred_pid = || {
            getsockopt(stream, PeerCredentials)
                .map(|c| c.pid())
                .map_err(|e| Mismatch::Uninspectable {
                    pid: 0,
                    err: e.into(),
                })
        };
        match peer_pidfd(stream) {
            Ok(fd) => match pidfd_pid(&fd) {
                Ok(pid) if pid > 0 => Ok(Peer {
                    pid,
                    handle: Handle::Pidfd(fd),
                }),
                // The process that called listen() has exited.
                Ok(_) => Err(Mismatch::Gone { pid: cred_pid()? }),
                Err(err) => Err(Mismatch::Uninspectable {
                    pid: cred_pid()?,
                    err,
                }),
            },
            // Kernels from 6.5 to 6.8 refuse a pidfd of a process that has exited.
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
                Err(Mismatch::Gone { pid: cred_pid()? })
            }
            Err(_) => {
                let pid = cred_pid()?;
                let start = start_time(pid).map_err(|err| match err.kind() {
                    io::ErrorKind::NotFound => Mismatch::Gone { pid },
                    _ => Mismatch::Uninspectable { pid, err },
                })?;
                Ok(Peer {
                    pid,
                    handle: Handle::StartTime(start),
                })
            }
        }
    }

    /// Whether the process is still the one first seen (so its pid was not reused since).
    fn still_there(&self) -> bool {
        match &self.handle {
            Handle::Pidfd(fd) => pidfd_pid(fd).is_ok_and(|p| p == self.pid),
            Handle::StartTime(t) => start_time(self.pid).is_ok_and(|s| s == *t),
        }
    }
}

/// `SO_PEERPIDFD` where its value is the generic one.
#[cfg(all(
    target_os = "linux",
    any(
        target_arch = "x86_64",
        target_arch = "x86",
        target_arch = "aarch64",
        target_arch = "arm",
        target_arch = "riscv64",
        target_arch = "loongarch64",
        target_arch = "s390x",
        target_arch = "powerpc64"
    )
))]
const SO_PEERPIDFD: Option<libc::c_int> = Some(77);
#[cfg(not(all(
    target_os = "linux",
    any(
        target_arch = "x86_64",
        target_arch = "x86",
        target_arch = "aarch64",
        target_arch = "arm",
        target_arch = "riscv64",
        target_arch = "loongarch64",
        target_arch = "s390x",
        target_arch = "powerpc64"
    )
)))]
const SO_PEERPIDFD: Option<libc::c_int> = None;

/// A pidfd for the process that made the listening socket behind `stream`.
fn peer_pidfd(stream: &UnixStream) -> io::Result<OwnedFd> {
    let Some(opt) = SO_PEERPIDFD else {
        return Err(io::Error::from_raw_os_error(libc::ENOPROTOOPT));
    };
    let mut fd: libc::c_int = -1;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes (one c_int) to `fd`, which lives across the
    // call, and the stream's descriptor is open for its duration.
    let r = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            (&mut fd as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    if fd < 0 {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    // SAFETY: on success the kernel installed a new descriptor (close-on-exec) that nothing else
    // refers to: it is ours to own and close.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The pid a pidfd names now, from `/proc/self/fdinfo` (`-1` once that process has exited).
fn pidfd_pid(fd: &OwnedFd) -> io::Result<i32> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd()))?;
    info.lines()
        .find_map(|l| l.strip_prefix("Pid:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no Pid in the pidfd's fdinfo"))
}

/// Field 22 of `/proc/PID/stat`: when the process started, in clock ticks since boot.
fn start_time(pid: i32) -> io::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces and parentheses; fields resume after the last
    // ')' with field 3.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(22 - 3))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unreadable /proc/PID/stat"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::net::UnixListener;
    use std::process::{Child, Command, Stdio};

    fn me() -> AgentBinary {
        AgentBinary {
            path: std::env::current_exe().unwrap(),
            origin: Origin::Env,
        }
    }

    fn other(path: &str) -> AgentBinary {
        AgentBinary {
            path: PathBuf::from(path),
            origin: Origin::Env,
        }
    }

    fn listening() -> (tempfile::TempDir, PathBuf, UnixListener) {
        let tmp = tempfile::tempdir().unwrap();
        let sock = tmp.path().join("s");
        let l = UnixListener::bind(&sock).unwrap();
        (tmp, sock, l)
    }

    /// A python3 process (run by `program`) that listens on `sock`, prints "ready", and sleeps;
    /// killed on drop.
    struct Listener(Child);

    impl Listener {
        fn start(program: &Path, sock: &Path, nondumpable: bool) -> Listener {
            let script = "import ctypes, socket, sys, time\n\
                          if sys.argv[2] == '1':\n    ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)\n\
                          s = socket.socket(socket.AF_UNIX)\ns.bind(sys.argv[1])\ns.listen(4)\n\
                          print('ready', flush=True)\ntime.sleep(60)\n";
            let mut child = Command::new(program)
                .args(["-c", script, sock.to_str().unwrap()])
                .arg(if nondumpable { "1" } else { "0" })
                .stdout(Stdio::piped())
                .spawn()
                .expect("python3");
            let mut line = String::new();
            std::io::BufRead::read_line(
                &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
                &mut line,
            )
            .unwrap();
            assert_eq!(line.trim(), "ready");
            Listener(child)
        }
    }

    impl Drop for Listener {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// The python3 interpreter itself (not a wrapper such as a pyenv shim), resolved as
    /// `/proc/PID/exe` names it.
    fn python() -> PathBuf {
        let out = Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .expect("python3 is needed for these tests (scripts/setup installs it)");
        std::fs::canonicalize(String::from_utf8(out.stdout).unwrap().trim()).unwrap()
    }

    #[test]
    fn this_process_is_recognised_by_its_own_executable() {
        let (_tmp, sock, _l) = listening();
        let s = UnixStream::connect(&sock).unwrap();
        // A test binary is dumpable: as a non-root user that alone is a refusal.
        let root = nix::unistd::geteuid().is_root();
        match check(&s, &me()) {
            Ok(v) => {
                assert!(root, "a dumpable peer passed as non-root");
                assert_eq!(v.pid, std::process::id() as i32);
                assert_eq!(v.assurance, Assurance::SameBinary);
            }
            Err(Mismatch::Dumpable { pid }) if !root => {
                assert_eq!(pid, std::process::id() as i32)
            }
            Err(m) => panic!("{m:?}"),
        }
    }

    #[test]
    fn another_binary_is_refused_by_device_and_inode() {
        let (_tmp, sock, _l) = listening();
        let s = UnixStream::connect(&sock).unwrap();
        // A copy of our own executable: same bytes, same name, another file.
        let tmp = tempfile::tempdir().unwrap();
        let copy = tmp
            .path()
            .join(std::env::current_exe().unwrap().file_name().unwrap());
        std::fs::copy(std::env::current_exe().unwrap(), &copy).unwrap();
        let m = check(&s, &other(copy.to_str().unwrap())).expect_err("a copy is another file");
        match &m {
            Mismatch::OtherProgram { pid, exe } => {
                assert_eq!(*pid, std::process::id() as i32);
                assert_eq!(
                    Path::new(exe),
                    std::env::current_exe().unwrap(),
                    "names what it runs"
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(
            !m.transient(),
            "another program never becomes the agent: no wait"
        );
        let f = m.into_failure(&sock);
        assert_eq!(f.exit, Exit::Untrusted);
        assert!(
            f.message.contains("nothing was sent")
                && f.message.contains("ss -xlp src")
                && f.message.contains("kill ")
                && f.message.contains("CREDAGENT_BIN"),
            "{}",
            f.message
        );
    }

    #[test]
    fn a_child_process_is_not_the_binary_we_would_start() {
        // A python3 child listening: the peer is that child, which runs python, not us.
        let tmp = tempfile::tempdir().unwrap();
        let sock = tmp.path().join("s");
        let child = Listener::start(&python(), &sock, false);
        let s = UnixStream::connect(&sock).unwrap();
        match check(&s, &me()) {
            Err(Mismatch::OtherProgram { pid, exe }) => {
                assert_eq!(pid, child.0.id() as i32);
                assert_eq!(Path::new(&exe), python());
            }
            other => panic!("{other:?}"),
        }
        // Named as the trusted binary, the same child passes as root; as anyone else it is
        // dumpable, which no credagent is.
        let named = AgentBinary {
            path: python(),
            origin: Origin::Env,
        };
        match check(&s, &named) {
            Ok(v) => {
                assert!(nix::unistd::geteuid().is_root());
                assert_eq!(
                    (v.pid, v.assurance),
                    (child.0.id() as i32, Assurance::SameBinary)
                );
            }
            Err(Mismatch::Dumpable { .. }) => assert!(!nix::unistd::geteuid().is_root()),
            Err(m) => panic!("{m:?}"),
        }
    }

    #[test]
    fn a_child_that_made_itself_non_dumpable_is_still_refused_where_its_binary_shows() {
        let tmp = tempfile::tempdir().unwrap();
        let sock = tmp.path().join("s");
        let child = Listener::start(&python(), &sock, true);
        let s = UnixStream::connect(&sock).unwrap();
        let got = check(&s, &me());
        if nix::unistd::geteuid().is_root() {
            // Root sees every executable: the identity check holds whatever the peer does.
            assert!(
                matches!(got, Err(Mismatch::OtherProgram { pid, .. }) if pid == child.0.id() as i32),
                "{got:?}"
            );
        } else {
            // Without root the kernel hides a non-dumpable process's executable: this is the
            // gap SECURITY.md describes, asserted so that it is noticed if it ever changes.
            assert!(
                matches!(
                    got,
                    Ok(Verified {
                        assurance: Assurance::NotDumpable,
                        ..
                    })
                ),
                "{got:?}"
            );
        }
    }

    #[test]
    fn an_exited_listener_is_gone_even_if_its_socket_lives_on() {
        // python3 makes the socket and exits; its child keeps the socket open and listening.
        let tmp = tempfile::tempdir().unwrap();
        let sock = tmp.path().join("s");
        let script = "import os, socket, sys, time\n\
                      s = socket.socket(socket.AF_UNIX)\ns.bind(sys.argv[1])\ns.listen(4)\n\
                      holder = os.fork()\n\
                      if holder == 0:\n    time.sleep(60)\n    os._exit(0)\n\
                      print(os.getpid(), holder, flush=True)\n";
        let mut parent = Command::new(python())
            .args(["-c", script, sock.to_str().unwrap()])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        // One line, not to the end: the holder keeps the pipe open.
        let mut text = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(parent.stdout.take().unwrap()),
            &mut text,
        )
        .unwrap();
        parent.wait().unwrap();
        let pids: Vec<i32> = text
            .split_whitespace()
            .map(|p| p.parse().unwrap())
            .collect();
        let (creator, holder) = (pids[0], pids[1]);
        let s = UnixStream::connect(&sock).unwrap();
        let got = check(&s, &me());
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(holder),
            nix::sys::signal::Signal::SIGKILL,
        );
        match got {
            Err(m @ Mismatch::Gone { .. }) => {
                assert!(
                    matches!(m, Mismatch::Gone { pid } if pid == creator),
                    "{m:?}"
                );
                assert!(m.transient());
                let f = m.into_failure(&sock);
                assert!(
                    f.message.contains(&format!("(pid {creator}) has exited"))
                        && f.message.contains("sent it nothing"),
                    "{}",
                    f.message
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn only_a_set_group_id_binary_of_a_group_not_ours_names_a_group_to_check() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("credagent");
        std::fs::write(&f, b"").unwrap();
        let meta = |mode: u32| {
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
            std::fs::metadata(&f).unwrap()
        };
        let gid = meta(0o755).gid();
        assert_eq!(setgid_group(&meta(0o755), &[]), None, "not set-group-id");
        assert_eq!(setgid_group(&meta(0o2755), &[]), Some(gid));
        assert_eq!(
            setgid_group(&meta(0o2755), &[7, gid]),
            None,
            "a group of ours proves nothing: any of our processes has it"
        );
    }

    #[test]
    fn a_missing_binary_is_refused_with_how_to_name_one() {
        let (_tmp, sock, _l) = listening();
        let s = UnixStream::connect(&sock).unwrap();
        let m = check(&s, &other("/nonexistent/credagent")).expect_err("nothing to compare with");
        assert!(matches!(m, Mismatch::NoBinary { .. }), "{m:?}");
        assert!(!m.transient());
        let f = m.into_failure(&sock);
        assert_eq!(f.exit, Exit::Untrusted);
        assert!(
            f.message.contains("/nonexistent/credagent") && f.message.contains("CREDAGENT_BIN="),
            "{}",
            f.message
        );
        let missing = AgentBinary {
            path: PathBuf::from("credagent"),
            origin: Origin::Missing,
        };
        assert!(matches!(
            check(&s, &missing),
            Err(Mismatch::NoBinary { .. })
        ));
    }

    #[test]
    fn start_time_is_field_22_whatever_the_command_name() {
        let t = start_time(std::process::id() as i32).unwrap();
        assert!(t > 0);
        assert_eq!(start_time(std::process::id() as i32).unwrap(), t);
        assert!(start_time(i32::MAX).is_err());
    }

    #[test]
    fn the_binary_is_credagent_bin_else_beside_credctl_else_on_path() {
        let tmp = tempfile::tempdir().unwrap();
        let exe = |p: &Path| {
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b"#!/bin/sh\n").unwrap();
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
        };
        let (bin_dir, path_dir) = (tmp.path().join("bin"), tmp.path().join("path"));
        let credctl = bin_dir.join("credctl");
        exe(&credctl);
        exe(&path_dir.join("credagent"));
        exe(&path_dir.join("my-agent"));
        // Not executable: PATH lookups pass over it, as a shell would.
        std::fs::write(bin_dir.join("plain"), b"").unwrap();
        let path = std::env::join_paths([Path::new("/nonexistent"), &bin_dir, &path_dir]).unwrap();
        let find = |env: Option<&str>, credctl: Option<&Path>| {
            let b = find_agent_binary(
                env.map(OsString::from),
                Some(path.clone()),
                credctl.map(Path::to_owned),
            );
            (b.path, b.origin)
        };

        // Nothing beside credctl: the first on PATH.
        assert_eq!(
            find(None, Some(&credctl)),
            (path_dir.join("credagent"), Origin::Path)
        );
        // Beside credctl wins over PATH.
        exe(&bin_dir.join("credagent"));
        assert_eq!(
            find(None, Some(&credctl)),
            (bin_dir.join("credagent"), Origin::BesideCredctl)
        );
        // CREDAGENT_BIN wins over both: a path as given, a bare name on PATH.
        assert_eq!(
            find(Some("/opt/x/credagent"), Some(&credctl)).0,
            Path::new("/opt/x/credagent")
        );
        assert_eq!(
            find(Some("my-agent"), Some(&credctl)),
            (path_dir.join("my-agent"), Origin::Env)
        );
        assert_eq!(
            find(Some("plain"), None).0,
            Path::new("plain"),
            "not executable"
        );
        // An empty CREDAGENT_BIN is unset.
        assert_eq!(find(Some(""), Some(&credctl)).1, Origin::BesideCredctl);
        // Nowhere at all.
        let b = find_agent_binary(None, Some(OsString::from("/nonexistent")), None);
        assert_eq!(b.origin, Origin::Missing);
        assert!(b.describe().contains("neither beside credctl nor on PATH"));
    }
}

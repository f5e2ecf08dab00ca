//! Acquiring the agent's two listeners before the runtime starts: the control socket (created
//! with safe permissions, guarded by a lock so only one agent owns it; never inherited) and the
//! loopback HTTP listener.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::RawFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use credagent_proto::{Request, Response, PROTOCOL_VERSION};
use nix::fcntl::{Flock, FlockArg};

/// Both listeners, bound and ready to hand to the runtime.
pub struct Listeners {
    pub control: UnixListener,
    pub control_path: PathBuf,
    pub http: TcpListener,
    pub http_addr: SocketAddr,
    /// Held for the agent's whole life: the advisory lock that makes this agent the socket's owner.
    pub lock: Flock<File>,
}

/// Why the listeners could not be set up. Each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("agent already running (pid {pid}) on {path}; use it, or stop it with `credctl stop`")]
    AlreadyRunning { pid: String, path: PathBuf },
    #[error("socket directory {path} {problem}; it must be a directory owned by you with mode 0700: fix it with `chmod 700 {path}`, or pick another socket with --socket / CREDAGENT_SOCK")]
    UnsafeDir { path: PathBuf, problem: String },
    #[error("{path} exists and is not a socket; refusing to replace it: move it away or pick another socket with --socket / CREDAGENT_SOCK")]
    NotASocket { path: PathBuf },
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {source}; choose another `listen` address in config.toml")]
    Http {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("this agent was handed {what} by the process that started it (LISTEN_FDS, systemd socket activation); credagent makes its own sockets, because the process that made a socket can accept connections on it in the agent's place and read your key's answers: start it with `credctl start` or `systemctl --user enable --now credagent.service` (credagent.socket is gone), and set `listen = \"127.0.0.1:PORT\"` in config.toml for a fixed endpoint port", what = "sockets")]
    Activation,
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ListenError {
    let path = path.to_owned();
    move |source| ListenError::Io {
        action,
        path,
        source,
    }
}

/// Refuses sockets handed over by another process (`LISTEN_FDS`: systemd socket activation, or
/// anything that speaks its protocol), and clears the variables so no child inherits them.
///
/// The process that made a listening socket keeps its own copy and can `accept()` on it too,
/// while every connection still names the agent (which listened last) as its peer: credctl's
/// check of who is behind the socket would pass, and a same-user process (a user service with
/// `Sockets=credagent.socket`, or a script that starts the agent this way) would read every
/// touch's answer — the key's PRF output — and rewrite what the person approves. The agent
/// makes both its sockets itself, so it is the only process holding them.
pub fn refuse_activation() -> Result<(), ListenError> {
    let ours = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .is_some_and(|p| p == std::process::id());
    let count = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|v| v.parse::<RawFd>().ok())
        .unwrap_or(0);
    for var in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(var);
    }
    if ours && count > 0 {
        return Err(ListenError::Activation);
    }
    Ok(())
}

/// Checks (and, when `create`, creates) the directory that holds the control socket.
pub fn prepare_socket_dir(dir: &Path, create: bool) -> Result<(), ListenError> {
    if create {
        match std::fs::DirBuilder::new().mode(0o700).create(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err("create socket directory", dir)(e)),
        }
    }
    let meta = std::fs::symlink_metadata(dir).map_err(io_err("inspect socket directory", dir))?;
    let unsafe_dir = |problem: String| ListenError::UnsafeDir {
        path: dir.to_owned(),
        problem,
    };
    if meta.file_type().is_symlink() {
        return Err(unsafe_dir("is a symbolic link".into()));
    }
    if !meta.is_dir() {
        return Err(unsafe_dir("is not a directory".into()));
    }
    let me = nix::unistd::getuid().as_raw();
    if meta.uid() != me {
        return Err(unsafe_dir(format!(
            "is owned by uid {} (you are uid {me})",
            meta.uid()
        )));
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(unsafe_dir(format!(
            "has mode {mode:04o} (group or others can enter it)"
        )));
    }
    Ok(())
}

/// Asks a live agent on `path` for its pid (used to name the agent that holds the lock).
fn running_agent_pid(path: &Path, lock: &mut File) -> String {
    let from_socket = (|| {
        let mut s = std::os::unix::net::UnixStream::connect(path).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        credagent_proto::write_frame(
            &mut s,
            &Request::Hello {
                protocol_version: PROTOCOL_VERSION,
                client_version: env!("CARGO_PKG_VERSION").into(),
            },
        )
        .ok()?;
        match credagent_proto::read_frame::<_, Response>(&mut s).ok()? {
            Response::Hello { pid, .. } => Some(pid.to_string()),
            _ => None,
        }
    })();
    from_socket.unwrap_or_else(|| {
        let mut text = String::new();
        let _ = lock.rewind();
        let _ = lock.read_to_string(&mut text);
        let text = text.trim();
        if text.is_empty() {
            "unknown".into()
        } else {
            text.to_owned()
        }
    })
}

/// The lock file next to `socket`.
pub fn lock_path(socket: &Path) -> PathBuf {
    let mut lock_path = socket.as_os_str().to_owned();
    lock_path.push(".lock");
    PathBuf::from(lock_path)
}

/// Takes the agent lock next to the socket; fails with the running agent's pid if it is held.
/// An agent removes the lock file when it stops, so the lock counts only if the file locked is
/// still the one at the path (otherwise the locker raced a stopping agent: try again).
fn take_lock(socket: &Path) -> Result<Flock<File>, ListenError> {
    use std::os::unix::fs::MetadataExt;
    let lock_path = lock_path(socket);
    for _ in 0..8 {
        let file = crate::util::open_lock_file(&lock_path)
            .map_err(io_err("open lock file", &lock_path))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(locked) => {
                let held = locked.metadata().map_err(io_err("stat", &lock_path))?;
                let current = std::fs::symlink_metadata(&lock_path).ok();
                if current.is_some_and(|c| c.dev() == held.dev() && c.ino() == held.ino()) {
                    return Ok(locked);
                }
            }
            Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
                let pid = running_agent_pid(socket, &mut file);
                return Err(ListenError::AlreadyRunning {
                    pid,
                    path: socket.to_owned(),
                });
            }
            Err((_, errno)) => return Err(io_err("lock", &lock_path)(errno.into())),
        }
    }
    Err(io_err("lock", &lock_path)(std::io::Error::other(
        "the lock file keeps being replaced: another agent is starting and stopping; try again",
    )))
}

/// Records the owning pid in the lock file (after a daemonizing fork, the child calls this).
pub fn record_pid(lock: &mut File) -> std::io::Result<()> {
    lock.set_len(0)?;
    lock.rewind()?;
    writeln!(lock, "{}", std::process::id())?;
    lock.sync_data()
}

/// Binds the control socket at `path` and the HTTP listener, both made here (see
/// [`refuse_activation`]).
///
/// Order matters: the lock is taken before the old socket file is touched, so a live agent's
/// socket is never unlinked, and a stale one (left by `kill -9`) is replaced.
pub fn bind(path: &Path, create_dir: bool, listen: SocketAddr) -> Result<Listeners, ListenError> {
    prepare_socket_dir(parent_of(path), create_dir)?;
    let lock = take_lock(path)?;
    if is_socket(path)? {
        // We hold the lock, so whoever made this socket is gone: it is stale.
        tracing::info!(path = %path.display(), "replacing stale control socket");
        std::fs::remove_file(path).map_err(io_err("remove stale socket", path))?;
    }
    let control = UnixListener::bind(path).map_err(io_err("bind control socket", path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(io_err("set permissions on", path))?;
    let control_path = path.to_owned();
    control
        .set_nonblocking(true)
        .map_err(io_err("configure", &control_path))?;
    let http = TcpListener::bind(listen).map_err(|source| ListenError::Http {
        addr: listen,
        source,
    })?;
    http.set_nonblocking(true)
        .map_err(|source| ListenError::Http {
            addr: listen,
            source,
        })?;
    let http_addr = http.local_addr().map_err(|source| ListenError::Http {
        addr: listen,
        source,
    })?;
    Ok(Listeners {
        control,
        control_path,
        http,
        http_addr,
        lock,
    })
}

/// Makes this process the one the control socket's new connections name as their peer.
///
/// `credctl` reads the peer of its connection (`SO_PEERCRED`, `SO_PEERPIDFD`) and talks only to a
/// process running the credagent binary, so that a relay planted at the socket path gets nothing.
/// The kernel takes that peer from whoever last called `listen()` on the socket: the parent that
/// exits after the daemonizing fork. Listening again stamps the socket with this process. Connections already queued keep the old stamp;
/// credctl hangs up on those without a byte and connects again.
pub fn claim_control(control: &UnixListener, path: &Path) -> Result<(), ListenError> {
    nix::sys::socket::listen(control, nix::sys::socket::Backlog::MAXCONN)
        .map_err(|e| io_err("listen again on", path)(e.into()))
}

fn parent_of(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Whether `path` is an existing socket; anything else that exists there is refused.
fn is_socket(path: &Path) -> Result<bool, ListenError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => Ok(true),
        Ok(_) => Err(ListenError::NotASocket {
            path: path.to_owned(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_err("inspect", path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn refuses_group_readable_dir_and_foreign_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("d");
        prepare_socket_dir(&dir, true).unwrap();
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o750)).unwrap();
        let err = prepare_socket_dir(&dir, true).unwrap_err().to_string();
        assert!(err.contains("0750") && err.contains("chmod 700"), "{err}");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let file = dir.join("agent.sock");
        std::fs::write(&file, b"precious").unwrap();
        let err = bind(&file, true, "127.0.0.1:0".parse().unwrap())
            .err()
            .unwrap();
        assert!(matches!(err, ListenError::NotASocket { .. }));
        assert_eq!(std::fs::read(&file).unwrap(), b"precious");
    }

    #[test]
    fn claiming_the_control_socket_names_this_process_as_the_peer() {
        use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("s");
        let l = UnixListener::bind(&path).unwrap();
        let me = std::process::id() as i32;
        let peer = |p: &Path| {
            getsockopt(
                &std::os::unix::net::UnixStream::connect(p).unwrap(),
                PeerCredentials,
            )
            .unwrap()
            .pid()
        };
        // Looked at before the fork: afterwards the child may claim the socket first.
        assert_eq!(peer(&path), me, "bound and listened here");
        // A child listens again on the inherited socket, then waits to be told to exit.
        let (r, w) = nix::unistd::pipe().unwrap();
        let (done_r, done_w) = nix::unistd::pipe().unwrap();
        // SAFETY: the child only calls async-signal-safe functions (listen, write, read, _exit).
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                // Only the parent may hold the write end, or the child never sees it close.
                drop(done_w);
                let ok = claim_control(&l, &path).is_ok();
                let _ = nix::unistd::write(&w, &[u8::from(ok)]);
                let _ = nix::unistd::read(done_r.as_raw_fd(), &mut [0u8; 1]);
                // SAFETY: _exit ends the forked child without running the parent's destructors.
                unsafe { nix::libc::_exit(0) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                let mut ok = [0u8; 1];
                nix::unistd::read(r.as_raw_fd(), &mut ok).unwrap();
                assert_eq!(ok, [1], "the child claimed the socket");
                let after = peer(&path);
                drop(done_w);
                nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(after, child.as_raw(), "now the child is the peer");
            }
        }
    }

    #[test]
    fn second_bind_is_refused_while_the_first_lives() {
        let tmp = tempfile::tempdir().unwrap();
        // A directory of its own, made 0700 by `bind`: the temporary one follows the umask.
        let sock = tmp.path().join("d/agent.sock");
        let any = "127.0.0.1:0".parse().unwrap();
        let first = bind(&sock, true, any).unwrap();
        assert_eq!(std::fs::metadata(&sock).unwrap().mode() & 0o777, 0o600);
        let err = bind(&sock, true, any).err().unwrap();
        assert!(
            err.to_string().starts_with("agent already running (pid"),
            "{err}"
        );
        drop(first);
        // The socket file is still there (stale), and a new agent replaces it.
        assert!(sock.exists());
        bind(&sock, true, any).unwrap();
    }
}

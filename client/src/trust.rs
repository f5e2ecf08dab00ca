//! Whether the control socket is the user's own agent, checked before a byte is sent to it.
//!
//! The socket may sit under `/tmp`, where another user can plant a directory or a socket first
//! and wait for our `Hello`, tokens and source secrets. So before connecting, the socket's
//! directory and the socket itself must be ours and closed to group and others (looked at with
//! `lstat`, so a symlink planted in their place is refused rather than followed); after
//! connecting, the process listening must run as us (`SO_PEERCRED`). Root can still pass both;
//! nothing here defends against root.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::UnixStream;
use std::path::Path;

use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};

use crate::error::{Exit, Failure};

/// What is at the socket path, once it has passed the checks.
#[derive(Debug)]
pub enum Presence {
    /// A socket of ours in a private directory of ours: worth connecting to.
    Socket,
    /// No directory or no socket: no agent runs there (one may be started).
    Absent(io::Error),
}

/// The directory that holds `socket` (`.` for a bare file name), as the agent reads it.
fn dir_of(socket: &Path) -> &Path {
    socket
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

fn me() -> u32 {
    nix::unistd::getuid().as_raw()
}

/// How to get a private socket instead, for every message that ends in "use another one".
const ELSEWHERE: &str = "or point credctl and the agent at a private directory of yours with \
                         CREDAGENT_SOCK (or --socket, or XDG_RUNTIME_DIR)";

fn untrusted(message: String) -> Failure {
    Failure::new(Exit::Untrusted, message)
}

/// Whether `dir` is a directory credagent makes for its socket (`$XDG_RUNTIME_DIR/credagent`,
/// `/tmp/credagent-UID`): only there does credctl advise changing or removing anything.
fn agents_own(dir: &Path) -> bool {
    dir.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n == "credagent" || n.starts_with("credagent-"))
}

/// The refusal of a socket path in a directory that is not one credagent makes: the path is
/// most likely wrong (a typo, a stale variable), and nothing there is for credctl to change.
fn wrong_place(socket: &Path, why: &str) -> Failure {
    Failure::new(
        Exit::Untrusted,
        format!(
            "the agent's socket path {} is in {}, which {why} and is not a directory credagent \
             makes for its socket (those end in /credagent or /credagent-UID): the path is \
             probably wrong; check --socket and CREDAGENT_SOCK, or unset them to use the \
             default",
            socket.display(),
            dir_of(socket).display()
        ),
    )
}

/// Checks the socket's directory and the socket before anything connects to them.
pub fn check_path(socket: &Path) -> Result<Presence, Failure> {
    let dir = dir_of(socket);
    let me = me();
    let d = dir.display();
    let own = agents_own(dir);
    let meta = match std::fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Presence::Absent(e)),
        Err(e) => {
            return Err(untrusted(format!(
                "cannot inspect the socket directory {d} ({e}), so credctl cannot tell whether \
                 the agent there is yours; fix its permissions, {ELSEWHERE}"
            )))
        }
    };
    if !own {
        if meta.file_type().is_symlink() || !meta.is_dir() {
            return Err(wrong_place(socket, "is not a directory"));
        }
        if meta.uid() != me {
            return Err(wrong_place(
                socket,
                &format!("belongs to uid {}", meta.uid()),
            ));
        }
        if meta.mode() & 0o077 != 0 {
            return Err(wrong_place(socket, "others may enter"));
        }
    }
    if meta.file_type().is_symlink() {
        return Err(untrusted(format!(
            "the socket directory {d} is a symbolic link, not a directory: someone may have \
             planted it to impersonate the agent; remove it (`rm {d}`), {ELSEWHERE}"
        )));
    }
    if !meta.is_dir() {
        return Err(untrusted(format!(
            "the socket directory {d} is not a directory; move it away, {ELSEWHERE}"
        )));
    }
    if meta.uid() != me {
        return Err(untrusted(format!(
            "the socket directory {d} is owned by uid {}, not you (uid {me}): someone else may \
             have planted it to impersonate the agent; have it removed (`sudo rm -rf {d}`), \
             {ELSEWHERE}",
            meta.uid()
        )));
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(untrusted(format!(
            "the socket directory {d} has mode {mode:04o}: group or others can reach it, so the \
             socket in it may not be your agent's; run `chmod 700 {d}` and try again, \
             {ELSEWHERE}"
        )));
    }

    let s = socket.display();
    let meta = match std::fs::symlink_metadata(socket) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Presence::Absent(e)),
        Err(e) => {
            return Err(untrusted(format!(
                "cannot inspect the socket {s} ({e}); fix its permissions, {ELSEWHERE}"
            )))
        }
    };
    if meta.file_type().is_symlink() {
        return Err(untrusted(format!(
            "the socket {s} is a symbolic link, not the agent's socket: someone may have planted \
             it; remove it (`rm {s}`) and start the agent again (`eval \"$(credctl start)\"`)"
        )));
    }
    if meta.uid() != me {
        return Err(untrusted(format!(
            "the socket {s} is owned by uid {}, not you (uid {me}): someone else may have \
             planted it to impersonate the agent; remove it (`rm {s}`) and start the agent again \
             (`eval \"$(credctl start)\"`), {ELSEWHERE}",
            meta.uid()
        )));
    }
    if !meta.file_type().is_socket() {
        return Err(Failure::new(
            Exit::NoAgent,
            if own {
                format!(
                    "{s} exists and is not a socket, so no agent can listen there; move it \
                     away, {ELSEWHERE}"
                )
            } else {
                format!(
                    "{s} is not a socket: the agent's socket path is probably wrong; check \
                     --socket and CREDAGENT_SOCK, or unset them to use the default"
                )
            },
        ));
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(untrusted(format!(
            "the socket {s} has mode {mode:04o}: group or others may connect to it; run \
             `chmod 600 {s}` and try again"
        )));
    }
    Ok(Presence::Socket)
}

/// Checks that the process listening on `stream` runs as us, before anything is sent.
pub fn check_peer(stream: &UnixStream, socket: &Path) -> Result<(), Failure> {
    let s = socket.display();
    let cred = getsockopt(stream, PeerCredentials).map_err(|e| {
        untrusted(format!(
            "cannot read the credentials of the process listening on {s} ({e}), so credctl \
             cannot tell whether it is your agent; check `credctl status` again, {ELSEWHERE}"
        ))
    })?;
    let me = me();
    if cred.uid() != me {
        return Err(untrusted(format!(
            "the process listening on {s} (pid {}) runs as uid {}, not as you (uid {me}): it is \
             not your agent, and nothing was sent to it; remove the socket (`rm {s}`, as its \
             owner or root) and start the agent again (`eval \"$(credctl start)\"`), {ELSEWHERE}",
            cred.pid(),
            cred.uid()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::net::UnixListener;

    fn chmod(p: &Path, mode: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// A private directory with a listening socket in it, as the agent makes them.
    fn private() -> (tempfile::TempDir, std::path::PathBuf, UnixListener) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("credagent");
        std::fs::create_dir(&dir).unwrap();
        chmod(&dir, 0o700);
        let sock = dir.join("agent.sock");
        let l = UnixListener::bind(&sock).unwrap();
        chmod(&sock, 0o600);
        (tmp, sock, l)
    }

    fn refusal(sock: &Path) -> Failure {
        check_path(sock).expect_err("must be refused")
    }

    #[test]
    fn own_private_socket_passes_and_peer_is_us() {
        let (_tmp, sock, _l) = private();
        assert!(matches!(check_path(&sock).unwrap(), Presence::Socket));
        let s = UnixStream::connect(&sock).unwrap();
        check_peer(&s, &sock).unwrap();
    }

    #[test]
    fn missing_directory_or_socket_is_absent() {
        let tmp = tempfile::tempdir().unwrap();
        let sock = tmp.path().join("nope").join("agent.sock");
        assert!(matches!(check_path(&sock).unwrap(), Presence::Absent(_)));
        let sock = tmp.path().join("agent.sock");
        chmod(tmp.path(), 0o700);
        assert!(matches!(check_path(&sock).unwrap(), Presence::Absent(_)));
    }

    #[test]
    fn open_directory_is_refused_with_the_fix() {
        let (_tmp, sock, _l) = private();
        let dir = sock.parent().unwrap();
        for mode in [0o750, 0o705, 0o777, 0o701] {
            chmod(dir, mode);
            let f = refusal(&sock);
            assert_eq!(f.exit, Exit::Untrusted);
            assert!(
                f.message.contains(&format!("has mode {mode:04o}"))
                    && f.message.contains(&format!("chmod 700 {}", dir.display())),
                "{}",
                f.message
            );
        }
    }

    #[test]
    fn open_socket_is_refused_with_the_fix() {
        let (_tmp, sock, _l) = private();
        chmod(&sock, 0o666);
        let f = refusal(&sock);
        assert_eq!(f.exit, Exit::Untrusted);
        assert!(
            f.message.contains("mode 0666") && f.message.contains("chmod 600"),
            "{}",
            f.message
        );
    }

    #[test]
    fn symlinks_are_refused_not_followed() {
        // A symlink in place of the socket, pointing at a perfectly good socket.
        let (_tmp, real, _l) = private();
        let link = real.with_file_name("link.sock");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let f = refusal(&link);
        assert!(f.message.contains("is a symbolic link"), "{}", f.message);

        // A symlink in place of the directory, pointing at a private one.
        let tmp = tempfile::tempdir().unwrap();
        let dir_link = tmp.path().join("credagent");
        std::os::unix::fs::symlink(real.parent().unwrap(), &dir_link).unwrap();
        let f = refusal(&dir_link.join("agent.sock"));
        assert!(
            f.message.contains("socket directory") && f.message.contains("symbolic link"),
            "{}",
            f.message
        );
    }

    #[test]
    fn another_owner_is_refused() {
        // Only root can hand a file to another uid; as anyone else, the integration tests'
        // throwaway user (tests/it/client_trust.rs) covers this.
        let (_tmp, sock, _l) = private();
        let dir = sock.parent().unwrap().to_owned();
        let nobody = Some(nix::unistd::Uid::from_raw(65534));
        if nix::unistd::chown(&sock, nobody, None).is_err() {
            return;
        }
        let f = refusal(&sock);
        assert_eq!(f.exit, Exit::Untrusted);
        assert!(
            f.message.contains("is owned by uid 65534, not you") && f.message.contains("rm "),
            "{}",
            f.message
        );
        nix::unistd::chown(&dir, nobody, None).unwrap();
        let f = refusal(&sock);
        assert!(
            f.message.contains("socket directory")
                && f.message.contains("owned by uid 65534")
                && f.message.contains("CREDAGENT_SOCK"),
            "{}",
            f.message
        );
    }

    #[test]
    fn a_file_that_is_not_a_socket_is_no_agent() {
        let (_tmp, sock, l) = private();
        drop(l);
        std::fs::remove_file(&sock).unwrap();
        std::fs::write(&sock, b"").unwrap();
        chmod(&sock, 0o600);
        let f = refusal(&sock);
        assert_eq!(f.exit, Exit::NoAgent);
        assert!(f.message.contains("not a socket"), "{}", f.message);
    }

    #[test]
    fn bare_file_name_is_checked_in_the_current_directory() {
        assert_eq!(dir_of(Path::new("agent.sock")), Path::new("."));
        assert_eq!(dir_of(Path::new("/r/a.sock")), Path::new("/r"));
    }

    #[test]
    fn a_socket_path_in_a_system_directory_gets_no_advice_to_change_it() {
        // A typo'd --socket: nothing in /usr/bin or /tmp is credctl's to chmod or remove.
        for (path, dir) in [("/usr/bin/ls", "/usr/bin"), ("/tmp/x.sock", "/tmp")] {
            let Err(f) = check_path(Path::new(path)) else {
                continue; // a machine where the path happens to be fine for this user
            };
            assert!(
                !f.message.contains("chmod") && !f.message.contains("rm "),
                "{path}: {}",
                f.message
            );
            assert!(
                f.message.contains("probably wrong") && f.message.contains(dir),
                "{path}: {}",
                f.message
            );
        }
    }
}

//! The systemd notification protocol (`sd_notify`): tells the service manager when the agent is
//! ready and when it is stopping. Socket activation is refused (`listeners::refuse_activation`).

use std::ffi::OsStr;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Sends `state` (e.g. `"READY=1"`) to `$NOTIFY_SOCKET`, if set. Returns whether it was sent.
pub fn notify(state: &str) -> bool {
    notify_to(std::env::var_os("NOTIFY_SOCKET").as_deref(), state)
}

/// Sends `state` to the notification socket `socket` (as `$NOTIFY_SOCKET` spells it: a path, or
/// `@name` for an abstract socket; `None` when it is unset). Returns whether it was sent.
fn notify_to(socket: Option<&OsStr>, state: &str) -> bool {
    let Some(path) = socket else {
        return false;
    };
    let bytes = path.as_encoded_bytes();
    let addr = match bytes.first() {
        // An abstract socket: '@' stands for the leading NUL.
        Some(b'@') => SocketAddr::from_abstract_name(&bytes[1..]),
        Some(b'/') => SocketAddr::from_pathname(path),
        _ => return false,
    };
    let (Ok(addr), Ok(sock)) = (addr, UnixDatagram::unbound()) else {
        return false;
    };
    match sock.send_to_addr(state.as_bytes(), &addr) {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(error = %e, "sd_notify failed");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    // Through `notify_to`, not `$NOTIFY_SOCKET`: setting a variable for the whole test process
    // would race with every other test running in parallel.

    #[test]
    fn sends_to_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("notify");
        let rx = std::os::unix::net::UnixDatagram::bind(&p).unwrap();
        assert!(super::notify_to(Some(p.as_os_str()), "READY=1"));
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }

    #[test]
    fn sends_to_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("credagent-test-notify-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let rx = std::os::unix::net::UnixDatagram::bind_addr(&addr).unwrap();
        assert!(super::notify_to(
            Some(format!("@{name}").as_ref()),
            "STOPPING=1"
        ));
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
    }

    #[test]
    fn nothing_is_sent_without_a_usable_socket() {
        let dir = tempfile::tempdir().unwrap();
        // No $NOTIFY_SOCKET, neither a path nor an abstract name, a path nobody listens on.
        assert!(!super::notify_to(None, "READY=1"));
        assert!(!super::notify_to(
            Some("relative/notify".as_ref()),
            "READY=1"
        ));
        assert!(!super::notify_to(
            Some(dir.path().join("absent").as_os_str()),
            "READY=1"
        ));
    }
}

//! The systemd notification protocol (`sd_notify`): tells the service manager when the agent is
//! ready and when it is stopping. Socket activation itself lives in `listeners`.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Sends `state` (e.g. `"READY=1"`) to `$NOTIFY_SOCKET`, if set. Returns whether it was sent.
pub fn notify(state: &str) -> bool {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return false;
    };
    let bytes = path.as_encoded_bytes();
    let addr = match bytes.first() {
        // An abstract socket: '@' stands for the leading NUL.
        Some(b'@') => SocketAddr::from_abstract_name(&bytes[1..]),
        Some(b'/') => SocketAddr::from_pathname(&path),
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
    #[test]
    fn sends_to_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("notify");
        let rx = std::os::unix::net::UnixDatagram::bind(&p).unwrap();
        std::env::set_var("NOTIFY_SOCKET", &p);
        assert!(super::notify("READY=1"));
        std::env::remove_var("NOTIFY_SOCKET");
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        assert!(!super::notify("READY=1"));
    }
}

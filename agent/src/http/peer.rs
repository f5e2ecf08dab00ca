//! Who is on the other end of a loopback TCP connection: the owning uid (and inode) of the peer
//! socket, asked of the kernel with one `NETLINK_SOCK_DIAG` exact lookup per connection.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const INET_DIAG_NOCOOKIE: u32 = !0;

/// The owner of the peer socket of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerSocket {
    pub uid: u32,
    /// The socket inode: `/proc/PID/fd/*` links named `socket:[INODE]` belong to the peer process.
    pub inode: u32,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct NlMsgHdr {
    len: u32,
    kind: u16,
    flags: u16,
    seq: u32,
    pid: u32,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct InetDiagSockId {
    sport: [u8; 2],
    dport: [u8; 2],
    src: [u8; 16],
    dst: [u8; 16],
    interface: u32,
    cookie: [u32; 2],
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct InetDiagReqV2 {
    family: u8,
    protocol: u8,
    ext: u8,
    pad: u8,
    states: u32,
    id: InetDiagSockId,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Request {
    hdr: NlMsgHdr,
    req: InetDiagReqV2,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct InetDiagMsg {
    family: u8,
    state: u8,
    timer: u8,
    retrans: u8,
    id: InetDiagSockId,
    expires: u32,
    rqueue: u32,
    wqueue: u32,
    uid: u32,
    inode: u32,
}

fn fill_addr(addr: &SocketAddr, port: &mut [u8; 2], ip: &mut [u8; 16]) {
    *port = addr.port().to_be_bytes();
    match addr {
        SocketAddr::V4(a) => ip[..4].copy_from_slice(&a.ip().octets()),
        SocketAddr::V6(a) => ip.copy_from_slice(&a.ip().octets()),
    }
}

/// Finds the socket whose local address is `peer` and whose remote address is `local`: the
/// other end of our accepted connection. Fails closed: any error means "unknown peer".
pub fn lookup(local: SocketAddr, peer: SocketAddr) -> io::Result<PeerSocket> {
    let family = match peer {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    let mut id = InetDiagSockId {
        cookie: [INET_DIAG_NOCOOKIE; 2],
        ..Default::default()
    };
    fill_addr(&peer, &mut id.sport, &mut id.src);
    fill_addr(&local, &mut id.dport, &mut id.dst);
    let req = Request {
        hdr: NlMsgHdr {
            len: std::mem::size_of::<Request>() as u32,
            kind: SOCK_DIAG_BY_FAMILY,
            flags: NLM_F_REQUEST,
            seq: next_seq(),
            pid: 0,
        },
        req: InetDiagReqV2 {
            family: family as u8,
            protocol: libc::IPPROTO_TCP as u8,
            ext: 0,
            pad: 0,
            states: !0,
            id,
        },
    };
    // One netlink socket per thread, reused: creating and closing one per connection cost more
    // than the lookup itself. A socket that errs is dropped and the next call opens a new one.
    thread_local! {
        static SOCK: std::cell::RefCell<Option<OwnedFd>> = const { std::cell::RefCell::new(None) };
    }
    SOCK.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(open_socket()?);
        }
        let result = match slot.as_ref() {
            Some(sock) => exchange(sock, &req),
            None => Err(io::Error::other("no netlink socket")),
        };
        if result
            .as_ref()
            .is_err_and(|e| e.kind() != io::ErrorKind::NotFound)
        {
            *slot = None;
        }
        result
    })
}

/// A sequence number per request, so a reply can be matched to the request it answers.
fn next_seq() -> u32 {
    static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
    SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

fn open_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the result is checked before it is wrapped.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sends one request and reads its one reply on `sock`.
fn exchange(sock: &OwnedFd, req: &Request) -> io::Result<PeerSocket> {
    // SAFETY: `req` is a repr(C) value that lives across the call; we pass its exact size.
    let sent = unsafe {
        libc::send(
            sock.as_raw_fd(),
            (req as *const Request).cast(),
            std::mem::size_of::<Request>(),
            0,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    // A reused socket could hold a stale reply (an earlier exchange that failed half-way): only
    // a reply carrying this request's sequence number and naming this very socket counts.
    for _ in 0..8 {
        let mut buf = [0u8; 1024];
        // SAFETY: buf is writable for its full length, which is what we pass.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let (seq, reply) = parse_reply(&buf[..n as usize]);
        if seq != req.hdr.seq {
            continue;
        }
        let (peer, id) = reply?;
        if id.sport != req.req.id.sport || id.dport != req.req.id.dport || id.src != req.req.id.src
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "netlink reply names another socket",
            ));
        }
        return Ok(peer);
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        "no matching netlink reply",
    ))
}

/// Parses one reply: its sequence number, and the peer it names (with the socket id) or the
/// kernel's error.
fn parse_reply(buf: &[u8]) -> (u32, io::Result<(PeerSocket, InetDiagSockId)>) {
    let hdr_len = std::mem::size_of::<NlMsgHdr>();
    if buf.len() < hdr_len {
        return (
            0,
            Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "short netlink reply",
            )),
        );
    }
    // SAFETY: buf holds at least size_of::<NlMsgHdr>() bytes; read_unaligned has no alignment
    // requirement and NlMsgHdr is plain integers, valid for any bit pattern.
    let hdr: NlMsgHdr = unsafe { std::ptr::read_unaligned(buf.as_ptr().cast()) };
    (hdr.seq, parse_body(&hdr, buf))
}

fn parse_body(hdr: &NlMsgHdr, buf: &[u8]) -> io::Result<(PeerSocket, InetDiagSockId)> {
    let hdr_len = std::mem::size_of::<NlMsgHdr>();
    if hdr.kind == NLMSG_ERROR {
        let errno = buf
            .get(hdr_len..hdr_len + 4)
            .and_then(|b| b.try_into().ok())
            .map(i32::from_ne_bytes)
            .unwrap_or(-libc::EIO);
        return Err(io::Error::from_raw_os_error(
            errno.checked_neg().unwrap_or(libc::EIO),
        ));
    }
    if hdr.kind != SOCK_DIAG_BY_FAMILY || buf.len() < hdr_len + std::mem::size_of::<InetDiagMsg>() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "unexpected netlink reply",
        ));
    }
    // SAFETY: the length was checked above; InetDiagMsg is plain integers, valid for any bits.
    let msg: InetDiagMsg = unsafe { std::ptr::read_unaligned(buf[hdr_len..].as_ptr().cast()) };
    Ok((
        PeerSocket {
            uid: msg.uid,
            inode: msg.inode,
        },
        msg.id,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn finds_our_own_uid_for_a_loopback_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, peer) = listener.accept().unwrap();
        let found = lookup(server.local_addr().unwrap(), peer).unwrap();
        assert_eq!(found.uid, nix::unistd::getuid().as_raw());
        assert_ne!(found.inode, 0);
        drop(client);
    }

    #[test]
    fn unknown_connection_is_an_error() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let local = listener.local_addr().unwrap();
        // No such connection exists: the kernel answers ENOENT, and we fail closed.
        assert!(lookup(local, "127.0.0.1:1".parse().unwrap()).is_err());
    }

    #[test]
    fn a_reused_socket_keeps_answering_each_connection_correctly() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let local = listener.local_addr().unwrap();
        let mut seen = std::collections::HashSet::new();
        for i in 0..50 {
            let client = TcpStream::connect(local).unwrap();
            let (server, peer) = listener.accept().unwrap();
            if i % 7 == 0 {
                assert!(lookup(local, "127.0.0.1:1".parse().unwrap()).is_err());
            }
            let found = lookup(server.local_addr().unwrap(), peer).unwrap();
            assert_eq!(found.uid, nix::unistd::getuid().as_raw());
            assert!(
                seen.insert(found.inode),
                "each connection has its own socket"
            );
            drop(client);
        }
    }
}

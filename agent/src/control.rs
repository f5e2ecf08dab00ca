//! The control socket server: accepts `credctl` connections from our own uid only, speaks the
//! framed protocol from `credagent-proto`, and dispatches each request to a handler.

use std::sync::Arc;
use std::time::Duration;

use credagent_proto::{
    decode_body, encode_frame, frame_len, ErrorCode, FrameError, Request, Response, HEADER_LEN,
    PROTOCOL_VERSION,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::core::{Conn, Core};

/// Most control connections served at once; more wait in the kernel backlog.
const MAX_CONNECTIONS: usize = 64;
/// A connection that sends nothing for this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Accepts control connections until `shutdown` is cancelled.
pub async fn serve(
    listener: UnixListener,
    core: Arc<Core>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let me = nix::unistd::getuid().as_raw();
    let mut next_id: u64 = 0;
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => return,
            p = limit.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let stream = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "control accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let pid = match stream.peer_cred() {
            Ok(cred) if cred.uid() == me => cred.pid().unwrap_or(0),
            Ok(cred) => {
                tracing::warn!(
                    peer_uid = cred.uid(),
                    peer_pid = cred.pid(),
                    "refused control connection from another user"
                );
                if let Some(ep) = core.endpoint.get() {
                    ep.audit.record(
                        std::time::SystemTime::now(),
                        crate::audit::Event {
                            channel: "control",
                            role: None,
                            token_id: None,
                            origin: crate::audit::Origin::Unix {
                                uid: cred.uid(),
                                pid: cred.pid().unwrap_or(0),
                            },
                            outcome: crate::audit::Outcome::Refused,
                            reason: Some("other_user"),
                        },
                    );
                }
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "refused control connection: cannot read peer credentials");
                continue;
            }
        };
        next_id += 1;
        let conn = Conn {
            id: next_id,
            uid: me,
            pid,
            scoped_tokens: Vec::new(),
        };
        let core = core.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            handle_connection(stream, core, conn, shutdown).await;
            drop(permit);
        });
    }
}

/// What reading one request produced.
enum Incoming {
    Request(Request),
    /// A protocol violation to answer; `fatal` closes the connection after the answer.
    Bad {
        code: ErrorCode,
        message: String,
        fatal: bool,
    },
    /// The peer went away, or the transport failed: nothing to answer.
    Gone,
}

async fn read_request(stream: &mut UnixStream) -> Incoming {
    let mut header = [0u8; HEADER_LEN];
    match tokio::time::timeout(IDLE_TIMEOUT, stream.read_exact(&mut header)).await {
        Ok(Ok(_)) => {}
        Ok(Err(_)) | Err(_) => return Incoming::Gone,
    }
    let len = match frame_len(header) {
        Ok(len) => len,
        Err(e) => {
            return Incoming::Bad {
                code: ErrorCode::FrameTooLarge,
                message: e.to_string(),
                fatal: true,
            }
        }
    };
    let mut body = vec![0u8; len];
    match tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut body)).await {
        Ok(Ok(_)) => {}
        Ok(Err(_)) | Err(_) => return Incoming::Gone,
    }
    match decode_body::<Request>(&body) {
        Ok(req) => Incoming::Request(req),
        Err(FrameError::Malformed(e)) => Incoming::Bad {
            code: ErrorCode::BadRequest,
            message: format!("malformed request: {e}"),
            fatal: false,
        },
        Err(e) => Incoming::Bad {
            code: ErrorCode::BadRequest,
            message: e.to_string(),
            fatal: true,
        },
    }
}

async fn send(stream: &mut UnixStream, resp: &Response) -> bool {
    let frame = match encode_frame(resp) {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(error = %e, "cannot encode a control response");
            match encode_frame(&Response::error(ErrorCode::Internal, "response too large")) {
                Ok(f) => f,
                Err(_) => return false,
            }
        }
    };
    stream.write_all(&frame).await.is_ok()
}

async fn handle_connection(
    mut stream: UnixStream,
    core: Arc<Core>,
    mut conn: Conn,
    shutdown: CancellationToken,
) {
    serve_requests(&mut stream, &core, &mut conn, &shutdown).await;
    // Whatever the connection held dies with it: `credctl exec` tokens, ceremonies it led.
    for id in conn.scoped_tokens.drain(..) {
        core.tokens.revoke(id);
    }
    core.gate.abandon_conn(conn.id);
}

async fn serve_requests(
    stream: &mut UnixStream,
    core: &Arc<Core>,
    conn: &mut Conn,
    shutdown: &CancellationToken,
) {
    let mut greeted = false;
    loop {
        let incoming = tokio::select! {
            _ = shutdown.cancelled() => return,
            i = read_request(stream) => i,
        };
        let req = match incoming {
            Incoming::Request(r) => r,
            Incoming::Gone => return,
            Incoming::Bad {
                code,
                message,
                fatal,
            } => {
                tracing::debug!(%code, %message, "bad control frame");
                if !send(stream, &Response::error(code, message)).await || fatal {
                    return;
                }
                continue;
            }
        };
        if !greeted {
            let resp = hello(&req);
            let ok = matches!(resp, Response::Hello { .. });
            if !send(stream, &resp).await || !ok {
                return;
            }
            greeted = true;
            continue;
        }
        // A request may wait (a touch, STS); the client going away or shutdown cancels it.
        let (resp, then_stop) = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = hung_up(stream) => return,
            r = core.handle(req, conn) => r,
        };
        if !send(stream, &resp).await {
            return;
        }
        if then_stop {
            tracing::info!("stop requested over the control socket");
            shutdown.cancel();
            return;
        }
    }
}

/// Resolves when the peer closes its end while we are busy with its request (requests are
/// answered in order, so a well-behaved client sends nothing meanwhile). Data arriving early is
/// left in place for the next read; then this never resolves.
async fn hung_up(stream: &UnixStream) {
    use std::os::fd::AsRawFd;
    use tokio::io::Interest;
    loop {
        if stream.readable().await.is_err() {
            return;
        }
        let mut byte = [0u8; 1];
        let peeked = stream.try_io(Interest::READABLE, || {
            // SAFETY: recv(2) with MSG_PEEK into a 1-byte buffer we own; the fd is open for the
            // life of `stream`.
            let n = unsafe {
                libc::recv(
                    stream.as_raw_fd(),
                    byte.as_mut_ptr().cast(),
                    1,
                    libc::MSG_PEEK,
                )
            };
            if n < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(n)
            }
        });
        match peeked {
            Ok(0) => return,
            Ok(_) => std::future::pending::<()>().await,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => return,
        }
    }
}

/// Answers the first request of a connection, which must be a matching `Hello`.
pub fn hello(req: &Request) -> Response {
    match req {
        Request::Hello {
            protocol_version,
            client_version,
        } if *protocol_version == PROTOCOL_VERSION => {
            tracing::debug!(%client_version, "control client connected");
            Response::Hello {
                protocol_version: PROTOCOL_VERSION,
                agent_version: env!("CARGO_PKG_VERSION").into(),
                pid: std::process::id(),
            }
        }
        Request::Hello {
            protocol_version,
            client_version,
        } => Response::error(
            ErrorCode::VersionMismatch,
            format!(
                "credctl {client_version} speaks control protocol {protocol_version}, but this \
                 agent ({}) speaks {PROTOCOL_VERSION}: restart the agent with `credctl stop` then \
                 `eval \"$(credctl start)\"`",
                env!("CARGO_PKG_VERSION")
            ),
        ),
        _ => Response::error(ErrorCode::HelloRequired, "the first request must be hello"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_checks_the_version() {
        let ok = hello(&Request::Hello {
            protocol_version: PROTOCOL_VERSION,
            client_version: "t".into(),
        });
        assert!(matches!(
            ok,
            Response::Hello {
                protocol_version: PROTOCOL_VERSION,
                ..
            }
        ));
        let bad = hello(&Request::Hello {
            protocol_version: PROTOCOL_VERSION + 1,
            client_version: "t".into(),
        });
        match bad {
            Response::Error {
                code: ErrorCode::VersionMismatch,
                message,
            } => {
                assert!(message.contains("restart the agent"), "{message}")
            }
            other => panic!("expected version mismatch, got {other:?}"),
        }
        assert!(matches!(
            hello(&Request::Status),
            Response::Error {
                code: ErrorCode::HelloRequired,
                ..
            }
        ));
    }
}

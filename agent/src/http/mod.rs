//! The loopback HTTP listener that AWS SDKs call. It owns the connection-level defences (peer
//! uid, connection limit) and hands each admitted connection to its service; `checks` holds the
//! request-level defences, `endpoint` the routes, `approve_page` the browser approval page.

pub mod approve_page;
pub mod checks;
pub mod endpoint;
pub mod oauth;
pub mod pages;
pub mod peer;
mod service;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use checks::{check_request, error_response, HttpContext};
pub use service::ConnService;

use crate::audit::Origin;
use endpoint::Endpoint;
use service::serve_connection;

/// Log lines for refused connections of other users: at most one per 10 s (every refusal is
/// still in the audit, whose writer merges repeats).
static OTHER_USER_LOG: crate::util::Throttle = crate::util::Throttle::new(Duration::from_secs(10));

/// Connections served at once. High, because idle keep-alive connections from many SDK clients
/// are normal; each costs a few KiB. Past it, new connections wait in the backlog.
const MAX_CONNECTIONS: usize = 4096;

/// Accepts HTTP connections until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    ep: Arc<Endpoint>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    // Leave descriptors for the control socket, the keyring, STS and the audit log.
    let max = MAX_CONNECTIONS
        .min(crate::harden::nofile_limit().saturating_sub(256) as usize)
        .max(64);
    let limit = Arc::new(Semaphore::new(max));
    let me = nix::unistd::getuid().as_raw();
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => return,
            p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
        };
        let (stream, remote) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(error = %e, "http accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let ep = ep.clone();
        let shutdown = shutdown.clone();
        // The peer check runs in the connection's own task, so both workers share the
        // lookups while the accept loop only accepts; nothing is read from the connection
        // before it passes.
        tracker.spawn(async move {
            if let Some(origin) = admit(&stream, remote, me, &ep) {
                let _ = stream.set_nodelay(true);
                serve_connection(stream, ep, origin, shutdown).await;
            }
            drop(permit);
        });
    }
}

/// The peer check: the connection's origin if its owner is `me`; otherwise `None`, logged
/// and audited.
fn admit(
    stream: &tokio::net::TcpStream,
    remote: SocketAddr,
    me: u32,
    ep: &Endpoint,
) -> Option<Origin> {
    let local = stream.local_addr().ok()?;
    match peer::lookup(local, remote) {
        Ok(p) if p.uid == me => Some(Origin::Tcp {
            uid: p.uid,
            inode: p.inode,
        }),
        Ok(p) => {
            if let Some(held) = OTHER_USER_LOG.allow() {
                tracing::warn!(
                    peer_uid = p.uid,
                    %remote,
                    similar_held_back = held,
                    "refused http connection from another user"
                );
            }
            ep.audit.record(
                SystemTime::now(),
                crate::audit::Event {
                    channel: "http",
                    role: None,
                    token_id: None,
                    origin: Origin::Tcp {
                        uid: p.uid,
                        inode: p.inode,
                    },
                    outcome: crate::audit::Outcome::Refused,
                    reason: Some("other_user"),
                    subject: None,
                    exe: None,
                },
            );
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, %remote, "refused http connection: peer unknown");
            None
        }
    }
}

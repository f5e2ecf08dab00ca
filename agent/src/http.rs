//! The loopback HTTP listener that AWS SDKs call. This module owns the connection-level defences
//! (peer uid, connection limit, header limits and timeouts) and the request-level ones (`Host`
//! pinning against DNS rebinding, refusal of browser requests); routes are added by the endpoint
//! handlers.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::audit::{ConnAudit, Origin};
use crate::endpoint::{Endpoint, Memo};
use crate::peer;

/// Connections served at once. High, because idle keep-alive connections from many SDK clients
/// are normal; each costs a few KiB. Past it, new connections wait in the backlog.
const MAX_CONNECTIONS: usize = 4096;
/// Time a client gets to send a request's headers (a connection with no new request for this
/// long, idle keep-alive or trickling its headers, is closed within one more tick).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// The period of each connection's housekeeping tick.
const TICK: Duration = Duration::from_secs(1);
/// Upper bound on buffered request bytes (headers included).
const MAX_BUF: usize = 16 * 1024;

/// Everything a request handler needs to know about the listener.
pub struct HttpContext {
    pub addr: SocketAddr,
    /// The `Host` values we accept (`127.0.0.1:PORT`, `localhost:PORT`, `[::1]:PORT`).
    allowed_hosts: [String; 3],
}

impl HttpContext {
    pub fn new(addr: SocketAddr) -> Self {
        let port = addr.port();
        HttpContext {
            addr,
            allowed_hosts: [
                format!("127.0.0.1:{port}"),
                format!("localhost:{port}"),
                format!("[::1]:{port}"),
            ],
        }
    }

    /// Whether `host` names this endpoint (case-insensitive, exact port).
    pub fn host_allowed(&self, host: &str) -> bool {
        self.allowed_hosts
            .iter()
            .any(|h| h.eq_ignore_ascii_case(host))
    }
}

/// A JSON error body that every SDK can read: both `code`/`message` and `Code`/`Message`.
pub fn error_response(status: StatusCode, code: &str, message: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({
        "code": code, "message": message, "Code": code, "Message": message,
    });
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// Request-level checks shared by every route. Returns the refusal, if any.
pub fn check_request<B>(ctx: &HttpContext, req: &Request<B>) -> Option<Response<Full<Bytes>>> {
    let host = req
        .headers()
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok());
    match host {
        Some(h) if ctx.host_allowed(h) => {}
        _ => {
            return Some(error_response(
                StatusCode::FORBIDDEN,
                "bad_host",
                "the Host header must be 127.0.0.1, localhost or [::1] with this agent's port",
            ))
        }
    }
    let browserish = req.headers().keys().any(|k| {
        let k = k.as_str();
        k == "origin" || k == "referer" || k.starts_with("sec-fetch-")
    });
    if browserish {
        return Some(error_response(
            StatusCode::FORBIDDEN,
            "browser_request",
            "credentials are never served to web pages",
        ));
    }
    None
}

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
            tracing::warn!(peer_uid = p.uid, %remote, "refused http connection from another user");
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

/// What a connection's service and its task share.
struct ConnState {
    audit: ConnAudit,
    /// The connection's memo of its last credential answer. Locked by the request being
    /// answered, and once a second by the connection's tick, so never contended.
    memo: Mutex<Memo>,
    /// Moves whenever a request head arrives or an approval answer leaves. The tick counts the
    /// seconds it stood still: no clock read per request, and immune to wall-clock steps.
    activity: AtomicU64,
    /// Approval-page requests being answered right now (they may take a while).
    busy: AtomicU32,
}

impl ConnState {
    fn mark(&self) {
        self.activity.fetch_add(1, Ordering::Relaxed);
    }
}

/// One connection's HTTP service. Every route but the approval page is answered synchronously
/// from memory (a ready future, no task state per request); the approval page reads a body and
/// waits on the gate, so it gets a boxed future.
pub struct ConnService {
    ep: Arc<Endpoint>,
    state: Arc<ConnState>,
    origin: Origin,
}

impl ConnService {
    pub fn new(ep: Arc<Endpoint>, origin: Origin) -> ConnService {
        let state = Arc::new(ConnState {
            audit: ConnAudit::new(ep.audit.clone()),
            memo: Mutex::new(Memo::default()),
            activity: AtomicU64::new(0),
            busy: AtomicU32::new(0),
        });
        ConnService { ep, state, origin }
    }
}

type BoxedResponse = Pin<Box<dyn Future<Output = Response<Full<Bytes>>> + Send>>;

/// The future a [`ConnService`] call returns.
pub enum Answer {
    Ready(Option<Response<Full<Bytes>>>),
    Pending(BoxedResponse),
}

impl Future for Answer {
    type Output = Result<Response<Full<Bytes>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Answer::Ready(resp) => Poll::Ready(Ok(resp.take().unwrap_or_else(|| {
                error_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "answer polled twice",
                )
            }))),
            Answer::Pending(fut) => fut.as_mut().poll(cx).map(Ok),
        }
    }
}

impl hyper::service::Service<Request<Incoming>> for ConnService {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Answer;

    fn call(&self, req: Request<Incoming>) -> Answer {
        // One clock read per request, for the audit and the memo.
        let now = SystemTime::now();
        self.state.mark();
        if let Some(page) = self.ep.approval_page_for(req.uri().path()) {
            let page = page.clone();
            let state = self.state.clone();
            state.busy.fetch_add(1, Ordering::Relaxed);
            return Answer::Pending(Box::pin(async move {
                let resp = page.handle(req, now).await;
                state.mark();
                state.busy.fetch_sub(1, Ordering::Relaxed);
                resp
            }));
        }
        let mut memo = self.state.memo.lock().unwrap_or_else(|p| p.into_inner());
        let resp = self
            .ep
            .handle(&req, self.origin, now, &self.state.audit, &mut memo);
        Answer::Ready(Some(resp))
    }
}

/// Serves one connection. Instead of hyper's header-read timer (re-armed on every request of a
/// keep-alive connection), one coarse tick per second closes a connection that has had no request
/// for `HEADER_READ_TIMEOUT` (idle keep-alive, or a client trickling its headers), flushes the
/// connection's audit counts and drops a memo that went stale.
async fn serve_connection(
    stream: tokio::net::TcpStream,
    ep: Arc<Endpoint>,
    origin: Origin,
    shutdown: CancellationToken,
) {
    let generation = ep.generation.clone();
    let service = ConnService::new(ep, origin);
    let state = service.state.clone();
    let conn = hyper::server::conn::http1::Builder::new()
        .max_buf_size(MAX_BUF)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let cancelled = shutdown.cancelled();
    tokio::pin!(cancelled);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + TICK, TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    // Activity seen at the last tick, and how long it has stood still since.
    let mut seen = 0;
    let mut quiet = Duration::ZERO;
    loop {
        tokio::select! {
            biased;
            _ = conn.as_mut() => break,
            _ = &mut cancelled => {
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(Duration::from_secs(2), conn.as_mut()).await;
                break;
            }
            _ = tick.tick() => {
                let now = SystemTime::now();
                state.audit.flush();
                state
                    .memo
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .forget_stale(now, generation.current());
                let activity = state.activity.load(Ordering::Relaxed);
                if activity != seen || state.busy.load(Ordering::Relaxed) > 0 {
                    seen = activity;
                    quiet = Duration::ZERO;
                } else {
                    quiet += TICK;
                }
                if quiet > HEADER_READ_TIMEOUT {
                    // Still open a tick after the polite close: hyper keeps a connection whose
                    // request head is half read (a trickling client). Drop it.
                    break;
                }
                if quiet >= HEADER_READ_TIMEOUT {
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().uri("/creds");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn host_must_name_this_port() {
        let ctx = HttpContext::new("127.0.0.1:4321".parse().unwrap());
        for ok in [
            "127.0.0.1:4321",
            "localhost:4321",
            "LOCALHOST:4321",
            "[::1]:4321",
        ] {
            assert!(check_request(&ctx, &req(&[("host", ok)])).is_none(), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:4321",
            "127.0.0.1",
            "127.0.0.1:1",
            "localhost",
        ] {
            let r = check_request(&ctx, &req(&[("host", bad)])).unwrap();
            assert_eq!(r.status(), StatusCode::FORBIDDEN, "{bad}");
        }
        assert!(check_request(&ctx, &req(&[])).is_some());
    }

    #[test]
    fn browser_requests_are_refused() {
        let ctx = HttpContext::new("127.0.0.1:4321".parse().unwrap());
        for h in ["origin", "referer", "sec-fetch-mode", "sec-fetch-site"] {
            let r = check_request(&ctx, &req(&[("host", "127.0.0.1:4321"), (h, "x")])).unwrap();
            assert_eq!(r.status(), StatusCode::FORBIDDEN, "{h}");
        }
    }

    #[test]
    fn errors_carry_both_cases() {
        let r = error_response(StatusCode::FORBIDDEN, "c", "m");
        assert_eq!(r.headers()[CONTENT_TYPE], "application/json");
    }
}

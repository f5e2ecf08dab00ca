//! One connection's HTTP service and its housekeeping: every route but the approval page is
//! answered synchronously from memory; a coarse tick closes idle connections, flushes the
//! connection's audit counts and drops a stale memo.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio_util::sync::CancellationToken;

use super::checks::error_response;
use super::endpoint::{Endpoint, Memo};
use crate::audit::{ConnAudit, Origin};
use crate::util::LockExt;

/// Time a client gets to send a request's headers (a connection with no new request for this
/// long, idle keep-alive or trickling its headers, is closed within one more tick).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// The period of each connection's housekeeping tick.
const TICK: Duration = Duration::from_secs(1);
/// Upper bound on buffered request bytes (headers included).
const MAX_BUF: usize = 16 * 1024;

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
/// waits for the touch it answers, so it gets a boxed future.
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
            if let Some(refusal) =
                self.ep
                    .screen_page_request(&req, self.origin, now, &self.state.audit)
            {
                return Answer::Ready(Some(refusal));
            }
            let page = page.clone();
            let origin = self.origin;
            let state = self.state.clone();
            state.busy.fetch_add(1, Ordering::Relaxed);
            return Answer::Pending(Box::pin(async move {
                let resp = page.handle(req, origin, now).await;
                state.mark();
                state.busy.fetch_sub(1, Ordering::Relaxed);
                resp
            }));
        }
        let mut memo = self.state.memo.locked();
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
pub(super) async fn serve_connection(
    stream: tokio::net::TcpStream,
    ep: Arc<Endpoint>,
    origin: Origin,
    shutdown: CancellationToken,
) {
    let generation = ep.generation.clone();
    let endpoint = ep.clone();
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
                    .locked()
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
    // The socket's descriptor in a bound token's client is free again: the client's next
    // connection will most likely take it.
    let bound = state.memo.locked().take_bound();
    if let Some((holder, client, fd)) = bound {
        endpoint.hints.closed(holder, client, fd);
    }
}

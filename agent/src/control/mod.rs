//! The control socket: accepts `credctl` connections from our own uid only, speaks the framed
//! protocol from `credagent-proto`, and answers each request in one match (`Control::handle`),
//! whose arms call the core directly or a handler in the file of its family (`hello`, `keys`,
//! `sources`, `sessions`, `tokens`, `sso`, `status`). `reply` turns the core's own types into
//! replies.

mod hello;
mod keys;
pub(crate) mod reply;
mod sessions;
mod sources;
mod sso;
mod status;
mod tokens;

use std::sync::Arc;
use std::time::Duration;

use credagent_proto::{
    decode_body, encode_frame, encode_message, frame_len, timeouts::CONTROL_IDLE, ErrorCode,
    FrameError, Request, Response, HEADER_LEN,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::approval::{Approvals, PendingApprovals, Requester};
use crate::audit::{Audit, Event, Origin, Outcome, Peer};
use crate::http::endpoint::Endpoint;
use crate::profiles::AwsConfigFile;
use crate::sessions::Sessions;
use crate::sources::SourceStore;
use crate::state::AgentState;
use crate::tokens::{TokenId, Tokens};

pub use hello::hello;

// The core states the figures and names it shares with `credctl`; the protocol states them for
// the client. They must agree, and the build fails if they do not.
const _: () = {
    use credagent_proto::timeouts;
    assert!(crate::approval::CEREMONY_TTL.as_millis() == timeouts::CEREMONY_TTL.as_millis());
    assert!(crate::approval::OUTCOME_WAIT.as_millis() == timeouts::OUTCOME_WAIT.as_millis());
    assert!(same_str(
        crate::approval::PRF_WITHOUT_UV,
        credagent_proto::PRF_WITHOUT_UV
    ));
};

const fn same_str(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Most control connections served at once; more wait in the kernel backlog. A connection that
/// holds `exec` tokens gives its place back (it may live for hours); those are bounded by the
/// cap on live tokens instead.
const MAX_CONNECTIONS: usize = 64;

/// What the control requests reach: the parts they use, shared with the tasks that use them
/// too (the endpoint, the refreshers). `lock` and `stop` go to the [`Agent`].
pub struct Control {
    pub agent: Arc<crate::agent::Agent>,
    pub facts: AgentState,
    pub approvals: Arc<Approvals>,
    pub pending: Arc<PendingApprovals>,
    pub sessions: Sessions,
    pub tokens: Arc<Tokens>,
    pub sources: Arc<SourceStore>,
    /// IAM Identity Center logins.
    pub logins: Arc<crate::sso::Logins>,
    /// Console sign-in links.
    pub consoles: Arc<crate::console::Consoles>,
    /// For the IMDS role and for wiping rendered bodies on lock.
    pub endpoint: Arc<Endpoint>,
    pub audit: Audit,
    pub aws_config: AwsConfigFile,
    /// What `config.toml` configures, and `credctl reload`.
    pub live: Arc<crate::reload::Live>,
}

/// Log lines for refused connections of other users: at most one per 10 s (every refusal is
/// still in the audit).
static OTHER_USER_LOG: crate::util::Throttle = crate::util::Throttle::new(Duration::from_secs(10));

/// The idle timeout of control connections: `CONTROL_IDLE`, or `CREDAGENT_CONTROL_IDLE` (a
/// humantime duration) so tests can show, in seconds, that a connection holding `exec` tokens
/// is never closed for idleness whatever the limit.
fn control_idle() -> Duration {
    std::env::var("CREDAGENT_CONTROL_IDLE")
        .ok()
        .and_then(|v| humantime::parse_duration(&v).ok())
        .filter(|d| !d.is_zero())
        .unwrap_or(CONTROL_IDLE)
}

/// How long connection `conn` may stay silent: a connection holding `exec` tokens lives as long
/// as its command, however long.
fn idle_limit(conn: &Conn, idle: Duration) -> Option<Duration> {
    conn.scoped_tokens.is_empty().then_some(idle)
}

/// One control connection's identity and the things that die with it.
pub struct Conn {
    pub id: u64,
    pub uid: u32,
    pub pid: i32,
    /// Tokens revoked when the connection closes (`credctl exec`).
    pub scoped_tokens: Vec<TokenId>,
    /// The jobs this connection runs (`credctl exec`): their roles' sessions outlive a screen
    /// lock and the idle timeout for them until the connection closes.
    pub leases: Vec<crate::sessions::Lease>,
    /// This connection's place among `MAX_CONNECTIONS`, given back once it holds `exec` tokens.
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    /// The peer's executable, named when it connected (it may be gone when the audit is
    /// written).
    exe: Option<Arc<str>>,
    /// The IAM Identity Center logins this connection started or joined: released when it
    /// closes, which cancels a login nobody else waits for (Ctrl-C on `credctl login`).
    pub login_holds: Vec<crate::sso::LoginHold>,
}

impl Conn {
    pub(crate) fn origin(&self) -> Origin {
        Origin::Unix {
            uid: self.uid,
            pid: self.pid,
        }
    }

    /// The connection as the audit names it.
    pub(crate) fn peer(&self) -> Peer {
        Peer {
            origin: self.origin(),
            exe: self.exe.clone(),
        }
    }

    /// The connection as a ceremony requester, named for the approval page.
    fn requester(&self) -> Requester {
        Requester {
            conn: self.id,
            description: format!(
                "pid {} ({})",
                self.pid,
                self.exe.as_deref().unwrap_or("unknown")
            ),
            who: Some(self.peer()),
        }
    }
}

impl Control {
    /// Answers one control request after the handshake. The flag asks for shutdown.
    pub async fn handle(&self, req: Request, conn: &mut Conn) -> (Response, bool) {
        let now = std::time::SystemTime::now();
        let resp = match req {
            Request::Hello { .. } => hello(&req),
            Request::Stop => {
                self.audit(now, Event::action("stop", &conn.peer(), None));
                return (Response::Stopping, true);
            }
            Request::Unknown => Response::error(
                ErrorCode::UnknownRequest,
                "this agent does not know that request: update and restart the agent",
            ),
            // The agent: status, lock, pending approvals, reload.
            Request::Status => {
                let pending = self.pending_list(now).await;
                Response::Status(Box::new(self.status(now, pending)))
            }
            Request::Lock => self.lock_request(conn, now),
            Request::Pending => Response::Pending {
                pending: self.pending_list(now).await,
            },
            Request::Reload => self.reload_request(conn, now).await,
            Request::Prompt { token } => self.prompt(&token, now),
            // Keys and the touches that change them.
            Request::KeyAddStart {
                name,
                accept_change,
            } => self
                .approvals
                .key_add_start(&name, accept_change, &conn.requester(), now)
                .await
                .into(),
            Request::KeyAddFinish {
                ceremony_id,
                credential,
            } => self
                .approvals
                .key_add_finish(&ceremony_id, credential, conn.id, &conn.peer(), now)
                .await
                .into(),
            Request::KeyList => self.key_list(),
            Request::KeyRemove { name, force } => self
                .approvals
                .key_remove_start(&name, force, &conn.requester(), now)
                .await
                .into(),
            Request::Confirm { accept_change } => self
                .approvals
                .confirm_start(accept_change, &conn.requester(), now)
                .await
                .into(),
            Request::KeyPin { accept_change } => self
                .approvals
                .key_pin_start(accept_change, &conn.requester(), now)
                .await
                .into(),
            // Sources.
            Request::SourceAdd {
                name,
                access_key_id,
                secret_access_key,
            } => {
                let subject = name.clone();
                let add = self.source_add(name, access_key_id, secret_access_key);
                self.source_change("source_add", &subject, true, conn, now, add)
                    .await
            }
            Request::SourceImport {
                name,
                path,
                profile,
                remove_from_file,
            } => {
                let subject = name.clone();
                let import = self.source_import(name, path, profile, remove_from_file);
                self.source_change("source_add", &subject, true, conn, now, import)
                    .await
            }
            Request::SourceList => self.source_list().await,
            Request::SourceRemove { name } => {
                let subject = name.clone();
                let remove = self.source_remove(name);
                self.source_change("source_remove", &subject, false, conn, now, remove)
                    .await
            }
            // Roles and sessions.
            // A session held for running jobs serves them only: nothing else binds to it, and
            // no credentials leave it, until a touch opens it again (`Open`).
            Request::Credentials { role, .. }
            | Request::Console { role, .. }
            | Request::TokenForRole { role, .. }
            | Request::Use { role, .. }
            | Request::Imds { role: Some(role) }
                if self.sessions.held(&role, now) =>
            {
                self.held_refusal(&role)
            }
            Request::Roles => self.roles(now),
            Request::Open {
                role,
                mfa_code,
                accept_change,
                renew,
            } => {
                let reply = self
                    .open(&role, mfa_code, (accept_change, renew), conn, now)
                    .await;
                self.with_region(reply)
            }
            Request::AllowProgram { role, pid, program } => {
                self.allow_program(&role, pid, program, conn, now).await
            }
            Request::Approve {
                ceremony_id,
                credential,
            } => {
                let reply = self
                    .approvals
                    .answer_detached(
                        ceremony_id,
                        credential,
                        crate::approval::AnsweredBy::Conn(conn.id),
                        conn.peer(),
                        now,
                    )
                    .await;
                self.with_region(reply.into())
            }
            Request::AwaitCeremony { ceremony_id } => {
                let reply = self.approvals.await_ceremony(&ceremony_id, conn.id).await;
                self.with_region(reply.into())
            }
            Request::Credentials { role, export } => {
                self.credentials(&role, export, conn, now).await
            }
            Request::Console {
                role,
                destination,
                region,
            } => {
                self.console_request(&role, destination.as_deref(), region.as_deref(), conn, now)
                    .await
            }
            // Endpoint tokens and the role IMDS serves.
            Request::TokenShell { holder } => self.token_shell(holder, conn, now),
            Request::TokenForRole {
                role,
                scoped,
                purpose,
                holder,
            } => self.token_for_role(role, scoped, &purpose, holder, conn, now),
            Request::Use { token, role } => self.use_role(token, &role),
            Request::TokenList => self.token_list(),
            Request::TokenRevoke { id } => self.token_revoke(&id, conn, now),
            Request::Imds { role } => self.imds(role),
            // IAM Identity Center logins.
            Request::Login { login, device_code } => {
                self.login(login, device_code, conn, now).await
            }
            Request::AwaitLogin { login } => self.await_login(&login, now).await,
            Request::Logout { login } => self.logout(login, conn, now).await,
            Request::SsoDiscover { login } => self.sso_discover(login, now).await,
        };
        (resp, false)
    }

    /// `credctl prompt`: what a shell prompt shows, from memory only.
    fn prompt(&self, token: &credagent_proto::Secret, now: std::time::SystemTime) -> Response {
        let (known, role) = match self.tokens.role_of(token.expose()) {
            Ok(role) => (true, role),
            Err(_) => (false, None),
        };
        let remaining_secs = role
            .as_deref()
            .and_then(|r| self.sessions.time_left(r, now))
            .map(|d| d.as_secs());
        Response::Prompt {
            role: role.map(|r| r.to_string()),
            remaining_secs,
            pending: u32::try_from(self.pending.count(now)).unwrap_or(u32::MAX),
            known,
        }
    }

    /// `credctl reload`: applied at once, or the touch that applies it; audited here unless a
    /// touch took it (then with the touch, `settings_reloaded`).
    async fn reload_request(&self, conn: &Conn, now: std::time::SystemTime) -> Response {
        let resp = match self.live.reload(&conn.requester(), now).await {
            Ok(crate::reload::Reloaded::Applied { restart }) => Response::Reloaded { restart },
            Ok(crate::reload::Reloaded::Touch(outcome)) => outcome.into(),
            Err(refusal) => refusal.into(),
        };
        let outcome = match &resp {
            Response::Reloaded { .. } => Some((None, "nothing a touch vouches for changed")),
            Response::Error { code, .. } => Some((Some(code.as_str()), "config.toml not applied")),
            _ => None,
        };
        if let Some((refused, what)) = outcome {
            self.audit(
                now,
                Event::action("reload", &conn.peer(), refused).subject(what),
            );
        }
        resp
    }

    /// The roles of `~/.aws/config` as the file is now (read again if it changed); the refusal
    /// says what to fix.
    fn fresh_profiles(&self) -> Result<(), Box<Response>> {
        self.sessions
            .reload_profiles(&self.aws_config)
            .map_err(|e| Box::new(Response::error(ErrorCode::Profile, e.to_string())))
    }

    /// Records a control-socket event in the audit.
    fn audit(&self, now: std::time::SystemTime, event: Event) {
        self.audit.record(now, event);
    }
}

/// Accepts control connections until `shutdown` is cancelled.
pub async fn serve(
    listener: UnixListener,
    control: Arc<Control>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let idle = control_idle();
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
                if let Some(held) = OTHER_USER_LOG.allow() {
                    tracing::warn!(
                        peer_uid = cred.uid(),
                        peer_pid = cred.pid(),
                        similar_held_back = held,
                        "refused control connection from another user"
                    );
                }
                control.audit(
                    std::time::SystemTime::now(),
                    Event {
                        channel: "control",
                        role: None,
                        token_id: None,
                        origin: Origin::Unix {
                            uid: cred.uid(),
                            pid: cred.pid().unwrap_or(0),
                        },
                        outcome: Outcome::Refused,
                        reason: Some("other_user"),
                        subject: None,
                        exe: None,
                    },
                );
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
            leases: Vec::new(),
            login_holds: Vec::new(),
            permit: Some(permit),
            exe: crate::procs::exe_of(pid).map(Arc::from),
        };
        let control = control.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(handle_connection(stream, control, conn, idle, shutdown));
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

/// Reads one request. `idle` bounds the wait for its first byte (`None`: wait as long as the
/// peer keeps the connection open).
async fn read_request(stream: &mut UnixStream, idle: Option<Duration>) -> Incoming {
    let mut header = [0u8; HEADER_LEN];
    let read = stream.read_exact(&mut header);
    let got = match idle {
        Some(limit) => tokio::time::timeout(limit, read).await.ok(),
        None => Some(read.await),
    };
    match got {
        Some(Ok(_)) => {}
        Some(Err(_)) | None => return Incoming::Gone,
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
    // Requests may carry secrets (a source's secret key, an MFA code): zeroed when dropped.
    let mut body = zeroize::Zeroizing::new(vec![0u8; len]);
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
    // Responses may carry secrets (tokens, credentials): the frames are zeroed when dropped.
    // An answer larger than one frame (a thousand roles) goes out in several (`encode_message`).
    let frame = zeroize::Zeroizing::new(match encode_message(resp) {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(error = %e, "cannot encode a control response");
            match encode_frame(&Response::error(
                ErrorCode::Internal,
                format!("the answer cannot be sent: {e}"),
            )) {
                Ok(f) => f,
                Err(_) => return false,
            }
        }
    });
    stream.write_all(&frame).await.is_ok()
}

async fn handle_connection(
    mut stream: UnixStream,
    control: Arc<Control>,
    mut conn: Conn,
    idle: Duration,
    shutdown: CancellationToken,
) {
    serve_requests(&mut stream, &control, &mut conn, idle, &shutdown).await;
    // Whatever the connection held dies with it: `credctl exec` tokens, ceremonies it led.
    for id in conn.scoped_tokens.drain(..) {
        control.tokens.revoke(id);
    }
    conn.leases.clear();
    control.approvals.abandon_conn(conn.id);
}

async fn serve_requests(
    stream: &mut UnixStream,
    control: &Control,
    conn: &mut Conn,
    idle: Duration,
    shutdown: &CancellationToken,
) {
    let mut greeted = false;
    loop {
        let incoming = tokio::select! {
            _ = shutdown.cancelled() => return,
            i = read_request(stream, idle_limit(conn, idle)) => i,
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
            r = control.handle(req, conn) => r,
        };
        if !conn.scoped_tokens.is_empty() && conn.permit.take().is_some() {
            tracing::debug!(
                conn = conn.id,
                "holds exec tokens: no longer counted among connections"
            );
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_connections_have_no_idle_limit() {
        let mut conn = Conn {
            id: 1,
            uid: 0,
            pid: 0,
            scoped_tokens: Vec::new(),
            leases: Vec::new(),
            login_holds: Vec::new(),
            permit: None,
            exe: None,
        };
        assert_eq!(idle_limit(&conn, CONTROL_IDLE), Some(CONTROL_IDLE));
        conn.scoped_tokens
            .push(crate::tokens::TokenId::parse("0011223344556677").unwrap());
        assert_eq!(idle_limit(&conn, CONTROL_IDLE), None);
    }
}

//! A blocking connection to the agent's control socket: connect, `Hello`, then request/response.

use std::io;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use credagent_proto::{
    encode_frame, read_message, write_frame, ErrorCode, FrameError, Request, Response,
    MAX_MESSAGE_LEN, PROTOCOL_VERSION,
};

use crate::error::{Exit, Failure, Result};
use crate::identity;
use crate::trust::{self, Presence};

/// The socket path `credctl` uses: `--socket`, else the protocol's rules.
pub fn socket_path(explicit: Option<&Path>) -> PathBuf {
    match explicit {
        Some(p) => p.to_owned(),
        None => credagent_proto::socket_path(nix::unistd::getuid().as_raw()).0,
    }
}

/// An open, greeted connection to the agent.
pub struct Agent {
    stream: UnixStream,
    /// What was established about the process behind the socket before anything was sent.
    pub identity: identity::Verified,
    path: PathBuf,
    pub pid: u32,
    pub agent_version: String,
}

/// Why no greeted connection could be made.
pub enum ConnectError {
    /// Nothing listens there (no directory, no file, or a stale socket).
    NotRunning(io::Error),
    /// Something answered but the conversation failed.
    Other(Failure),
}

impl ConnectError {
    pub fn into_failure(self, path: &Path) -> Failure {
        match self {
            ConnectError::NotRunning(e) => not_running(path, &e),
            ConnectError::Other(f) => f,
        }
    }
}

pub fn not_running(path: &Path, e: &io::Error) -> Failure {
    Failure::new(
        Exit::NoAgent,
        format!(
            "no agent at {} ({e}): run `eval \"$(credctl start)\"`",
            path.display()
        ),
    )
}

fn transport(path: &Path, e: FrameError) -> Failure {
    Failure::failed(format!(
        "lost the connection to the agent at {} ({e}); check `credctl status`, or see the agent log",
        path.display()
    ))
}

impl Agent {
    /// Connects and exchanges `Hello`: the one way in to the agent, so every command checks,
    /// before sending anything, that the socket and the process behind it are the user's own
    /// (`trust`) and that this process runs the credagent credctl would start (`identity`).
    pub fn connect(path: &Path) -> std::result::Result<Agent, ConnectError> {
        match trust::check_path(path).map_err(ConnectError::Other)? {
            Presence::Socket => {}
            Presence::Absent(e) => return Err(ConnectError::NotRunning(e)),
        }
        let binary = identity::agent_binary();
        let settle = Instant::now() + identity::SETTLE;
        let (stream, identity) = loop {
            let stream = UnixStream::connect(path).map_err(|e| match e.kind() {
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
                    ConnectError::NotRunning(e)
                }
                _ => ConnectError::Other(Failure::new(
                    Exit::NoAgent,
                    format!(
                        "cannot connect to the agent at {}: {e}; check the path and its \
                         permissions",
                        path.display()
                    ),
                )),
            })?;
            trust::check_peer(&stream, path).map_err(ConnectError::Other)?;
            match identity::check(&stream, &binary) {
                Ok(v) => break (stream, v),
                // An agent that has just detached: hang up without a byte and look again in a
                // moment.
                Err(m) if m.transient() && Instant::now() < settle => {
                    drop(stream);
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(m) => return Err(ConnectError::Other(m.into_failure(path))),
            }
        };
        let mut agent = Agent {
            stream,
            identity,
            path: path.to_owned(),
            pid: 0,
            agent_version: String::new(),
        };
        let hello = Request::Hello {
            protocol_version: PROTOCOL_VERSION,
            client_version: env!("CARGO_PKG_VERSION").into(),
        };
        match agent.raw_request(&hello).map_err(ConnectError::Other)? {
            Response::Hello {
                pid, agent_version, ..
            } => {
                agent.pid = pid;
                agent.agent_version = agent_version;
                Ok(agent)
            }
            Response::Error {
                code: ErrorCode::VersionMismatch,
                message,
            } => Err(ConnectError::Other(Failure::new(
                Exit::VersionMismatch,
                message,
            ))),
            other => Err(ConnectError::Other(unexpected(&other))),
        }
    }

    /// Connects, mapping every failure to a user-facing one.
    pub fn connect_or_fail(path: &Path) -> Result<Agent> {
        Agent::connect(path).map_err(|e| e.into_failure(path))
    }

    fn raw_request(&mut self, req: &Request) -> Result<Response> {
        // How long the answer may take is the protocol's to say (it waits behind touches).
        let _ = self.stream.set_read_timeout(Some(req.answer_within()));
        // A request is one frame of at most 64 KiB (the agent refuses more): say so before
        // sending, rather than lose the connection.
        if let Err(FrameError::TooLarge(n)) = encode_frame(req) {
            return Err(Failure::usage(format!(
                "this request is {n} bytes, more than the {} a request to the agent may be: \
                 shorten what you passed (a name, a file's contents)",
                credagent_proto::MAX_FRAME_LEN
            )));
        }
        let written = write_frame(&mut self.stream, req);
        let read = match written {
            // Answers may span frames (see credagent_proto::frame).
            Ok(()) => read_message::<_, Response>(&mut self.stream, MAX_MESSAGE_LEN),
            Err(e) => Err(e),
        };
        match read {
            Ok(r) => Ok(r),
            Err(e) if closed_by_peer(&e) => Err(Failure::new(
                Exit::Refused,
                format!(
                    "the agent at {} closed the connection: it serves only its own user; check \
                     that it runs as you",
                    self.path.display()
                ),
            )),
            Err(e) => Err(transport(&self.path, e)),
        }
    }

    /// The agent's version, from its `Hello`.
    pub fn agent_version(&self) -> &str {
        &self.agent_version
    }

    /// The agent's process id, from its `Hello`.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Sends a request; an `Error` response becomes a [`Failure`].
    pub fn request(&mut self, req: &Request) -> Result<Response> {
        match self.raw_request(req)? {
            Response::Error { code, message } => Err(Failure::new(exit_for(code), message)),
            other => Ok(other),
        }
    }

    /// Sends a request and returns whatever comes back, errors included.
    pub fn raw(&mut self, req: &Request) -> Result<Response> {
        self.raw_request(req)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The exit status for an agent error code.
pub fn exit_for(code: ErrorCode) -> Exit {
    match code {
        ErrorCode::VersionMismatch => Exit::VersionMismatch,
        ErrorCode::ApprovalFailed
        | ErrorCode::NoKeys
        | ErrorCode::Policy
        | ErrorCode::Sealed
        | ErrorCode::TouchRequired => Exit::NotApproved,
        // Bad input, caught before anything happened: a usage error.
        ErrorCode::BadRequest => Exit::Usage,
        // A problem in a local file (the AWS config, a credentials file to import), AWS or the
        // network out of reach, or the agent failing inside: nothing refused the request, it
        // failed (the message says why; retrying may help).
        ErrorCode::Profile | ErrorCode::StsUnavailable | ErrorCode::Internal => Exit::Failed,
        _ => Exit::Refused,
    }
}

/// Whether the agent hung up on us (it does so at once for connections from other users).
fn closed_by_peer(e: &FrameError) -> bool {
    match e {
        FrameError::Closed => true,
        FrameError::Io(io) => matches!(
            io.kind(),
            io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
        ),
        _ => false,
    }
}

/// A response of a type the request does not expect.
pub fn unexpected(resp: &Response) -> Failure {
    Failure::failed(format!(
        "the agent sent an unexpected answer ({resp:?}); make sure credctl and credagent are the \
         same version"
    ))
}

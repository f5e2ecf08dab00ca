//! Request and response messages of the control protocol, as internally tagged JSON objects.

use serde::{Deserialize, Serialize};

/// A message from `credctl` to the agent.
///
/// Internally tagged by `type`. A request type this agent does not know decodes as
/// [`Request::Unknown`] and is answered with [`ErrorCode::UnknownRequest`] on a connection that
/// stays open, so a newer client can probe an older agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    /// Must be the first request on every connection.
    Hello {
        /// The client's [`crate::PROTOCOL_VERSION`].
        protocol_version: u32,
        /// The client's package version, for messages only.
        client_version: String,
    },
    /// Describe the running agent.
    Status,
    /// Shut the agent down gracefully.
    Stop,
    /// Any request type this build does not know.
    #[serde(other)]
    Unknown,
}

/// A message from the agent to `credctl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    /// Answer to [`Request::Hello`] when the versions match.
    Hello {
        protocol_version: u32,
        agent_version: String,
        /// The agent's process id, so a second agent can say which one is running.
        pid: u32,
    },
    /// Answer to [`Request::Status`].
    Status(StatusInfo),
    /// Answer to [`Request::Stop`]; the agent closes its listeners right after sending it.
    Stopping,
    /// A request failed. `code` is stable and machine-readable; `message` is for people.
    Error { code: ErrorCode, message: String },
    /// Any response type this build does not know (a newer agent).
    #[serde(other)]
    Unknown,
}

impl Response {
    /// Builds an error response.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Response::Error {
            code,
            message: message.into(),
        }
    }
}

/// Stable error codes. Never renumber or rename one; add new ones at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The peer speaks another protocol version: restart the agent with the matching build.
    VersionMismatch,
    /// The first request on a connection was not `Hello`.
    HelloRequired,
    /// The frame held JSON that is not a valid request.
    BadRequest,
    /// The frame announced a length over [`crate::MAX_FRAME_LEN`].
    FrameTooLarge,
    /// The request type is not known to this agent.
    UnknownRequest,
    /// The agent is shutting down.
    ShuttingDown,
    /// An unexpected internal failure; the message says more.
    Internal,
    /// An error code this build does not know (a newer peer).
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// The wire name of the code, as it appears in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::VersionMismatch => "version_mismatch",
            ErrorCode::HelloRequired => "hello_required",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::FrameTooLarge => "frame_too_large",
            ErrorCode::UnknownRequest => "unknown_request",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::Internal => "internal",
            ErrorCode::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What `credctl status` shows about the running agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusInfo {
    pub pid: u32,
    pub agent_version: String,
    pub protocol_version: u32,
    /// Unix time (seconds) when the agent started.
    pub started_at: u64,
    pub uptime_secs: u64,
    /// Path of the control socket.
    pub socket: String,
    /// Address of the credential endpoint, e.g. `127.0.0.1:41234`.
    pub http_addr: String,
    /// Whether the control socket came from systemd socket activation.
    pub socket_activated: bool,
    /// The configuration file in effect, if one was read.
    pub config_path: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_tagged_by_type() {
        let json = serde_json::to_string(&Request::Status).unwrap();
        assert_eq!(json, r#"{"type":"status"}"#);
        let hello: Request =
            serde_json::from_str(r#"{"type":"hello","protocol_version":7,"client_version":"x"}"#)
                .unwrap();
        assert_eq!(
            hello,
            Request::Hello {
                protocol_version: 7,
                client_version: "x".into()
            }
        );
    }

    #[test]
    fn unknown_request_type_decodes_as_unknown() {
        let r: Request = serde_json::from_str(r#"{"type":"teleport","to":"mars"}"#).unwrap();
        assert_eq!(r, Request::Unknown);
    }

    #[test]
    fn unknown_error_code_decodes_as_unknown() {
        let r: Response =
            serde_json::from_str(r#"{"type":"error","code":"from_the_future","message":"m"}"#)
                .unwrap();
        assert_eq!(r, Response::error(ErrorCode::Unknown, "m"));
    }

    #[test]
    fn error_code_names_match_serde() {
        for code in [
            ErrorCode::VersionMismatch,
            ErrorCode::HelloRequired,
            ErrorCode::BadRequest,
            ErrorCode::FrameTooLarge,
            ErrorCode::UnknownRequest,
            ErrorCode::ShuttingDown,
            ErrorCode::Internal,
        ] {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }
}

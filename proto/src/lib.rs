//! The control protocol between `credctl` and the `credagent` daemon: message types, framing,
//! stable error codes and the rules for where the control socket lives.
//!
//! This crate is data and framing only. It knows nothing of AWS, WebAuthn or keyrings, so both
//! sides (and the fuzz targets) can depend on it cheaply.

mod frame;
mod message;
mod paths;
mod secret;

pub use frame::{
    decode_body, encode_frame, frame_len, read_frame, write_frame, FrameError, HEADER_LEN,
    MAX_FRAME_LEN,
};
pub use message::{
    ErrorCode, KeyInfo, PendingInfo, Request, Response, RoleInfo, SessionState, SourceInfo,
    StatusInfo,
};
pub use paths::{socket_path, socket_path_from, SocketPathSource};
pub use secret::Secret;

/// The version of the control protocol. Bump it whenever a message changes meaning; add new
/// variants instead of changing old ones. Both sides send it in the first exchange (`Hello`), and
/// a mismatch is refused with [`ErrorCode::VersionMismatch`].
pub const PROTOCOL_VERSION: u32 = 1;

//! Shared, read-mostly facts about the running agent, for status and handlers.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Instant, SystemTime};

/// Facts fixed at start-up.
pub struct AgentState {
    /// Wall-clock start, reported to users.
    pub started_at: SystemTime,
    /// Monotonic start, for uptime that survives clock changes.
    pub started: Instant,
    pub socket: PathBuf,
    pub http_addr: SocketAddr,
}

/// SHA-256 of a file's content; `None` when it cannot be read (absent).
pub fn content_digest(path: &std::path::Path) -> Option<[u8; 32]> {
    use sha2::Digest;
    std::fs::read(path)
        .ok()
        .map(|b| sha2::Sha256::digest(&b).into())
}

//! Shared, read-mostly facts about the running agent, for status and handlers.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use credagent_proto::{StatusInfo, PROTOCOL_VERSION};

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

impl AgentState {
    /// The status report for `credctl status`.
    pub fn status(&self) -> StatusInfo {
        StatusInfo {
            pid: std::process::id(),
            agent_version: env!("CARGO_PKG_VERSION").into(),
            protocol_version: PROTOCOL_VERSION,
            started_at: self
                .started_at
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            uptime_secs: self.started.elapsed().as_secs(),
            socket: self.socket.display().to_string(),
            http_addr: self.http_addr.to_string(),
            config_path: None,
            aws_config: None,
            overrides: Vec::new(),
            keys: 0,
            sessions: Vec::new(),
            pending: Vec::new(),
            imds_role: None,
            vault: None,
            sealing: String::new(),
            settings: String::new(),
            approvals: Vec::new(),
            unsealed_keys: Vec::new(),
            config_changed: false,
            config_needs_restart: Vec::new(),
            user_verification: String::new(),
            touch_only_keys: Vec::new(),
            lock_on: Vec::new(),
        }
    }
}

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
    pub config_path: Option<PathBuf>,
    /// The configuration file the agent looked for, and the SHA-256 of its content when it was
    /// read (`None`: there was none), to tell `status` whether it changed since.
    pub config_seen: Option<(PathBuf, Option<[u8; 32]>)>,
}

/// SHA-256 of a file's content; `None` when it cannot be read (absent).
pub fn content_digest(path: &std::path::Path) -> Option<[u8; 32]> {
    use sha2::Digest;
    std::fs::read(path)
        .ok()
        .map(|b| sha2::Sha256::digest(&b).into())
}

impl AgentState {
    /// Whether the configuration file's content changed (or it appeared, or went) since the
    /// agent read it: its settings apply only when the agent starts. A `chmod` or a rewrite
    /// with the same content is no change.
    pub fn config_changed(&self) -> bool {
        self.config_seen
            .as_ref()
            .is_some_and(|(path, seen)| content_digest(path) != *seen)
    }
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
            config_path: self.config_path.as_ref().map(|p| p.display().to_string()),
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
            config_changed: self.config_changed(),
            user_verification: String::new(),
            touch_only_keys: Vec::new(),
            lock_on: Vec::new(),
        }
    }
}

//! Agent-wide requests: the status report, pending approvals, and `lock`.

use std::time::SystemTime;

use credagent_proto::{PendingInfo, Response, StatusInfo};

use super::{Conn, Control};

impl Control {
    /// `credctl lock`: [`crate::agent::Agent::lock`], audited with who asked.
    pub(super) fn lock_request(&self, conn: &Conn, now: SystemTime) -> Response {
        self.agent.lock(&conn.peer(), None, now);
        Response::Ok
    }

    /// The pending approvals, with the processes that asked: naming them scans /proc, so it
    /// runs off the runtime's workers.
    pub(super) async fn pending_list(&self, now: SystemTime) -> Vec<PendingInfo> {
        let pending = self.pending.clone();
        let list = tokio::task::spawn_blocking(move || pending.list(now))
            .await
            .unwrap_or_default();
        list.into_iter()
            .map(|p| PendingInfo {
                role: p.role,
                first_seen: p.first_seen,
                last_seen: p.last_seen,
                requests: p.requests,
                peer_pid: p.peer_pid,
                peer_exe: p.peer_exe,
                ends_at: p.ends.map(|(at, _)| at),
                ending: p.ends.map(|(_, what)| what.to_owned()),
                program: p.program.as_ref().map(|a| a.exe.clone()),
                program_pid: p.program.as_ref().map(|a| a.process.pid),
                command_line: p.program.as_ref().map(|a| a.command_line.clone()),
            })
            .collect()
    }

    /// The full status report.
    pub fn status(&self, now: SystemTime, pending: Vec<PendingInfo>) -> StatusInfo {
        let facts = &self.facts;
        let binding = self.endpoint.hints.stats();
        let mut info = StatusInfo {
            pid: std::process::id(),
            agent_version: env!("CARGO_PKG_VERSION").into(),
            protocol_version: credagent_proto::PROTOCOL_VERSION,
            started_at: crate::util::unix_secs(facts.started_at),
            uptime_secs: facts.started.elapsed().as_secs(),
            socket: facts.socket.display().to_string(),
            http_addr: facts.http_addr.to_string(),
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
            tokens_refused_elsewhere: self.tokens.refused_elsewhere(),
            binding_lookups: binding.lookups,
            binding_hint_hits: binding.hint_hits,
            binding_micros: binding.micros,
            user_verification: String::new(),
            touch_only_keys: Vec::new(),
            lock_on: Vec::new(),
        };
        let keys = self.approvals.keys();
        info.keys = keys.len();
        info.unsealed_keys = keys
            .iter()
            .filter(|k| !k.sealed)
            .map(|k| k.name.clone())
            .collect();
        info.touch_only_keys = keys
            .iter()
            .filter(|k| k.sealed && !k.verified_seal)
            .map(|k| k.name.clone())
            .collect();
        info.user_verification = match self.approvals.user_verification() {
            crate::approval::UserVerification::Required => "required".into(),
            crate::approval::UserVerification::Discouraged => "discouraged".into(),
        };
        info.vault = self.approvals.vault_fingerprint();
        info.lock_on = self.live.lock_lines();
        info.config_path = self.live.config_path().map(|p| p.display().to_string());
        info.config_changed = self.live.config_changed();
        info.config_needs_restart = self.live.needs_restart();
        info.sealing = match self.approvals.sealing() {
            crate::approval::Sealing::Required => "required".into(),
            crate::approval::Sealing::AllowUnsealed => "allow-unsealed".into(),
        };
        info.sessions = self.role_infos(now, true);
        info.imds_role = self.endpoint.imds_role().as_deref().map(str::to_owned);
        info.pending = pending;
        info.aws_config = self.aws_config.path().map(|p| p.display().to_string());
        info.overrides = self.live.overrides();
        info.settings = self.approvals.settings_state();
        info.approvals = self
            .approvals
            .in_progress(now)
            .into_iter()
            .map(|a| credagent_proto::ApprovalInProgress {
                what: a.what,
                requester: a.requester,
                started_at: a.started_at,
            })
            .collect();
        info
    }
}

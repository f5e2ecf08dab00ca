//! Audit lines also sent to the systemd journal, as structured entries through its native
//! protocol (one datagram per entry on `/run/systemd/journal/socket`), when the agent runs under
//! systemd. Fleets then keep the trail in the log pipeline they already run; `audit.jsonl` stays.
//!
//! Each entry carries `MESSAGE` (one readable line), `PRIORITY` (6, or 4 for refusals),
//! `SYSLOG_IDENTIFIER=credagent` and the line's fields as `CREDAGENT_*` (`CHANNEL`, `OUTCOME`,
//! `REASON`, `ROLE`, `SUBJECT`, `TOKEN_ID`, `PEER_UID`, `PEER_PID`, `PEER_EXE`, `COUNT`,
//! `TIME`). Audit lines never hold a secret (token ids are public), so neither do entries.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

use super::Line;

/// The journal's socket for native messages.
pub const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// A connection to the journal (or to a socket standing in for it, in tests).
pub struct Journal {
    socket: UnixDatagram,
    path: PathBuf,
    /// Whether a send failed already (said once in the log, not per line).
    failed: bool,
}

impl Journal {
    /// The journal when the agent runs under systemd (`$INVOCATION_ID` or `$JOURNAL_STREAM`),
    /// at `$CREDAGENT_JOURNAL_SOCKET` if set (tests), else the journal's own socket.
    pub fn from_env() -> Option<Journal> {
        let under_systemd = std::env::var_os("INVOCATION_ID").is_some()
            || std::env::var_os("JOURNAL_STREAM").is_some();
        if !under_systemd {
            return None;
        }
        let path = std::env::var_os("CREDAGENT_JOURNAL_SOCKET")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(JOURNAL_SOCKET));
        Journal::at(&path)
    }

    /// A journal client sending to `path`; `None` if no datagram socket can be made.
    pub fn at(path: &Path) -> Option<Journal> {
        let socket = UnixDatagram::unbound().ok()?;
        socket.set_nonblocking(true).ok()?;
        Some(Journal {
            socket,
            path: path.to_path_buf(),
            failed: false,
        })
    }

    /// Sends one audit line as one entry. Never blocks; a journal that is gone or full loses the
    /// entry (the audit log keeps it) and is reported once.
    pub fn send(&mut self, line: &Line) {
        let entry = entry(line);
        match self.socket.send_to(&entry, &self.path) {
            Ok(_) => self.failed = false,
            Err(e) if !self.failed => {
                self.failed = true;
                tracing::warn!(error = %e, socket = %self.path.display(), "cannot send audit entries to the journal; audit.jsonl keeps them");
            }
            Err(_) => {}
        }
    }
}

/// Appends `KEY=value\n`, or the binary form (`KEY\n`, little-endian u64 length, value, `\n`)
/// when the value holds a newline, as the native protocol requires.
fn field(out: &mut Vec<u8>, key: &str, value: &str) {
    out.extend_from_slice(key.as_bytes());
    if value.contains('\n') {
        out.push(b'\n');
        out.extend_from_slice(&(value.len() as u64).to_le_bytes());
        out.extend_from_slice(value.as_bytes());
    } else {
        out.push(b'=');
        out.extend_from_slice(value.as_bytes());
    }
    out.push(b'\n');
}

/// The native-protocol datagram for `line`.
pub fn entry(line: &Line) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    let mut message = format!("credagent: {} {}", line.channel, line.outcome);
    if let Some(role) = &line.role {
        message.push_str(&format!(" role {role}"));
    }
    if let Some(reason) = &line.reason {
        message.push_str(&format!(" ({reason})"));
    }
    message.push_str(&format!(" by uid {}", line.peer_uid));
    if let Some(pid) = line.peer_pid {
        message.push_str(&format!(" pid {pid}"));
    }
    if let Some(exe) = &line.peer_exe {
        message.push_str(&format!(" {exe}"));
    }
    field(&mut out, "MESSAGE", &message);
    let priority = if line.outcome == "refused" { "4" } else { "6" };
    field(&mut out, "PRIORITY", priority);
    field(&mut out, "SYSLOG_IDENTIFIER", "credagent");
    field(&mut out, "CREDAGENT_TIME", &line.time);
    field(&mut out, "CREDAGENT_CHANNEL", &line.channel);
    field(&mut out, "CREDAGENT_OUTCOME", &line.outcome);
    let optional = [
        ("CREDAGENT_REASON", &line.reason),
        ("CREDAGENT_ROLE", &line.role),
        ("CREDAGENT_SUBJECT", &line.subject),
        ("CREDAGENT_TOKEN_ID", &line.token_id),
        ("CREDAGENT_PEER_EXE", &line.peer_exe),
    ];
    for (key, value) in optional {
        if let Some(v) = value {
            field(&mut out, key, v);
        }
    }
    field(&mut out, "CREDAGENT_PEER_UID", &line.peer_uid.to_string());
    if let Some(pid) = line.peer_pid {
        field(&mut out, "CREDAGENT_PEER_PID", &pid.to_string());
    }
    field(&mut out, "CREDAGENT_COUNT", &line.count.to_string());
    out
}

/// Parses a native-protocol datagram into its fields (both forms), for tests.
pub fn parse(datagram: &[u8]) -> Option<Vec<(String, String)>> {
    let mut fields = Vec::new();
    let mut rest = datagram;
    while !rest.is_empty() {
        let nl = rest.iter().position(|&b| b == b'\n')?;
        let head = std::str::from_utf8(&rest[..nl]).ok()?;
        if let Some((k, v)) = head.split_once('=') {
            fields.push((k.to_owned(), v.to_owned()));
            rest = &rest[nl + 1..];
        } else {
            let body = &rest[nl + 1..];
            let len = u64::from_le_bytes(body.get(..8)?.try_into().ok()?) as usize;
            let value = std::str::from_utf8(body.get(8..8 + len)?).ok()?;
            fields.push((head.to_owned(), value.to_owned()));
            rest = body.get(8 + len + 1..)?;
        }
    }
    Some(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line() -> Line {
        Line {
            time: "2026-11-30T12:00:00Z".into(),
            channel: "ecs".into(),
            role: Some("prod".into()),
            token_id: Some("t-0123456789abcdef".into()),
            outcome: "refused".into(),
            reason: Some("not_approved".into()),
            subject: Some("multi\nline".into()),
            peer_uid: 1000,
            peer_pid: Some(42),
            peer_exe: Some("/usr/bin/aws".into()),
            count: 3,
        }
    }

    #[test]
    fn entries_reach_a_socket_standing_in_for_the_journal_with_every_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.socket");
        let server = UnixDatagram::bind(&path).unwrap();
        let mut journal = Journal::at(&path).unwrap();
        journal.send(&line());
        let mut buf = vec![0u8; 65536];
        let n = server.recv(&mut buf).unwrap();
        let fields: std::collections::HashMap<String, String> =
            parse(&buf[..n]).unwrap().into_iter().collect();
        for (k, v) in [
            ("SYSLOG_IDENTIFIER", "credagent"),
            ("PRIORITY", "4"),
            ("CREDAGENT_CHANNEL", "ecs"),
            ("CREDAGENT_OUTCOME", "refused"),
            ("CREDAGENT_REASON", "not_approved"),
            ("CREDAGENT_ROLE", "prod"),
            ("CREDAGENT_SUBJECT", "multi\nline"),
            ("CREDAGENT_TOKEN_ID", "t-0123456789abcdef"),
            ("CREDAGENT_PEER_UID", "1000"),
            ("CREDAGENT_PEER_PID", "42"),
            ("CREDAGENT_PEER_EXE", "/usr/bin/aws"),
            ("CREDAGENT_COUNT", "3"),
            ("CREDAGENT_TIME", "2026-11-30T12:00:00Z"),
        ] {
            assert_eq!(fields.get(k).map(String::as_str), Some(v), "{k}");
        }
        assert!(fields["MESSAGE"].contains("ecs refused role prod (not_approved)"));
    }

    #[test]
    fn a_missing_journal_loses_nothing_but_the_entry() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::at(&dir.path().join("absent")).unwrap();
        journal.send(&line());
        journal.send(&line());
        assert!(journal.failed);
    }
}

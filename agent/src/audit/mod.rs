//! The issuance audit log, `$XDG_STATE_HOME/credagent/audit.jsonl`: one JSON line per credential
//! served or refused, naming the role, the token id (never the token), and the requesting peer's
//! uid, pid and executable.
//!
//! Nothing here runs on the request path except a non-blocking channel send. A writer task
//! batches events (every 100 ms), merges identical ones into one line with a `count`, resolves
//! socket inodes to processes with at most one `/proc` scan per batch, and appends the lines.

pub mod journal;

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::util::LockExt;
use serde::Serialize;
use tokio::sync::mpsc;

/// Events queued beyond this are counted and dropped rather than slowing a request.
const QUEUE: usize = 65_536;
/// Bytes of queued events (their strings) beyond which events are dropped and counted: the
/// queue is bounded by what it holds, not only by how many.
const QUEUE_BYTES: usize = 8 << 20;
/// Longest role or subject kept in an event: a role name comes from a request path another
/// process wrote.
const MAX_FIELD: usize = 256;
/// Rotated generations kept (`audit.jsonl.1` … `.8`): one process flooding the log cannot
/// push the day's lines out.
const GENERATIONS: u32 = 8;
const BATCH_EVERY: Duration = Duration::from_millis(100);
/// Remembered inode → process resolutions (keep-alive connections resolve once).
const PROCESS_CACHE: usize = 4096;
/// The log is rotated to `audit.jsonl.1` (one generation kept) past this size.
const ROTATE_AT: u64 = 64 * 1024 * 1024;

/// `audit.jsonl.N`.
fn generation(path: &Path, n: u32) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(format!(".{n}"));
    PathBuf::from(p)
}

/// Shifts `audit.jsonl.N` to `.N+1` (the oldest falls off), moves the full log to `.1` and
/// opens a fresh one.
fn rotate(path: &Path) -> std::io::Result<File> {
    for n in (1..GENERATIONS).rev() {
        let from = generation(path, n);
        if from.exists() {
            std::fs::rename(&from, generation(path, n + 1))?;
        }
    }
    std::fs::rename(path, generation(path, 1))?;
    open(path)
}

/// Where a request came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Origin {
    /// A TCP connection, with the peer socket's owner and inode from sock_diag.
    Tcp { uid: u32, inode: u32 },
    /// The control socket, with SO_PEERCRED.
    Unix { uid: u32, pid: i32 },
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Credentials were handed out.
    Served,
    /// A request was refused (`reason` says why).
    Refused,
    /// An action was carried out: a touch accepted, a session opened, a key or source added or
    /// removed, a token issued or revoked, a lock.
    Done,
}

/// One audit event, as built on the request path (cheap to build and to send).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Event {
    /// What was asked: `ecs`, `imds`, `credential_process`, `http`, `control`, or an action:
    /// `touch`, `session_open`, `lock`, `key_add`, `key_remove`, `source_add`,
    /// `source_remove`, `token_issue`, `token_revoke`.
    pub channel: &'static str,
    pub role: Option<std::sync::Arc<str>>,
    pub token_id: Option<crate::tokens::TokenId>,
    pub origin: Origin,
    pub outcome: Outcome,
    /// A stable reason code for refusals (`bad_token`, `not_approved`, `bad_host`, …).
    pub reason: Option<&'static str>,
    /// What an action was about, besides a role: the key touched, added or removed, the
    /// source added or removed, the kind of token issued.
    pub subject: Option<std::sync::Arc<str>>,
    /// The requesting executable, when it was named as the request arrived (control
    /// connections: a `credctl` is often gone before the writer could look it up).
    pub exe: Option<std::sync::Arc<str>>,
}

/// Who asked for an action: the peer, and its executable when it was named on arrival.
#[derive(Debug, Clone)]
pub struct Peer {
    pub origin: Origin,
    pub exe: Option<std::sync::Arc<str>>,
}

impl From<Origin> for Peer {
    fn from(origin: Origin) -> Peer {
        Peer { origin, exe: None }
    }
}

impl Event {
    /// An action's event: `channel` done or refused (with `reason`) for `who`.
    pub fn action(channel: &'static str, who: &Peer, refused: Option<&'static str>) -> Event {
        Event {
            channel,
            role: None,
            token_id: None,
            origin: who.origin,
            outcome: if refused.is_some() {
                Outcome::Refused
            } else {
                Outcome::Done
            },
            reason: refused,
            subject: None,
            exe: who.exe.clone(),
        }
    }

    pub fn role(mut self, role: &str) -> Event {
        self.role = Some(role.into());
        self
    }

    pub fn subject(mut self, subject: &str) -> Event {
        self.subject = Some(subject.into());
        self
    }

    pub fn token(mut self, id: crate::tokens::TokenId) -> Event {
        self.token_id = Some(id);
        self
    }
}

/// A line of the audit log.
#[derive(Debug, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Line {
    /// RFC 3339 UTC time of the first event merged into this line.
    pub time: String,
    pub channel: String,
    pub role: Option<String>,
    pub token_id: Option<String>,
    pub outcome: String,
    pub reason: Option<String>,
    /// The key, source or token kind an action was about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    pub peer_uid: u32,
    pub peer_pid: Option<i32>,
    pub peer_exe: Option<String>,
    /// Identical events merged into this line (same peer, role, token and outcome in one batch).
    pub count: u64,
}

/// What the senders and the writer share.
#[derive(Default)]
struct Shared {
    /// Events dropped (queue full, or too many bytes queued) since the writer last said so.
    dropped: std::sync::atomic::AtomicU64,
    /// Bytes held by queued events.
    queued_bytes: std::sync::atomic::AtomicUsize,
}

/// The sending half, cloned into every handler.
#[derive(Clone)]
pub struct Audit {
    tx: mpsc::Sender<(SystemTime, Event, u64)>,
    shared: std::sync::Arc<Shared>,
}

/// Roughly what an event holds, for the byte bound.
fn weight(e: &Event) -> usize {
    64 + e.role.as_ref().map_or(0, |r| r.len())
        + e.subject.as_ref().map_or(0, |s| s.len())
        + e.exe.as_ref().map_or(0, |x| x.len())
}

/// `s`, cut to `MAX_FIELD` characters.
fn bounded(s: std::sync::Arc<str>) -> std::sync::Arc<str> {
    if s.len() <= MAX_FIELD {
        return s;
    }
    let cut: String = s.chars().take(MAX_FIELD).collect();
    format!("{cut}…").into()
}

impl Audit {
    /// Records an event without ever waiting.
    pub fn record(&self, now: SystemTime, event: Event) {
        self.record_n(now, event, 1);
    }

    /// Records `count` identical events first seen at `now`. Never waits: past the queue's
    /// bounds the event is counted as dropped, and the writer audits the count.
    pub fn record_n(&self, now: SystemTime, mut event: Event, count: u64) {
        use std::sync::atomic::Ordering;
        event.role = event.role.map(bounded);
        event.subject = event.subject.map(bounded);
        let w = weight(&event);
        if self.shared.queued_bytes.fetch_add(w, Ordering::Relaxed) + w > QUEUE_BYTES {
            self.shared.queued_bytes.fetch_sub(w, Ordering::Relaxed);
            self.shared.dropped.fetch_add(count, Ordering::Relaxed);
            return;
        }
        if self.tx.try_send((now, event, count)).is_err() {
            self.shared.queued_bytes.fetch_sub(w, Ordering::Relaxed);
            self.shared.dropped.fetch_add(count, Ordering::Relaxed);
        }
    }
}

impl Audit {
    /// An audit handle whose events go nowhere (fuzzing and benchmarks of the routes alone).
    pub fn discard() -> Audit {
        let (tx, _) = mpsc::channel(1);
        Audit {
            tx,
            shared: Default::default(),
        }
    }
}

#[cfg(test)]
impl Audit {
    pub(crate) fn for_tests(tx: mpsc::Sender<(SystemTime, Event, u64)>) -> Audit {
        Audit {
            tx,
            shared: Default::default(),
        }
    }
}

/// One connection's audit events on their way to the writer: the first of a run of identical
/// events is sent at once (so the writer can still find the process), the repeats are counted
/// and sent as one event every 100 ms, when the event changes, and when the connection ends.
/// This keeps the channel (and allocation) off the path of a busy keep-alive connection.
pub struct ConnAudit {
    audit: Audit,
    run: std::sync::Mutex<Option<Run>>,
}

struct Run {
    event: Event,
    since: SystemTime,
    /// Repeats not yet sent.
    count: u64,
}

impl ConnAudit {
    pub fn new(audit: Audit) -> ConnAudit {
        ConnAudit {
            audit,
            run: std::sync::Mutex::new(None),
        }
    }

    /// Records one event of this connection without waiting.
    pub fn record(&self, now: SystemTime, event: &Event) {
        let mut run = self.run.locked();
        if let Some(r) = run.as_mut().filter(|r| r.event == *event) {
            r.count += 1;
            if now.duration_since(r.since).unwrap_or_default() >= BATCH_EVERY {
                self.audit.record_n(r.since, r.event.clone(), r.count);
                r.count = 0;
                r.since = now;
            }
            return;
        }
        if let Some(r) = run.take().filter(|r| r.count > 0) {
            self.audit.record_n(r.since, r.event, r.count);
        }
        self.audit.record(now, event.clone());
        *run = Some(Run {
            event: event.clone(),
            since: now,
            count: 0,
        });
    }

    /// Sends the counted repeats now.
    pub fn flush(&self) {
        let mut run = self.run.locked();
        if let Some(r) = run.as_mut().filter(|r| r.count > 0) {
            self.audit.record_n(r.since, r.event.clone(), r.count);
            r.count = 0;
        }
    }
}

impl Drop for ConnAudit {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Opens the log (creating it 0600) and starts the writer task.
pub fn start(path: &Path) -> std::io::Result<(Audit, tokio::task::JoinHandle<()>)> {
    Ok(start_with(open(path)?, path))
}

/// Starts the writer on a log opened with [`open`] (before the agent detached, so that an
/// error is reported to whoever started it).
pub fn start_with(file: File, path: &Path) -> (Audit, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(QUEUE);
    let shared = std::sync::Arc::new(Shared::default());
    let journal = journal::Journal::from_env();
    let handle = tokio::spawn(writer(file, path.to_owned(), rx, shared.clone(), journal));
    (Audit { tx, shared }, handle)
}

/// Opens (creating) the audit log for appending, refusing a symlink in its place.
pub fn open(path: &Path) -> std::io::Result<File> {
    if let Some(dir) = path.parent() {
        crate::util::create_private_dir(dir)?;
    }
    // A symlink planted in place of the log would send the audit elsewhere.
    crate::util::open_append(path)
}

/// Writes batches until every sender is gone, and then what is still queued: an agent that
/// stops drains its audit.
async fn writer(
    mut file: File,
    path: PathBuf,
    mut rx: mpsc::Receiver<(SystemTime, Event, u64)>,
    shared: std::sync::Arc<Shared>,
    mut journal: Option<journal::Journal>,
) {
    use std::sync::atomic::Ordering;
    let mut cache: HashMap<u32, (i32, Option<String>)> = HashMap::new();
    let mut last_batch: Option<tokio::time::Instant> = None;
    loop {
        let Some(first) = rx.recv().await else {
            write_dropped(&mut file, &path, &shared);
            return;
        };
        // After a quiet spell the first event is handled at once, so the requesting process is
        // found while it still holds its connection; under load, batches (and /proc scans) come
        // at most every BATCH_EVERY.
        if let Some(at) = last_batch {
            tokio::time::sleep_until(at + BATCH_EVERY).await;
        }
        last_batch = Some(tokio::time::Instant::now());
        let mut batch = vec![first];
        while let Ok(e) = rx.try_recv() {
            batch.push(e);
        }
        let held: usize = batch.iter().map(|(_, e, _)| weight(e)).sum();
        shared.queued_bytes.fetch_sub(held, Ordering::Relaxed);
        write_dropped(&mut file, &path, &shared);
        // Merge identical events, keeping the first time and the order of first appearance.
        let mut merged: Vec<(SystemTime, Event, u64)> = Vec::new();
        let mut index: HashMap<Event, usize> = HashMap::new();
        for (t, e, n) in batch {
            match index.get(&e) {
                Some(&i) => merged[i].2 += n,
                None => {
                    index.insert(e.clone(), merged.len());
                    merged.push((t, e, n));
                }
            }
        }
        let wanted: Vec<u32> = merged
            .iter()
            .filter_map(|(_, e, _)| match e.origin {
                Origin::Tcp { inode, .. } if !cache.contains_key(&inode) => Some(inode),
                _ => None,
            })
            .collect();
        if !wanted.is_empty() {
            let found = tokio::task::spawn_blocking(move || processes_for_inodes(&wanted))
                .await
                .unwrap_or_default();
            if cache.len() + found.len() > PROCESS_CACHE {
                cache.clear();
            }
            cache.extend(found);
        }
        // Merge again once peers are resolved: many short connections from one process (or from
        // processes already gone) become one line with a count, so a flood cannot flood the log.
        let mut lines: Vec<Line> = Vec::new();
        let mut by_key: HashMap<String, usize> = HashMap::new();
        for (t, e, count) in merged {
            let line = to_line(t, e, count, &cache);
            let key = format!(
                "{}|{:?}|{:?}|{}|{:?}|{}|{:?}|{:?}",
                line.channel,
                line.role,
                line.token_id,
                line.outcome,
                line.reason,
                line.peer_uid,
                line.peer_pid,
                line.peer_exe
            );
            match by_key.get(&key) {
                Some(&i) => lines[i].count += line.count,
                None => {
                    by_key.insert(key, lines.len());
                    lines.push(line);
                }
            }
        }
        let mut out = Vec::new();
        for line in &lines {
            if serde_json::to_writer(&mut out, line).is_ok() {
                out.push(b'\n');
            }
        }
        if let Err(err) = file.write_all(&out).and_then(|()| file.flush()) {
            tracing::error!(error = %err, path = %path.display(), "cannot append to the audit log");
        }
        if let Some(journal) = journal.as_mut() {
            for line in &lines {
                journal.send(line);
            }
        }
        if file
            .metadata()
            .map(|m| m.len() > ROTATE_AT)
            .unwrap_or(false)
        {
            match rotate(&path) {
                Ok(f) => file = f,
                Err(err) => tracing::error!(error = %err, "cannot rotate the audit log"),
            }
        }
    }
}

/// Audits the events dropped since the last time, as one line.
fn write_dropped(file: &mut File, path: &Path, shared: &Shared) {
    use std::sync::atomic::Ordering;
    let n = shared.dropped.swap(0, Ordering::Relaxed);
    if n == 0 {
        return;
    }
    tracing::warn!(dropped = n, "audit queue full: events were dropped");
    let line = Line {
        time: rfc3339(SystemTime::now()),
        channel: "audit".into(),
        role: None,
        token_id: None,
        outcome: "refused".into(),
        reason: Some("queue_full".into()),
        subject: None,
        peer_uid: nix::unistd::getuid().as_raw(),
        peer_pid: Some(std::process::id() as i32),
        peer_exe: None,
        count: n,
    };
    let mut out = serde_json::to_vec(&line).unwrap_or_default();
    out.push(b'\n');
    if let Err(err) = file.write_all(&out) {
        tracing::error!(error = %err, path = %path.display(), "cannot append to the audit log");
    }
}

fn to_line(
    t: SystemTime,
    e: Event,
    count: u64,
    cache: &HashMap<u32, (i32, Option<String>)>,
) -> Line {
    let (uid, pid, exe) = match e.origin {
        Origin::Tcp { uid, inode } => match cache.get(&inode) {
            Some((pid, exe)) => (uid, Some(*pid), exe.clone()),
            None => (uid, None, None),
        },
        Origin::Unix { uid, pid } => (
            uid,
            Some(pid),
            e.exe
                .as_deref()
                .map(str::to_owned)
                .or_else(|| crate::procs::exe_of(pid)),
        ),
    };
    Line {
        time: rfc3339(t),
        channel: e.channel.into(),
        role: e.role.map(|r| r.to_string()),
        token_id: e.token_id.map(|t| t.to_string()),
        outcome: match e.outcome {
            Outcome::Served => "served".into(),
            Outcome::Refused => "refused".into(),
            Outcome::Done => "done".into(),
        },
        reason: e.reason.map(Into::into),
        subject: e.subject.map(|s| s.to_string()),
        peer_uid: uid,
        peer_pid: pid,
        peer_exe: exe,
        count,
    }
}

/// One scan of `/proc/*/fd`: which process holds each socket inode. A connection that closed
/// before the scan stays unresolved (its line says so with a null pid).
pub fn processes_for_inodes(inodes: &[u32]) -> HashMap<u32, (i32, Option<String>)> {
    let mut found = HashMap::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return found;
    };
    let targets: HashMap<String, u32> = inodes
        .iter()
        .map(|i| (format!("socket:[{i}]"), *i))
        .collect();
    for p in procs.flatten() {
        let name = p.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(link) = std::fs::read_link(fd.path()) {
                if let Some(inode) = link.to_str().and_then(|l| targets.get(l)) {
                    found
                        .entry(*inode)
                        .or_insert_with(|| (pid, crate::procs::exe_of(pid)));
                }
            }
        }
        if found.len() == targets.len() {
            break;
        }
    }
    found
}

/// `YYYY-MM-DDTHH:MM:SSZ` for a system time (UTC, whole seconds).
pub fn rfc3339(t: SystemTime) -> String {
    // humantime panics before 1970; no time we format is, but a clock set to 1969 must not
    // crash the agent.
    humantime::format_rfc3339_seconds(t.max(SystemTime::UNIX_EPOCH)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_times_like_every_sdk_expects() {
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_912_526);
        assert_eq!(rfc3339(t), "2026-11-29T00:35:26Z");
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn resolves_our_own_socket_inode() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, peer) = l.accept().unwrap();
        let p = crate::http::peer::lookup(s.local_addr().unwrap(), peer).unwrap();
        let found = processes_for_inodes(&[p.inode]);
        let (pid, exe) = found.get(&p.inode).expect("resolved");
        assert_eq!(*pid as u32, std::process::id());
        assert!(exe.is_some());
        drop(c);
    }

    #[tokio::test]
    async fn writer_merges_and_appends_private_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/audit.jsonl");
        let (audit, _h) = start(&path).unwrap();
        let ev = Event {
            channel: "ecs",
            role: Some("prod".into()),
            token_id: crate::tokens::TokenId::parse("00000000000000ab"),
            origin: Origin::Unix {
                uid: 0,
                pid: std::process::id() as i32,
            },
            outcome: Outcome::Served,
            reason: None,
            subject: None,
            exe: None,
        };
        for _ in 0..3 {
            audit.record(SystemTime::now(), ev.clone());
        }
        audit.record(
            SystemTime::now(),
            Event {
                outcome: Outcome::Refused,
                reason: Some("bad_token"),
                subject: None,
                exe: None,
                ..ev
            },
        );
        let mut lines = Vec::new();
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            lines = text
                .lines()
                .map(|l| serde_json::from_str::<Line>(l).unwrap())
                .collect();
            if lines.len() == 2 {
                break;
            }
        }
        assert_eq!(lines.len(), 2);
        assert_eq!((lines[0].count, lines[0].outcome.as_str()), (3, "served"));
        assert_eq!(lines[1].reason.as_deref(), Some("bad_token"));
        assert_eq!(lines[0].peer_pid, Some(std::process::id() as i32));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[tokio::test]
    async fn a_flood_of_short_connections_becomes_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let (audit, _h) = start(&path).unwrap();
        // 500 requests, each from its own connection that is gone before it can be resolved.
        for inode in 1..=500 {
            audit.record(
                SystemTime::now(),
                Event {
                    channel: "ecs",
                    role: Some("prod".into()),
                    token_id: crate::tokens::TokenId::parse("00000000000000ab"),
                    origin: Origin::Tcp {
                        uid: 7,
                        inode: 4_000_000_000 - inode,
                    },
                    outcome: Outcome::Served,
                    reason: None,
                    subject: None,
                    exe: None,
                },
            );
        }
        let mut total = 0;
        let mut lines = 0;
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let parsed: Vec<Line> = text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            total = parsed.iter().map(|l| l.count).sum::<u64>();
            lines = parsed.len();
            if total == 500 {
                break;
            }
        }
        assert_eq!(total, 500, "every request is counted");
        assert!(lines <= 2, "{lines} lines for one unresolvable peer");
    }

    #[test]
    fn rotation_keeps_one_generation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        std::fs::write(&path, "old\n").unwrap();
        let mut f = rotate(&path).unwrap();
        f.write_all(b"new\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("audit.jsonl.1")).unwrap(),
            "old\n"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new\n");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}

//! `credctl audit`: the issuance log, read straight from `$XDG_STATE_HOME/credagent/audit.jsonl`.

use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Failure, Result};

fn audit_path() -> Result<PathBuf> {
    let base = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .ok_or_else(|| {
            Failure::failed("cannot find the state directory: set HOME or XDG_STATE_HOME")
        })?;
    Ok(base.join("credagent/audit.jsonl"))
}

/// One line for people: time, outcome, channel, role, token, peer.
pub fn human(line: &str) -> String {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
        return format!("(unreadable line) {line}");
    };
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("-").to_owned();
    let peer = match (
        v.get("peer_pid").and_then(|x| x.as_i64()),
        v.get("peer_exe").and_then(|x| x.as_str()),
    ) {
        (Some(pid), Some(exe)) => format!("{exe} (pid {pid}, uid {})", v["peer_uid"]),
        (Some(pid), None) => format!("pid {pid} (uid {})", v["peer_uid"]),
        _ => format!("uid {} (process gone)", v["peer_uid"]),
    };
    let count = v.get("count").and_then(|x| x.as_u64()).unwrap_or(1);
    let reason = v
        .get("reason")
        .and_then(|x| x.as_str())
        .map(|r| format!(" ({r})"))
        .unwrap_or_default();
    let subject = v
        .get("subject")
        .and_then(|x| x.as_str())
        .map(|s| format!(" [{s}]"))
        .unwrap_or_default();
    format!(
        "{} {:<8} {:<18} role={:<12} token={:<16} {}{}{}{}",
        s("time"),
        s("outcome"),
        s("channel"),
        s("role"),
        s("token_id"),
        peer,
        subject,
        reason,
        if count > 1 {
            format!(" ×{count}")
        } else {
            String::new()
        }
    )
}

pub fn audit(follow: bool, json: bool) -> Result<String> {
    let path = audit_path()?;
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !follow => {
            return Ok(format!(
                "no audit log yet at {}: nothing has been served\n",
                path.display()
            ))
        }
        Err(e) => {
            return Err(Failure::failed(format!(
                "cannot read {}: {e}",
                path.display()
            )))
        }
    };
    let mut reader = BufReader::new(file);
    let mut out = std::io::stdout().lock();
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader
            .read_line(&mut line)
            .map_err(|e| Failure::failed(format!("{}: {e}", path.display())))?;
        if n == 0 {
            if !follow {
                return Ok(String::new());
            }
            std::thread::sleep(Duration::from_millis(250));
            // Stay at the end; a rotated (truncated) file starts over.
            let pos = reader.stream_position().unwrap_or(0);
            if std::fs::metadata(&path)
                .map(|m| m.len() < pos)
                .unwrap_or(false)
            {
                let _ = reader.seek(SeekFrom::Start(0));
            }
            continue;
        }
        if !line.ends_with('\n') {
            // A line still being written: wait for the rest.
            let pos = reader.stream_position().unwrap_or(0);
            let _ = reader.seek(SeekFrom::Start(pos - n as u64));
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        let text = line.trim_end();
        // Executable and role names are chosen by the processes that asked: their control
        // characters are shown escaped, never sent to the terminal.
        let shown = if json {
            crate::text::printable(text).into_owned()
        } else {
            crate::text::printable(&human(text)).into_owned()
        };
        if writeln!(out, "{shown}").is_err() {
            return Ok(String::new());
        }
        let _ = out.flush();
    }
}

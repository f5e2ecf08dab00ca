//! Audit entries also go to the systemd journal through its native protocol when the agent runs
//! under systemd: here a datagram socket stands in for the journal's, and every entry must carry
//! its fields and no secret.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use crate::stack::{Stack, SECRET_KEY};

/// The fields of one native-protocol datagram (`KEY=value` lines; audit values have no newline
/// except in a binary field, which this reader also takes).
fn fields(datagram: &[u8]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = datagram;
    while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
        let head = String::from_utf8_lossy(&rest[..nl]).into_owned();
        match head.split_once('=') {
            Some((k, v)) => {
                out.push((k.to_owned(), v.to_owned()));
                rest = &rest[nl + 1..];
            }
            None => {
                let body = &rest[nl + 1..];
                let len = u64::from_le_bytes(body[..8].try_into().unwrap()) as usize;
                out.push((
                    head,
                    String::from_utf8_lossy(&body[8..8 + len]).into_owned(),
                ));
                rest = &body[8 + len + 1..];
            }
        }
    }
    out
}

#[test]
fn audit_entries_reach_the_journal_with_every_field_and_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.socket");
    let journal = UnixDatagram::bind(&path).unwrap();
    journal
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let s = Stack::new_with_env(
        "",
        "",
        &[
            ("INVOCATION_ID", "0123456789abcdef0123456789abcdef"),
            ("CREDAGENT_JOURNAL_SOCKET", path.to_str().unwrap()),
        ],
    )
    .with_key_and_source();
    let token = s.role_token("demo");
    assert_eq!(s.ecs(Some(&token), &[]).0, 200);

    let mut entries = Vec::new();
    let mut buf = vec![0u8; 65536];
    let opened = loop {
        let n = journal
            .recv(&mut buf)
            .expect("an audit entry reached the journal socket");
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert!(!text.contains(SECRET_KEY), "a source secret in {text}");
        assert!(!text.contains(&token), "an endpoint token in {text}");
        let f: std::collections::HashMap<String, String> = fields(&buf[..n]).into_iter().collect();
        entries.push(f.clone());
        if f.get("CREDAGENT_CHANNEL").map(String::as_str) == Some("ecs") {
            break f;
        }
    };
    assert_eq!(opened["SYSLOG_IDENTIFIER"], "credagent");
    assert_eq!(opened["CREDAGENT_OUTCOME"], "served");
    assert_eq!(opened["CREDAGENT_ROLE"], "demo");
    assert_eq!(opened["PRIORITY"], "6");
    assert_eq!(
        opened["CREDAGENT_PEER_UID"],
        nix::unistd::getuid().as_raw().to_string()
    );
    for key in [
        "MESSAGE",
        "CREDAGENT_TIME",
        "CREDAGENT_TOKEN_ID",
        "CREDAGENT_COUNT",
    ] {
        assert!(opened.contains_key(key), "{key} missing in {opened:?}");
    }
    // curl is gone before its peer can be named; credctl's control connection names its pid.
    let touch = entries
        .iter()
        .find(|e| e.get("CREDAGENT_CHANNEL").map(String::as_str) == Some("session_open"))
        .expect("a session_open entry");
    assert!(touch.contains_key("CREDAGENT_PEER_PID"), "{touch:?}");
    assert_eq!(
        touch["CREDAGENT_SUBJECT"], "soft",
        "the key that was touched"
    );
    let channels: Vec<&str> = entries
        .iter()
        .filter_map(|e| e.get("CREDAGENT_CHANNEL").map(String::as_str))
        .collect();
    for c in ["key_add", "source_add", "touch", "session_open"] {
        assert!(channels.contains(&c), "no {c} entry in {channels:?}");
    }
}

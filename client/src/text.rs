//! Text chosen by other processes (role names, executable paths, messages that quote them) made
//! safe for a terminal: control characters are printed escaped, never interpreted.

use std::borrow::Cow;

/// `s` with every control character (C0, DEL, C1: escape sequences, bells, carriage returns)
/// written as a Rust escape such as `\u{1b}`, so a process cannot clear or rewrite the screen
/// of the person reading its name.
pub fn printable(s: &str) -> Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// [`printable`] for a message of several lines (an error that lists what changed, say): line
/// breaks stay line breaks, every other control character is escaped. The agent checks the names
/// it puts in messages (no control characters), so a line break is its own.
pub fn printable_lines(s: &str) -> String {
    s.split('\n')
        .map(|line| printable(line).into_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

/// `YYYY-MM-DD HH:MM` in UTC for unix seconds.
pub fn utc_minute(secs: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    let s = humantime::format_rfc3339_seconds(t).to_string();
    s.get(..16).unwrap_or(&s).replace('T', " ")
}

/// `YYYY-MM-DD` in UTC for unix seconds.
pub fn utc_date(secs: u64) -> String {
    utc_minute(secs).chars().take(10).collect()
}

/// The time until `expires_at` (Unix seconds), as `1h05m`.
pub fn time_left(expires_at: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let left = expires_at.saturating_sub(now);
    format!("{}h{:02}m", left / 3600, left / 60 % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(printable("prod"), "prod");
        assert_eq!(printable("dév ü"), "dév ü");
        assert_eq!(
            printable("evil\x1b[2J\x1b]0;pwn\x07"),
            "evil\\u{1b}[2J\\u{1b}]0;pwn\\u{7}"
        );
        assert_eq!(printable("a\rb\nc\u{9b}d"), "a\\rb\\nc\\u{9b}d");
    }

    #[test]
    fn messages_keep_their_line_breaks_only() {
        assert_eq!(
            printable_lines("changed:\n  a\x1b[2J\n  b\r"),
            "changed:\n  a\\u{1b}[2J\n  b\\r"
        );
    }

    #[test]
    fn dates() {
        assert_eq!(utc_date(0), "1970-01-01");
        assert_eq!(utc_date(1_795_912_526), "2026-11-29");
        assert_eq!(utc_minute(1_795_912_526), "2026-11-29 00:35");
    }
}

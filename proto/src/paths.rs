//! Where the control socket lives: `$CREDAGENT_SOCK`, else `$XDG_RUNTIME_DIR/credagent/agent.sock`,
//! else `/tmp/credagent-$UID/agent.sock`.

use std::ffi::OsString;
use std::path::PathBuf;

/// Which rule chose the socket path; the agent is stricter about directories it creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketPathSource {
    /// `$CREDAGENT_SOCK` (or an explicit `--socket`).
    Explicit,
    /// `$XDG_RUNTIME_DIR/credagent/agent.sock`.
    RuntimeDir,
    /// `/tmp/credagent-$UID/agent.sock`.
    TmpFallback,
}

/// The socket path for this process's environment and the given uid.
pub fn socket_path(uid: u32) -> (PathBuf, SocketPathSource) {
    socket_path_from(|name| std::env::var_os(name), uid)
}

/// The socket path, with the environment supplied by `env` (for tests). Empty variables count as
/// unset, as they do for most Unix tools.
pub fn socket_path_from(
    env: impl Fn(&str) -> Option<OsString>,
    uid: u32,
) -> (PathBuf, SocketPathSource) {
    let get = |name: &str| env(name).filter(|v| !v.is_empty());
    if let Some(sock) = get("CREDAGENT_SOCK") {
        return (PathBuf::from(sock), SocketPathSource::Explicit);
    }
    if let Some(runtime) = get("XDG_RUNTIME_DIR") {
        let mut p = PathBuf::from(runtime);
        p.push("credagent");
        p.push("agent.sock");
        return (p, SocketPathSource::RuntimeDir);
    }
    (
        PathBuf::from(format!("/tmp/credagent-{uid}/agent.sock")),
        SocketPathSource::TmpFallback,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let map: HashMap<String, OsString> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn explicit_socket_wins() {
        let (p, src) = socket_path_from(
            env(&[("CREDAGENT_SOCK", "/x/s"), ("XDG_RUNTIME_DIR", "/run/u")]),
            5,
        );
        assert_eq!(
            (p, src),
            (PathBuf::from("/x/s"), SocketPathSource::Explicit)
        );
    }

    #[test]
    fn runtime_dir_next() {
        let (p, src) = socket_path_from(env(&[("XDG_RUNTIME_DIR", "/run/user/5")]), 5);
        assert_eq!(p, PathBuf::from("/run/user/5/credagent/agent.sock"));
        assert_eq!(src, SocketPathSource::RuntimeDir);
    }

    #[test]
    fn tmp_fallback_names_the_uid_and_empty_vars_count_as_unset() {
        let (p, src) = socket_path_from(
            env(&[("CREDAGENT_SOCK", ""), ("XDG_RUNTIME_DIR", "")]),
            1234,
        );
        assert_eq!(p, PathBuf::from("/tmp/credagent-1234/agent.sock"));
        assert_eq!(src, SocketPathSource::TmpFallback);
    }
}

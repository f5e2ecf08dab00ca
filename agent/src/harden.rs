//! Process hardening that must happen before any secret exists and before the tokio runtime
//! starts threads: no core dumps, no ptrace by other same-uid processes, private file modes.

use nix::sys::resource::{getrlimit, setrlimit, Resource};
use nix::sys::stat::{umask, Mode};

/// Applies every hardening step, failing if the kernel refuses one.
pub fn harden_process() -> Result<(), nix::Error> {
    // Files and sockets we create are private to us unless we widen them on purpose.
    umask(Mode::from_bits_truncate(0o077));
    // No core file may ever hold a source key or session token.
    setrlimit(Resource::RLIMIT_CORE, 0, 0)?;
    // Not dumpable: no core dumps and no ptrace attach from other processes of the same user
    // (unless they are root), and /proc/PID/mem etc. become root-owned.
    nix::sys::prctl::set_dumpable(false)?;
    // Idle SDK connections must not exhaust descriptors: raise the soft limit to the hard one
    // (capped), so the connection limit, not EMFILE, is what bounds the endpoint.
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    let want = hard.min(MAX_NOFILE);
    if soft < want {
        setrlimit(Resource::RLIMIT_NOFILE, want, hard)?;
    }
    Ok(())
}

/// Gives up the group of a set-group-id credagent (the Debian package installs it `root:credagent
/// 2755`) once the control socket is listening. The socket keeps the group it was listened with,
/// which `credctl` checks through the kernel (`SO_PEERCRED`) and no process of the user can take
/// on; nothing the agent starts later (a browser, a notifier) may carry it, or it could listen
/// with that group itself. Not set-group-id: nothing to do.
pub fn drop_setgid() -> Result<(), nix::Error> {
    let real = nix::unistd::getgid();
    if nix::unistd::getegid() != real {
        nix::unistd::setresgid(real, real, real)?;
        // A credential change resets dumpability: make sure it stays off.
        nix::sys::prctl::set_dumpable(false)?;
    }
    Ok(())
}

/// Variables that would decide where the agent's requests go or which TLS roots it trusts.
/// A same-user process sets the agent's environment (a unit's `Environment=`, a wrapper), so
/// none of them may choose where a secret goes: endpoints come from config.toml (confirmed by a
/// touch), TLS roots from the system store.
pub const SCRUBBED: &[&str] = &[
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "AWS_CA_BUNDLE",
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_STS",
    "AWS_ENDPOINT_URL_SSO",
    "AWS_ENDPOINT_URL_SSO_OIDC",
    "AWS_ENDPOINT_URL_SIGNIN",
];

/// Removes [`SCRUBBED`] from the environment and returns the names that were set. Call it from
/// `main` before any thread exists (changing the environment is not thread-safe).
pub fn scrub_environment() -> Vec<&'static str> {
    SCRUBBED
        .iter()
        .copied()
        .filter(|name| {
            let set = std::env::var_os(name).is_some();
            if set {
                std::env::remove_var(name);
            }
            set
        })
        .collect()
}

/// The descriptor limit the agent asks for.
pub const MAX_NOFILE: u64 = 65_536;

/// The soft descriptor limit in effect.
pub fn nofile_limit() -> u64 {
    getrlimit(Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(1024)
}

#[cfg(test)]
mod tests {
    #[test]
    fn variables_that_redirect_secrets_are_removed() {
        // A name no other test reads, and one from the list.
        std::env::set_var("SSL_CERT_DIR", "/tmp/planted-ca");
        let removed = super::scrub_environment();
        assert!(removed.contains(&"SSL_CERT_DIR"), "{removed:?}");
        assert!(std::env::var_os("SSL_CERT_DIR").is_none());
    }

    #[test]
    fn hardening_applies() {
        super::harden_process().unwrap();
        assert!(!nix::sys::prctl::get_dumpable().unwrap());
        let (soft, hard) =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_CORE).unwrap();
        assert_eq!((soft, hard), (0, 0));
    }
}

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
    fn hardening_applies() {
        super::harden_process().unwrap();
        assert!(!nix::sys::prctl::get_dumpable().unwrap());
        let (soft, hard) =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_CORE).unwrap();
        assert_eq!((soft, hard), (0, 0));
    }
}

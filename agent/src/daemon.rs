//! Detaching from the terminal when started without `--foreground`: fork once (before any thread
//! exists), let the parent exit, and point the child's stdio at /dev/null and the log file.

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::path::Path;

use nix::unistd::{fork, setsid, ForkResult};

/// Forks into the background. Returns in the child only; the parent exits with status 0, because
/// the listeners are already bound and connections will queue until the child serves them.
pub fn detach(log_file: &Path) -> anyhow::Result<()> {
    use anyhow::Context;
    if let Some(dir) = log_file.parent() {
        crate::util::create_private_dir(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let log = crate::util::open_append(log_file)
        .with_context(|| format!("cannot open log file {}", log_file.display()))?;
    let null = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    // SAFETY: called from the synchronous main before the tokio runtime or any other thread
    // exists, so the child is a faithful single-threaded copy.
    match unsafe { fork() }.context("cannot fork the agent into the background")? {
        ForkResult::Parent { .. } => std::process::exit(0),
        ForkResult::Child => {}
    }
    setsid().context("setsid")?;
    nix::unistd::dup2(null.as_raw_fd(), 0)?;
    nix::unistd::dup2(null.as_raw_fd(), 1)?;
    nix::unistd::dup2(log.as_raw_fd(), 2)?;
    let _ = std::env::set_current_dir("/");
    Ok(())
}

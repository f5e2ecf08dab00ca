//! Log set-up: human-readable lines on stderr in the foreground, plain lines (no colour, no
//! timestamp: journald adds its own) under systemd, and a size-bounded `agent.log` when the
//! agent runs detached. Secrets never reach a log line: their types do not implement
//! `Debug`/`Display`.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tracing_subscriber::EnvFilter;

use crate::util::LockExt;

/// Past this size `agent.log` becomes `agent.log.1` (replacing the previous one) and a new
/// file starts: at most twice this much on disk, whoever floods the agent with refusals.
pub const MAX_LOG_BYTES: u64 = 16 << 20;

/// Where log lines go.
pub enum Target<'a> {
    /// The terminal (foreground).
    Stderr,
    /// journald (under systemd): no timestamps, no targets.
    Journal,
    /// A log file, rotated at [`MAX_LOG_BYTES`] (detached).
    File(&'a Path),
}

/// Installs the global subscriber. `CREDAGENT_LOG` takes an `EnvFilter` directive.
pub fn init(target: Target<'_>) -> io::Result<()> {
    let filter =
        EnvFilter::try_from_env("CREDAGENT_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false);
    match target {
        Target::Stderr => builder.with_writer(io::stderr).init(),
        Target::Journal => builder
            .with_writer(io::stderr)
            .without_time()
            .with_target(false)
            .init(),
        Target::File(path) => {
            let log = Arc::new(RotatingFile::open(path, MAX_LOG_BYTES)?);
            builder.with_writer(move || LogWriter(log.clone())).init();
        }
    }
    Ok(())
}

use crate::util::open_append as open_log;

/// An append-only log file that starts over (keeping one previous generation) past a size.
pub struct RotatingFile {
    path: PathBuf,
    max: u64,
    /// The open file and how many bytes it holds.
    state: Mutex<(File, u64)>,
}

impl RotatingFile {
    pub fn open(path: &Path, max: u64) -> io::Result<RotatingFile> {
        let file = open_log(path)?;
        let len = file.metadata()?.len();
        Ok(RotatingFile {
            path: path.to_owned(),
            max,
            state: Mutex::new((file, len)),
        })
    }

    fn write_line(&self, buf: &[u8]) -> io::Result<usize> {
        let mut st = self.state.locked();
        if st.1 + buf.len() as u64 > self.max && st.1 > 0 {
            let mut old = self.path.clone().into_os_string();
            old.push(".1");
            std::fs::rename(&self.path, &old)?;
            let fresh = open_log(&self.path)?;
            // Whatever else writes to stderr (a panic message) follows the log to the new file
            // when stderr is the log (detached).
            if same_file(&st.0, 2) {
                // SAFETY: dup2 onto fd 2, which this process owns for its whole life.
                unsafe { libc::dup2(fresh.as_raw_fd(), 2) };
            }
            *st = (fresh, 0);
        }
        st.0.write_all(buf)?;
        st.1 += buf.len() as u64;
        Ok(buf.len())
    }
}

/// Whether file descriptor `fd` refers to the same open file as `file`.
fn same_file(file: &File, fd: i32) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(a) = file.metadata() else { return false };
    // SAFETY: fstat on a descriptor number into a zeroed struct we own.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return false;
    }
    a.dev() == st.st_dev && a.ino() == st.st_ino
}

/// One log event's writer.
pub struct LogWriter(Arc<RotatingFile>);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write_line(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_is_bounded_and_keeps_one_generation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.log");
        let log = RotatingFile::open(&path, 1000).unwrap();
        let line = [b'x'; 99];
        for _ in 0..100 {
            log.write_line(&line).unwrap();
            log.write_line(b"\n").unwrap();
        }
        let current = std::fs::metadata(&path).unwrap().len();
        let previous = std::fs::metadata(dir.path().join("agent.log.1"))
            .unwrap()
            .len();
        assert!(current <= 1000 && previous <= 1000, "{current} {previous}");
        assert!(current + previous >= 1000, "recent lines are kept");
        let names = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(names, 2, "one previous generation, no more");
    }

    #[test]
    fn a_symlink_in_place_of_the_log_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, "").unwrap();
        let path = dir.path().join("agent.log");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        assert!(RotatingFile::open(&path, 1000).is_err());
    }
}

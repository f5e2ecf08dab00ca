//! Small helpers every part uses: poison-tolerant locks and atomic file replacement.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Locks that keep serving after a panic elsewhere. No code under these locks leaves a map
/// half-updated (every update is a single insert, remove or replace), so a poisoned lock still
/// guards consistent data.
pub trait LockExt<T> {
    type Guard<'a>
    where
        Self: 'a;
    fn locked(&self) -> Self::Guard<'_>;
}

impl<T> LockExt<T> for Mutex<T> {
    type Guard<'a>
        = MutexGuard<'a, T>
    where
        T: 'a;
    fn locked(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Read and write access to an `RwLock`, poison-tolerant as [`LockExt`].
pub trait RwLockExt<T> {
    fn read_locked(&self) -> RwLockReadGuard<'_, T>;
    fn write_locked(&self) -> RwLockWriteGuard<'_, T>;
}

impl<T> RwLockExt<T> for RwLock<T> {
    fn read_locked(&self) -> RwLockReadGuard<'_, T> {
        self.read().unwrap_or_else(PoisonError::into_inner)
    }
    fn write_locked(&self) -> RwLockWriteGuard<'_, T> {
        self.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// At most one event per period, counting the ones it held back: for log lines that another
/// user could otherwise repeat until the disk is full.
pub struct Throttle {
    period: std::time::Duration,
    /// When the last event was let through, and how many were held back since.
    state: Mutex<(Option<std::time::Instant>, u64)>,
}

impl Throttle {
    pub const fn new(period: std::time::Duration) -> Throttle {
        Throttle {
            period,
            state: Mutex::new((None, 0)),
        }
    }

    /// `Some(n)` when this event may be logged, `n` being how many were held back before it;
    /// `None` when it must be held back. Uses the monotonic clock: a wall-clock step changes
    /// nothing.
    pub fn allow(&self) -> Option<u64> {
        self.allow_at(std::time::Instant::now())
    }

    fn allow_at(&self, now: std::time::Instant) -> Option<u64> {
        let mut st = self.state.locked();
        match st.0 {
            Some(last) if now.saturating_duration_since(last) < self.period => {
                st.1 += 1;
                None
            }
            _ => {
                let held = std::mem::take(&mut st.1);
                st.0 = Some(now);
                Some(held)
            }
        }
    }
}

/// Unix seconds of `t` (0 for times before 1970).
pub fn unix_secs(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Opens (creating, 0600) `path` for appending, refusing a symlink planted in its place.
pub fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Opens (creating, 0600, keeping its content) a lock file, refusing a symlink in its place.
pub fn open_lock_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Creates `dir` and its parents, new ones 0700.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// The prefix of the temp files [`write_atomic`] leaves behind if it is killed mid-write.
pub fn temp_prefix(file_name: &str) -> String {
    format!(".{file_name}.tmp-")
}

/// Replaces `path` with `bytes` so that a crash leaves either the old or the new content: a new
/// temp file in the same directory (O_EXCL, created 0600, then given `mode`), write, fsync,
/// rename, fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        "{}{:016x}",
        temp_prefix(&name),
        rand::random::<u64>()
    ));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(bytes)?;
        if mode != 0o600 {
            file.set_permissions(fs::Permissions::from_mode(mode))?;
        }
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        // Best effort: the temp file may not exist (the open failed) or is already renamed.
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Percent-encodes a URL query value: RFC 3986's unreserved characters stay, every other byte
/// becomes `%XX`.
pub fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Text another party chose (a service's message, a process's command line), fit to show on a
/// terminal or before a touch: control characters escaped, at most `300` characters kept.
pub fn printable(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars().take(300) {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_content_and_sets_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.json");
        write_atomic(&p, b"one", 0o600).unwrap();
        write_atomic(&p, b"two", 0o640).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o640
        );
        let left: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "no temp file left behind");
    }

    #[test]
    fn throttle_lets_one_through_per_period_and_counts_the_rest() {
        let t = Throttle::new(std::time::Duration::from_secs(10));
        let t0 = std::time::Instant::now();
        assert_eq!(t.allow_at(t0), Some(0));
        for i in 1..=5 {
            assert_eq!(t.allow_at(t0 + std::time::Duration::from_secs(i)), None);
        }
        assert_eq!(t.allow_at(t0 + std::time::Duration::from_secs(10)), Some(5));
        assert_eq!(t.allow_at(t0 + std::time::Duration::from_secs(11)), None);
    }

    #[test]
    fn poisoned_lock_still_serves() {
        let m = std::sync::Arc::new(Mutex::new(1));
        let m2 = m.clone();
        let _ = std::thread::spawn(move || {
            let _g = m2.lock().unwrap();
            panic!("poison it");
        })
        .join();
        assert!(m.lock().is_err(), "the mutex is poisoned");
        assert_eq!(*m.locked(), 1);
    }

    #[test]
    fn percent_encoding_keeps_only_unreserved_characters() {
        assert_eq!(super::percent_encode("a-b_c.d~e"), "a-b_c.d~e");
        assert_eq!(
            super::percent_encode("http://x/y?z=1 2"),
            "http%3A%2F%2Fx%2Fy%3Fz%3D1%202"
        );
        assert_eq!(super::percent_encode("é"), "%C3%A9");
    }
}

//! Processes as the kernel names them, for grants bound to a process tree: a process is its pid
//! *and* its start time (so a reused pid is another process), and a token bound to one serves
//! only requests whose socket that process or one of its descendants holds.
//!
//! Everything here reads `/proc` of this same user (no privilege): `/proc/PID/stat` for the
//! start time and parent, `/proc/PID/task/TID/children` for the children, and `/proc/PID/fd`
//! for the sockets a process holds.

use std::collections::{HashSet, VecDeque};

/// A process: its pid and its start time in clock ticks after boot (`/proc/PID/stat` field 22).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProcessId {
    pub pid: i32,
    pub start: u64,
}

/// The fields of `/proc/PID/stat` that matter here: (parent pid, start time).
fn stat(pid: i32) -> Option<(i32, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold anything: fields count after the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): field N is fields[N - 3].
    let ppid = fields.get(1)?.parse().ok()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((ppid, start))
}

impl ProcessId {
    /// The running process `pid`, if there is one.
    pub fn of(pid: i32) -> Option<ProcessId> {
        stat(pid).map(|(_, start)| ProcessId { pid, start })
    }

    /// Whether this very process still runs (not another one that got its pid).
    pub fn alive(&self) -> bool {
        stat(self.pid).is_some_and(|(_, start)| start == self.start)
    }

    /// Whether this process is `pid` or one of its ancestors (`pid`'s parent, its parent…).
    pub fn is_ancestor_or_self_of(&self, pid: i32) -> bool {
        let mut p = pid;
        // The depth of a process tree is small; the bound only stops a loop on a broken read.
        for _ in 0..4096 {
            let Some((ppid, start)) = stat(p) else {
                return false;
            };
            if p == self.pid {
                return start == self.start;
            }
            if ppid <= 0 || ppid == p {
                return false;
            }
            p = ppid;
        }
        false
    }

    /// The name of its executable, for messages and the audit.
    pub fn exe(&self) -> Option<String> {
        std::fs::read_link(format!("/proc/{}/exe", self.pid))
            .ok()
            .map(|p| p.display().to_string())
    }
}

/// The children of `pid`, from each of its threads' `children` file; `None` when the kernel
/// has no such files (built without `CONFIG_PROC_CHILDREN`).
fn children(pid: i32) -> Option<Vec<i32>> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut out = Vec::new();
    let mut any = false;
    for task in tasks.flatten() {
        let Ok(text) = std::fs::read_to_string(task.path().join("children")) else {
            continue;
        };
        any = true;
        out.extend(
            text.split_whitespace()
                .filter_map(|c| c.parse::<i32>().ok()),
        );
    }
    any.then_some(out)
}

/// Every process's parent, from one scan of `/proc` (when `children` files are missing).
fn parents() -> Vec<(i32, i32)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| stat(pid).map(|(ppid, _)| (pid, ppid)))
        .collect()
}

/// Whether process `pid` holds the socket whose inode is `inode` among its open files.
fn holds_socket(pid: i32, target: &str) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .ok()
            .is_some_and(|l| l.as_os_str() == target)
    })
}

/// Whether the socket `inode` (the peer end of a connection) is held by `root` or by one of
/// its descendants, `root` being still the process it was. Looks only at that tree.
pub fn tree_holds_socket(root: ProcessId, inode: u32) -> bool {
    if !root.alive() {
        return false;
    }
    let target = format!("socket:[{inode}]");
    let mut seen = HashSet::new();
    let mut queue = VecDeque::from([root.pid]);
    let mut all_parents: Option<Vec<(i32, i32)>> = None;
    while let Some(pid) = queue.pop_front() {
        if !seen.insert(pid) || seen.len() > 65_536 {
            continue;
        }
        if holds_socket(pid, &target) {
            // Checked again after the walk: the root must not have been replaced meanwhile.
            return root.alive();
        }
        match children(pid) {
            Some(kids) => queue.extend(kids),
            None => {
                let map = all_parents.get_or_insert_with(parents);
                queue.extend(map.iter().filter(|(_, pp)| *pp == pid).map(|(p, _)| *p));
            }
        }
    }
    false
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};
    use std::os::unix::fs::MetadataExt;

    fn me() -> ProcessId {
        ProcessId::of(std::process::id() as i32).unwrap()
    }

    #[test]
    fn a_process_is_its_pid_and_its_start() {
        let me = me();
        assert!(me.alive());
        let other = ProcessId {
            start: me.start + 1,
            ..me
        };
        assert!(!other.alive(), "a reused pid is another process");
        assert!(me.is_ancestor_or_self_of(me.pid));
        assert!(!other.is_ancestor_or_self_of(me.pid));
    }

    #[test]
    fn a_socket_is_found_in_its_holders_tree_only() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let inode = {
            let fd = std::os::fd::AsRawFd::as_raw_fd(&client);
            std::fs::metadata(format!("/proc/self/fd/{fd}"))
                .unwrap()
                .ino() as u32
        };
        assert!(tree_holds_socket(me(), inode));
        // A child's tree does not hold its parent's socket.
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let kid = ProcessId::of(child.id() as i32).unwrap();
        assert!(kid.alive());
        assert!(me().is_ancestor_or_self_of(kid.pid));
        assert!(!kid.is_ancestor_or_self_of(me().pid));
        assert!(!tree_holds_socket(kid, inode));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!kid.alive());
        assert!(!tree_holds_socket(kid, inode), "a gone root holds nothing");
        drop(client);
    }
}

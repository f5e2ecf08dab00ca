//! Processes as the kernel names them, for grants bound to a process tree: a process is its pid
//! *and* its start time (so a reused pid is another process), and a token bound to one serves
//! only requests whose socket that process or one of its descendants holds.
//!
//! Everything here reads `/proc` of this same user (no privilege): `/proc/PID/stat` for the
//! start time and parent, `/proc/PID/task/TID/children` for the children, and `/proc/PID/fd`
//! for the sockets a process holds.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;

use crate::util::LockExt;

/// A process: its pid and its start time in clock ticks after boot (`/proc/PID/stat` field 22).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
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
        exe_of(self.pid)
    }

    /// Its parent, while this process still runs.
    pub fn parent(&self) -> Option<ProcessId> {
        let (ppid, start) = stat(self.pid)?;
        if start != self.start {
            return None;
        }
        ProcessId::of(ppid)
    }

    /// Its command line, arguments joined by spaces (empty for a kernel thread or a zombie).
    pub fn command_line(&self) -> String {
        std::fs::read(format!("/proc/{}/cmdline", self.pid))
            .map(|raw| {
                raw.split(|b| *b == 0)
                    .filter(|a| !a.is_empty())
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default()
    }
}

/// Every process that holds the socket `inode` (a socket passed on, or inherited across a
/// fork, has several): one scan of `/proc`.
pub fn holders_of(inode: u32) -> Vec<ProcessId> {
    let target = format!("socket:[{inode}]");
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| socket_fd(*pid, &target, |_, _| {}).is_some())
        .filter_map(ProcessId::of)
        .collect()
}

/// The session (`setsid`) process `pid` belongs to (`/proc/PID/stat` field 6).
pub fn session_of(pid: i32) -> Option<i32> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    rest.split_whitespace().nth(3)?.parse().ok()
}

/// Whether `client` still holds the socket `inode` by descriptor `fd` (a connection found in a
/// tree earlier; its socket may have been handed to another process since).
pub fn still_holds(client: ProcessId, fd: i32, inode: u32) -> bool {
    fd_is(client.pid, fd, &format!("socket:[{inode}]"))
}

/// The executable process `pid` runs, as `/proc/PID/exe` names it.
pub fn exe_of(pid: i32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .map(|p| p.display().to_string())
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

/// Whether `/proc/PID/fd/FD` is the socket `target` (`socket:[INODE]`).
fn fd_is(pid: i32, fd: i32, target: &str) -> bool {
    std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
        .ok()
        .is_some_and(|l| l.as_os_str() == target)
}

/// The descriptor by which process `pid` holds the socket `target`, if it does. Every other
/// socket read on the way is handed to `saw` (inode, descriptor): the scan has paid for them.
fn socket_fd(pid: i32, target: &str, mut saw: impl FnMut(u32, i32)) -> Option<i32> {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    let mut found = None;
    for fd in fds.flatten() {
        let Some(n) = fd.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(link) = std::fs::read_link(fd.path()) else {
            continue;
        };
        if link.as_os_str() == target {
            found = Some(n);
        } else if let Some(inode) = socket_inode(&link) {
            saw(inode, n);
        }
    }
    found
}

/// The inode of a descriptor link that names a socket (`socket:[INODE]`).
fn socket_inode(link: &std::path::Path) -> Option<u32> {
    link.to_str()?
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// Where the clients of a holder's tree have free descriptors: a process and the descriptor
/// number of a connection of theirs that closed, and that no new connection was found at
/// since. A new socket takes its process's lowest free descriptor, so a client that reconnects
/// (an SDK, a load generator) is found by probing these lowest first, usually with one
/// `readlink` instead of a walk of the tree.
#[derive(Default)]
pub struct SocketHints {
    by_holder: Mutex<HashMap<ProcessId, std::collections::BTreeSet<(i32, ProcessId)>>>,
    /// (holder, client) pairs whose ancestry was read from `/proc` lately, and when: within
    /// [`VERIFIED_FOR`] a hint that finds the socket needs no second walk up the tree.
    verified: Mutex<HashMap<(ProcessId, ProcessId), std::time::Instant>>,
    /// Sockets a scan of a tree process's descriptors saw on the way (inode → holder, process,
    /// descriptor, when): a client with many connections (a load generator, a parallel SDK)
    /// has its next connections' sockets open already when one scan runs, so they are found
    /// with one `readlink` each instead of a scan each. Only a place to look first: the
    /// descriptor is read again and the process's place in the tree checked before it counts.
    seen: Mutex<HashMap<u32, (ProcessId, ProcessId, i32, std::time::Instant)>>,
    /// Lookups made, found by a hint, and their total time (for `status` and the benchmark).
    lookups: std::sync::atomic::AtomicU64,
    hint_hits: std::sync::atomic::AtomicU64,
    nanos: std::sync::atomic::AtomicU64,
}

/// What the binding checks cost so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LookupStats {
    /// New connections of bound tokens looked up.
    pub lookups: u64,
    /// Of which a free-descriptor hint found.
    pub hint_hits: u64,
    /// Their total time, in microseconds.
    pub micros: u64,
}

/// How long a client found in a holder's tree counts as still in it without reading its
/// ancestry again (a process that leaves the tree keeps the token at most this long).
const VERIFIED_FOR: std::time::Duration = std::time::Duration::from_secs(1);

/// Free descriptors probed at most before the clients' descriptors are searched.
const HINT_PROBES: usize = 8;

/// How long a socket seen in a scan is worth probing first, and how many are kept.
const SEEN_FOR: std::time::Duration = std::time::Duration::from_secs(2);
const SEEN_MAX: usize = 65_536;

/// Hints kept per holder, and holders kept at most.
const HINTS_PER_HOLDER: usize = 4096;
const HOLDERS: usize = 256;

impl SocketHints {
    /// A connection that `client` held by descriptor `fd`, in `holder`'s tree, has closed.
    pub fn closed(&self, holder: ProcessId, client: ProcessId, fd: i32) {
        let mut map = self.by_holder.locked();
        if map.len() >= HOLDERS && !map.contains_key(&holder) {
            map.clear();
        }
        let free = map.entry(holder).or_default();
        if free.len() >= HINTS_PER_HOLDER {
            free.clear();
        }
        free.insert((fd, client));
    }

    /// A new connection was found at `client`'s descriptor `fd`: it is in use again.
    fn taken(&self, holder: ProcessId, client: ProcessId, fd: i32) {
        if let Some(free) = self.by_holder.locked().get_mut(&holder) {
            free.remove(&(fd, client));
        }
    }

    /// What the lookups cost so far.
    pub fn stats(&self) -> LookupStats {
        use std::sync::atomic::Ordering::Relaxed;
        LookupStats {
            lookups: self.lookups.load(Relaxed),
            hint_hits: self.hint_hits.load(Relaxed),
            micros: self.nanos.load(Relaxed) / 1000,
        }
    }

    /// The processes of `holder`'s tree that connections were found at lately, newest first.
    fn clients_of(&self, holder: ProcessId) -> Vec<ProcessId> {
        let v = self.verified.locked();
        let mut found: Vec<(std::time::Instant, ProcessId)> = v
            .iter()
            .filter(|((h, _), _)| *h == holder)
            .map(|((_, c), t)| (*t, *c))
            .collect();
        found.sort_unstable_by_key(|f| std::cmp::Reverse(f.0));
        found.into_iter().map(|(_, c)| c).take(8).collect()
    }

    fn recently_verified(&self, holder: ProcessId, client: ProcessId) -> bool {
        self.verified
            .locked()
            .get(&(holder, client))
            .is_some_and(|t| t.elapsed() < VERIFIED_FOR)
    }

    fn verified_now(&self, holder: ProcessId, client: ProcessId) {
        let mut v = self.verified.locked();
        if v.len() >= HOLDERS * 4 {
            v.retain(|_, t| t.elapsed() < VERIFIED_FOR);
        }
        v.insert((holder, client), std::time::Instant::now());
    }

    /// Sockets of `client`, in `holder`'s tree, that a scan saw.
    fn saw(&self, holder: ProcessId, client: ProcessId, sockets: &[(u32, i32)]) {
        if sockets.is_empty() {
            return;
        }
        let now = std::time::Instant::now();
        let mut seen = self.seen.locked();
        if seen.len() + sockets.len() > SEEN_MAX {
            seen.retain(|_, e| now.duration_since(e.3) < SEEN_FOR);
            if seen.len() + sockets.len() > SEEN_MAX {
                seen.clear();
            }
        }
        for &(inode, fd) in sockets {
            seen.insert(inode, (holder, client, fd, now));
        }
    }

    /// Where a scan saw socket `inode` lately in `holder`'s tree (taken: it is looked at once).
    fn seen_at(&self, holder: ProcessId, inode: u32) -> Option<(ProcessId, i32)> {
        let mut seen = self.seen.locked();
        let (h, client, fd, at) = seen.remove(&inode)?;
        (h == holder && at.elapsed() < SEEN_FOR).then_some((client, fd))
    }

    /// The lowest free descriptors of `holder`'s clients, at most [`HINT_PROBES`] of them.
    fn for_holder(&self, holder: ProcessId) -> Vec<(ProcessId, i32)> {
        self.by_holder
            .locked()
            .get(&holder)
            .map(|free| {
                free.iter()
                    .take(HINT_PROBES)
                    .map(|(fd, client)| (*client, *fd))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Which process of `root`'s tree holds the socket `inode` (the peer end of a connection), and
/// by which descriptor; `None` when none does or `root` is no longer the process it was. Probes
/// `hints` first, then walks only that tree.
pub fn find_in_tree(root: ProcessId, inode: u32, hints: &SocketHints) -> Option<(ProcessId, i32)> {
    use std::sync::atomic::Ordering::Relaxed;
    let started = std::time::Instant::now();
    let (found, by_hint) = lookup(root, inode, hints);
    hints.lookups.fetch_add(1, Relaxed);
    if by_hint {
        hints.hint_hits.fetch_add(1, Relaxed);
    }
    let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
    hints.nanos.fetch_add(nanos, Relaxed);
    found
}

/// [`find_in_tree`], and whether a hint found it.
fn lookup(root: ProcessId, inode: u32, hints: &SocketHints) -> (Option<(ProcessId, i32)>, bool) {
    let target = format!("socket:[{inode}]");
    // A scan for another connection of this tree saw this socket a moment ago.
    if let Some((client, fd)) = hints.seen_at(root, inode) {
        if fd_is(client.pid, fd, &target)
            && (hints.recently_verified(root, client)
                || (root.alive() && client.alive() && root.is_ancestor_or_self_of(client.pid)))
        {
            hints.verified_now(root, client);
            hints.taken(root, client, fd);
            return (Some((client, fd)), true);
        }
    }
    // A descriptor is free here only until a connection is found at it (by any path below),
    // so the lowest free one is where the client's new socket most likely is.
    for (client, fd) in hints.for_holder(root) {
        if !fd_is(client.pid, fd, &target) {
            continue;
        }
        if hints.recently_verified(root, client)
            || (root.alive() && client.alive() && root.is_ancestor_or_self_of(client.pid))
        {
            hints.verified_now(root, client);
            hints.taken(root, client, fd);
            return (Some((client, fd)), true);
        }
    }
    if !root.alive() {
        return (None, false);
    }
    // A client seen before (the same SDK or load generator, on a descriptor not freed by a
    // connection of ours): its descriptors are searched before the whole tree.
    for client in hints.clients_of(root) {
        let mut others = Vec::new();
        let found = socket_fd(client.pid, &target, |i, fd| others.push((i, fd)));
        hints.saw(root, client, &others);
        if let Some(fd) = found {
            if client.alive() && root.is_ancestor_or_self_of(client.pid) {
                hints.verified_now(root, client);
                hints.taken(root, client, fd);
                return (Some((client, fd)), false);
            }
        }
    }
    let mut seen = HashSet::new();
    let mut queue = VecDeque::from([root.pid]);
    let mut all_parents: Option<Vec<(i32, i32)>> = None;
    while let Some(pid) = queue.pop_front() {
        if !seen.insert(pid) || seen.len() > 65_536 {
            continue;
        }
        let mut others = Vec::new();
        if let Some(fd) = socket_fd(pid, &target, |i, fd| others.push((i, fd))) {
            // Checked again after the walk: the root must not have been replaced meanwhile.
            let Some(client) = ProcessId::of(pid) else {
                return (None, false);
            };
            hints.saw(root, client, &others);
            if !root.alive() {
                return (None, false);
            }
            hints.verified_now(root, client);
            hints.taken(root, client, fd);
            return (Some((client, fd)), false);
        }
        match children(pid) {
            Some(kids) => queue.extend(kids),
            None => {
                let map = all_parents.get_or_insert_with(parents);
                queue.extend(map.iter().filter(|(_, pp)| *pp == pid).map(|(p, _)| *p));
            }
        }
    }
    (None, false)
}

/// Whether the socket `inode` is held by `root` or by one of its descendants (tests).
#[cfg(test)]
fn tree_holds_socket(root: ProcessId, inode: u32) -> bool {
    find_in_tree(root, inode, &SocketHints::default()).is_some()
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

        // A hint is only a place to look first: a hint that names a process outside the tree
        // finds nothing there, and the walk decides.
        let hints = SocketHints::default();
        let (found, fd) = find_in_tree(me(), inode, &hints).unwrap();
        assert_eq!(found, me());
        hints.closed(me(), found, fd);
        assert_eq!(find_in_tree(me(), inode, &hints), Some((me(), fd)));
        hints.closed(kid, me(), fd);
        assert_eq!(find_in_tree(kid, inode, &hints), None);
        drop(client);
    }

    fn inode_of(s: &TcpStream) -> u32 {
        let fd = std::os::fd::AsRawFd::as_raw_fd(s);
        std::fs::metadata(format!("/proc/self/fd/{fd}"))
            .unwrap()
            .ino() as u32
    }

    #[test]
    fn a_scan_finds_the_clients_other_sockets_for_later_but_only_in_the_tree() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let clients: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
        let hints = SocketHints::default();
        // The first is found by a walk, which reads this process's descriptors...
        assert!(find_in_tree(me(), inode_of(&clients[0]), &hints).is_some());
        assert_eq!(hints.stats().hint_hits, 0);
        // ...and the others where that scan saw them, with one readlink each.
        assert!(find_in_tree(me(), inode_of(&clients[1]), &hints).is_some());
        assert_eq!(hints.stats().hint_hits, 1);
        // What a scan saw is only where to look: a root that is not an ancestor of the holder
        // finds nothing, seen or not.
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let kid = ProcessId::of(child.id() as i32).unwrap();
        hints.saw(kid, me(), &[(inode_of(&clients[2]), 0)]);
        assert_eq!(find_in_tree(kid, inode_of(&clients[2]), &hints), None);
        // A socket closed since it was seen is not found where it was.
        let gone = inode_of(&clients[2]);
        hints.saw(me(), me(), &[(gone, 9999)]);
        drop(clients);
        assert_eq!(find_in_tree(me(), gone, &hints), None);
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

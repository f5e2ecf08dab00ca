//! Per-role program lists (`[roles.NAME]` in config.toml): which executables may use a role's
//! session (`allow`), and whether each new process must be approved with a touch first
//! (`confirm = "each-process"`, as `ssh-add -c`). What a touch approved for a session (a
//! process, or a program for the whole session) lives with that session and ends with it.
//!
//! The program is what the kernel says the process runs (`/proc/PID/exe`). A process whose
//! loader was told to run other code inside it (`LD_PRELOAD`, `LD_AUDIT` in its environment) or
//! that a debugger is attached to (`TracerPid`) is refused whatever its program: the name of
//! the executable would vouch for code that is not its own.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use crate::procs::ProcessId;

/// Whether every new process needs a touch first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Confirm {
    /// Processes of the listed programs (or any, with no list) are served without asking.
    #[default]
    Never,
    /// The first request of each process waits for a touch.
    EachProcess,
}

/// One role's program rules.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProgramPolicy {
    /// Executables that may use the role (resolved paths); empty: any.
    pub allow: Vec<PathBuf>,
    pub confirm: Confirm,
}

impl ProgramPolicy {
    /// Whether this policy restricts anything.
    pub fn restricts(&self) -> bool {
        !self.allow.is_empty() || self.confirm == Confirm::EachProcess
    }
}

/// The rules of every role that has some, by role name.
pub type ProgramPolicies = Arc<BTreeMap<String, ProgramPolicy>>;

/// What touches approved for one session: processes, and programs for the whole session.
#[derive(Debug, Default)]
pub(crate) struct Grants {
    /// Processes, each with the program it ran when allowed: a process that `exec`s another
    /// program leaves its grant behind.
    pub processes: HashMap<ProcessId, PathBuf>,
    pub programs: HashSet<PathBuf>,
}

/// A process that may not use a role (yet), and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramRefusal {
    pub process: ProcessId,
    /// Its executable, when it could be read.
    pub exe: Option<PathBuf>,
    pub why: ProgramProblem,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgramProblem {
    /// Its program is not on the role's list: a touch may allow it.
    NotListed,
    /// The role asks before each new process: a touch allows it.
    NotConfirmed,
    /// Another program's code may run inside it (a preload, a tracer): never served.
    Tampered(&'static str),
    /// It is gone, or its executable cannot be read.
    Unknown,
}

impl ProgramRefusal {
    /// Whether a touch could allow it (a pending approval is worth recording).
    pub fn approvable(&self) -> bool {
        matches!(
            self.why,
            ProgramProblem::NotListed | ProgramProblem::NotConfirmed
        )
    }

    /// The sentence for the refused program.
    pub fn message(&self, role: &str) -> String {
        let who = match &self.exe {
            Some(exe) => format!("{} (pid {})", exe.display(), self.process.pid),
            None => format!("pid {}", self.process.pid),
        };
        match self.why {
            ProgramProblem::NotListed => format!(
                "role {role} serves only the programs config.toml lists for it, and {who} is not \
                 one: approve it with a touch (`credctl allow {role} --pid {}`, or `credctl \
                 watch`), or run a listed program",
                self.process.pid
            ),
            ProgramProblem::NotConfirmed => format!(
                "role {role} asks for a touch before each new process: approve {who} with \
                 `credctl allow {role} --pid {}` (or `credctl watch`)",
                self.process.pid
            ),
            ProgramProblem::Tampered(what) => format!(
                "role {role} is not served to {who}: {what}, so the program's name does not say \
                 what code runs in it; run it without that"
            ),
            ProgramProblem::Unknown => format!(
                "role {role} serves only the programs config.toml lists for it, and the program \
                 of {who} cannot be read (has it exited?)"
            ),
        }
    }
}

/// Why another program's code may run inside `pid`, if it may.
fn tampered(pid: i32) -> Option<&'static str> {
    if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
        let traced = status
            .lines()
            .find_map(|l| l.strip_prefix("TracerPid:"))
            .is_some_and(|v| v.trim() != "0");
        if traced {
            return Some("a debugger is attached to it");
        }
    }
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    // Variables that make a program load code it was not built with. Not every way there is
    // (a program's own plugin paths and config files are its own), the common ones.
    const LOADERS: &[(&[u8], &str)] = &[
        (b"LD_PRELOAD=", "its environment sets LD_PRELOAD"),
        (b"LD_AUDIT=", "its environment sets LD_AUDIT"),
        (b"LD_LIBRARY_PATH=", "its environment sets LD_LIBRARY_PATH"),
        (b"GCONV_PATH=", "its environment sets GCONV_PATH"),
        (b"OPENSSL_CONF=", "its environment sets OPENSSL_CONF"),
        (b"OPENSSL_MODULES=", "its environment sets OPENSSL_MODULES"),
        (b"OPENSSL_ENGINES=", "its environment sets OPENSSL_ENGINES"),
    ];
    environ.split(|b| *b == 0).find_map(|var| {
        LOADERS
            .iter()
            .find(|(name, _)| var.starts_with(name) && var.len() > name.len())
            .map(|(_, why)| *why)
    })
}

/// Why a program grant for `exe` (every process of it, for the session) would let other code
/// through: a file, or a directory on its path, that someone other than root may write. `None`:
/// only root can change it.
pub fn writable_by_others_than_root(exe: &std::path::Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let mut at = Some(exe);
    while let Some(p) = at {
        let meta = std::fs::metadata(p).ok()?;
        if meta.uid() != 0 || meta.mode() & 0o022 != 0 {
            return Some(format!(
                "{} can be changed by {} (owner uid {}, mode {:o})",
                p.display(),
                if meta.uid() != 0 {
                    "its owner"
                } else {
                    "group or others"
                },
                meta.uid(),
                meta.mode() & 0o7777
            ));
        }
        at = p.parent().filter(|d| !d.as_os_str().is_empty());
    }
    None
}

/// Whether `process` may use a role under `policy`, given what touches approved (`grants`).
pub(crate) fn check(
    policy: &ProgramPolicy,
    grants: &Grants,
    process: ProcessId,
) -> Result<(), ProgramRefusal> {
    let refuse = |exe: Option<PathBuf>, why| Err(ProgramRefusal { process, exe, why });
    let exe = std::fs::read_link(format!("/proc/{}/exe", process.pid)).ok();
    if !process.alive() {
        return refuse(exe, ProgramProblem::Unknown);
    }
    if let Some(what) = tampered(process.pid) {
        return refuse(exe, ProgramProblem::Tampered(what));
    }
    let Some(exe) = exe else {
        return refuse(None, ProgramProblem::Unknown);
    };
    let program_granted = grants.programs.contains(&exe);
    let process_granted = grants.processes.get(&process) == Some(&exe);
    if !policy.allow.is_empty()
        && !policy.allow.contains(&exe)
        && !program_granted
        && !process_granted
    {
        return refuse(Some(exe), ProgramProblem::NotListed);
    }
    if policy.confirm == Confirm::EachProcess && !process_granted && !program_granted {
        return refuse(Some(exe), ProgramProblem::NotConfirmed);
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// A `sleep` with a clean environment (the test process itself runs with cargo's
    /// `LD_LIBRARY_PATH`, which the rules refuse), once its exec is done; killed when dropped.
    struct Sleeper(std::process::Child, ProcessId, PathBuf);

    impl Drop for Sleeper {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn sleeper(env: &[(&str, &str)]) -> Sleeper {
        let child = std::process::Command::new("sleep")
            .arg("30")
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .envs(env.iter().copied())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let id = ProcessId::of(child.id() as i32).unwrap();
        // Until the exec has set up the new program's memory, its environment reads empty (a
        // process that asks for credentials is long past that).
        for _ in 0..200 {
            let env = std::fs::read(format!("/proc/{}/environ", id.pid)).unwrap_or_default();
            if !env.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let exe = std::fs::read_link(format!("/proc/{}/exe", id.pid)).unwrap();
        Sleeper(child, id, exe)
    }

    #[test]
    fn a_listed_program_is_served_and_another_is_not_until_a_touch_allows_it() {
        let s = sleeper(&[]);
        let (me, my_exe) = (|| s.1, || s.2.clone());
        let listed = ProgramPolicy {
            allow: vec![my_exe()],
            confirm: Confirm::Never,
        };
        let mut grants = Grants::default();
        assert_eq!(check(&listed, &grants, me()), Ok(()));
        let other = ProgramPolicy {
            allow: vec![PathBuf::from("/usr/bin/terraform")],
            confirm: Confirm::Never,
        };
        let refused = check(&other, &grants, me()).unwrap_err();
        assert_eq!(refused.why, ProgramProblem::NotListed);
        assert!(refused.approvable());
        assert!(refused.message("prod").contains("credctl allow prod --pid"));
        grants.processes.insert(me(), my_exe());
        assert_eq!(check(&other, &grants, me()), Ok(()));
        // The grant is for the program the process ran when allowed.
        let mut exec_d = Grants::default();
        exec_d
            .processes
            .insert(me(), PathBuf::from("/usr/bin/something-else"));
        assert_eq!(
            check(&other, &exec_d, me()).unwrap_err().why,
            ProgramProblem::NotListed
        );
        // A process grant is this process: a later one with the same pid is another.
        let reused = ProcessId {
            start: me().start + 1,
            ..me()
        };
        assert_eq!(
            check(&other, &grants, reused).unwrap_err().why,
            ProgramProblem::Unknown
        );
    }

    #[test]
    fn each_process_asks_once_per_process_or_once_per_program() {
        let s = sleeper(&[]);
        let (me, my_exe) = (|| s.1, || s.2.clone());
        let confirm = ProgramPolicy {
            allow: Vec::new(),
            confirm: Confirm::EachProcess,
        };
        let mut grants = Grants::default();
        assert_eq!(
            check(&confirm, &grants, me()).unwrap_err().why,
            ProgramProblem::NotConfirmed
        );
        grants.programs.insert(my_exe());
        assert_eq!(check(&confirm, &grants, me()), Ok(()));
    }

    #[test]
    fn a_process_told_to_load_other_code_is_never_served() {
        let open = ProgramPolicy {
            allow: Vec::new(),
            confirm: Confirm::EachProcess,
        };
        for (var, why) in [
            ("LD_PRELOAD", "its environment sets LD_PRELOAD"),
            ("LD_LIBRARY_PATH", "its environment sets LD_LIBRARY_PATH"),
            ("OPENSSL_CONF", "its environment sets OPENSSL_CONF"),
        ] {
            let s = sleeper(&[(var, "/nonexistent/evil")]);
            let mut grants = Grants::default();
            grants.processes.insert(s.1, s.2.clone());
            let refused = check(&open, &grants, s.1).unwrap_err();
            assert_eq!(refused.why, ProgramProblem::Tampered(why));
            assert!(!refused.approvable());
        }
        // Set but empty changes nothing the loader does.
        let s = sleeper(&[("LD_PRELOAD", "")]);
        let mut grants = Grants::default();
        grants.processes.insert(s.1, s.2.clone());
        assert_eq!(check(&open, &grants, s.1), Ok(()));
    }

    #[test]
    fn a_program_grant_needs_a_file_only_root_can_change() {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            writable_by_others_than_root(std::path::Path::new("/bin/sh")),
            None
        );
        let dir = tempfile::tempdir().unwrap();
        let mine = dir.path().join("tool");
        std::fs::write(&mine, b"#!/bin/sh\n").unwrap();
        // Writable by others than its owner (an owner other than root, as for a user's own
        // file, is refused too; the tests may run as root).
        std::fs::set_permissions(&mine, std::fs::Permissions::from_mode(0o666)).unwrap();
        let why = writable_by_others_than_root(&mine).unwrap();
        assert!(
            why.contains("tool") || why.contains(&dir.path().display().to_string()),
            "{why}"
        );
    }
}

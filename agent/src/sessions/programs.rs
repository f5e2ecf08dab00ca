//! Per-role program lists (`[roles.NAME]` in config.toml): which executables may use a role's
//! session (`allow`), and whether each new process must be approved with a touch first
//! (`confirm = "each-process"`, as `ssh-add -c`). What a touch approved for a session (a
//! process, or a program for the whole session) lives with that session and ends with it.
//!
//! The program is what the kernel says the process runs (`/proc/PID/exe`). A process whose
//! loader was told to run other code inside it (`LD_PRELOAD`, `LD_AUDIT` in its environment) or
//! that a debugger is attached to (`TracerPid`) is refused whatever its program: the name of
//! the executable would vouch for code that is not its own.

use std::collections::{BTreeMap, HashSet};
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
    pub processes: HashSet<ProcessId>,
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
    environ.split(|b| *b == 0).find_map(|var| {
        if var.starts_with(b"LD_PRELOAD=") && var.len() > "LD_PRELOAD=".len() {
            Some("its environment sets LD_PRELOAD")
        } else if var.starts_with(b"LD_AUDIT=") && var.len() > "LD_AUDIT=".len() {
            Some("its environment sets LD_AUDIT")
        } else {
            None
        }
    })
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
    let process_granted = grants.processes.contains(&process);
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

    fn me() -> ProcessId {
        ProcessId::of(std::process::id() as i32).unwrap()
    }

    fn my_exe() -> PathBuf {
        std::fs::read_link("/proc/self/exe").unwrap()
    }

    #[test]
    fn a_listed_program_is_served_and_another_is_not_until_a_touch_allows_it() {
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
        grants.processes.insert(me());
        assert_eq!(check(&other, &grants, me()), Ok(()));
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
    fn a_preloaded_process_is_never_served() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .env("LD_PRELOAD", "/nonexistent/evil.so")
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let kid = ProcessId::of(child.id() as i32).unwrap();
        let open = ProgramPolicy {
            allow: Vec::new(),
            confirm: Confirm::EachProcess,
        };
        let mut grants = Grants::default();
        grants.processes.insert(kid);
        // Until the exec has set up the new program's memory, its environment reads empty (a
        // process that asks for credentials is long past that).
        for _ in 0..200 {
            let env = std::fs::read(format!("/proc/{}/environ", kid.pid)).unwrap_or_default();
            if !env.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let refused = check(&open, &grants, kid).unwrap_err();
        assert_eq!(
            refused.why,
            ProgramProblem::Tampered("its environment sets LD_PRELOAD")
        );
        assert!(!refused.approvable());
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

//! Test harness: a private, scrubbed environment (temp HOME and XDG dirs) per test, the real
//! `credagent`/`credctl` binaries, and a guard that stops a foreground agent when dropped.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use credagent_proto::{read_frame, write_frame, Request, Response, PROTOCOL_VERSION};

/// Directory of the built binaries: `$CREDAGENT_TEST_BIN_DIR` (binaries built or installed
/// elsewhere, e.g. copied out of a target directory that other checkouts also build into), else
/// the target directory, as the test executable lives in `target/<profile>/deps/`.
pub fn bin_dir() -> PathBuf {
    let dir = match std::env::var_os("CREDAGENT_TEST_BIN_DIR").filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => {
            let exe = std::env::current_exe().expect("test executable path");
            exe.parent()
                .and_then(Path::parent)
                .expect("target dir")
                .to_owned()
        }
    };
    for name in ["credagent", "credctl"] {
        assert!(
            dir.join(name).is_file(),
            "{} is missing: build the binaries first (`cargo build --workspace --bins \
             --features credctl/soft-authenticator`, as scripts/test does)",
            dir.join(name).display()
        );
    }
    dir
}

pub fn bin(name: &str) -> PathBuf {
    bin_dir().join(name)
}

/// A throwaway private environment for one test.
pub struct TestEnv {
    pub dir: tempfile::TempDir,
    pub home: PathBuf,
    pub runtime: PathBuf,
    pub sock: PathBuf,
    /// Extra variables for every command (e.g. a session bus address).
    pub extra_env: Vec<(String, String)>,
}

impl TestEnv {
    pub fn new() -> TestEnv {
        let dir = tempfile::Builder::new()
            .prefix("credagent-it-")
            .tempdir()
            .expect("tempdir");
        let home = dir.path().join("home");
        let runtime = dir.path().join("run");
        for d in [&home, &runtime] {
            std::fs::create_dir(d).expect("mkdir");
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        }
        let sock = runtime.join("credagent").join("agent.sock");
        TestEnv {
            dir,
            home,
            runtime,
            sock,
            extra_env: Vec::new(),
        }
    }

    /// A command with an environment scrubbed down to what we set: the developer's own
    /// `~/.aws`, agent and AWS variables never leak in.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &self.home)
            .env("XDG_RUNTIME_DIR", &self.runtime)
            .env("XDG_CONFIG_HOME", self.home.join(".config"))
            .env("XDG_STATE_HOME", self.home.join(".local/state"))
            .env(
                "CREDAGENT_LOG",
                std::env::var("CREDAGENT_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .current_dir(&self.home)
            .stdin(Stdio::null());
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        cmd
    }

    pub fn credctl(&self, args: &[&str]) -> Output {
        self.command(bin("credctl"))
            .args(args)
            .output()
            .expect("run credctl")
    }

    /// Starts `credagent --foreground` with stderr captured to `agent.log` in the test dir, and
    /// waits until the control socket answers.
    pub fn agent(&self, extra: &[&str]) -> AgentProc {
        let log = self.dir.path().join("agent.log");
        let child = self
            .command(bin("credagent"))
            .arg("--foreground")
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn credagent");
        let proc = AgentProc { child, log };
        wait_until(Duration::from_secs(10), || hello(&self.sock).is_ok())
            .unwrap_or_else(|| panic!("agent did not come up; log:\n{}", proc.log_text()));
        proc
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }
}

/// A foreground agent; SIGTERMed (then killed) on drop.
pub struct AgentProc {
    pub child: Child,
    pub log: PathBuf,
}

impl AgentProc {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig);
    }
    /// Waits for the agent to exit and returns its status code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        if self.alive() {
            self.signal(nix::sys::signal::Signal::SIGTERM);
            if self.wait_exit(Duration::from_secs(5)).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }
}

/// Polls `f` until it is true or `within` passes.
pub fn wait_until(within: Duration, mut f: impl FnMut() -> bool) -> Option<()> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if f() {
            return Some(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// A raw, greeted control connection.
pub fn hello(sock: &Path) -> std::io::Result<(UnixStream, u32)> {
    let mut s = UnixStream::connect(sock)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write_frame(
        &mut s,
        &Request::Hello {
            protocol_version: PROTOCOL_VERSION,
            client_version: "test".into(),
        },
    )
    .map_err(std::io::Error::other)?;
    match read_frame::<_, Response>(&mut s).map_err(std::io::Error::other)? {
        Response::Hello { pid, .. } => Ok((s, pid)),
        other => Err(std::io::Error::other(format!("unexpected {other:?}"))),
    }
}

/// Sends raw bytes and reads whatever comes back until EOF or timeout.
pub fn raw_exchange(s: &mut UnixStream, bytes: &[u8]) -> Vec<u8> {
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
        if out.len() >= 4 {
            let len = u32::from_be_bytes([out[0], out[1], out[2], out[3]]) as usize;
            if out.len() >= 4 + len {
                break;
            }
        }
    }
    out
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A second, unprivileged local user for the "another user" tests. These tests need root to
/// create the user and switch to it (CI runs as root). They fail rather than skip, unless the
/// developer opts out explicitly with `CREDAGENT_TEST_NO_ROOT=1`.
pub fn other_user() -> Option<&'static str> {
    throwaway_user("credagent-it")
}

/// A third local user, for tests that need a victim and an attacker that are both not us (e.g.
/// the victim's `/tmp/credagent-$UID` fallback path, which for root would be shared by every
/// test run on the machine). Same rules as [`other_user`].
pub fn second_user() -> Option<&'static str> {
    throwaway_user("credagent-it2")
}

/// Creates (once) and returns the throwaway user `name`.
fn throwaway_user(name: &'static str) -> Option<&'static str> {
    static READY: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
    if !nix::unistd::geteuid().is_root() {
        if std::env::var_os("CREDAGENT_TEST_NO_ROOT").is_some() {
            eprintln!("NOTICE: CREDAGENT_TEST_NO_ROOT set: skipping a cross-user check");
            return None;
        }
        panic!("cross-user tests need root (CI runs as root); run as root or set CREDAGENT_TEST_NO_ROOT=1");
    }
    // A poisoned lock only means another test panicked while holding it; the list is still
    // right.
    let mut ready = READY.lock().unwrap_or_else(|e| e.into_inner());
    if ready.contains(&name) {
        return Some(name);
    }
    let exists = Command::new("id")
        .arg(name)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    let ok = exists
        || Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                name,
            ])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
    assert!(ok, "cannot create the throwaway user {name} with useradd");
    ready.push(name);
    Some(name)
}

/// The uid of local user `name`.
pub fn uid_of(name: &str) -> u32 {
    nix::unistd::User::from_name(name)
        .expect("look up user")
        .unwrap_or_else(|| panic!("no user {name}"))
        .uid
        .as_raw()
}

/// A command that runs `program` as `user` with no supplementary groups, in a scrubbed
/// environment (no XDG_RUNTIME_DIR, no CREDAGENT_SOCK: the /tmp fallback applies).
pub fn as_user_command(user: &str, program: &Path) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid", user, "--regid", user, "--clear-groups", "--"])
        .arg(program)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", "/")
        .stdin(Stdio::null());
    cmd
}

/// Runs `program args` as `user` with no supplementary groups.
pub fn as_user(user: &str, program: &Path, args: &[&str]) -> Output {
    as_user_command(user, program)
        .args(args)
        .output()
        .expect("setpriv")
}

/// A control client that checks nothing (python3): connects, sends `bytes`, and prints how many
/// bytes came back before the other end closed (a close while sending counts as none), or
/// `timeout`.
const UNCHECKED_CLIENT: &str = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(10)
s.connect(sys.argv[1])
n = 0
try:
    s.sendall(bytes.fromhex(sys.argv[2]))
    while True:
        d = s.recv(65536)
        if not d:
            break
        n += len(d)
except socket.timeout:
    print("timeout")
    sys.exit(0)
except (BrokenPipeError, ConnectionResetError):
    pass
print(n)
"#;

/// Sends a `Hello` to `sock` as `user` without any of credctl's checks; returns how many bytes
/// the other end answered before closing (`None` if it neither answered nor closed).
pub fn unchecked_hello_as(user: &str, sock: &Path) -> Option<usize> {
    let frame = credagent_proto::encode_frame(&Request::Hello {
        protocol_version: PROTOCOL_VERSION,
        client_version: "unchecked".into(),
    })
    .expect("encode hello");
    let hex: String = frame.iter().map(|b| format!("{b:02x}")).collect();
    let out = as_user(
        user,
        Path::new("/usr/bin/python3"),
        &[
            "-c",
            UNCHECKED_CLIENT,
            sock.to_str().expect("utf-8 path"),
            &hex,
        ],
    );
    assert!(out.status.success(), "python3 client: {}", stderr(&out));
    stdout(&out).trim().parse().ok()
}

/// Opens `path` and every ancestor for traversal by others (mode |= 0o711), to simulate a
/// permissions mistake that exposes the socket; the agent's own uid check must still hold.
pub fn expose_path(path: &Path, file_mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(file_mode)).expect("chmod");
    let mut dir = path.parent();
    while let Some(d) = dir {
        if d == Path::new("/") {
            break;
        }
        let mode = std::fs::metadata(d).expect("stat").permissions().mode();
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(mode | 0o711)).expect("chmod");
        dir = d.parent();
    }
}

//! Test harness: a private, scrubbed environment (temp HOME and XDG dirs) per test, the real
//! `credagent`/`credctl` binaries, and a guard that stops a foreground agent when dropped.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use credagent_proto::{read_frame, write_frame, Request, Response, PROTOCOL_VERSION};

/// The PIN of the tests' software authenticators.
pub const SOFT_PIN: &str = "271828";

/// The workspace root (this crate is `tests/` in it).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_owned()
}

/// The cargo that is running these tests (cargo sets `CARGO` for them), else the one that built
/// them.
fn cargo() -> std::ffi::OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into())
}

/// The cargo profile these tests were built with, as `cargo build` flags: the test executable
/// lives in `<target>/<profile dir>/deps/`.
fn profile_args() -> Vec<String> {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .and_then(Path::file_name)
        .and_then(|d| d.to_str())
        .expect("the test executable is in <target>/<profile>/deps")
        .to_owned();
    match dir.as_str() {
        "debug" => Vec::new(),
        "release" => vec!["--release".into()],
        other => vec!["--profile".into(), other.into()],
    }
}

/// Variables cargo sets for the crate it runs, besides `CARGO_PKG_*` and `CARGO_BIN_*`.
const CARGO_RUN_VARS: &[&str] = &[
    "CARGO_MANIFEST_DIR",
    "CARGO_MANIFEST_PATH",
    "CARGO_MANIFEST_LINKS",
    "CARGO_CRATE_NAME",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_TARGET_TMPDIR",
    "CARGO_RUSTC_CURRENT_DIR",
    "OUT_DIR",
];

/// Removes from `cmd` what cargo sets for running this test (CARGO_MANIFEST_DIR, CARGO_PKG_*,
/// ...): it describes the tests crate, not a build. Some build scripts track such variables (ring
/// tracks CARGO_MANIFEST_DIR), so a build that inherited them would rebuild those crates and
/// relink `credagent` under the agents other tests are running, which credctl then refuses as
/// a replaced binary. For every command that runs cargo.
pub fn without_cargo_run_vars(cmd: &mut Command) {
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if CARGO_RUN_VARS.contains(&k.as_ref())
            || k.starts_with("CARGO_PKG_")
            || k.starts_with("CARGO_BIN_")
        {
            cmd.env_remove(k.as_ref());
        }
    }
}

/// Runs `cargo build ARGS` with JSON messages and returns the executables it reports, by target
/// name. Up to date binaries cost a no-op build; missing or stale ones are (re)built here, so the
/// tests never run against binaries older than the sources. The target directory is the one the
/// tests were built in: `CARGO_TARGET_DIR` and the cargo configuration are inherited.
fn cargo_build(what: &str, args: &[&str]) -> HashMap<String, PathBuf> {
    let mut cmd = Command::new(cargo());
    without_cargo_run_vars(&mut cmd);
    cmd.arg("build")
        .args(args)
        .args(profile_args())
        .arg("--message-format=json-render-diagnostics")
        .current_dir(repo())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?} to build {what}: {e}"));
    assert!(
        out.status.success(),
        "building {what} failed ({cmd:?}); cargo's errors are above"
    );
    let mut exes = HashMap::new();
    for line in out.stdout.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let msg: serde_json::Value = serde_json::from_slice(line).expect("cargo JSON message");
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        let is_bin = msg["target"]["kind"]
            .as_array()
            .is_some_and(|k| k.iter().any(|k| k == "bin"));
        if let (true, Some(name), Some(exe)) = (
            is_bin,
            msg["target"]["name"].as_str(),
            msg["executable"].as_str(),
        ) {
            exes.insert(name.to_owned(), PathBuf::from(exe));
        }
    }
    exes
}

/// `credagent` and `credctl` (with the software authenticator), built through cargo once per test
/// run, so plain `cargo test` works without building them first.
fn agent_binaries() -> &'static HashMap<String, PathBuf> {
    static BINS: OnceLock<HashMap<String, PathBuf>> = OnceLock::new();
    BINS.get_or_init(|| {
        cargo_build(
            "credagent and credctl",
            &[
                "--bins",
                "-p",
                "credagent",
                "-p",
                "credctl",
                "--features",
                "credctl/soft-authenticator",
            ],
        )
    })
}

/// The path of the built `credagent` or `credctl`.
pub fn bin(name: &str) -> PathBuf {
    let exe = agent_binaries()
        .get(name)
        .unwrap_or_else(|| panic!("cargo built no binary named {name}"));
    assert!(
        exe.is_file(),
        "{} is missing after the build",
        exe.display()
    );
    exe.clone()
}

/// The Rust SDK probe (aws-config's default chain; `tests/probe`, its own workspace):
/// `$CREDAGENT_AWS_CONFIG_PROBE` if set, else built through cargo once per test run.
pub fn aws_config_probe() -> PathBuf {
    static PROBE: OnceLock<PathBuf> = OnceLock::new();
    PROBE
        .get_or_init(|| {
            if let Some(p) = std::env::var_os("CREDAGENT_AWS_CONFIG_PROBE") {
                let p = PathBuf::from(p);
                assert!(
                    p.is_file(),
                    "CREDAGENT_AWS_CONFIG_PROBE={} is not a file",
                    p.display()
                );
                return p;
            }
            let manifest = repo().join("tests/probe/Cargo.toml");
            cargo_build(
                "the aws-config probe",
                &["--manifest-path", manifest.to_str().expect("UTF-8 path")],
            )
            .remove("aws-config-probe")
            .expect("cargo built no aws-config-probe")
        })
        .clone()
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
            // Software authenticators made by the tests get this PIN, and credctl gives it to
            // them: user verification (required by default) runs over the CTAP2 PIN protocol.
            .env("CREDCTL_SOFT_PIN", SOFT_PIN)
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
/// create the user and switch to it (CI runs as root); without it they fail, never pass
/// untested (a developer without root leaves them out by name, see the README).
pub fn other_user() -> &'static str {
    throwaway_user("credagent-it")
}

/// A third local user, for tests that need a victim and an attacker that are both not us (e.g.
/// the victim's `/tmp/credagent-$UID` fallback path, which for root would be shared by every
/// test run on the machine). Same rules as [`other_user`].
pub fn second_user() -> &'static str {
    throwaway_user("credagent-it2")
}

/// Creates (once) and returns the throwaway user `name`.
fn throwaway_user(name: &'static str) -> &'static str {
    static READY: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
    assert!(
        nix::unistd::geteuid().is_root(),
        "cross-user tests need root to create and become a throwaway user (CI runs as root); \
         run them as root, or leave them out by name (see the README)"
    );
    // A poisoned lock only means another test panicked while holding it; the list is still
    // right.
    let mut ready = READY.lock().unwrap_or_else(|e| e.into_inner());
    if ready.contains(&name) {
        return name;
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
    name
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

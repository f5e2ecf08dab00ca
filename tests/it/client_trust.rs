//! `credctl` authenticates the agent before it sends anything: a socket or directory planted by
//! another user, a listener that runs as another user, a directory or socket open to group and
//! others, or a symlink in their place is refused by `start` and `status` alike, and the planted
//! listener receives not one byte (while a client that does not check would have reached it).
//! A relay of the user's own at the socket path (a script, not credagent, forwarding to the real
//! agent moved elsewhere) is refused the same way, before `Open` or `Approve` could reach it.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Output, Stdio};
use std::time::Duration;

use credagent_proto::{encode_frame, Request, PROTOCOL_VERSION};

use crate::stack::Stack;
use crate::util::{self, as_user_command, bin, stderr, stdout, uid_of, TestEnv};

/// The planted "agent": binds the socket as another user and reports, per connection, how many
/// bytes the client sent before closing. With a directory argument it creates that directory
/// first. Directory and socket are open to the victim (0711, 0777): a client without checks
/// could connect, so only the owner gives them away.
const LISTENER: &str = r#"
import os, socket, sys
d, path = sys.argv[1], sys.argv[2]
if d:
    os.mkdir(d)
    os.chmod(d, 0o711)
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(path)
os.chmod(path, 0o777)
s.listen(16)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    n = 0
    while True:
        try:
            b = c.recv(65536)
        except ConnectionResetError:
            break
        if not b:
            break
        n += len(b)
    print("conn", n, flush=True)
    c.close()
"#;

/// A listener run by another user; killed on drop.
struct Planted {
    child: Child,
    out: BufReader<ChildStdout>,
    sock: PathBuf,
}

impl Planted {
    /// Starts the listener as `user` on `sock` (creating `dir` first, if given) and waits until
    /// it listens.
    fn start(user: &str, dir: Option<&Path>, sock: &Path) -> Planted {
        let dir_arg = dir.map(|d| d.to_str().unwrap()).unwrap_or("");
        let mut child = as_user_command(user, Path::new("/usr/bin/python3"))
            .args(["-c", LISTENER, dir_arg, sock.to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the planted listener");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready", "the planted listener did not start");
        Planted {
            child,
            out,
            sock: sock.to_owned(),
        }
    }

    /// Moves the planted socket to `to` (root can; an attacker would need a directory that is
    /// open or was before), the listener still behind it.
    fn move_to(&mut self, to: &Path) {
        std::fs::rename(&self.sock, to).unwrap();
        self.sock = to.to_owned();
    }

    /// Connects as a client that checks nothing and sends a `Hello`: the positive control. Returns
    /// how many bytes were sent, after the listener has counted them.
    fn unchecked_hello(&self) -> usize {
        let frame = encode_frame(&Request::Hello {
            protocol_version: PROTOCOL_VERSION,
            client_version: "unchecked".into(),
        })
        .unwrap();
        let mut s = UnixStream::connect(&self.sock).expect("connect to the planted socket");
        // A guard against a hang, not a timing assertion.
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(&frame).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        // The listener closes once it has counted (and reported) the bytes.
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).expect("the listener closes");
        frame.len()
    }

    /// Stops the listener and returns the bytes it received, one entry per connection.
    fn received(mut self) -> Vec<usize> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut text = String::new();
        self.out.read_to_string(&mut text).unwrap();
        text.lines()
            .map(|l| {
                l.strip_prefix("conn ")
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("listener said {l:?}"))
            })
            .collect()
    }
}

impl Drop for Planted {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Asserts a refusal: exit 7, no shell lines on stdout, and every `needle` in the message.
fn assert_refused(what: &str, out: &Output, needles: &[&str]) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(7), "{what}: {err}");
    assert_eq!(stdout(out), "", "{what}: nothing for the shell to evaluate");
    for n in needles {
        assert!(err.contains(n), "{what}: {n:?} missing from: {err}");
    }
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A directory any user may create entries in (like /tmp), inside the test's directory.
fn shared_dir(env: &TestEnv, name: &str) -> PathBuf {
    chmod(env.dir.path(), 0o711);
    let d = env.dir.path().join(name);
    std::fs::create_dir(&d).unwrap();
    chmod(&d, 0o1777);
    d
}

/// Removes a directory on drop (a planted /tmp path must not outlive the test).
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn planted_tmp_fallback_directory_is_refused() {
    let (attacker, victim) = (util::other_user(), util::second_user());
    let (attacker_uid, victim_uid) = (uid_of(attacker), uid_of(victim));
    // The victim has neither CREDAGENT_SOCK nor XDG_RUNTIME_DIR: the /tmp fallback applies, and
    // the attacker got there first.
    let dir = PathBuf::from(format!("/tmp/credagent-{victim_uid}"));
    let _ = std::fs::remove_dir_all(&dir); // left by an earlier, interrupted run
    let _cleanup = RemoveOnDrop(dir.clone());
    let planted = Planted::start(attacker, Some(&dir), &dir.join("agent.sock"));
    assert_eq!(std::fs::metadata(&dir).unwrap().uid(), attacker_uid);

    let d = dir.display().to_string();
    let owner = format!("owned by uid {attacker_uid}, not you (uid {victim_uid})");
    for cmd in ["start", "status"] {
        let out = as_user_command(victim, &bin("credctl"))
            .arg(cmd)
            .output()
            .unwrap();
        assert_refused(cmd, &out, &[&d, &owner, "planted", "CREDAGENT_SOCK"]);
    }
    let sent = planted.unchecked_hello();
    assert_eq!(
        planted.received(),
        vec![sent],
        "credctl must not even connect; the unchecked client's bytes arrive"
    );
}

#[test]
fn planted_directory_under_xdg_runtime_dir_is_refused() {
    let attacker = util::other_user();
    // A runtime directory others can write to (say XDG_RUNTIME_DIR=/tmp after `su`).
    let mut env = TestEnv::new();
    env.runtime = shared_dir(&env, "shared-run");
    env.sock = env.runtime.join("credagent/agent.sock");
    let planted = Planted::start(attacker, env.sock.parent(), &env.sock);

    let owner = format!("owned by uid {}, not you", uid_of(attacker));
    let d = env.sock.parent().unwrap().display().to_string();
    for cmd in ["start", "status"] {
        let out = env.credctl(&[cmd]);
        assert_refused(cmd, &out, &[&d, &owner, "XDG_RUNTIME_DIR"]);
    }
    // Named with CREDAGENT_SOCK, or with --socket, it is the same socket and the same refusal.
    let via_env = env
        .command(bin("credctl"))
        .env("CREDAGENT_SOCK", &env.sock)
        .arg("status")
        .output()
        .unwrap();
    assert_refused("CREDAGENT_SOCK status", &via_env, &[&owner]);
    let via_flag = env.credctl(&["--socket", env.sock.to_str().unwrap(), "start"]);
    assert_refused("--socket start", &via_flag, &[&owner]);
    assert!(
        !env.sock.with_extension("sock.lock").exists(),
        "no agent was started there"
    );

    let sent = planted.unchecked_hello();
    assert_eq!(planted.received(), vec![sent]);
}

#[test]
fn listener_of_another_user_gets_not_one_byte() {
    let attacker = util::other_user();
    let env = TestEnv::new();
    let drop_dir = shared_dir(&env, "drop");
    let mut planted = Planted::start(
        attacker,
        Some(&drop_dir.join("theirs")),
        &drop_dir.join("theirs/agent.sock"),
    );
    // Our own private socket directory, as the agent makes it.
    let ours = env.sock.parent().unwrap();
    std::fs::create_dir(ours).unwrap();
    chmod(ours, 0o700);
    planted.move_to(&env.sock);
    let s = env.sock.display().to_string();
    let attacker_uid = uid_of(attacker);

    // Their socket file in our directory: refused on its owner, before connecting.
    chmod(&env.sock, 0o600);
    for cmd in ["start", "status"] {
        let out = env.credctl(&[cmd]);
        assert_refused(
            cmd,
            &out,
            &[
                &format!("the socket {s} is owned by uid {attacker_uid}"),
                &format!("rm {s}"),
            ],
        );
    }

    // Now the file looks like ours in every way (owner, mode, directory); only the process
    // behind it is theirs. credctl connects, reads SO_PEERCRED and hangs up without a byte.
    nix::unistd::chown(
        &env.sock,
        Some(nix::unistd::getuid()),
        Some(nix::unistd::getgid()),
    )
    .unwrap();
    for cmd in ["start", "status"] {
        let out = env.credctl(&[cmd]);
        assert_refused(
            cmd,
            &out,
            &[
                &format!("runs as uid {attacker_uid}, not as you"),
                "nothing was sent",
            ],
        );
    }
    let sent = planted.unchecked_hello();
    // Connections in order: credctl start and status (after the peer check, nothing), then the
    // client that does not check.
    assert_eq!(planted.received(), vec![0, 0, sent], "credctl sent nothing");
}

#[test]
fn own_socket_open_to_others_is_refused_until_fixed() {
    let env = TestEnv::new();
    let agent = env.agent(&[]);
    let dir = env.sock.parent().unwrap();
    let d = dir.display().to_string();
    for mode in [0o750, 0o705, 0o711, 0o777] {
        chmod(dir, mode);
        for cmd in ["status", "start"] {
            let out = env.credctl(&[cmd]);
            assert_refused(
                cmd,
                &out,
                &[
                    &format!("the socket directory {d} has mode {mode:04o}"),
                    &format!("chmod 700 {d}"),
                ],
            );
        }
    }
    chmod(dir, 0o700);
    chmod(&env.sock, 0o660);
    let out = env.credctl(&["status"]);
    assert_refused(
        "status",
        &out,
        &[
            "has mode 0660",
            &format!("chmod 600 {}", env.sock.display()),
        ],
    );

    // Fixed as the messages say, the same agent answers again: nothing was replaced.
    chmod(&env.sock, 0o600);
    let json: serde_json::Value =
        serde_json::from_slice(&env.credctl(&["status", "--json"]).stdout).unwrap();
    assert_eq!(json["pid"], agent.pid());
}

#[test]
fn symlinks_in_place_of_socket_or_directory_are_refused() {
    let env = TestEnv::new();
    let agent = env.agent(&[]);
    let real_dir = env.sock.parent().unwrap();

    // A symlink in place of the socket, pointing at a real agent of ours.
    let link = env.runtime.join("link.sock");
    std::os::unix::fs::symlink(&env.sock, &link).unwrap();
    let out = env.credctl(&["--socket", link.to_str().unwrap(), "status"]);
    assert_refused("socket symlink", &out, &["is a symbolic link"]);

    // A symlink in place of the directory.
    let other_run = env.dir.path().join("other-run");
    std::fs::create_dir(&other_run).unwrap();
    chmod(&other_run, 0o700);
    std::os::unix::fs::symlink(real_dir, other_run.join("credagent")).unwrap();
    for cmd in ["status", "start"] {
        let out = env
            .command(bin("credctl"))
            .env("XDG_RUNTIME_DIR", &other_run)
            .arg(cmd)
            .output()
            .unwrap();
        assert_refused(
            cmd,
            &out,
            &["socket directory", "is a symbolic link", "CREDAGENT_SOCK"],
        );
    }

    // The real path is fine.
    let json: serde_json::Value =
        serde_json::from_slice(&env.credctl(&["status", "--json"]).stdout).unwrap();
    assert_eq!(json["pid"], agent.pid());
}

/// The relay of the attack: a script (not credagent) at the socket path credctl uses, running as
/// the user, that forwards each connection to the real agent listening elsewhere and appends
/// every byte a client sends to a record file. With "1" it first makes itself non-dumpable, as
/// credagent does.
const RELAY: &str = r#"
import ctypes, os, socket, sys, threading
path, upstream, record, nondumpable = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
if nondumpable:
    assert ctypes.CDLL(None).prctl(4, 0, 0, 0, 0) == 0  # PR_SET_DUMPABLE 0
lock = threading.Lock()
def pump(src, dst, log):
    try:
        while True:
            b = src.recv(65536)
            if not b:
                break
            if log:
                with lock, open(record, "ab") as f:
                    f.write(b)
            dst.sendall(b)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
if os.path.exists(path):
    os.unlink(path)
open(record, "wb").close()
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(path)
os.chmod(path, 0o600)
s.listen(64)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    u = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    u.connect(upstream)
    threading.Thread(target=pump, args=(c, u, True), daemon=True).start()
    threading.Thread(target=pump, args=(u, c, False), daemon=True).start()
"#;

/// A running relay; killed on drop.
struct Relay {
    child: Child,
    record: PathBuf,
}

impl Relay {
    /// Starts the relay from `sock` to `upstream` with `cmd` (python3, as whoever runs it).
    fn start(
        mut cmd: std::process::Command,
        sock: &Path,
        upstream: &Path,
        record: &Path,
        nondumpable: bool,
    ) -> Relay {
        let mut child = cmd
            .args(["-c", RELAY])
            .arg(sock)
            .arg(upstream)
            .arg(record)
            .arg(if nondumpable { "1" } else { "0" })
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the relay");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "the relay did not start");
        Relay {
            child,
            record: record.to_owned(),
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every byte clients sent through the relay so far.
    fn received(&self) -> Vec<u8> {
        std::fs::read(&self.record).unwrap()
    }

    fn forget(&self) {
        std::fs::write(&self.record, b"").unwrap();
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `credagent --foreground --socket SOCK` in `env`, logging to `log`, and waits until it
/// answers there.
fn agent_at(env: &TestEnv, sock: &Path, log: &Path) -> util::AgentProc {
    let child = env
        .command(bin("credagent"))
        .arg("--foreground")
        .arg("--socket")
        .arg(sock)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("spawn credagent");
    let agent = util::AgentProc {
        child,
        log: log.to_owned(),
    };
    util::wait_until(Duration::from_secs(10), || util::hello(sock).is_ok())
        .unwrap_or_else(|| panic!("agent did not come up:\n{}", agent.log_text()));
    agent
}

#[test]
fn relay_at_the_socket_path_gets_not_one_byte_and_no_approve() {
    let mut s = Stack::new("", "").with_key_and_source();
    // The attacker stops the agent, starts it again on a path of its own...
    s.agent.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(
        s.agent.wait_exit(Duration::from_secs(10)).is_some(),
        "agent stopped"
    );
    let hidden = s.env.runtime.join("elsewhere/agent.sock");
    let real = agent_at(&s.env, &hidden, &s.env.dir.path().join("real-agent.log"));
    let record = s.env.dir.path().join("relay.bin");

    // ... and relays the path credctl uses; then the same again with a relay that made itself
    // non-dumpable, as credagent is (as root, credctl sees its executable all the same).
    for nondumpable in [false, true] {
        let relay = Relay::start(
            std::process::Command::new("python3"),
            &s.env.sock,
            &hidden,
            &record,
            nondumpable,
        );
        // The relay works: a client that does not check reaches the real agent through it, and
        // every byte it sent is on the record.
        let (_, pid) = util::hello(&s.env.sock).expect("hello through the relay");
        assert_eq!(
            pid,
            real.child.id(),
            "the real agent answered through the relay"
        );
        assert!(
            !relay.received().is_empty(),
            "the relay records what it receives"
        );
        relay.forget();

        let who = format!("(pid {}) runs ", relay.pid());
        // `env demo` and `use demo` are the touch flow: through the relay they would send
        // `Open` and then `Approve` with the key's PRF output.
        for args in [
            &["status"][..],
            &["env", "demo"],
            &["use", "demo"],
            &["start"],
            &["key", "list"],
        ] {
            let out = s.credctl(args);
            assert_refused(
                &format!("{args:?} (non-dumpable relay: {nondumpable})"),
                &out,
                &[
                    &who,
                    "python",
                    "not the credagent credctl starts",
                    &bin("credagent").display().to_string(),
                    "nothing was sent",
                    &format!("kill {}", relay.pid()),
                    "ss -xlp src",
                ],
            );
        }
        let doctor = s.credctl(&["doctor"]);
        assert_eq!(doctor.status.code(), Some(1), "{}", stdout(&doctor));
        assert!(
            stdout(&doctor).contains("not the credagent credctl starts"),
            "{}",
            stdout(&doctor)
        );
        assert_eq!(
            relay.received(),
            b"",
            "credctl sent the relay nothing (non-dumpable relay: {nondumpable})"
        );
    }

    // The real agent passes where it is, the touch included, and says what was checked.
    let hidden_arg = hidden.to_str().unwrap();
    let out = s.credctl(&["--socket", hidden_arg, "env", "demo"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(
        &s.credctl(&["--socket", hidden_arg, "status", "--json"])
            .stdout,
    )
    .unwrap();
    let id = &json["agent_identity"];
    assert_eq!(id["pid"], real.child.id());
    assert_eq!(id["check"], "same-file");
    assert_eq!(id["binary"], bin("credagent").display().to_string());
    assert_eq!(id["binary_from"], "beside credctl");
    let text = stdout(&s.credctl(&["--socket", hidden_arg, "status"]));
    assert!(
        text.contains(&format!(
            "identity   pid {} runs the credagent credctl starts",
            real.child.id()
        )),
        "{text}"
    );
    let _ = s.credctl(&["--socket", hidden_arg, "source", "remove", &s.source]);
}

#[test]
fn without_root_a_dumpable_relay_is_refused_and_the_agent_passes_as_non_dumpable() {
    // The user's own agent, credctl and relay, all as a user that is not root: the kernel then
    // hides the agent's executable from credctl (it is non-dumpable), but shows a relay's.
    let user = util::other_user();
    let uid = uid_of(user);
    let base = tempfile::Builder::new()
        .prefix("credagent-it-user-")
        .tempdir()
        .unwrap();
    chmod(base.path(), 0o711);
    let top = base.path().join("u");
    for d in ["", "home", "run"] {
        let d = top.join(d);
        std::fs::create_dir_all(&d).unwrap();
        chmod(&d, 0o700);
        nix::unistd::chown(&d, Some(nix::unistd::Uid::from_raw(uid)), None).unwrap();
    }
    let (home, run) = (top.join("home"), top.join("run"));
    let as_them = |program: &Path| {
        let mut cmd = as_user_command(user, program);
        cmd.env("HOME", &home)
            .env("XDG_RUNTIME_DIR", &run)
            .env("XDG_CONFIG_HOME", home.join(".config"))
            .env("XDG_STATE_HOME", home.join(".local/state"))
            .current_dir(&home);
        cmd
    };
    let credctl = |args: &[&str]| as_them(&bin("credctl")).args(args).output().unwrap();
    let sock = run.join("credagent/agent.sock");
    let mut agent = util::AgentProc {
        child: as_them(&bin("credagent"))
            .arg("--foreground")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
        log: top.join("none"),
    };
    util::wait_until(Duration::from_secs(10), || {
        credctl(&["status"]).status.success()
    })
    .unwrap_or_else(|| {
        panic!(
            "the agent did not answer: {}",
            stderr(&credctl(&["status"]))
        )
    });
    let json: serde_json::Value =
        serde_json::from_slice(&credctl(&["status", "--json"]).stdout).unwrap();
    assert_eq!(json["agent_identity"]["check"], "not-dumpable");
    assert_eq!(json["agent_identity"]["pid"], agent.child.id());
    let text = stdout(&credctl(&["status"]));
    assert!(text.contains("is not dumpable"), "{text}");

    // Their agent moved aside, a relay of theirs at the path: its executable shows, and is not
    // credagent.
    let hidden = run.join("credagent/hidden.sock");
    std::fs::rename(&sock, &hidden).unwrap();
    let record = top.join("relay.bin");
    let relay = Relay::start(
        as_them(Path::new("/usr/bin/python3")),
        &sock,
        &hidden,
        &record,
        false,
    );
    for args in [&["status"][..], &["env", "demo"]] {
        let out = credctl(args);
        assert_refused(
            &format!("{args:?} as {user}"),
            &out,
            &[
                &format!("(pid {}) runs ", relay.pid()),
                "python",
                "nothing was sent",
            ],
        );
    }
    assert_eq!(relay.received(), b"", "credctl sent the relay nothing");
    drop(relay);
    agent.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(agent.wait_exit(Duration::from_secs(10)).is_some());
}

/// Creates (once) the system group `name` and returns its gid: what the package's postinst does
/// for `credagent`.
fn throwaway_group(name: &str) -> u32 {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root to create a group and give a binary to it (CI runs as root)"
    );
    let _ = std::process::Command::new("groupadd")
        .args(["--system", "-f", name])
        .status();
    nix::unistd::Group::from_name(name)
        .expect("look up group")
        .unwrap_or_else(|| panic!("groupadd did not create {name}"))
        .gid
        .as_raw()
}

#[test]
fn a_setgid_agent_is_known_by_its_group_and_a_non_dumpable_relay_without_it_is_refused() {
    // As the package installs it: root:credagent 2755. The socket keeps the group it was
    // listened with; no process of the user has it, dumpable or not, root or not.
    let gid = throwaway_group("credagent-itg");
    let env = TestEnv::new();
    let sbin = env.dir.path().join("sbin");
    std::fs::create_dir(&sbin).unwrap();
    chmod(&sbin, 0o755);
    let agent_bin = sbin.join("credagent");
    std::fs::copy(bin("credagent"), &agent_bin).unwrap();
    nix::unistd::chown(&agent_bin, Some(0.into()), Some(gid.into())).unwrap();
    chmod(&agent_bin, 0o2755);
    let hidden = env.runtime.join("elsewhere/agent.sock");
    let log = env.dir.path().join("agent.log");
    let child = env
        .command(&agent_bin)
        .arg("--foreground")
        .arg("--socket")
        .arg(&hidden)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("spawn the set-group-id credagent");
    let agent = util::AgentProc {
        child,
        log: log.clone(),
    };
    util::wait_until(Duration::from_secs(10), || util::hello(&hidden).is_ok())
        .unwrap_or_else(|| panic!("agent did not come up:\n{}", agent.log_text()));
    let credctl = |sock: &Path, args: &[&str]| {
        env.command(bin("credctl"))
            .env("CREDAGENT_BIN", &agent_bin)
            .arg("--socket")
            .arg(sock)
            .args(args)
            .output()
            .unwrap()
    };
    let json: serde_json::Value =
        serde_json::from_slice(&credctl(&hidden, &["status", "--json"]).stdout).unwrap();
    assert_eq!(json["agent_identity"]["check"], "setgid-group", "{json}");
    assert_eq!(json["agent_identity"]["pid"], agent.child.id());
    // The agent gave the group up once it listened: nothing it starts can listen with it.
    let status = std::fs::read_to_string(format!("/proc/{}/status", agent.child.id())).unwrap();
    let gids = status.lines().find(|l| l.starts_with("Gid:")).unwrap();
    assert!(
        gids.split_whitespace().skip(1).all(|g| g == "0"),
        "the agent still holds group {gid}: {gids}"
    );

    // A relay that made itself non-dumpable (which a non-root credctl cannot tell from the agent
    // by its executable) listens with the user's own group: refused, not one byte sent.
    let record = env.dir.path().join("relay.bin");
    let dir = env.sock.parent().unwrap();
    std::fs::create_dir_all(dir).unwrap();
    chmod(dir, 0o700);
    let relay = Relay::start(
        std::process::Command::new("python3"),
        &env.sock,
        &hidden,
        &record,
        true,
    );
    for args in [&["status"][..], &["env", "demo"], &["start"]] {
        let out = credctl(&env.sock, args);
        assert_refused(
            &format!("{args:?}"),
            &out,
            &[
                &format!("(pid {}) listened with group 0", relay.pid()),
                &format!("is set-group-id to group {gid}"),
                "nothing was sent",
            ],
        );
    }
    assert_eq!(relay.received(), b"", "credctl sent the relay nothing");
    let stop = credctl(&hidden, &["stop"]);
    assert!(stop.status.success(), "{}", stderr(&stop));
}

//! systemd integration: the READY=1 notification of a `Type=notify` service, and the refusal of
//! sockets handed over by another process (systemd socket activation or anything speaking its
//! protocol), whose maker could accept connections in the agent's place.

use std::io::BufRead;
use std::os::unix::net::UnixDatagram;
use std::process::Stdio;
use std::time::Duration;

use crate::stack::Bg;
use crate::util::{bin, hello, stderr, TestEnv};

fn private_socket_dir(env: &TestEnv) {
    let dir = env.sock.parent().unwrap();
    std::fs::create_dir(dir).unwrap();
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
}

#[test]
fn a_notify_service_reports_ready_once_both_listeners_are_bound() {
    let env = TestEnv::new();
    private_socket_dir(&env);
    let notify_path = env.dir.path().join("notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let agent = Bg(env
        .command(bin("credagent"))
        .arg("--foreground")
        .env("NOTIFY_SOCKET", &notify_path)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(env.dir.path().join("agent.log")).unwrap())
        .spawn()
        .unwrap());
    let mut buf = [0u8; 256];
    let n = notify.recv(&mut buf).expect("READY notification");
    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(msg.contains("READY=1"), "{msg}");
    assert!(msg.contains(&format!("MAINPID={}", agent.0.id())), "{msg}");
    // Ready means ready: the control socket answers at once.
    let (_, pid) = hello(&env.sock).unwrap_or_else(|e| panic!("{e}\n{}", env.log_text()));
    assert_eq!(pid, agent.0.id());
    let stop = env.credctl(&["stop"]);
    assert!(stop.status.success(), "{}", stderr(&stop));
}

/// What a same-user attacker (or a user service with `Sockets=credagent.socket`) does: bind and
/// listen on the control socket, keep a copy, start the real agent with it as fd 3, and accept
/// connections itself while every connection names the agent as its peer.
const MANAGER: &str = r#"
import os, socket, sys, time
path, agent = sys.argv[1], sys.argv[2:]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(path)
os.chmod(path, 0o600)
s.listen(16)
pid = os.fork()
if pid == 0:
    os.dup2(s.fileno(), 3)
    os.set_inheritable(3, True)
    env = dict(os.environ, LISTEN_FDS="1", LISTEN_PID=str(os.getpid()))
    os.execve(agent[0], agent, env)
_, status = os.waitpid(pid, 0)
print(os.waitstatus_to_exitcode(status), flush=True)
time.sleep(120)
"#;

#[test]
fn an_inherited_control_socket_is_refused_so_no_other_process_accepts_in_the_agents_place() {
    let env = TestEnv::new();
    private_socket_dir(&env);
    let log = env.dir.path().join("agent.log");
    let mut manager = Bg(env
        .command("python3")
        .args(["-c", MANAGER])
        .arg(&env.sock)
        .arg(bin("credagent"))
        .arg("--foreground")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap());
    let mut line = String::new();
    std::io::BufReader::new(manager.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(line.trim(), "1", "the agent must refuse to start:\n{text}");
    assert!(
        text.contains("credagent makes its own sockets")
            && text.contains("credagent.service")
            && text.contains("listen = "),
        "{text}"
    );
    // The socket the manager holds was never listened on by an agent: credctl finds python
    // behind it and sends nothing.
    let out = env.credctl(&["status"]);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert!(stderr(&out).contains("python"), "{}", stderr(&out));
}

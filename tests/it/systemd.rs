//! systemd integration: socket activation through the real `systemd-socket-activate`, and the
//! READY=1 notification.

use std::os::unix::net::UnixDatagram;
use std::process::Stdio;
use std::time::Duration;

use crate::stack::Bg;
use crate::util::{bin, hello, wait_until, TestEnv};

/// Starts `systemd-socket-activate` with the control socket and a TCP listener for the agent,
/// returning it with the TCP port. It cannot bind port 0 ("Invalid argument"), so a port is
/// picked here; should another process take it before the activator binds it, the activator
/// fails with "Address already in use" and another port is tried: no test ever shares one.
fn start_activator(env: &TestEnv, notify_path: &std::path::Path) -> (Bg, u16) {
    let log = env.dir.path().join("agent.log");
    for _ in 0..20 {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut activator = Bg(env
            .command("systemd-socket-activate")
            .arg("-l")
            .arg(&env.sock)
            .arg("-l")
            .arg(format!("127.0.0.1:{port}"))
            .arg("-E")
            .arg(format!("NOTIFY_SOCKET={}", notify_path.display()))
            .args([
                "-E",
                "HOME",
                "-E",
                "XDG_RUNTIME_DIR",
                "-E",
                "XDG_CONFIG_HOME",
                "-E",
                "XDG_STATE_HOME",
            ])
            .arg(bin("credagent"))
            .arg("--foreground")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap());
        let listening = format!("Listening on 127.0.0.1:{port} ");
        wait_until(Duration::from_secs(30), || {
            env.log_text().contains(&listening) || matches!(activator.0.try_wait(), Ok(Some(_)))
        })
        .unwrap_or_else(|| panic!("the activator did not listen:\n{}", env.log_text()));
        if env.log_text().contains(&listening) {
            return (activator, port);
        }
        let text = env.log_text();
        assert!(
            text.contains("Address already in use"),
            "the activator failed:\n{text}"
        );
        // It may have bound the control socket before failing on the port.
        let _ = std::fs::remove_file(&env.sock);
    }
    panic!("no free port for systemd-socket-activate in 20 tries");
}

#[test]
fn socket_activation_hands_over_both_listeners_and_notifies_ready() {
    let env = TestEnv::new();
    let dir = env.sock.parent().unwrap();
    std::fs::create_dir(dir).unwrap();
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let notify_path = env.dir.path().join("notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();

    let (mut activator, port) = start_activator(&env, &notify_path);
    assert!(env.sock.exists(), "activator socket");
    // What `SocketMode=0600` in credagent.socket does; systemd-socket-activate follows the umask,
    // and credctl refuses a socket that others may connect to.
    std::fs::set_permissions(
        &env.sock,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();

    // The first connection makes systemd-socket-activate start the agent (in its own process).
    let (_, pid) = hello(&env.sock).unwrap_or_else(|e| panic!("{e}\n{}", env.log_text()));
    assert_eq!(pid, activator.0.id());
    let mut buf = [0u8; 256];
    let n = notify.recv(&mut buf).expect("READY notification");
    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(msg.contains("READY=1"), "{msg}");
    assert!(msg.contains(&format!("MAINPID={pid}")), "{msg}");

    let out = env.credctl(&["--socket", env.sock.to_str().unwrap(), "status", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "status --json: {e}; {}; agent log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            env.log_text()
        )
    });
    assert_eq!(json["socket_activated"], true);
    assert_eq!(json["http_addr"], format!("127.0.0.1:{port}"));
    assert_eq!(json["pid"], pid);

    // Stopping a socket-activated agent leaves systemd's socket file alone.
    let stop = env.credctl(&["--socket", env.sock.to_str().unwrap(), "stop"]);
    assert!(
        stop.status.success(),
        "{}",
        String::from_utf8_lossy(&stop.stderr)
    );
    wait_until(Duration::from_secs(10), || {
        matches!(activator.0.try_wait(), Ok(Some(_)))
    })
    .unwrap_or_else(|| panic!("the agent did not stop:\n{}", env.log_text()));
    assert!(env.sock.exists(), "systemd owns the activated socket file");
}

/// As `systemd --user` does it: a manager process binds and listens on the control socket, stays
/// alive holding it, and starts the agent in a child with the socket as fd 3.
const MANAGER: &str = r#"
import os, socket, sys
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
print(pid, flush=True)
os.waitpid(pid, 0)
"#;

#[test]
fn an_agent_activated_by_a_separate_manager_is_the_peer_credctl_checks() {
    use std::io::BufRead;
    let env = TestEnv::new();
    let dir = env.sock.parent().unwrap();
    std::fs::create_dir(dir).unwrap();
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let mut manager = Bg(env
        .command("python3")
        .args(["-c", MANAGER])
        .arg(&env.sock)
        .arg(bin("credagent"))
        .arg("--foreground")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(env.dir.path().join("agent.log")).unwrap())
        .spawn()
        .unwrap());
    let mut line = String::new();
    std::io::BufReader::new(manager.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let agent_pid: u32 = line.trim().parse().expect("the agent's pid");
    wait_until(Duration::from_secs(10), || hello(&env.sock).is_ok())
        .unwrap_or_else(|| panic!("the agent did not answer:\n{}", env.log_text()));

    // The manager made the socket and still holds it, but the agent listened again: credctl
    // finds the agent behind it (not python, which it would refuse).
    let out = env.credctl(&["status", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "status --json: {e}; {}; agent log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            env.log_text()
        )
    });
    assert_eq!(json["socket_activated"], true);
    assert_eq!(json["pid"], agent_pid);
    assert_eq!(json["agent_identity"]["pid"], agent_pid);
    assert_eq!(json["agent_identity"]["check"], "same-file");

    let stop = env.credctl(&["stop"]);
    assert!(
        stop.status.success(),
        "{}",
        String::from_utf8_lossy(&stop.stderr)
    );
    wait_until(Duration::from_secs(10), || {
        matches!(manager.0.try_wait(), Ok(Some(_)))
    })
    .unwrap_or_else(|| panic!("the agent did not stop:\n{}", env.log_text()));
}

//! systemd integration: socket activation through the real `systemd-socket-activate`, and the
//! READY=1 notification.

use std::os::unix::net::UnixDatagram;
use std::process::Stdio;
use std::time::Duration;

use crate::util::{bin, hello, wait_until, TestEnv};

#[test]
fn socket_activation_hands_over_both_listeners_and_notifies_ready() {
    let env = TestEnv::new();
    let dir = env.sock.parent().unwrap();
    std::fs::create_dir(dir).unwrap();
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let notify_path = env.dir.path().join("notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();

    let mut activator = env
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
        .stderr(std::fs::File::create(env.dir.path().join("agent.log")).unwrap())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(10), || env.sock.exists()).expect("activator socket");
    // What `SocketMode=0600` in credagent.socket does; systemd-socket-activate follows the umask,
    // and credctl refuses a socket that others may connect to.
    std::fs::set_permissions(
        &env.sock,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();

    // The first connection makes systemd-socket-activate start the agent.
    let (_, pid) = hello(&env.sock).unwrap_or_else(|e| panic!("{e}\n{}", env.log_text()));
    let mut buf = [0u8; 256];
    let n = notify.recv(&mut buf).expect("READY notification");
    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(msg.contains("READY=1"), "{msg}");
    assert!(msg.contains(&format!("MAINPID={pid}")), "{msg}");

    let out = env.credctl(&["--socket", env.sock.to_str().unwrap(), "status", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["socket_activated"], true);
    assert_eq!(json["http_addr"], format!("127.0.0.1:{port}"));
    assert_eq!(json["pid"], pid);

    // Stopping a socket-activated agent leaves systemd's socket file alone.
    let stop = env.credctl(&["--socket", env.sock.to_str().unwrap(), "stop"]);
    let _ = stop;
    wait_until(Duration::from_secs(5), || {
        matches!(activator.try_wait(), Ok(Some(_)))
    });
    assert!(env.sock.exists(), "systemd owns the activated socket file");
    let _ = activator.kill();
    let _ = activator.wait();
}

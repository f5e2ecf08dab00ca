//! Agent life cycle through `credctl`: start, status, stop, single instance, stale sockets,
//! permissions, signals, configuration errors, other users.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::util::{self, as_user, bin, expose_path, stderr, stdout, wait_until, TestEnv};

#[test]
fn start_status_stop() {
    let env = TestEnv::new();
    let out = env.credctl(&["start"]);
    assert!(out.status.success(), "start failed: {}", stderr(&out));
    let text = stdout(&out);
    let sock = env.sock.display().to_string();
    assert!(
        text.contains(&format!("CREDAGENT_SOCK='{sock}'; export CREDAGENT_SOCK;")),
        "{text}"
    );
    assert!(
        text.contains("unset AWS_CONTAINER_CREDENTIALS_RELATIVE_URI;"),
        "{text}"
    );
    let pid_line = text
        .lines()
        .find(|l| l.starts_with("echo Agent pid "))
        .expect("pid line");
    let pid: u32 = pid_line
        .trim_start_matches("echo Agent pid ")
        .trim_end_matches(';')
        .parse()
        .unwrap();

    // A second start reuses the running agent.
    let again = stdout(&env.credctl(&["start"]));
    assert!(again.contains(&format!("echo Agent pid {pid};")), "{again}");

    let fish = stdout(&env.credctl(&["start", "--fish"]));
    assert!(
        fish.contains(&format!("set -gx CREDAGENT_SOCK '{sock}';")),
        "{fish}"
    );
    let csh = stdout(&env.credctl(&["start", "--csh"]));
    assert!(
        csh.contains(&format!("setenv CREDAGENT_SOCK '{sock}';")),
        "{csh}"
    );

    let status = env.credctl(&["status"]);
    assert!(status.status.success(), "{}", stderr(&status));
    let s = stdout(&status);
    assert!(s.contains(&format!("running (pid {pid})")), "{s}");
    assert!(s.contains("endpoint   http://127.0.0.1:"), "{s}");

    let json: serde_json::Value =
        serde_json::from_slice(&env.credctl(&["status", "--json"]).stdout).unwrap();
    assert_eq!(json["pid"], pid);
    assert_eq!(json["socket"], sock);
    assert_eq!(json["protocol_version"], credagent_proto::PROTOCOL_VERSION);
    let http: std::net::SocketAddr = json["http_addr"].as_str().unwrap().parse().unwrap();
    assert!(http.ip().is_loopback() && http.port() != 0);

    let stop = env.credctl(&["stop"]);
    assert!(stop.status.success(), "{}", stderr(&stop));
    assert!(stdout(&stop).contains(&format!("agent (pid {pid}) stopped")));
    assert!(!env.sock.exists(), "socket must be removed on stop");

    let gone = env.credctl(&["status"]);
    assert_eq!(gone.status.code(), Some(3));
    assert!(
        stderr(&gone).contains("run `eval \"$(credctl start)\"`"),
        "{}",
        stderr(&gone)
    );
}

#[test]
fn second_agent_is_refused_with_the_first_ones_pid() {
    let env = TestEnv::new();
    let first = env.agent(&[]);
    let second = env
        .command(bin("credagent"))
        .arg("--foreground")
        .output()
        .unwrap();
    assert!(!second.status.success());
    let err = stderr(&second);
    assert!(
        err.contains(&format!("agent already running (pid {})", first.pid())),
        "{err}"
    );
    // The first one is untouched.
    util::hello(&env.sock).expect("first agent still answers");
}

#[test]
fn stale_socket_after_kill_9_is_replaced() {
    let env = TestEnv::new();
    let mut first = env.agent(&[]);
    first.signal(Signal::SIGKILL);
    // Killed by a signal: no exit code, but the process must be gone.
    let _ = first.wait_exit(Duration::from_secs(5));
    assert!(!first.alive(), "agent survived SIGKILL");
    assert!(env.sock.exists(), "kill -9 leaves the socket file behind");
    assert!(util::hello(&env.sock).is_err());
    let second = env.agent(&[]);
    let (_, pid) = util::hello(&env.sock).unwrap();
    assert_eq!(pid as i32, second.pid());
}

#[test]
fn socket_and_directory_modes() {
    let env = TestEnv::new();
    let _agent = env.agent(&[]);
    let dir = env.sock.parent().unwrap();
    let dmeta = std::fs::metadata(dir).unwrap();
    assert_eq!(dmeta.mode() & 0o777, 0o700);
    assert_eq!(dmeta.uid(), nix::unistd::getuid().as_raw());
    let smeta = std::fs::symlink_metadata(&env.sock).unwrap();
    assert_eq!(smeta.mode() & 0o777, 0o600);
}

#[test]
fn unsafe_socket_directory_is_refused() {
    let env = TestEnv::new();
    let dir = env.runtime.join("credagent");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = env
        .command(bin("credagent"))
        .arg("--foreground")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("has mode 0755") && err.contains("chmod 700"),
        "{err}"
    );
    // credctl start refuses the directory itself, before starting an agent, and says the fix.
    let out = env.credctl(&["start"]);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("has mode 0755") && err.contains(&format!("chmod 700 {}", dir.display())),
        "{err}"
    );
    assert!(!env.sock.exists(), "no agent started");
}

#[test]
fn sigterm_and_sigint_shut_down_gracefully() {
    for sig in [Signal::SIGTERM, Signal::SIGINT] {
        let env = TestEnv::new();
        let mut agent = env.agent(&[]);
        agent.signal(sig);
        assert_eq!(
            agent.wait_exit(Duration::from_secs(10)),
            Some(0),
            "{sig}: {}",
            agent.log_text()
        );
        assert!(!env.sock.exists(), "{sig}: socket removed");
        assert!(agent.log_text().contains("credagent stopped"));
    }
}

#[test]
fn bad_config_names_file_key_and_line() {
    let env = TestEnv::new();
    let cfg_dir = env.home.join(".config/credagent");
    std::fs::create_dir_all(&cfg_dir).unwrap();
    let cfg = cfg_dir.join("config.toml");
    std::fs::write(&cfg, "listen = \"127.0.0.1:0\"\nsesion_ttl = \"1h\"\n").unwrap();
    let out = env
        .command(bin("credagent"))
        .arg("--foreground")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains(&cfg.display().to_string()), "{err}");
    assert!(
        err.contains("sesion_ttl") && err.contains("line 2"),
        "{err}"
    );
    assert!(
        !env.sock.exists(),
        "no socket left behind by a refused start"
    );

    std::fs::write(&cfg, "session_ttl = \"2h\"\nlisten = \"127.0.0.1:0\"\n").unwrap();
    let _agent = env.agent(&[]);
    let json: serde_json::Value =
        serde_json::from_slice(&env.credctl(&["status", "--json"]).stdout).unwrap();
    assert_eq!(json["config_path"], cfg.display().to_string());
}

#[test]
fn background_start_detaches_and_logs_to_state_dir() {
    let env = TestEnv::new();
    let out = env.credctl(&["start"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let log = env.home.join(".local/state/credagent/agent.log");
    wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("credagent ready")
    })
    .expect("agent log in the state dir");
    assert_eq!(std::fs::metadata(&log).unwrap().mode() & 0o777, 0o600);
    assert!(env.credctl(&["stop"]).status.success());
}

#[test]
fn other_user_is_refused_on_both_listeners() {
    let user = util::other_user();
    let env = TestEnv::new();
    let agent = env.agent(&[]);
    // Simulate a permissions mistake that lets the other user reach the socket file.
    expose_path(&env.sock, 0o666);
    // Their credctl refuses a socket that is not theirs before sending anything.
    let out = as_user(
        user,
        &bin("credctl"),
        &["--socket", env.sock.to_str().unwrap(), "status"],
    );
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    let me = nix::unistd::getuid().as_raw();
    assert!(
        stderr(&out).contains(&format!("is owned by uid {me}, not you")),
        "{}",
        stderr(&out)
    );
    // A client that checks nothing gets through to the agent: its SO_PEERCRED check is what must
    // stop them, with not a byte of answer.
    assert_eq!(util::unchecked_hello_as(user, &env.sock), Some(0));
    wait_until(Duration::from_secs(5), || {
        agent
            .log_text()
            .contains("refused control connection from another user")
    })
    .unwrap_or_else(|| panic!("refusal not logged:\n{}", agent.log_text()));
    // Our own credctl refuses the exposed socket too, until the mistake is undone.
    let open = env.credctl(&["status"]);
    assert_eq!(open.status.code(), Some(7), "{}", stderr(&open));
    let dir = env.sock.parent().unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(&env.sock, std::fs::Permissions::from_mode(0o600)).unwrap();

    // The HTTP listener: the same user gets an HTTP answer, the other user a closed connection.
    let json: serde_json::Value =
        serde_json::from_slice(&env.credctl(&["status", "--json"]).stdout).unwrap();
    let url = format!("http://{}/", json["http_addr"].as_str().unwrap());
    let mine = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &url])
        .output()
        .unwrap();
    assert_eq!(stdout(&mine), "404");
    let theirs = as_user(
        user,
        std::path::Path::new("/usr/bin/curl"),
        &["-s", "-o", "/dev/null", "-w", "%{http_code}", &url],
    );
    assert_eq!(stdout(&theirs), "000", "other user must get no HTTP answer");
    assert!(!theirs.status.success());
    wait_until(Duration::from_secs(5), || {
        agent
            .log_text()
            .contains("refused http connection from another user")
    })
    .unwrap_or_else(|| panic!("http refusal not logged:\n{}", agent.log_text()));
    util::hello(&env.sock).expect("agent still healthy");
    // Both refusals are in the audit log, with the other user's uid.
    let audit = env.home.join(".local/state/credagent/audit.jsonl");
    let uid = String::from_utf8(
        std::process::Command::new("id")
            .args(["-u", user])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .parse::<u64>()
    .unwrap();
    wait_until(Duration::from_secs(5), || {
        let lines: Vec<serde_json::Value> = std::fs::read_to_string(&audit)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        ["control", "http"].iter().all(|ch| {
            lines
                .iter()
                .any(|l| l["channel"] == *ch && l["reason"] == "other_user" && l["peer_uid"] == uid)
        })
    })
    .unwrap_or_else(|| {
        panic!(
            "audit: {}",
            std::fs::read_to_string(&audit).unwrap_or_default()
        )
    });
}

#[test]
fn usb_without_a_key_fails_clearly() {
    let env = TestEnv::new();
    let _agent = env.agent(&[]);
    let out = env
        .command(bin("credctl"))
        .env("CREDCTL_USB_WAIT_SECS", "1")
        .args(["key", "add", "yubikey", "--authenticator", "usb"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("no security key found") || err.contains("hidraw"),
        "{err}"
    );
    assert!(err.contains("--browser"), "{err}");
}

#[test]
fn stop_aimed_at_the_wrong_socket_leaves_the_live_agent_running_and_names_its_socket() {
    let env = TestEnv::new();
    let agent = env.agent(&[]);
    let pid = agent.child.id();
    // A stale CREDAGENT_SOCK, a --socket typo, another XDG_RUNTIME_DIR: nothing listens there.
    let wrong = env.sock.parent().unwrap().join("typo.sock");
    let out = env
        .command(bin("credctl"))
        .env("CREDAGENT_SOCK", &wrong)
        .arg("stop")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let msg = stderr(&out);
    assert!(
        msg.contains(&format!("(pid {pid}) listens on {}", env.sock.display()))
            && msg.contains("was left running")
            && msg.contains("CREDAGENT_SOCK names another socket"),
        "{msg}"
    );
    // Still there, and still answering at its own socket.
    let status = env.credctl(&["status"]);
    assert!(status.status.success(), "{}", stderr(&status));
    assert!(env.credctl(&["stop"]).status.success());
}

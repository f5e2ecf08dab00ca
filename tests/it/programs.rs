//! Per-role program lists: `[roles.NAME] allow = [...]` serves only the programs listed,
//! `confirm = "each-process"` asks before each new process, and a touch (`credctl allow`)
//! lets one process, or one program, use the session until it ends.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use crate::stack::{key_counter, Stack};
use crate::util::wait_until;

/// A python process that asks the ECS endpoint once per line it reads, printing the status.
struct Asker {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
}

impl Asker {
    fn start(s: &Stack, token: &str) -> Asker {
        let script = r#"
import sys, os, urllib.request, urllib.error
for _ in sys.stdin:
    req = urllib.request.Request(os.environ['URI'], headers={'Authorization': os.environ['TOKEN']})
    try:
        code = urllib.request.urlopen(req, timeout=5).status
    except urllib.error.HTTPError as e:
        code = e.code
    print(code, flush=True)
"#;
        let mut child = Command::new("python3")
            .args(["-c", script])
            // cargo runs the tests with its LD_LIBRARY_PATH, which the rules refuse.
            .env_remove("LD_LIBRARY_PATH")
            .env("URI", s.ecs_uri())
            .env("TOKEN", token)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let input = child.stdin.take().unwrap();
        let output = BufReader::new(child.stdout.take().unwrap());
        Asker {
            child,
            input,
            output,
        }
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    fn ask(&mut self) -> u16 {
        writeln!(self.input).unwrap();
        let mut line = String::new();
        self.output.read_line(&mut line).unwrap();
        line.trim().parse().unwrap()
    }
}

impl Drop for Asker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// curl with `token`, as a listed program runs: without cargo's LD_LIBRARY_PATH.
fn curl(s: &Stack, token: &str, env: &[(&str, &str)]) -> String {
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .args(["-H", &format!("Authorization: {token}")])
        .arg(s.ecs_uri())
        .env_remove("LD_LIBRARY_PATH")
        .envs(env.iter().copied())
        .stderr(Stdio::null())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn curl_path() -> String {
    let out = Command::new("sh")
        .args(["-c", "command -v curl"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn an_allow_list_serves_curl_refuses_python_until_a_touch_allows_it() {
    let s = Stack::new("", &format!("[roles.demo]\nallow = [\"{}\"]", curl_path()))
        .with_key_and_source();
    let token = s.role_token("demo");
    assert_eq!(curl(&s, &token, &[]), "200", "curl is on the list");
    // credential_process and export cannot tell which program gets the credentials: refused.
    let out = s.credctl(&["export", "demo"]);
    assert!(!out.status.success());
    assert!(
        crate::util::stderr(&out).contains("credctl exec demo"),
        "{}",
        crate::util::stderr(&out)
    );

    let mut python = Asker::start(&s, &token);
    assert_eq!(python.ask(), 403, "python is not on the list");
    // The refusal is a pending approval naming the program, its pid and its command line.
    let status = s.ok(&["status"]);
    assert!(
        status.contains(&format!("--pid {}", python.pid())) && status.contains("python"),
        "{status}"
    );
    let json: serde_json::Value = serde_json::from_str(&s.ok(&["status", "--json"])).unwrap();
    let asked = &json["pending"][0];
    assert_eq!(
        asked["program_pid"].as_u64().unwrap().to_string(),
        python.pid()
    );
    assert!(asked["command_line"].as_str().unwrap().contains("urllib"));

    // One touch allows this process, for this session.
    let before = key_counter(&s);
    s.ok(&["allow", "demo", "--pid", &python.pid()]);
    assert_eq!(key_counter(&s), before + 1, "one touch");
    assert_eq!(python.ask(), 200);
    // Another python process is another process, and a touch is only for the one that asked.
    let mut other = Asker::start(&s, &token);
    let out = s.credctl(&["allow", "demo", "--pid", &other.pid()]);
    assert!(!out.status.success(), "a process that never asked");
    assert!(
        crate::util::stderr(&out).contains("not the one waiting"),
        "{}",
        crate::util::stderr(&out)
    );
    assert_eq!(other.ask(), 403);
    // "This program for this session": every python process from now on.
    s.ok(&["allow", "demo", "--pid", &other.pid(), "--program"]);
    let mut third = Asker::start(&s, &token);
    assert_eq!(third.ask(), 200);
    assert_eq!(other.ask(), 200);

    // Code loaded into a listed program is never served, whatever the grants.
    assert_eq!(
        curl(&s, &token, &[("LD_PRELOAD", "/nonexistent/preload.so")]),
        "403"
    );
    assert_eq!(
        curl(&s, &token, &[("LD_LIBRARY_PATH", "/nonexistent")]),
        "403"
    );

    // The grants end with the session.
    s.ok(&["lock"]);
    let token = s.role_token("demo");
    let mut again = Asker::start(&s, &token);
    assert_eq!(again.ask(), 403, "a new session starts with no grants");
}

#[test]
fn confirm_each_process_asks_once_per_process() {
    let s = Stack::new("", "[roles.demo]\nconfirm = \"each-process\"").with_key_and_source();
    let token = s.role_token("demo");
    let mut first = Asker::start(&s, &token);
    assert_eq!(first.ask(), 403, "a new process waits for a touch");
    wait_until(Duration::from_secs(5), || {
        s.ok(&["status"])
            .contains(&format!("--pid {}", first.pid()))
    })
    .expect("the process is pending");
    // `credctl watch` takes the touch for it.
    let before = key_counter(&s);
    s.ok(&["watch", "--once"]);
    assert_eq!(key_counter(&s), before + 1, "one touch");
    assert_eq!(first.ask(), 200);
    assert_eq!(first.ask(), 200, "asked once for this process");
    let mut second = Asker::start(&s, &token);
    assert_eq!(second.ask(), 403, "the next process is asked for again");
}

#[test]
fn program_rules_are_policy_a_touch_vouches_for() {
    let s = Stack::new("", "").with_key_and_source();
    s.role_token("demo");
    // A rule added to config.toml applies only through `credctl reload`'s touch, which shows it.
    let cfg = s.env.home.join(".config/credagent/config.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        text.replacen(
            "\n[approval]",
            "\n[roles.demo]\nconfirm = \"each-process\"\n[approval]",
            1,
        ),
    )
    .unwrap();
    let token = s.role_token("demo");
    let mut asker = Asker::start(&s, &token);
    assert_eq!(asker.ask(), 200, "not in force before the touch");
    let before = key_counter(&s);
    let out = s.credctl(&["reload"]);
    assert!(out.status.success(), "{}", crate::util::stderr(&out));
    let shown = crate::util::stderr(&out);
    assert!(
        shown.contains("roles.demo.confirm"),
        "the touch is shown the rule: {shown}"
    );
    assert_eq!(key_counter(&s), before + 1, "one touch");
    let mut next = Asker::start(&s, &token);
    assert_eq!(next.ask(), 403, "in force after the touch");
}

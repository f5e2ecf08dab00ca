//! The browser approval page in headless Chromium with a CDP virtual authenticator
//! (tests/js/browser-approve.mjs): register a key and approve a session through the page, see
//! nothing approved without a touch, and see junk answers refused without burning the ceremony.
//! The virtual authenticator evaluates the WebAuthn PRF (hmac-secret), so `key add` is the
//! registration page and then the new key's seal touch on a second page, and sealed sources open
//! only through the PRF output the page carries.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::stack::{token_from_exports, Stack};
use crate::util::{bin, stderr};

struct Driver {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Driver {
    fn start() -> Driver {
        let js = Path::new(env!("CARGO_MANIFEST_DIR")).join("js");
        assert!(
            js.join("node_modules/playwright-core").is_dir(),
            "run `npm ci` in tests/js (scripts/setup does)"
        );
        let mut child = Command::new("node")
            .arg("browser-approve.mjs")
            .current_dir(&js)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut d = Driver {
            child,
            stdin,
            stdout,
        };
        assert_eq!(d.send(serde_json::json!({"ping": true}))["ok"], true);
        d
    }

    fn send(&mut self, cmd: serde_json::Value) -> serde_json::Value {
        writeln!(self.stdin, "{cmd}").unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("driver said {line:?}: {e}"))
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The next approval URL credctl prints on stderr (`said` carries its lines).
fn next_url(s: &Stack, said: &mpsc::Receiver<String>) -> String {
    let mut seen = Vec::new();
    loop {
        let line = said
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|e| {
                panic!(
                    "credctl printed no URL ({e}); it said {seen:?}; agent log:\n{}",
                    s.agent.log_text()
                )
            });
        seen.push(line.clone());
        if let Some(i) = line.find("http://localhost:") {
            return line[i..].trim().to_owned();
        }
    }
}

/// The page's answers to `credctl key add NAME --browser`: the registration, then the new key's
/// seal touch, both touched in the browser.
struct KeyAdd {
    register: serde_json::Value,
    seal: serde_json::Value,
}

/// Runs `credctl key add NAME --browser` through both of its pages and returns what the pages
/// showed, with credctl's output once it has exited successfully.
fn key_add_in_browser(s: &Stack, driver: &mut Driver, name: &str) -> (KeyAdd, String) {
    let (child, url, said) = browser_credctl(s, &["key", "add", name]);
    let register =
        driver.send(serde_json::json!({"url": url, "presence": true, "timeout_ms": 20000}));
    assert_eq!(register["outcome"], "approved", "{register}");
    let url = next_url(s, &said);
    let seal = driver.send(serde_json::json!({"url": url, "presence": true, "timeout_ms": 20000}));
    assert_eq!(seal["outcome"], "approved", "{seal}");
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}\nagent log:\n{}",
        stderr(&out),
        s.agent.log_text()
    );
    (
        KeyAdd { register, seal },
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Starts `credctl ARGS --browser` and returns it with the approval URL it printed.
fn browser_credctl(s: &Stack, args: &[&str]) -> (Child, String, mpsc::Receiver<String>) {
    let mut child = s
        .env
        .command(bin("credctl"))
        .args(args)
        .arg("--browser")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = BufReader::new(child.stderr.take().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in err.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let url = next_url(s, &rx);
    (child, url, rx)
}

#[test]
fn browser_registers_a_key_and_approves_a_session() {
    let s = Stack::new("", "").with_source();
    let mut driver = Driver::start();

    let (pages, out) = key_add_in_browser(&s, &mut driver, "laptop");
    assert!(
        pages.register["title"].as_str().unwrap().contains("laptop"),
        "{}",
        pages.register
    );
    assert!(
        pages.seal["title"].as_str().unwrap().contains("laptop"),
        "{}",
        pages.seal
    );
    assert!(out.contains("registered security key laptop"), "{out}");

    // A session through the page; the page says which role and who asked.
    let (child, url, _) = browser_credctl(&s, &["env", "demo"]);
    let r = driver.send(serde_json::json!({"url": url, "presence": true, "timeout_ms": 20000}));
    assert_eq!(r["outcome"], "approved", "{r}");
    assert_eq!(r["fields"]["Role"], "demo", "{r}");
    assert_eq!(
        r["fields"]["Role ARN"], "arn:aws:iam::123456789012:role/demo",
        "{r}"
    );
    assert!(
        r["fields"]["Asked by"]
            .as_str()
            .unwrap()
            .contains("credctl"),
        "{r}"
    );
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let exports = String::from_utf8_lossy(&out.stdout).into_owned();
    let token = token_from_exports(&exports);
    assert_eq!(s.ecs(Some(&token), &[]).0, 200);

    // Without a touch nothing is approved.
    s.ok(&["lock"]);
    let (mut child, url, _) = browser_credctl(&s, &["env", "demo"]);
    let r = driver.send(serde_json::json!({"url": url, "presence": false, "timeout_ms": 8000}));
    assert_eq!(r["outcome"], "timeout", "{r}");
    // The time ran out while the page waited for the touch (not while it was still loading, which
    // would time out as well and prove nothing), and nothing was posted to the agent.
    assert_eq!(r["options_status"], 200, "{r}");
    assert_eq!(r["status"], "Touch your security key…", "{r}");
    assert!(r["finish_status"].is_null(), "{r}");
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        s.ecs(Some(&token), &[]).0,
        401,
        "lock revoked the role-bound token"
    );
    let unopened = s.unopened_role_token("demo");
    assert_eq!(s.ecs(Some(&unopened), &[]).0, 403);

    // Junk posted to a live ceremony is refused and does not burn it; the real touch then works.
    let (child, url, _) = browser_credctl(&s, &["env", "demo"]);
    let finish = format!("{url}/finish");
    let origin = url.split("/approve/").next().unwrap().to_owned();
    let junk = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
        ])
        .args(["-H", &format!("Origin: {origin}"), "--data", "{}", &finish])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&junk.stdout), "400");
    let foreign = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
        ])
        .args([
            "-H",
            "Origin: https://evil.example",
            "--data",
            "{}",
            &finish,
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&foreign.stdout), "403");
    let r = driver.send(serde_json::json!({"url": url, "presence": true, "timeout_ms": 20000}));
    assert_eq!(r["outcome"], "approved", "{r}");
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let token = token_from_exports(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(s.ecs(Some(&token), &[]).0, 200);
}

/// A person who reads the page for 40 s before touching still opens the role: credctl waits as
/// long as the agent keeps the ceremony (the timeouts are stated once, in proto), where it used
/// to give up after 30 s and kill the ceremony with it.
#[test]
fn a_browser_approval_after_40_seconds_still_opens_the_role() {
    let s = Stack::new("", "").with_source();
    let mut driver = Driver::start();
    key_add_in_browser(&s, &mut driver, "laptop");

    let (child, url, _) = browser_credctl(&s, &["env", "demo"]);
    let r = driver.send(serde_json::json!({
        "url": url, "presence": true, "click_after_ms": 40000, "timeout_ms": 55000
    }));
    assert_eq!(r["outcome"], "approved", "{r}");
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let token = token_from_exports(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(s.ecs(Some(&token), &[]).0, 200);
}

/// A touch approves what it was shown: a profile edited between the challenge and the answer
/// (a process pointing `demo` at an admin role while the person reaches for the key) opens
/// nothing, and the page showed the ARN the touch was for.
#[test]
fn a_profile_edited_during_the_touch_opens_nothing() {
    let s = Stack::new(
        "[profile admin]\nrole_arn = arn:aws:iam::123456789012:role/admin\nsource_profile = SOURCE\n",
        "",
    )
    .with_source();
    let mut driver = Driver::start();
    key_add_in_browser(&s, &mut driver, "laptop");

    let (child, url, said) = browser_credctl(&s, &["env", "demo"]);
    // The page has loaded (the person reads it): now the config is rewritten.
    let r = driver.send(serde_json::json!({"url": url, "click": false, "timeout_ms": 20000}));
    assert_eq!(r["outcome"], "loaded", "{r}");
    assert!(
        r["details"].as_str().unwrap_or("").contains("role/demo"),
        "the page shows what the touch opens: {r}"
    );
    let config = s.env.home.join(".aws/config");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("role/demo", "role/admin")).unwrap();
    // Anything that has the agent re-read its config (here `credctl roles`) makes it see the
    // edit before the touch arrives.
    s.ok(&["roles"]);
    let r = driver.send(serde_json::json!({"url": url, "presence": true, "timeout_ms": 20000}));
    assert_eq!(r["outcome"], "refused", "{r}");
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let err: Vec<String> = said.try_iter().collect();
    assert!(
        err.iter().any(|l| l.contains("changed while you touched")),
        "{err:?}"
    );
    let unopened = s.unopened_role_token("demo");
    assert_eq!(s.ecs(Some(&unopened), &[]).0, 403, "nothing was opened");
}

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
use crate::util::{bin, stderr, wait_until};

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
    let (child, url, said) = browser_credctl(s, &["key", "add", name, "--accept-change"]);
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

/// "Deny: this wasn't me" ends the request unanswered: credctl says so, nothing opens, and the
/// audit records the refusal. A page whose command gave up takes its buttons away by itself,
/// and the page shows when the request expires.
#[test]
fn the_approval_page_can_deny_and_knows_when_its_request_ended() {
    let s = Stack::new("", "").with_source();
    let mut driver = Driver::start();
    key_add_in_browser(&s, &mut driver, "laptop");

    let (child, url, said) = browser_credctl(&s, &["env", "demo"]);
    let loaded = driver.send(serde_json::json!({
        "url": url, "presence": true, "click": false, "timeout_ms": 20000
    }));
    assert_eq!(loaded["outcome"], "loaded", "{loaded}");
    let expiry = loaded["expiry"].as_str().unwrap();
    assert!(
        expiry.starts_with("Expires in 0:5") || expiry.starts_with("Expires in 1:00"),
        "{loaded}"
    );
    let r = driver.send(serde_json::json!({
        "url": url, "presence": true, "button": "deny", "timeout_ms": 20000
    }));
    assert_eq!(r["outcome"], "denied", "{r}");
    assert!(r["status"].as_str().unwrap().contains("Declined"), "{r}");
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let err: Vec<String> = said.try_iter().collect();
    assert!(
        err.iter()
            .any(|l| l.contains("you declined this request on the approval page")),
        "{err:?}"
    );
    assert!(status_json(&s)["sessions"].as_array().unwrap().is_empty());
    let audit = s.ok(&["audit", "--json"]);
    assert!(audit.contains("\"denied\""), "{audit}");

    // credctl interrupted while the page is open: the page ends the request itself.
    let (mut child, url, _) = browser_credctl(&s, &["env", "demo"]);
    let killer = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(3));
        child.kill().unwrap();
        let _ = child.wait();
    });
    let ended = driver.send(serde_json::json!({
        "url": url, "presence": true, "click": false, "wait_end": true, "timeout_ms": 20000
    }));
    killer.join().unwrap();
    assert_eq!(ended["outcome"], "ended", "{ended}");
    assert_eq!(ended["expiry"], "", "no countdown once ended: {ended}");
    assert!(
        ended["status"]
            .as_str()
            .unwrap()
            .contains("ended before your touch"),
        "{ended}"
    );
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

/// `credctl status --json`.
fn status_json(s: &Stack) -> serde_json::Value {
    serde_json::from_str(&s.ok(&["status", "--json"])).unwrap()
}

/// `credctl key list --json`.
fn keys_json(s: &Stack) -> Vec<serde_json::Value> {
    serde_json::from_str(&s.ok(&["key", "list", "--json"])).unwrap()
}

/// The state `credctl source list --json` gives the test's source.
fn source_state(s: &Stack) -> String {
    let sources: Vec<serde_json::Value> =
        serde_json::from_str(&s.ok(&["source", "list", "--json"])).unwrap();
    let ours = sources
        .iter()
        .find(|x| x["name"] == s.source.as_str())
        .unwrap_or_else(|| panic!("source {} not listed: {sources:?}", s.source));
    ours["state"].as_str().unwrap_or("").to_owned()
}

/// Sealed sources end to end through Chromium's PRF: the key added in the browser creates the
/// vault with its PRF output (posted by the page on its second touch), a source added afterwards
/// is sealed at once, a touch in the page opens it for the role, and after `lock` it is sealed
/// again and nothing is served until the next touch.
#[test]
fn a_key_added_in_the_browser_seals_and_opens_sources_with_its_prf() {
    let s = Stack::new("", "");
    let mut driver = Driver::start();

    let (pages, out) = key_add_in_browser(&s, &mut driver, "laptop");
    // The registration asked for the PRF and the page posted that the key has it.
    assert_eq!(
        pages.register["posted_prf"]["enabled"], true,
        "{}",
        pages.register
    );
    assert!(
        pages.register["status"]
            .as_str()
            .unwrap()
            .contains("touch it once more"),
        "the registration page says a second touch follows: {}",
        pages.register
    );
    // The second page is the seal touch, and it carried a 32-byte PRF output.
    assert_eq!(
        pages.seal["title"], "Seal your sources to the new key \u{201c}laptop\u{201d}",
        "{}",
        pages.seal
    );
    assert_eq!(pages.seal["fields"]["New key"], "laptop", "{}", pages.seal);
    assert_eq!(
        pages.seal["posted_prf"]["first_bytes"], 32,
        "{}",
        pages.seal
    );
    assert!(
        pages.seal["status"].as_str().unwrap().contains("sealed"),
        "{}",
        pages.seal
    );
    assert!(out.contains("holds a copy of your vault"), "{out}");

    let status = status_json(&s);
    let vault = status["vault"]
        .as_str()
        .unwrap_or_else(|| panic!("no vault: {status}"));
    assert!(
        vault.len() == 16 && vault.bytes().all(|b| b.is_ascii_hexdigit()),
        "{status}"
    );
    assert_eq!(status["sealing"], "required", "{status}");
    assert_eq!(status["unsealed_keys"], serde_json::json!([]), "{status}");
    let keys = keys_json(&s);
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_eq!(keys[0]["name"], "laptop", "{keys:?}");
    assert_eq!(keys[0]["sealed"], true, "{keys:?}");

    // A source added now takes the key's touch (in the page), and is sealed to the vault: the
    // touch proved the vault, it opened nothing.
    let mut add = s
        .env
        .command(bin("credctl"))
        .args(["source", "add", &s.source, "--stdin", "--browser"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        add.stdin
            .take()
            .unwrap()
            .write_all(format!("AKIAIOSFODNN7EXAMPLE\n{}\n", crate::stack::SECRET_KEY).as_bytes())
            .unwrap();
    }
    let err = BufReader::new(add.stderr.take().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in err.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let url = next_url(&s, &rx);
    let r = driver.send(serde_json::json!({"url": url, "presence": true, "timeout_ms": 20000}));
    assert_eq!(r["outcome"], "approved", "{r}");
    let out = add.wait_with_output().unwrap();
    assert!(out.status.success(), "source add in the page failed");
    assert_eq!(source_state(&s), "sealed");

    // The touch in the page opens it for the role, with the same PRF output as at the seal.
    let (child, url, _) = browser_credctl(&s, &["env", "demo"]);
    let r = driver.send(serde_json::json!({"url": url, "presence": true, "timeout_ms": 20000}));
    assert_eq!(r["outcome"], "approved", "{r}");
    assert_eq!(r["posted_prf"]["first_bytes"], 32, "{r}");
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let token = token_from_exports(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(s.ecs(Some(&token), &[]).0, 200);
    assert_eq!(source_state(&s), "open");
    assert!(
        s.ok(&["source", "list"]).contains(" open"),
        "the table shows it open too"
    );

    // lock wipes the opened source: sealed again, nothing served without a new touch.
    s.ok(&["lock"]);
    assert_eq!(source_state(&s), "sealed");
    assert_eq!(s.ecs(Some(&token), &[]).0, 401, "lock revoked the token");
    let unopened = s.unopened_role_token("demo");
    assert_eq!(s.ecs(Some(&unopened), &[]).0, 403);

    let (child, url, _) = browser_credctl(&s, &["env", "demo"]);
    let r = driver.send(serde_json::json!({"url": url, "presence": true, "timeout_ms": 20000}));
    assert_eq!(r["outcome"], "approved", "{r}");
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let token = token_from_exports(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(s.ecs(Some(&token), &[]).0, 200);
    assert_eq!(source_state(&s), "open");
}

/// How many `key_add` refusals with reason `no_prf` the audit holds (identical events may share
/// a line, with a count).
fn no_prf_refusals(s: &Stack) -> u64 {
    std::fs::read_to_string(s.env.home.join(".local/state/credagent/audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| {
            l["channel"] == "key_add" && l["outcome"] == "refused" && l["reason"] == "no_prf"
        })
        .map(|l| l["count"].as_u64().unwrap_or(1))
        .sum()
}

/// What `key add --browser` says when the browser brings no PRF output: refused with the
/// agent's `no_prf` message (its wire code is `policy`; `no_prf` is its audit reason) on the page
/// and from credctl, `refusals` such refusals so far, and no key stored.
fn assert_no_prf_refusal(
    s: &Stack,
    page: &serde_json::Value,
    child: Child,
    said: mpsc::Receiver<String>,
    refusals: u64,
) {
    assert_eq!(page["outcome"], "refused", "{page}");
    assert_eq!(page["finish_body"]["code"], "policy", "{page}");
    let shown = page["status"].as_str().unwrap();
    for words in [
        "hmac-secret",
        "PRF",
        "user verification",
        "PIN",
        "allow-unsealed",
    ] {
        assert!(shown.contains(words), "the page says {words:?}: {shown}");
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    // Its stderr went to `said`; the reader ends with credctl.
    let said = said.iter().collect::<Vec<_>>().join("\n");
    for words in ["hmac-secret", "PRF", "allow-unsealed"] {
        assert!(said.contains(words), "credctl says {words:?}: {said}");
    }
    // The agent's own code for it, in the audit.
    wait_until(Duration::from_secs(10), || no_prf_refusals(s) == refusals).unwrap_or_else(|| {
        panic!(
            "expected {refusals} no_prf key_add refusal(s) in the audit, found {}",
            no_prf_refusals(s)
        )
    });
    assert_eq!(
        keys_json(s),
        Vec::<serde_json::Value>::new(),
        "no key stored"
    );
    assert!(status_json(s)["vault"].is_null(), "no vault created");
}

/// An authenticator without PRF is refused at its registration page; one with PRF but without
/// user verification (Chromium then evaluates no PRF) registers, but its seal touch is refused.
/// Neither is stored.
#[test]
fn a_browser_key_without_prf_is_refused_and_not_stored() {
    // Touch-only, so that a key that cannot verify the user may register at all.
    let s = Stack::new("", "approval.user_verification = \"discouraged\"").with_source();
    let mut driver = Driver::start();

    let r = driver.send(serde_json::json!({"authenticator": {"hasPrf": false}}));
    assert_eq!(r["ok"], true, "{r}");
    let (child, url, said) = browser_credctl(&s, &["key", "add", "laptop", "--accept-change"]);
    let page = driver.send(serde_json::json!({"url": url, "presence": true, "timeout_ms": 20000}));
    assert_eq!(page["posted_prf"]["enabled"], false, "{page}");
    assert_no_prf_refusal(&s, &page, child, said, 1);

    let r = driver.send(serde_json::json!({
        "authenticator": {"hasUserVerification": false, "isUserVerified": false}
    }));
    assert_eq!(r["ok"], true, "{r}");
    let (child, url, said) = browser_credctl(&s, &["key", "add", "laptop", "--accept-change"]);
    let register =
        driver.send(serde_json::json!({"url": url, "presence": true, "timeout_ms": 20000}));
    assert_eq!(register["outcome"], "approved", "{register}");
    assert_eq!(register["posted_prf"]["enabled"], true, "{register}");
    let url = next_url(&s, &said);
    let page = driver.send(serde_json::json!({"url": url, "presence": true, "timeout_ms": 20000}));
    assert!(page["posted_prf"]["first_bytes"].is_null(), "{page}");
    assert_no_prf_refusal(&s, &page, child, said, 2);
    assert_eq!(
        source_state(&s),
        "unsealed",
        "no vault: the source stays as it was"
    );
}

/// `curl` as a program that read the page's address (from `xdg-open`'s command line): `jar`
/// keeps its cookies, `post` sends a body to `/finish`. Returns the status and the body.
fn page_request(url: &str, jar: &std::path::Path, post: Option<&str>) -> (String, String) {
    let origin = url.split("/approve/").next().unwrap().to_owned();
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-w", "\n%{http_code}", "-b"])
        .arg(jar)
        .arg("-c")
        .arg(jar);
    match post {
        Some(body) => cmd
            .args(["-X", "POST", "-H", "Content-Type: application/json"])
            .args(["-H", &format!("Origin: {origin}"), "--data", body])
            .arg(format!("{url}/finish")),
        None => cmd.arg(format!("{url}/options")),
    };
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", ""));
    (code.to_owned(), body.to_owned())
}

/// The attack the issue reproduced: during the user's `credctl key add NEW --browser`, a program
/// that read the page's address answers the registration with its own key.
/// - A registration page never begins a page session once keys exist: loaded outside the
///   session of its authorizing touch (here the touch was taken by credctl, and a program loads
///   the page first and would answer at once), the registration ends and nothing is stored.
/// - The authorizing step's page is bound to its first loader: a second loader ends it, and the
///   user is told.
#[test]
fn a_key_change_page_answers_only_the_page_session_credctl_opened() {
    let s = Stack::new("", "").with_key_and_source();
    let dir = tempfile::tempdir().unwrap();
    let (user_jar, evil_jar) = (dir.path().join("user"), dir.path().join("evil"));
    let authorizer = s.soft_arg();
    let told = |said: &mpsc::Receiver<String>| -> Vec<String> {
        // The reader thread ends with credctl's stderr.
        std::thread::sleep(Duration::from_millis(200));
        said.try_iter().collect()
    };

    // The registration page, loaded by a program before any browser: refused, registration over.
    let (child, url, said) =
        browser_credctl(&s, &["key", "add", "new", "--authorizer", &authorizer]);
    let (code, body) = page_request(&url, &evil_jar, None);
    assert_eq!(code, "403", "{body}");
    let forged = r#"{"id":"AAAA","rawId":"AAAA","type":"public-key","extensions":{},
        "response":{"attestationObject":"AAAA","clientDataJSON":"AAAA"}}"#;
    let (code, body) = page_request(&url, &evil_jar, Some(forged));
    assert_ne!(code, "200", "{body}");
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let lines = told(&said);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("outside the browser session of the touch")),
        "{lines:?}"
    );
    let keys = s.ok(&["key", "list"]);
    assert!(!keys.contains("new"), "{keys}");

    // The whole key change in the browser: a program loads the authorizing page first; the
    // user's browser is then refused, and credctl stops with the warning.
    let (child, url, said) = browser_credctl(&s, &["key", "add", "new"]);
    assert_eq!(page_request(&url, &evil_jar, None).0, "200");
    let (code, body) = page_request(&url, &user_jar, None);
    assert_eq!(code, "403", "{body}");
    assert!(body.contains("page_taken"), "{body}");
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let lines = told(&said);
    assert!(
        lines.iter().any(|l| l.contains("second program")),
        "{lines:?}"
    );
    let keys = s.ok(&["key", "list"]);
    assert!(!keys.contains("new"), "{keys}");
    let audit = std::fs::read_to_string(s.env.home.join(".local/state/credagent/audit.jsonl"))
        .unwrap_or_default();
    assert!(audit.contains("page_taken"), "{audit}");
}

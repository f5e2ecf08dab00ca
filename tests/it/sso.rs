//! IAM Identity Center sources end to end: the agent's real aws-sdk-ssooidc / aws-sdk-sso
//! clients against the local Identity Center (tests/py/sso_server.py, itself checked against
//! botocore in sso_fake.rs), moto for the chained AssumeRole, the software authenticator for
//! the touch. No access key exists anywhere in these tests.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::stack::{key_counter, spawn_listening, Bg, Stack};
use crate::util::{bin, repo, stderr, stdout, wait_until};

const START_URL: &str = "https://d-9067000000.awsapps.com/start";

/// The local Identity Center.
struct Fake {
    _proc: Bg,
    url: String,
    _dir: tempfile::TempDir,
}

impl Fake {
    fn start(args: &[&str]) -> Fake {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("python3");
        cmd.arg(repo().join("tests/py/sso_server.py")).args(args);
        let (proc, port) = spawn_listening(cmd, "the SSO fake", &dir.path().join("sso.log"));
        Fake {
            _proc: proc,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        }
    }

    fn call(&self, method: &str, path: &str, body: &str) -> serde_json::Value {
        let out = Command::new("curl")
            .args(["-s", "--max-time", "10", "-X", method, "-d", body])
            .arg(format!("{}/_control/{path}", self.url))
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("the fake said {:?}: {e}", stdout(&out)))
    }

    fn state(&self) -> serde_json::Value {
        self.call("GET", "state", "")
    }

    fn count(&self, path: &[&str]) -> u64 {
        let mut v = self.state();
        for p in path {
            v = v[*p].clone();
        }
        v.as_u64().unwrap_or(0)
    }

    /// Every token and client secret the fake issued.
    fn secrets(&self) -> Vec<String> {
        let v = self.call("GET", "secrets", "");
        ["accessTokens", "refreshTokens", "clientSecrets"]
            .iter()
            .flat_map(|k| v[*k].as_array().cloned().unwrap_or_default())
            .filter_map(|s| s.as_str().map(str::to_owned))
            .collect()
    }
}

const AWS_CONFIG: &str = "\
[sso-session corp]
sso_start_url = START_URL
sso_region = us-east-1
sso_registration_scopes = sso:account:access

[profile dev-admin]
sso_session = corp
sso_account_id = 111111111111
sso_role_name = Admin
region = us-east-1

[profile deploy]
role_arn = arn:aws:iam::333333333333:role/Deploy
source_profile = dev-admin
duration_seconds = 7200
";

/// An agent pointed at the fake, with the software key registered.
fn stack(fake: &Fake) -> Stack {
    // The overrides come from config.toml: the agent's environment never names an endpoint.
    let s = Stack::new_with_env(
        &AWS_CONFIG.replace("START_URL", START_URL),
        &format!(
            "sso_oidc_endpoint = \"{url}\"\nsso_endpoint = \"{url}\"",
            url = fake.url
        ),
        &[("CREDAGENT_SSO_TICK", "1s")],
    );
    s.ok(&["key", "add", "soft", "--accept-change"]);
    s
}

/// `credctl ARGS` started in the background, its stderr lines on a channel.
fn spawn(s: &Stack, args: &[&str], extra_env: &[(&str, &str)]) -> (Child, mpsc::Receiver<String>) {
    let mut cmd = s.env.command(bin("credctl"));
    cmd.env("CREDCTL_AUTHENTICATOR", s.soft_arg())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let err = BufReader::new(child.stderr.take().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in err.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (child, rx)
}

/// The first stderr line of `rx` containing `needle`.
fn line_with(rx: &mpsc::Receiver<String>, needle: &str) -> String {
    let mut seen = Vec::new();
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("no line with {needle:?} ({e}); saw {seen:?}"));
        if line.contains(needle) {
            return line;
        }
        seen.push(line);
    }
}

fn finish(child: Child) -> std::process::Output {
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "credctl failed: {}", stderr(&out));
    out
}

/// A device-code login, approved at the fake.
fn device_login(s: &Stack, fake: &Fake) {
    let (child, rx) = spawn(s, &["login", "corp", "--device-code"], &[]);
    let line = line_with(&rx, "enter the code");
    assert!(line.contains("/device"), "{line}");
    fake.call("POST", "device/approve", "{}");
    let out = finish(child);
    assert!(stdout(&out).contains("logged in to IAM Identity Center (corp)"));
}

/// Every file under `dir` that holds any of `secrets`.
fn files_holding(dir: &Path, secrets: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = e.path();
            match std::fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => stack.push(path),
                Ok(m) if m.is_file() => {
                    let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap_or_default())
                        .into_owned();
                    found.extend(
                        secrets
                            .iter()
                            .filter(|s| s.len() >= 16 && text.contains(s.as_str()))
                            .map(|_| path.display().to_string()),
                    );
                }
                _ => {}
            }
        }
    }
    found
}

#[test]
fn a_device_code_login_then_a_touch_opens_the_sso_role_and_a_chain_on_it() {
    let fake = Fake::start(&[]);
    let s = stack(&fake);
    let roles = s.ok(&["roles"]);
    assert!(
        roles.contains("login needed (`credctl login corp`)"),
        "{roles}"
    );

    // No login yet: `env` logs in first (here with the device code; starting a login takes a
    // touch that proves the vault its tokens are sealed to is yours), and only then asks for
    // the role's touch.
    let before = key_counter(&s);
    let (child, rx) = spawn(
        &s,
        &["env", "dev-admin"],
        &[("CREDCTL_SSO_DEVICE_CODE", "1")],
    );
    line_with(&rx, "logging in first; the touch for dev-admin follows");
    line_with(&rx, "enter the code");
    assert_eq!(
        key_counter(&s),
        before + 1,
        "one touch to start the login, none for the role yet"
    );
    fake.call("POST", "device/approve", "{}");
    let out = finish(child);
    assert!(stdout(&out).contains("AWS_CONTAINER_AUTHORIZATION_TOKEN"));
    assert_eq!(key_counter(&s), before + 2, "then one touch for the role");
    assert!(s.ok(&["roles"]).contains("corp: logged in"));

    // With the login there, another token for the open role takes neither.
    let token = s.role_token("dev-admin");
    let (status, body) = s.ecs(Some(&token), &[]);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"AccessKeyId\":\"ASIA"), "{body}");
    assert_eq!(fake.count(&["calls", "GetRoleCredentials"]), 1);
    assert_eq!(key_counter(&s), before + 2, "no further touch");
    assert_eq!(fake.count(&["calls", "StartDeviceAuthorization"]), 1);
    let out = s
        .sdk_command("python3", &token)
        .arg(repo().join("tests/py/boto3_probe.py"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "boto3 on the SSO role: {}",
        stderr(&out)
    );
    // Logging in again while the login is good reuses it: no new registration or sign-in.
    assert!(s.ok(&["login", "corp"]).contains("logged in"));
    assert_eq!(fake.count(&["calls", "RegisterClient"]), 1);

    // A role chained on the SSO role: GetRoleCredentials, then AssumeRole at moto, signed with
    // the SSO role's temporary credentials: chaining, so one hour although the profile asks two
    // (the STS front refuses more, as STS does).
    let token = s.role_token("deploy");
    let (status, body) = s.ecs(Some(&token), &[]);
    assert_eq!(status, 200, "{body}");
    let assumed = s.sts.calls("AssumeRole");
    assert_eq!(assumed.len(), 1, "{assumed:?}");
    assert_eq!(assumed[0]["DurationSeconds"], "3600");
    let out = s
        .sdk_command("aws", &token)
        .args(["sts", "get-caller-identity", "--output", "text"])
        .output()
        .unwrap();
    assert!(
        stdout(&out).contains("assumed-role/Deploy"),
        "{} {}",
        stdout(&out),
        stderr(&out)
    );
    let out = s
        .sdk_command("python3", &token)
        .arg(repo().join("tests/py/boto3_probe.py"))
        .output()
        .unwrap();
    assert!(out.status.success(), "boto3: {}", stderr(&out));
    assert!(
        stdout(&out).contains("assumed-role/Deploy"),
        "{}",
        stdout(&out)
    );

    // No token or client secret in any file the agent or credctl wrote, logs and audit
    // included.
    let secrets = fake.secrets();
    assert!(secrets.len() >= 3, "{secrets:?}");
    assert_eq!(files_holding(&s.env.home, &secrets), Vec::<String>::new());
    assert_eq!(
        files_holding(s.env.dir.path(), &secrets),
        Vec::<String>::new()
    );
}

#[test]
fn a_browser_login_comes_back_once_to_the_agent_and_no_other_way() {
    let fake = Fake::start(&["authorize=approve"]);
    let s = stack(&fake);
    let (child, rx) = spawn(&s, &["login", "corp"], &[]);
    let line = line_with(&rx, "sign in to IAM Identity Center in your browser: ");
    let url = line.split("browser: ").nth(1).unwrap().trim().to_owned();
    assert!(
        url.starts_with(&format!("{}/authorize?", fake.url)),
        "{url}"
    );
    assert!(url.contains("code_challenge_method=S256"), "{url}");

    // The fake approves at once and redirects to the agent's callback.
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{redirect_url}", &url])
        .output()
        .unwrap();
    let callback = stdout(&out);
    let port = s.http.rsplit(':').next().unwrap();
    assert!(
        callback.starts_with(&format!("http://127.0.0.1:{port}/oauth/callback?")),
        "{callback}"
    );
    let get = |url: &str, headers: &[&str]| {
        let mut cmd = Command::new("curl");
        cmd.args(["-s", "-o", "/dev/null", "-w", "%{http_code}"]);
        for h in headers {
            cmd.args(["-H", h]);
        }
        stdout(&cmd.arg(url).output().unwrap())
    };
    // Another Host, or a page's request (Origin), is refused and changes nothing.
    let other_host = callback.replace("127.0.0.1", "localhost");
    assert_eq!(get(&other_host, &[]), "421");
    assert_eq!(get(&callback, &["Origin: https://evil.example"]), "403");
    assert_eq!(get(&callback, &["Sec-Fetch-Mode: cors"]), "403");
    // A forged state finds nothing.
    let forged = format!("http://127.0.0.1:{port}/oauth/callback?code=x&state=forged");
    assert_eq!(get(&forged, &[]), "400");
    // The real one once, as a browser navigation: the login completes.
    assert_eq!(get(&callback, &["Sec-Fetch-Mode: navigate"]), "200");
    finish(child);
    // Replayed: refused.
    assert_eq!(get(&callback, &[]), "400");
    assert_eq!(fake.count(&["createToken", "authorization_code"]), 1);

    let token = s.role_token("dev-admin");
    assert_eq!(s.ecs(Some(&token), &[]).0, 200);
}

#[test]
fn fifty_requesters_during_a_login_share_one_login_one_touch_one_get_role_credentials() {
    let fake = Fake::start(&[]);
    let s = stack(&fake);
    let before = key_counter(&s);
    let kids: Vec<_> = (0..50)
        .map(|_| {
            spawn(
                &s,
                &["credential-process", "dev-admin"],
                &[("CREDCTL_SSO_DEVICE_CODE", "1")],
            )
        })
        .collect();
    wait_until(Duration::from_secs(60), || {
        fake.count(&["calls", "StartDeviceAuthorization"]) >= 1
    })
    .expect("the login started");
    fake.call("POST", "device/approve", "{}");
    let mut keys = std::collections::HashSet::new();
    for (child, _) in kids {
        let out = finish(child);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        keys.insert(v["AccessKeyId"].as_str().unwrap().to_owned());
    }
    assert_eq!(keys.len(), 1, "everyone got the same credentials");
    assert_eq!(fake.count(&["calls", "StartDeviceAuthorization"]), 1);
    assert_eq!(fake.count(&["calls", "RegisterClient"]), 1);
    assert_eq!(fake.count(&["calls", "GetRoleCredentials"]), 1);
    // One touch that started the login (the others joined it) and one for the role.
    assert_eq!(
        key_counter(&s),
        before + 2,
        "two touches for fifty requesters"
    );
}

#[test]
fn the_access_token_is_refreshed_without_a_prompt_and_a_revoked_login_says_log_in() {
    let fake = Fake::start(&["access_token_lifetime=300"]);
    let s = stack(&fake);
    device_login(&s, &fake);
    // 300 s is inside the 10-minute margin: the background refresh runs at once.
    wait_until(Duration::from_secs(30), || {
        fake.count(&["createToken", "refresh_token"]) >= 1
    })
    .expect("a background refresh");
    let token = s.role_token("dev-admin");
    assert_eq!(s.ecs(Some(&token), &[]).0, 200);

    // Revoked at Identity Center: after lock, the next open says to log in.
    fake.call("POST", "revoke", "{\"all\": true}");
    s.ok(&["lock"]);
    let out = s.credctl(&["credential-process", "dev-admin"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("credctl login corp"), "{err}");
}

#[test]
fn logout_revokes_and_forgets_the_login() {
    let fake = Fake::start(&[]);
    let s = stack(&fake);
    device_login(&s, &fake);
    let state = s.env.home.join(".local/state/credagent/sso");
    assert_eq!(
        std::fs::read_dir(&state).unwrap().count(),
        1,
        "sealed login"
    );
    // Roles opened on the login end with it, and credctl says which.
    let token = s.role_token("dev-admin");
    let deploy = s.role_token("deploy");
    assert_eq!(s.ecs(Some(&token), &[]).0, 200);
    let out = s.ok(&["logout", "corp"]);
    assert!(
        out.contains("ended the role sessions opened on it: deploy, dev-admin"),
        "{out}"
    );
    assert_eq!(fake.count(&["calls", "Logout"]), 1);
    assert_eq!(std::fs::read_dir(&state).unwrap().count(), 0);
    assert!(s.ok(&["roles"]).contains("login needed"));
    for t in [&token, &deploy] {
        assert_ne!(s.ecs(Some(t), &[]).0, 200, "served after the logout");
    }
    assert!(s.ok(&["status", "--json"]).contains("\"sessions\": []"));
}

#[test]
fn a_browser_login_completed_in_headless_chromium() {
    let js = repo().join("tests/js");
    assert!(
        js.join("node_modules/playwright-core").is_dir(),
        "run `npm ci` in tests/js (scripts/setup does)"
    );
    let fake = Fake::start(&[]);
    let s = stack(&fake);
    let (child, rx) = spawn(&s, &["login", "corp"], &[]);
    let line = line_with(&rx, "sign in to IAM Identity Center in your browser: ");
    let url = line.split("browser: ").nth(1).unwrap().trim().to_owned();
    let out = Command::new("node")
        .arg("sso-login.mjs")
        .arg(&url)
        .current_dir(&js)
        .output()
        .unwrap();
    let page: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {} {}", stdout(&out), stderr(&out)));
    assert_eq!(page["title"], "Signed in", "{page}");
    assert_eq!(page["status"], 200, "{page}");
    finish(child);
    assert_eq!(fake.count(&["createToken", "authorization_code"]), 1);
    let token = s.role_token("dev-admin");
    assert_eq!(s.ecs(Some(&token), &[]).0, 200);
}

#[test]
fn discovery_lists_what_the_login_reaches_and_writes_profiles_that_work() {
    let fake = Fake::start(&[]);
    let s = stack(&fake);
    device_login(&s, &fake);
    let table = s.ok(&["roles", "--discover", "corp"]);
    assert!(table.contains("333333333333"), "{table}");
    assert!(table.contains("Admin, Deploy, ReadOnly"), "{table}");
    let out = s.credctl(&["roles", "--discover", "corp", "--config"]);
    let blocks = stdout(&out);
    // Every profile gets a region (the Identity Center one unless --region says otherwise),
    // so SDKs do not fall back to the global STS endpoint; stderr says so.
    assert!(blocks.contains("[profile prod-Deploy]\nsso_session = corp\nsso_account_id = 333333333333\nsso_role_name = Deploy\nregion = us-east-1\n"), "{blocks}");
    assert!(stderr(&out).contains("--region REGION"), "{}", stderr(&out));
    let other = s.ok(&[
        "roles",
        "--discover",
        "corp",
        "--config",
        "--region",
        "eu-west-1",
    ]);
    assert!(
        other.contains("sso_role_name = Deploy\nregion = eu-west-1\n"),
        "{other}"
    );
    assert_eq!(
        other.matches("region = eu-west-1").count(),
        blocks.matches("region = us-east-1").count()
    );
    let bad = s.credctl(&[
        "roles",
        "--discover",
        "corp",
        "--config",
        "--region",
        "eu-west-1;x",
    ]);
    assert!(!bad.status.success());
    // Pasted into ~/.aws/config, every block is a role that opens.
    let config = s.env.home.join(".aws/config");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push('\n');
    text.push_str(&blocks);
    std::fs::write(&config, text).unwrap();
    let roles = s.ok(&["roles", "--json"]);
    let roles: serde_json::Value = serde_json::from_str(&roles).unwrap();
    let deploy = roles
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "prod-Deploy")
        .expect("the pasted profile is a role");
    assert!(deploy["problem"].is_null(), "{deploy}");
    // No made-up ARN: the account and permission set, which scripts can use as they are.
    assert_eq!(deploy["role_arn"], "", "{deploy}");
    assert_eq!(
        deploy["sso_role"],
        serde_json::json!({"account_id": "333333333333", "permission_set": "Deploy"})
    );
    assert!(s
        .ok(&["roles"])
        .contains("Deploy in 333333333333 (IAM Identity Center)"));
    let token = s.role_token("prod-Deploy");
    assert_eq!(s.ecs(Some(&token), &[]).0, 200);
    assert_eq!(
        fake.state()["roleCredentials"]["333333333333/Deploy"],
        1,
        "{}",
        fake.state()
    );
}

/// A real sign-in takes minutes, not milliseconds: `credctl login` waits for it (the AWS CLI
/// waits up to 10 minutes) instead of giving up after its quick-request limit of 30 s.
#[test]
fn a_login_approved_after_45_seconds_still_completes() {
    let fake = Fake::start(&[]);
    let s = stack(&fake);
    let (child, rx) = spawn(&s, &["login", "corp", "--device-code"], &[]);
    line_with(&rx, "enter the code");
    std::thread::sleep(Duration::from_secs(45));
    fake.call("POST", "device/approve", "{}");
    let out = finish(child);
    assert!(stdout(&out).contains("logged in to IAM Identity Center (corp)"));
}

/// The person presses Deny: the browser comes back with `error=access_denied` and the login's
/// own state, and the login fails at once (credctl says so) instead of hanging until it expires.
/// The same error without the login's state changes nothing.
#[test]
fn a_denied_browser_sign_in_ends_the_login_at_once() {
    let fake = Fake::start(&[]);
    let s = stack(&fake);
    let (child, rx) = spawn(&s, &["login", "corp"], &[]);
    let line = line_with(&rx, "sign in to IAM Identity Center in your browser: ");
    let url = line.split("browser: ").nth(1).unwrap().trim().to_owned();
    let state = url
        .split(['?', '&'])
        .find_map(|kv| kv.strip_prefix("state="))
        .unwrap()
        .to_owned();
    let port = s.http.rsplit(':').next().unwrap().to_owned();
    let get = |query: &str| {
        stdout(
            &Command::new("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
                .arg(format!("http://127.0.0.1:{port}/oauth/callback?{query}"))
                .output()
                .unwrap(),
        )
    };
    assert_eq!(get("error=access_denied&state=forged"), "400");
    let started = std::time::Instant::now();
    assert_eq!(get(&format!("error=access_denied&state={state}")), "400");
    line_with(&rx, "access_denied (the sign-in was denied)");
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "the denied login succeeded");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the waiter hung"
    );
    assert_eq!(fake.count(&["createToken", "authorization_code"]), 0);
}

/// An organisation with 500 accounts: discovery follows every page of ListAccounts (20 a page
/// here) and lists every role, and the answer, larger than one control frame, arrives whole.
#[test]
fn discovery_over_500_accounts_follows_every_page() {
    let fake = Fake::start(&[]);
    let s = stack(&fake);
    device_login(&s, &fake);
    let accounts: serde_json::Map<String, serde_json::Value> = (0..500)
        .map(|i| {
            (
                format!("{:012}", 400_000_000_000u64 + i),
                serde_json::json!(["ReadOnly", "Admin"]),
            )
        })
        .collect();
    fake.call(
        "POST",
        "config",
        &serde_json::json!({ "accounts": accounts }).to_string(),
    );
    let blocks = s.ok(&["roles", "--discover", "corp", "--config"]);
    assert_eq!(
        blocks.matches("[profile ").count(),
        1000,
        "{}",
        &blocks[..500]
    );
    assert!(
        blocks.contains("sso_account_id = 400000000499\nsso_role_name = Admin\n"),
        "the last page too"
    );
    assert!(
        fake.count(&["calls", "ListAccounts"]) >= 25,
        "{}",
        fake.state()
    );
}

/// A legacy profile (`sso_start_url` in the profile, no `[sso-session]`) logs in with the device
/// code, as the AWS CLI v2 does (`do_sso_login`: the authorization-code flow needs an
/// sso-session), without being told to.
#[test]
fn a_legacy_sso_profile_logs_in_with_the_device_code() {
    let fake = Fake::start(&[]);
    let s = stack(&fake);
    let cfg = s.env.home.join(".aws/config");
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str(&format!(
        "\n[profile legacy]\nsso_start_url = {START_URL}\nsso_region = us-east-1\nsso_account_id = 111111111111\nsso_role_name = ReadOnly\nregion = us-east-1\n"
    ));
    std::fs::write(&cfg, text).unwrap();
    let (child, rx) = spawn(&s, &["login", "legacy"], &[]);
    let line = line_with(&rx, "enter the code");
    assert!(line.contains("/device"), "{line}");
    fake.call("POST", "device/approve", "{}");
    let out = finish(child);
    assert!(out.status.success(), "{}", stderr(&out));
    let token = s.role_token("legacy");
    assert_eq!(s.ecs(Some(&token), &[]).0, 200);
}

/// Ctrl-C on `credctl login` ends the login: the agent stops polling for the device code, and
/// the next `credctl login` starts a new one instead of joining the abandoned one.
#[test]
fn interrupting_credctl_login_cancels_the_login() {
    let fake = Fake::start(&[]);
    let s = stack(&fake);
    let (mut child, rx) = spawn(&s, &["login", "corp", "--device-code"], &[]);
    let first = line_with(&rx, "enter the code");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let _ = child.wait();
    // Polling stops (the fake's device interval is 1 s).
    let polled = || fake.count(&["calls", "CreateToken"]);
    wait_until(Duration::from_secs(15), || {
        let before = polled();
        std::thread::sleep(Duration::from_millis(2500));
        polled() == before
    })
    .expect("the agent kept polling a login nobody waits for");
    // A new login is a new device authorization, not the abandoned one.
    let (child, rx) = spawn(&s, &["login", "corp", "--device-code"], &[]);
    let second = line_with(&rx, "enter the code");
    assert_eq!(fake.count(&["calls", "StartDeviceAuthorization"]), 2);
    assert_ne!(first, second, "a new user code");
    fake.call("POST", "device/approve", "{}");
    let out = finish(child);
    assert!(stdout(&out).contains("logged in to IAM Identity Center (corp)"));
}

/// Names from the portal are data: a permission set named with a newline (which would start an
/// INI line of its own, such as `credential_process = …`) is left out of `--config` and printed
/// escaped in the table.
#[test]
fn portal_names_never_write_lines_into_the_aws_config() {
    let fake = Fake::start(&[]);
    let s = stack(&fake);
    device_login(&s, &fake);
    fake.call(
        "POST",
        "config",
        &serde_json::json!({ "accounts": {
            "444444444444": ["Admin\ncredential_process = /bin/evil", "ReadOnly"],
        }})
        .to_string(),
    );
    let mut cmd = s.env.command(bin("credctl"));
    let out = cmd
        .args(["roles", "--discover", "corp", "--config"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let blocks = stdout(&out);
    assert!(!blocks.contains("credential_process"), "{blocks}");
    assert!(blocks.contains("sso_role_name = ReadOnly\n"), "{blocks}");
    assert!(
        stderr(&out).contains("left out account 444444444444"),
        "{}",
        stderr(&out)
    );
    let table = s.ok(&["roles", "--discover", "corp"]);
    assert!(
        table.contains("Admin\\ncredential_process") && !table.contains("Admin\ncredential"),
        "{table}"
    );
}

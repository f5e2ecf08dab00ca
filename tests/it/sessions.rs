//! Role sessions end to end against moto: the touch, STS through the recording proxy, the
//! endpoint, tokens, coalescing, lock, and secrets kept out of logs.

use std::process::Stdio;
use std::time::Duration;

use crate::stack::{
    assert_demo_arn, key_counter, token_from_exports, Stack, BOTO3_WHOAMI, SECRET_KEY,
};
use crate::util::{bin, repo, stderr, stdout, wait_until};

#[test]
fn use_opens_the_role_and_boto3_gets_it_through_the_shell_token() {
    let s = Stack::new("", "").with_key_and_source();
    let start = s.ok(&["start"]);
    let token = token_from_exports(&start);
    assert!(
        start.contains(&format!(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI='{}'",
            s.ecs_uri()
        )),
        "{start}"
    );
    assert!(start.contains("unset AWS_CONTAINER_CREDENTIALS_RELATIVE_URI;"));

    // The shell has a token but no role yet.
    let (code, body) = s.ecs(Some(&token), &[]);
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("credctl use ROLE"), "{body}");

    let out = s
        .env
        .command(bin("credctl"))
        .env("CREDCTL_AUTHENTICATOR", s.soft_arg())
        .env("AWS_CONTAINER_AUTHORIZATION_TOKEN", &token)
        .args(["use", "demo"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("role demo is current for this shell"));
    assert!(stderr(&out).contains("INSECURE software authenticator"));

    let (code, body) = s.ecs(Some(&token), &[]);
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    for k in [
        "AccessKeyId",
        "SecretAccessKey",
        "Token",
        "Expiration",
        "AccountId",
    ] {
        assert!(v[k].is_string(), "{k} missing in {body}");
    }
    let exp = v["Expiration"].as_str().unwrap();
    assert_eq!(exp.len(), 20, "{exp}");
    assert!(exp.ends_with('Z') && exp.as_bytes()[10] == b'T');
    assert_eq!(v["AccountId"], "123456789012");

    let out = s
        .sdk_command("python3", &token)
        .args(["-c", BOTO3_WHOAMI])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let arn = stdout(&out);
    assert!(
        arn.trim()
            .starts_with("arn:aws:sts::123456789012:assumed-role/demo/credagent-"),
        "{arn}"
    );
    assert_eq!(s.sts.calls("AssumeRole").len(), 1);
}

#[test]
fn unapproved_role_is_refused_at_once_then_watch_takes_the_touch() {
    let s = Stack::new("", "").with_key_and_source();
    // A token bound to demo, issued while no session is open.
    let token = s.unopened_role_token("demo");
    // Refused at once: the answer comes back while the approval it asked for is still pending
    // (the status below), so it did not wait on a touch.
    let (code, body) = s.ecs(Some(&token), &[]);
    assert_eq!(code, 403);
    assert!(
        body.contains("no approved session for role demo") && body.contains("credctl use demo"),
        "{body}"
    );
    assert!(
        body.contains("\"code\":\"not_approved\"") && body.contains("\"Code\":\"not_approved\"")
    );

    let status: serde_json::Value =
        serde_json::from_slice(&s.credctl(&["status", "--json"]).stdout).unwrap();
    assert_eq!(status["pending"][0]["role"], "demo", "{status}");

    wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(s.env.home.join(".local/state/credagent/audit.jsonl"))
            .unwrap_or_default()
            .contains("\"reason\":\"not_approved\"")
    })
    .expect("the refusal is audited");
    let out = s.credctl(&["watch", "--once"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("role demo requested by"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("role demo is open"),
        "{}",
        stderr(&out)
    );
    assert_eq!(s.ecs(Some(&token), &[]).0, 200);
    let status: serde_json::Value =
        serde_json::from_slice(&s.credctl(&["status", "--json"]).stdout).unwrap();
    assert_eq!(status["pending"], serde_json::json!([]));
}

#[test]
fn exec_runs_with_a_role_token_that_dies_with_the_command() {
    let s = Stack::new("", "").with_key_and_source();
    let file = s.env.dir.path().join("token-seen");
    let script = format!(
        "printf %s \"$AWS_CONTAINER_AUTHORIZATION_TOKEN\" > {f}; test -z \"$AWS_ACCESS_KEY_ID\"; test \"$AWS_ACCOUNT_ID\" = 123456789012 || exit 3; python3 -c \"{BOTO3_WHOAMI}\" && exit 7",
        f = file.display()
    );
    let out = s
        .env
        .command(bin("credctl"))
        .env("CREDCTL_AUTHENTICATOR", s.soft_arg())
        .env("AWS_ENDPOINT_URL_STS", &s.sts.moto_url)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_ACCESS_KEY_ID", "AKIASHADOWSHADOW")
        .args(["exec", "demo", "--", "sh", "-c", &script])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("assumed-role/demo/"),
        "{}",
        stdout(&out)
    );
    let token = std::fs::read_to_string(&file).unwrap();
    assert!(token.starts_with("cat1_"));
    let (code, body) = s.ecs(Some(&token), &[]);
    assert_eq!(code, 401, "revoked exec token must be refused: {body}");
}

#[test]
fn env_token_file_has_no_newline_and_serves_boto3() {
    let s = Stack::new("", "").with_key_and_source();
    let file = s.env.home.join("token");
    let out = s.ok(&["env", "demo", "--token-file", file.to_str().unwrap()]);
    assert!(
        out.contains("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE="),
        "{out}"
    );
    assert!(
        out.contains("unset AWS_CONTAINER_AUTHORIZATION_TOKEN;"),
        "{out}"
    );
    let token = std::fs::read(&file).unwrap();
    assert!(!token.ends_with(b"\n"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let out = s
        .sdk_command("python3", "")
        .env_remove("AWS_CONTAINER_AUTHORIZATION_TOKEN")
        .env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", &file)
        .args(["-c", BOTO3_WHOAMI])
        .output()
        .unwrap();
    assert_demo_arn("sdk", &out);
}

#[test]
fn twenty_concurrent_use_share_one_touch_and_one_assume_role() {
    let s = Stack::new("", "").with_key_and_source();
    let before: serde_json::Value =
        serde_json::from_slice(&s.credctl(&["key", "list", "--json"]).stdout).unwrap();
    let tokens: Vec<String> = (0..20)
        .map(|_| {
            let out = s.ok(&["start"]);
            token_from_exports(&out)
        })
        .collect();
    let children: Vec<_> = tokens
        .iter()
        .map(|t| {
            s.env
                .command(bin("credctl"))
                .env("CREDCTL_AUTHENTICATOR", s.soft_arg())
                .env("AWS_CONTAINER_AUTHORIZATION_TOKEN", t)
                .args(["use", "demo"])
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let after: serde_json::Value =
        serde_json::from_slice(&s.credctl(&["key", "list", "--json"]).stdout).unwrap();
    let counter = |v: &serde_json::Value| v[0]["counter"].as_u64().unwrap();
    assert_eq!(
        counter(&after) - counter(&before),
        1,
        "exactly one assertion (one touch)"
    );
    assert_eq!(s.sts.calls("AssumeRole").len(), 1);
    for t in &tokens {
        assert_eq!(s.ecs(Some(t), &[]).0, 200);
    }
}

#[test]
fn fifty_parallel_credential_process_make_one_assume_role() {
    let s = Stack::new("", "").with_key_and_source();
    let children: Vec<_> = (0..50)
        .map(|_| {
            s.env
                .command(bin("credctl"))
                .env("CREDCTL_AUTHENTICATOR", s.soft_arg())
                .args(["credential-process", "demo"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut keys = std::collections::HashSet::new();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["Version"], 1);
        keys.insert(v["AccessKeyId"].as_str().unwrap().to_owned());
    }
    assert_eq!(keys.len(), 1, "every requester got the same credentials");
    assert_eq!(
        s.sts.calls("AssumeRole").len(),
        1,
        "{:?}",
        s.sts.calls("AssumeRole")
    );
}

#[test]
fn credential_process_works_for_boto3() {
    let s = Stack::new("", "").with_key_and_source();
    s.role_token("demo");
    let cfg = s.env.home.join(".aws/config");
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str(&format!(
        "\n[profile viaproc]\ncredential_process = {} credential-process demo\n",
        bin("credctl").display()
    ));
    std::fs::write(&cfg, text).unwrap();
    let out = s
        .env
        .command("python3")
        .env("AWS_PROFILE", "viaproc")
        .env("AWS_ENDPOINT_URL_STS", &s.sts.moto_url)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("CREDCTL_AUTHENTICATOR", s.soft_arg())
        .args(["-c", BOTO3_WHOAMI])
        .output()
        .unwrap();
    assert_demo_arn("sdk", &out);
    // AccountId, which botocore's process provider reads (account-based endpoints).
    let out = s
        .env
        .command("python3")
        .env("AWS_PROFILE", "viaproc")
        .env("CREDCTL_AUTHENTICATOR", s.soft_arg())
        .args([
            "-c",
            "import botocore.session; print(botocore.session.get_session().get_credentials().account_id)",
        ])
        .output()
        .unwrap();
    assert_eq!(stdout(&out).trim(), "123456789012", "{}", stderr(&out));
}

#[test]
fn chained_roles_external_id_and_duration_reach_sts() {
    let s = Stack::new(
        "[profile mid]\nrole_arn = arn:aws:iam::123456789012:role/mid\nsource_profile = SOURCE\nexternal_id = ext-123\n\n\
         [profile top]\nrole_arn = arn:aws:iam::123456789012:role/top\nsource_profile = mid\nduration_seconds = 1800\nrole_session_name = alice\n",
        "",
    )
    .with_key_and_source();
    let roles: serde_json::Value =
        serde_json::from_slice(&s.credctl(&["roles", "--json"]).stdout).unwrap();
    let top = roles
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "top")
        .unwrap()
        .clone();
    assert_eq!(top["chain"], serde_json::json!([s.source, "mid", "top"]));
    let token = s.role_token("top");
    let out = s
        .sdk_command("python3", &token)
        .args(["-c", BOTO3_WHOAMI])
        .output()
        .unwrap();
    assert!(
        stdout(&out).contains("assumed-role/top/alice"),
        "{}",
        stderr(&out)
    );
    let calls = s.sts.calls("AssumeRole");
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[0]["RoleArn"], "arn:aws:iam::123456789012:role/mid");
    assert_eq!(calls[0]["ExternalId"], "ext-123");
    assert_eq!(calls[1]["RoleArn"], "arn:aws:iam::123456789012:role/top");
    assert_eq!(calls[1]["DurationSeconds"], "1800");
    assert_eq!(calls[1]["RoleSessionName"], "alice");
}

#[test]
fn mfa_source_calls_get_session_token_once_for_two_roles() {
    let s = Stack::new(
        "[profile other]\nrole_arn = arn:aws:iam::123456789012:role/other\nsource_profile = SOURCE\n",
        "",
    );
    // mfa_serial on the source.
    let s = s.with_source_mfa_serial().with_key_and_source();
    // Without a code and without a terminal: a clear error.
    let out = s.credctl(&["env", "demo"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--mfa-code"), "{}", stderr(&out));
    s.ok(&["env", "demo", "--mfa-code", "123456"]);
    s.ok(&["env", "other"]);
    assert_eq!(s.sts.calls("GetSessionToken").len(), 1);
    let gst = &s.sts.calls("GetSessionToken")[0];
    assert_eq!(gst["SerialNumber"], "arn:aws:iam::123456789012:mfa/alice");
    assert_eq!(s.sts.calls("AssumeRole").len(), 2);
}

#[test]
fn mfa_roles_stay_within_the_chaining_limit_or_take_the_code_on_assume_role() {
    // STS refuses more than an hour to a role assumed with temporary credentials, such as an
    // MFA session's (the STS front in the tests does too). A one-hop MFA role asking for more
    // sends its code on AssumeRole, signed with the source's keys, as the AWS CLI does; a
    // longer chain starts from the MFA session and is capped at an hour.
    let s = Stack::new(
        "[profile long]\nrole_arn = arn:aws:iam::123456789012:role/long\nsource_profile = SOURCE\nduration_seconds = 7200\n\n\
         [profile onward]\nrole_arn = arn:aws:iam::123456789012:role/onward\nsource_profile = long\nduration_seconds = 7200\n",
        "",
    );
    let s = s.with_source_mfa_serial().with_key_and_source();
    s.ok(&["env", "long", "--mfa-code", "123456"]);
    assert!(s.sts.calls("GetSessionToken").is_empty());
    let calls = s.sts.calls("AssumeRole");
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(
        calls[0]["SerialNumber"],
        "arn:aws:iam::123456789012:mfa/alice"
    );
    assert_eq!(calls[0]["TokenCode"], "<redacted>");
    let asked: u64 = calls[0]["DurationSeconds"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(asked > 3600, "the session's length, above an hour: {asked}");

    s.ok(&["env", "onward", "--mfa-code", "654321"]);
    assert_eq!(s.sts.calls("GetSessionToken").len(), 1);
    let calls = s.sts.calls("AssumeRole");
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert!(calls[1].get("SerialNumber").is_none(), "{calls:?}");
    assert_eq!(calls[2]["RoleArn"], "arn:aws:iam::123456789012:role/onward");
    assert_eq!(calls[2]["DurationSeconds"], "3600");
}

#[test]
fn the_sts_front_refuses_long_chained_sessions_as_sts_does() {
    let env = crate::util::TestEnv::new();
    let sts = crate::stack::Sts::start(env.dir.path());
    let out = env
        .command("python3")
        .arg(repo().join("tests/py/sts_strict_selftest.py"))
        .arg(&sts.url)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("chained AssumeRole for 7200 s: ValidationError"));
}

#[test]
fn lock_ends_sessions_and_sigusr1_too() {
    let s = Stack::new("", "").with_key_and_source();
    let token = s.role_token("demo");
    assert_eq!(s.ecs(Some(&token), &[]).0, 200);
    s.ok(&["lock"]);
    assert_eq!(
        s.ecs(Some(&token), &[]).0,
        401,
        "lock revokes role-bound tokens"
    );
    let token = s.role_token("demo");
    assert_eq!(s.ecs(Some(&token), &[]).0, 200);
    s.agent.signal(nix::sys::signal::Signal::SIGUSR1);
    wait_until(Duration::from_secs(5), || s.ecs(Some(&token), &[]).0 == 401)
        .expect("SIGUSR1 locks");
}

#[test]
fn cloned_software_key_is_refused() {
    let s = Stack::new("", "").with_key_and_source();
    let clone = s.env.home.join("clone.cbor");
    std::fs::copy(&s.soft, &clone).unwrap();
    s.role_token("demo");
    s.ok(&["lock"]);
    let out = s.credctl(&[
        "env",
        "demo",
        "--authenticator",
        &format!("soft:{}", clone.display()),
    ]);
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    assert!(
        stderr(&out).to_lowercase().contains("clone") || stderr(&out).contains("counter"),
        "{}",
        stderr(&out)
    );
    assert!(
        s.agent.log_text().contains("counter"),
        "{}",
        s.agent.log_text()
    );
}

#[test]
fn no_secret_reaches_the_agent_log() {
    let s = Stack::new("", "").with_key_and_source();
    let token = s.role_token("demo");
    let (_, body) = s.ecs(Some(&token), &[]);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    s.ok(&["lock"]);
    let log = s.agent.log_text();
    assert!(
        log.contains("touch verified"),
        "the log must have content: {log}"
    );
    for secret in [
        SECRET_KEY,
        v["SecretAccessKey"].as_str().unwrap(),
        v["Token"].as_str().unwrap(),
        &token,
    ] {
        assert!(!log.contains(secret), "secret found in the agent log");
    }
    let audit =
        std::fs::read_to_string(s.env.home.join(".local/state/credagent/audit.jsonl")).unwrap();
    assert!(!audit.contains(&token) && !audit.contains(SECRET_KEY));
}

#[test]
fn sts_faults_are_retried_and_never_cost_a_valid_credential() {
    let s = Stack::new(
        "[profile other]\nrole_arn = arn:aws:iam::123456789012:role/other\nsource_profile = SOURCE\n",
        "",
    )
    .with_key_and_source();
    s.role_token("demo");
    // Three 503s: the agent retries with backoff and the fourth attempt opens the role.
    s.sts.fail_next(3, 503);
    let other = s.role_token("other");
    assert_eq!(s.ecs(Some(&other), &[]).0, 200);
    let tries = s
        .sts
        .calls("AssumeRole")
        .iter()
        .filter(|c| c["RoleArn"] == "arn:aws:iam::123456789012:role/other")
        .count();
    assert_eq!(tries, 4, "three failures and one success");

    // STS down for good: opening fails with a clear, transient error; demo is still served.
    s.ok(&["lock"]);
    let token = s.role_token("demo");
    s.sts.fail_next(50, 503);
    let out = s.credctl(&["env", "other"]);
    // AWS out of reach is a failure, not a refusal.
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("other"), "{}", stderr(&out));
    assert_eq!(
        s.ecs(Some(&token), &[]).0,
        200,
        "cached demo credentials keep being served"
    );
}

#[test]
fn a_client_that_dies_mid_touch_does_not_block_the_role() {
    let s = Stack::new("", "").with_key_and_source();
    let mut child = s
        .env
        .command(bin("credctl"))
        .args(["env", "demo", "--browser"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until it has its challenge (it prints the approval URL), then kill it mid-touch.
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("/approve/") {
        line.clear();
        assert!(
            std::io::BufRead::read_line(&mut err, &mut line).unwrap() > 0,
            "no URL printed"
        );
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // Were the dead client's ceremony left standing, this `env` would follow it and fail with
    // "nobody touched a security key in time" once it went stale. It opens the role instead, with
    // a touch of its own.
    let before = key_counter(&s);
    s.role_token("demo");
    assert_eq!(key_counter(&s) - before, 1, "one touch, by the new client");
}

#[test]
fn keys_only_in_the_credentials_file_are_refused_then_imported_and_removed() {
    let s = Stack::new("", "");
    s.ok(&["key", "add", "soft", "--accept-change"]);
    let creds = s.env.home.join(".aws/credentials");
    let keep_before = "# my notes\n[default]\naws_access_key_id = AKIADEFAULTDEFAULT1\naws_secret_access_key = keepme/keepme/keepme\n\n";
    let keep_after = "; trailing comment\n[other]\nregion = eu-west-1\n";
    let doomed = format!(
        "[{}]\naws_access_key_id = AKIAIOSFODNN7EXAMPLE\naws_secret_access_key = {SECRET_KEY}\n",
        s.source
    );
    std::fs::write(&creds, format!("{keep_before}{doomed}{keep_after}")).unwrap();

    let out = s.credctl(&["env", "demo"]);
    assert!(!out.status.success());
    let advice = format!(
        "credctl source add {0} --import-profile {0} --remove-from-file",
        s.source
    );
    assert!(stderr(&out).contains(&advice), "{}", stderr(&out));

    let out = s.ok(&[
        "source",
        "add",
        &s.source,
        "--import-profile",
        &s.source,
        "--remove-from-file",
    ]);
    assert!(out.contains("removed profile"), "{out}");
    assert_eq!(
        std::fs::read_to_string(&creds).unwrap(),
        format!("{keep_before}{keep_after}")
    );
    let list = s.ok(&["source", "list"]);
    assert!(
        list.contains(&s.source)
            && list.contains("…MPLE")
            && !list.contains("AKIAIOSFODNN7EXAMPLE"),
        "{list}"
    );
    let token = s.role_token("demo");
    assert_eq!(s.ecs(Some(&token), &[]).0, 200);
}

#[test]
fn kill_9_during_heavy_key_use_never_corrupts_the_key_file() {
    let mut s = Stack::new("", "").with_key_and_source();
    let keys = s.env.home.join(".local/state/credagent/keys.json");
    for round in 0..6 {
        let before = std::fs::read_to_string(&keys).expect("keys.json");
        // Touches in a tight loop (each one rewrites keys.json with the new counter) …
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let workers: Vec<_> = (0..3)
            .map(|_| {
                let stop = stop.clone();
                let mut cmd = s.env.command(bin("credctl"));
                cmd.env("CREDCTL_AUTHENTICATOR", s.soft_arg())
                    .args(["env", "demo"]);
                let mut lock = s.env.command(bin("credctl"));
                lock.arg("lock");
                std::thread::spawn(move || {
                    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                        let _ = cmd.output();
                        let _ = lock.output();
                    }
                })
            })
            .collect();
        // … and the agent killed with SIGKILL in the middle of them: once they are under way
        // (a touch has rewritten the file; a slow machine must not kill an idle agent), at a
        // different point in each round.
        wait_until(Duration::from_secs(60), || {
            std::fs::read_to_string(&keys).is_ok_and(|now| now != before)
        })
        .unwrap_or_else(|| {
            panic!(
                "round {round}: no touch landed; agent log:\n{}",
                s.agent.log_text()
            )
        });
        std::thread::sleep(Duration::from_millis(97 * round));
        s.agent.signal(nix::sys::signal::Signal::SIGKILL);
        let _ = s.agent.wait_exit(Duration::from_secs(5));
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        for w in workers {
            w.join().unwrap();
        }
        let text = std::fs::read_to_string(&keys).expect("keys.json must exist after kill -9");
        let v: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("round {round}: corrupt keys.json ({e}): {text:?}"));
        assert!(
            text.contains("\"soft\""),
            "round {round}: the key vanished: {v}"
        );
        s.agent = s.env.agent(&[]);
        // The soft token's counter file and the agent's stored counter must still agree enough
        // for the next touch to verify (the token only ever moves forward).
        s.role_token("demo");
    }
}

#[test]
fn a_second_key_needs_a_touch_of_a_registered_key() {
    let s = Stack::new("", "").with_key_and_source();
    let rogue = format!("soft:{}", s.env.home.join("rogue.cbor").display());
    // A process that only holds a new authenticator cannot enrol it.
    let out = s.credctl(&["key", "add", "rogue", "--authenticator", &rogue]);
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("allow adding the new key rogue"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("adding a key needs a touch of a key registered before"),
        "{}",
        stderr(&out)
    );
    let keys: serde_json::Value =
        serde_json::from_slice(&s.credctl(&["key", "list", "--json"]).stdout).unwrap();
    assert_eq!(keys.as_array().unwrap().len(), 1, "{keys}");

    // With a touch of the registered key, the new key enrols, and then opens roles by itself.
    let out = s.credctl(&[
        "key",
        "add",
        "second",
        "--authenticator",
        &rogue,
        "--authorizer",
        &s.soft_arg(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let keys: serde_json::Value =
        serde_json::from_slice(&s.credctl(&["key", "list", "--json"]).stdout).unwrap();
    assert_eq!(keys.as_array().unwrap().len(), 2, "{keys}");
    let out = s.credctl(&["env", "demo", "--authenticator", &rogue]);
    assert!(out.status.success(), "{}", stderr(&out));
    // A key-add pseudo-role can never be opened as a session.
    let out = s.credctl(&["env", "key add: x"]);
    assert!(!out.status.success());
}

/// `credctl prompt`: this shell's role and its time left, approvals waiting, in one short line;
/// never an error on a prompt.
#[test]
fn the_prompt_line_shows_the_shells_role_time_left_and_waiting_approvals() {
    let s = Stack::new("", "").with_key_and_source();
    let prompt = |token: Option<&str>| {
        let mut cmd = s.env.command(crate::util::bin("credctl"));
        cmd.arg("prompt");
        if let Some(t) = token {
            cmd.env("AWS_CONTAINER_AUTHORIZATION_TOKEN", t);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        crate::util::stdout(&out)
    };
    assert_eq!(prompt(None), "", "no token: nothing");
    let token = s.role_token("demo");
    let line = prompt(Some(&token));
    assert!(
        line.starts_with("demo 0h5") || line.starts_with("demo 1h00m"),
        "{line:?}"
    );
    assert_eq!(prompt(Some("cat1_0000000000000000_00")), "stale token\n");
    // A role asked for over the endpoint with no session open waits for an approval.
    let unopened = s.unopened_role_token("other");
    let _ = s.ecs(Some(&unopened), &[]);
    let line = prompt(Some(&token));
    assert!(line.trim_end().ends_with("!1"), "{line:?}");
    s.ok(&["lock"]);
    assert_eq!(
        prompt(Some(&token)),
        "stale token\n",
        "lock revokes role-bound tokens"
    );
}

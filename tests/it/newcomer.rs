//! What a new user trips over: SDKs silently preferring other credentials, secrets echoed in
//! errors, and exit statuses that disagree with the documented table.

use std::io::Write;
use std::process::Stdio;

use crate::stack::{assert_demo_arn, key_counter, Stack, BOTO3_WHOAMI};
use crate::util::{bin, stderr, stdout};

const STATIC_KEYS: &str =
    "[default]\naws_access_key_id = AKIAIOSFODNN7STATIC\naws_secret_access_key = \
     wJalrXUtnFEMI/K7MDENG/bPxRfiCYSTATICKEY\n";

/// boto3 under `credctl exec demo`, with the caller's shell environment `vars`.
fn exec_whoami(s: &Stack, vars: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = s.env.command(bin("credctl"));
    cmd.env("CREDCTL_AUTHENTICATOR", s.soft_arg())
        .env("AWS_ENDPOINT_URL_STS", &s.sts.moto_url)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .args(["exec", "demo", "--", "python3", "-c", BOTO3_WHOAMI]);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[test]
fn no_silent_bypass_by_a_default_profile_or_aws_profile() {
    let s = Stack::new("[profile static]\nregion = us-east-1\n", "").with_key_and_source();
    std::fs::write(s.env.home.join(".aws/credentials"), STATIC_KEYS).unwrap();

    // botocore reads [default] before the container provider: exec's command must still get
    // the role, and the user is told how to fix the file.
    let out = exec_whoami(&s, &[]);
    assert_demo_arn("exec with [default] keys in ~/.aws/credentials", &out);
    assert!(
        stderr(&out).contains("--import-profile default --remove-from-file"),
        "{}",
        stderr(&out)
    );
    // AWS_PROFILE left set by the user would win too (or fail): exec's command does not see it.
    let out = exec_whoami(
        &s,
        &[("AWS_PROFILE", "static"), ("AWS_DEFAULT_PROFILE", "static")],
    );
    assert_demo_arn("exec with AWS_PROFILE set", &out);

    // start unsets them in the shell, and says so when this shell has them.
    let out = s.credctl(&["start"]);
    let exports = stdout(&out);
    for v in ["AWS_PROFILE", "AWS_DEFAULT_PROFILE"] {
        assert!(exports.contains(&format!("unset {v};")), "{exports}");
    }
    assert!(
        !stderr(&out).contains("unsetting"),
        "nothing was set: {}",
        stderr(&out)
    );
    let out = s
        .env
        .command(bin("credctl"))
        .env("AWS_PROFILE", "static")
        .arg("start")
        .output()
        .unwrap();
    // Said on stderr, where the person sees it (`eval` would swallow a comment).
    assert!(
        stderr(&out).contains("unsetting this shell's AWS_PROFILE"),
        "{}",
        stderr(&out)
    );
    // use warns about what this shell still has.
    let out = s
        .env
        .command(bin("credctl"))
        .env("CREDCTL_AUTHENTICATOR", s.soft_arg())
        .env(
            "AWS_CONTAINER_AUTHORIZATION_TOKEN",
            crate::stack::token_from_exports(&exports),
        )
        .env("AWS_PROFILE", "static")
        .args(["use", "demo"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("AWS_PROFILE is set in this shell"), "{err}");
    assert!(err.contains("[default]"), "{err}");
}

#[test]
fn a_swapped_secret_is_never_echoed() {
    let s = Stack::new("", "");
    let secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYSWAPPEDKEY";
    let mut child = s
        .env
        .command(bin("credctl"))
        .args(["source", "add", "swapped", "--stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{secret}\nAKIAIOSFODNN7EXAMPLE\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("swapped"), "{}", stderr(&out));
    for text in [stdout(&out), stderr(&out), s.agent.log_text()] {
        assert!(!text.contains(secret) && !text.contains("wJalr"), "{text}");
    }
    assert!(
        !s.ok(&["source", "list"]).contains("swapped"),
        "nothing was stored"
    );
}

#[test]
fn exec_exits_like_a_shell_when_the_command_cannot_run() {
    let s = Stack::new("", "").with_key_and_source();
    let missing = s.credctl(&["exec", "demo", "--", "no-such-command-credagent"]);
    assert_eq!(missing.status.code(), Some(127), "{}", stderr(&missing));
    let not_exec = s.env.dir.path().join("not-executable");
    std::fs::write(&not_exec, "#!/bin/sh\n").unwrap();
    let denied = s.credctl(&["exec", "demo", "--", not_exec.to_str().unwrap()]);
    assert_eq!(denied.status.code(), Some(126), "{}", stderr(&denied));
    let own = s.credctl(&["exec", "demo", "--", "sh", "-c", "exit 42"]);
    assert_eq!(own.status.code(), Some(42));
}

/// The counter of the one registered key: it moves with every touch.

#[test]
fn every_check_that_needs_no_touch_runs_before_the_touch() {
    let long_role = "r".repeat(300);
    let s = Stack::new(
        &format!(
            "[profile {long_role}]\nrole_arn = arn:aws:iam::123456789012:role/long\nsource_profile = SOURCE\n\n\
             [profile loop]\nrole_arn = arn:aws:iam::123456789012:role/loop\nsource_profile = loop2\n\n\
             [profile loop2]\nrole_arn = arn:aws:iam::123456789012:role/loop2\nsource_profile = loop\n"
        ),
        "",
    );
    s.ok(&["key", "add", "soft", "--accept-change"]);
    let before = key_counter(&s);

    // No source stored: refused before any touch, with the command that fixes it.
    let out = s.credctl(&["use", "demo"]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("credctl source add"),
        "{}",
        stderr(&out)
    );
    // Names checked where they are typed.
    for bad in ["", &"k".repeat(100)] {
        let out = s.credctl(&["key", "add", bad]);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", stderr(&out));
    }
    let out = s.credctl(&["use", &long_role]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(
        key_counter(&s),
        before,
        "a touch was taken for a request that could not succeed"
    );

    // roles marks what cannot be opened, and why.
    let roles = s.ok(&["roles"]);
    assert!(roles.contains("BROKEN"), "{roles}");
    assert!(roles.contains("too long"), "{roles}");
    let json: serde_json::Value = serde_json::from_str(&s.ok(&["roles", "--json"])).unwrap();
    let looped = json
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "loop")
        .unwrap();
    assert!(looped["problem"].as_str().is_some(), "{looped}");
    let demo = json
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "demo")
        .unwrap();
    assert!(demo.get("problem").is_none(), "{demo}");
}

#[test]
fn input_is_checked_and_options_that_cannot_apply_are_refused() {
    let s = Stack::new("", "").with_key_and_source();
    // `imds ROLE` says "once its session is open" only while it is not.
    assert!(s.ok(&["imds", "demo"]).contains("once its session is open"));
    s.ok(&["env", "demo"]);
    assert_eq!(s.ok(&["imds", "demo"]), "IMDS now serves role demo\n");
    // imds takes only a role that exists.
    let out = s.credctl(&["imds", "nosuch"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("nosuch"), "{}", stderr(&out));
    // A relative token file is exported by its absolute path.
    let dir = s.env.dir.path().join("work");
    std::fs::create_dir(&dir).unwrap();
    let out = s
        .env
        .command(bin("credctl"))
        .env("CREDCTL_AUTHENTICATOR", s.soft_arg())
        .current_dir(&dir)
        .args(["env", "demo", "--token-file", "rel.token"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let exports = stdout(&out);
    let want = format!("{}/rel.token", dir.display());
    assert!(exports.contains(&want), "{exports}");
    // --config cannot apply to a running agent: refused, not ignored.
    let out = s.credctl(&["start", "--config", "/nonexistent/config.toml"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("credctl stop"), "{}", stderr(&out));
    // --remove-from-file means nothing without --import-profile.
    let out = s.credctl(&["source", "add", "x", "--remove-from-file"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    // An unknown authenticator is a usage error.
    let out = s.credctl(&["use", "demo", "--authenticator", "yubikey"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    // An MFA code that cannot be one: refused before any touch or STS call.
    let calls = s.sts.calls("AssumeRole").len();
    let out = s.credctl(&["env", "demo", "--mfa-code", "abc"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("6 digits"), "{}", stderr(&out));
    assert_eq!(s.sts.calls("AssumeRole").len(), calls);
    // exec without `--` runs the command all the same.
    let out = s.credctl(&["exec", "demo", "sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    // Empty and overlong names are usage errors, refused before anything is asked, and a long
    // one is quoted by its beginning only.
    let long = "a".repeat(5000);
    for args in [
        &["login", ""][..],
        &["logout", ""],
        &["key", "remove", ""],
        &["token", "revoke", ""],
        &["source", "remove", ""],
        &["source", "add", "", "--stdin"],
        &["imds", ""],
        &["roles", "--discover", ""],
        &["imds", &long],
        &["login", &long],
        &["key", "remove", &long],
    ] {
        let out = s.credctl(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).len() < 1000,
            "{args:?} echoed: {}",
            stderr(&out).len()
        );
    }
    // A missing or short secret on standard input is bad input: exit 2, nothing stored.
    for input in ["AKIAIOSFODNN7EXAMPLE\n", "AKIAIOSFODNN7EXAMPLE\nshort\n"] {
        let out = s
            .env
            .command(bin("credctl"))
            .args(["source", "add", "other", "--stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                c.stdin.take().unwrap().write_all(input.as_bytes())?;
                c.wait_with_output()
            })
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{input:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("nothing was stored"),
            "stderr {:?} stdout {:?}",
            stderr(&out),
            stdout(&out)
        );
    }
}

#[test]
fn the_agents_aws_config_is_named_and_a_different_one_is_pointed_out() {
    let s = Stack::new("", "").with_key_and_source();
    let agents = s.env.home.join(".aws/config");
    let roles = s.ok(&["roles"]);
    assert!(roles.contains(&agents.display().to_string()), "{roles}");
    let status = s.ok(&["status"]);
    assert!(status.contains(&agents.display().to_string()), "{status}");
    let other = s.env.dir.path().join("other-config");
    std::fs::write(&other, "[profile x]\nrole_arn = arn:aws:iam::1:role/x\n").unwrap();
    let out = s
        .env
        .command(bin("credctl"))
        .env("AWS_CONFIG_FILE", &other)
        .args(["roles"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("this shell's AWS_CONFIG_FILE") && err.contains("credctl stop"),
        "{err}"
    );
}

#[test]
fn help_and_man_are_complete_and_stop_leaves_no_lock_file() {
    let s = Stack::new("", "");
    let man = stdout(&s.credctl(&["man"]));
    assert!(!man.contains("credctl\\-start(1)") && !man.contains("credctl-start(1)"));
    assert!(
        man.contains(".SH EXIT STATUS") && man.contains(".SH COMMANDS"),
        "{man}"
    );
    // config.toml, the environment and the files have their sections.
    for (section, entry) in [
        (".SH CONFIGURATION", "[approval] user_verification"),
        (".SH ENVIRONMENT", "CREDCTL_AUTHENTICATOR"),
        (".SH FILES", "trusted.json"),
    ] {
        assert!(man.contains(section), "{section} in {man}");
        let after = &man[man.find(section).unwrap()..];
        assert!(after.contains(entry), "{entry} under {section}");
    }
    for cmd in [
        &["key", "add"][..],
        &["key", "list"],
        &["key", "remove"],
        &["source", "add"],
        &["source", "list"],
        &["source", "remove"],
        &["use"],
        &["exec"],
        &["env"],
        &["export"],
        &["token", "revoke"],
    ] {
        let mut args = cmd.to_vec();
        args.push("--help");
        let help = stdout(&s.credctl(&args));
        let section = help.split("Arguments:").nth(1).unwrap_or("");
        let lines: Vec<&str> = section
            .lines()
            .take_while(|l| !l.starts_with("Options:"))
            .collect();
        for (i, line) in lines.iter().enumerate() {
            let t = line.trim();
            if t.starts_with('<') || t.starts_with('[') {
                // Described on the same line, or (long help) on the next, further indented.
                let next = lines.get(i + 1).copied().unwrap_or("");
                let indent = |l: &str| l.len() - l.trim_start().len();
                let described =
                    t.contains("  ") || (!next.trim().is_empty() && indent(next) > indent(line));
                assert!(described, "{cmd:?}: argument without a description: {t}");
            }
        }
        assert!(
            !help.contains("--mfa-code") || !cmd.starts_with(&["key"]),
            "{cmd:?} offers --mfa-code"
        );
    }
    s.ok(&["stop"]);
    let lock = s.env.sock.with_extension("sock.lock");
    assert!(!lock.exists(), "stop left {} behind", lock.display());
}

/// Feeds `lines` to `credctl source add NAME --stdin ARGS…` with the software key.
fn source_add(s: &Stack, name: &str, lines: &str, args: &[&str]) -> std::process::Output {
    let mut child = s
        .env
        .command(bin("credctl"))
        .env("CREDCTL_AUTHENTICATOR", s.soft_arg())
        .args(["source", "add", name, "--stdin"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // credctl may refuse before it reads its input (a source that exists without --replace):
    // then the pipe is closed, which is its answer, not the test's failure.
    match child.stdin.take().unwrap().write_all(lines.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        other => other.unwrap(),
    }
    child.wait_with_output().unwrap()
}

#[test]
fn source_add_never_replaces_by_accident_and_refuses_temporary_keys() {
    let s = Stack::new("", "").with_key_and_source();
    let counter = key_counter(&s);
    // The same name again: refused before the touch, naming the stored key's tail.
    let out = source_add(
        &s,
        &s.source,
        "AKIAIOSFODNN7ROTATED\nwJalrXUtnFEMI/K7MDENG/bPxRfiCYROTATEDKEY\n",
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is stored already (key …MPLE)")
            && stderr(&out).contains("--replace"),
        "{}",
        stderr(&out)
    );
    assert_eq!(key_counter(&s), counter, "no touch was spent");
    assert!(s.ok(&["source", "list"]).contains("…MPLE"));
    // With --replace it is.
    let out = source_add(
        &s,
        &s.source,
        "AKIAIOSFODNN7ROTATED\nwJalrXUtnFEMI/K7MDENG/bPxRfiCYROTATEDKEY\n",
        &["--replace"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(s.ok(&["source", "list"]).contains("…ATED"));

    // Temporary keys (ASIA…) typed in: refused before the touch.
    let counter = key_counter(&s);
    let out = source_add(
        &s,
        "temp",
        "ASIAIOSFODNN7EXAMPLE\nwJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n",
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("temporary access key") && stderr(&out).contains("sso_session"),
        "{}",
        stderr(&out)
    );
    assert_eq!(key_counter(&s), counter, "no touch was spent");

    // Imported from a profile with a session token: refused, and the file left as it is.
    let creds = s.env.home.join(".aws/credentials");
    let text = "[sts]\naws_access_key_id = AKIAIOSFODNN7TEMPKEY\naws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\naws_session_token = FwoGZXIvYXdzEBYaDH\nregion = eu-west-1\n";
    std::fs::write(&creds, text).unwrap();
    let out = s.credctl(&[
        "source",
        "add",
        "temp",
        "--import-profile",
        "sts",
        "--remove-from-file",
        "--authenticator",
        &s.soft_arg(),
    ]);
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("temporary access key") && stderr(&out).contains("left in"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read_to_string(&creds).unwrap(), text);
    assert!(!s.ok(&["source", "list"]).contains("temp"));

    // A long-lived profile with other settings: --remove-from-file takes the keys only.
    std::fs::write(
        &creds,
        "[ci]\nregion = eu-west-1\naws_access_key_id = AKIAIOSFODNN7CIKEY00\naws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\noutput = json\n",
    )
    .unwrap();
    let out = s.credctl(&[
        "source",
        "add",
        "ci",
        "--import-profile",
        "ci",
        "--remove-from-file",
        "--authenticator",
        &s.soft_arg(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(&creds).unwrap(),
        "[ci]\nregion = eu-west-1\noutput = json\n"
    );
}

#[test]
fn a_bad_role_arn_or_region_is_shown_by_roles_and_costs_no_touch() {
    let s = Stack::new(
        "[profile notarn]\nrole_arn = not-an-arn\nsource_profile = SOURCE\n\n\
         [profile badregion]\nrole_arn = arn:aws:iam::123456789012:role/demo\nsource_profile = SOURCE\nregion = us-east-1;rm\n",
        "",
    )
    .with_key_and_source();
    let roles: serde_json::Value = serde_json::from_str(&s.ok(&["roles", "--json"])).unwrap();
    for (name, needle) in [
        ("notarn", "invalid role_arn"),
        ("badregion", "invalid region"),
    ] {
        let r = roles
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap();
        assert!(
            r["problem"].as_str().is_some_and(|p| p.contains(needle)),
            "{name}: {r}"
        );
    }
    assert!(s.ok(&["roles"]).contains("BROKEN"));
    let counter = key_counter(&s);
    for role in ["notarn", "badregion"] {
        let out = s.credctl(&["env", role]);
        assert!(!out.status.success(), "{role}");
        assert!(
            stderr(&out).contains("invalid role_arn") || stderr(&out).contains("invalid region"),
            "{role}: {}",
            stderr(&out)
        );
    }
    assert_eq!(key_counter(&s), counter, "no touch was spent");
    assert!(s.sts.calls("AssumeRole").is_empty());
}

/// `credctl completions bash`, sourced in a real bash: ROLE arguments complete to the role
/// profiles of ~/.aws/config as it is at the time of the TAB, sources and other sections left out.
#[test]
fn role_arguments_complete_to_the_roles_of_the_aws_config() {
    let s = Stack::new(
        "[profile prod-admin]\nrole_arn = arn:aws:iam::123456789012:role/admin\nsource_profile = SOURCE\n",
        "",
    );
    let script = stdout(&s.credctl(&["completions", "bash"]));
    let path = s.env.home.join("credctl.bash");
    std::fs::write(&path, script).unwrap();
    let complete = |words: &str| -> String {
        // The script calls the credctl on PATH, as a person's shell would.
        let bindir = bin("credctl").parent().unwrap().to_owned();
        let path_var = format!("{}:{}", bindir.display(), std::env::var("PATH").unwrap());
        let out = s
            .env
            .command("bash")
            .env("PATH", path_var)
            .args([
                "-c",
                &format!(
                    "source {}; COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); \
                     COMP_TYPE=9; _clap_complete_credctl credctl \"${{COMP_WORDS[COMP_CWORD]}}\" \
                     credctl; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
                    path.display()
                ),
            ])
            .output()
            .unwrap();
        stdout(&out)
    };
    let all = complete("credctl use ''");
    assert!(
        all.lines().any(|l| l.trim() == "demo") && all.lines().any(|l| l.trim() == "prod-admin"),
        "{all}"
    );
    assert!(!all.contains(&s.source), "a source is no role: {all}");
    let some = complete("credctl exec pro");
    assert_eq!(some.trim(), "prod-admin", "{some}");
}

/// An open session keeps serving what its touch approved when ~/.aws/config changes under it:
/// `roles` and `status` say so, with what it serves, instead of showing the new ARN as open.
#[test]
fn a_session_that_serves_what_was_approved_before_an_edit_says_so() {
    let s = Stack::new("", "").with_key_and_source();
    let token = s.role_token("demo");
    assert_eq!(s.ecs(Some(&token), &[]).0, 200);
    assert!(!s.ok(&["roles"]).contains("OPEN AS BEFORE"));
    let path = s.env.home.join(".aws/config");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("role/demo\n", "role/demo2\n")).unwrap();
    let roles = s.ok(&["roles"]);
    assert!(
        roles.contains("OPEN AS BEFORE")
            && roles.contains("role/demo;")
            && roles.contains("credctl lock"),
        "{roles}"
    );
    let json: serde_json::Value = serde_json::from_str(&s.ok(&["roles", "--json"])).unwrap();
    let demo = json
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "demo")
        .unwrap()
        .clone();
    assert!(
        demo["session"]["serves_approved"]
            .as_str()
            .is_some_and(|t| t.ends_with("arn:aws:iam::123456789012:role/demo")),
        "{demo}"
    );
    assert!(s.ok(&["status"]).contains("serves what its touch approved"));
    s.ok(&["lock"]);
    assert!(!s.ok(&["roles"]).contains("OPEN AS BEFORE"));
}

/// Mistakes credctl can see for itself cost no touch: a source name with a control character,
/// an import from a credentials file or profile that is not there.
#[test]
fn mistakes_credctl_can_see_cost_no_touch() {
    let s = Stack::new("", "").with_key_and_source();
    let counter = key_counter(&s);
    let out = s.credctl(&["source", "add", "ev\u{1b}[31mil\nline2", "--stdin"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("control character"),
        "{}",
        stderr(&out)
    );
    assert!(
        !stderr(&out).contains('\u{1b}'),
        "escaped: {:?}",
        stderr(&out)
    );
    let creds = s.env.home.join(".aws/credentials");
    std::fs::write(&creds, "[work]\naws_access_key_id = AKIAIOSFODNN7EXAMPLE\n").unwrap();
    let out = s.credctl(&["source", "add", "x", "--import-profile", "nosuch"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no profile [nosuch]") && stderr(&out).contains("it has: work"),
        "{}",
        stderr(&out)
    );
    let out = s
        .env
        .command(bin("credctl"))
        .env("CREDCTL_AUTHENTICATOR", s.soft_arg())
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
        .args(["source", "add", "x", "--import-profile", "default"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no credentials file"),
        "{}",
        stderr(&out)
    );
    assert_eq!(key_counter(&s), counter, "no touch was asked for");
}

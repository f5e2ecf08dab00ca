//! `credctl doctor`: every check with a verdict and a fix, on a healthy set-up and on each
//! broken one; exit 1 when a check fails.

use std::os::unix::fs::PermissionsExt;
use std::process::Output;

use crate::stack::Stack;
use crate::util::{bin, stdout};

/// `credctl doctor --json` in a shell pointed at the agent, with `vars` on top (an empty value
/// removes the variable).
fn doctor(s: &Stack, vars: &[(&str, &str)]) -> (Output, Vec<serde_json::Value>) {
    let token = s.role_token("demo");
    let mut cmd = s.env.command(bin("credctl"));
    cmd.env("AWS_CONTAINER_CREDENTIALS_FULL_URI", s.ecs_uri())
        .env("AWS_CONTAINER_AUTHORIZATION_TOKEN", token);
    cmd.env("AWS_REGION", "us-east-1");
    for (k, v) in vars {
        if v.is_empty() {
            cmd.env_remove(k);
        } else {
            cmd.env(k, v);
        }
    }
    let out = cmd.args(["doctor", "--json"]).output().unwrap();
    let checks: Vec<serde_json::Value> =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(&out)));
    (out, checks)
}

fn verdict<'a>(checks: &'a [serde_json::Value], name: &str) -> &'a serde_json::Value {
    checks
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {name} check in {checks:?}"))
}

#[test]
fn doctor_passes_a_healthy_shell_and_names_each_breakage_with_its_fix() {
    let s = Stack::new("", "").with_key_and_source();
    let (out, checks) = doctor(&s, &[]);
    assert!(out.status.success(), "{checks:#?}");
    for name in [
        "agent",
        "keyring",
        "shadowing",
        "endpoint",
        "region",
        "files",
        "sealing",
        "clock",
    ] {
        let v = &verdict(&checks, name)["verdict"];
        assert!(v == "ok", "{name}: {checks:#?}");
    }

    // Each breakage: its check fails or warns, with a fix, and a failure exits 1.
    let (out, checks) = doctor(
        &s,
        &[("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE"), ("AWS_PROFILE", "x")],
    );
    assert_eq!(out.status.code(), Some(1));
    let c = verdict(&checks, "shadowing");
    assert_eq!(c["verdict"], "fail");
    assert_eq!(c["fix"], "unset AWS_ACCESS_KEY_ID AWS_PROFILE");

    // Web identity in the environment wins over the container provider in every SDK.
    let (out, checks) = doctor(
        &s,
        &[
            ("AWS_WEB_IDENTITY_TOKEN_FILE", "/var/run/token"),
            ("AWS_ROLE_ARN", "arn:aws:iam::1:role/x"),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        verdict(&checks, "shadowing")["fix"],
        "unset AWS_WEB_IDENTITY_TOKEN_FILE AWS_ROLE_ARN"
    );

    // A default profile in ~/.aws/config that yields credentials: failed, with a fix that
    // pastes, runs, and keeps the profile under another name.
    let cfg = s.env.home.join(".aws/config");
    let before = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        format!("{before}\n[default]\nregion = us-east-1\ncredential_process = /bin/false\n"),
    )
    .unwrap();
    let (out, checks) = doctor(&s, &[]);
    assert_eq!(out.status.code(), Some(1));
    let c = verdict(&checks, "config-default");
    assert_eq!(c["verdict"], "fail");
    assert!(
        c["detail"]
            .as_str()
            .unwrap()
            .contains("sets credential_process")
            && !c["detail"].as_str().unwrap().starts_with("warning"),
        "{c}"
    );
    let fix = c["fix"].as_str().unwrap();
    let ran = std::process::Command::new("sh")
        .args(["-c", fix])
        .status()
        .unwrap();
    assert!(ran.success(), "{fix}");
    let after = std::fs::read_to_string(&cfg).unwrap();
    assert!(
        after.contains("[profile default-before-credagent]") && !after.contains("[default]"),
        "{after}"
    );
    let (out, checks) = doctor(&s, &[]);
    assert!(out.status.success(), "{checks:#?}");
    std::fs::write(&cfg, before).unwrap();

    let (out, checks) = doctor(&s, &[("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "/v2/x")]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(verdict(&checks, "relative-uri")["verdict"], "fail");

    let (out, checks) = doctor(&s, &[("AWS_REGION", ""), ("AWS_DEFAULT_REGION", "")]);
    assert!(out.status.success(), "a warning is not a failure");
    assert_eq!(verdict(&checks, "region")["verdict"], "warn");

    let (_, checks) = doctor(
        &s,
        &[("AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://127.0.0.1:1/")],
    );
    assert_eq!(verdict(&checks, "endpoint")["verdict"], "fail");

    let keys = s.env.home.join(".local/state/credagent/keys.json");
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (out, checks) = doctor(&s, &[]);
    assert_eq!(out.status.code(), Some(1));
    let c = verdict(&checks, "files");
    assert_eq!(c["verdict"], "fail");
    assert!(
        c["detail"]
            .as_str()
            .unwrap()
            .contains("keys.json has mode 644"),
        "{c}"
    );
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o600)).unwrap();

    s.ok(&["stop"]);
    let out = s
        .env
        .command(bin("credctl"))
        .args(["doctor"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(text.contains("FAIL agent"), "{text}");
    assert!(text.contains("fix: eval \"$(credctl start)\""), "{text}");
}

#[test]
fn doctor_says_unsealed_where_a_setup_allows_it() {
    let s = Stack::new("", "").with_key_and_source();
    // The key holds a copy; a policy that allows unsealed keys is still said out loud.
    let config = s.env.home.join(".config/credagent/config.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("[approval]\n", "[approval]\nsealing = \"allow-unsealed\"\n"),
    )
    .unwrap();
    s.ok(&["stop"]);
    let _agent = s.env.agent(&[]);
    // The person made that change: a touch confirms it (else nothing opens).
    s.ok(&["confirm", "--accept-change"]);
    let (_, checks) = doctor(&s, &[]);
    let c = verdict(&checks, "sealing");
    assert_eq!(c["verdict"], "warn", "{c}");
    assert!(c["detail"].as_str().unwrap().contains("UNSEALED"), "{c}");
}

/// Every verdict is true and every fix line is a command that pastes: a revoked or malformed
/// token and a region no SDK takes fail, and each fix parses as sh.
#[test]
fn doctor_verdicts_are_true_and_its_fixes_paste() {
    let s = Stack::new("", "").with_key_and_source();
    let token = s.role_token("demo");
    let id = {
        let list: serde_json::Value =
            serde_json::from_str(&s.ok(&["token", "list", "--json"])).unwrap();
        list.as_array().unwrap().last().unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    s.ok(&["token", "revoke", &id]);
    for bad in [token.as_str(), "garbage"] {
        let (out, checks) = doctor(&s, &[("AWS_CONTAINER_AUTHORIZATION_TOKEN", bad)]);
        assert_eq!(out.status.code(), Some(1), "{checks:#?}");
        let c = verdict(&checks, "endpoint");
        assert_eq!(c["verdict"], "fail", "{c}");
        assert!(
            c["detail"].as_str().unwrap().contains("refuses its token"),
            "{c}"
        );
    }
    let (out, checks) = doctor(&s, &[("AWS_REGION", "us-east-1; rm -rf")]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(verdict(&checks, "region")["verdict"], "fail");

    // Broken files, a bad region, no token: every fix parses as a shell command.
    let config = s.env.home.join(".config/credagent/config.toml");
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o664)).unwrap();
    let (_, checks) = doctor(
        &s,
        &[
            ("AWS_REGION", ""),
            ("AWS_CONTAINER_AUTHORIZATION_TOKEN", ""),
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", ""),
        ],
    );
    let mut fixes = 0;
    for c in &checks {
        if let Some(fix) = c["fix"].as_str() {
            let parsed = std::process::Command::new("sh")
                .args(["-n", "-c", fix])
                .status()
                .unwrap();
            assert!(parsed.success(), "{}: {fix}", c["name"]);
            fixes += 1;
        }
    }
    assert!(fixes >= 3, "{checks:#?}");
    // The file fix runs and leaves config.toml private.
    let files = verdict(&checks, "files");
    assert_eq!(files["verdict"], "fail", "{files}");
    let ran = std::process::Command::new("sh")
        .args(["-c", files["fix"].as_str().unwrap()])
        .status()
        .unwrap();
    assert!(ran.success());
    let mode = std::fs::metadata(&config).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode & 0o022, 0, "{mode:o}");
}

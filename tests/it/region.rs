//! The role's region reaches what `exec` runs and what `env` prints, walking the chain; a region
//! the caller set is never overwritten; `--region` wins; `use` says when the shell has none.

use std::process::Output;

use crate::stack::{token_from_exports, Stack};
use crate::util::{bin, stderr, stdout};

/// `top`'s region comes from `mid`, one profile down its chain; `demo`'s from the source.
const CHAIN: &str = "[profile mid]\nrole_arn = arn:aws:iam::123456789012:role/mid\nsource_profile = SOURCE\nregion = eu-west-1\n\n[profile top]\nrole_arn = arn:aws:iam::123456789012:role/top\nsource_profile = mid\n";

/// `credctl ARGS` with `vars` added to the scrubbed environment.
fn credctl_with(s: &Stack, vars: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = s.env.command(bin("credctl"));
    cmd.env("CREDCTL_AUTHENTICATOR", s.soft_arg());
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd.args(args).output().unwrap()
}

/// `AWS_REGION|AWS_DEFAULT_REGION` as the command `credctl exec` runs sees them.
fn exec_regions(s: &Stack, vars: &[(&str, &str)], args: &[&str]) -> String {
    let mut all = vec!["exec"];
    all.extend_from_slice(args);
    all.extend([
        "--",
        "sh",
        "-c",
        "printf '%s|%s' \"${AWS_REGION-unset}\" \"${AWS_DEFAULT_REGION-unset}\"",
    ]);
    let out = credctl_with(s, vars, &all);
    assert!(
        out.status.success(),
        "exec {args:?}: {}\nagent log:\n{}",
        stderr(&out),
        s.agent.log_text()
    );
    stdout(&out)
}

#[test]
fn exec_gets_the_region_across_the_chain_and_keeps_the_callers() {
    let s = Stack::new(CHAIN, "").with_key_and_source();
    // No region in the caller: the role's, from the profile one hop down its chain.
    assert_eq!(exec_regions(&s, &[], &["top"]), "eu-west-1|eu-west-1");
    // From the source profile, at the bottom of demo's chain.
    assert_eq!(exec_regions(&s, &[], &["demo"]), "us-east-1|us-east-1");
    // The caller's region stands, and the variable the caller left unset follows it.
    assert_eq!(
        exec_regions(&s, &[("AWS_REGION", "ap-south-1")], &["top"]),
        "ap-south-1|ap-south-1"
    );
    assert_eq!(
        exec_regions(&s, &[("AWS_DEFAULT_REGION", "sa-east-1")], &["top"]),
        "sa-east-1|sa-east-1"
    );
    assert_eq!(
        exec_regions(
            &s,
            &[
                ("AWS_REGION", "ap-south-1"),
                ("AWS_DEFAULT_REGION", "sa-east-1")
            ],
            &["top"]
        ),
        "ap-south-1|sa-east-1"
    );
    // An empty variable is no region.
    assert_eq!(
        exec_regions(&s, &[("AWS_REGION", "")], &["top"]),
        "eu-west-1|eu-west-1"
    );
    // --region wins over the profile and the caller alike.
    assert_eq!(
        exec_regions(&s, &[], &["top", "--region", "us-west-2"]),
        "us-west-2|us-west-2"
    );
    assert_eq!(
        exec_regions(
            &s,
            &[
                ("AWS_REGION", "ap-south-1"),
                ("AWS_DEFAULT_REGION", "sa-east-1")
            ],
            &["top", "--region", "us-west-2"]
        ),
        "us-west-2|us-west-2"
    );
    // A region that is not one is a usage error before anything happens.
    let out = credctl_with(
        &s,
        &[],
        &["exec", "top", "--region", "eu west", "--", "true"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    // One touch opened both roles' sessions; the rest were served from them.
    assert_eq!(s.sts.calls("AssumeRole").len(), 3, "mid, top, demo");
}

#[test]
fn the_aws_cli_under_exec_needs_no_region_of_its_own() {
    let s = Stack::new(CHAIN, "").with_key_and_source();
    // The issue as reported: a shell with no region, a role whose chain has one.
    let out = credctl_with(
        &s,
        &[("AWS_ENDPOINT_URL_STS", s.sts.moto_url.as_str())],
        &[
            "exec",
            "top",
            "--",
            "aws",
            "sts",
            "get-caller-identity",
            "--query",
            "Arn",
            "--output",
            "text",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("arn:aws:sts::123456789012:assumed-role/top/"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn env_never_prints_over_a_callers_region() {
    let s = Stack::new(CHAIN, "").with_key_and_source();
    let env = |vars: &[(&str, &str)], args: &[&str]| {
        let mut all = vec!["env", "top"];
        all.extend_from_slice(args);
        let out = credctl_with(&s, vars, &all);
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
    };
    let out = env(&[], &[]);
    assert!(
        out.contains("AWS_REGION='eu-west-1'; export AWS_REGION;\n")
            && out.contains("AWS_DEFAULT_REGION='eu-west-1'; export AWS_DEFAULT_REGION;\n"),
        "{out}"
    );
    // AWS_DEFAULT_REGION is set where credctl runs: it is not printed, AWS_REGION follows it.
    let out = env(&[("AWS_DEFAULT_REGION", "sa-east-1")], &[]);
    assert!(
        out.contains("AWS_REGION='sa-east-1'; export AWS_REGION;\n")
            && !out.contains("AWS_DEFAULT_REGION"),
        "{out}"
    );
    let out = env(
        &[("AWS_REGION", "a-b-1"), ("AWS_DEFAULT_REGION", "a-b-1")],
        &["--fish"],
    );
    assert!(!out.contains("REGION"), "{out}");
    let out = env(
        &[("AWS_REGION", "a-b-1")],
        &["--csh", "--region", "us-west-2"],
    );
    assert!(
        out.contains("setenv AWS_REGION 'us-west-2';\n")
            && out.contains("setenv AWS_DEFAULT_REGION 'us-west-2';\n"),
        "{out}"
    );
    // What `env` prints is what a shell then has.
    let exports = env(&[], &[]);
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{exports}\nprintf '%s|%s' \"$AWS_REGION\" \"$AWS_DEFAULT_REGION\""
        ))
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "eu-west-1|eu-west-1");
}

#[test]
fn use_says_when_the_shell_has_no_region() {
    let s = Stack::new(CHAIN, "").with_key_and_source();
    let token = token_from_exports(&s.ok(&["start"]));
    let shell = [
        ("AWS_CONTAINER_AUTHORIZATION_TOKEN", token.as_str()),
        ("SHELL", "/bin/bash"),
    ];
    let out = credctl_with(&s, &shell, &["use", "top"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let line = "`export AWS_REGION=eu-west-1 AWS_DEFAULT_REGION=eu-west-1`";
    assert!(stderr(&out).contains(line), "{}", stderr(&out));
    assert!(stdout(&out).is_empty(), "hints go to stderr only");
    // A shell with a region (either variable) gets no hint.
    for var in ["AWS_REGION", "AWS_DEFAULT_REGION"] {
        let mut vars = shell.to_vec();
        vars.push((var, "ap-south-1"));
        let out = credctl_with(&s, &vars, &["use", "top"]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(!stderr(&out).contains("no region"), "{}", stderr(&out));
    }
    // fish users get fish.
    let out = credctl_with(
        &s,
        &[
            ("AWS_CONTAINER_AUTHORIZATION_TOKEN", token.as_str()),
            ("SHELL", "/usr/bin/fish"),
        ],
        &["use", "demo"],
    );
    assert!(
        stderr(&out)
            .contains("`set -gx AWS_REGION us-east-1; set -gx AWS_DEFAULT_REGION us-east-1`"),
        "{}",
        stderr(&out)
    );
    // `roles --json` carries each role's region too.
    let roles: serde_json::Value = serde_json::from_str(&s.ok(&["roles", "--json"])).unwrap();
    let top = roles
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "top")
        .unwrap();
    assert_eq!(top["region"], "eu-west-1");
}

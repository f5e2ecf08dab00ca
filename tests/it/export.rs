//! `credctl export ROLE --format F` prints what `aws configure export-credentials --format F`
//! prints for the same credentials, byte for byte, and its shell formats load in real shells.
//!
//! The AWS CLI installed for the tests is v1, which has no `configure export-credentials`. The
//! reference is tests/py/export_credentials.py: botocore (the same library both CLI versions
//! resolve credentials with) gets the credentials from a profile with `credential_process =
//! credctl credential-process demo`, so the expiration goes through botocore's own parsing and
//! `isoformat()`, and the output follows the formatters of the v2 CLI's
//! awscli/customizations/configure/exportcreds.py (templates copied from it, `json.dumps` for
//! `process`).

use std::process::{Command, Output};

use crate::stack::Stack;
use crate::util::{bin, repo, stderr, stdout};

const FORMATS: [&str; 6] = [
    "env",
    "env-no-export",
    "process",
    "powershell",
    "windows-cmd",
    "fish",
];

fn export(s: &Stack, vars: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = s.env.command(bin("credctl"));
    cmd.env("CREDCTL_AUTHENTICATOR", s.soft_arg()).arg("export");
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd.args(args).output().unwrap()
}

/// The region of this shell, so that neither variable is printed: the credential lines alone.
const CALLER_REGION: [(&str, &str); 2] = [
    ("AWS_REGION", "us-east-1"),
    ("AWS_DEFAULT_REGION", "us-east-1"),
];

#[test]
fn every_format_is_the_aws_clis() {
    let s = Stack::new("", "").with_key_and_source();
    // The audit names export as export, not as credential_process.
    let out = export(&s, &CALLER_REGION, &["demo", "--format", "env"]);
    assert!(out.status.success(), "{}", crate::util::stderr(&out));
    let path = s.env.home.join(".local/state/credagent/audit.jsonl");
    let read = || {
        let audit = std::fs::read_to_string(&path).unwrap_or_default();
        let channels: Vec<serde_json::Value> = audit
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|l| l["role"] == "demo" && l["outcome"] == "served")
            .map(|l| l["channel"].clone())
            .collect();
        (audit, channels)
    };
    // The audit writer batches: wait for the line.
    crate::util::wait_until(std::time::Duration::from_secs(10), || {
        read().1.iter().any(|c| c == "export")
    });
    let (audit, channels) = read();
    assert!(channels.iter().any(|c| c == "export"), "{audit}");
    // And names the program, though credctl is gone before the audit writer could look.
    let named = audit
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["channel"] == "export")
        .all(|l| {
            l["peer_exe"]
                .as_str()
                .is_some_and(|e| e.ends_with("credctl"))
        });
    assert!(named, "{audit}");
    assert!(
        !channels.iter().any(|c| c == "credential_process"),
        "{audit}"
    );
    // botocore's profile, in a file of its own (the agent's ~/.aws/config stays roles only).
    let botocore_config = s.env.home.join("botocore-config");
    std::fs::write(
        &botocore_config,
        format!(
            "[profile viacredctl]\ncredential_process = {} credential-process demo\n",
            bin("credctl").display()
        ),
    )
    .unwrap();
    for format in FORMATS {
        let ours = export(&s, &CALLER_REGION, &["demo", "--format", format]);
        assert!(ours.status.success(), "{format}: {}", stderr(&ours));
        let theirs = s
            .env
            .command("python3")
            .env("CREDCTL_AUTHENTICATOR", s.soft_arg())
            .env("AWS_CONFIG_FILE", &botocore_config)
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .arg(repo().join("tests/py/export_credentials.py"))
            .args(["viacredctl", format])
            .output()
            .unwrap();
        assert!(theirs.status.success(), "{format}: {}", stderr(&theirs));
        assert_eq!(stdout(&ours), stdout(&theirs), "format {format}");
        assert!(
            stdout(&ours).contains("AWS_SESSION_TOKEN") || format == "process",
            "{}",
            stdout(&ours)
        );
    }
    // The default is process, as the AWS CLI's.
    let default = export(&s, &CALLER_REGION, &["demo"]);
    let json: serde_json::Value = serde_json::from_slice(&default.stdout).unwrap();
    assert_eq!(json["Version"], 1);
    assert!(json["Expiration"].as_str().unwrap().ends_with("+00:00"));
    // One touch for the whole test: every export and credential_process used the session.
    assert_eq!(s.sts.calls("AssumeRole").len(), 1);
}

#[test]
fn shell_formats_load_in_real_shells_with_the_region() {
    let s = Stack::new("", "").with_key_and_source();
    let creds: serde_json::Value =
        serde_json::from_slice(&export(&s, &[], &["demo", "--format", "process"]).stdout).unwrap();
    let expected = format!(
        "{}|{}|{}|{}|us-east-1|us-east-1",
        creds["AccessKeyId"].as_str().unwrap(),
        creds["SecretAccessKey"].as_str().unwrap(),
        creds["SessionToken"].as_str().unwrap(),
        creds["Expiration"].as_str().unwrap(),
    );
    let vars = "$AWS_ACCESS_KEY_ID|$AWS_SECRET_ACCESS_KEY|$AWS_SESSION_TOKEN|$AWS_CREDENTIAL_EXPIRATION|$AWS_REGION|$AWS_DEFAULT_REGION";
    for (format, shell, script) in [
        (
            "env",
            "sh",
            format!("eval \"$(cat)\"; sh -c 'printf %s \"{vars}\"'"),
        ),
        (
            "env-no-export",
            "sh",
            format!("eval \"$(cat)\"; printf %s \"{vars}\""),
        ),
        (
            "fish",
            "fish",
            format!("source; sh -c 'printf %s \"{vars}\"'"),
        ),
    ] {
        // No region in credctl's environment: the role's is added, in the same syntax.
        let out = export(&s, &[], &["demo", "--format", format]);
        assert!(out.status.success(), "{}", stderr(&out));
        let text = stdout(&out);
        assert!(text.contains("AWS_DEFAULT_REGION"), "{format}: {text}");
        let loaded = shell_with_stdin(shell, &script, &out.stdout);
        assert_eq!(loaded, expected, "{format} in {shell}");
    }
    // --region sets both, in every shell format; process has no field for one.
    for format in ["powershell", "windows-cmd"] {
        let out = export(
            &s,
            &CALLER_REGION,
            &["demo", "--format", format, "--region", "eu-north-1"],
        );
        let text = stdout(&out);
        assert!(
            text.contains("AWS_REGION")
                && text.contains("AWS_DEFAULT_REGION")
                && text.contains("eu-north-1"),
            "{format}: {text}"
        );
    }
    let out = export(&s, &[], &["demo", "--format", "process", "--region", "x"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("no field for a region"));
}

fn shell_with_stdin(shell: &str, script: &str, input: &[u8]) -> String {
    use std::io::Write;
    let mut child = Command::new(shell)
        .arg("-c")
        .arg(script)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", std::env::temp_dir())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{shell}: {}", stderr(&out));
    stdout(&out)
}

//! `credctl console`: the sign-in through a local federation endpoint, the one-time link on the
//! agent's listener (followed once, refused the second time), AWS's session limits, and no
//! sign-in token on the command line of anything credctl starts.

use std::process::Command;

use crate::stack::{spawn_listening, Stack};
use crate::util::{bin, repo, stderr, stdout};

fn federation() -> (crate::stack::Bg, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new("python3");
    cmd.arg(repo().join("tests/py/federation.py"));
    let (proc, port) = spawn_listening(cmd, "the federation fake", &dir.path().join("fed.log"));
    (proc, format!("http://127.0.0.1:{port}"), dir)
}

fn state(url: &str) -> serde_json::Value {
    let out = Command::new("curl")
        .args(["-s", &format!("{url}/_state")])
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}

fn curl(url: &str) -> (String, String) {
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{redirect_url}",
            url,
        ])
        .output()
        .unwrap();
    let text = stdout(&out);
    let (code, location) = text.split_once(' ').unwrap_or((&text, ""));
    (code.to_owned(), location.to_owned())
}

#[test]
fn a_console_link_works_once_and_respects_session_limits() {
    let (_fed, fed, _dir) = federation();
    let s = Stack::new(
        "[profile chained]\nrole_arn = arn:aws:iam::123456789012:role/chained\nsource_profile = demo\n",
        &format!("federation_endpoint = \"{fed}/federation\"\nsession_ttl = \"2h\""),
    )
    .with_key_and_source();

    // Straight to the control socket, as a process of the user could: no link for a role
    // whose session is not open (the touch opens it; `credctl console` asks for one first).
    let (mut sock, _) = crate::util::hello(&s.env.sock).unwrap();
    credagent_proto::write_frame(
        &mut sock,
        &credagent_proto::Request::Console {
            role: "demo".into(),
            destination: None,
            region: None,
        },
    )
    .unwrap();
    match credagent_proto::read_frame(&mut sock).unwrap() {
        credagent_proto::Response::Error { code, .. } => {
            assert_eq!(code, credagent_proto::ErrorCode::NotFound)
        }
        other => panic!("a console link without a touch: {other:?}"),
    }
    assert!(state(&fed)["tokens"].as_array().unwrap().is_empty());

    let link = s.ok(&["console", "demo", "--print", "--destination", "s3"]);
    let link = link.trim();
    assert!(
        link.starts_with(&format!(
            "http://127.0.0.1:{}/console/",
            s.http.rsplit(':').next().unwrap()
        )),
        "{link}"
    );
    let st = state(&fed);
    let token = st["tokens"][0].as_str().unwrap().to_owned();
    assert!(!link.contains(&token), "the token is not in the link");
    // A direct role: the console session follows the role session (2 h).
    let duration = st["calls"][0]["duration"].as_u64().unwrap();
    assert!((7000..=7200).contains(&duration), "{duration}");

    // Followed once: a redirect to the login with the token and the destination.
    let (code, location) = curl(link);
    assert_eq!(code, "302");
    assert!(
        location.starts_with(&format!("{fed}/federation?Action=login&Issuer=credagent")),
        "{location}"
    );
    assert!(location.contains(&token));
    assert!(
        location.contains("Destination=https%3A%2F%2Fus-east-1.console.aws.amazon.com%2Fs3%2Fhome"),
        "{location}"
    );
    let (code, _) = curl(&location);
    assert_eq!(code, "200", "the fake accepts the login");
    // The second time: gone.
    let (code, _) = curl(link);
    assert_eq!(code, "410");

    // A chained role: capped at 1 h.
    s.ok(&["console", "chained", "--print"]);
    let st = state(&fed);
    assert_eq!(st["calls"][1]["duration"], 3600);
}

#[test]
fn the_browser_gets_only_the_one_time_link() {
    let (_fed, fed, _dir) = federation();
    let s = Stack::new("", &format!("federation_endpoint = \"{fed}/federation\""))
        .with_key_and_source();
    // A stand-in for xdg-open that records the command line it was given.
    let bindir = s.env.home.join("bin");
    std::fs::create_dir_all(&bindir).unwrap();
    let argv = s.env.home.join("xdg-open.argv");
    let script = bindir.join("xdg-open");
    std::fs::write(
        &script,
        format!("#!/bin/sh\necho \"$@\" >> {}\n", argv.display()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bindir.display(), std::env::var("PATH").unwrap());
    let out = s
        .env
        .command(bin("credctl"))
        .env("CREDCTL_AUTHENTICATOR", s.soft_arg())
        .env("PATH", path)
        .args(["console", "demo"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let recorded = std::fs::read_to_string(&argv).unwrap();
    let token = state(&fed)["tokens"][0].as_str().unwrap().to_owned();
    assert!(recorded.contains("/console/"), "{recorded}");
    assert!(
        !recorded.contains(&token),
        "the sign-in token was on a command line"
    );
    assert!(!stdout(&out).contains(&token) && !stderr(&out).contains(&token));
    let (code, location) = curl(recorded.trim());
    assert_eq!(code, "302");
    assert!(location.contains(&token));
}

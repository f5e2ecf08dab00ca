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
    tell_fake_about_sts(&fed, &s);

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

    // A chained role (assumed with the temporary credentials of demo): no SessionDuration, which
    // the federation endpoint refuses for such credentials (the fake as strictly as AWS).
    s.ok(&["console", "chained", "--print"]);
    let st = state(&fed);
    assert!(st["calls"][1]["duration"].is_null(), "{st}");

    // The fake's own rule, checked with the chained role's real credentials: SessionDuration is
    // refused, its absence accepted.
    let exported: serde_json::Value =
        serde_json::from_str(&s.ok(&["export", "chained", "--format", "process"])).unwrap();
    let session = serde_json::json!({
        "sessionId": exported["AccessKeyId"],
        "sessionKey": exported["SecretAccessKey"],
        "sessionToken": exported["SessionToken"],
    })
    .to_string();
    let token_request = |duration: &str| {
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-G"])
            .arg(format!("{fed}/federation"))
            .args(["--data-urlencode", "Action=getSigninToken"])
            .args(["--data-urlencode", &format!("Session={session}")])
            .args(if duration.is_empty() {
                vec![]
            } else {
                vec![
                    "--data-urlencode".to_owned(),
                    format!("SessionDuration={duration}"),
                ]
            })
            .output()
            .unwrap();
        stdout(&out)
    };
    assert_eq!(token_request("3600"), "400");
    assert_eq!(token_request(""), "200");
}

/// Points the federation fake at the stack's STS recorder, so it knows which sessions came
/// from a request signed with temporary credentials.
fn tell_fake_about_sts(fed: &str, s: &Stack) {
    let issued = format!("{}.issued", s.sts.log.display());
    let out = Command::new("curl")
        .args(["-s", "-G", &format!("{fed}/_sts_log")])
        .args(["--data-urlencode", &format!("path={issued}")])
        .output()
        .unwrap();
    assert!(out.status.success());
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
    assert!(stdout(&out).contains("opened the AWS console"));

    // No browser here (xdg-open fails): the address is printed, and nothing claims it opened.
    std::fs::write(&script, "#!/bin/sh\nexit 3\n").unwrap();
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
    assert!(!stdout(&out).contains("opened"), "{}", stdout(&out));
    assert!(stdout(&out).contains("/console/"), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("open that address"),
        "{}",
        stderr(&out)
    );
}

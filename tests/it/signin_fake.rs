//! tests/py/signin_server.py, the local AWS Sign-In service the `aws login` source is tested
//! against, checked against the real client: tests/py/signin_selftest.py makes a login as the
//! AWS CLI v2 makes it and has botocore's LoginProvider (with awscrt) refresh it through the
//! fake, twice, and meet its TOKEN_EXPIRED and USER_CREDENTIALS_CHANGED. A fake the real client
//! disagreed with would make every Sign-In test above it prove nothing.

use crate::stack::spawn_listening;
use crate::util::{repo, stderr, stdout, TestEnv};

#[test]
fn the_signin_fake_agrees_with_botocore() {
    let env = TestEnv::new();
    let mut fake = std::process::Command::new("python3");
    fake.arg(repo().join("tests/py/signin_server.py"));
    let log = env.dir.path().join("signin.log");
    let (_fake, port) = spawn_listening(fake, "the Sign-In fake", &log);
    let out = env
        .command("python3")
        .arg(repo().join("tests/py/signin_selftest.py"))
        .arg(format!("http://127.0.0.1:{port}"))
        .output()
        .expect("run signin_selftest.py");
    assert!(
        out.status.success() && stdout(&out).contains("signin_selftest: all checks passed"),
        "signin_selftest.py failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        stdout(&out),
        stderr(&out)
    );
}

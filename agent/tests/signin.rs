//! The Sign-In client (`credagent::signin`) against tests/py/signin_server.py, the local AWS
//! Sign-In service that tests/py/signin_selftest.py checks against botocore's LoginProvider: a
//! sign-in through the authorize URL, the code redeemed with PKCE and a DPoP proof, refreshes
//! that rotate the refresh token and stay bound to the login's key, and each refusal the
//! service sends, as the error that says what to do.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime};

use credagent::signin::{ClientId, DpopKey, Signin, SigninError};
use credagent::sso::pkce::{new_state, Verifier};
use secrecy::{ExposeSecret, SecretString};

struct Fake {
    child: Child,
    port: u16,
}

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_fake() -> Fake {
    let server = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/py/signin_server.py");
    let mut child = Command::new("python3")
        .arg(server)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot run python3 tests/py/signin_server.py");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line.trim().parse().expect("the fake reported its port");
    Fake { child, port }
}

/// One plain HTTP/1.1 request to the fake: (status, headers and body as text).
fn http(port: u16, method: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.split(' ').nth(1).unwrap().parse().unwrap();
    (status, out)
}

/// The browser: opens the authorize URL and signs in; the code and state it comes back with.
fn sign_in(port: u16, authorize_url: &str) -> (String, String) {
    let path = &authorize_url[authorize_url.find("/v1/authorize").unwrap()..];
    let (status, answer) = http(port, "GET", path);
    assert_eq!(status, 302, "{answer}");
    let location = answer
        .lines()
        .find_map(|l| l.strip_prefix("Location: "))
        .unwrap()
        .trim();
    let query = location.split_once('?').unwrap().1;
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .unwrap()
            .to_owned()
    };
    (param("code"), param("state"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_in_is_redeemed_and_refreshed_with_the_logins_key_only() {
    let fake = start_fake();
    let base = format!("http://127.0.0.1:{}", fake.port);
    let signin = Signin::new(&base, "dev").unwrap();
    let key = DpopKey::generate().unwrap();
    let verifier = Verifier::generate().unwrap();
    let state = new_state().unwrap();
    let redirect = "http://127.0.0.1:9/oauth/callback";
    let url = signin.authorize_url(
        ClientId::SameDevice,
        &state,
        &verifier.challenge(),
        redirect,
    );
    let (code, back) = sign_in(fake.port, &url);
    assert_eq!(back, state);
    let code = SecretString::from(code);
    let now = SystemTime::now();

    // A wrong verifier is refused (PKCE), and the code is then spent.
    let wrong = Verifier::generate().unwrap();
    let refused = signin
        .exchange_code(
            &key,
            ClientId::SameDevice,
            &code,
            wrong.secret(),
            redirect,
            now,
        )
        .await
        .err()
        .unwrap();
    assert!(
        matches!(refused, SigninError::Refused { .. }),
        "{refused:?}"
    );
    let (code, _) = sign_in(
        fake.port,
        &signin.authorize_url(
            ClientId::SameDevice,
            &state,
            &verifier.challenge(),
            redirect,
        ),
    );
    let tokens = signin
        .exchange_code(
            &key,
            ClientId::SameDevice,
            &SecretString::from(code),
            verifier.secret(),
            redirect,
            now,
        )
        .await
        .unwrap();
    assert_eq!(
        tokens.login_session.as_deref(),
        Some("arn:aws:iam::123456789012:user/Admin")
    );
    assert_eq!(
        tokens.credentials.account_id.as_deref(),
        Some("123456789012")
    );
    assert!(tokens.credentials.access_key_id.starts_with("ASIA"));
    assert!(tokens.credentials.expiration <= now + Duration::from_secs(900));

    // A refresh rotates the token; the spent one is TOKEN_EXPIRED, which says what to do.
    let next = signin
        .refresh(&key, ClientId::SameDevice, &tokens.refresh_token, now)
        .await
        .unwrap();
    assert_ne!(
        next.refresh_token.expose_secret(),
        tokens.refresh_token.expose_secret()
    );
    assert!(
        next.login_session.is_none(),
        "a refresh carries no ID token"
    );
    let spent = signin
        .refresh(&key, ClientId::SameDevice, &tokens.refresh_token, now)
        .await
        .err()
        .unwrap();
    assert_eq!(
        spent,
        SigninError::Expired {
            profile: "dev".into()
        }
    );
    assert!(spent.to_string().contains("credctl login dev"));

    // Another key's proof does not use the login's refresh token.
    let thief = DpopKey::generate().unwrap();
    let refused = signin
        .refresh(&thief, ClientId::SameDevice, &next.refresh_token, now)
        .await
        .err()
        .unwrap();
    assert!(
        matches!(refused, SigninError::Refused { .. }),
        "{refused:?}"
    );

    // The service's other refusals.
    let next = signin
        .refresh(&key, ClientId::SameDevice, &next.refresh_token, now)
        .await
        .unwrap();
    for (control, expected) in [
        (
            "password-changed",
            SigninError::CredentialsChanged {
                profile: "dev".into(),
            },
        ),
        (
            "deny",
            SigninError::NotPermitted {
                profile: "dev".into(),
            },
        ),
        (
            "expire",
            SigninError::Expired {
                profile: "dev".into(),
            },
        ),
    ] {
        assert_eq!(
            http(fake.port, "POST", &format!("/control/{control}")).0,
            200
        );
        let got = signin
            .refresh(&key, ClientId::SameDevice, &next.refresh_token, now)
            .await
            .err()
            .unwrap();
        assert_eq!(got, expected);
    }
    // Every token request the fake saw was signed by the login's key, but the thief's.
    let (_, log) = http(fake.port, "GET", "/control/log");
    assert!(
        log.contains(&format!("\"jkt\": \"{}\"", key.thumbprint())),
        "{log}"
    );
}

/// The agent's sign-ins: one browser sign-in per profile for every waiter, the credentials
/// from memory, a refresh with the same key once under 5 minutes are left (the rotated token
/// sealed again), and after a lock, the sealed sign-in opened with a touch's vault, with no new
/// sign-in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_in_serves_every_waiter_refreshes_by_itself_and_reopens_after_a_lock() {
    use credagent::signin::{LoginStore, SigninLogins};
    use credagent::vault::{PrfOutput, VaultKeeper};
    use std::sync::Arc;

    let fake = start_fake();
    let base = format!("http://127.0.0.1:{}", fake.port);
    let state_dir = tempfile::tempdir().unwrap();
    let vault = Arc::new(VaultKeeper::load(state_dir.path()).unwrap());
    let prf = PrfOutput::from_slice(&[7; 32]).unwrap();
    drop(vault.create(b"cred", [9; 32], &prf, false).unwrap());
    let logins = Arc::new(SigninLogins::new(
        LoginStore::new(state_dir.path(), vault.clone()),
        Box::new(move |_region: &str| base.clone()),
        "http://127.0.0.1:9/oauth/callback".into(),
    ));
    let t0 = SystemTime::now();
    let first = logins.start("dev", "us-east-1", t0).unwrap();
    let second = logins.start("dev", "us-east-1", t0).unwrap();
    assert_eq!(first, second, "one sign-in for every waiter");
    let waiter = {
        let logins = logins.clone();
        tokio::spawn(async move { logins.wait("dev").await })
    };
    let (code, state) = sign_in(fake.port, &first.authorize_url);
    assert_eq!(state, first.state);
    assert!(logins.expects(&state));
    let profile = logins
        .callback(&state, SecretString::from(code), t0)
        .await
        .unwrap();
    assert_eq!(profile, "dev");
    assert_eq!(
        waiter.await.unwrap().unwrap(),
        "arn:aws:iam::123456789012:user/Admin"
    );
    assert!(!logins.expects(&state), "a state is used once");

    let c1 = logins.credentials("dev", t0).await.unwrap();
    assert_eq!(
        logins.credentials("dev", t0).await.unwrap().access_key_id,
        c1.access_key_id,
        "from memory"
    );
    // Eleven minutes on: under 5 left, refreshed (no touch, no browser).
    let t1 = t0 + Duration::from_secs(11 * 60);
    let c2 = logins.credentials("dev", t1).await.unwrap();
    assert_ne!(c2.access_key_id, c1.access_key_id);

    // A lock wipes it all; a touch's vault opens the sealed sign-in, which refreshes with the
    // rotated token it holds.
    logins.lock();
    assert!(matches!(
        logins.credentials("dev", t1).await.err().unwrap(),
        SigninError::NotOpen { .. }
    ));
    let touched = vault.unwrap(b"cred", &prf).unwrap();
    logins.open("dev", "us-east-1", &touched).unwrap();
    let c3 = logins.credentials("dev", t1).await.unwrap();
    assert_ne!(c3.access_key_id, c2.access_key_id);
    let (_, log) = http(fake.port, "GET", "/control/log");
    assert_eq!(
        log.matches("\"grant\": \"authorization_code\"").count(),
        1,
        "{log}"
    );
    assert_eq!(log.matches("\"outcome\": \"ok\"").count(), 3, "{log}");

    // The session's 12 hours are over: the error says what to do.
    assert_eq!(http(fake.port, "POST", "/control/expire").0, 200);
    let t2 = t1 + Duration::from_secs(11 * 60);
    let expired = logins.credentials("dev", t2).await.err().unwrap();
    assert!(
        expired.to_string().contains("credctl login dev"),
        "{expired}"
    );
    // Logged out: gone, sealed copy included.
    logins.logout("dev").unwrap();
    logins.open("dev", "us-east-1", &touched).unwrap();
    assert!(matches!(
        logins.credentials("dev", t2).await.err().unwrap(),
        SigninError::NotOpen { .. }
    ));
}

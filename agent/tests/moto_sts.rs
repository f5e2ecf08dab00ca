//! The real aws-sdk-sts implementation against a real moto STS server on loopback.
//! Needs moto's server (PyPI `moto[server]`; scripts/setup installs it), started through
//! tests/py/moto_sts.py on a port it picks itself.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_sdk_sts::config::{BehaviorVersion, Credentials, Region};
use credagent::profiles::Hop;
use credagent::sts::{
    AwsSts, CallerCredentials, MfaToken, RetryPolicy, Retrying, StsApi, StsError, StsSettings,
    TempCredentials,
};
use secrecy::{ExposeSecret, SecretString};

struct Moto {
    child: Child,
    port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// moto on a port it binds itself (port 0) and reports on its first stdout line once it
/// listens: no port is picked here and taken later, so parallel tests never collide.
fn start_moto() -> Moto {
    let launcher = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/py/moto_sts.py");
    let mut child = Command::new("python3")
        .arg(launcher)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot run python3 tests/py/moto_sts.py: install moto[server] (scripts/setup)");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let _ = tx.send(lines.next());
        // Keep draining, so a later write never fails on a closed pipe.
        lines.map_while(Result::ok).for_each(drop);
    });
    let mut moto = Moto { child, port: 0 };
    // A generous deadline: moto imports for seconds on a loaded machine.
    match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(Some(Ok(line))) => {
            moto.port = line
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("moto reported no port: {line:?}"))
        }
        other => {
            let status = moto.child.try_wait().unwrap();
            panic!("moto did not report its port ({other:?}, exit {status:?}): is moto[server] installed?")
        }
    }
    moto
}

fn settings(endpoint: String) -> StsSettings {
    let env = |_: &str| None;
    let mut s = StsSettings::resolve(Some(&endpoint), Some("us-east-1"), &env).unwrap();
    s.attempt_timeout = Duration::from_secs(5);
    s
}

fn source() -> CallerCredentials {
    CallerCredentials {
        access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
        secret_access_key: SecretString::from(SOURCE_SECRET),
        session_token: None,
    }
}

fn hop(arn: &str) -> Hop {
    Hop {
        profile: "demo".into(),
        role_arn: arn.into(),
        external_id: Some("ext-1".into()),
        duration_seconds: None,
        role_session_name: None,
    }
}

/// GetCallerIdentity with the given temporary credentials, through a plain SDK client.
async fn caller_arn(endpoint: &str, creds: &TempCredentials) -> String {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let config = aws_sdk_sts::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .http_client(http)
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new(
            creds.access_key_id.clone(),
            creds.secret_access_key.expose_secret().to_owned(),
            Some(creds.session_token.expose_secret().to_owned()),
            None,
            "test",
        ))
        .build();
    let out = aws_sdk_sts::Client::from_conf(config)
        .get_caller_identity()
        .send()
        .await
        .unwrap();
    out.arn().unwrap().to_owned()
}

/// Collects every log line of the test (this thread) to grep it for secrets.
#[derive(Clone, Default)]
struct LogBuf(Arc<Mutex<Vec<u8>>>);

impl Write for LogBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

const SOURCE_SECRET: &str = "credagentSourceSecret0123456789abcdefXYZ";

#[tokio::test]
async fn assume_role_chain_and_session_token_against_moto() {
    let moto = start_moto();
    let logs = LogBuf::default();
    let writer = logs.clone();
    let level = match std::env::var("CREDAGENT_TEST_LOG_LEVEL").as_deref() {
        Ok("trace") => tracing::Level::TRACE,
        _ => tracing::Level::DEBUG,
    };
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _log_guard = tracing::subscriber::set_default(subscriber);
    let endpoint = format!("http://127.0.0.1:{}", moto.port);
    let sts: Arc<dyn StsApi> = Arc::new(AwsSts::new(&settings(endpoint.clone())));
    let now = SystemTime::now();

    let demo = sts
        .assume_role(
            &source(),
            &hop("arn:aws:iam::123456789012:role/demo"),
            Duration::from_secs(900),
            "credagent-test",
            None,
            None,
        )
        .await
        .unwrap();
    assert!(demo.access_key_id.starts_with("ASIA"), "{demo:?}");
    assert!(!demo.session_token.expose_secret().is_empty());
    let left = demo.remaining(now);
    assert!(
        left > Duration::from_secs(800) && left <= Duration::from_secs(960),
        "{left:?}"
    );
    assert_eq!(demo.account_id.as_deref(), Some("123456789012"));
    let arn = caller_arn(&endpoint, &demo).await;
    assert!(arn.contains("assumed-role/demo/"), "{arn}");
    assert!(demo
        .assumed_role_arn
        .as_deref()
        .unwrap()
        .contains("assumed-role/demo/"));

    // Second hop signed with the first hop's credentials, in another region.
    let prod = sts
        .assume_role(
            &CallerCredentials::from(&demo),
            &hop("arn:aws:iam::123456789012:role/prod"),
            Duration::from_secs(1800),
            "credagent-chain",
            Some("eu-west-1"),
            None,
        )
        .await
        .unwrap();
    let arn = caller_arn(&endpoint, &prod).await;
    assert!(arn.contains("assumed-role/prod/credagent-chain"), "{arn}");

    // An MFA role over an hour: the code goes on AssumeRole itself, which the SDK serializes.
    let code = SecretString::from("123456");
    let long = sts
        .assume_role(
            &source(),
            &hop("arn:aws:iam::123456789012:role/long"),
            Duration::from_secs(7200),
            "credagent-mfa",
            None,
            Some(MfaToken {
                serial: "arn:aws:iam::123456789012:mfa/alice",
                code: &code,
            }),
        )
        .await
        .unwrap();
    assert!(long.remaining(now) > Duration::from_secs(7000), "{long:?}");

    let mfa = sts
        .get_session_token(
            &source(),
            "arn:aws:iam::123456789012:mfa/alice",
            &SecretString::from("123456"),
            Duration::from_secs(3600),
            None,
        )
        .await
        .unwrap();
    assert!(mfa.assumed_role_arn.is_none());
    assert!(mfa.remaining(now) > Duration::from_secs(3000));

    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.len() > 100,
        "the SDK logged nothing at {level}: is the capture working?"
    );
    let secrets = [
        SOURCE_SECRET.to_owned(),
        demo.secret_access_key.expose_secret().to_owned(),
        demo.session_token.expose_secret().to_owned(),
        prod.secret_access_key.expose_secret().to_owned(),
        mfa.session_token.expose_secret().to_owned(),
    ];
    for s in &secrets {
        assert!(
            !logs.contains(s.as_str()),
            "a secret appeared in the {level} logs"
        );
    }
}

/// Counts the calls that reach the wrapped STS.
struct Counting {
    inner: Arc<dyn StsApi>,
    calls: AtomicU32,
}

#[async_trait]
impl StsApi for Counting {
    async fn assume_role(
        &self,
        creds: &CallerCredentials,
        hop: &Hop,
        duration: Duration,
        session_name: &str,
        region: Option<&str>,
        mfa: Option<MfaToken<'_>>,
    ) -> Result<TempCredentials, StsError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner
            .assume_role(creds, hop, duration, session_name, region, mfa)
            .await
    }

    async fn get_session_token(
        &self,
        creds: &CallerCredentials,
        mfa_serial: &str,
        code: &SecretString,
        duration: Duration,
        region: Option<&str>,
    ) -> Result<TempCredentials, StsError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner
            .get_session_token(creds, mfa_serial, code, duration, region)
            .await
    }
}

#[tokio::test]
async fn unreachable_endpoint_is_transient_and_retries_are_bounded() {
    // A port bound but never listened on: connections are refused, and no other process can
    // start listening there while the test holds it.
    let unreachable = tokio::net::TcpSocket::new_v4().unwrap();
    unreachable.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = unreachable.local_addr().unwrap().port();
    let inner = Arc::new(Counting {
        inner: Arc::new(AwsSts::new(&settings(format!("http://127.0.0.1:{port}")))),
        calls: AtomicU32::new(0),
    });
    let err = inner
        .assume_role(
            &source(),
            &hop("arn:aws:iam::1:role/x"),
            Duration::from_secs(900),
            "s",
            None,
            None,
        )
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err}");

    let policy = RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
    };
    inner.calls.store(0, Ordering::SeqCst);
    let err = Retrying::new(inner.clone(), policy)
        .assume_role(
            &source(),
            &hop("arn:aws:iam::1:role/x"),
            Duration::from_secs(900),
            "s",
            None,
            None,
        )
        .await
        .unwrap_err();
    assert!(err.is_transient());
    // Bounded: exactly `max_attempts` calls reached STS, then the error came back.
    assert_eq!(inner.calls.load(Ordering::SeqCst), policy.max_attempts);
}

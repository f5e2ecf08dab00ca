//! The real aws-sdk-sts implementation against a real moto STS server on loopback.
//! Needs `python3 -m moto.server` (PyPI `moto[server]`); set CREDAGENT_SKIP_MOTO=1 to skip.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_sts::config::{BehaviorVersion, Credentials, Region};
use credagent::profiles::Hop;
use credagent::sts::{
    AwsSts, CallerCredentials, RetryPolicy, Retrying, StsApi, StsSettings, TempCredentials,
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

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_moto() -> Option<Moto> {
    if std::env::var("CREDAGENT_SKIP_MOTO").as_deref() == Ok("1") {
        eprintln!("CREDAGENT_SKIP_MOTO=1: skipping the moto test");
        return None;
    }
    let port = free_port();
    let child = Command::new("python3")
        .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot run python3 -m moto.server: install moto[server] (pip) or set CREDAGENT_SKIP_MOTO=1");
    let mut moto = Moto { child, port };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some(moto);
        }
        if let Some(status) = moto.child.try_wait().unwrap() {
            panic!("moto.server exited early with {status}: is moto[server] installed?");
        }
        assert!(
            Instant::now() < deadline,
            "moto.server did not listen on {port} within 60 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn settings(endpoint: String) -> StsSettings {
    let env = |_: &str| None;
    let mut s = StsSettings::resolve(Some(&endpoint), Some("us-east-1"), &env);
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
    let Some(moto) = start_moto() else { return };
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
        )
        .await
        .unwrap();
    let arn = caller_arn(&endpoint, &prod).await;
    assert!(arn.contains("assumed-role/prod/credagent-chain"), "{arn}");

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

#[tokio::test]
async fn unreachable_endpoint_is_transient_and_retries_are_bounded() {
    let port = free_port(); // nothing listens there now
    let inner: Arc<dyn StsApi> =
        Arc::new(AwsSts::new(&settings(format!("http://127.0.0.1:{port}"))));
    let err = inner
        .assume_role(
            &source(),
            &hop("arn:aws:iam::1:role/x"),
            Duration::from_secs(900),
            "s",
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
    let started = Instant::now();
    let err = Retrying::new(inner, policy)
        .assume_role(
            &source(),
            &hop("arn:aws:iam::1:role/x"),
            Duration::from_secs(900),
            "s",
            None,
        )
        .await
        .unwrap_err();
    assert!(err.is_transient());
    assert!(started.elapsed() < Duration::from_secs(5));
}

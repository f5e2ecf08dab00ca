//! Unit tests of the routes with an in-memory credential source.

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use http_body_util::BodyExt;
use hyper::{Request, StatusCode};
use secrecy::ExposeSecret;

use super::*;
use crate::audit::ConnAudit;
use crate::tokens::Binding;

#[derive(Default)]
struct Fake {
    ready: Mutex<Vec<String>>,
    asked: Mutex<Vec<String>>,
}

impl CredentialSource for Fake {
    fn lookup(&self, role: &str, _now: SystemTime) -> Lookup {
        if self.ready.lock().unwrap().iter().any(|r| r == role) {
            Lookup::Ready(Arc::new(Rendered::new(
                zeroize::Zeroizing::new(format!("{{\"ecs\":\"{role}\"}}").into_bytes()),
                zeroize::Zeroizing::new(format!("{{\"imds\":\"{role}\"}}").into_bytes()),
            )))
        } else {
            Lookup::NotOpen
        }
    }
    fn request_approval(&self, role: &str, _origin: Origin, _now: SystemTime) {
        self.asked.lock().unwrap().push(role.to_owned());
    }
}

const HOST: &str = "127.0.0.1:5555";
const ORIGIN: Origin = Origin::Tcp {
    uid: 1000,
    inode: 1,
};

fn endpoint(fake: Arc<Fake>) -> Endpoint {
    let (tx, _rx) = tokio::sync::mpsc::channel(16);
    Endpoint {
        ctx: HttpContext::new(HOST.parse().unwrap()),
        tokens: Arc::new(Tokens::default()),
        imds_tokens: ImdsTokens::default(),
        imds_role: RwLock::new(None),
        source: fake,
        audit: Audit::for_tests(tx),
        approval_page: std::sync::OnceLock::new(),
    }
}

fn get(path: &str, headers: &[(&str, &str)]) -> Request<()> {
    let mut b = Request::builder().uri(path).header("host", HOST);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap()
}

/// Routes one request as a fresh connection from `ORIGIN` would.
fn serve<B>(ep: &Endpoint, req: &Request<B>, now: SystemTime) -> Response<Full<Bytes>> {
    ep.handle(req, ORIGIN, now, &ConnAudit::new(ep.audit.clone()))
}

fn body(resp: Response<Full<Bytes>>) -> (StatusCode, String, Option<String>) {
    let status = resp.status();
    let ct = resp
        .headers()
        .get(CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = futures_executor(resp.into_body().collect())
        .unwrap()
        .to_bytes();
    (status, String::from_utf8(bytes.to_vec()).unwrap(), ct)
}

fn futures_executor<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn ecs_serves_the_shell_role_once_approved() {
    let fake = Arc::new(Fake::default());
    let ep = endpoint(fake.clone());
    let now = SystemTime::now();
    let (_, tok) = ep
        .tokens
        .issue(Binding::Shell { current: None }, "shell", now)
        .unwrap();
    let auth = [("authorization", tok.expose_secret())];

    let (s, b, _) = body(serve(&ep, &get(ECS_PATH, &auth), now));
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(
        b.contains("credctl use ROLE") && b.contains("\"Code\":\"no_role\""),
        "{b}"
    );

    ep.tokens.set_current(&tok, "prod").unwrap();
    let (s, b, _) = body(serve(&ep, &get(ECS_PATH, &auth), now));
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(b.contains("credctl use prod"), "{b}");
    assert_eq!(*fake.asked.lock().unwrap(), vec!["prod".to_owned()]);

    fake.ready.lock().unwrap().push("prod".into());
    let (s, b, ct) = body(serve(&ep, &get(ECS_PATH, &auth), now));
    assert_eq!(
        (s, b.as_str(), ct.as_deref()),
        (
            StatusCode::OK,
            "{\"ecs\":\"prod\"}",
            Some("application/json")
        )
    );
}

#[test]
fn ecs_refuses_bad_tokens_with_401() {
    let ep = endpoint(Arc::new(Fake::default()));
    let now = SystemTime::now();
    for headers in [
        &[][..],
        &[("authorization", "nope")],
        &[("authorization", "Bearer cat1_00_00")],
    ] {
        let (s, b, _) = body(serve(&ep, &get(ECS_PATH, headers), now));
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{headers:?}");
        assert!(b.contains("\"code\"") && b.contains("\"Message\""));
    }
}

#[test]
fn imds_flow_and_refusals() {
    let fake = Arc::new(Fake::default());
    fake.ready.lock().unwrap().push("dev".into());
    let ep = endpoint(fake);
    let now = SystemTime::now();
    let put = |headers: &[(&str, &str)]| {
        let mut b = Request::builder()
            .method("PUT")
            .uri("/latest/api/token")
            .header("host", HOST);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        serve(&ep, &b.body(()).unwrap(), now)
    };
    assert_eq!(put(&[]).status(), StatusCode::BAD_REQUEST);
    assert_eq!(put(&[(TTL, "0")]).status(), StatusCode::BAD_REQUEST);
    assert_eq!(put(&[(TTL, "21601")]).status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        put(&[(TTL, "60"), ("x-forwarded-for", "1.2.3.4")]).status(),
        StatusCode::FORBIDDEN
    );
    let resp = put(&[(TTL, "60")]);
    assert_eq!(resp.headers()[TTL], "60");
    let (s, token, _) = body(resp);
    assert_eq!(s, StatusCode::OK);

    let list = "/latest/meta-data/iam/security-credentials/";
    assert_eq!(
        serve(&ep, &get(list, &[]), now).status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        serve(&ep, &get(list, &[(TOK, "bad")]), now).status(),
        StatusCode::UNAUTHORIZED
    );
    let later = now + Duration::from_secs(61);
    assert_eq!(
        serve(&ep, &get(list, &[(TOK, &token)]), later).status(),
        StatusCode::UNAUTHORIZED
    );
    // No role chosen for IMDS yet.
    assert_eq!(
        serve(&ep, &get(list, &[(TOK, &token)]), now).status(),
        StatusCode::NOT_FOUND
    );

    *ep.imds_role.write().unwrap() = Some("dev".into());
    let (s, b, _) = body(serve(&ep, &get(list, &[(TOK, &token)]), now));
    assert_eq!((s, b.as_str()), (StatusCode::OK, "dev"));
    let (s, b, _) = body(serve(
        &ep,
        &get(&format!("{list}dev"), &[(TOK, &token)]),
        now,
    ));
    assert_eq!((s, b.as_str()), (StatusCode::OK, "{\"imds\":\"dev\"}"));
    let other = serve(&ep, &get(&format!("{list}prod"), &[(TOK, &token)]), now);
    assert_eq!(other.status(), StatusCode::NOT_FOUND);
    let ext = "/latest/meta-data/iam/security-credentials-extended/dev";
    assert_eq!(
        serve(&ep, &get(ext, &[(TOK, &token)]), now).status(),
        StatusCode::NOT_FOUND
    );
}

const TTL: &str = "x-aws-ec2-metadata-token-ttl-seconds";
const TOK: &str = "x-aws-ec2-metadata-token";

#[test]
fn hostile_requests_are_refused_before_routing() {
    let ep = endpoint(Arc::new(Fake::default()));
    let now = SystemTime::now();
    let evil = Request::builder()
        .uri(ECS_PATH)
        .header("host", "evil.example")
        .body(())
        .unwrap();
    assert_eq!(serve(&ep, &evil, now).status(), StatusCode::FORBIDDEN);
    let page = get(ECS_PATH, &[("origin", "https://evil.example")]);
    assert_eq!(serve(&ep, &page, now).status(), StatusCode::FORBIDDEN);
}

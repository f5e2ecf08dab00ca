//! Unit tests of the routes with an in-memory credential source.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use http_body_util::BodyExt;
use hyper::{Request, StatusCode};
use secrecy::ExposeSecret;

use super::*;
use crate::audit::ConnAudit;
use crate::tokens::Binding;

#[derive(Default)]
struct Fake {
    ready: crate::generation::Versioned<Vec<String>>,
    asked: Mutex<Vec<String>>,
    /// Lookups made (a memo hit makes none).
    lookups: std::sync::atomic::AtomicUsize,
    /// How long the clock alone keeps a ready role servable (default: an hour).
    serve_until: Mutex<Option<SystemTime>>,
}

impl Fake {
    /// Opens or closes `role`, bumping the answer generation as the real cache does.
    fn set_ready(&self, role: &str, ready: bool) {
        let mut roles = self.ready.write();
        roles.retain(|r| r != role);
        if ready {
            roles.push(role.to_owned());
        }
    }

    fn lookups(&self) -> usize {
        self.lookups.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl CredentialSource for Fake {
    fn lookup(&self, role: &str, now: SystemTime, _job: bool) -> Lookup {
        self.lookups
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if self.ready.read().iter().any(|r| r == role) {
            Lookup::Ready {
                body: Arc::new(Rendered::new(
                    zeroize::Zeroizing::new(format!("{{\"ecs\":\"{role}\"}}").into_bytes()),
                    zeroize::Zeroizing::new(format!("{{\"imds\":\"{role}\"}}").into_bytes()),
                )),
                until: self
                    .serve_until
                    .lock()
                    .unwrap()
                    .unwrap_or(now + Duration::from_secs(3600)),
            }
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

type AuditRx = tokio::sync::mpsc::Receiver<(SystemTime, crate::audit::Event, u64)>;

fn endpoint(fake: Arc<Fake>) -> Endpoint {
    endpoint_with_audit(fake).0
}

/// An endpoint and the receiving end of its audit queue.
fn endpoint_with_audit(fake: Arc<Fake>) -> (Endpoint, AuditRx) {
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    let generation = fake.ready.generation().clone();
    let ep = Endpoint {
        ctx: HttpContext::new(HOST.parse().unwrap()),
        tokens: Arc::new(Tokens::new(generation.clone())),
        imds_tokens: ImdsTokens::new(generation.clone()),
        imds_role: crate::generation::Versioned::new(None, generation.clone()),
        generation,
        source: fake,
        audit: Audit::for_tests(tx),
        approval_page: None,
        oauth_callback: None,
        console: None,
        hints: crate::procs::SocketHints::default(),
    };
    (ep, rx)
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
    Conn::new(ep).serve(req, now)
}

/// One keep-alive connection: its audit run and its memo persist across requests.
struct Conn<'a> {
    ep: &'a Endpoint,
    audit: ConnAudit,
    memo: Memo,
}

impl<'a> Conn<'a> {
    fn new(ep: &'a Endpoint) -> Self {
        Conn {
            ep,
            audit: ConnAudit::new(ep.audit.clone()),
            memo: Memo::default(),
        }
    }

    fn serve<B>(&mut self, req: &Request<B>, now: SystemTime) -> Response<Full<Bytes>> {
        self.ep
            .handle(req, ORIGIN, now, &self.audit, &mut self.memo)
    }

    /// Status and body of one request.
    fn get(
        &mut self,
        path: &str,
        headers: &[(&str, &str)],
        now: SystemTime,
    ) -> (StatusCode, String) {
        let (s, b, _) = body(self.serve(&get(path, headers), now));
        (s, b)
    }
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
        .issue(Binding::Shell { current: None }, "shell", None, now)
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

    fake.set_ready("prod", true);
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
    fake.set_ready("dev", true);
    let ep = endpoint(fake);
    let now = SystemTime::now();
    let put = |headers: &[(&str, &str)]| serve(&ep, &put_token(headers), now);
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

    ep.set_imds_role(Some("dev".into()));
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
    // IMDS credentials v2.1 (smithy-rs #4109, aws-sdk-java-v2 #6176, smithy-typescript
    // #1621): SDKs ask the `-extended` paths first and fall back on a 404; they are served
    // alike, so no fetch costs a refusal and a second round trip.
    let ext = "/latest/meta-data/iam/security-credentials-extended/";
    let (s, b, _) = body(serve(&ep, &get(ext, &[(TOK, &token)]), now));
    assert_eq!((s, b.as_str()), (StatusCode::OK, "dev"));
    let (s, b, _) = body(serve(
        &ep,
        &get(&format!("{ext}dev"), &[(TOK, &token)]),
        now,
    ));
    assert_eq!((s, b.as_str()), (StatusCode::OK, "{\"imds\":\"dev\"}"));
    for bad in [
        format!("{ext}prod"),
        "/latest/meta-data/iam/security-credentials-extendeddev".into(),
    ] {
        let resp = serve(&ep, &get(&bad, &[(TOK, &token)]), now);
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{bad}");
    }
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

/// A `PUT /latest/api/token` with `headers`.
fn put_token(headers: &[(&str, &str)]) -> Request<()> {
    let mut b = Request::builder()
        .method("PUT")
        .uri("/latest/api/token")
        .header("host", HOST);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap()
}

/// An endpoint whose source has role `prod` ready, with its audit queue.
fn prod_endpoint() -> (Arc<Fake>, Endpoint, AuditRx) {
    let fake = Arc::new(Fake::default());
    fake.set_ready("prod", true);
    let (ep, rx) = endpoint_with_audit(fake.clone());
    (fake, ep, rx)
}

/// A token bound to `prod`, as `credctl exec prod` gets.
fn exec_token(ep: &Endpoint, now: SystemTime) -> (TokenId, secrecy::SecretString) {
    ep.tokens
        .issue(
            Binding::Role {
                role: "prod".into(),
            },
            "exec",
            None,
            now,
        )
        .unwrap()
}

/// Served events in the audit queue: (role, token id, count) per queued record.
fn served(rx: &mut AuditRx) -> Vec<(String, Option<String>, u64)> {
    let mut out = Vec::new();
    while let Ok((_, e, n)) = rx.try_recv() {
        if e.outcome == crate::audit::Outcome::Served {
            out.push((
                e.role.as_deref().unwrap_or_default().to_owned(),
                e.token_id.map(|t| t.to_string()),
                n,
            ));
        }
    }
    out
}

#[test]
fn a_keep_alive_connection_repeats_its_answer_without_a_lookup_and_audits_every_request() {
    let (fake, ep, mut rx) = prod_endpoint();
    let now = SystemTime::now();
    let (id, tok) = exec_token(&ep, now);
    let auth = [("authorization", tok.expose_secret())];
    let mut conn = Conn::new(&ep);
    for i in 0..5 {
        let at = now + Duration::from_millis(100 * i);
        assert_eq!(
            conn.get(ECS_PATH, &auth, at),
            (StatusCode::OK, "{\"ecs\":\"prod\"}".to_owned())
        );
    }
    assert_eq!(fake.lookups(), 1, "four repeats answered from the memo");
    drop(conn);
    let served = served(&mut rx);
    let total: u64 = served.iter().map(|(_, _, n)| n).sum();
    assert_eq!(total, 5, "{served:?}");
    assert!(served
        .iter()
        .all(|(r, t, _)| r == "prod" && t.as_deref() == Some(id.to_string().as_str())));
}

#[test]
fn the_memo_never_outlives_a_second_or_the_session() {
    let (fake, ep, _) = prod_endpoint();
    let now = SystemTime::now();
    let (_, tok) = exec_token(&ep, now);
    let auth = [("authorization", tok.expose_secret())];
    let mut conn = Conn::new(&ep);
    conn.get(ECS_PATH, &auth, now);
    conn.get(ECS_PATH, &auth, now + Duration::from_millis(999));
    assert_eq!(fake.lookups(), 1);
    conn.get(ECS_PATH, &auth, now + Duration::from_secs(1));
    assert_eq!(fake.lookups(), 2, "a second later the cache is asked again");

    // The session allows 200 ms more: the memo stops there.
    let later = now + Duration::from_secs(10);
    *fake.serve_until.lock().unwrap() = Some(later + Duration::from_millis(200));
    let mut conn = Conn::new(&ep);
    conn.get(ECS_PATH, &auth, later);
    conn.get(ECS_PATH, &auth, later + Duration::from_millis(199));
    assert_eq!(fake.lookups(), 3);
    conn.get(ECS_PATH, &auth, later + Duration::from_millis(200));
    assert_eq!(fake.lookups(), 4);
}

#[test]
fn revocation_rebinding_and_closing_take_effect_on_the_next_request_of_a_connection() {
    let fake = Arc::new(Fake::default());
    fake.set_ready("prod", true);
    fake.set_ready("dev", true);
    let ep = endpoint(fake.clone());
    let now = SystemTime::now();
    let (_, shell) = ep
        .tokens
        .issue(Binding::Shell { current: None }, "shell", None, now)
        .unwrap();
    let (exec_id, exec) = ep
        .tokens
        .issue(
            Binding::Role {
                role: "prod".into(),
            },
            "exec",
            None,
            now,
        )
        .unwrap();
    let shell_auth = [("authorization", shell.expose_secret())];
    let exec_auth = [("authorization", exec.expose_secret())];
    let mut conn = Conn::new(&ep);

    // `credctl use` switches what the same connection gets at once.
    ep.tokens.set_current(&shell, "prod").unwrap();
    assert_eq!(conn.get(ECS_PATH, &shell_auth, now).1, "{\"ecs\":\"prod\"}");
    ep.tokens.set_current(&shell, "dev").unwrap();
    assert_eq!(conn.get(ECS_PATH, &shell_auth, now).1, "{\"ecs\":\"dev\"}");

    // Another token on the same connection is checked on its own.
    assert_eq!(conn.get(ECS_PATH, &exec_auth, now).0, StatusCode::OK);
    let forged = format!(
        "{}0",
        &exec.expose_secret()[..exec.expose_secret().len() - 1]
    );
    let forged = if forged == *exec.expose_secret() {
        format!(
            "{}1",
            &exec.expose_secret()[..exec.expose_secret().len() - 1]
        )
    } else {
        forged
    };
    assert_eq!(
        conn.get(ECS_PATH, &[("authorization", &forged)], now).0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(conn.get(ECS_PATH, &exec_auth, now).0, StatusCode::OK);

    // Revocation: the very next request is refused.
    assert!(ep.tokens.revoke(exec_id));
    assert_eq!(
        conn.get(ECS_PATH, &exec_auth, now).0,
        StatusCode::UNAUTHORIZED
    );

    // A session that ends (lock, expiry) stops the next answer too.
    assert_eq!(conn.get(ECS_PATH, &shell_auth, now).0, StatusCode::OK);
    fake.set_ready("dev", false);
    assert_eq!(
        conn.get(ECS_PATH, &shell_auth, now).0,
        StatusCode::FORBIDDEN
    );

    // Lock forgets the shell's role.
    fake.set_ready("dev", true);
    assert_eq!(conn.get(ECS_PATH, &shell_auth, now).0, StatusCode::OK);
    ep.tokens.clear_current_roles();
    assert_eq!(
        conn.get(ECS_PATH, &shell_auth, now).0,
        StatusCode::FORBIDDEN
    );
}

#[test]
fn imds_memo_follows_the_role_the_token_and_the_path() {
    let fake = Arc::new(Fake::default());
    fake.set_ready("dev", true);
    fake.set_ready("prod", true);
    let ep = endpoint(fake.clone());
    let now = SystemTime::now();
    let token = body(serve(&ep, &put_token(&[(TTL, "2")]), now)).1;
    ep.set_imds_role(Some("dev".into()));
    let creds = "/latest/meta-data/iam/security-credentials/";
    let tok = [(TOK, token.as_str())];
    let mut conn = Conn::new(&ep);
    assert_eq!(
        conn.get(&format!("{creds}dev"), &tok, now),
        (StatusCode::OK, "{\"imds\":\"dev\"}".to_owned())
    );
    assert_eq!(
        conn.get(&format!("{creds}dev"), &tok, now).0,
        StatusCode::OK
    );
    assert_eq!(fake.lookups(), 1);
    // Another path on the same connection is routed afresh.
    assert_eq!(
        conn.get(&format!("{creds}prod"), &tok, now).0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(conn.get(creds, &tok, now).1, "dev");

    // Switching the IMDS role ends the memo at once.
    ep.set_imds_role(Some("prod".into()));
    assert_eq!(
        conn.get(&format!("{creds}dev"), &tok, now).0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        conn.get(&format!("{creds}prod"), &tok, now).0,
        StatusCode::OK
    );

    // The IMDS token's expiry bounds the memo (TTL 2 s, memo made at +1.5 s).
    let late = now + Duration::from_millis(1500);
    assert_eq!(
        conn.get(&format!("{creds}prod"), &tok, late).0,
        StatusCode::OK
    );
    let expired = now + Duration::from_secs(2);
    assert_eq!(
        conn.get(&format!("{creds}prod"), &tok, expired).0,
        StatusCode::UNAUTHORIZED
    );

    // Forgetting IMDS tokens (lock) ends it too.
    let fresh = body(serve(&ep, &put_token(&[(TTL, "60")]), now)).1;
    let tok = [(TOK, fresh.as_str())];
    assert_eq!(
        conn.get(&format!("{creds}prod"), &tok, now).0,
        StatusCode::OK
    );
    ep.imds_tokens.clear();
    assert_eq!(
        conn.get(&format!("{creds}prod"), &tok, now).0,
        StatusCode::UNAUTHORIZED
    );
}

#[test]
fn a_stale_memo_is_dropped_by_the_tick() {
    let (fake, ep, _) = prod_endpoint();
    let now = SystemTime::now();
    let (_, tok) = exec_token(&ep, now);
    let mut conn = Conn::new(&ep);
    conn.get(ECS_PATH, &[("authorization", tok.expose_secret())], now);
    assert!(conn.memo.is_set());
    conn.memo.forget_stale(now, ep.generation.current());
    assert!(conn.memo.is_set(), "still good");
    fake.set_ready("prod", false);
    conn.memo.forget_stale(now, ep.generation.current());
    assert!(!conn.memo.is_set(), "the credential body is let go");
}

#[test]
fn a_wall_clock_stepped_back_cannot_stretch_a_memo() {
    let (_fake, ep, _) = prod_endpoint();
    let now = SystemTime::now();
    let (_, tok) = exec_token(&ep, now);
    let mut conn = Conn::new(&ep);
    conn.get(ECS_PATH, &[("authorization", tok.expose_secret())], now);
    assert!(conn.memo.is_set());
    // The wall clock jumps an hour back: by its deadline the memo would live an hour more.
    let earlier = now - Duration::from_secs(3600);
    conn.memo.forget_stale(earlier, ep.generation.current());
    assert!(conn.memo.is_set(), "one tick: still good");
    conn.memo.forget_stale(earlier, ep.generation.current());
    assert!(!conn.memo.is_set(), "the second monotonic tick ends it");
}

//! Differential fuzzing of the per-connection memo: a keep-alive connection (one `Memo` kept
//! across requests) must answer every request exactly as a fresh connection would, whatever
//! happens in between: tokens revoked or re-bound, sessions opened, closed or refreshed, lock,
//! the IMDS role switched, IMDS tokens expiring, time passing, hostile headers.
#![no_main]

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arbitrary::Arbitrary;
use credagent::audit::{Audit, ConnAudit, Origin};
use credagent::http::endpoint::{CredentialSource, Endpoint, Lookup, Memo, Rendered};
use credagent::generation::{Generation, Versioned};
use credagent::tokens::{Binding, TokenId, Tokens};
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use secrecy::{ExposeSecret, SecretString};

const ROLES: [&str; 2] = ["a", "b"];
const ADDR: &str = "127.0.0.1:4321";

#[derive(Arbitrary, Debug)]
enum Step {
    Ecs {
        token: u8,
        host: u8,
        browser: bool,
        post: bool,
    },
    Imds {
        role: u8,
        token: u8,
        list: bool,
    },
    ImdsPut {
        ttl: u8,
        forwarded: bool,
    },
    Wait {
        millis: u16,
    },
    Revoke {
        token: u8,
    },
    Use {
        token: u8,
        role: u8,
    },
    Open {
        role: u8,
    },
    Close {
        role: u8,
    },
    /// A refresh: the role's credentials now serve until `millis` from now.
    Refresh {
        millis: u16,
    },
    Lock,
    ImdsRole {
        role: Option<u8>,
    },
}

/// The session cache as the endpoint sees it; the steps below change it through the
/// versioned values, as the real cache does.
struct Source {
    open: Versioned<[bool; 2]>,
    until: Versioned<SystemTime>,
    bodies: [Arc<Rendered>; 2],
}

impl CredentialSource for Source {
    fn lookup(&self, role: &str, now: SystemTime) -> Lookup {
        let Some(i) = ROLES.iter().position(|r| *r == role) else {
            return Lookup::NotOpen;
        };
        if !self.open.read()[i] {
            return Lookup::NotOpen;
        }
        let until = *self.until.read();
        if now > until {
            return Lookup::Unavailable("expired".into());
        }
        Lookup::Ready {
            body: self.bodies[i].clone(),
            until,
        }
    }
    fn request_approval(&self, _role: &str, _origin: Origin, _now: SystemTime) {}
}

fn rendered(role: &str) -> Arc<Rendered> {
    Arc::new(Rendered::new(
        zeroize::Zeroizing::new(format!("{{\"ecs\":\"{role}\"}}").into_bytes()),
        zeroize::Zeroizing::new(format!("{{\"imds\":\"{role}\"}}").into_bytes()),
    ))
}

fn answer(
    rt: &tokio::runtime::Runtime,
    resp: hyper::Response<http_body_util::Full<bytes::Bytes>>,
) -> (u16, Vec<u8>) {
    let status = resp.status().as_u16();
    let body = rt
        .block_on(resp.into_body().collect())
        .map(|c| c.to_bytes().to_vec())
        .unwrap_or_default();
    (status, body)
}

fuzz_target!(|steps: Vec<Step>| {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let generation = Generation::default();
    let mut now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let source = Arc::new(Source {
        open: Versioned::new([true, false], generation.clone()),
        until: Versioned::new(now + Duration::from_secs(3), generation.clone()),
        bodies: [rendered(ROLES[0]), rendered(ROLES[1])],
    });
    let tokens = Arc::new(Tokens::new(generation.clone()));
    let ep = Endpoint::new(
        ADDR.parse().unwrap(),
        tokens.clone(),
        source.clone(),
        Audit::discard(),
        generation.clone(),
        None,
    );
    let mut issued: Vec<(TokenId, SecretString)> = Vec::new();
    for binding in [
        Binding::Shell {
            current: Some(ROLES[0].into()),
        },
        Binding::Shell { current: None },
        Binding::Role {
            role: ROLES[1].into(),
        },
    ] {
        issued.push(tokens.issue(binding, "fuzz", now).unwrap());
    }
    let mut imds_tokens: Vec<String> = Vec::new();
    let origin = Origin::Tcp {
        uid: 1000,
        inode: 1,
    };
    let audit = ConnAudit::new(Audit::discard());
    let mut memo = Memo::default();

    for step in steps.into_iter().take(64) {
        let req = match step {
            Step::Ecs {
                token,
                host,
                browser,
                post,
            } => {
                let mut b = hyper::Request::builder()
                    .method(if post { "POST" } else { "GET" })
                    .uri("/v1/credentials")
                    .header(
                        "host",
                        [ADDR, "localhost:4321", "evil.example:4321"][host as usize % 3],
                    );
                if browser {
                    b = b.header("sec-fetch-mode", "no-cors");
                }
                match issued.get(token as usize % 5) {
                    Some((_, t)) => b = b.header("authorization", t.expose_secret()),
                    None if token % 5 == 3 => b = b.header("authorization", "cat1_00_00"),
                    None => {}
                }
                b.body(()).unwrap()
            }
            Step::Imds { role, token, list } => {
                let path = if list {
                    "/latest/meta-data/iam/security-credentials/".to_owned()
                } else {
                    format!(
                        "/latest/meta-data/iam/security-credentials/{}",
                        ROLES[role as usize % 2]
                    )
                };
                let mut b = hyper::Request::builder().uri(path).header("host", ADDR);
                if let Some(t) = imds_tokens.get(token as usize % (imds_tokens.len() + 1)) {
                    b = b.header("x-aws-ec2-metadata-token", t.as_str());
                }
                b.body(()).unwrap()
            }
            Step::ImdsPut { ttl, forwarded } => {
                let mut b = hyper::Request::builder()
                    .method("PUT")
                    .uri("/latest/api/token")
                    .header("host", ADDR)
                    .header(
                        "x-aws-ec2-metadata-token-ttl-seconds",
                        (ttl % 4 + 1).to_string(),
                    );
                if forwarded {
                    b = b.header("x-forwarded-for", "10.0.0.1");
                }
                let (status, body) = answer(
                    &rt,
                    ep.handle(&b.body(()).unwrap(), origin, now, &audit, &mut memo),
                );
                if status == 200 {
                    imds_tokens.push(String::from_utf8(body).unwrap());
                }
                continue;
            }
            Step::Wait { millis } => {
                now += Duration::from_millis(u64::from(millis % 4000));
                continue;
            }
            Step::Revoke { token } => {
                if let Some((id, _)) = issued.get(token as usize % issued.len()) {
                    tokens.revoke(*id);
                }
                continue;
            }
            Step::Use { token, role } => {
                if let Some((_, t)) = issued.get(token as usize % issued.len()) {
                    let _ = tokens.set_current(t, ROLES[role as usize % 2]);
                }
                continue;
            }
            Step::Open { role } | Step::Close { role } => {
                let open = matches!(step, Step::Open { .. });
                source.open.write()[role as usize % 2] = open;
                continue;
            }
            Step::Refresh { millis } => {
                *source.until.write() = now + Duration::from_millis(u64::from(millis));
                continue;
            }
            Step::Lock => {
                *source.open.write() = [false, false];
                tokens.clear_current_roles();
                ep.set_imds_role(None);
                ep.imds_tokens.clear();
                continue;
            }
            Step::ImdsRole { role } => {
                ep.set_imds_role(role.map(|r| ROLES[r as usize % 2].into()));
                continue;
            }
        };
        let kept = answer(&rt, ep.handle(&req, origin, now, &audit, &mut memo));
        let fresh = answer(
            &rt,
            ep.handle(&req, origin, now, &audit, &mut Memo::default()),
        );
        assert_eq!(
            (kept.0, String::from_utf8_lossy(&kept.1)),
            (fresh.0, String::from_utf8_lossy(&fresh.1)),
            "the memo answered differently from a fresh connection: {req:?}"
        );
    }
});

//! `credctl console`: AWS console sign-in with a role's session.
//!
//! The agent asks the federation endpoint for a sign-in token (`getSigninToken`, with the role's
//! credentials and, for a role assumed with long-term credentials, a `SessionDuration` within
//! what AWS allows; for a role assumed with temporary credentials (role → role, Identity Center
//! → role, an MFA session → role) none: the endpoint refuses it then, as the IAM User Guide says
//! ("…otherwise the call to the federation endpoint fails") and aws-sso-cli and Teleport learnt),
//! builds the login URL, and keeps it behind a one-time link on its own listener,
//! `http://127.0.0.1:PORT/console/<id>`. `credctl` hands only that link to the browser, so the
//! sign-in token never sits on a command line; the link redirects once, within 60 s, and is
//! gone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::header::{HeaderValue, CACHE_CONTROL, LOCATION};
use hyper::{Method, Request, Response, StatusCode};
use secrecy::{ExposeSecret, SecretString};

use crate::audit::Origin;
use crate::http::pages::{BrowserPage, CONSOLE_PATH};
use crate::sts::TempCredentials;
use crate::util::{percent_encode as encode, LockExt};

/// AWS's federation endpoint (commercial partition).
pub const FEDERATION_ENDPOINT: &str = "https://signin.aws.amazon.com/federation";

/// The AWS partition a region is in, which decides the sign-in and console hosts: told by the
/// region's prefix, as aws-vault (`cli/login.go`, `generateLoginURL`), granted and aws-sso-cli
/// do. Without a region, the commercial partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Partition {
    Aws,
    China,
    GovCloud,
}

impl Partition {
    pub fn of(region: Option<&str>) -> Partition {
        match region {
            Some(r) if r.starts_with("cn-") => Partition::China,
            Some(r) if r.starts_with("us-gov-") => Partition::GovCloud,
            _ => Partition::Aws,
        }
    }

    /// The federation endpoint (`getSigninToken`, `login`).
    pub fn federation(self) -> &'static str {
        match self {
            Partition::Aws => FEDERATION_ENDPOINT,
            Partition::China => "https://signin.amazonaws.cn/federation",
            Partition::GovCloud => "https://signin.amazonaws-us-gov.com/federation",
        }
    }

    /// The console's domain.
    pub fn console_domain(self) -> &'static str {
        match self {
            Partition::Aws => "console.aws.amazon.com",
            Partition::China => "console.amazonaws.cn",
            Partition::GovCloud => "console.amazonaws-us-gov.com",
        }
    }
}

/// How long a one-time link lives.
const LINK_TTL: Duration = Duration::from_secs(60);
/// The longest console session AWS grants, and the longest for a chained role.
const MAX_SESSION: u64 = 43_200;
const MIN_SESSION: u64 = 900;

/// Why no console link was made.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("the federation endpoint {endpoint} could not be reached: {detail}")]
    Unreachable { endpoint: String, detail: String },
    #[error("the federation endpoint refused the session ({status}): {detail}")]
    Refused { status: u16, detail: String },
    #[error("the destination {0:?} is neither a page of the AWS console (https://…{1}/…) nor a service name (like s3 or ec2)")]
    BadDestination(String, &'static str),
    #[error("the region {0:?} is not a region name (like eu-west-1): letters, digits and dashes")]
    BadRegion(String),
}

/// The console session length for credentials that last `remaining`: AWS's limits, and 1 h for
/// a chained role.
pub fn session_duration(remaining: Duration, chained: bool) -> Option<u64> {
    (!chained).then(|| remaining.as_secs().clamp(MIN_SESSION, MAX_SESSION))
}

/// Where the console opens: a console URL of the region's partition as given, a service's page,
/// or the home page, in `region` when known. A sign-in link to any other site would hand the
/// session to it, so nothing else is accepted.
pub fn destination(wanted: Option<&str>, region: Option<&str>) -> Result<String, ConsoleError> {
    if let Some(r) = region {
        let plain = !r.is_empty()
            && r.len() <= 32
            && r.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !plain {
            return Err(ConsoleError::BadRegion(r.to_owned()));
        }
    }
    let domain = Partition::of(region).console_domain();
    let host = match region {
        Some(r) => format!("https://{r}.{domain}"),
        None => format!("https://{domain}"),
    };
    let query = region.map(|r| format!("?region={r}")).unwrap_or_default();
    match wanted {
        None => Ok(format!("{host}/console/home{query}")),
        Some(url) if url.starts_with("https://") => {
            let authority = url["https://".len()..]
                .split(['/', '?', '#'])
                .next()
                .unwrap_or("");
            let on_console = !authority.contains(['@', ':'])
                && (authority == domain || authority.ends_with(&format!(".{domain}")));
            if on_console {
                Ok(url.to_owned())
            } else {
                Err(ConsoleError::BadDestination(url.to_owned(), domain))
            }
        }
        Some(service)
            if !service.is_empty()
                && service
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-') =>
        {
            Ok(format!("{host}/{service}/home{query}"))
        }
        Some(other) => Err(ConsoleError::BadDestination(other.to_owned(), domain)),
    }
}

type Client = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Empty<Bytes>,
>;

/// The federation client and the one-time links.
pub struct Consoles {
    /// `federation_endpoint` from config.toml; else the partition's (see [`Partition`]).
    /// Replaced by `credctl reload`, after a touch confirmed it.
    endpoint: std::sync::RwLock<Option<String>>,
    client: std::sync::OnceLock<Result<Client, String>>,
    links: Mutex<HashMap<String, (SecretString, SystemTime)>>,
    /// `http://127.0.0.1:PORT`, the base of the links.
    base: String,
}

impl Consoles {
    pub fn new(endpoint: Option<&str>, addr: std::net::SocketAddr) -> Arc<Consoles> {
        Arc::new(Consoles {
            endpoint: std::sync::RwLock::new(endpoint.map(str::to_owned)),
            client: std::sync::OnceLock::new(),
            links: Mutex::new(HashMap::new()),
            base: format!("http://127.0.0.1:{}", addr.port()),
        })
    }

    /// Puts `federation_endpoint` (none: AWS's) in force for the next link.
    pub fn set_endpoint(&self, endpoint: Option<&str>) {
        *crate::util::RwLockExt::write_locked(&self.endpoint) = endpoint.map(str::to_owned);
    }

    /// The federation endpoint for a role in `region`.
    pub fn endpoint_for(&self, region: Option<&str>) -> String {
        crate::util::RwLockExt::read_locked(&self.endpoint)
            .clone()
            .unwrap_or_else(|| Partition::of(region).federation().to_owned())
    }

    fn client(&self, endpoint: &str) -> Result<&Client, ConsoleError> {
        self.client
            .get_or_init(|| {
                let https = hyper_rustls::HttpsConnectorBuilder::new()
                    .with_native_roots()
                    .map_err(|e| format!("no system root certificates: {e}"))?
                    .https_or_http()
                    .enable_http1()
                    .build();
                Ok(
                    hyper_util::client::legacy::Client::builder(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .build(https),
                )
            })
            .as_ref()
            .map_err(|e| ConsoleError::Unreachable {
                endpoint: endpoint.to_owned(),
                detail: e.clone(),
            })
    }

    /// A one-time link that signs in to the console with `creds` at `destination`, through the
    /// federation endpoint of `region`'s partition (or the configured one).
    pub async fn link(
        &self,
        creds: &TempCredentials,
        duration: Option<u64>,
        destination: &str,
        region: Option<&str>,
        now: SystemTime,
    ) -> Result<(String, SystemTime), ConsoleError> {
        let endpoint = self.endpoint_for(region);
        let session = zeroize::Zeroizing::new(
            serde_json::json!({
                "sessionId": creds.access_key_id,
                "sessionKey": creds.secret_access_key.expose_secret(),
                "sessionToken": creds.session_token.expose_secret(),
            })
            .to_string(),
        );
        let duration = duration
            .map(|d| format!("&SessionDuration={d}"))
            .unwrap_or_default();
        let url = zeroize::Zeroizing::new(format!(
            "{endpoint}?Action=getSigninToken{duration}&Session={}",
            encode(&session)
        ));
        let unreachable = |detail: String| ConsoleError::Unreachable {
            endpoint: endpoint.clone(),
            detail,
        };
        let request = Request::builder()
            .method(Method::GET)
            .uri(url.as_str())
            .body(Empty::<Bytes>::new())
            .map_err(|e| unreachable(e.to_string()))?;
        let response = tokio::time::timeout(
            Duration::from_secs(10),
            self.client(&endpoint)?.request(request),
        )
        .await
        .map_err(|_| unreachable("no answer within 10 s".into()))?
        .map_err(|e| unreachable(e.to_string()))?;
        let status = response.status();
        let body = tokio::time::timeout(Duration::from_secs(10), response.into_body().collect())
            .await
            .map_err(|_| unreachable("the answer did not finish within 10 s".into()))?
            .map_err(|e| unreachable(e.to_string()))?
            .to_bytes();
        if !status.is_success() {
            return Err(ConsoleError::Refused {
                status: status.as_u16(),
                detail: String::from_utf8_lossy(&body).chars().take(200).collect(),
            });
        }
        let token = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["SigninToken"].as_str().map(SecretString::from))
            .ok_or(ConsoleError::Refused {
                status: status.as_u16(),
                detail: "the answer holds no SigninToken".into(),
            })?;
        let login = SecretString::from(format!(
            "{endpoint}?Action=login&Issuer=credagent&Destination={}&SigninToken={}",
            encode(destination),
            encode(token.expose_secret())
        ));
        let mut id = [0u8; 16];
        getrandom::fill(&mut id).map_err(|e| unreachable(e.to_string()))?;
        let id = hex::encode(id);
        let expires = now + LINK_TTL;
        let mut links = self.links.locked();
        links.retain(|_, (_, exp)| *exp > now);
        links.insert(id.clone(), (login, expires));
        Ok((format!("{}{CONSOLE_PATH}{id}", self.base), expires))
    }
}

fn page(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(text.to_owned())));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

#[async_trait::async_trait]
impl BrowserPage for Consoles {
    /// `GET /console/<id>`: redirects once to the console's login URL, then the link is gone.
    /// Only a navigation to this agent's own address is taken (no `Origin`: not a page's
    /// request).
    async fn handle(
        &self,
        req: Request<hyper::body::Incoming>,
        _origin: Origin,
        now: SystemTime,
    ) -> Response<Full<Bytes>> {
        let ours = self.base.trim_start_matches("http://");
        let local = ours.replacen("127.0.0.1", "localhost", 1);
        if req.method() != Method::GET
            || !crate::http::pages::host_is(req.headers(), &[ours, &local])
        {
            return page(StatusCode::NOT_FOUND, "no such page");
        }
        if req.headers().contains_key(hyper::header::ORIGIN) {
            return page(
                StatusCode::FORBIDDEN,
                "only a browser navigation may use this link",
            );
        }
        let id = req.uri().path().trim_start_matches(CONSOLE_PATH);
        let link = self.links.locked().remove(id);
        match link {
            Some((url, expires)) if expires > now => {
                let mut resp = page(StatusCode::FOUND, "");
                match HeaderValue::from_str(url.expose_secret()) {
                    Ok(v) => {
                        resp.headers_mut().insert(LOCATION, v);
                        resp.headers_mut()
                            .insert("referrer-policy", HeaderValue::from_static("no-referrer"));
                        resp
                    }
                    Err(_) => page(StatusCode::INTERNAL_SERVER_ERROR, "bad login URL"),
                }
            }
            _ => page(
                StatusCode::GONE,
                "this console link was used already or expired: run `credctl console ROLE` again",
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_sessions_respect_aws_limits() {
        assert_eq!(
            session_duration(Duration::from_secs(7200), false),
            Some(7200)
        );
        // Credentials of a role assumed with temporary credentials: no SessionDuration at all.
        assert_eq!(session_duration(Duration::from_secs(7200), true), None);
        assert_eq!(session_duration(Duration::from_secs(60), false), Some(900));
        assert_eq!(
            session_duration(Duration::from_secs(99_999), false),
            Some(43_200)
        );
    }

    #[test]
    fn destinations_are_urls_services_or_home() {
        assert_eq!(
            destination(None, Some("eu-west-1")).unwrap(),
            "https://eu-west-1.console.aws.amazon.com/console/home?region=eu-west-1"
        );
        assert_eq!(
            destination(Some("s3"), None).unwrap(),
            "https://console.aws.amazon.com/s3/home"
        );
        assert_eq!(
            destination(Some("https://s3.console.aws.amazon.com/s3/buckets"), None).unwrap(),
            "https://s3.console.aws.amazon.com/s3/buckets"
        );
        // A sign-in link hands the session to whatever it lands on: console pages only.
        for bad in [
            "https://x.example/y",
            "https://console.aws.amazon.com.evil.example/",
            "https://evilconsole.aws.amazon.com/",
            "https://console.aws.amazon.com@evil.example/",
            "https://console.aws.amazon.com:8443/",
            "javascript:alert(1)",
            "http://console.aws.amazon.com/",
        ] {
            assert!(destination(Some(bad), None).is_err(), "{bad}");
        }
        for bad in ["eu-west-1;rm", "EU-WEST-1", "", "eu west"] {
            let err = destination(None, Some(bad)).unwrap_err();
            assert!(matches!(err, ConsoleError::BadRegion(_)), "{bad}");
        }
    }

    #[test]
    fn hosts_follow_the_partition_of_the_region() {
        // aws-vault cli/login.go generateLoginURL: cn- and us-gov- regions.
        assert_eq!(
            destination(None, Some("cn-north-1")).unwrap(),
            "https://cn-north-1.console.amazonaws.cn/console/home?region=cn-north-1"
        );
        assert_eq!(
            destination(Some("ec2"), Some("us-gov-west-1")).unwrap(),
            "https://us-gov-west-1.console.amazonaws-us-gov.com/ec2/home?region=us-gov-west-1"
        );
        assert!(
            destination(
                Some("https://eu-west-1.console.aws.amazon.com/"),
                Some("cn-north-1")
            )
            .is_err(),
            "a commercial page is no destination for a China session"
        );
        let addr = "127.0.0.1:1".parse().unwrap();
        let c = Consoles::new(None, addr);
        assert_eq!(c.endpoint_for(None), FEDERATION_ENDPOINT);
        assert_eq!(c.endpoint_for(Some("eu-west-1")), FEDERATION_ENDPOINT);
        assert_eq!(
            c.endpoint_for(Some("cn-northwest-1")),
            "https://signin.amazonaws.cn/federation"
        );
        assert_eq!(
            c.endpoint_for(Some("us-gov-east-1")),
            "https://signin.amazonaws-us-gov.com/federation"
        );
        // The configured endpoint wins (tests, proxies the person confirmed).
        let c = Consoles::new(Some("http://127.0.0.1:9/federation"), addr);
        assert_eq!(
            c.endpoint_for(Some("cn-north-1")),
            "http://127.0.0.1:9/federation"
        );
    }
}

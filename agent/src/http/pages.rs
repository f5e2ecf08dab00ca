//! The browser pages the loopback endpoint serves besides credentials: the approval page
//! (`/approve/…`), the IAM Identity Center sign-in callback (`/oauth/callback`) and the one-time
//! console links (`/console/…`). Their paths and the trait each one implements live here, below
//! both the endpoint that routes to them and the modules that implement them, so neither
//! imports the other.

use std::time::SystemTime;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};

use crate::audit::Origin;

/// Where the approval page lives (`/approve/ID`, `/approve/app.js`).
pub const APPROVE_PREFIX: &str = "/approve/";
/// Where the browser comes back after an IAM Identity Center sign-in.
pub const CALLBACK_PATH: &str = "/oauth/callback";
/// Where a one-time console link points (`/console/ID`).
pub const CONSOLE_PATH: &str = "/console/";

/// Whether the request's `Host` is one of `names` (`host:port`), compared as DNS compares names:
/// without regard to case. The one `Host` check of every page: a name a page was not served
/// under (a DNS-rebinding name, say) gets nothing.
pub fn host_is(headers: &hyper::HeaderMap, names: &[&str]) -> bool {
    let host = headers
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    names.iter().any(|n| n.eq_ignore_ascii_case(host))
}

/// A browser page: it reads the request body and does its own `Host` and origin checks, so
/// the endpoint hands it the whole request.
#[async_trait::async_trait]
pub trait BrowserPage: Send + Sync {
    /// Answers a page request from a connection whose peer is `origin`.
    async fn handle(
        &self,
        req: Request<hyper::body::Incoming>,
        origin: Origin,
        now: SystemTime,
    ) -> Response<Full<Bytes>>;
}

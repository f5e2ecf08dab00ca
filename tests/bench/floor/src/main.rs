//! The floor for credagent's benchmark: a minimal hyper 1 server on 127.0.0.1 that answers every
//! request, whatever its method, path or headers, with the same ~400-byte JSON body (the shape of
//! an ECS credentials answer). Same runtime shape as the agent: tokio multi-thread, 2 workers,
//! one task per connection, TCP_NODELAY, HTTP/1.1 keep-alive.
//!
//! usage: credagent-bench-floor [ADDR]   (default 127.0.0.1:0; prints `listening on ADDR`)

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// 400 bytes, shaped like the agent's ECS body.
const BODY: &str = concat!(
    r#"{"AccessKeyId":"ASIAFLOORFLOORFLOOR0","#,
    r#""SecretAccessKey":"floorfloorfloorfloorfloorfloorfloorfloo","#,
    r#""Token":"FwoGZXIvYXdzEFloorFloorFloorFloorFloorFloorFloorFloorFloorFloorFloorFloorFloor"#,
    r#"FloorFloorFloorFloorFloorFloorFloorFloorFloorFloorFloorFloorFloorFloorFloorFloorFloorFlo"#,
    r#"orFloorFloorFloorFloorFloorFloorFloorFloorFloorFlo"#,
    r#"FloorFloorFl","Expiration":"2030-01-01T00:00:00Z","AccountId":"123456789012"}"#
);

fn main() -> std::io::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into())
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    if !addr.ip().is_loopback() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the floor listens on loopback only",
        ));
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(serve(addr))
}

async fn serve(addr: SocketAddr) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    let mut out = std::io::stdout();
    writeln!(out, "listening on {}", listener.local_addr()?)?;
    out.flush()?;
    let body = Bytes::from_static(BODY.as_bytes());
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(v) => v,
            Err(_) => continue,
        };
        let _ = stream.set_nodelay(true);
        let body = body.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |_req: Request<Incoming>| {
                let mut resp = Response::new(Full::new(body.clone()));
                resp.headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                async move { Ok::<_, Infallible>(resp) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn body_is_about_400_bytes_of_json() {
        assert!((390..=410).contains(&super::BODY.len()), "{}", super::BODY.len());
        assert!(super::BODY.starts_with('{') && super::BODY.ends_with('}'));
    }
}

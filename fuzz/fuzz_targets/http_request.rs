//! The credential endpoint on arbitrary bytes from a client: hyper's HTTP/1 parser followed by
//! the agent's routing and checks (Host, browser headers, tokens, IMDS), with every response
//! well-formed and no panic.
#![no_main]

use std::sync::Arc;
use std::time::SystemTime;

use credagent::audit::{Audit, Origin};
use credagent::http::endpoint::{CredentialSource, Endpoint, Lookup};
use credagent::http::ConnService;
use hyper_util::rt::TokioIo;
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Nothing;

impl CredentialSource for Nothing {
    fn lookup(&self, _role: &str, _now: SystemTime) -> Lookup {
        Lookup::NotOpen
    }
    fn request_approval(&self, _role: &str, _origin: Origin, _now: SystemTime) {}
}

fuzz_target!(|data: &[u8]| {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let ep = Arc::new(Endpoint::for_fuzzing(
            "127.0.0.1:4321".parse().unwrap(),
            Arc::new(Nothing),
            Audit::discard(),
        ));
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let origin = Origin::Tcp {
            uid: 1000,
            inode: 1,
        };
        // The agent's own per-connection service, memo included.
        let service = ConnService::new(ep, origin);
        let conn = hyper::server::conn::http1::Builder::new()
            .max_buf_size(16 * 1024)
            .serve_connection(TokioIo::new(server), service);
        let _ = client.write_all(data).await;
        let _ = client.shutdown().await;
        // Read the answers while the connection runs: pipelined requests can answer more than
        // the duplex buffer holds, and a client that never reads would stall the writer.
        let mut answers = Vec::new();
        let _ = tokio::join!(conn, client.read_to_end(&mut answers));
    });
});

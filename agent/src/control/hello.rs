//! The handshake: the first request of every connection must be a `Hello` of our protocol
//! version.

use credagent_proto::{ErrorCode, Request, Response, PROTOCOL_VERSION};

/// Answers the first request of a connection, which must be a matching `Hello`.
pub fn hello(req: &Request) -> Response {
    match req {
        Request::Hello {
            protocol_version,
            client_version,
        } if *protocol_version == PROTOCOL_VERSION => {
            tracing::debug!(%client_version, "control client connected");
            Response::Hello {
                protocol_version: PROTOCOL_VERSION,
                agent_version: env!("CARGO_PKG_VERSION").into(),
                pid: std::process::id(),
            }
        }
        Request::Hello {
            protocol_version,
            client_version,
        } => Response::error(
            ErrorCode::VersionMismatch,
            format!(
                "credctl {client_version} speaks control protocol {protocol_version}, but this \
                 agent ({}) speaks {PROTOCOL_VERSION}: restart the agent with `credctl stop` then \
                 `eval \"$(credctl start)\"`",
                env!("CARGO_PKG_VERSION")
            ),
        ),
        _ => Response::error(ErrorCode::HelloRequired, "the first request must be hello"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_checks_the_version() {
        let ok = hello(&Request::Hello {
            protocol_version: PROTOCOL_VERSION,
            client_version: "t".into(),
        });
        assert!(matches!(
            ok,
            Response::Hello {
                protocol_version: PROTOCOL_VERSION,
                ..
            }
        ));
        let bad = hello(&Request::Hello {
            protocol_version: PROTOCOL_VERSION + 1,
            client_version: "t".into(),
        });
        match bad {
            Response::Error {
                code: ErrorCode::VersionMismatch,
                message,
            } => {
                assert!(message.contains("restart the agent"), "{message}")
            }
            other => panic!("expected version mismatch, got {other:?}"),
        }
        assert!(matches!(
            hello(&Request::Status),
            Response::Error {
                code: ErrorCode::HelloRequired,
                ..
            }
        ));
    }
}

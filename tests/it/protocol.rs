//! The control protocol against a live agent: handshake, version mismatch, unknown requests and
//! hostile frames (which must never kill the agent).

use std::os::unix::net::UnixStream;
use std::time::Duration;

use credagent_proto::{read_frame, write_frame, ErrorCode, Request, Response, MAX_FRAME_LEN};

use crate::util::{hello, raw_exchange, TestEnv};

fn error_of(bytes: &[u8]) -> (ErrorCode, String) {
    let resp: Response = read_frame(&mut &bytes[..]).expect("an error frame");
    match resp {
        Response::Error { code, message } => (code, message),
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn version_mismatch_is_refused_with_advice() {
    let env = TestEnv::new();
    let _agent = env.agent(&[]);
    let mut s = UnixStream::connect(&env.sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write_frame(
        &mut s,
        &Request::Hello {
            protocol_version: 999,
            client_version: "9.9".into(),
        },
    )
    .unwrap();
    let resp: Response = read_frame(&mut s).unwrap();
    match resp {
        Response::Error {
            code: ErrorCode::VersionMismatch,
            message,
        } => {
            assert!(message.contains("restart the agent"), "{message}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn hello_is_required_first() {
    let env = TestEnv::new();
    let _agent = env.agent(&[]);
    let mut s = UnixStream::connect(&env.sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write_frame(&mut s, &Request::Status).unwrap();
    let resp: Response = read_frame(&mut s).unwrap();
    assert!(matches!(
        resp,
        Response::Error {
            code: ErrorCode::HelloRequired,
            ..
        }
    ));
}

#[test]
fn unknown_request_gets_an_error_and_the_connection_stays_usable() {
    let env = TestEnv::new();
    let _agent = env.agent(&[]);
    let (mut s, _) = hello(&env.sock).unwrap();
    write_frame(&mut s, &serde_json::json!({"type": "teleport"})).unwrap();
    let resp: Response = read_frame(&mut s).unwrap();
    assert!(
        matches!(
            resp,
            Response::Error {
                code: ErrorCode::UnknownRequest,
                ..
            }
        ),
        "{resp:?}"
    );
    write_frame(&mut s, &Request::Status).unwrap();
    assert!(matches!(
        read_frame::<_, Response>(&mut s).unwrap(),
        Response::Status(_)
    ));
}

#[test]
fn hostile_frames_do_not_kill_the_agent() {
    let env = TestEnv::new();
    let mut agent = env.agent(&[]);

    // Oversized: answered with frame_too_large, then closed.
    let (mut s, _) = hello(&env.sock).unwrap();
    let mut big = ((MAX_FRAME_LEN as u32) + 1).to_be_bytes().to_vec();
    big.extend(std::iter::repeat_n(b'x', 1024));
    let (code, _) = error_of(&raw_exchange(&mut s, &big));
    assert_eq!(code, ErrorCode::FrameTooLarge);

    // A 4 GiB length must not be allocated.
    let (mut s, _) = hello(&env.sock).unwrap();
    let (code, _) = error_of(&raw_exchange(&mut s, &u32::MAX.to_be_bytes()));
    assert_eq!(code, ErrorCode::FrameTooLarge);

    // Garbage JSON: bad_request, and the connection still works.
    let (mut s, _) = hello(&env.sock).unwrap();
    let mut garbage = 9u32.to_be_bytes().to_vec();
    garbage.extend_from_slice(b"\xff\x00{]]garb");
    let (code, _) = error_of(&raw_exchange(&mut s, &garbage));
    assert_eq!(code, ErrorCode::BadRequest);
    write_frame(&mut s, &Request::Status).unwrap();
    assert!(matches!(
        read_frame::<_, Response>(&mut s).unwrap(),
        Response::Status(_)
    ));

    // Garbage before hello, a truncated frame, and random bytes on fresh connections.
    for bytes in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        &[0, 0, 0, 50, b'{'],
        &[0xde, 0xad],
    ] {
        let mut s = UnixStream::connect(&env.sock).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let _ = raw_exchange(&mut s, bytes);
    }

    assert!(agent.alive(), "agent died:\n{}", agent.log_text());
    hello(&env.sock).expect("agent still answers");
}

//! Length-prefixed JSON framing: a `u32` big-endian body length, then that many bytes of JSON.
//!
//! The length is checked against [`MAX_FRAME_LEN`] before any body byte is read or allocated, so a
//! hostile peer cannot make either side allocate more than 64 KiB per frame.
//!
//! A message larger than one frame (the agent's answers about a large organisation: a thousand
//! roles, hundreds of sessions) is split into frames of at most [`MAX_FRAME_LEN`] bytes; every
//! frame but the last has the [`MORE`] bit set in its header. Only answers are ever split: the
//! agent reads a request as one frame, so a header with [`MORE`] from a client is refused like any
//! length over 64 KiB, and that cap on what a client may send stays. `credctl` reads an answer of
//! up to [`MAX_MESSAGE_LEN`] bytes over all its frames.

use std::io::{self, Read, Write};

use serde::{de::DeserializeOwned, Serialize};

/// Largest body a frame may carry, in bytes.
pub const MAX_FRAME_LEN: usize = 64 * 1024;
/// Length of the frame header.
pub const HEADER_LEN: usize = 4;
/// Set in a frame's header when more frames of the same message follow.
pub const MORE: u32 = 1 << 31;
/// Largest message over all its frames: the agent's largest answer, as `credctl` reads it.
pub const MAX_MESSAGE_LEN: usize = 64 * 1024 * 1024;

/// Why a frame could not be read or written. Transport failures and protocol violations are
/// distinct variants so callers can answer the latter and simply drop the former.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer closed the connection cleanly between frames.
    #[error("connection closed")]
    Closed,
    /// The peer closed the connection in the middle of a frame.
    #[error("connection closed in the middle of a frame")]
    Truncated,
    /// The header announced a body over [`MAX_FRAME_LEN`].
    #[error("frame of {0} bytes exceeds the {MAX_FRAME_LEN}-byte limit")]
    TooLarge(usize),
    /// The body is not valid JSON for the expected message type.
    #[error("malformed message: {0}")]
    Malformed(#[source] serde_json::Error),
    /// The underlying transport failed.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
}

impl FrameError {
    /// Whether the connection can carry further frames after this error. Only a malformed body
    /// leaves the stream at a frame boundary.
    pub fn is_recoverable(&self) -> bool {
        matches!(self, FrameError::Malformed(_))
    }
}

/// Serializes `msg` into one complete frame (header and body).
pub fn encode_frame<T: Serialize>(msg: &T) -> Result<Vec<u8>, FrameError> {
    let mut buf = vec![0u8; HEADER_LEN];
    serde_json::to_writer(&mut buf, msg).map_err(FrameError::Malformed)?;
    let body_len = buf.len() - HEADER_LEN;
    if body_len > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge(body_len));
    }
    // Cannot truncate: body_len <= MAX_FRAME_LEN, which fits in u32.
    let len = u32::try_from(body_len).map_err(|_| FrameError::TooLarge(body_len))?;
    buf[..HEADER_LEN].copy_from_slice(&len.to_be_bytes());
    Ok(buf)
}

/// Serializes `msg` into as many frames as it takes (see the module): one when it fits.
pub fn encode_message<T: Serialize>(msg: &T) -> Result<Vec<u8>, FrameError> {
    let body = zeroize::Zeroizing::new(serde_json::to_vec(msg).map_err(FrameError::Malformed)?);
    if body.len() > MAX_MESSAGE_LEN {
        return Err(FrameError::TooLarge(body.len()));
    }
    let chunks = body.len().div_ceil(MAX_FRAME_LEN).max(1);
    let mut out = Vec::with_capacity(body.len() + chunks * HEADER_LEN);
    let mut rest: &[u8] = &body;
    loop {
        let (chunk, tail) = rest.split_at(rest.len().min(MAX_FRAME_LEN));
        // Cannot truncate: chunk.len() <= MAX_FRAME_LEN.
        let mut header = chunk.len() as u32;
        if !tail.is_empty() {
            header |= MORE;
        }
        out.extend_from_slice(&header.to_be_bytes());
        out.extend_from_slice(chunk);
        if tail.is_empty() {
            return Ok(out);
        }
        rest = tail;
    }
}

/// Checks a frame header of a message that may span frames: the body length it announces, and
/// whether more frames follow.
pub fn frame_part(header: [u8; HEADER_LEN]) -> Result<(usize, bool), FrameError> {
    let raw = u32::from_be_bytes(header);
    let len = (raw & !MORE) as usize;
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge(len));
    }
    Ok((len, raw & MORE != 0))
}

/// Checks a frame header and returns the body length it announces.
pub fn frame_len(header: [u8; HEADER_LEN]) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(header) as usize;
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge(len));
    }
    Ok(len)
}

/// Decodes a frame body.
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    serde_json::from_slice(body).map_err(FrameError::Malformed)
}

/// Writes one frame and flushes.
pub fn write_frame<W: Write, T: Serialize>(w: &mut W, msg: &T) -> Result<(), FrameError> {
    let frame = encode_frame(msg)?;
    w.write_all(&frame)?;
    w.flush()?;
    Ok(())
}

/// Reads one message, in as many frames as it was split into, of at most `max` bytes in all.
/// The body is zeroed once decoded (answers carry credentials and tokens).
pub fn read_message<R: Read, T: DeserializeOwned>(r: &mut R, max: usize) -> Result<T, FrameError> {
    let mut body = zeroize::Zeroizing::new(Vec::new());
    let mut first = true;
    loop {
        let mut header = [0u8; HEADER_LEN];
        let got = read_full(r, &mut header)?;
        if got == 0 && first {
            return Err(FrameError::Closed);
        }
        if got < HEADER_LEN {
            return Err(FrameError::Truncated);
        }
        first = false;
        let (len, more) = frame_part(header)?;
        let start = body.len();
        if start + len > max {
            return Err(FrameError::TooLarge(start + len));
        }
        // Grow by the announced part only (at most 64 KiB a frame). A reallocation by `Vec`
        // would leave the old buffer unzeroed: move into a larger zeroing buffer instead, and
        // the old one is wiped as it drops.
        if start + len > body.capacity() {
            let mut bigger = zeroize::Zeroizing::new(Vec::with_capacity(
                (body.capacity() * 2).max(start + len).min(max),
            ));
            bigger.extend_from_slice(&body);
            body = bigger;
        }
        body.resize(start + len, 0);
        if read_full(r, &mut body[start..])? < len {
            return Err(FrameError::Truncated);
        }
        if !more {
            return decode_body(&body);
        }
    }
}

/// Reads one frame from a blocking reader.
pub fn read_frame<R: Read, T: DeserializeOwned>(r: &mut R) -> Result<T, FrameError> {
    let mut header = [0u8; HEADER_LEN];
    let got = read_full(r, &mut header)?;
    if got == 0 {
        return Err(FrameError::Closed);
    }
    if got < HEADER_LEN {
        return Err(FrameError::Truncated);
    }
    let len = frame_len(header)?;
    let mut body = vec![0u8; len];
    if read_full(r, &mut body)? < len {
        return Err(FrameError::Truncated);
    }
    decode_body(&body)
}

/// Reads until `buf` is full or the stream ends; returns how many bytes were read.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ErrorCode, Request, Response, StatusInfo, PROTOCOL_VERSION};
    use std::io::Cursor;

    fn roundtrip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(msg: T) {
        let mut buf = Vec::new();
        write_frame(&mut buf, &msg).unwrap();
        let back: T = read_frame(&mut Cursor::new(buf)).unwrap();
        assert_eq!(back, msg);
    }

    #[test]
    fn a_large_answer_spans_frames_of_at_most_64_kib_and_reads_back_whole() {
        let names: Vec<String> = (0..20_000).map(|i| format!("role-{i:05}")).collect();
        let bytes = encode_message(&names).unwrap();
        // Walk the frames: each at most MAX_FRAME_LEN, MORE on all but the last.
        let mut at = 0;
        let mut frames = 0;
        loop {
            let header: [u8; HEADER_LEN] = bytes[at..at + HEADER_LEN].try_into().unwrap();
            let (len, more) = frame_part(header).unwrap();
            assert!(len <= MAX_FRAME_LEN);
            frames += 1;
            at += HEADER_LEN + len;
            if !more {
                break;
            }
            assert_eq!(len, MAX_FRAME_LEN, "only the last frame is short");
        }
        assert_eq!(at, bytes.len());
        assert!(frames > 3, "{frames} frames");
        let back: Vec<String> = read_message(&mut Cursor::new(&bytes), MAX_MESSAGE_LEN).unwrap();
        assert_eq!(back, names);
        // Small messages are one frame, byte for byte what encode_frame writes.
        assert_eq!(
            encode_message(&Request::Status).unwrap(),
            encode_frame(&Request::Status).unwrap()
        );
        // A reader's cap holds over all frames, and a cut stream is truncated, not short data.
        let err = read_message::<_, Vec<String>>(&mut Cursor::new(&bytes), 100_000).unwrap_err();
        assert!(matches!(err, FrameError::TooLarge(_)), "{err}");
        let cut = &bytes[..bytes.len() - 10];
        let err = read_message::<_, Vec<String>>(&mut Cursor::new(cut), MAX_MESSAGE_LEN);
        assert!(matches!(err, Err(FrameError::Truncated)));
        // What reads requests (one frame only) refuses a continued frame as too large.
        let header: [u8; HEADER_LEN] = bytes[..HEADER_LEN].try_into().unwrap();
        assert!(matches!(frame_len(header), Err(FrameError::TooLarge(_))));
    }

    #[test]
    fn round_trips_every_message() {
        roundtrip(Request::Hello {
            protocol_version: PROTOCOL_VERSION,
            client_version: "1".into(),
        });
        roundtrip(Request::Status);
        roundtrip(Request::Stop);
        roundtrip(Response::Hello {
            protocol_version: PROTOCOL_VERSION,
            agent_version: "0.1.0".into(),
            pid: 42,
        });
        roundtrip(Response::Stopping);
        roundtrip(Response::error(ErrorCode::BadRequest, "nope"));
        roundtrip(Response::Status(Box::new(StatusInfo {
            pid: 1,
            agent_version: "v".into(),
            protocol_version: PROTOCOL_VERSION,
            started_at: 10,
            uptime_secs: 5,
            socket: "/run/x".into(),
            http_addr: "127.0.0.1:1".into(),
            config_path: None,
            aws_config: Some("/home/u/.aws/config".into()),
            overrides: vec![
                "STS endpoint http://127.0.0.1:5000 (sts_endpoint in config.toml)".into(),
            ],
            keys: 1,
            sessions: vec![],
            pending: vec![],
            imds_role: None,
            vault: Some("0123456789abcdef".into()),
            sealing: "required".into(),
            unsealed_keys: vec!["old".into()],
            config_changed: true,
            config_needs_restart: vec!["listen: 127.0.0.1:0 → 127.0.0.1:9911".into()],
            tokens_refused_elsewhere: 3,
            binding_lookups: 9,
            binding_hint_hits: 8,
            binding_micros: 90,
            user_verification: "required".into(),
            touch_only_keys: vec!["older".into()],
            lock_on: vec!["suspend (logind PrepareForSleep): watched".into()],
            settings: "confirmed by a touch since the agent started".into(),
            approvals: vec![crate::message::ApprovalInProgress {
                what: "role prod".into(),
                requester: "credctl (pid 7)".into(),
                started_at: 9,
            }],
        })));
        roundtrip(Request::Open {
            role: "prod".into(),
            mfa_code: None,
            accept_change: false,
            renew: true,
        });
        roundtrip(Request::Approve {
            ceremony_id: "c".into(),
            credential: serde_json::json!({"id": "x", "response": {}}),
        });
        roundtrip(Response::Challenge(Box::new(crate::Challenge {
            ceremony_id: "c".into(),
            origin: "http://localhost:1".into(),
            role: Some("prod".into()),
            purpose: None,
            session_secs: Some(3600),
            target: Some("source base → arn:aws:iam::1:role/prod".into()),
            approve_url: "http://localhost:1/approve/c".into(),
            options: serde_json::json!({"publicKey": {}}),
            step: Some(crate::ChallengeStep::OpenRole),
        })));
        // A step a newer agent names is `Other` here, not an error; an older agent names none.
        let newer: Response = serde_json::from_value(serde_json::json!({
            "type": "challenge", "ceremony_id": "c", "origin": "o", "role": null,
            "session_secs": null, "approve_url": "u", "options": {}, "step": "some_future_step"
        }))
        .unwrap();
        assert!(matches!(
            newer,
            Response::Challenge(c) if c.step == Some(crate::ChallengeStep::Other)
        ));
        roundtrip(Response::Opened {
            role: "prod".into(),
            expires_at: 9,
            region: Some("eu-west-1".into()),
            account_id: None,
        });
    }

    #[test]
    fn several_frames_in_one_stream() {
        let mut buf = Vec::new();
        write_frame(&mut buf, &Request::Status).unwrap();
        write_frame(&mut buf, &Request::Stop).unwrap();
        let mut cur = Cursor::new(buf);
        assert_eq!(read_frame::<_, Request>(&mut cur).unwrap(), Request::Status);
        assert_eq!(read_frame::<_, Request>(&mut cur).unwrap(), Request::Stop);
        assert!(matches!(
            read_frame::<_, Request>(&mut cur),
            Err(FrameError::Closed)
        ));
    }

    #[test]
    fn oversized_frame_is_refused_before_reading_the_body() {
        let mut buf = ((MAX_FRAME_LEN + 1) as u32).to_be_bytes().to_vec();
        buf.extend_from_slice(b"{}");
        let err = read_frame::<_, Request>(&mut Cursor::new(buf)).unwrap_err();
        assert!(matches!(err, FrameError::TooLarge(n) if n == MAX_FRAME_LEN + 1));
        assert!(!err.is_recoverable());
        let huge = u32::MAX.to_be_bytes();
        assert!(matches!(frame_len(huge), Err(FrameError::TooLarge(_))));
        assert_eq!(
            frame_len((MAX_FRAME_LEN as u32).to_be_bytes()).unwrap(),
            MAX_FRAME_LEN
        );
    }

    #[test]
    fn encoding_an_oversized_message_fails() {
        let big = Response::error(ErrorCode::Internal, "x".repeat(MAX_FRAME_LEN));
        assert!(matches!(encode_frame(&big), Err(FrameError::TooLarge(_))));
    }

    #[test]
    fn truncated_header_and_body_are_reported() {
        let err = read_frame::<_, Request>(&mut Cursor::new(vec![0u8, 0])).unwrap_err();
        assert!(matches!(err, FrameError::Truncated));
        let mut buf = 10u32.to_be_bytes().to_vec();
        buf.extend_from_slice(b"{\"ty");
        let err = read_frame::<_, Request>(&mut Cursor::new(buf)).unwrap_err();
        assert!(matches!(err, FrameError::Truncated));
    }

    #[test]
    fn garbage_body_is_malformed_and_recoverable() {
        for garbage in [
            &b"\xff\xfe\x00garbage"[..],
            b"",
            b"[]",
            b"{\"no_type\":1}",
            b"null",
        ] {
            let mut buf = (garbage.len() as u32).to_be_bytes().to_vec();
            buf.extend_from_slice(garbage);
            let err = read_frame::<_, Request>(&mut Cursor::new(buf)).unwrap_err();
            assert!(
                matches!(err, FrameError::Malformed(_)),
                "{garbage:?}: {err}"
            );
            assert!(err.is_recoverable());
        }
    }

    #[test]
    fn unknown_request_type_is_not_an_error() {
        let mut buf = Vec::new();
        write_frame(
            &mut buf,
            &serde_json::json!({"type": "future_thing", "x": 1}),
        )
        .unwrap();
        let req: Request = read_frame(&mut Cursor::new(buf)).unwrap();
        assert_eq!(req, Request::Unknown);
    }

    #[test]
    fn random_bytes_never_panic() {
        // A cheap deterministic fuzz: every prefix of a pseudo-random stream must decode to a
        // result, never a panic.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut bytes = Vec::with_capacity(4096);
        for _ in 0..4096 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            bytes.push((state >> 24) as u8);
        }
        for start in 0..256 {
            let mut cur = Cursor::new(&bytes[start..]);
            let _ = read_frame::<_, Request>(&mut cur);
        }
    }
}

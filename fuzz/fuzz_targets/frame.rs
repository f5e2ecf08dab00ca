//! The control-protocol frame decoder on arbitrary bytes: every input must decode to a request,
//! a clean error, or a request for more bytes, never a panic or a large allocation.
#![no_main]

use credagent_proto::{read_frame, Request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut cur = std::io::Cursor::new(data);
    // Read frames until the stream ends or breaks, as the agent does on one connection.
    for _ in 0..64 {
        match read_frame::<_, Request>(&mut cur) {
            Ok(_) => {}
            Err(e) if e.is_recoverable() => {}
            Err(_) => break,
        }
    }
});

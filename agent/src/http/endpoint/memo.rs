//! A keep-alive connection's memo of its last credential answer.
//!
//! An SDK that polls the endpoint over one connection sends the same request again and again.
//! After a `200` for a credential route, the connection keeps the header value that authorized
//! it (the ECS token or the IMDS session token, which this connection's client sent and which
//! sits in the connection's read buffer anyway; zeroed when the memo goes), the path, the shared
//! body and the audit event, stamped with the answer generation read *before* the answer was
//! worked out. A later request on the same connection with the same path and header (compared
//! in constant time) is answered from the memo, without the token table, the session cache or
//! their locks, as long as:
//!
//! - the agent's answer generation has not moved: any revocation, `credctl use`, lock, session
//!   change, refresh or IMDS role change bumps it (see [`crate::generation`]);
//! - its deadline has not passed: the earliest of the session's end, the moment the credentials
//!   fall under the serving margin, the end of the session's idle timeout counted from the
//!   answer, the IMDS token's expiry, and one second after it was made (so the session's idle
//!   clock still hears from a busy connection every second).
//!
//! Every request answered from the memo is audited exactly like the first. A memo that went
//! stale (after a lock, say) is dropped by the connection's next one-second tick, which lets go
//! of its credential body and zeroes its copy of the header.

use std::time::{Duration, SystemTime};

use bytes::Bytes;

use crate::procs::ProcessId;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::audit::{ConnAudit, Event};

/// How long a memo may be reused at most.
const MAX_AGE: Duration = Duration::from_secs(1);

/// One connection's memo (empty until its first credential answer).
#[derive(Default)]
pub struct Memo {
    entry: Option<Entry>,
    /// The process of a bound token's tree that holds this connection (holder, client and
    /// the client's descriptor): checked once, and a hint for the next connection when this
    /// one closes.
    bound: Option<(ProcessId, ProcessId, i32)>,
}

struct Entry {
    generation: u64,
    until: SystemTime,
    /// Housekeeping ticks seen since the answer: the connection's monotonic one-second tick
    /// drops the memo at the second one, so a wall clock stepped back cannot stretch it.
    ticks: u8,
    /// The header value that authorized the answer.
    key: Zeroizing<Box<[u8]>>,
    path: Box<str>,
    body: Bytes,
    event: Event,
}

impl Memo {
    /// Whether this connection was already found in `holder`'s tree, and the process found
    /// there still holds its socket `inode` (one `readlink`: a socket handed to a process
    /// outside the tree after its first request is caught at the next request the memo does
    /// not answer, within a second).
    pub(super) fn bound_to(&self, holder: ProcessId, inode: u32) -> bool {
        self.bound.is_some_and(|(h, client, fd)| {
            h == holder && crate::procs::still_holds(client, fd, inode)
        })
    }

    /// This connection is held by `client` (descriptor `fd`), in `holder`'s tree.
    pub(super) fn set_bound(&mut self, holder: ProcessId, client: ProcessId, fd: i32) {
        self.bound = Some((holder, client, fd));
    }

    /// Where this connection was found, for the hint its closing leaves.
    pub fn take_bound(&mut self) -> Option<(ProcessId, ProcessId, i32)> {
        self.bound.take()
    }
}

/// What a route offers to remember when it serves credentials.
pub(super) struct Offer<'a> {
    /// The answer generation read before the route looked anything up.
    pub generation: u64,
    /// The header value that authorized the request.
    pub key: &'a [u8],
    pub path: &'a str,
    /// The route's own limit (an IMDS token's expiry); the session's comes with the lookup.
    pub until: Option<SystemTime>,
}

/// Whether `a` and `b` are equal, in time that depends only on their lengths (which are public:
/// tokens have a fixed format). One pass without data-dependent branches, then one comparison
/// behind `subtle`'s optimization barrier.
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y));
    bool::from(diff.ct_eq(&0))
}

impl Memo {
    /// The remembered body for a request on `path` authorized by `key`, if it may be repeated at
    /// `now`. Records the audit event of the repeat. Forgets a memo that went stale.
    pub(super) fn recall(
        &mut self,
        path: &str,
        key: &[u8],
        now: SystemTime,
        generation: u64,
        audit: &ConnAudit,
    ) -> Option<Bytes> {
        let entry = self.entry.as_ref()?;
        if entry.generation != generation || now >= entry.until {
            self.entry = None;
            return None;
        }
        if *entry.path != *path || !same(&entry.key, key) {
            return None;
        }
        audit.record(now, &entry.event);
        Some(entry.body.clone())
    }

    /// Remembers a `200` answer that the session cache allows to be served until `until`.
    pub(super) fn remember(
        &mut self,
        offer: Offer<'_>,
        until: SystemTime,
        now: SystemTime,
        body: &Bytes,
        event: Event,
    ) {
        let mut until = until.min(now + MAX_AGE);
        if let Some(limit) = offer.until {
            until = until.min(limit);
        }
        self.entry = Some(Entry {
            generation: offer.generation,
            until,
            ticks: 0,
            key: Zeroizing::new(offer.key.into()),
            path: offer.path.into(),
            body: body.clone(),
            event,
        });
    }

    /// Drops a memo that may no longer be repeated, so that a connection gone quiet does not
    /// keep a superseded credential body alive (its buffer is zeroed when the last copy goes).
    /// Called by the connection's tick (monotonic, once a second): besides the generation and
    /// the deadline, a memo lives through at most two ticks, whatever the wall clock does.
    pub fn forget_stale(&mut self, now: SystemTime, generation: u64) {
        let stale = self.entry.as_mut().is_some_and(|e| {
            e.ticks = e.ticks.saturating_add(1);
            e.ticks >= 2 || e.generation != generation || now >= e.until
        });
        if stale {
            self.entry = None;
        }
    }

    /// Whether an answer is remembered (tests).
    #[cfg(test)]
    pub fn is_set(&self) -> bool {
        self.entry.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::same;

    #[test]
    fn same_compares_every_byte_and_the_length() {
        let token = b"cat1_0011223344556677_abcdef";
        assert!(same(token, token));
        for i in 0..token.len() {
            let mut other = *token;
            other[i] ^= 0x01;
            assert!(!same(token, &other), "byte {i}");
        }
        assert!(!same(token, &token[..token.len() - 1]));
        assert!(!same(b"", b"x"));
        assert!(same(b"", b""));
    }
}

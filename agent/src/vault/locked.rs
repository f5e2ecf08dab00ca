//! [`Locked`]: a secret byte buffer that is zeroized on drop and kept out of swap.

use zeroize::Zeroize;

/// Secret bytes on the heap, `mlock`ed for their lifetime (best effort: an `RLIMIT_MEMLOCK` too
/// small leaves them unlocked but still zeroized) and wiped before the memory is returned. The
/// agent is also non-dumpable (`harden`), so they do not reach a core file either.
pub struct Locked {
    bytes: Box<[u8]>,
    locked: bool,
}

impl std::fmt::Debug for Locked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Locked({} bytes)", self.bytes.len())
    }
}

impl Locked {
    /// Moves `bytes` into a locked buffer. When `bytes` has spare capacity its contents are
    /// copied to an exact allocation and the old one is wiped (whole capacity), so no copy is
    /// left behind by the move.
    pub fn take(mut bytes: Vec<u8>) -> Self {
        let bytes: Box<[u8]> = if bytes.capacity() == bytes.len() {
            bytes.into_boxed_slice()
        } else {
            let exact = Box::from(bytes.as_slice());
            bytes.zeroize();
            exact
        };
        let locked = !bytes.is_empty()
            // SAFETY: the range is the live allocation owned by `bytes`.
            && unsafe { libc::mlock(bytes.as_ptr().cast(), bytes.len()) } == 0;
        Self { bytes, locked }
    }

    /// Copies `bytes` into a new locked buffer; the caller wipes its own copy.
    pub fn copy_from(bytes: &[u8]) -> Self {
        Self::take(bytes.to_vec())
    }

    pub fn expose(&self) -> &[u8] {
        &self.bytes
    }

    /// Whether the kernel agreed to keep these pages out of swap.
    pub fn is_locked(&self) -> bool {
        self.locked
    }
}

impl Drop for Locked {
    fn drop(&mut self) {
        self.bytes.zeroize();
        // No munlock: locks are per page and not counted, and a small buffer shares its page
        // with other allocations (another `Locked` among them), which unlocking would expose
        // to swap again. The page stays locked and is reused by the allocator; the agent's
        // secrets are few and small.
    }
}

/// Locks the pages of `value` in RAM (best effort, never unlocked: see `Locked`'s `Drop`).
pub(crate) fn lock_in_ram<T>(value: &T) -> bool {
    let len = std::mem::size_of::<T>();
    // SAFETY: the range is the live object `value` refers to; mlock only pins its pages.
    len > 0 && unsafe { libc::mlock((value as *const T).cast(), len) } == 0
}

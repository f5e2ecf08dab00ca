//! The answer generation: one counter that moves whenever something changes that could change
//! what the credential endpoint answers to a request it answered before.
//!
//! A keep-alive connection remembers its last credential answer (see `http::endpoint::memo`) together
//! with the generation it read *before* working that answer out. It may repeat the answer only
//! while the generation is unchanged. So every such change bumps the generation *after* it is
//! made (a `Release` store, read with `Acquire`): a request that sees the new generation also
//! sees the change, and a request that read the old one has its memo invalidated by the bump.
//!
//! Every value an answer depends on is a [`Versioned`]: the token table, the role-session map, each
//! role's credential snapshot, the rendered-body cache, the role IMDS serves and the IMDS session
//! tokens. Writing one is the only way to change it, and the write guard bumps the generation,
//! so the rule cannot be forgotten by a new mutation. Time-based changes (a session ending,
//! credentials falling under the serving margin, an IMDS token expiring) are carried by each
//! memo's own deadline instead.
//!
//! One agent has one counter, shared by all of those values.

use crate::util::RwLockExt;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// A handle on one agent's answer generation.
#[derive(Clone, Default)]
pub struct Generation(Arc<AtomicU64>);

impl Generation {
    /// The current generation. Read it before computing an answer that will be remembered.
    pub fn current(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    /// Invalidates every remembered answer. Call after the change is visible to readers.
    pub fn bump(&self) {
        self.0.fetch_add(1, Ordering::AcqRel);
    }
}

/// A value that endpoint answers depend on. The only write access is [`Versioned::write`],
/// whose guard bumps the generation when it is dropped, so no new mutation can forget to
/// invalidate the memos: there is no other way to change the value.
pub struct Versioned<T> {
    value: RwLock<T>,
    generation: Generation,
}

impl<T> Versioned<T> {
    /// `value`, versioned by `generation`.
    pub fn new(value: T, generation: Generation) -> Versioned<T> {
        Versioned {
            value: RwLock::new(value),
            generation,
        }
    }

    /// Shared access; changes nothing.
    pub fn read(&self) -> RwLockReadGuard<'_, T> {
        self.value.read_locked()
    }

    /// Exclusive access for a change; the generation moves when the guard is dropped.
    pub fn write(&self) -> Bumping<'_, RwLockWriteGuard<'_, T>> {
        Bumping {
            guard: self.value.write_locked(),
            generation: &self.generation,
        }
    }

    /// The generation this value bumps.
    pub fn generation(&self) -> &Generation {
        &self.generation
    }
}

impl<T: Default> Default for Versioned<T> {
    fn default() -> Self {
        Versioned::new(T::default(), Generation::default())
    }
}

/// A write guard that bumps the generation once the holder is done writing.
pub struct Bumping<'a, G> {
    guard: G,
    generation: &'a Generation,
}

impl<G> Drop for Bumping<'_, G> {
    fn drop(&mut self) {
        // The writes went through the guard, so they precede this bump; readers that take
        // the lock afterwards see them anyway.
        self.generation.bump();
    }
}

impl<G: Deref> Deref for Bumping<'_, G> {
    type Target = G::Target;
    fn deref(&self) -> &Self::Target {
        &self.guard
    }
}

impl<G: DerefMut> DerefMut for Bumping<'_, G> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.guard
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_bumps_after_the_change() {
        let g = Generation::default();
        let cell = Versioned::new(1, g.clone());
        {
            let mut w = cell.write();
            *w = 2;
            assert_eq!(g.current(), 0, "not while the change is being made");
        }
        assert_eq!(g.current(), 1);
        assert_eq!(*cell.read(), 2);
        assert_eq!(g.current(), 1, "reading changes nothing");
        *cell.write() += 1;
        assert_eq!(g.current(), 2);
        assert_eq!(g.clone().current(), 2, "clones share the counter");
    }
}

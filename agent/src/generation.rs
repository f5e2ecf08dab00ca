//! The answer generation: one counter that moves whenever something changes that could change
//! what the credential endpoint answers to a request it answered before.
//!
//! A keep-alive connection remembers its last credential answer (see `endpoint::memo`) together
//! with the generation it read *before* working that answer out. It may repeat the answer only
//! while the generation is unchanged. So every such change bumps the generation *after* it is
//! made (a `Release` store, read with `Acquire`): a request that sees the new generation also
//! sees the change, and a request that read the old one has its memo invalidated by the bump.
//!
//! What bumps it: token issue, revocation and re-binding (`credctl use`, lock); the role-session
//! map (open, lock, expiry sweep); a role's credential snapshot; the rendered-body cache; the
//! role IMDS serves and the removal of IMDS session tokens. Time-based changes (a session
//! ending, credentials falling under the serving margin, an IMDS token expiring) are carried by
//! each memo's own deadline instead.
//!
//! One agent has one counter, shared by the token table, the session cache, the rendered-body
//! cache, the IMDS tokens and the endpoint.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockWriteGuard};

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

    /// Write-locks `lock` for a change that may alter an endpoint answer. A poisoned lock only
    /// means a panic elsewhere; every protected value here is updated by single assignments.
    pub fn write<'a, T>(&'a self, lock: &'a RwLock<T>) -> Bumping<'a, RwLockWriteGuard<'a, T>> {
        Bumping {
            guard: lock.write().unwrap_or_else(|p| p.into_inner()),
            generation: self,
        }
    }

    /// Locks `mutex` for a change that may alter an endpoint answer.
    pub fn lock<'a, T>(&'a self, mutex: &'a Mutex<T>) -> Bumping<'a, MutexGuard<'a, T>> {
        Bumping {
            guard: mutex.lock().unwrap_or_else(|p| p.into_inner()),
            generation: self,
        }
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
        let cell = RwLock::new(1);
        {
            let mut w = g.write(&cell);
            *w = 2;
            assert_eq!(g.current(), 0, "not while the change is being made");
        }
        assert_eq!(g.current(), 1);
        assert_eq!(*cell.read().unwrap(), 2);
        *g.lock(&Mutex::new(0)) += 1;
        assert_eq!(g.current(), 2);
        assert_eq!(g.clone().current(), 2, "clones share the counter");
    }
}

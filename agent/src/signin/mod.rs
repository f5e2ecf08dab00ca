//! AWS Sign-In (`aws login`) as a source: a console sign-in, protected by the person's passkey
//! or security key, that yields SDK credentials refreshed for up to 12 hours. Here: the
//! protocol pieces (DPoP proofs, `dpop`); the login itself, sealing and refresh build on them.

pub mod dpop;

pub use dpop::{DpopError, DpopKey};

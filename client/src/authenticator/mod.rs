//! Authenticators `credctl` can drive to answer the agent's WebAuthn challenges.

#[cfg(any(feature = "usb", feature = "soft-authenticator"))]
pub use credagent_ctap as ctap;

#[cfg(feature = "soft-authenticator")]
pub mod soft;

#[cfg(feature = "usb")]
pub mod usb;

#[cfg(all(test, feature = "soft-authenticator"))]
mod soft_prf_tests;

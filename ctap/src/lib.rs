//! CTAP2 (FIDO2 client-to-authenticator protocol 2.1), the part credctl needs: getInfo,
//! clientPIN (key agreement and PIN tokens), makeCredential and getAssertion with the
//! hmac-secret extension (WebAuthn PRF). One client (`CtapClient`) drives any `CtapDevice`: the
//! USB HID key and the software authenticator speak the same bytes, so the tests of the soft
//! device exercise the protocol the USB path uses.

// The device half of these codecs (decoding requests, encoding answers) serves the soft device.
#[cfg_attr(not(feature = "soft-device"), allow(dead_code))]
mod auth_data;
mod cbor;
mod client;
#[cfg_attr(not(feature = "soft-device"), allow(dead_code))]
mod commands;
#[cfg_attr(not(feature = "soft-device"), allow(dead_code))]
mod error;
mod hmac_secret;
#[cfg_attr(not(feature = "soft-device"), allow(dead_code))]
mod pin_uv;
pub mod prf;
#[cfg(feature = "soft-device")]
pub mod soft_device;

#[cfg(test)]
mod kat_tests;
#[cfg(all(test, feature = "soft-device"))]
mod pin_flow_tests;

pub use client::{CtapClient, PinCallback};
pub use error::CtapError;
pub use hmac_secret::prf_salt;

/// A PRF (hmac-secret) output: 32 secret bytes.
pub type PrfOutput = zeroize::Zeroizing<[u8; 32]>;

/// A CTAP2 authenticator reachable by some transport.
pub trait CtapDevice {
    /// Sends command `cmd` with its CBOR `payload` and returns the response payload that follows
    /// a success status byte; a failure status becomes the matching `CtapError`.
    fn command(&mut self, cmd: u8, payload: &[u8]) -> Result<Vec<u8>, CtapError>;
}

//! credagent: the daemon. It owns the control socket, the loopback credential endpoint, the
//! approval (WebAuthn relying party), STS sessions, the keyring and the audit log.
//!
//! `main.rs` only parses arguments and calls [`run`]; everything else is here so it can be tested.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod approval;
pub mod audit;
pub mod cli;
pub mod config;
pub mod control;
pub mod core;
pub mod daemon;
pub mod endpoint;
pub mod generation;
pub mod harden;
pub mod http;
pub mod keystore;
pub mod listeners;
pub mod logging;
pub mod notify;
pub mod paths;
pub mod peer;
pub mod profiles;
pub mod server;
pub mod sessions;
pub mod state;
pub mod sts;
pub mod systemd;
pub mod tokens;

pub use server::run;

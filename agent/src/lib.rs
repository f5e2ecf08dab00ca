//! credagent: the daemon. It owns the control socket, the loopback credential endpoint, the
//! approval (WebAuthn relying party), STS sessions, the sources and the audit log.
//! `ARCHITECTURE.md` at the repository root maps the parts.
//!
//! `main.rs` only parses arguments and calls [`run`]; everything else is here so it can be tested.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod agent;
pub mod approval;
pub mod audit;
pub mod cli;
pub mod config;
pub mod console;
pub mod control;
pub mod daemon;
pub mod endpoint_url;
pub mod generation;
pub mod harden;
pub mod http;
pub mod listeners;
pub mod lock_signals;
pub mod logging;
mod module_order;
pub mod notify;
pub mod origins;
pub mod paths;
pub mod preflight;
pub mod procs;
pub mod profiles;
pub mod refusal;
pub mod reload;
pub mod server;
pub mod sessions;
pub mod signin;
pub mod sources;
pub mod sso;
pub mod state;
pub mod sts;
pub mod systemd;
pub mod tokens;
pub mod trust;
pub mod util;
pub mod vault;

pub use server::run;

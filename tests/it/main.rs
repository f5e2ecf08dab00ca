//! Integration tests: the real `credagent` and `credctl` binaries, driven as a user would, in a
//! scrubbed environment with a temporary HOME.

mod ambiguous;
mod audit_trail;
mod browser;
mod cancel;
mod client_trust;
mod console;
mod demo;
mod doctor;
mod endpoint;
mod environment;
mod exec_lifetime;
mod export;
mod flood;
mod gate;
mod injection;
mod journal;
mod large;
mod lifecycle;
mod lock_signals;
mod newcomer;
mod notify;
mod protocol;
mod region;
mod sdk;
mod sealing;
mod sessions;
mod shells;
mod sso;
mod sso_fake;
mod stack;
mod state;
mod systemd;
mod tokens;
mod trust;
mod util;

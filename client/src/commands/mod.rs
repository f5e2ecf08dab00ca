//! One module per `credctl` command family.

pub mod audit;
pub mod console;
pub mod doctor;
pub mod export;
pub mod keys;
pub mod lifecycle;
pub mod open;
pub mod roles;
pub mod session;
pub mod sources;
pub mod sso;
pub mod status;
pub mod tokens;

//! One module per `credctl` command family.

pub mod lifecycle;
pub mod status;

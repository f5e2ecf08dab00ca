//! The CLI's error type: a message that says what to do next, and the exit status it maps to.

use std::fmt;

/// Exit statuses, documented in `credctl --help`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Failed = 1,
    /// Bad input on the command line or on standard input, caught before anything happened.
    Usage = 2,
    NoAgent = 3,
    VersionMismatch = 4,
    Refused = 5,
    NotApproved = 6,
    /// The socket or the process behind it is not the user's own (see `trust`).
    Untrusted = 7,
    /// `exec`: the command exists but cannot be run (as a shell says).
    CannotExecute = 126,
    /// `exec`: no such command (as a shell says).
    CommandNotFound = 127,
}

/// A failed command.
#[derive(Debug)]
pub struct Failure {
    pub exit: Exit,
    pub message: String,
}

impl Failure {
    pub fn new(exit: Exit, message: impl Into<String>) -> Self {
        Failure {
            exit,
            message: message.into(),
        }
    }
    pub fn failed(message: impl Into<String>) -> Self {
        Self::new(Exit::Failed, message)
    }
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(Exit::Usage, message)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

impl From<crate::shell::Unrepresentable> for Failure {
    fn from(e: crate::shell::Unrepresentable) -> Self {
        Failure::failed(e.to_string())
    }
}

pub type Result<T, E = Failure> = std::result::Result<T, E>;

//! CTAP2 status codes (CTAP 2.1 §8.2) and the client's own failures, as one error type.

/// Why a CTAP2 exchange failed: a status the authenticator answered, or a problem on our side.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CtapError {
    #[error("the security key holds none of the requested credentials (register it first)")]
    NoCredentials,
    #[error("the security key already holds a credential for this account")]
    CredentialExcluded,
    #[error("the security key denied the operation (not touched, or cancelled)")]
    OperationDenied,
    #[error("the security key was not touched in time")]
    UserActionTimeout,
    #[error("the security key needs its PIN")]
    PinRequired,
    #[error("wrong PIN")]
    PinInvalid,
    #[error("the PIN is blocked: reset the security key")]
    PinBlocked,
    #[error("too many wrong PINs: unplug the security key and plug it in again")]
    PinAuthBlocked,
    #[error("the security key refused the PIN/UV authentication (pinUvAuthParam or saltAuth)")]
    PinAuthInvalid,
    #[error("the security key has no PIN set")]
    PinNotSet,
    #[error("user verification failed")]
    UvInvalid,
    #[error("user verification is blocked: use the PIN")]
    UvBlocked,
    #[error("the security key supports none of the requested algorithms")]
    UnsupportedAlgorithm,
    #[error("the security key does not support a requested option")]
    UnsupportedOption,
    #[error("the security key does not support a requested extension")]
    UnsupportedExtension,
    #[error("the security key found the request invalid (status {0:#04x})")]
    Invalid(u8),
    #[error("the security key answered status {0:#04x}")]
    Status(u8),
    /// Talking to the device failed below CTAP2 (USB HID, file I/O of the soft device).
    #[error("cannot talk to the security key: {0}")]
    Transport(String),
    /// The device answered something that is not valid CTAP2.
    #[error("the security key sent a malformed answer ({0})")]
    Malformed(&'static str),
    /// A cryptographic step failed (bad key encoding, wrong lengths).
    #[error("a cryptographic step failed ({0})")]
    Crypto(&'static str),
    /// The request needs something the device cannot do.
    #[error("{0}")]
    Unsupported(String),
    /// The WebAuthn client layer refused before any command was sent.
    #[error("{0}")]
    Client(String),
}

// CTAP 2.1 §8.2 status codes.
pub(crate) const CTAP1_ERR_INVALID_COMMAND: u8 = 0x01;
pub(crate) const CTAP1_ERR_INVALID_PARAMETER: u8 = 0x02;
pub(crate) const CTAP1_ERR_INVALID_LENGTH: u8 = 0x03;
pub(crate) const CTAP2_ERR_CBOR_UNEXPECTED_TYPE: u8 = 0x11;
pub(crate) const CTAP2_ERR_INVALID_CBOR: u8 = 0x12;
pub(crate) const CTAP2_ERR_MISSING_PARAMETER: u8 = 0x14;
pub(crate) const CTAP2_ERR_UNSUPPORTED_EXTENSION: u8 = 0x16;
pub(crate) const CTAP2_ERR_CREDENTIAL_EXCLUDED: u8 = 0x19;
pub(crate) const CTAP2_ERR_UNSUPPORTED_ALGORITHM: u8 = 0x26;
pub(crate) const CTAP2_ERR_OPERATION_DENIED: u8 = 0x27;
pub(crate) const CTAP2_ERR_UNSUPPORTED_OPTION: u8 = 0x2B;
pub(crate) const CTAP2_ERR_INVALID_OPTION: u8 = 0x2C;
pub(crate) const CTAP2_ERR_KEEPALIVE_CANCEL: u8 = 0x2D;
pub(crate) const CTAP2_ERR_NO_CREDENTIALS: u8 = 0x2E;
pub(crate) const CTAP2_ERR_USER_ACTION_TIMEOUT: u8 = 0x2F;
pub(crate) const CTAP2_ERR_PIN_INVALID: u8 = 0x31;
pub(crate) const CTAP2_ERR_PIN_BLOCKED: u8 = 0x32;
pub(crate) const CTAP2_ERR_PIN_AUTH_INVALID: u8 = 0x33;
pub(crate) const CTAP2_ERR_PIN_AUTH_BLOCKED: u8 = 0x34;
pub(crate) const CTAP2_ERR_PIN_NOT_SET: u8 = 0x35;
pub(crate) const CTAP2_ERR_PIN_REQUIRED: u8 = 0x36;
pub(crate) const CTAP2_ERR_UV_BLOCKED: u8 = 0x3C;
pub(crate) const CTAP2_ERR_UV_INVALID: u8 = 0x3F;

impl CtapError {
    /// The error for a non-zero CTAP status byte.
    pub fn from_status(status: u8) -> CtapError {
        match status {
            CTAP2_ERR_NO_CREDENTIALS => CtapError::NoCredentials,
            CTAP2_ERR_CREDENTIAL_EXCLUDED => CtapError::CredentialExcluded,
            CTAP2_ERR_OPERATION_DENIED | CTAP2_ERR_KEEPALIVE_CANCEL => CtapError::OperationDenied,
            CTAP2_ERR_USER_ACTION_TIMEOUT => CtapError::UserActionTimeout,
            CTAP2_ERR_PIN_REQUIRED => CtapError::PinRequired,
            CTAP2_ERR_PIN_INVALID => CtapError::PinInvalid,
            CTAP2_ERR_PIN_BLOCKED => CtapError::PinBlocked,
            CTAP2_ERR_PIN_AUTH_BLOCKED => CtapError::PinAuthBlocked,
            CTAP2_ERR_PIN_AUTH_INVALID => CtapError::PinAuthInvalid,
            CTAP2_ERR_PIN_NOT_SET => CtapError::PinNotSet,
            CTAP2_ERR_UV_INVALID => CtapError::UvInvalid,
            CTAP2_ERR_UV_BLOCKED => CtapError::UvBlocked,
            CTAP2_ERR_UNSUPPORTED_ALGORITHM => CtapError::UnsupportedAlgorithm,
            CTAP2_ERR_UNSUPPORTED_OPTION | CTAP2_ERR_INVALID_OPTION => CtapError::UnsupportedOption,
            CTAP2_ERR_UNSUPPORTED_EXTENSION => CtapError::UnsupportedExtension,
            CTAP1_ERR_INVALID_COMMAND
            | CTAP1_ERR_INVALID_PARAMETER
            | CTAP1_ERR_INVALID_LENGTH
            | CTAP2_ERR_CBOR_UNEXPECTED_TYPE
            | CTAP2_ERR_INVALID_CBOR
            | CTAP2_ERR_MISSING_PARAMETER => CtapError::Invalid(status),
            other => CtapError::Status(other),
        }
    }
}

/// Splits a raw CTAP2 response (status byte, then the CBOR payload) into the payload or the error.
pub fn split_status(response: &[u8]) -> Result<&[u8], CtapError> {
    match response.split_first() {
        Some((0, payload)) => Ok(payload),
        Some((&status, _)) => Err(CtapError::from_status(status)),
        None => Err(CtapError::Malformed("empty response")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_errors() {
        assert_eq!(split_status(&[0, 0xa0]), Ok(&[0xa0][..]));
        assert_eq!(split_status(&[0x2e]), Err(CtapError::NoCredentials));
        assert_eq!(split_status(&[0x27]), Err(CtapError::OperationDenied));
        assert_eq!(split_status(&[0x36]), Err(CtapError::PinRequired));
        assert_eq!(split_status(&[0x12]), Err(CtapError::Invalid(0x12)));
        assert_eq!(split_status(&[0x7f]), Err(CtapError::Status(0x7f)));
        assert!(split_status(&[]).is_err());
    }
}

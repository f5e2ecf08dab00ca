//! Calls to AWS STS: the [`StsApi`] trait, its aws-sdk-sts implementation [`AwsSts`] (explicit
//! credentials per call, never the SDK's provider chain), error classification and retries.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use secrecy::SecretString;

use crate::profiles::Hop;
use crate::sources::SourceCredentials;

mod aws;
pub use aws::{error_chain, AwsSts, StsSettings};

/// Short-lived credentials returned by STS.
#[derive(Clone)]
pub struct TempCredentials {
    pub access_key_id: String,
    pub secret_access_key: SecretString,
    pub session_token: SecretString,
    pub expiration: SystemTime,
    pub account_id: Option<String>,
    /// `AssumedRoleUser.Arn` for AssumeRole; `None` for GetSessionToken.
    pub assumed_role_arn: Option<String>,
}

impl TempCredentials {
    /// Time left at `now` (zero once expired).
    pub fn remaining(&self, now: SystemTime) -> Duration {
        self.expiration
            .duration_since(now)
            .unwrap_or(Duration::ZERO)
    }
}

impl fmt::Debug for TempCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TempCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"** redacted **")
            .field("session_token", &"** redacted **")
            .field("expiration", &self.expiration)
            .field("account_id", &self.account_id)
            .field("assumed_role_arn", &self.assumed_role_arn)
            .finish()
    }
}

/// The credentials an STS call is signed with: source keys, or temporary credentials from an
/// earlier hop or an MFA session.
#[derive(Clone)]
pub struct CallerCredentials {
    pub access_key_id: String,
    pub secret_access_key: SecretString,
    pub session_token: Option<SecretString>,
}

impl fmt::Debug for CallerCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallerCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"** redacted **")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "** redacted **"),
            )
            .finish()
    }
}

impl From<&SourceCredentials> for CallerCredentials {
    fn from(c: &SourceCredentials) -> Self {
        Self {
            access_key_id: c.access_key_id.clone(),
            secret_access_key: c.secret_access_key.clone(),
            session_token: None,
        }
    }
}

impl From<&TempCredentials> for CallerCredentials {
    fn from(c: &TempCredentials) -> Self {
        Self {
            access_key_id: c.access_key_id.clone(),
            secret_access_key: c.secret_access_key.clone(),
            session_token: Some(c.session_token.clone()),
        }
    }
}

/// An MFA device and the code read from it, sent on an AssumeRole.
#[derive(Clone, Copy)]
pub struct MfaToken<'a> {
    pub serial: &'a str,
    pub code: &'a SecretString,
}

/// Which STS operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StsOp {
    AssumeRole,
    GetSessionToken,
}

impl fmt::Display for StsOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StsOp::AssumeRole => "AssumeRole",
            StsOp::GetSessionToken => "GetSessionToken",
        })
    }
}

/// Why STS refused for good (retrying will not help).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denial {
    /// Trust policy or permissions refuse the call.
    AccessDenied,
    /// The access key is unknown or the secret is wrong.
    InvalidKey,
    /// The calling session token has expired.
    ExpiredToken,
    /// The MFA code was wrong or reused.
    MfaInvalid,
    /// STS is disabled in the region.
    RegionDisabled,
    /// The request's signing time is too far from STS's clock (more than 5 minutes): this
    /// machine's clock is wrong, not the key.
    ClockSkew,
    /// The request itself is invalid (bad ARN, duration, session name…).
    BadRequest,
    /// Anything else STS or the SDK refused.
    Other,
}

/// An STS failure, classified for retrying.
#[derive(Clone, Debug, thiserror::Error)]
pub enum StsError {
    /// Throttling, 5xx, timeout, connection failure: worth retrying.
    #[error("STS {op} failed temporarily: {detail}")]
    Transient { op: StsOp, detail: String },
    /// Refused; retrying with the same input fails the same way.
    #[error("STS {op} refused ({code}): {message}")]
    Permanent {
        op: StsOp,
        denial: Denial,
        code: String,
        message: String,
    },
}

impl StsError {
    pub fn is_transient(&self) -> bool {
        matches!(self, StsError::Transient { .. })
    }

    pub fn denial(&self) -> Option<Denial> {
        match self {
            StsError::Permanent { denial, .. } => Some(*denial),
            StsError::Transient { .. } => None,
        }
    }
}

/// Classifies an STS error code (and HTTP status) the way the SDK's retry classifiers do.
pub fn classify_code(op: StsOp, code: &str, message: &str, status: Option<u16>) -> StsError {
    const TRANSIENT: &[&str] = &[
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "ProvisionedThroughputExceededException",
        "TransactionInProgressException",
        "RequestTimeout",
        "RequestTimeoutException",
        "IDPCommunicationError",
        "ServiceUnavailable",
        "InternalFailure",
        "InternalError",
        "PriorRequestNotComplete",
    ];
    if TRANSIENT.contains(&code) || status.is_some_and(|s| s >= 500 || s == 429) {
        return StsError::Transient {
            op,
            detail: format!("{code}: {message}"),
        };
    }
    let mfa = message.contains("MultiFactorAuthentication") || message.contains("MFA");
    // SigV4 refuses a request signed more than 5 minutes off STS's clock with
    // `SignatureDoesNotMatch` "Signature expired: … is now earlier than …" (or later), which
    // names no key problem at all.
    let skewed = message.contains("Signature expired")
        || message.contains("Signature not yet current")
        || matches!(code, "RequestExpired" | "RequestTimeTooSkewed");
    let denial = match code {
        _ if skewed => Denial::ClockSkew,
        "AccessDenied" | "AccessDeniedException" if mfa => Denial::MfaInvalid,
        "AccessDenied" | "AccessDeniedException" if op == StsOp::GetSessionToken => {
            Denial::MfaInvalid
        }
        "AccessDenied" | "AccessDeniedException" => Denial::AccessDenied,
        "InvalidClientTokenId"
        | "SignatureDoesNotMatch"
        | "UnrecognizedClientException"
        | "InvalidAccessKeyId"
        | "IncompleteSignature"
        | "MissingAuthenticationToken" => Denial::InvalidKey,
        "ExpiredToken" | "ExpiredTokenException" | "TokenRefreshRequired" => Denial::ExpiredToken,
        "RegionDisabledException" => Denial::RegionDisabled,
        "ValidationError"
        | "InvalidParameterValue"
        | "MalformedPolicyDocument"
        | "MalformedPolicyDocumentException"
        | "PackedPolicyTooLarge"
        | "InvalidAction" => Denial::BadRequest,
        _ => Denial::Other,
    };
    StsError::Permanent {
        op,
        denial,
        code: code.to_owned(),
        message: message.to_owned(),
    }
}
/// STS as credagent uses it. Object-safe: held as `Arc<dyn StsApi>`.
#[async_trait]
pub trait StsApi: Send + Sync {
    /// AssumeRole of `hop.role_arn` signed with `creds`, with an MFA code when given.
    async fn assume_role(
        &self,
        creds: &CallerCredentials,
        hop: &Hop,
        duration: Duration,
        session_name: &str,
        region: Option<&str>,
        mfa: Option<MfaToken<'_>>,
    ) -> Result<TempCredentials, StsError>;

    /// GetSessionToken with an MFA code, signed with the source's long-lived keys.
    async fn get_session_token(
        &self,
        creds: &CallerCredentials,
        mfa_serial: &str,
        code: &SecretString,
        duration: Duration,
        region: Option<&str>,
    ) -> Result<TempCredentials, StsError>;
}

/// Bounded retries with full-jitter exponential backoff.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Total attempts, including the first.
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// Sleep before retry number `retry` (1-based): uniform in `0..=min(max, base·2^(retry-1))`.
    pub fn backoff(&self, retry: u32) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(1u32 << retry.saturating_sub(1).min(16));
        let cap = exp.min(self.max_delay);
        let millis = u64::try_from(cap.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rand::random_range(0..=millis))
    }
}

/// Wraps an [`StsApi`] so transient failures are retried per [`RetryPolicy`]. The agent uses
/// `Retrying::new(Arc::new(AwsSts::new(&settings)), RetryPolicy::default())`.
///
/// The client behind it can be replaced (`credctl reload` with another `sts_endpoint`): each
/// attempt uses the client in force when it starts, so sessions keep this one `Retrying`.
pub struct Retrying {
    inner: std::sync::RwLock<Arc<dyn StsApi>>,
    policy: RetryPolicy,
}

impl Retrying {
    pub fn new(inner: Arc<dyn StsApi>, policy: RetryPolicy) -> Retrying {
        Retrying {
            inner: std::sync::RwLock::new(inner),
            policy,
        }
    }

    /// Puts `inner` in force for every call from now on.
    pub fn replace(&self, inner: Arc<dyn StsApi>) {
        *crate::util::RwLockExt::write_locked(&self.inner) = inner;
    }

    fn client(&self) -> Arc<dyn StsApi> {
        crate::util::RwLockExt::read_locked(&self.inner).clone()
    }

    async fn run<F, Fut>(&self, mut call: F) -> Result<TempCredentials, StsError>
    where
        F: FnMut() -> Fut + Send,
        Fut: std::future::Future<Output = Result<TempCredentials, StsError>> + Send,
    {
        let mut attempt = 1;
        loop {
            match call().await {
                Err(e) if e.is_transient() && attempt < self.policy.max_attempts => {
                    let delay = self.policy.backoff(attempt);
                    tracing::warn!(error = %e, attempt, ?delay, "STS call failed; retrying");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}

#[async_trait]
impl StsApi for Retrying {
    async fn assume_role(
        &self,
        creds: &CallerCredentials,
        hop: &Hop,
        duration: Duration,
        session_name: &str,
        region: Option<&str>,
        mfa: Option<MfaToken<'_>>,
    ) -> Result<TempCredentials, StsError> {
        // As for GetSessionToken, a retry reuses the code.
        self.run(|| async move {
            self.client()
                .assume_role(creds, hop, duration, session_name, region, mfa)
                .await
        })
        .await
    }

    async fn get_session_token(
        &self,
        creds: &CallerCredentials,
        mfa_serial: &str,
        code: &SecretString,
        duration: Duration,
        region: Option<&str>,
    ) -> Result<TempCredentials, StsError> {
        // Retrying reuses the TOTP code. After a throttle or 5xx STS may already have
        // consumed it; the retry then fails as MfaInvalid and the user enters a new code.
        self.run(|| async move {
            self.client()
                .get_session_token(creds, mfa_serial, code, duration, region)
                .await
        })
        .await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    #[test]
    fn a_clock_off_by_more_than_five_minutes_is_no_invalid_key() {
        // What STS answers a request signed with a clock 10 minutes behind.
        let err = classify_code(
            StsOp::AssumeRole,
            "SignatureDoesNotMatch",
            "Signature expired: 20261207T180000Z is now earlier than 20261207T180500Z \
             (20261207T181000Z - 5 min.)",
            Some(403),
        );
        assert_eq!(err.denial(), Some(Denial::ClockSkew));
        // A wrong secret is still a wrong secret.
        let err = classify_code(
            StsOp::AssumeRole,
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided.",
            Some(403),
        );
        assert_eq!(err.denial(), Some(Denial::InvalidKey));
    }

    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn classifies_codes() {
        let op = StsOp::AssumeRole;
        assert!(classify_code(op, "Throttling", "Rate exceeded", Some(400)).is_transient());
        assert!(classify_code(op, "Whatever", "", Some(503)).is_transient());
        assert!(classify_code(op, "IDPCommunicationError", "", Some(400)).is_transient());
        let d = |code, msg, op| classify_code(op, code, msg, Some(403)).denial();
        assert_eq!(
            d("AccessDenied", "not authorized", op),
            Some(Denial::AccessDenied)
        );
        assert_eq!(d("InvalidClientTokenId", "", op), Some(Denial::InvalidKey));
        assert_eq!(d("SignatureDoesNotMatch", "", op), Some(Denial::InvalidKey));
        assert_eq!(d("ExpiredToken", "", op), Some(Denial::ExpiredToken));
        assert_eq!(
            d(
                "AccessDenied",
                "MultiFactorAuthentication failed with invalid MFA one time pass code.",
                op
            ),
            Some(Denial::MfaInvalid)
        );
        assert_eq!(
            d("AccessDenied", "", StsOp::GetSessionToken),
            Some(Denial::MfaInvalid)
        );
        assert_eq!(d("ValidationError", "", op), Some(Denial::BadRequest));
    }

    #[test]
    fn backoff_is_bounded() {
        let p = RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(800),
        };
        for retry in 1..40 {
            assert!(p.backoff(retry) <= Duration::from_millis(800));
        }
        assert!(p.backoff(1) <= Duration::from_millis(100));
    }

    #[test]
    fn debug_redacts() {
        let t = TempCredentials {
            access_key_id: "ASIA".into(),
            secret_access_key: SecretString::from("sekrit"),
            session_token: SecretString::from("tok3n"),
            expiration: SystemTime::UNIX_EPOCH,
            account_id: None,
            assumed_role_arn: None,
        };
        let c = CallerCredentials::from(&t);
        let s = format!("{t:?} {c:?}");
        assert!(!s.contains("sekrit") && !s.contains("tok3n"), "{s}");
    }

    #[test]
    fn settings_resolution_order() {
        let env = crate::profiles::env_from_pairs(&[
            ("AWS_ENDPOINT_URL_STS", "http://env-sts"),
            ("AWS_ENDPOINT_URL", "http://env-all"),
            ("AWS_REGION", "eu-central-1"),
        ]);
        let s = StsSettings::resolve(Some("http://127.0.0.1:5000"), None, &env).unwrap();
        assert_eq!(s.endpoint.as_deref(), Some("http://127.0.0.1:5000"));
        assert_eq!(s.endpoint_source, Some("sts_endpoint in config.toml"));
        assert_eq!(s.default_region, "eu-central-1");
        // The agent's environment never names an endpoint: a same-user process controls it.
        let s = StsSettings::resolve(None, Some("ap-south-1"), &env).unwrap();
        assert_eq!(
            (s.endpoint, s.default_region.as_str()),
            (None, "ap-south-1")
        );
        let generic = crate::profiles::env_from_pairs(&[("AWS_ENDPOINT_URL", "https://x")]);
        let s = StsSettings::resolve(None, None, &generic).unwrap();
        assert_eq!((s.endpoint, s.default_region.as_str()), (None, "us-east-1"));
        // Plain http to another host is refused.
        let err = StsSettings::resolve(Some("http://env-sts"), None, &env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("env-sts") && err.contains("https"), "{err}");
    }

    struct Flaky {
        calls: AtomicU32,
        fail_first: u32,
        permanent: bool,
    }

    #[async_trait]
    impl StsApi for Flaky {
        async fn assume_role(
            &self,
            _: &CallerCredentials,
            _: &Hop,
            _: Duration,
            _: &str,
            _: Option<&str>,
            _: Option<MfaToken<'_>>,
        ) -> Result<TempCredentials, StsError> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            if n <= self.fail_first {
                let code = if self.permanent {
                    "AccessDenied"
                } else {
                    "Throttling"
                };
                return Err(classify_code(StsOp::AssumeRole, code, "", Some(400)));
            }
            Ok(TempCredentials {
                access_key_id: "ASIA".into(),
                secret_access_key: SecretString::from("s"),
                session_token: SecretString::from("t"),
                expiration: SystemTime::UNIX_EPOCH,
                account_id: None,
                assumed_role_arn: None,
            })
        }

        async fn get_session_token(
            &self,
            _: &CallerCredentials,
            _: &str,
            _: &SecretString,
            _: Duration,
            _: Option<&str>,
        ) -> Result<TempCredentials, StsError> {
            Err(classify_code(
                StsOp::GetSessionToken,
                "AccessDenied",
                "",
                None,
            ))
        }
    }

    fn hop() -> Hop {
        Hop {
            profile: "p".into(),
            role_arn: "arn:aws:iam::1:role/r".into(),
            external_id: None,
            duration_seconds: None,
            role_session_name: None,
        }
    }

    fn caller() -> CallerCredentials {
        CallerCredentials {
            access_key_id: "AKID".into(),
            secret_access_key: SecretString::from("x"),
            session_token: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_transient_then_gives_up() {
        let flaky = Arc::new(Flaky {
            calls: AtomicU32::new(0),
            fail_first: 2,
            permanent: false,
        });
        let r = Retrying::new(flaky.clone(), RetryPolicy::default());
        let d = Duration::from_secs(900);
        assert!(r
            .assume_role(&caller(), &hop(), d, "s", None, None)
            .await
            .is_ok());
        assert_eq!(flaky.calls.load(Ordering::SeqCst), 3);

        let always = Arc::new(Flaky {
            calls: AtomicU32::new(0),
            fail_first: 99,
            permanent: false,
        });
        let r = Retrying::new(always.clone(), RetryPolicy::default());
        assert!(r
            .assume_role(&caller(), &hop(), d, "s", None, None)
            .await
            .unwrap_err()
            .is_transient());
        assert_eq!(always.calls.load(Ordering::SeqCst), 4);

        let denied = Arc::new(Flaky {
            calls: AtomicU32::new(0),
            fail_first: 99,
            permanent: true,
        });
        let r = Retrying::new(denied.clone(), RetryPolicy::default());
        assert!(!r
            .assume_role(&caller(), &hop(), d, "s", None, None)
            .await
            .unwrap_err()
            .is_transient());
        assert_eq!(denied.calls.load(Ordering::SeqCst), 1);
    }
}

//! The aws-sdk-sts implementation of [`StsApi`]: explicit credentials per call (never the
//! SDK's provider chain, profile files or environment), endpoint and region overrides, and
//! the mapping of SDK errors onto [`StsError`].

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_sdk_sts::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_sts::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use secrecy::{ExposeSecret, SecretString};

use super::{
    classify_code, CallerCredentials, Denial, MfaToken, StsApi, StsError, StsOp, TempCredentials,
};
use crate::profiles::{EnvLookup, Hop};

/// The error and its causes as one readable line (`a: b: c`), without Debug dumps.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![err.to_string()];
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = cause.source();
    }
    parts.join(": ")
}

fn classify_sdk<E>(op: StsOp, err: SdkError<E>) -> StsError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let detail = error_chain(&err);
    match &err {
        SdkError::ServiceError(ctx) => {
            let status = Some(ctx.raw().status().as_u16());
            let e = ctx.err();
            classify_code(
                op,
                e.code().unwrap_or("Unknown"),
                e.message().unwrap_or(""),
                status,
            )
        }
        SdkError::DispatchFailure(d) if d.is_user() => StsError::Permanent {
            op,
            denial: Denial::Other,
            code: "DispatchFailure".into(),
            message: detail,
        },
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            StsError::Transient { op, detail }
        }
        _ => StsError::Permanent {
            op,
            denial: Denial::Other,
            code: "ConstructionFailure".into(),
            message: detail,
        },
    }
}

/// Where and how to reach STS.
#[derive(Clone, Debug)]
pub struct StsSettings {
    /// Endpoint override: `sts_endpoint` in config.toml, which a touch must confirm
    /// (`crate::trust`) before anything is sent there. The agent's environment is never read
    /// for endpoints (`AWS_ENDPOINT_URL_STS`, `AWS_ENDPOINT_URL`): a same-user process sets
    /// it, and signed requests sent to its relay could be replayed to real STS.
    pub endpoint: Option<String>,
    /// Where the override came from, for `credctl status`.
    pub endpoint_source: Option<&'static str>,
    /// Region when the role's profile names none.
    pub default_region: String,
    pub connect_timeout: Duration,
    /// Limit for one HTTP attempt (retries are done by [`Retrying`]).
    pub attempt_timeout: Duration,
}

impl StsSettings {
    /// Resolves endpoint (config, else AWS) and default region (config, then the agent's
    /// `AWS_REGION`/`AWS_DEFAULT_REGION`, then `us-east-1`: a region names an AWS endpoint, so
    /// it sends nothing elsewhere). An endpoint must be https, or http on a loopback address.
    pub fn resolve(
        config_endpoint: Option<&str>,
        config_region: Option<&str>,
        env: EnvLookup<'_>,
    ) -> Result<StsSettings, crate::endpoint_url::EndpointError> {
        let non_empty = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
        let endpoint = crate::endpoint_url::checked(
            "STS endpoint (sts_endpoint in config.toml)",
            config_endpoint,
        )?;
        let endpoint_source = endpoint.as_ref().map(|_| "sts_endpoint in config.toml");
        let default_region = non_empty(config_region.map(str::to_owned))
            .or_else(|| non_empty(env("AWS_REGION")))
            .or_else(|| non_empty(env("AWS_DEFAULT_REGION")))
            .unwrap_or_else(|| "us-east-1".to_owned());
        Ok(StsSettings {
            endpoint,
            endpoint_source,
            default_region,
            connect_timeout: Duration::from_secs(3),
            attempt_timeout: Duration::from_secs(10),
        })
    }
}

/// [`StsApi`] over aws-sdk-sts. Each call builds a client from a base config plus the caller's
/// credentials; the SDK's provider chain, profile files and environment are never consulted.
/// The base config (its HTTPS client and TLS roots) is built at the first call, not at start:
/// an agent nobody has asked for a role yet keeps none of that code or memory resident.
#[derive(Debug)]
pub struct AwsSts {
    settings: StsSettings,
    base: std::sync::OnceLock<aws_sdk_sts::Config>,
    default_region: String,
}

impl AwsSts {
    pub fn new(settings: &StsSettings) -> AwsSts {
        AwsSts {
            settings: settings.clone(),
            base: std::sync::OnceLock::new(),
            default_region: settings.default_region.clone(),
        }
    }

    fn base(&self) -> &aws_sdk_sts::Config {
        self.base.get_or_init(|| Self::build(&self.settings))
    }

    fn build(settings: &StsSettings) -> aws_sdk_sts::Config {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
            .build_https();
        let timeouts = aws_sdk_sts::config::timeout::TimeoutConfig::builder()
            .connect_timeout(settings.connect_timeout)
            .operation_attempt_timeout(settings.attempt_timeout)
            .build();
        let mut builder = aws_sdk_sts::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .http_client(http)
            .timeout_config(timeouts)
            .retry_config(aws_sdk_sts::config::retry::RetryConfig::disabled())
            .identity_cache(aws_sdk_sts::config::IdentityCache::no_cache())
            .region(Region::new(settings.default_region.clone()));
        if let Some(url) = &settings.endpoint {
            builder = builder.endpoint_url(url.clone());
        }
        builder.build()
    }

    fn client(&self, creds: &CallerCredentials, region: Option<&str>) -> aws_sdk_sts::Client {
        let sdk_creds = Credentials::new(
            creds.access_key_id.clone(),
            creds.secret_access_key.expose_secret().to_owned(),
            creds
                .session_token
                .as_ref()
                .map(|t| t.expose_secret().to_owned()),
            None,
            "credagent",
        );
        let region = region.unwrap_or(&self.default_region).to_owned();
        let config = self
            .base()
            .to_builder()
            .credentials_provider(sdk_creds)
            .region(Region::new(region))
            .build();
        aws_sdk_sts::Client::from_conf(config)
    }
}

fn convert(
    op: StsOp,
    creds: Option<&aws_sdk_sts::types::Credentials>,
    assumed_role_arn: Option<String>,
) -> Result<TempCredentials, StsError> {
    let Some(c) = creds else {
        return Err(StsError::Transient {
            op,
            detail: "response carried no credentials".into(),
        });
    };
    let expiration = SystemTime::try_from(*c.expiration()).map_err(|e| StsError::Permanent {
        op,
        denial: Denial::Other,
        code: "BadExpiration".into(),
        message: e.to_string(),
    })?;
    let account_id = assumed_role_arn
        .as_deref()
        .and_then(|arn| arn.split(':').nth(4))
        .filter(|a| !a.is_empty())
        .map(str::to_owned);
    Ok(TempCredentials {
        access_key_id: c.access_key_id().to_owned(),
        secret_access_key: SecretString::from(c.secret_access_key()),
        session_token: SecretString::from(c.session_token()),
        expiration,
        account_id,
        assumed_role_arn,
    })
}

fn duration_i32(d: Duration) -> i32 {
    i32::try_from(d.as_secs()).unwrap_or(i32::MAX)
}

#[async_trait]
impl StsApi for AwsSts {
    async fn assume_role(
        &self,
        creds: &CallerCredentials,
        hop: &Hop,
        duration: Duration,
        session_name: &str,
        region: Option<&str>,
        mfa: Option<MfaToken<'_>>,
    ) -> Result<TempCredentials, StsError> {
        let op = StsOp::AssumeRole;
        let out = self
            .client(creds, region)
            .assume_role()
            .role_arn(&hop.role_arn)
            .role_session_name(session_name)
            .duration_seconds(duration_i32(duration))
            .set_external_id(hop.external_id.clone())
            .set_serial_number(mfa.map(|m| m.serial.to_owned()))
            .set_token_code(mfa.map(|m| m.code.expose_secret().to_owned()))
            .send()
            .await
            .map_err(|e| classify_sdk(op, e))?;
        let arn = out.assumed_role_user().map(|u| u.arn().to_owned());
        convert(op, out.credentials(), arn)
    }

    async fn get_session_token(
        &self,
        creds: &CallerCredentials,
        mfa_serial: &str,
        code: &SecretString,
        duration: Duration,
        region: Option<&str>,
    ) -> Result<TempCredentials, StsError> {
        let op = StsOp::GetSessionToken;
        let out = self
            .client(creds, region)
            .get_session_token()
            .serial_number(mfa_serial)
            .token_code(code.expose_secret())
            .duration_seconds(duration_i32(duration))
            .send()
            .await
            .map_err(|e| classify_sdk(op, e))?;
        convert(op, out.credentials(), None)
    }
}

//! [`SsoApi`] over aws-sdk-ssooidc and aws-sdk-sso: no credentials of any kind (both services
//! take bearer tokens or client secrets in the request), explicit region per call, endpoint
//! overrides, and the mapping of SDK errors onto [`SsoError`].

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use aws_sdk_sso::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use secrecy::{ExposeSecret, SecretString};

use super::pkce::AuthorizeRequest;
use super::{
    Account, ClientRequest, DeviceAuthorization, Grant, Registration, SsoApi, SsoError, TokenSet,
    CLIENT_NAME,
};
use crate::sts::TempCredentials;
use crate::util::percent_encode as encode;

/// Where Identity Center's services are: the endpoints when overridden (tests, private
/// endpoints), else AWS's for the profile's `sso_region`.
#[derive(Clone, Debug, Default)]
pub struct SsoSettings {
    /// The OIDC service (`sso_oidc_endpoint` in config.toml).
    pub oidc_endpoint: Option<String>,
    /// The portal (`sso_endpoint` in config.toml).
    pub portal_endpoint: Option<String>,
}

impl SsoSettings {
    /// From config.toml only (a touch confirms them before a token goes there,
    /// `crate::trust`), never from the agent's environment, which a same-user process sets;
    /// each must be https, or http on a loopback address (tokens travel in these requests).
    pub fn resolve(
        config_oidc: Option<&str>,
        config_portal: Option<&str>,
    ) -> Result<SsoSettings, crate::endpoint_url::EndpointError> {
        let pick = |config: Option<&str>, what: &str| {
            let value = crate::endpoint_url::checked(
                &format!("IAM Identity Center {what} endpoint"),
                config,
            )?;
            Ok(value.map(|v| v.trim_end_matches('/').to_owned()))
        };
        Ok(SsoSettings {
            oidc_endpoint: pick(config_oidc, "OIDC")?,
            portal_endpoint: pick(config_portal, "portal")?,
        })
    }

    /// The OIDC service's base URL in `region`, in its partition: the AWS CLI builds the
    /// authorize URL on the sso-oidc client's endpoint (`awscli/customizations/sso/utils.py`),
    /// which is `amazonaws.com.cn` in China and `amazonaws.com` elsewhere, GovCloud included.
    pub fn oidc_base(&self, region: &str) -> String {
        self.oidc_endpoint.clone().unwrap_or_else(|| {
            let suffix = if region.starts_with("cn-") {
                "amazonaws.com.cn"
            } else {
                "amazonaws.com"
            };
            format!("https://oidc.{region}.{suffix}")
        })
    }
}

fn classify<E>(err: SdkError<E>) -> SsoError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let detail = crate::sts::error_chain(&err);
    match &err {
        SdkError::ServiceError(ctx) => {
            let status = ctx.raw().status().as_u16();
            let e = ctx.err();
            let code = e.code().unwrap_or("Unknown").to_owned();
            let message = e.message().unwrap_or("").to_owned();
            let what = if message.is_empty() {
                code.clone()
            } else {
                format!("{code}: {message}")
            };
            match code.as_str() {
                "AuthorizationPendingException" => SsoError::Pending,
                "SlowDownException" => SsoError::SlowDown,
                "ExpiredTokenException"
                | "InvalidGrantException"
                | "InvalidClientException"
                | "UnauthorizedClientException" => SsoError::LoginNeeded {
                    login: "SESSION".into(),
                    detail: what,
                },
                "UnauthorizedException" => SsoError::Unauthorized { detail: what },
                "AccessDeniedException" | "ForbiddenException" | "ResourceNotFoundException" => {
                    SsoError::Denied { detail: what }
                }
                "TooManyRequestsException" | "InternalServerException" => {
                    SsoError::Transient { detail: what }
                }
                _ if status == 401 => SsoError::Unauthorized { detail: what },
                _ if status == 429 || status >= 500 => SsoError::Transient { detail: what },
                _ => SsoError::Other { code, message },
            }
        }
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            SsoError::Transient { detail }
        }
        _ => SsoError::Other {
            code: "ConstructionFailure".into(),
            message: detail,
        },
    }
}

fn missing(what: &str) -> SsoError {
    SsoError::Other {
        code: "MalformedResponse".into(),
        message: format!("IAM Identity Center answered without {what}"),
    }
}

fn secs(v: i64) -> Duration {
    Duration::from_secs(u64::try_from(v).unwrap_or(0))
}

/// [`SsoApi`] over the AWS SDK. One pair of base configs, built on first use (an agent whose
/// sources are all access keys never loads this code or its TLS roots); each call sets its
/// region.
#[derive(Debug)]
pub struct AwsSso {
    settings: SsoSettings,
    configs: std::sync::OnceLock<(aws_sdk_ssooidc::Config, aws_sdk_sso::Config)>,
}

impl AwsSso {
    pub fn new(settings: SsoSettings) -> AwsSso {
        AwsSso {
            settings,
            configs: std::sync::OnceLock::new(),
        }
    }

    fn configs(&self) -> &(aws_sdk_ssooidc::Config, aws_sdk_sso::Config) {
        self.configs.get_or_init(|| Self::build(&self.settings))
    }

    fn build(settings: &SsoSettings) -> (aws_sdk_ssooidc::Config, aws_sdk_sso::Config) {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
            .build_https();
        let connect = Duration::from_secs(3);
        let attempt = Duration::from_secs(10);
        let mut oidc = aws_sdk_ssooidc::Config::builder()
            .behavior_version(aws_sdk_ssooidc::config::BehaviorVersion::latest())
            .http_client(http.clone())
            .timeout_config(
                aws_sdk_ssooidc::config::timeout::TimeoutConfig::builder()
                    .connect_timeout(connect)
                    .operation_attempt_timeout(attempt)
                    .build(),
            )
            .retry_config(aws_sdk_ssooidc::config::retry::RetryConfig::standard());
        if let Some(url) = &settings.oidc_endpoint {
            oidc = oidc.endpoint_url(url.clone());
        }
        let mut portal = aws_sdk_sso::Config::builder()
            .behavior_version(aws_sdk_sso::config::BehaviorVersion::latest())
            .http_client(http)
            .timeout_config(
                aws_sdk_sso::config::timeout::TimeoutConfig::builder()
                    .connect_timeout(connect)
                    .operation_attempt_timeout(attempt)
                    .build(),
            )
            .retry_config(aws_sdk_sso::config::retry::RetryConfig::standard());
        if let Some(url) = &settings.portal_endpoint {
            portal = portal.endpoint_url(url.clone());
        }
        (oidc.build(), portal.build())
    }

    fn oidc(&self, region: &str) -> aws_sdk_ssooidc::Client {
        let config = self
            .configs()
            .0
            .to_builder()
            .region(aws_sdk_ssooidc::config::Region::new(region.to_owned()))
            .build();
        aws_sdk_ssooidc::Client::from_conf(config)
    }

    fn portal(&self, region: &str) -> aws_sdk_sso::Client {
        let config = self
            .configs()
            .1
            .to_builder()
            .region(aws_sdk_sso::config::Region::new(region.to_owned()))
            .build();
        aws_sdk_sso::Client::from_conf(config)
    }
}

#[async_trait]
impl SsoApi for AwsSso {
    async fn register_client(
        &self,
        region: &str,
        request: &ClientRequest,
        now: SystemTime,
    ) -> Result<Registration, SsoError> {
        let mut call = self
            .oidc(region)
            .register_client()
            .client_name(format!("{CLIENT_NAME}-{}", now_secs(now)))
            .client_type("public");
        for scope in &request.scopes {
            call = call.scopes(scope);
        }
        if let Some(pkce) = &request.pkce {
            call = call
                .grant_types("authorization_code")
                .grant_types("refresh_token")
                .redirect_uris(&pkce.redirect_uri)
                .issuer_url(&pkce.issuer_url);
        }
        let out = call.send().await.map_err(classify)?;
        Ok(Registration {
            client_id: out
                .client_id()
                .ok_or_else(|| missing("clientId"))?
                .to_owned(),
            client_secret: SecretString::from(
                out.client_secret().ok_or_else(|| missing("clientSecret"))?,
            ),
            expires_at: UNIX_EPOCH + secs(out.client_secret_expires_at()),
        })
    }

    async fn start_device_authorization(
        &self,
        region: &str,
        registration: &Registration,
        start_url: &str,
        now: SystemTime,
    ) -> Result<DeviceAuthorization, SsoError> {
        let out = self
            .oidc(region)
            .start_device_authorization()
            .client_id(&registration.client_id)
            .client_secret(registration.client_secret.expose_secret())
            .start_url(start_url)
            .send()
            .await
            .map_err(classify)?;
        Ok(DeviceAuthorization {
            device_code: SecretString::from(
                out.device_code().ok_or_else(|| missing("deviceCode"))?,
            ),
            user_code: out
                .user_code()
                .ok_or_else(|| missing("userCode"))?
                .to_owned(),
            verification_uri: out
                .verification_uri()
                .ok_or_else(|| missing("verificationUri"))?
                .to_owned(),
            verification_uri_complete: out.verification_uri_complete().map(str::to_owned),
            expires_at: now + secs(i64::from(out.expires_in())),
            interval: secs(i64::from(out.interval()).max(1)),
        })
    }

    async fn create_token(
        &self,
        region: &str,
        registration: &Registration,
        grant: &Grant,
        now: SystemTime,
    ) -> Result<TokenSet, SsoError> {
        let mut call = self
            .oidc(region)
            .create_token()
            .client_id(&registration.client_id)
            .client_secret(registration.client_secret.expose_secret())
            .grant_type(grant.grant_type());
        call = match grant {
            Grant::DeviceCode(code) => call.device_code(code.expose_secret()),
            Grant::AuthorizationCode {
                code,
                verifier,
                redirect_uri,
            } => call
                .code(code.expose_secret())
                .code_verifier(verifier.expose_secret())
                .redirect_uri(redirect_uri),
            Grant::Refresh(token) => call.refresh_token(token.expose_secret()),
        };
        let out = call.send().await.map_err(classify)?;
        Ok(TokenSet {
            access_token: SecretString::from(
                out.access_token().ok_or_else(|| missing("accessToken"))?,
            ),
            expires_at: now + secs(i64::from(out.expires_in())),
            refresh_token: out.refresh_token().map(SecretString::from),
        })
    }

    fn authorize_url(
        &self,
        region: &str,
        registration: &Registration,
        request: &AuthorizeRequest,
    ) -> String {
        let mut url = format!(
            "{}/authorize?response_type=code&client_id={}&redirect_uri={}&state={}\
             &code_challenge_method=S256&code_challenge={}",
            self.settings.oidc_base(region),
            encode(&registration.client_id),
            encode(&request.redirect_uri),
            encode(&request.state),
            encode(&request.code_challenge),
        );
        if !request.scopes.is_empty() {
            url.push_str("&scopes=");
            url.push_str(&encode(&request.scopes.join(" ")));
        }
        url
    }

    async fn get_role_credentials(
        &self,
        region: &str,
        access_token: &SecretString,
        account_id: &str,
        role_name: &str,
    ) -> Result<TempCredentials, SsoError> {
        let out = self
            .portal(region)
            .get_role_credentials()
            .access_token(access_token.expose_secret())
            .account_id(account_id)
            .role_name(role_name)
            .send()
            .await
            .map_err(classify)?;
        let creds = out
            .role_credentials()
            .ok_or_else(|| missing("roleCredentials"))?;
        let expiration_ms = u64::try_from(creds.expiration()).unwrap_or(0);
        Ok(TempCredentials {
            access_key_id: creds
                .access_key_id()
                .ok_or_else(|| missing("accessKeyId"))?
                .to_owned(),
            secret_access_key: SecretString::from(
                creds
                    .secret_access_key()
                    .ok_or_else(|| missing("secretAccessKey"))?,
            ),
            session_token: SecretString::from(
                creds
                    .session_token()
                    .ok_or_else(|| missing("sessionToken"))?,
            ),
            expiration: UNIX_EPOCH + Duration::from_millis(expiration_ms),
            account_id: Some(account_id.to_owned()),
            assumed_role_arn: None,
        })
    }

    async fn list_accounts(
        &self,
        region: &str,
        access_token: &SecretString,
    ) -> Result<Vec<Account>, SsoError> {
        let mut out = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let page = self
                .portal(region)
                .list_accounts()
                .access_token(access_token.expose_secret())
                .set_next_token(next.take())
                .send()
                .await
                .map_err(classify)?;
            out.extend(page.account_list().iter().filter_map(|a| {
                Some(Account {
                    account_id: a.account_id()?.to_owned(),
                    account_name: a.account_name().map(str::to_owned),
                    email: a.email_address().map(str::to_owned),
                })
            }));
            match page.next_token() {
                Some(t) if !t.is_empty() => next = Some(t.to_owned()),
                _ => break,
            }
        }
        Ok(out)
    }

    async fn list_account_roles(
        &self,
        region: &str,
        access_token: &SecretString,
        account_id: &str,
    ) -> Result<Vec<String>, SsoError> {
        let mut out = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let page = self
                .portal(region)
                .list_account_roles()
                .access_token(access_token.expose_secret())
                .account_id(account_id)
                .set_next_token(next.take())
                .send()
                .await
                .map_err(classify)?;
            out.extend(
                page.role_list()
                    .iter()
                    .filter_map(|r| r.role_name().map(str::to_owned)),
            );
            match page.next_token() {
                Some(t) if !t.is_empty() => next = Some(t.to_owned()),
                _ => break,
            }
        }
        Ok(out)
    }

    async fn logout(&self, region: &str, access_token: &SecretString) -> Result<(), SsoError> {
        self.portal(region)
            .logout()
            .access_token(access_token.expose_secret())
            .send()
            .await
            .map(|_| ())
            .map_err(classify)
    }
}

fn now_secs(now: SystemTime) -> u64 {
    now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_authorize_url_carries_every_pkce_parameter_encoded() {
        let sso = AwsSso::new(SsoSettings::default());
        let reg = Registration {
            client_id: "client+1".into(),
            client_secret: SecretString::from("s"),
            expires_at: UNIX_EPOCH,
        };
        let url = sso.authorize_url(
            "eu-central-1",
            &reg,
            &AuthorizeRequest {
                redirect_uri: "http://127.0.0.1:4242/oauth/callback".into(),
                state: "st".into(),
                code_challenge: "ch".into(),
                scopes: vec!["sso:account:access".into()],
            },
        );
        assert_eq!(
            url,
            "https://oidc.eu-central-1.amazonaws.com/authorize?response_type=code\
             &client_id=client%2B1&redirect_uri=http%3A%2F%2F127.0.0.1%3A4242%2Foauth%2Fcallback\
             &state=st&code_challenge_method=S256&code_challenge=ch&scopes=sso%3Aaccount%3Aaccess"
        );
    }

    #[test]
    fn endpoints_come_from_config_only_and_must_be_safe() {
        let s = SsoSettings::resolve(None, None).unwrap();
        assert_eq!(
            s.oidc_base("eu-west-1"),
            "https://oidc.eu-west-1.amazonaws.com"
        );
        assert_eq!(
            s.oidc_base("cn-north-1"),
            "https://oidc.cn-north-1.amazonaws.com.cn"
        );
        assert_eq!(
            s.oidc_base("us-gov-west-1"),
            "https://oidc.us-gov-west-1.amazonaws.com"
        );
        assert_eq!(s.portal_endpoint, None);
        let s = SsoSettings::resolve(
            Some("http://127.0.0.1:9000/"),
            Some("http://127.0.0.1:9001"),
        )
        .unwrap();
        assert_eq!(s.oidc_base("x"), "http://127.0.0.1:9000");
        assert_eq!(s.portal_endpoint.as_deref(), Some("http://127.0.0.1:9001"));
        let err = SsoSettings::resolve(Some("http://example.com"), None).unwrap_err();
        assert!(err.to_string().contains("use https"), "{err}");
    }
}

//! IAM Identity Center (AWS SSO) as a source: the OIDC login (client registration, the device
//! code and PKCE authorization-code grants, refresh) and the portal's GetRoleCredentials, behind
//! [`SsoApi`] so the rest of the agent never sees an SDK type. The real implementation
//! (`aws.rs`) is aws-sdk-ssooidc and aws-sdk-sso; the endpoints are AWS's, or the overrides in
//! config.toml (so tests point the agent at a local Identity Center), which a touch must have
//! confirmed in this agent's life before a login goes there (`crate::trust`). The agent's
//! environment never names an endpoint.

mod aws;
mod logins;
pub mod pkce;

/// Identity Center's answers are part of the sources' vocabulary (sessions report them).
pub use crate::sources::SsoError;
pub use aws::{AwsSso, SsoSettings};
pub use logins::{CallbackError, LoginHold, LoginState, Logins, REFRESH_MARGIN};

use std::fmt;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use secrecy::SecretString;

use crate::sts::TempCredentials;

/// The name credagent registers its OIDC clients under.
pub const CLIENT_NAME: &str = "credagent";

/// An OIDC client registration (RegisterClient). Kept until it expires; the secret is needed
/// for every CreateToken, refreshes included.
#[derive(Clone)]
pub struct Registration {
    pub client_id: String,
    pub client_secret: SecretString,
    pub expires_at: SystemTime,
}

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration")
            .field("client_id", &self.client_id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// What a client registration asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientRequest {
    pub scopes: Vec<String>,
    /// `authorization_code` + `refresh_token` with PKCE, else the device code grant.
    pub pkce: Option<PkceClient>,
}

/// The PKCE client's redirect and issuer (the start URL).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PkceClient {
    pub redirect_uri: String,
    pub issuer_url: String,
}

/// A started device authorization (StartDeviceAuthorization).
pub struct DeviceAuthorization {
    pub device_code: SecretString,
    pub user_code: String,
    pub verification_uri: String,
    pub verification_uri_complete: Option<String>,
    pub expires_at: SystemTime,
    pub interval: Duration,
}

/// How a token is asked for (CreateToken).
pub enum Grant {
    DeviceCode(SecretString),
    AuthorizationCode {
        code: SecretString,
        verifier: SecretString,
        redirect_uri: String,
    },
    Refresh(SecretString),
}

impl Grant {
    fn grant_type(&self) -> &'static str {
        match self {
            Grant::DeviceCode(_) => "urn:ietf:params:oauth:grant-type:device_code",
            Grant::AuthorizationCode { .. } => "authorization_code",
            Grant::Refresh(_) => "refresh_token",
        }
    }
}

/// Tokens from CreateToken.
pub struct TokenSet {
    pub access_token: SecretString,
    pub expires_at: SystemTime,
    /// Absent when Identity Center issues none (then the login lasts as long as the access
    /// token).
    pub refresh_token: Option<SecretString>,
}

impl fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSet")
            .field("expires_at", &self.expires_at)
            .field("refresh_token", &self.refresh_token.is_some())
            .finish_non_exhaustive()
    }
}

/// An account the login can reach.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    pub account_id: String,
    pub account_name: Option<String>,
    pub email: Option<String>,
}

/// Where Identity Center's two services are, for one region.
#[async_trait]
pub trait SsoApi: Send + Sync {
    async fn register_client(
        &self,
        region: &str,
        request: &ClientRequest,
        now: SystemTime,
    ) -> Result<Registration, SsoError>;

    async fn start_device_authorization(
        &self,
        region: &str,
        registration: &Registration,
        start_url: &str,
        now: SystemTime,
    ) -> Result<DeviceAuthorization, SsoError>;

    async fn create_token(
        &self,
        region: &str,
        registration: &Registration,
        grant: &Grant,
        now: SystemTime,
    ) -> Result<TokenSet, SsoError>;

    /// The browser's authorize URL for a PKCE login, derived the way the AWS CLI derives it.
    fn authorize_url(
        &self,
        region: &str,
        registration: &Registration,
        request: &pkce::AuthorizeRequest,
    ) -> String;

    async fn get_role_credentials(
        &self,
        region: &str,
        access_token: &SecretString,
        account_id: &str,
        role_name: &str,
    ) -> Result<TempCredentials, SsoError>;

    async fn list_accounts(
        &self,
        region: &str,
        access_token: &SecretString,
    ) -> Result<Vec<Account>, SsoError>;

    async fn list_account_roles(
        &self,
        region: &str,
        access_token: &SecretString,
        account_id: &str,
    ) -> Result<Vec<String>, SsoError>;

    async fn logout(&self, region: &str, access_token: &SecretString) -> Result<(), SsoError>;
}

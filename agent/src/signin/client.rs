//! The AWS Sign-In service's OAuth 2.0 endpoints, as the AWS CLI v2 uses them for `aws login`
//! (`awscli/customizations/login/utils.py`; botocore `credentials.py` `LoginCredentialFetcher`;
//! the `signin` model's `CreateOAuth2Token`): the authorize URL the browser opens, and the
//! unsigned `POST /v1/token` that redeems a code or a refresh token, each with a DPoP proof of
//! the login's key.

use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use secrecy::{ExposeSecret, SecretString};

use super::dpop::DpopKey;
use crate::sts::TempCredentials;

/// The public clients `aws login` signs in as (`CLIENT_ID` in the CLI's `login/utils.py`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientId {
    /// The browser runs on this machine and comes back to the agent's `/oauth/callback`.
    SameDevice,
    /// `--remote`: the browser runs elsewhere and shows a code to paste.
    CrossDevice,
}

impl ClientId {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientId::SameDevice => "arn:aws:signin:::devtools/same-device",
            ClientId::CrossDevice => "arn:aws:signin:::devtools/cross-device",
        }
    }

    pub fn parse(s: &str) -> Option<ClientId> {
        [ClientId::SameDevice, ClientId::CrossDevice]
            .into_iter()
            .find(|c| c.as_str() == s)
    }
}

/// The Sign-In endpoint of `region`'s partition (the `signin` endpoint rules, with
/// `IsControlPlane = false`).
pub fn endpoint_for(region: &str) -> String {
    let suffix = if region.starts_with("cn-") {
        "amazonaws.cn"
    } else if region.starts_with("us-gov-") {
        "amazonaws-us-gov.com"
    } else {
        "aws.amazon.com"
    };
    format!("https://{region}.signin.{suffix}")
}

/// What went wrong with a Sign-In request, with what the person does about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigninError {
    /// `TOKEN_EXPIRED`: the login's 12 hours are over, or it was signed out.
    #[error("the AWS sign-in session has expired: run `credctl login {profile}`")]
    Expired { profile: String },
    /// `USER_CREDENTIALS_CHANGED`: the password changed since the sign-in.
    #[error("the AWS sign-in of {profile} ended because its password changed: run `credctl login {profile}` and sign in with the new password")]
    CredentialsChanged { profile: String },
    /// `INSUFFICIENT_PERMISSIONS`: the principal may not use `signin:CreateOAuth2Token`.
    #[error("AWS Sign-In refused {profile}: its principal lacks permission for signin:CreateOAuth2Token (the SignInLocalDevelopmentAccess managed policy grants it); ask your administrator")]
    NotPermitted { profile: String },
    /// `AUTHCODE_EXPIRED`: the browser sign-in took too long to come back.
    #[error("the sign-in code expired before it could be redeemed: run `credctl login {profile}` again and finish in the browser")]
    CodeExpired { profile: String },
    /// Another refusal, in the service's words.
    #[error("AWS Sign-In refused ({code}): {message}")]
    Refused { code: String, message: String },
    /// Network trouble, throttling or a 5xx: retrying may succeed.
    #[error("AWS Sign-In at {endpoint} could not be reached: {detail}")]
    Unreachable { endpoint: String, detail: String },
    /// No sign-in of the profile is open in the agent (none yet, or it is sealed until a touch).
    #[error("the AWS sign-in of {profile} is not open: a touch opens a sealed one (`credctl use ROLE` on a role that uses it), or sign in with `credctl login {profile}`")]
    NotOpen { profile: String },
    /// An answer that is not what the service sends.
    #[error("AWS Sign-In sent an answer credagent does not understand: {detail}")]
    Protocol { detail: String },
}

impl SigninError {
    /// Whether trying again later may succeed without the person doing anything.
    pub fn is_transient(&self) -> bool {
        matches!(self, SigninError::Unreachable { .. })
    }
}

/// What a token request returns.
pub struct Tokens {
    pub credentials: TempCredentials,
    /// The next refresh token: each refresh returns a new one (the old one is spent).
    pub refresh_token: SecretString,
    /// The `login_session` ARN (the ID token's `sub`), from a code exchange only.
    pub login_session: Option<String>,
}

/// The `CreateOAuth2Token` body (the model's `tokenInput`, sent bare), borrowing its secrets.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct TokenBody<'a> {
    client_id: &'a str,
    grant_type: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code_verifier: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    redirect_uri: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<&'a str>,
}

type Client = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
>;

/// The Sign-In service of one endpoint.
pub struct Signin {
    /// `scheme://host[:port]`, no path: the authorize and token URLs hang off it.
    base: String,
    client: Client,
    /// The profile this login is for, named in every error's advice.
    profile: String,
}

impl Signin {
    /// The service at `base` (`endpoint_for(region)`, or the `signin_endpoint` override a touch
    /// confirmed), for `profile`'s login.
    pub fn new(base: &str, profile: &str) -> Result<Signin, SigninError> {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| SigninError::Unreachable {
                endpoint: base.to_owned(),
                detail: format!("no system root certificates: {e}"),
            })?
            .https_or_http()
            .enable_http1()
            .build();
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build(https);
        Ok(Signin {
            base: base.trim_end_matches('/').to_owned(),
            client,
            profile: profile.to_owned(),
        })
    }

    /// The URL the browser opens (the CLI's `_get_authorization_uri`, parameters in its order;
    /// the method is literally `SHA-256`).
    pub fn authorize_url(
        &self,
        client: ClientId,
        state: &str,
        code_challenge: &str,
        redirect_uri: &str,
    ) -> String {
        let enc = |s: &str| -> String {
            s.bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                        (b as char).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect()
        };
        format!(
            "{}/v1/authorize?response_type=code&client_id={}&state={}&code_challenge_method=SHA-256&scope=openid&redirect_uri={}&code_challenge={}",
            self.base,
            enc(client.as_str()),
            enc(state),
            enc(redirect_uri),
            enc(code_challenge)
        )
    }

    /// Where `--remote`'s browser shows the code to paste.
    pub fn confirmation_uri(&self) -> String {
        format!("{}/v1/sessions/confirmation", self.base)
    }

    /// Redeems the authorization code of a sign-in `key` made (PKCE `verifier`).
    pub async fn exchange_code(
        &self,
        key: &DpopKey,
        client: ClientId,
        code: &SecretString,
        verifier: &SecretString,
        redirect_uri: &str,
        now: SystemTime,
    ) -> Result<Tokens, SigninError> {
        let body = TokenBody {
            client_id: client.as_str(),
            grant_type: "authorization_code",
            code: Some(code.expose_secret()),
            code_verifier: Some(verifier.expose_secret()),
            redirect_uri: Some(redirect_uri),
            refresh_token: None,
        };
        self.token(key, &body, now).await
    }

    /// Trades `refresh_token` for fresh credentials and the next refresh token.
    pub async fn refresh(
        &self,
        key: &DpopKey,
        client: ClientId,
        refresh_token: &SecretString,
        now: SystemTime,
    ) -> Result<Tokens, SigninError> {
        let body = TokenBody {
            client_id: client.as_str(),
            grant_type: "refresh_token",
            code: None,
            code_verifier: None,
            redirect_uri: None,
            refresh_token: Some(refresh_token.expose_secret()),
        };
        self.token(key, &body, now).await
    }

    async fn token(
        &self,
        key: &DpopKey,
        body: &TokenBody<'_>,
        now: SystemTime,
    ) -> Result<Tokens, SigninError> {
        let url = format!("{}/v1/token", self.base);
        let unreachable = |detail: String| SigninError::Unreachable {
            endpoint: self.base.clone(),
            detail,
        };
        // The proof says when it was made: the clock, whatever `now` the caller reasons with.
        let iat = crate::util::unix_secs(SystemTime::now());
        let proof = key
            .proof("POST", &url, iat, &uuid::Uuid::new_v4().to_string())
            .map_err(|e| unreachable(e.to_string()))?;
        // The body holds a code or a refresh token: serialized from borrowed secrets straight
        // into one buffer, which is wiped once sent (no copy in a JSON value left behind).
        let body = zeroize::Zeroizing::new(
            serde_json::to_vec(body).map_err(|e| unreachable(e.to_string()))?,
        );
        let request = hyper::Request::post(&url)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header("DPoP", proof)
            .body(Full::new(Bytes::copy_from_slice(&body)))
            .map_err(|e| unreachable(e.to_string()))?;
        let response = tokio::time::timeout(Duration::from_secs(30), self.client.request(request))
            .await
            .map_err(|_| unreachable("no answer within 30 s".into()))?
            .map_err(|e| unreachable(e.to_string()))?;
        let status = response.status();
        let error_type = response
            .headers()
            .get("x-amzn-ErrorType")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(':').next().unwrap_or(v).to_owned());
        let bytes = tokio::time::timeout(Duration::from_secs(30), response.into_body().collect())
            .await
            .map_err(|_| unreachable("the answer stalled".into()))?
            .map_err(|e| unreachable(e.to_string()))?
            .to_bytes();
        let bytes = zeroize::Zeroizing::new(bytes.to_vec());
        if status.is_success() {
            return self.parse_tokens(&bytes, now);
        }
        Err(self.refusal(status, error_type, &bytes))
    }

    fn refusal(
        &self,
        status: hyper::StatusCode,
        error_type: Option<String>,
        body: &[u8],
    ) -> SigninError {
        let json: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        let text = |k: &str| json.get(k).and_then(|v| v.as_str()).map(str::to_owned);
        // The exception's name is in a header, `__type` or `code`; its reason in `error`.
        let kind = error_type
            .or_else(|| text("__type"))
            .or_else(|| text("code"))
            .unwrap_or_default();
        let kind = kind.rsplit('#').next().unwrap_or(&kind).to_owned();
        let message = text("message").unwrap_or_default();
        let profile = self.profile.clone();
        match text("error").as_deref() {
            Some("TOKEN_EXPIRED") => return SigninError::Expired { profile },
            Some("USER_CREDENTIALS_CHANGED") => return SigninError::CredentialsChanged { profile },
            Some("INSUFFICIENT_PERMISSIONS") => return SigninError::NotPermitted { profile },
            Some("AUTHCODE_EXPIRED") => return SigninError::CodeExpired { profile },
            _ => {}
        }
        if status.is_server_error() || status == hyper::StatusCode::TOO_MANY_REQUESTS {
            return SigninError::Unreachable {
                endpoint: self.base.clone(),
                detail: format!("HTTP {status} {kind} {message}").trim().to_owned(),
            };
        }
        SigninError::Refused {
            code: if kind.is_empty() {
                format!("HTTP {}", status.as_u16())
            } else {
                kind
            },
            message: crate::util::printable(&message),
        }
    }

    fn parse_tokens(&self, body: &[u8], now: SystemTime) -> Result<Tokens, SigninError> {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Access {
            access_key_id: String,
            // Moved into `SecretString`s below, never copied.
            secret_access_key: String,
            session_token: String,
        }
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Answer {
            access_token: Access,
            expires_in: u64,
            refresh_token: String,
            #[serde(default)]
            id_token: Option<String>,
        }
        let answer: Answer = serde_json::from_slice(body).map_err(|e| SigninError::Protocol {
            detail: format!("the token answer is not what CreateOAuth2Token returns: {e}"),
        })?;
        let login_session = answer.id_token.as_deref().map(subject_of).transpose()?;
        let account_id = login_session
            .as_deref()
            .and_then(|arn| arn.split(':').nth(4))
            .filter(|a| !a.is_empty())
            .map(str::to_owned);
        Ok(Tokens {
            credentials: TempCredentials {
                access_key_id: answer.access_token.access_key_id,
                secret_access_key: SecretString::from(answer.access_token.secret_access_key),
                session_token: SecretString::from(answer.access_token.session_token),
                // At most 15 minutes, as the service's model says: a longer answer is not
                // believed.
                expiration: now + Duration::from_secs(answer.expires_in.min(900)),
                account_id,
                assumed_role_arn: None,
            },
            refresh_token: SecretString::from(answer.refresh_token),
            login_session,
        })
    }
}

/// The `sub` of an ID token: the `login_session` ARN. Read as the AWS CLI reads it (the
/// payload decoded, the signature not checked: it names the session, it vouches for nothing
/// here, the credentials beside it do).
fn subject_of(id_token: &str) -> Result<String, SigninError> {
    let bad = |why: &str| SigninError::Protocol {
        detail: format!("the ID token {why}"),
    };
    let payload = id_token
        .split('.')
        .nth(1)
        .ok_or_else(|| bad("is not a JWT"))?;
    let raw = URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| bad("payload is not base64url"))?;
    let claims: serde_json::Value =
        serde_json::from_slice(&raw).map_err(|_| bad("payload is not JSON"))?;
    let sub = claims
        .get("sub")
        .and_then(|s| s.as_str())
        .ok_or_else(|| bad("has no sub"))?;
    if !sub.starts_with("arn:") || sub.chars().any(char::is_control) {
        return Err(bad("sub is not an ARN"));
    }
    Ok(sub.to_owned())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_follow_the_partition() {
        assert_eq!(
            endpoint_for("us-east-1"),
            "https://us-east-1.signin.aws.amazon.com"
        );
        assert_eq!(
            endpoint_for("cn-north-1"),
            "https://cn-north-1.signin.amazonaws.cn"
        );
        assert_eq!(
            endpoint_for("us-gov-west-1"),
            "https://us-gov-west-1.signin.amazonaws-us-gov.com"
        );
    }

    #[test]
    fn the_authorize_url_is_the_clis() {
        let s = Signin::new("https://us-east-1.signin.aws.amazon.com/", "dev").unwrap();
        let url = s.authorize_url(
            ClientId::SameDevice,
            "0b4f9e1e-6d2c-4a7e-9b1e-2f1c3d4e5f60",
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
            "http://127.0.0.1:54321/oauth/callback",
        );
        assert_eq!(
            url,
            "https://us-east-1.signin.aws.amazon.com/v1/authorize?response_type=code&client_id=arn%3Aaws%3Asignin%3A%3A%3Adevtools%2Fsame-device&state=0b4f9e1e-6d2c-4a7e-9b1e-2f1c3d4e5f60&code_challenge_method=SHA-256&scope=openid&redirect_uri=http%3A%2F%2F127.0.0.1%3A54321%2Foauth%2Fcallback&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        assert_eq!(
            s.confirmation_uri(),
            "https://us-east-1.signin.aws.amazon.com/v1/sessions/confirmation"
        );
    }

    #[test]
    fn each_refusal_says_what_to_do() {
        let s = Signin::new("https://h", "dev").unwrap();
        let e = |status: u16, header: Option<&str>, body: &str| {
            s.refusal(
                hyper::StatusCode::from_u16(status).unwrap(),
                header.map(str::to_owned),
                body.as_bytes(),
            )
        };
        let expired = e(
            401,
            Some("AccessDeniedException"),
            r#"{"error":"TOKEN_EXPIRED","message":"x"}"#,
        );
        assert_eq!(
            expired,
            SigninError::Expired {
                profile: "dev".into()
            }
        );
        assert!(expired.to_string().contains("run `credctl login dev`"));
        assert!(matches!(
            e(
                403,
                None,
                r#"{"__type":"AccessDeniedException","error":"USER_CREDENTIALS_CHANGED","message":"x"}"#
            ),
            SigninError::CredentialsChanged { .. }
        ));
        assert!(matches!(
            e(
                403,
                None,
                r#"{"error":"INSUFFICIENT_PERMISSIONS","message":"x"}"#
            ),
            SigninError::NotPermitted { .. }
        ));
        assert!(matches!(
            e(401, None, r#"{"error":"AUTHCODE_EXPIRED","message":"x"}"#),
            SigninError::CodeExpired { .. }
        ));
        assert!(e(503, None, "").is_transient());
        assert!(e(429, Some("TooManyRequestsError:http://x"), "{}").is_transient());
        match e(
            400,
            Some("ValidationException"),
            r#"{"message":"bad \u001b[2Jthing"}"#,
        ) {
            SigninError::Refused { code, message } => {
                assert_eq!(code, "ValidationException");
                assert!(!message.contains('\u{1b}'));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_token_answer_gives_credentials_the_next_refresh_token_and_the_login_session() {
        let s = Signin::new("https://h", "dev").unwrap();
        let claims = URL_SAFE_NO_PAD.encode(
            r#"{"sub":"arn:aws:iam::012345678901:user/Admin","aud":"arn:aws:signin:::cli/same-device"}"#,
        );
        let body = format!(
            r#"{{"accessToken":{{"accessKeyId":"ASIAEXAMPLE","secretAccessKey":"s","sessionToken":"t"}},"tokenType":"aws_sigv4","expiresIn":3600,"refreshToken":"r2","idToken":"e30.{claims}.sig"}}"#
        );
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let t = s.parse_tokens(body.as_bytes(), now).unwrap();
        assert_eq!(t.credentials.access_key_id, "ASIAEXAMPLE");
        assert_eq!(
            t.credentials.expiration,
            now + Duration::from_secs(900),
            "never believed past 15 minutes"
        );
        assert_eq!(t.credentials.account_id.as_deref(), Some("012345678901"));
        assert_eq!(t.refresh_token.expose_secret(), "r2");
        assert_eq!(
            t.login_session.as_deref(),
            Some("arn:aws:iam::012345678901:user/Admin")
        );
        assert!(matches!(
            s.parse_tokens(b"{}", now),
            Err(SigninError::Protocol { .. })
        ));
        let no_arn = format!(
            r#"{{"accessToken":{{"accessKeyId":"A","secretAccessKey":"s","sessionToken":"t"}},"expiresIn":900,"refreshToken":"r","idToken":"e30.{}.s"}}"#,
            URL_SAFE_NO_PAD.encode(r#"{"sub":"nobody"}"#)
        );
        assert!(s.parse_tokens(no_arn.as_bytes(), now).is_err());
    }
}

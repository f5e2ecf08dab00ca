//! The WebAuthn relying party: webauthn-rs configured for RP ID `localhost` on any port, and
//! the registration/authentication flow the policy picks (touch-only security key, passkey
//! with user verification, or attested passkey), plus reading what the authenticator reported.
//!
//! Every key is stored as a webauthn-rs `SecurityKey`. `SecurityKey`, `Passkey` and
//! `AttestedPasskey` are the same persisted `Credential` under different names, so a key moves
//! between flows by a serde round trip (webauthn-rs's own storage format). Whatever the flow,
//! webauthn-rs keeps enforcing user verification for a key registered with it.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::Serialize;
use uuid::Uuid;
use webauthn_rs::prelude::{
    AttestationCaList, AttestedPasskey, AttestedPasskeyAuthentication, AttestedPasskeyRegistration,
    AuthenticationResult, CreationChallengeResponse, CredentialID, Passkey, PasskeyAuthentication,
    PasskeyRegistration, PublicKeyCredential, RegisterPublicKeyCredential,
    RequestChallengeResponse, SecurityKey, SecurityKeyAuthentication, SecurityKeyRegistration, Url,
    Webauthn, WebauthnBuilder, WebauthnError,
};

use super::ceremony::CEREMONY_TTL;
use super::error::ApprovalError;
use super::keys::KeyRecord;
use super::policy::{ApprovalPolicy, AuthenticatorKind, UserVerification};

/// The relying party ID: WebAuthn's scope for credentials, fixed whatever the port.
pub const RP_ID: &str = "localhost";

/// The name authenticators may show.
pub const RP_NAME: &str = "credagent";

/// The user name registered credentials carry (they are not discoverable, so it is cosmetic).
const USER_NAME: &str = "credagent";

/// webauthn-rs state of a registration in progress, by flow.
pub(crate) enum RegState {
    SecurityKey(SecurityKeyRegistration),
    Passkey(PasskeyRegistration),
    AttestedPasskey(AttestedPasskeyRegistration),
}

/// webauthn-rs state of an authentication in progress, by flow.
pub(crate) enum AuthState {
    SecurityKey(SecurityKeyAuthentication),
    Passkey(PasskeyAuthentication),
    AttestedPasskey(AttestedPasskeyAuthentication),
}

/// A verified registration and what the authenticator said about itself.
pub(crate) struct Registered {
    pub key: SecurityKey,
    pub aaguid: Option<Uuid>,
    pub counter: u32,
    pub user_verified: bool,
    pub attestation_format: String,
    /// The attestation chained to a configured `attestation_ca` (checked by webauthn-rs).
    pub attested_by_ca: bool,
}

pub(crate) struct RelyingParty {
    webauthn: Webauthn,
    /// Which flow to run.
    user_verification: UserVerification,
    /// Whether known software authenticators may register and approve.
    allow_software: bool,
    /// The loaded `attestation_ca` files, if any.
    ca_list: Option<AttestationCaList>,
}

impl RelyingParty {
    /// The relying party for `http://localhost:PORT`: assertions from any other origin, another
    /// port of localhost included, are refused.
    pub(crate) fn new(
        policy: &ApprovalPolicy,
        ca_list: Option<AttestationCaList>,
        port: u16,
    ) -> Result<Self, ApprovalError> {
        let internal = |err: WebauthnError| ApprovalError::Internal {
            reason: err.to_string(),
        };
        let origin = Url::parse(&format!("http://localhost:{port}")).map_err(|err| {
            ApprovalError::Internal {
                reason: err.to_string(),
            }
        })?;
        let touch_only = policy.user_verification == UserVerification::Discouraged;
        let webauthn = WebauthnBuilder::new(RP_ID, &origin)
            .map_err(internal)?
            .rp_name(RP_NAME)
            .timeout(CEREMONY_TTL)
            .danger_set_user_presence_only_security_keys(touch_only)
            .build()
            .map_err(internal)?;
        Ok(Self {
            webauthn,
            user_verification: policy.user_verification,
            allow_software: policy.allow_software_authenticators,
            ca_list,
        })
    }

    pub(crate) fn start_registration(
        &self,
        display_name: &str,
        exclude: Vec<CredentialID>,
    ) -> Result<(CreationChallengeResponse, RegState), ApprovalError> {
        let user = Uuid::new_v4();
        let exclude = Some(exclude).filter(|e| !e.is_empty());
        let started = match (self.user_verification, &self.ca_list) {
            (UserVerification::Discouraged, ca) => self
                .webauthn
                .start_securitykey_registration(
                    user,
                    USER_NAME,
                    display_name,
                    exclude,
                    ca.clone(),
                    None,
                )
                .map(|(ccr, s)| (ccr, RegState::SecurityKey(s))),
            (UserVerification::Required, None) => self
                .webauthn
                .start_passkey_registration(user, USER_NAME, display_name, exclude)
                .map(|(ccr, s)| (ccr, RegState::Passkey(s))),
            (UserVerification::Required, Some(ca)) => self
                .webauthn
                .start_attested_passkey_registration(
                    user,
                    USER_NAME,
                    display_name,
                    exclude,
                    ca.clone(),
                    None,
                )
                .map(|(ccr, s)| (ccr, RegState::AttestedPasskey(s))),
        };
        started.map_err(|err| ApprovalError::Internal {
            reason: err.to_string(),
        })
    }

    pub(crate) fn finish_registration(
        &self,
        reg: &RegisterPublicKeyCredential,
        state: &RegState,
    ) -> Result<Registered, ApprovalError> {
        let refused = |err| registration_error(err, &reg.response.client_data_json);
        let key: SecurityKey = match state {
            RegState::SecurityKey(s) => self
                .webauthn
                .finish_securitykey_registration(reg, s)
                .map_err(refused)?,
            RegState::Passkey(s) => convert(
                &self
                    .webauthn
                    .finish_passkey_registration(reg, s)
                    .map_err(refused)?,
            )?,
            RegState::AttestedPasskey(s) => convert(
                &self
                    .webauthn
                    .finish_attested_passkey_registration(reg, s)
                    .map_err(refused)?,
            )?,
        };
        let facts = registration_facts(&reg.response.attestation_object).ok_or_else(|| {
            ApprovalError::RegistrationInvalid {
                reason: "unreadable attestation object".into(),
            }
        })?;
        Ok(Registered {
            key,
            aaguid: facts.aaguid,
            counter: facts.counter,
            user_verified: facts.user_verified,
            attestation_format: facts.format,
            attested_by_ca: self.ca_list.is_some(),
        })
    }

    /// The policy's user verification (which flow runs).
    pub(crate) fn user_verification(&self) -> UserVerification {
        self.user_verification
    }

    pub(crate) fn allows_software(&self) -> bool {
        self.allow_software
    }

    /// Why this key may not approve under the current policy, if it may not. With a CA list,
    /// the attestation stored at registration is re-verified against today's list (webauthn-rs
    /// checks certificate validity against the system clock here).
    pub(crate) fn refusal(&self, record: &KeyRecord) -> Option<String> {
        if record.kind == AuthenticatorKind::Software && !self.allow_software {
            return Some(format!("{}: software authenticator", record.name));
        }
        if let Some(ca_list) = &self.ca_list {
            let attested = convert::<_, AttestedPasskey>(&record.credential)
                .ok()
                .is_some_and(|k| k.verify_attestation(ca_list).is_ok());
            if !attested {
                return Some(format!("{}: not attested by a configured CA", record.name));
            }
        }
        None
    }

    pub(crate) fn start_authentication(
        &self,
        keys: &[SecurityKey],
    ) -> Result<(RequestChallengeResponse, AuthState), ApprovalError> {
        let internal = |err: WebauthnError| ApprovalError::Internal {
            reason: err.to_string(),
        };
        match (self.user_verification, &self.ca_list) {
            (UserVerification::Discouraged, _) => self
                .webauthn
                .start_securitykey_authentication(keys)
                .map(|(rcr, s)| (rcr, AuthState::SecurityKey(s)))
                .map_err(internal),
            (UserVerification::Required, None) => {
                let keys: Vec<Passkey> = keys.iter().map(convert).collect::<Result<_, _>>()?;
                self.webauthn
                    .start_passkey_authentication(&keys)
                    .map(|(rcr, s)| (rcr, AuthState::Passkey(s)))
                    .map_err(internal)
            }
            (UserVerification::Required, Some(_)) => {
                let keys: Vec<AttestedPasskey> =
                    keys.iter().map(convert).collect::<Result<_, _>>()?;
                self.webauthn
                    .start_attested_passkey_authentication(&keys)
                    .map(|(rcr, s)| (rcr, AuthState::AttestedPasskey(s)))
                    .map_err(internal)
            }
        }
    }

    /// Verifies an assertion against its ceremony (challenge, origin, RP ID hash, signature,
    /// user presence/verification, counter against the ceremony's snapshot).
    pub(crate) fn finish_authentication(
        &self,
        credential: &PublicKeyCredential,
        state: &AuthState,
    ) -> Result<AuthenticationResult, WebauthnError> {
        let result = match state {
            AuthState::SecurityKey(s) => self
                .webauthn
                .finish_securitykey_authentication(credential, s),
            AuthState::Passkey(s) => self.webauthn.finish_passkey_authentication(credential, s),
            AuthState::AttestedPasskey(s) => self
                .webauthn
                .finish_attested_passkey_authentication(credential, s),
        }?;
        if self.user_verification == UserVerification::Required && !result.user_verified() {
            return Err(WebauthnError::UserNotVerified);
        }
        Ok(result)
    }
}

/// Moves a credential between webauthn-rs's credential types through their shared serde form.
pub(crate) fn convert<A: Serialize, B: DeserializeOwned>(value: &A) -> Result<B, ApprovalError> {
    serde_json::to_value(value)
        .and_then(serde_json::from_value)
        .map_err(|err| ApprovalError::Internal {
            reason: format!("credential conversion failed: {err}"),
        })
}

/// The origin a client put in its clientDataJSON, for messages.
fn claimed_origin(client_data_json: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(client_data_json)
        .ok()
        .and_then(|v| v.get("origin")?.as_str().map(str::to_owned))
        .map(|o| o.chars().take(200).collect())
        .unwrap_or_else(|| "(unreadable)".into())
}

fn registration_error(err: WebauthnError, client_data_json: &[u8]) -> ApprovalError {
    use WebauthnError as E;
    match err {
        E::InvalidRPOrigin => ApprovalError::OriginRefused {
            origin: claimed_origin(client_data_json),
        },
        E::UserNotVerified => ApprovalError::UserNotVerified,
        E::AttestationNotVerifiable
        | E::AttestationChainNotTrusted(_)
        | E::AttestationUntrustedAaguid
        | E::AttestationCertificateTrustStoreEmpty
        | E::AttestationFormatMissingAaguid
        | E::AttestationTrustFailure
        | E::AttestationNotSupported
        | E::CredentialMayNotBeHardwareBound => ApprovalError::AttestationUntrusted {
            reason: err.to_string(),
        },
        other => ApprovalError::RegistrationInvalid {
            reason: other.to_string(),
        },
    }
}

/// Maps a failed assertion; `key` names the key the assertion claimed to come from.
pub(crate) fn assertion_error(
    err: WebauthnError,
    credential: &PublicKeyCredential,
    key: Option<String>,
) -> ApprovalError {
    use WebauthnError as E;
    match err {
        E::InvalidRPOrigin => ApprovalError::OriginRefused {
            origin: claimed_origin(&credential.response.client_data_json),
        },
        E::CredentialPossibleCompromise => ApprovalError::CounterRegression {
            key: key.unwrap_or_else(|| "(unknown)".into()),
        },
        E::UserNotVerified => ApprovalError::UserNotVerified,
        other => ApprovalError::AssertionInvalid {
            reason: other.to_string(),
        },
    }
}

/// What the authenticator data of a registration says.
struct RegistrationFacts {
    format: String,
    user_verified: bool,
    counter: u32,
    /// `None` when the authenticator (or the browser) sent an all-zero AAGUID.
    aaguid: Option<Uuid>,
}

/// Reads fmt and authData (rpIdHash 32 | flags 1 | signCount 4 | AAGUID 16 | ...) from an
/// attestation object that webauthn-rs has already verified.
fn registration_facts(attestation_object: &[u8]) -> Option<RegistrationFacts> {
    use serde_cbor_2::Value;
    let map: BTreeMap<String, Value> = serde_cbor_2::from_slice(attestation_object).ok()?;
    let Value::Text(format) = map.get("fmt")? else {
        return None;
    };
    let Value::Bytes(auth_data) = map.get("authData")? else {
        return None;
    };
    let flags = *auth_data.get(32)?;
    let counter = u32::from_be_bytes(auth_data.get(33..37)?.try_into().ok()?);
    let aaguid = if flags & 0x40 != 0 {
        let bytes: [u8; 16] = auth_data.get(37..53)?.try_into().ok()?;
        Some(Uuid::from_bytes(bytes)).filter(|u| !u.is_nil())
    } else {
        None
    };
    Some(RegistrationFacts {
        format: format.clone(),
        user_verified: flags & 0x04 != 0,
        counter,
        aaguid,
    })
}

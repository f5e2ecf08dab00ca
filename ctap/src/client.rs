//! The CTAP2 client: WebAuthn options in, CTAP2 commands to any `CtapDevice`, WebAuthn answers
//! out. It implements webauthn-authenticator-rs's `AuthenticatorBackendHashedClientData`, so
//! `WebauthnAuthenticator::do_registration/do_authentication` still build clientDataJSON and
//! check the origin against the RP ID before anything reaches the device.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_cbor_2::Value;
use webauthn_authenticator_rs::error::{CtapError as LibCtapError, WebauthnCError};
use webauthn_authenticator_rs::prelude::{PublicKeyCredential, RegisterPublicKeyCredential};
use webauthn_authenticator_rs::AuthenticatorBackendHashedClientData;
use webauthn_rs_proto::{
    AuthenticatorAssertionResponseRaw, AuthenticatorAttestationResponseRaw, AuthenticatorTransport,
    PublicKeyCredentialCreationOptions, PublicKeyCredentialRequestOptions, ResidentKeyRequirement,
    UserVerificationPolicy,
};
use zeroize::Zeroizing;

use super::auth_data::AuthData;
use super::cbor::{self, Map};
use super::commands::*;
use super::error::CtapError;
use super::hmac_secret::{prf_salt, HmacSecretSession, EXTENSION};
use super::pin_uv::{sha256, KeyAgreement, PinUvProtocol};
use super::prf::PrfInputs;
use super::{CtapDevice, PrfOutput};

/// Asks the user for the device PIN; `None` when there is no one to ask.
pub type PinCallback = Box<dyn FnMut() -> Option<Zeroizing<String>>>;

/// How user verification is obtained for one command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Uv {
    None,
    BuiltIn,
    Pin,
}

/// A CTAP2 client over one device.
pub struct CtapClient<D: CtapDevice> {
    device: D,
    info: Option<Info>,
    pin: Option<PinCallback>,
    transports: Option<Vec<AuthenticatorTransport>>,
    /// Ask for hmac-secret at the next makeCredential.
    create_hmac_secret: bool,
    /// PRF inputs for the next getAssertion.
    prf: Option<PrfInputs>,
    /// After makeCredential with hmac-secret: whether the signed extensions say it is on.
    prf_enabled: Option<bool>,
    /// After getAssertion with PRF inputs: the first output.
    prf_output: Option<PrfOutput>,
    /// The detailed error behind the last `WebauthnCError` returned.
    last_error: Option<CtapError>,
}

impl<D: CtapDevice> CtapClient<D> {
    pub fn new(device: D) -> Self {
        CtapClient {
            device,
            info: None,
            pin: None,
            transports: None,
            create_hmac_secret: false,
            prf: None,
            prf_enabled: None,
            prf_output: None,
            last_error: None,
        }
    }

    pub fn with_pin_callback(mut self, pin: PinCallback) -> Self {
        self.pin = Some(pin);
        self
    }

    pub fn with_transports(mut self, transports: Vec<AuthenticatorTransport>) -> Self {
        self.transports = Some(transports);
        self
    }

    pub fn device(&self) -> &D {
        &self.device
    }

    pub fn into_device(self) -> D {
        self.device
    }

    /// Request hmac-secret (PRF) on the next registration.
    pub fn request_prf_on_create(&mut self, on: bool) {
        self.create_hmac_secret = on;
    }

    /// PRF inputs for the next authentication.
    pub fn set_prf_inputs(&mut self, prf: Option<PrfInputs>) {
        self.prf = prf;
    }

    /// `Some(enabled)` after a registration that asked for PRF.
    pub fn take_prf_enabled(&mut self) -> Option<bool> {
        self.prf_enabled.take()
    }

    /// The PRF output of the last authentication, if one was asked for and produced.
    pub fn take_prf_output(&mut self) -> Option<PrfOutput> {
        self.prf_output.take()
    }

    /// The CTAP2-level reason behind the last failure, if it came from here.
    pub fn take_error(&mut self) -> Option<CtapError> {
        self.last_error.take()
    }

    fn info(&mut self) -> Result<Info, CtapError> {
        if let Some(info) = &self.info {
            return Ok(info.clone());
        }
        let info = Info::decode(&self.device.command(CMD_GET_INFO, &[])?)?;
        self.info = Some(info.clone());
        Ok(info)
    }

    fn fail(&mut self, err: CtapError) -> WebauthnCError {
        let lib = match &err {
            CtapError::Unsupported(_) | CtapError::UnsupportedAlgorithm => {
                WebauthnCError::NotSupported
            }
            CtapError::UnsupportedOption => WebauthnCError::NotSupported,
            CtapError::NoCredentials => WebauthnCError::Ctap(LibCtapError::Ctap2NoCredentials),
            CtapError::Malformed(_) => WebauthnCError::Cbor,
            _ => WebauthnCError::Internal,
        };
        self.last_error = Some(err);
        lib
    }

    /// Decides how to verify the user for `policy`.
    fn plan_uv(&self, info: &Info, policy: UserVerificationPolicy) -> Result<Uv, CtapError> {
        let built_in = info.option("uv") == Some(true);
        let pin = info.option("clientPin") == Some(true);
        match policy {
            UserVerificationPolicy::Required if built_in => Ok(Uv::BuiltIn),
            UserVerificationPolicy::Required if pin => Ok(Uv::Pin),
            UserVerificationPolicy::Required => Err(CtapError::Unsupported(
                "the relying party requires user verification, but this authenticator can \
                 verify no one (no PIN set, no built-in verification): set a PIN on the key, or \
                 use one that can verify you"
                    .into(),
            )),
            UserVerificationPolicy::Preferred if built_in => Ok(Uv::BuiltIn),
            _ => Ok(Uv::None),
        }
    }

    /// clientPIN getKeyAgreement: the device's key agreement key (a COSE key).
    fn device_key_agreement(&mut self, protocol: PinUvProtocol) -> Result<Value, CtapError> {
        let req = ClientPin {
            protocol: Some(protocol.number().into()),
            sub_command: CLIENT_PIN_GET_KEY_AGREEMENT,
            ..Default::default()
        };
        let resp = cbor::decode_map(&self.device.command(CMD_CLIENT_PIN, &req.encode()?)?)?;
        cbor::get(&resp, 1)
            .cloned()
            .ok_or(CtapError::Malformed("no keyAgreement in the answer"))
    }

    /// Gets a pinUvAuthToken with the PIN (getPinUvAuthTokenUsingPinWithPermissions when the
    /// device knows it, else getPINToken) and returns pinUvAuthParam over `client_data_hash`.
    fn pin_uv_auth(
        &mut self,
        info: &Info,
        permissions: i128,
        rp_id: &str,
        client_data_hash: &[u8],
    ) -> Result<PinUvAuth, CtapError> {
        let protocol = PinUvProtocol::choose(&info.pin_uv_protocols);
        let device_key = self.device_key_agreement(protocol)?;
        let platform = KeyAgreement::generate();
        let shared = platform.shared_secret(protocol, &device_key)?;
        let pin = self.pin.as_mut().and_then(|ask| ask()).ok_or_else(|| {
            CtapError::Unsupported(
                "the security key needs its PIN and there is no terminal to ask for it: run \
                     credctl in a terminal"
                    .into(),
            )
        })?;
        let pin_hash = Zeroizing::new(sha256(pin.as_bytes()));
        let pin_hash_enc = protocol.encrypt(&shared, &pin_hash[..16])?;
        let with_permissions = info.option("pinUvAuthToken") == Some(true);
        let req = ClientPin {
            protocol: Some(protocol.number().into()),
            sub_command: if with_permissions {
                CLIENT_PIN_GET_TOKEN_WITH_PIN_PERMISSIONS
            } else {
                CLIENT_PIN_GET_PIN_TOKEN
            },
            key_agreement: Some(platform.public_cose()),
            pin_hash_enc: Some(pin_hash_enc),
            permissions: with_permissions.then_some(permissions),
            rp_id: with_permissions.then(|| rp_id.to_owned()),
        };
        let mut resp = cbor::decode_map(&self.device.command(CMD_CLIENT_PIN, &req.encode()?)?)?;
        let token = protocol.decrypt(
            &shared,
            cbor::as_bytes(cbor::get(&resp, 2), "pinUvAuthToken")?,
        );
        for v in resp.values_mut() {
            cbor::scrub(v);
        }
        let token = token?;
        Ok(PinUvAuth {
            param: protocol.authenticate(&token, client_data_hash)?,
            protocol,
        })
    }

    fn register(
        &mut self,
        client_data_hash: Vec<u8>,
        options: PublicKeyCredentialCreationOptions,
    ) -> Result<RegisterPublicKeyCredential, CtapError> {
        let info = self.info()?;
        let selection = options.authenticator_selection.clone().unwrap_or_default();
        let policy = options
            .authenticator_selection
            .as_ref()
            .map(|s| s.user_verification)
            .unwrap_or(UserVerificationPolicy::Preferred);
        let uv = self.plan_uv(&info, policy)?;
        let want_hmac = std::mem::take(&mut self.create_hmac_secret);
        let mut extensions = Map::new();
        if want_hmac && info.has_extension(EXTENSION) {
            extensions.insert(cbor::text(EXTENSION), Value::Bool(true));
        }
        let mut req = MakeCredential {
            client_data_hash,
            rp_id: options.rp.id.clone(),
            rp_name: options.rp.name.clone(),
            user_id: options.user.id.clone(),
            user_name: options.user.name.clone(),
            user_display_name: options.user.display_name.clone(),
            algorithms: options
                .pub_key_cred_params
                .iter()
                .filter(|p| p.type_ == "public-key")
                .map(|p| i128::from(p.alg))
                .collect(),
            exclude_list: options
                .exclude_credentials
                .iter()
                .flatten()
                .map(|c| c.id.clone())
                .collect(),
            extensions,
            rk: selection.require_resident_key
                || selection.resident_key == Some(ResidentKeyRequirement::Required),
            uv: uv == Uv::BuiltIn,
            pin_uv_auth: None,
        };
        if uv == Uv::Pin {
            req.pin_uv_auth =
                Some(self.pin_uv_auth(&info, PERMISSION_MC, &req.rp_id, &req.client_data_hash)?);
        }
        let answer = match self.device.command(CMD_MAKE_CREDENTIAL, &req.encode()?) {
            // CTAP 2.0 keys with a PIN set want it for every registration.
            Err(CtapError::PinRequired) if info.option("clientPin") == Some(true) => {
                req.pin_uv_auth = Some(self.pin_uv_auth(
                    &info,
                    PERMISSION_MC,
                    &req.rp_id,
                    &req.client_data_hash,
                )?);
                self.device.command(CMD_MAKE_CREDENTIAL, &req.encode()?)?
            }
            other => other?,
        };
        let attestation = Attestation::decode(&answer)?;
        let auth_data = AuthData::parse(&attestation.auth_data)?;
        if auth_data.rp_id_hash != sha256(req.rp_id.as_bytes()) {
            return Err(CtapError::Malformed("rpIdHash does not match the RP ID"));
        }
        check_flags(&auth_data, uv)?;
        let credential = auth_data
            .attested
            .as_ref()
            .ok_or(CtapError::Malformed("no attested credential data"))?;
        if want_hmac {
            self.prf_enabled = Some(auth_data.extension(EXTENSION) == Some(&Value::Bool(true)));
        }
        Ok(RegisterPublicKeyCredential {
            id: URL_SAFE_NO_PAD.encode(&credential.credential_id),
            raw_id: credential.credential_id.clone(),
            response: AuthenticatorAttestationResponseRaw {
                attestation_object: attestation.attestation_object()?,
                client_data_json: Vec::new(),
                transports: self.transports.clone(),
            },
            type_: "public-key".into(),
            extensions: Default::default(),
        })
    }

    fn authenticate(
        &mut self,
        client_data_hash: Vec<u8>,
        options: PublicKeyCredentialRequestOptions,
    ) -> Result<PublicKeyCredential, CtapError> {
        let info = self.info()?;
        let uv = self.plan_uv(&info, options.user_verification)?;
        let mut allow: Vec<Vec<u8>> = options
            .allow_credentials
            .iter()
            .map(|c| c.id.clone())
            .collect();
        let prf = self.prf.take().filter(|_| info.has_extension(EXTENSION));
        let mut session = None;
        let mut extensions = Map::new();
        if let Some(prf) = prf {
            if prf.has_per_credential() && allow.len() > 1 {
                // Which of the allowed credentials is on this device? A silent pre-flight (no
                // user presence), as browsers do, so the right per-credential input is used.
                let probe = GetAssertion {
                    rp_id: options.rp_id.clone(),
                    client_data_hash: client_data_hash.clone(),
                    allow_list: allow.clone(),
                    up: Some(false),
                    ..Default::default()
                };
                let found =
                    Assertion::decode(&self.device.command(CMD_GET_ASSERTION, &probe.encode()?)?)?;
                let id = found
                    .credential_id
                    .ok_or(CtapError::Malformed("no credential id in the pre-flight"))?;
                allow = vec![id];
            }
            let chosen = (allow.len() == 1).then(|| allow[0].as_slice());
            if let Some(input) = prf.input_for(chosen) {
                let protocol = PinUvProtocol::choose(&info.pin_uv_protocols);
                let device_key = self.device_key_agreement(protocol)?;
                let s = HmacSecretSession::new(protocol, &device_key)?;
                extensions.insert(cbor::text(EXTENSION), s.input(&prf_salt(input))?);
                session = Some(s);
            }
        }
        let mut req = GetAssertion {
            rp_id: options.rp_id.clone(),
            client_data_hash,
            allow_list: allow.clone(),
            extensions,
            up: None,
            uv: uv == Uv::BuiltIn,
            pin_uv_auth: None,
        };
        if uv == Uv::Pin {
            req.pin_uv_auth =
                Some(self.pin_uv_auth(&info, PERMISSION_GA, &req.rp_id, &req.client_data_hash)?);
        }
        let answer = match self.device.command(CMD_GET_ASSERTION, &req.encode()?) {
            // Keys set to always verify (alwaysUv) want the PIN even when the RP does not.
            Err(CtapError::PinRequired) if info.option("clientPin") == Some(true) => {
                req.pin_uv_auth = Some(self.pin_uv_auth(
                    &info,
                    PERMISSION_GA,
                    &req.rp_id,
                    &req.client_data_hash,
                )?);
                self.device.command(CMD_GET_ASSERTION, &req.encode()?)?
            }
            other => other?,
        };
        let assertion = Assertion::decode(&answer)?;
        let auth_data = AuthData::parse(&assertion.auth_data)?;
        if auth_data.rp_id_hash != sha256(req.rp_id.as_bytes()) {
            return Err(CtapError::Malformed("rpIdHash does not match the RP ID"));
        }
        check_flags(&auth_data, uv)?;
        let id = match (assertion.credential_id, allow.as_slice()) {
            (Some(id), _) => id,
            (None, [only]) => only.clone(),
            (None, _) => return Err(CtapError::Malformed("no credential id in the assertion")),
        };
        if let Some(session) = session {
            if let Some(Value::Bytes(encrypted)) = auth_data.extension(EXTENSION) {
                self.prf_output = Some(session.output(encrypted)?);
            }
        }
        Ok(PublicKeyCredential {
            id: URL_SAFE_NO_PAD.encode(&id),
            raw_id: id,
            response: AuthenticatorAssertionResponseRaw {
                authenticator_data: assertion.auth_data,
                client_data_json: Vec::new(),
                signature: assertion.signature,
                user_handle: assertion.user_id,
            },
            extensions: Default::default(),
            type_: "public-key".into(),
        })
    }
}

impl<D: CtapDevice> CtapClient<D> {
    /// The hmac-secret output of `credential` at the PRF input `input` from a touch *without*
    /// user verification: what the key gives anyone who reaches it, PIN or not. The agent asks
    /// for it once per key, to move a copy of the vault made before user verification was
    /// required (it opens with this output) to the output of a verified touch. The assertion
    /// signs a random client data hash: only the output matters, and it proves itself by
    /// opening that copy.
    pub fn prf_without_uv(
        &mut self,
        rp_id: &str,
        credential: &[u8],
        input: &[u8],
    ) -> Result<PrfOutput, CtapError> {
        self.last_error = None;
        let info = self.info()?;
        if !info.has_extension(EXTENSION) {
            return Err(CtapError::UnsupportedExtension);
        }
        let protocol = PinUvProtocol::choose(&info.pin_uv_protocols);
        let device_key = self.device_key_agreement(protocol)?;
        let session = HmacSecretSession::new(protocol, &device_key)?;
        let mut extensions = Map::new();
        extensions.insert(cbor::text(EXTENSION), session.input(&prf_salt(input))?);
        let mut client_data_hash = vec![0u8; 32];
        getrandom::fill(&mut client_data_hash)
            .map_err(|_| CtapError::Crypto("no random source"))?;
        let req = GetAssertion {
            rp_id: rp_id.to_owned(),
            client_data_hash,
            allow_list: vec![credential.to_vec()],
            extensions,
            ..Default::default()
        };
        let assertion =
            Assertion::decode(&self.device.command(CMD_GET_ASSERTION, &req.encode()?)?)?;
        let auth_data = AuthData::parse(&assertion.auth_data)?;
        if auth_data.rp_id_hash != sha256(rp_id.as_bytes()) {
            return Err(CtapError::Malformed("rpIdHash does not match the RP ID"));
        }
        check_flags(&auth_data, Uv::None)?;
        if auth_data.user_verified() {
            return Err(CtapError::Malformed(
                "the key verified the user where it was asked not to",
            ));
        }
        match auth_data.extension(EXTENSION) {
            Some(Value::Bytes(encrypted)) => session.output(encrypted),
            _ => Err(CtapError::Malformed("no hmac-secret output")),
        }
    }
}

/// The device must say it saw the user, and verified them when asked to.
fn check_flags(auth_data: &AuthData, uv: Uv) -> Result<(), CtapError> {
    if !auth_data.user_present() {
        return Err(CtapError::Malformed("the user-present flag is not set"));
    }
    if uv != Uv::None && !auth_data.user_verified() {
        return Err(CtapError::Malformed("the user-verified flag is not set"));
    }
    Ok(())
}

impl<D: CtapDevice> AuthenticatorBackendHashedClientData for CtapClient<D> {
    fn perform_register(
        &mut self,
        client_data_hash: Vec<u8>,
        options: PublicKeyCredentialCreationOptions,
        _timeout_ms: u32,
    ) -> Result<RegisterPublicKeyCredential, WebauthnCError> {
        self.prf_enabled = None;
        self.last_error = None;
        self.register(client_data_hash, options)
            .map_err(|e| self.fail(e))
    }

    fn perform_auth(
        &mut self,
        client_data_hash: Vec<u8>,
        options: PublicKeyCredentialRequestOptions,
        _timeout_ms: u32,
    ) -> Result<PublicKeyCredential, WebauthnCError> {
        self.prf_output = None;
        self.last_error = None;
        self.authenticate(client_data_hash, options)
            .map_err(|e| self.fail(e))
    }
}

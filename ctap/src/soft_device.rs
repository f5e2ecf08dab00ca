//! A software CTAP2 authenticator: it decodes the same CBOR commands a USB key gets and answers
//! like one (getInfo, clientPIN getKeyAgreement, makeCredential with `packed` self attestation,
//! getAssertion with hmac-secret). Its state (credential keys, counters, CredRandom values)
//! serialises to bytes the caller keeps in a private file.
//!
//! INSECURE by design: whoever holds those bytes holds every credential.

use crypto_glue::ecdsa_p256::{EcdsaP256PrivateKey, EcdsaP256Signature, EcdsaP256SigningKey};
use crypto_glue::hmac_s256::HmacSha256;
use crypto_glue::traits::{KeyInit, Mac, SignatureEncoding, Signer};
use serde::{Deserialize, Serialize};
use serde_cbor_2::Value;
use zeroize::{Zeroize, Zeroizing};

use super::auth_data::{AttestedCredential, AuthData, FLAG_UP, FLAG_UV};
use super::cbor::{self, Map};
use super::commands::*;
use super::error::*;
use super::hmac_secret::EXTENSION;
use super::pin_uv::{public_key_to_cose, sha256, KeyAgreement, PinUvProtocol, ALG_ES256};
use super::CtapDevice;

/// The state file format this code writes and reads.
const STATE_VERSION: u32 = 1;

/// One credential.
#[derive(Serialize, Deserialize)]
struct StoredCredential {
    id: Vec<u8>,
    rp_id_hash: [u8; 32],
    /// The P-256 private scalar.
    private_key: Zeroizing<[u8; 32]>,
    counter: u32,
    /// Created with hmac-secret: then getAssertion answers it.
    hmac_secret: bool,
    /// CredRandomWithUV and CredRandomWithoutUV (CTAP 2.1 §12.5).
    cred_random_uv: Zeroizing<[u8; 32]>,
    cred_random: Zeroizing<[u8; 32]>,
}

#[derive(Serialize, Deserialize)]
struct SoftState {
    v: u32,
    claim_uv: bool,
    credentials: Vec<StoredCredential>,
    /// The PIN, when one is set: LEFT(SHA-256(PIN), 16) and whether tokens come with
    /// permissions. Absent in files written before soft devices kept a PIN.
    #[serde(default)]
    pin: Option<([u8; 16], bool)>,
}

/// The software authenticator. Its key agreement key is made anew for every instance, as a key
/// makes one at power-up.
pub struct SoftDevice {
    state: SoftState,
    key_agreement: KeyAgreement,
    aaguid: [u8; 16],
    /// LEFT(SHA-256(PIN), 16) when a PIN is set (kept in the state too).
    pin_hash: Option<[u8; 16]>,
    /// Whether getInfo offers getPinUvAuthTokenUsingPinWithPermissions (else getPINToken only).
    pin_permissions: bool,
    /// The pinUvAuthToken last handed out.
    pin_token: Option<PinToken>,
}

struct PinToken {
    token: Zeroizing<[u8; 32]>,
    protocol: PinUvProtocol,
    /// With getPinUvAuthTokenUsingPinWithPermissions: the permissions and the RP ID.
    scope: Option<(i128, String)>,
}

fn random_32() -> Result<Zeroizing<[u8; 32]>, u8> {
    let mut out = Zeroizing::new([0u8; 32]);
    getrandom::fill(out.as_mut_slice()).map_err(|_| CTAP1_ERR_OTHER)?;
    Ok(out)
}

/// CTAP1_ERR_OTHER: the device failed inside.
const CTAP1_ERR_OTHER: u8 = 0x7F;

impl SoftDevice {
    /// A new device with no credentials; `claim_uv` makes it set the UV flag when asked to
    /// verify (it verifies no one).
    pub fn new(claim_uv: bool, aaguid: [u8; 16]) -> SoftDevice {
        SoftDevice {
            state: SoftState {
                v: STATE_VERSION,
                claim_uv,
                credentials: Vec::new(),
                pin: None,
            },
            key_agreement: KeyAgreement::generate(),
            aaguid,
            pin_hash: None,
            pin_permissions: false,
            pin_token: None,
        }
    }

    /// Sets a PIN (kept with the state), and whether tokens come with permissions (CTAP 2.1)
    /// or from getPINToken (CTAP 2.0). With a PIN the device verifies the user: a command with
    /// a valid pinUvAuthParam gets the UV flag and the with-UV hmac-secret.
    pub fn with_pin(mut self, pin: &str, permissions: bool) -> SoftDevice {
        let mut hash = [0u8; 16];
        hash.copy_from_slice(&sha256(pin.as_bytes())[..16]);
        self.pin_hash = Some(hash);
        self.pin_permissions = permissions;
        self.state.pin = Some((hash, permissions));
        self
    }

    /// Whether a PIN is set.
    pub fn has_pin(&self) -> bool {
        self.pin_hash.is_some()
    }

    /// Restores a device from `to_bytes`; `None` if the bytes are not a state of this version.
    pub fn from_bytes(bytes: &[u8], aaguid: [u8; 16]) -> Option<SoftDevice> {
        let state: SoftState = serde_cbor_2::from_slice(bytes).ok()?;
        if state.v != STATE_VERSION {
            return None;
        }
        let (pin_hash, pin_permissions) = match state.pin {
            Some((hash, permissions)) => (Some(hash), permissions),
            None => (None, false),
        };
        Some(SoftDevice {
            state,
            key_agreement: KeyAgreement::generate(),
            aaguid,
            pin_hash,
            pin_permissions,
            pin_token: None,
        })
    }

    /// The state to persist (secret: it holds the private keys).
    pub fn to_bytes(&self) -> Option<Zeroizing<Vec<u8>>> {
        serde_cbor_2::to_vec(&self.state).ok().map(Zeroizing::new)
    }

    pub fn claims_user_verification(&self) -> bool {
        self.state.claim_uv
    }

    /// One raw exchange: `cmd || payload` in, `status || payload` out, as over USB.
    pub fn process(&mut self, request: &[u8]) -> Vec<u8> {
        let Some((&cmd, payload)) = request.split_first() else {
            return vec![CTAP1_ERR_INVALID_LENGTH];
        };
        let answer = match cmd {
            CMD_GET_INFO => self.get_info(),
            CMD_CLIENT_PIN => self.client_pin(payload),
            CMD_MAKE_CREDENTIAL => self.make_credential(payload),
            CMD_GET_ASSERTION => self.get_assertion(payload),
            _ => Err(CTAP1_ERR_INVALID_COMMAND),
        };
        match answer {
            Ok(mut body) => {
                body.insert(0, 0);
                body
            }
            Err(status) => vec![status],
        }
    }

    fn get_info(&self) -> Result<Vec<u8>, u8> {
        let mut options = std::collections::BTreeMap::new();
        options.insert("rk".to_owned(), false);
        options.insert("up".to_owned(), true);
        options.insert("uv".to_owned(), self.state.claim_uv);
        options.insert("clientPin".to_owned(), self.pin_hash.is_some());
        if self.pin_permissions {
            options.insert("pinUvAuthToken".to_owned(), true);
        }
        Info {
            versions: vec!["FIDO_2_0".into(), "FIDO_2_1".into()],
            extensions: vec![EXTENSION.into()],
            aaguid: self.aaguid.to_vec(),
            options,
            pin_uv_protocols: vec![2, 1],
        }
        .encode()
        .map_err(|_| CTAP1_ERR_OTHER)
    }

    fn client_pin(&mut self, payload: &[u8]) -> Result<Vec<u8>, u8> {
        let req = ClientPin::decode(payload).map_err(|_| CTAP2_ERR_INVALID_CBOR)?;
        let protocol = req
            .protocol
            .ok_or(CTAP2_ERR_MISSING_PARAMETER)
            .and_then(|p| PinUvProtocol::from_number(p).ok_or(CTAP1_ERR_INVALID_PARAMETER))?;
        match req.sub_command {
            CLIENT_PIN_GET_KEY_AGREEMENT => {
                let mut m = Map::new();
                m.insert(cbor::int(1), self.key_agreement.public_cose());
                cbor::encode(m).map_err(|_| CTAP1_ERR_OTHER)
            }
            CLIENT_PIN_GET_PIN_TOKEN | CLIENT_PIN_GET_TOKEN_WITH_PIN_PERMISSIONS => {
                self.pin_token(protocol, &req)
            }
            _ => Err(CTAP1_ERR_INVALID_PARAMETER),
        }
    }

    /// getPINToken / getPinUvAuthTokenUsingPinWithPermissions: checks pinHashEnc and hands out
    /// a fresh pinUvAuthToken, encrypted to the platform.
    fn pin_token(&mut self, protocol: PinUvProtocol, req: &ClientPin) -> Result<Vec<u8>, u8> {
        let expected = self.pin_hash.ok_or(CTAP2_ERR_PIN_NOT_SET)?;
        let platform = req
            .key_agreement
            .as_ref()
            .ok_or(CTAP2_ERR_MISSING_PARAMETER)?;
        let pin_hash_enc = req
            .pin_hash_enc
            .as_ref()
            .ok_or(CTAP2_ERR_MISSING_PARAMETER)?;
        let scope = match req.sub_command {
            CLIENT_PIN_GET_TOKEN_WITH_PIN_PERMISSIONS => {
                let permissions = req.permissions.ok_or(CTAP2_ERR_MISSING_PARAMETER)?;
                let rp_id = req.rp_id.clone().ok_or(CTAP2_ERR_MISSING_PARAMETER)?;
                Some((permissions, rp_id))
            }
            _ => None,
        };
        let shared = self
            .key_agreement
            .shared_secret(protocol, platform)
            .map_err(|_| CTAP1_ERR_INVALID_PARAMETER)?;
        let pin_hash = protocol
            .decrypt(&shared, pin_hash_enc)
            .map_err(|_| CTAP2_ERR_PIN_INVALID)?;
        self.pin_token = None;
        if pin_hash.as_slice() != expected {
            return Err(CTAP2_ERR_PIN_INVALID);
        }
        let token = random_32()?;
        let encrypted = protocol
            .encrypt(&shared, token.as_slice())
            .map_err(|_| CTAP1_ERR_OTHER)?;
        self.pin_token = Some(PinToken {
            token,
            protocol,
            scope,
        });
        let mut m = Map::new();
        m.insert(cbor::int(2), Value::Bytes(encrypted));
        cbor::encode(m).map_err(|_| CTAP1_ERR_OTHER)
    }

    /// Checks pinUvAuthParam over clientDataHash with the current token, for `permission` on
    /// `rp_id`; true when the user is thereby verified. Without a PIN set, a param is refused;
    /// with one, registering needs it.
    fn check_pin_uv_auth(
        &self,
        auth: Option<&PinUvAuth>,
        client_data_hash: &[u8],
        permission: i128,
        rp_id: &str,
    ) -> Result<bool, u8> {
        let Some(auth) = auth else {
            if self.pin_hash.is_some() && permission == PERMISSION_MC {
                return Err(CTAP2_ERR_PIN_REQUIRED);
            }
            return Ok(false);
        };
        if self.pin_hash.is_none() {
            return Err(CTAP2_ERR_PIN_NOT_SET);
        }
        let token = self.pin_token.as_ref().ok_or(CTAP2_ERR_PIN_AUTH_INVALID)?;
        let in_scope = match &token.scope {
            None => true,
            Some((permissions, scoped_rp)) => permissions & permission != 0 && scoped_rp == rp_id,
        };
        if auth.protocol != token.protocol
            || !in_scope
            || !auth
                .protocol
                .verify(token.token.as_slice(), client_data_hash, &auth.param)
        {
            return Err(CTAP2_ERR_PIN_AUTH_INVALID);
        }
        Ok(true)
    }

    /// The flags for a request's `uv` option: refused unless this device claims verification.
    fn uv_flag(&self, uv: bool) -> Result<u8, u8> {
        match (uv, self.state.claim_uv) {
            (false, _) => Ok(0),
            (true, true) => Ok(FLAG_UV),
            (true, false) => Err(CTAP2_ERR_INVALID_OPTION),
        }
    }

    fn make_credential(&mut self, payload: &[u8]) -> Result<Vec<u8>, u8> {
        let req = MakeCredential::decode(payload).map_err(|_| CTAP2_ERR_INVALID_CBOR)?;
        if req.client_data_hash.len() != 32 {
            return Err(CTAP1_ERR_INVALID_LENGTH);
        }
        let pin_verified = self.check_pin_uv_auth(
            req.pin_uv_auth.as_ref(),
            &req.client_data_hash,
            PERMISSION_MC,
            &req.rp_id,
        )?;
        if !req.algorithms.contains(&ALG_ES256) {
            return Err(CTAP2_ERR_UNSUPPORTED_ALGORITHM);
        }
        if req.rk {
            return Err(CTAP2_ERR_UNSUPPORTED_OPTION);
        }
        let uv = self.uv_flag(req.uv)? | if pin_verified { FLAG_UV } else { 0 };
        let rp_id_hash = sha256(req.rp_id.as_bytes());
        let excluded = self
            .state
            .credentials
            .iter()
            .any(|c| c.rp_id_hash == rp_id_hash && req.exclude_list.contains(&c.id));
        if excluded {
            return Err(CTAP2_ERR_CREDENTIAL_EXCLUDED);
        }
        let hmac_secret = cbor::get_text(&req.extensions, EXTENSION) == Some(&Value::Bool(true));

        let private_key = random_private_key()?;
        let secret =
            EcdsaP256PrivateKey::from_slice(private_key.as_slice()).map_err(|_| CTAP1_ERR_OTHER)?;
        let id = random_32()?.to_vec();
        let mut extensions = Map::new();
        if hmac_secret {
            extensions.insert(cbor::text(EXTENSION), Value::Bool(true));
        }
        let auth_data = AuthData {
            rp_id_hash,
            flags: FLAG_UP | uv,
            counter: 0,
            attested: Some(AttestedCredential {
                aaguid: self.aaguid,
                credential_id: id.clone(),
                public_key: public_key_to_cose(&secret.public_key(), ALG_ES256),
            }),
            extensions,
        }
        .to_bytes()
        .map_err(|_| CTAP1_ERR_OTHER)?;
        // `packed` self attestation: signed by the credential key itself, no certificate.
        let sig = sign(&secret, &auth_data, &req.client_data_hash);
        let mut att_stmt = Map::new();
        att_stmt.insert(cbor::text("alg"), cbor::int(ALG_ES256));
        att_stmt.insert(cbor::text("sig"), Value::Bytes(sig));
        let answer = Attestation {
            fmt: "packed".into(),
            auth_data,
            att_stmt: Value::Map(att_stmt),
        }
        .encode()
        .map_err(|_| CTAP1_ERR_OTHER)?;
        self.state.credentials.push(StoredCredential {
            id,
            rp_id_hash,
            private_key,
            counter: 0,
            hmac_secret,
            cred_random_uv: random_32()?,
            cred_random: random_32()?,
        });
        Ok(answer)
    }

    fn get_assertion(&mut self, payload: &[u8]) -> Result<Vec<u8>, u8> {
        let req = GetAssertion::decode(payload).map_err(|_| CTAP2_ERR_INVALID_CBOR)?;
        if req.client_data_hash.len() != 32 {
            return Err(CTAP1_ERR_INVALID_LENGTH);
        }
        let pin_verified = self.check_pin_uv_auth(
            req.pin_uv_auth.as_ref(),
            &req.client_data_hash,
            PERMISSION_GA,
            &req.rp_id,
        )?;
        let uv = self.uv_flag(req.uv)? | if pin_verified { FLAG_UV } else { 0 };
        let up = if req.up.unwrap_or(true) { FLAG_UP } else { 0 };
        let rp_id_hash = sha256(req.rp_id.as_bytes());
        // No resident keys: only credentials named in the allow list can be found.
        let index = self
            .state
            .credentials
            .iter()
            .position(|c| c.rp_id_hash == rp_id_hash && req.allow_list.contains(&c.id))
            .ok_or(CTAP2_ERR_NO_CREDENTIALS)?;
        let hmac_request = cbor::get_text(&req.extensions, EXTENSION).cloned();
        let key_agreement = &self.key_agreement;
        let credential = &mut self.state.credentials[index];
        let mut extensions = Map::new();
        if let Some(input) = hmac_request {
            // The salts are checked and decrypted even for a credential made without
            // hmac-secret, so a bad saltAuth is always refused.
            let cred_random = if uv != 0 {
                &credential.cred_random_uv
            } else {
                &credential.cred_random
            };
            let output = hmac_secret_output(key_agreement, &input, cred_random)?;
            if credential.hmac_secret {
                extensions.insert(cbor::text(EXTENSION), Value::Bytes(output));
            }
        }
        credential.counter = credential.counter.saturating_add(1);
        let auth_data = AuthData {
            rp_id_hash,
            flags: up | uv,
            counter: credential.counter,
            attested: None,
            extensions,
        }
        .to_bytes()
        .map_err(|_| CTAP1_ERR_OTHER)?;
        let secret = EcdsaP256PrivateKey::from_slice(credential.private_key.as_slice())
            .map_err(|_| CTAP1_ERR_OTHER)?;
        let signature = sign(&secret, &auth_data, &req.client_data_hash);
        Assertion {
            credential_id: Some(credential.id.clone()),
            auth_data,
            signature,
            user_id: None,
        }
        .encode()
        .map_err(|_| CTAP1_ERR_OTHER)
    }
}

impl CtapDevice for SoftDevice {
    fn command(&mut self, cmd: u8, payload: &[u8]) -> Result<Vec<u8>, CtapError> {
        let mut request = Vec::with_capacity(payload.len() + 1);
        request.push(cmd);
        request.extend_from_slice(payload);
        let response = self.process(&request);
        split_status(&response).map(<[u8]>::to_vec)
    }
}

/// A fresh P-256 private scalar (retried in the negligible case the bytes are not a valid one).
fn random_private_key() -> Result<Zeroizing<[u8; 32]>, u8> {
    for _ in 0..8 {
        let candidate = random_32()?;
        if EcdsaP256PrivateKey::from_slice(candidate.as_slice()).is_ok() {
            return Ok(candidate);
        }
    }
    Err(CTAP1_ERR_OTHER)
}

/// ES256 over authData || clientDataHash, DER encoded.
fn sign(key: &EcdsaP256PrivateKey, auth_data: &[u8], client_data_hash: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(auth_data.len() + client_data_hash.len());
    message.extend_from_slice(auth_data);
    message.extend_from_slice(client_data_hash);
    let signer = EcdsaP256SigningKey::from(key);
    let signature: EcdsaP256Signature = signer.sign(&message);
    signature.to_der().to_vec()
}

/// The authenticator side of hmac-secret (CTAP 2.1 §12.5): agree the shared secret with the
/// platform key, check saltAuth, decrypt the salts, and return
/// encrypt(HMAC-SHA-256(CredRandom, salt1) [|| HMAC-SHA-256(CredRandom, salt2)]).
fn hmac_secret_output(
    key_agreement: &KeyAgreement,
    input: &Value,
    cred_random: &[u8; 32],
) -> Result<Vec<u8>, u8> {
    let Value::Map(m) = input else {
        return Err(CTAP2_ERR_INVALID_CBOR);
    };
    let platform_key = cbor::get(m, 1).ok_or(CTAP2_ERR_MISSING_PARAMETER)?;
    let salt_enc = cbor::as_bytes(cbor::get(m, 2), "").map_err(|_| CTAP2_ERR_MISSING_PARAMETER)?;
    let salt_auth = cbor::as_bytes(cbor::get(m, 3), "").map_err(|_| CTAP2_ERR_MISSING_PARAMETER)?;
    let protocol = match cbor::get(m, 4) {
        None => PinUvProtocol::One,
        Some(p) => cbor::as_int(Some(p), "")
            .ok()
            .and_then(PinUvProtocol::from_number)
            .ok_or(CTAP1_ERR_INVALID_PARAMETER)?,
    };
    let shared = key_agreement
        .shared_secret(protocol, platform_key)
        .map_err(|_| CTAP1_ERR_INVALID_PARAMETER)?;
    if !protocol.verify(&shared, salt_enc, salt_auth) {
        return Err(CTAP2_ERR_PIN_AUTH_INVALID);
    }
    let salts = protocol
        .decrypt(&shared, salt_enc)
        .map_err(|_| CTAP1_ERR_INVALID_LENGTH)?;
    if salts.len() != 32 && salts.len() != 64 {
        return Err(CTAP1_ERR_INVALID_LENGTH);
    }
    let mut outputs = Zeroizing::new(Vec::with_capacity(salts.len()));
    for salt in salts.chunks(32) {
        let mut mac =
            <HmacSha256 as KeyInit>::new_from_slice(cred_random).map_err(|_| CTAP1_ERR_OTHER)?;
        mac.update(salt);
        let mut out = mac.finalize().into_bytes();
        outputs.extend_from_slice(&out);
        out.zeroize();
    }
    protocol
        .encrypt(&shared, &outputs)
        .map_err(|_| CTAP1_ERR_OTHER)
}

#[cfg(test)]
#[path = "soft_device_tests.rs"]
mod tests;

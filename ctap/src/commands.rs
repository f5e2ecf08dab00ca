//! The CTAP2 commands credctl sends (CTAP 2.1 §6): authenticatorMakeCredential (0x01),
//! authenticatorGetAssertion (0x02), authenticatorGetInfo (0x04) and authenticatorClientPIN
//! (0x06), as canonical CBOR maps with integer keys, in both directions (the soft device decodes
//! what the client encodes).

use std::collections::BTreeMap;

use serde_cbor_2::Value;

use super::cbor::{self, Map};
use super::error::CtapError;
use super::pin_uv::PinUvProtocol;

pub const CMD_MAKE_CREDENTIAL: u8 = 0x01;
pub const CMD_GET_ASSERTION: u8 = 0x02;
pub const CMD_GET_INFO: u8 = 0x04;
pub const CMD_CLIENT_PIN: u8 = 0x06;

pub const CLIENT_PIN_GET_PIN_TOKEN: i128 = 0x05;
pub const CLIENT_PIN_GET_KEY_AGREEMENT: i128 = 0x02;
pub const CLIENT_PIN_GET_TOKEN_WITH_PIN_PERMISSIONS: i128 = 0x09;
pub const PERMISSION_MC: i128 = 0x01;
pub const PERMISSION_GA: i128 = 0x02;

const PUBLIC_KEY: &str = "public-key";

/// authenticatorGetInfo's answer, the parts credctl uses.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Info {
    pub versions: Vec<String>,
    pub extensions: Vec<String>,
    pub aaguid: Vec<u8>,
    pub options: BTreeMap<String, bool>,
    pub pin_uv_protocols: Vec<i128>,
}

impl Info {
    pub fn option(&self, name: &str) -> Option<bool> {
        self.options.get(name).copied()
    }

    pub fn has_extension(&self, name: &str) -> bool {
        self.extensions.iter().any(|e| e == name)
    }

    pub fn decode(payload: &[u8]) -> Result<Info, CtapError> {
        let m = cbor::decode_map(payload)?;
        let texts = |v: Option<&Value>| -> Vec<String> {
            match v {
                Some(Value::Array(a)) => a
                    .iter()
                    .filter_map(|x| match x {
                        Value::Text(t) => Some(t.clone()),
                        _ => None,
                    })
                    .collect(),
                _ => Vec::new(),
            }
        };
        let mut options = BTreeMap::new();
        if let Some(Value::Map(o)) = cbor::get(&m, 4) {
            for (k, v) in o {
                if let (Value::Text(k), Value::Bool(v)) = (k, v) {
                    options.insert(k.clone(), *v);
                }
            }
        }
        let pin_uv_protocols = match cbor::get(&m, 6) {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|x| match x {
                    Value::Integer(i) => Some(*i),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        Ok(Info {
            versions: texts(cbor::get(&m, 1)),
            extensions: texts(cbor::get(&m, 2)),
            aaguid: cbor::as_bytes(cbor::get(&m, 3), "getInfo aaguid")?.to_vec(),
            options,
            pin_uv_protocols,
        })
    }

    pub fn encode(&self) -> Result<Vec<u8>, CtapError> {
        let texts = |v: &[String]| Value::Array(v.iter().map(|s| cbor::text(s)).collect());
        let mut m = Map::new();
        m.insert(cbor::int(1), texts(&self.versions));
        if !self.extensions.is_empty() {
            m.insert(cbor::int(2), texts(&self.extensions));
        }
        m.insert(cbor::int(3), cbor::bytes(&self.aaguid));
        let opts = self
            .options
            .iter()
            .map(|(k, v)| (cbor::text(k), Value::Bool(*v)))
            .collect();
        m.insert(cbor::int(4), Value::Map(opts));
        if !self.pin_uv_protocols.is_empty() {
            let p = self
                .pin_uv_protocols
                .iter()
                .map(|p| cbor::int(*p))
                .collect();
            m.insert(cbor::int(6), Value::Array(p));
        }
        cbor::encode(m)
    }
}

/// pinUvAuthParam with its protocol, for makeCredential and getAssertion.
#[derive(Debug, Clone, PartialEq)]
pub struct PinUvAuth {
    pub param: Vec<u8>,
    pub protocol: PinUvProtocol,
}

/// authenticatorMakeCredential's parameters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MakeCredential {
    pub client_data_hash: Vec<u8>,
    pub rp_id: String,
    pub rp_name: String,
    pub user_id: Vec<u8>,
    pub user_name: String,
    pub user_display_name: String,
    pub algorithms: Vec<i128>,
    pub exclude_list: Vec<Vec<u8>>,
    /// Extension inputs by name (e.g. "hmac-secret": true).
    pub extensions: Map,
    pub rk: bool,
    pub uv: bool,
    pub pin_uv_auth: Option<PinUvAuth>,
}

impl MakeCredential {
    pub fn encode(&self) -> Result<Vec<u8>, CtapError> {
        let mut m = Map::new();
        m.insert(cbor::int(1), cbor::bytes(&self.client_data_hash));
        let mut rp = Map::new();
        rp.insert(cbor::text("id"), cbor::text(&self.rp_id));
        rp.insert(cbor::text("name"), cbor::text(&self.rp_name));
        m.insert(cbor::int(2), Value::Map(rp));
        let mut user = Map::new();
        user.insert(cbor::text("id"), cbor::bytes(&self.user_id));
        user.insert(cbor::text("name"), cbor::text(&self.user_name));
        user.insert(
            cbor::text("displayName"),
            cbor::text(&self.user_display_name),
        );
        m.insert(cbor::int(3), Value::Map(user));
        let params = self
            .algorithms
            .iter()
            .map(|alg| {
                let mut p = Map::new();
                p.insert(cbor::text("alg"), cbor::int(*alg));
                p.insert(cbor::text("type"), cbor::text(PUBLIC_KEY));
                Value::Map(p)
            })
            .collect();
        m.insert(cbor::int(4), Value::Array(params));
        if !self.exclude_list.is_empty() {
            m.insert(cbor::int(5), descriptors(&self.exclude_list));
        }
        if !self.extensions.is_empty() {
            m.insert(cbor::int(6), Value::Map(self.extensions.clone()));
        }
        let mut options = Map::new();
        if self.rk {
            options.insert(cbor::text("rk"), Value::Bool(true));
        }
        if self.uv {
            options.insert(cbor::text("uv"), Value::Bool(true));
        }
        if !options.is_empty() {
            m.insert(cbor::int(7), Value::Map(options));
        }
        if let Some(auth) = &self.pin_uv_auth {
            m.insert(cbor::int(8), cbor::bytes(&auth.param));
            m.insert(cbor::int(9), cbor::int(auth.protocol.number().into()));
        }
        cbor::encode(m)
    }

    pub fn decode(payload: &[u8]) -> Result<MakeCredential, CtapError> {
        let m = cbor::decode_map(payload)?;
        let rp = cbor::as_map(cbor::get(&m, 2), "rp")?;
        let user = cbor::as_map(cbor::get(&m, 3), "user")?;
        let algorithms = match cbor::get(&m, 4) {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|p| match p {
                    Value::Map(p) => cbor::as_int(cbor::get_text(p, "alg"), "alg").ok(),
                    _ => None,
                })
                .collect(),
            _ => return Err(CtapError::Malformed("pubKeyCredParams")),
        };
        let options = options_map(cbor::get(&m, 7))?;
        Ok(MakeCredential {
            client_data_hash: cbor::as_bytes(cbor::get(&m, 1), "clientDataHash")?.to_vec(),
            rp_id: cbor::as_text(cbor::get_text(rp, "id"), "rp.id")?.to_owned(),
            rp_name: cbor::as_text(cbor::get_text(rp, "name"), "rp.name")
                .unwrap_or_default()
                .to_owned(),
            user_id: cbor::as_bytes(cbor::get_text(user, "id"), "user.id")?.to_vec(),
            user_name: cbor::as_text(cbor::get_text(user, "name"), "user.name")
                .unwrap_or_default()
                .to_owned(),
            user_display_name: cbor::as_text(cbor::get_text(user, "displayName"), "displayName")
                .unwrap_or_default()
                .to_owned(),
            algorithms,
            exclude_list: read_descriptors(cbor::get(&m, 5))?,
            extensions: match cbor::get(&m, 6) {
                Some(Value::Map(e)) => e.clone(),
                None => Map::new(),
                Some(_) => return Err(CtapError::Malformed("extensions")),
            },
            rk: options.get("rk").copied().unwrap_or(false),
            uv: options.get("uv").copied().unwrap_or(false),
            pin_uv_auth: read_pin_uv_auth(cbor::get(&m, 8), cbor::get(&m, 9))?,
        })
    }
}

/// authenticatorMakeCredential's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Attestation {
    pub fmt: String,
    pub auth_data: Vec<u8>,
    pub att_stmt: Value,
}

impl Attestation {
    pub fn decode(payload: &[u8]) -> Result<Attestation, CtapError> {
        let m = cbor::decode_map(payload)?;
        Ok(Attestation {
            fmt: cbor::as_text(cbor::get(&m, 1), "fmt")?.to_owned(),
            auth_data: cbor::as_bytes(cbor::get(&m, 2), "authData")?.to_vec(),
            att_stmt: Value::Map(cbor::as_map(cbor::get(&m, 3), "attStmt")?.clone()),
        })
    }

    pub fn encode(&self) -> Result<Vec<u8>, CtapError> {
        let mut m = Map::new();
        m.insert(cbor::int(1), cbor::text(&self.fmt));
        m.insert(cbor::int(2), cbor::bytes(&self.auth_data));
        m.insert(cbor::int(3), self.att_stmt.clone());
        cbor::encode(m)
    }

    /// The WebAuthn attestation object: the same three fields under text keys.
    pub fn attestation_object(&self) -> Result<Vec<u8>, CtapError> {
        let mut m = Map::new();
        m.insert(cbor::text("fmt"), cbor::text(&self.fmt));
        m.insert(cbor::text("attStmt"), self.att_stmt.clone());
        m.insert(cbor::text("authData"), cbor::bytes(&self.auth_data));
        cbor::encode(m)
    }
}

/// authenticatorGetAssertion's parameters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GetAssertion {
    pub rp_id: String,
    pub client_data_hash: Vec<u8>,
    pub allow_list: Vec<Vec<u8>>,
    pub extensions: Map,
    /// `Some(false)` asks for no user presence (a silent pre-flight).
    pub up: Option<bool>,
    pub uv: bool,
    pub pin_uv_auth: Option<PinUvAuth>,
}

impl GetAssertion {
    pub fn encode(&self) -> Result<Vec<u8>, CtapError> {
        let mut m = Map::new();
        m.insert(cbor::int(1), cbor::text(&self.rp_id));
        m.insert(cbor::int(2), cbor::bytes(&self.client_data_hash));
        if !self.allow_list.is_empty() {
            m.insert(cbor::int(3), descriptors(&self.allow_list));
        }
        if !self.extensions.is_empty() {
            m.insert(cbor::int(4), Value::Map(self.extensions.clone()));
        }
        let mut options = Map::new();
        if let Some(up) = self.up {
            options.insert(cbor::text("up"), Value::Bool(up));
        }
        if self.uv {
            options.insert(cbor::text("uv"), Value::Bool(true));
        }
        if !options.is_empty() {
            m.insert(cbor::int(5), Value::Map(options));
        }
        if let Some(auth) = &self.pin_uv_auth {
            m.insert(cbor::int(6), cbor::bytes(&auth.param));
            m.insert(cbor::int(7), cbor::int(auth.protocol.number().into()));
        }
        cbor::encode(m)
    }

    pub fn decode(payload: &[u8]) -> Result<GetAssertion, CtapError> {
        let m = cbor::decode_map(payload)?;
        let options = options_map(cbor::get(&m, 5))?;
        Ok(GetAssertion {
            rp_id: cbor::as_text(cbor::get(&m, 1), "rpId")?.to_owned(),
            client_data_hash: cbor::as_bytes(cbor::get(&m, 2), "clientDataHash")?.to_vec(),
            allow_list: read_descriptors(cbor::get(&m, 3))?,
            extensions: match cbor::get(&m, 4) {
                Some(Value::Map(e)) => e.clone(),
                None => Map::new(),
                Some(_) => return Err(CtapError::Malformed("extensions")),
            },
            up: options.get("up").copied(),
            uv: options.get("uv").copied().unwrap_or(false),
            pin_uv_auth: read_pin_uv_auth(cbor::get(&m, 6), cbor::get(&m, 7))?,
        })
    }
}

/// authenticatorGetAssertion's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Assertion {
    /// Absent when the allow list had exactly one entry.
    pub credential_id: Option<Vec<u8>>,
    pub auth_data: Vec<u8>,
    pub signature: Vec<u8>,
    pub user_id: Option<Vec<u8>>,
}

impl Assertion {
    pub fn decode(payload: &[u8]) -> Result<Assertion, CtapError> {
        let m = cbor::decode_map(payload)?;
        let credential_id = match cbor::get(&m, 1) {
            Some(Value::Map(c)) => {
                Some(cbor::as_bytes(cbor::get_text(c, "id"), "credential.id")?.to_vec())
            }
            None => None,
            Some(_) => return Err(CtapError::Malformed("credential")),
        };
        let user_id = match cbor::get(&m, 4) {
            Some(Value::Map(u)) => {
                Some(cbor::as_bytes(cbor::get_text(u, "id"), "user.id")?.to_vec())
            }
            _ => None,
        };
        Ok(Assertion {
            credential_id,
            auth_data: cbor::as_bytes(cbor::get(&m, 2), "authData")?.to_vec(),
            signature: cbor::as_bytes(cbor::get(&m, 3), "signature")?.to_vec(),
            user_id,
        })
    }

    pub fn encode(&self) -> Result<Vec<u8>, CtapError> {
        let mut m = Map::new();
        if let Some(id) = &self.credential_id {
            m.insert(cbor::int(1), descriptor(id));
        }
        m.insert(cbor::int(2), cbor::bytes(&self.auth_data));
        m.insert(cbor::int(3), cbor::bytes(&self.signature));
        if let Some(id) = &self.user_id {
            let mut u = Map::new();
            u.insert(cbor::text("id"), cbor::bytes(id));
            m.insert(cbor::int(4), Value::Map(u));
        }
        cbor::encode(m)
    }
}

/// authenticatorClientPIN's parameters (the subcommands credctl uses).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClientPin {
    pub protocol: Option<i128>,
    pub sub_command: i128,
    pub key_agreement: Option<Value>,
    pub pin_hash_enc: Option<Vec<u8>>,
    pub permissions: Option<i128>,
    pub rp_id: Option<String>,
}

impl ClientPin {
    pub fn encode(&self) -> Result<Vec<u8>, CtapError> {
        let mut m = Map::new();
        if let Some(p) = self.protocol {
            m.insert(cbor::int(1), cbor::int(p));
        }
        m.insert(cbor::int(2), cbor::int(self.sub_command));
        if let Some(k) = &self.key_agreement {
            m.insert(cbor::int(3), k.clone());
        }
        if let Some(h) = &self.pin_hash_enc {
            m.insert(cbor::int(6), cbor::bytes(h));
        }
        if let Some(p) = self.permissions {
            m.insert(cbor::int(9), cbor::int(p));
        }
        if let Some(rp) = &self.rp_id {
            m.insert(cbor::int(10), cbor::text(rp));
        }
        cbor::encode(m)
    }

    pub fn decode(payload: &[u8]) -> Result<ClientPin, CtapError> {
        let m = cbor::decode_map(payload)?;
        Ok(ClientPin {
            protocol: cbor::get(&m, 1)
                .map(|v| cbor::as_int(Some(v), "pinUvAuthProtocol"))
                .transpose()?,
            sub_command: cbor::as_int(cbor::get(&m, 2), "subCommand")?,
            key_agreement: cbor::get(&m, 3).cloned(),
            pin_hash_enc: cbor::get(&m, 6)
                .map(|v| cbor::as_bytes(Some(v), "pinHashEnc").map(<[u8]>::to_vec))
                .transpose()?,
            permissions: cbor::get(&m, 9)
                .map(|v| cbor::as_int(Some(v), "permissions"))
                .transpose()?,
            rp_id: cbor::get(&m, 10)
                .map(|v| cbor::as_text(Some(v), "rpId").map(str::to_owned))
                .transpose()?,
        })
    }
}

fn descriptor(id: &[u8]) -> Value {
    let mut d = Map::new();
    d.insert(cbor::text("id"), cbor::bytes(id));
    d.insert(cbor::text("type"), cbor::text(PUBLIC_KEY));
    Value::Map(d)
}

fn descriptors(ids: &[Vec<u8>]) -> Value {
    Value::Array(ids.iter().map(|id| descriptor(id)).collect())
}

fn read_descriptors(v: Option<&Value>) -> Result<Vec<Vec<u8>>, CtapError> {
    match v {
        None => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|d| match d {
                Value::Map(d) => {
                    cbor::as_bytes(cbor::get_text(d, "id"), "descriptor id").map(<[u8]>::to_vec)
                }
                _ => Err(CtapError::Malformed("descriptor")),
            })
            .collect(),
        Some(_) => Err(CtapError::Malformed("credential list")),
    }
}

fn options_map(v: Option<&Value>) -> Result<BTreeMap<String, bool>, CtapError> {
    let mut out = BTreeMap::new();
    match v {
        None => {}
        Some(Value::Map(o)) => {
            for (k, v) in o {
                match (k, v) {
                    (Value::Text(k), Value::Bool(b)) => {
                        out.insert(k.clone(), *b);
                    }
                    _ => return Err(CtapError::Malformed("options")),
                }
            }
        }
        Some(_) => return Err(CtapError::Malformed("options")),
    }
    Ok(out)
}

fn read_pin_uv_auth(
    param: Option<&Value>,
    protocol: Option<&Value>,
) -> Result<Option<PinUvAuth>, CtapError> {
    let Some(param) = param else {
        return Ok(None);
    };
    let param = cbor::as_bytes(Some(param), "pinUvAuthParam")?.to_vec();
    let protocol = match protocol {
        Some(p) => PinUvProtocol::from_number(cbor::as_int(Some(p), "pinUvAuthProtocol")?).ok_or(
            CtapError::Invalid(super::error::CTAP1_ERR_INVALID_PARAMETER),
        )?,
        None => {
            return Err(CtapError::Invalid(
                super::error::CTAP2_ERR_MISSING_PARAMETER,
            ))
        }
    };
    Ok(Some(PinUvAuth { param, protocol }))
}

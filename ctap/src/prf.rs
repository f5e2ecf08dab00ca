//! The WebAuthn PRF extension as the agent sends and expects it in JSON. webauthn-rs's own types
//! do not know `prf`, so the inputs are read from the options' `serde_json::Value` before it is
//! converted, and the outputs are written into the answer's JSON after it is serialised:
//!
//! - registration: `publicKey.extensions.prf = {}` → answer
//!   `clientExtensionResults.prf = {"enabled": bool}`;
//! - authentication: `publicKey.extensions.prf.evalByCredential = {"<credential id>": {"first":
//!   "<input>"}}` and/or `publicKey.extensions.prf.eval = {"first": "<input>"}` (base64url, no
//!   padding; evalByCredential wins for the credential used) → answer
//!   `clientExtensionResults.prf.results.first = "<32 bytes, base64url>"`.

use std::collections::BTreeMap;

use base64::engine::general_purpose::{URL_SAFE_NO_PAD, URL_SAFE_NO_PAD_INDIFFERENT};
use base64::Engine;
use serde_json::{json, Map as JsonMap, Value as Json};
use webauthn_authenticator_rs::prelude::{
    CreationChallengeResponse, PublicKeyCredential, RegisterPublicKeyCredential,
    RequestChallengeResponse,
};
use zeroize::Zeroize;

/// PRF inputs for one authentication.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrfInputs {
    pub eval: Option<Vec<u8>>,
    pub by_credential: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl PrfInputs {
    pub fn has_per_credential(&self) -> bool {
        !self.by_credential.is_empty()
    }

    /// The input for `credential` (when known): its own, else the general one.
    pub fn input_for(&self, credential: Option<&[u8]>) -> Option<&[u8]> {
        credential
            .and_then(|c| self.by_credential.get(c))
            .or(self.eval.as_ref())
            .map(Vec::as_slice)
    }
}

fn prf_object(options: &Json) -> Option<&Json> {
    options.get("publicKey")?.get("extensions")?.get("prf")
}

/// Whether registration options ask for PRF (`publicKey.extensions.prf` present).
pub fn registration_wants_prf(options: &Json) -> bool {
    prf_object(options).is_some_and(Json::is_object)
}

fn decode(field: &str, v: &Json) -> Result<Vec<u8>, String> {
    let s = v
        .as_str()
        .ok_or_else(|| format!("prf {field} is not a base64url string"))?;
    URL_SAFE_NO_PAD_INDIFFERENT
        .decode(s)
        .map_err(|e| format!("prf {field} is not base64url: {e}"))
}

fn first(field: &str, v: &Json) -> Result<Vec<u8>, String> {
    let first = v
        .get("first")
        .ok_or_else(|| format!("prf {field} has no `first` input"))?;
    decode(field, first)
}

/// The PRF inputs of authentication options, if they carry any.
pub fn authentication_prf(options: &Json) -> Result<Option<PrfInputs>, String> {
    let Some(prf) = prf_object(options) else {
        return Ok(None);
    };
    let mut inputs = PrfInputs::default();
    if let Some(eval) = prf.get("eval") {
        inputs.eval = Some(first("eval", eval)?);
    }
    if let Some(by) = prf.get("evalByCredential") {
        let by = by
            .as_object()
            .ok_or("prf evalByCredential is not an object")?;
        for (id, v) in by {
            let id = URL_SAFE_NO_PAD_INDIFFERENT
                .decode(id)
                .map_err(|e| format!("prf evalByCredential key is not base64url: {e}"))?;
            inputs
                .by_credential
                .insert(id, first("evalByCredential", v)?);
        }
    }
    if inputs.eval.is_none() && inputs.by_credential.is_empty() {
        return Ok(None);
    }
    Ok(Some(inputs))
}

/// Moves the serialised answer's `extensions` to `clientExtensionResults` (webauthn-rs reads
/// either name, but not both) and returns that object.
fn client_extension_results(answer: &mut Json) -> Result<&mut JsonMap<String, Json>, String> {
    let obj = answer
        .as_object_mut()
        .ok_or("the answer is not a JSON object")?;
    let ext = match obj.remove("extensions") {
        Some(Json::Object(m)) => m,
        _ => JsonMap::new(),
    };
    let slot = obj
        .entry("clientExtensionResults")
        .or_insert_with(|| Json::Object(JsonMap::new()));
    if !slot.is_object() {
        *slot = Json::Object(JsonMap::new());
    }
    let results = slot.as_object_mut().ok_or("clientExtensionResults")?;
    for (k, v) in ext {
        results.entry(k).or_insert(v);
    }
    Ok(results)
}

/// Adds `clientExtensionResults.prf.enabled` to a serialised registration answer.
pub fn add_registration_prf(answer: &mut Json, enabled: bool) -> Result<(), String> {
    client_extension_results(answer)?.insert("prf".into(), json!({ "enabled": enabled }));
    Ok(())
}

/// Adds `clientExtensionResults.prf.results.first` to a serialised authentication answer.
pub fn add_authentication_prf(answer: &mut Json, first: &[u8; 32]) -> Result<(), String> {
    let encoded = URL_SAFE_NO_PAD.encode(first);
    client_extension_results(answer)?
        .insert("prf".into(), json!({ "results": { "first": encoded } }));
    Ok(())
}

/// Registration options from the agent's JSON, and whether they ask for PRF.
pub fn parse_registration(options: &Json) -> Result<(CreationChallengeResponse, bool), String> {
    let typed = serde_json::from_value(options.clone())
        .map_err(|e| format!("the agent sent bad options: {e}"))?;
    Ok((typed, registration_wants_prf(options)))
}

/// Authentication options from the agent's JSON, with their PRF inputs.
pub fn parse_authentication(
    options: &Json,
) -> Result<(RequestChallengeResponse, Option<PrfInputs>), String> {
    let typed = serde_json::from_value(options.clone())
        .map_err(|e| format!("the agent sent bad options: {e}"))?;
    let prf =
        authentication_prf(options).map_err(|e| format!("the agent sent bad options: {e}"))?;
    Ok((typed, prf))
}

/// The registration answer JSON; with `clientExtensionResults.prf` when PRF was asked for.
pub fn registration_answer(
    credential: &RegisterPublicKeyCredential,
    prf_enabled: Option<bool>,
) -> Result<Json, String> {
    let mut answer =
        serde_json::to_value(credential).map_err(|e| format!("cannot encode the answer: {e}"))?;
    if let Some(enabled) = prf_enabled {
        add_registration_prf(&mut answer, enabled)?;
    }
    Ok(answer)
}

/// The authentication answer JSON; with `clientExtensionResults.prf.results` when there is an
/// output.
pub fn authentication_answer(
    credential: &PublicKeyCredential,
    prf_output: Option<&[u8; 32]>,
) -> Result<Json, String> {
    let mut answer =
        serde_json::to_value(credential).map_err(|e| format!("cannot encode the answer: {e}"))?;
    if let Some(first) = prf_output {
        add_authentication_prf(&mut answer, first)?;
    }
    Ok(answer)
}

/// Overwrites every string in `v` (an answer that carried a PRF output) once it has been sent.
pub fn scrub_json(v: &mut Json) {
    match v {
        Json::String(s) => s.zeroize(),
        Json::Array(a) => a.iter_mut().for_each(scrub_json),
        Json::Object(m) => m.values_mut().for_each(scrub_json),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_inputs_from_the_options_json() {
        let none = json!({"publicKey": {"challenge": "x"}});
        assert!(!registration_wants_prf(&none));
        assert_eq!(authentication_prf(&none).unwrap(), None);
        assert!(registration_wants_prf(
            &json!({"publicKey": {"extensions": {"prf": {}}}})
        ));
        let opts = json!({"publicKey": {"extensions": {"prf": {
            "eval": {"first": "AAEC"},
            "evalByCredential": {"qrs": {"first": "_-8"}}
        }}}});
        let p = authentication_prf(&opts).unwrap().unwrap();
        assert_eq!(p.eval, Some(vec![0, 1, 2]));
        let id = URL_SAFE_NO_PAD.decode("qrs").unwrap();
        assert_eq!(p.input_for(Some(&id)), Some(&[0xff, 0xef][..]));
        assert_eq!(p.input_for(Some(b"other")), Some(&[0, 1, 2][..]));
        assert_eq!(p.input_for(None), Some(&[0, 1, 2][..]));
        let bad = json!({"publicKey": {"extensions": {"prf": {"eval": {"first": "!!"}}}}});
        assert!(authentication_prf(&bad).is_err());
    }

    #[test]
    fn outputs_go_to_client_extension_results() {
        let mut answer = json!({"id": "x", "extensions": {"appid": true}});
        add_authentication_prf(&mut answer, &[0xfb; 32]).unwrap();
        assert!(answer.get("extensions").is_none());
        assert_eq!(answer["clientExtensionResults"]["appid"], json!(true));
        assert_eq!(
            answer["clientExtensionResults"]["prf"]["results"]["first"],
            json!(URL_SAFE_NO_PAD.encode([0xfb; 32]))
        );
        let mut reg = json!({"id": "x", "extensions": {}});
        add_registration_prf(&mut reg, true).unwrap();
        assert_eq!(
            reg["clientExtensionResults"],
            json!({"prf": {"enabled": true}})
        );
        scrub_json(&mut answer);
        assert_eq!(answer["id"], json!(""));
    }
}

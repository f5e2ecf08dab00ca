//! Sealing on the approval path (SECURITY.md "Sealed sources"):
//! - the PRF inputs a challenge carries (`extensions.prf`, the WebAuthn form every path reads:
//!   the browser natively, `credctl` for its CTAP2 hmac-secret) and the PRF output an answer
//!   carries back (`clientExtensionResults.prf.results.first`);
//! - what a verified touch unwraps: the vault's private half (an approval never creates a vault;
//!   only the first key's seal step does);
//! - the seal step of `key add`: the new key's own touch, which gives its PRF output so the
//!   vault can be wrapped for it. The key is stored only once it holds its copy.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Value};
use std::time::SystemTime;
use webauthn_rs::prelude::PublicKeyCredential;

use super::ceremony::{Claimed, Kind, Lead, Purpose};
use super::keys::KeyRecord;
use super::policy::{Sealing, UserVerification};
use super::{options_json, ApprovalError, Approver, CeremonyId, Inner, KeyInfo, State};
use crate::vault::{new_point, PrfOutput, VaultSecret, KEY_LEN};

/// PRF evaluation points per credential id.
pub(crate) type Evals = Vec<(Vec<u8>, [u8; KEY_LEN])>;

/// The member of an assertion answer (and of a challenge's options) that carries the PRF
/// output of a second touch without user verification. The control edge checks at compile time
/// that the protocol names it alike.
pub const PRF_WITHOUT_UV: &str = "credagentPrfWithoutUv";

/// The PRF outputs an assertion answer carries.
#[derive(Debug, Default)]
pub struct PrfAnswer {
    /// From the assertion's own touch (`clientExtensionResults.prf.results.first`).
    pub output: Option<PrfOutput>,
    /// From a second touch of the same key without user verification, at the same point
    /// ([`PRF_WITHOUT_UV`]): sent only to move a touch-only wrap.
    pub without_uv: Option<PrfOutput>,
}

impl PrfAnswer {
    /// Reads the PRF outputs of an answer, taking the member webauthn-rs does not know out of
    /// it. A present but malformed output is an error (it must not silently become "none").
    pub fn take(answer: &mut Value) -> Result<PrfAnswer, MalformedPrf> {
        let without_uv = match answer
            .as_object_mut()
            .and_then(|o| o.remove(PRF_WITHOUT_UV))
        {
            None => None,
            Some(Value::String(mut text)) => {
                let decoded = decode_output(&text, PRF_WITHOUT_UV);
                zeroize::Zeroize::zeroize(&mut text);
                Some(decoded?)
            }
            Some(_) => return Err(MalformedPrf::NotAString(PRF_WITHOUT_UV)),
        };
        Ok(PrfAnswer {
            output: prf_output(answer)?,
            without_uv,
        })
    }
}

/// A PRF output in an answer that is present but unusable: refused, never taken for "none".
#[derive(Debug, thiserror::Error)]
pub enum MalformedPrf {
    #[error("{0} must be a base64url string")]
    NotAString(&'static str),
    #[error("{what} is not base64url: {source}")]
    NotBase64 {
        what: &'static str,
        #[source]
        source: base64::DecodeError,
    },
    #[error("{0}")]
    Length(crate::vault::VaultError),
}

fn decode_output(text: &str, what: &'static str) -> Result<PrfOutput, MalformedPrf> {
    let mut bytes = URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .map_err(|source| MalformedPrf::NotBase64 { what, source })?;
    let out = PrfOutput::from_slice(&bytes).map_err(MalformedPrf::Length);
    zeroize::Zeroize::zeroize(&mut bytes);
    out
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn extensions(options: &mut Value) -> Option<&mut serde_json::Map<String, Value>> {
    let public_key = options.get_mut("publicKey")?.as_object_mut()?;
    let ext = public_key
        .entry("extensions")
        .or_insert_with(|| Value::Object(Default::default()));
    if !ext.is_object() {
        *ext = Value::Object(Default::default());
    }
    ext.as_object_mut()
}

/// Asks the new credential to enable its PRF (`extensions.prf = {}`; CTAP2 `hmac-secret: true`).
pub(crate) fn request_prf_at_creation(options: &mut Value) {
    if let Some(ext) = extensions(options) {
        ext.insert("prf".into(), json!({}));
    }
}

/// Asks for each credential's PRF at its evaluation point (`extensions.prf.evalByCredential`).
pub(crate) fn request_prf_eval(options: &mut Value, evals: &Evals) {
    if evals.is_empty() {
        return;
    }
    let by_credential: serde_json::Map<String, Value> = evals
        .iter()
        .map(|(id, point)| (b64(id), json!({ "first": b64(point) })))
        .collect();
    if let Some(ext) = extensions(options) {
        ext.insert("prf".into(), json!({ "evalByCredential": by_credential }));
    }
}

/// Names the credentials whose wrap still opens with a touch alone
/// ([`PRF_WITHOUT_UV`]): the client adds their PRF output from a touch
/// without user verification, so the user-verified touch can wrap the vault for them anew.
pub(crate) fn request_prf_without_uv(options: &mut Value, ids: &[Vec<u8>]) {
    if ids.is_empty() {
        return;
    }
    if let Some(o) = options.as_object_mut() {
        let ids = ids.iter().map(|id| Value::String(b64(id))).collect();
        o.insert(PRF_WITHOUT_UV.into(), Value::Array(ids));
    }
}

/// Asks the client to verify the user (`publicKey.userVerification = "required"`): every key
/// of a touch-only policy holds a wrap made with user verification, which only such a touch
/// opens.
pub(crate) fn request_user_verification(options: &mut Value) {
    if let Some(pk) = options.get_mut("publicKey").and_then(Value::as_object_mut) {
        pk.insert("userVerification".into(), json!("required"));
    }
}

/// The client extension results of an answer (`clientExtensionResults`, or `extensions` as
/// webauthn-rs-proto names them).
fn client_results(answer: &Value) -> Option<&Value> {
    answer
        .get("clientExtensionResults")
        .or_else(|| answer.get("extensions"))
}

/// The PRF output an assertion answer carries, if any. A present but malformed one is an error
/// (it must not silently become "no PRF").
pub fn prf_output(answer: &Value) -> Result<Option<PrfOutput>, MalformedPrf> {
    let Some(first) = client_results(answer)
        .and_then(|r| r.get("prf"))
        .and_then(|p| p.get("results"))
        .and_then(|r| r.get("first"))
    else {
        return Ok(None);
    };
    let text = first
        .as_str()
        .ok_or(MalformedPrf::NotAString("prf.results.first"))?;
    decode_output(text, "prf.results.first").map(Some)
}

/// Whether a registration answer says the new credential evaluates the PRF.
pub fn prf_enabled(answer: &Value) -> bool {
    client_results(answer)
        .and_then(|r| r.get("prf"))
        .and_then(|p| p.get("enabled"))
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

impl Approver {
    /// The PRF inputs for an approval by `records`: each sealed credential's evaluation point.
    /// An approval never creates a vault: only the first key's registration does (its seal
    /// step). The seventh attack review deleted `vault.json` and `trusted.json`, edited
    /// `keys.json` so the user's key approved touch-only, and had one touch of that key, taken
    /// without its PIN, create a vault of its own and adopt a weaker policy; the user's next
    /// source went to that vault.
    pub(super) fn evals_for(&self, records: &[&KeyRecord]) -> Evals {
        records
            .iter()
            .filter_map(|record| {
                let id = record.credential.cred_id().as_slice().to_vec();
                self.vault.point_for(&id).map(|point| (id, point))
            })
            .collect()
    }

    /// What the challenge must add for keys whose wrap was made with another kind of touch
    /// than the policy asks for. `moving` (`credctl key pin`, and only it): keys whose wrap
    /// opens with a touch alone are named, so that touch moves the wrap
    /// ([`request_prf_without_uv`]). No other approval ever asks for a touch without the PIN:
    /// the eighth attack review showed how a routine touch that did could move a wrap of a
    /// vault swapped in behind the user's back, made from a touch lured without the PIN.
    /// Touch-only, when every key's wrap was made with user verification, the client is asked
    /// for it (such a wrap never goes back to a touch alone).
    pub(super) fn adapt_to_wraps(&self, options: &mut Value, records: &[&KeyRecord], moving: bool) {
        let wraps: Vec<(Vec<u8>, bool)> = records
            .iter()
            .filter_map(|r| {
                let id = r.credential.cred_id().as_slice().to_vec();
                self.vault.wrap_user_verified(&id).map(|uv| (id, uv))
            })
            .collect();
        match self.rp().user_verification() {
            UserVerification::Required if moving => {
                let touch_only: Vec<Vec<u8>> = wraps
                    .into_iter()
                    .filter(|(_, uv)| !uv)
                    .map(|(id, _)| id)
                    .collect();
                request_prf_without_uv(options, &touch_only);
            }
            UserVerification::Required => {}
            UserVerification::Discouraged => {
                if !wraps.is_empty() && wraps.iter().all(|(_, uv)| *uv) {
                    request_user_verification(options);
                }
            }
        }
    }

    /// What a verified touch of key `key` (credential `cred_id`) unwraps. With sealing
    /// required, a touch that unwraps nothing is refused; allowed unsealed, it approves by
    /// policy and opens only unsealed sources. `user_verified`: the assertion's UV flag, which
    /// says which of the key's two hmac-secrets gave `prf.output`.
    pub(super) fn unseal_for(
        &self,
        key: &str,
        cred_id: &[u8],
        prf: PrfAnswer,
        user_verified: bool,
        moving: bool,
    ) -> Result<Option<VaultSecret>, ApprovalError> {
        let required = self.sealing() == Sealing::Required;
        let PrfAnswer { output, without_uv } = prf;
        let Some(prf) = output else {
            if !required {
                return Ok(None);
            }
            if !self.vault.exists() {
                // Nothing was asked of the key (no vault to ask for): say what is missing.
                self.refuse_if_vault_lost()?;
                return Err(ApprovalError::VaultMissing { key: key.into() });
            }
            return Err(if self.vault.point_for(cred_id).is_none() {
                ApprovalError::KeyNotSealed { key: key.into() }
            } else {
                ApprovalError::NoPrf { key: key.into() }
            });
        };
        if self.vault.exists() {
            let (Some(point), Some(wrap_uv)) = (
                self.vault.point_for(cred_id),
                self.vault.wrap_user_verified(cred_id),
            ) else {
                return if required {
                    Err(ApprovalError::KeyNotSealed { key: key.into() })
                } else {
                    Ok(None)
                };
            };
            let unwrap_with = |output: &PrfOutput| {
                self.vault
                    .unwrap(cred_id, output)
                    .map_err(|_| ApprovalError::VaultUnwrap { key: key.into() })
            };
            return match (wrap_uv, user_verified, without_uv) {
                (true, false, _) => {
                    Err(ApprovalError::WrapNeedsUserVerification { key: key.into() })
                }
                // A wrap from before user verification, and a user-verified touch that brought
                // the touch-only output too: open with that, then wrap anew with the verified
                // output, which replaces the touch-only wrap.
                (false, true, Some(touch_only)) if moving => {
                    let secret = unwrap_with(&touch_only)?;
                    self.vault
                        .add_wrap(&secret, cred_id, point, &prf, true)
                        .map_err(vault_error)?;
                    tracing::info!(
                        key,
                        "moved the key's copy of the vault to user verification: a touch without \
                         its PIN no longer opens it"
                    );
                    Ok(Some(secret))
                }
                (false, true, _) if self.rp().user_verification() == UserVerification::Required => {
                    Err(ApprovalError::WrapNeedsMove { key: key.into() })
                }
                _ => unwrap_with(&prf).map(Some),
            };
        }
        // Keys are registered but there is no vault: `vault.json` was lost (or deleted), or
        // the keys were registered unsealed. A new vault here would strand every sealed
        // secret, and would let whoever removed the file choose what the next touch creates.
        if !required {
            return Ok(None);
        }
        self.refuse_if_vault_lost()?;
        Err(ApprovalError::VaultMissing { key: key.into() })
    }

    /// The seal step of `key add`: a ceremony in which only the new key (not yet stored) can
    /// answer, asking for its PRF at a fresh point. `vault` is the private half the authorizing
    /// touch unwrapped (none for the first key).
    pub(super) fn start_seal(
        &self,
        inner: &mut Inner,
        record: KeyRecord,
        authorized: bool,
        vault: Option<VaultSecret>,
        lead: Lead,
        now: SystemTime,
    ) -> Result<(CeremonyId, Value), ApprovalError> {
        let point = new_point().map_err(vault_error)?;
        let (challenge, state) = self
            .rp()
            .start_authentication(std::slice::from_ref(&record.credential))?;
        let mut options = options_json(&challenge)?;
        let id = record.credential.cred_id().as_slice().to_vec();
        request_prf_eval(&mut options, &vec![(id, point)]);
        let kind = Kind::Approve(Purpose::KeySeal(record.name.clone()));
        let state = State::Seal {
            state,
            record: Box::new(record),
            point,
            authorized,
            vault,
        };
        let id = inner
            .ceremonies
            .insert(now, kind, state, options.clone(), lead)?;
        Ok((id, options))
    }

    /// The new key's sealing touch: verified against the new key alone, then the vault is
    /// created (first key) or wrapped for it, and only then is the key stored.
    pub(super) fn finish_seal_claimed(
        &self,
        claimed: Claimed<State>,
        credential: &PublicKeyCredential,
        prf: Option<PrfOutput>,
        now: SystemTime,
    ) -> Result<(KeyInfo, Option<VaultSecret>), ApprovalError> {
        let State::Seal {
            state,
            mut record,
            point,
            authorized,
            vault,
        } = claimed.state
        else {
            return Err(ApprovalError::UnknownCeremony);
        };
        let result = self
            .rp()
            .finish_authentication(credential, &state)
            .map_err(|err| {
                super::rp::assertion_error(err, credential, Some(record.name.clone()))
            })?;
        let cred_id = record.credential.cred_id().as_slice().to_vec();
        if result.cred_id().as_slice() != cred_id.as_slice() {
            return Err(ApprovalError::AssertionInvalid {
                reason: "the touch came from another key than the one being added".into(),
            });
        }
        let prf = prf.ok_or_else(|| ApprovalError::NoPrf {
            key: record.name.clone(),
        })?;
        let created = match vault {
            Some(secret) => {
                self.vault
                    .add_wrap(&secret, &cred_id, point, &prf, result.user_verified())
                    .map_err(vault_error)?;
                None
            }
            // Only the first key makes the vault: a key added with the touch of one registered
            // before gets a copy of the vault that touch unwrapped, never a vault of its own.
            None if !self.vault.exists() && authorized => {
                return Err(ApprovalError::NotAuthorized {
                    what: format!(
                        "sealing the key {}: the keys registered before it hold no vault \
                         (vault.json is missing, or they were registered unsealed), and only the \
                         first key makes one. Restore vault.json and restart the agent, or start \
                         over: move keys.json aside and register your keys again",
                        record.name
                    ),
                })
            }
            None if !self.vault.exists() => {
                self.refuse_if_vault_lost()?;
                let created = self
                    .vault
                    .create(&cred_id, point, &prf, result.user_verified())
                    .map_err(vault_error)?;
                tracing::info!(key = %record.name, "created the vault with the first key");
                Some(created)
            }
            None => {
                return Err(ApprovalError::NotAuthorized {
                    what: format!(
                        "sealing the key {}: the touch that allowed adding it did not unwrap the \
                         vault",
                        record.name
                    ),
                })
            }
        };
        record.counter = result.counter();
        let _ = record.credential.update_credential(&result);
        record.last_used = Some(crate::util::unix_secs(now));
        let name = record.name.clone();
        let stored = self.commit_key(*record, authorized);
        let orphan = self.lock().store.find_by_credential(&cred_id).is_none();
        if stored.is_err() && orphan {
            // The wrap of a key that was not stored unwraps nothing anyone holds; drop it.
            let _ = self.vault.remove_wrap(&cred_id);
            tracing::warn!(key = %name, "the sealed key could not be stored");
        }
        // The new vault's secret goes to the caller, who records what its first touch
        // confirmed (`crate::trust`) and drops it.
        stored.map(|info| (info, created))
    }
}

impl Approver {
    /// Refuses to make a vault where `trusted.json` says one existed (`vault.json` deleted or
    /// lost): a new one would leave every sealed source unopenable, and an attacker who removed
    /// the file would have your next touch do that.
    fn refuse_if_vault_lost(&self) -> Result<(), ApprovalError> {
        match &self.lost_vault {
            Some(fingerprint) => Err(ApprovalError::Vault {
                detail: format!(
                    "vault.json is missing, but your touches confirmed vault {fingerprint} \
                     (trusted.json): restore vault.json from a backup and restart the agent; no \
                     new vault was made, since it would leave every sealed source unopenable"
                ),
            }),
            None => Ok(()),
        }
    }
}

fn vault_error(e: crate::vault::VaultError) -> ApprovalError {
    ApprovalError::Vault {
        detail: e.to_string(),
    }
}

//! The `[approval]` policy from config.toml, loading of attestation CA files, and the
//! classification of authenticators as hardware, software or unknown.
//!
//! How software authenticators are recognised (and how far that goes):
//! - With `attestation_ca` set, a key registers only if its attestation certificate chains to
//!   one of those CAs (checked by webauthn-rs). This is the only cryptographic guarantee that
//!   the private key lives in a genuine device; such keys are recorded as `hardware`.
//! - Independently, the AAGUID the authenticator reports in its authenticator data is compared
//!   with the AAGUIDs of known software authenticators (webauthn-authenticator-rs `SoftToken`,
//!   Chromium's CDP virtual authenticator). A match is recorded as `software` and refused
//!   unless `allow_software_authenticators = true`, even when a configured CA vouches for it.
//! - Without a CA list this check only catches software that announces itself honestly: any
//!   program can claim any AAGUID (or send `none` attestation with a zero AAGUID, recorded as
//!   `unknown` and accepted). Sites that need the guarantee must set `attestation_ca`.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use uuid::Uuid;
use webauthn_rs::prelude::AttestationCaList;

use super::error::ApprovalError;

/// Whether a touch is enough or the key must also verify the user (PIN or biometric).
///
/// Required by default: the vault is wrapped with the key's hmac-secret output *with* user
/// verification, which an authenticator derives from another secret than the output of a
/// touch without it (CTAP 2.1 §12.5). A program of the user's that talks to `/dev/hidraw*`
/// itself and lures a touch without the PIN gets an output that opens nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserVerification {
    /// User presence only: one touch approves (webauthn-rs security-key flow with
    /// `danger_set_user_presence_only_security_keys`). Weaker: shown so by `status`,
    /// `key list` and `doctor`, and a change to it takes a touch that confirms it.
    Discouraged,
    /// The authenticator must verify the user (webauthn-rs passkey / attested-passkey flows).
    #[default]
    Required,
}

/// Whether a touch must open the vault (`[approval] sealing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Sealing {
    /// Every touch must carry the key's hmac-secret/PRF output and unwrap the vault; keys
    /// without hmac-secret are refused. Sources then open only with a touch.
    #[default]
    Required,
    /// Keys without hmac-secret may approve by policy alone; sources they approve stay
    /// readable in the keyring. Shown as "unsealed" by `status`, `key list` and `doctor`.
    AllowUnsealed,
}

/// The `[approval]` table of config.toml.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApprovalPolicy {
    /// Touch only, or touch plus PIN/biometric.
    pub user_verification: UserVerification,
    /// Whether authenticators that identify themselves as software may register and approve.
    pub allow_software_authenticators: bool,
    /// PEM files of authenticator vendor CAs; when non-empty only keys attested by them register.
    pub attestation_ca: Vec<PathBuf>,
    /// Whether touches must unseal (the default) or may approve by policy alone.
    pub sealing: Sealing,
}

/// What kind of authenticator holds a key, as far as registration could tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthenticatorKind {
    /// Attested by one of the configured `attestation_ca` CAs, and not a known software AAGUID.
    Hardware,
    /// Reports the AAGUID of a known software authenticator.
    Software,
    /// Neither: no CA list was configured (the common case for a plain security key).
    Unknown,
}

/// AAGUIDs of software authenticators, with a description for messages.
pub const KNOWN_SOFTWARE_AAGUIDS: &[(Uuid, &str)] = &[
    (
        // webauthn_authenticator_rs::softtoken::AAGUID (credctl --authenticator soft:FILE).
        uuid::uuid!("0fb9bcbc-a0d4-4042-bbb0-559bc1631e28"),
        "webauthn-authenticator-rs SoftToken",
    ),
    (
        // kDeviceAaguid in Chromium's device/fido/virtual_ctap2_device.cc (CDP virtual authenticator).
        uuid::uuid!("01020304-0506-0708-0102-030405060708"),
        "Chromium virtual authenticator",
    ),
];

/// The description of a known software authenticator with this AAGUID, if any.
pub fn known_software(aaguid: Option<Uuid>) -> Option<&'static str> {
    let aaguid = aaguid?;
    KNOWN_SOFTWARE_AAGUIDS
        .iter()
        .find(|(known, _)| *known == aaguid)
        .map(|(_, what)| *what)
}

/// Classifies a freshly registered key.
pub(crate) fn classify(aaguid: Option<Uuid>, attested_by_configured_ca: bool) -> AuthenticatorKind {
    if known_software(aaguid).is_some() {
        AuthenticatorKind::Software
    } else if attested_by_configured_ca {
        AuthenticatorKind::Hardware
    } else {
        AuthenticatorKind::Unknown
    }
}

/// Loads every certificate of every `attestation_ca` file into one list (`None` when the policy
/// names no file). A file may hold several PEM certificates. Certificates that are not valid at
/// `now` are loaded but logged, since webauthn-rs will refuse chains through them.
pub(crate) fn load_attestation_cas(
    paths: &[PathBuf],
    now: SystemTime,
) -> Result<Option<AttestationCaList>, ApprovalError> {
    if paths.is_empty() {
        return Ok(None);
    }
    let mut list = AttestationCaList::default();
    for path in paths {
        list.union(&load_ca_file(path, now)?);
    }
    Ok(Some(list))
}

fn load_ca_file(path: &Path, now: SystemTime) -> Result<AttestationCaList, ApprovalError> {
    let invalid = |detail: String| ApprovalError::AttestationCaInvalid {
        path: path.to_path_buf(),
        detail,
    };
    let text = std::fs::read_to_string(path).map_err(|err| invalid(err.to_string()))?;
    let blocks = pem_certificates(&text).ok_or_else(|| invalid("unterminated PEM block".into()))?;
    if blocks.is_empty() {
        return Err(invalid("no PEM CERTIFICATE block found".into()));
    }
    let mut list = AttestationCaList::default();
    for block in blocks {
        let pem = format!("{block}\n");
        let one = AttestationCaList::try_from(pem.as_bytes())
            .map_err(|err| invalid(format!("bad certificate: {err}")))?;
        for ca in one.cas().values() {
            let validity = ca.ca().tbs_certificate().validity();
            let (not_before, not_after) = (
                validity.not_before.to_system_time(),
                validity.not_after.to_system_time(),
            );
            if now < not_before || now > not_after {
                tracing::warn!(
                    path = %path.display(),
                    "attestation CA certificate is not valid now; keys chaining to it cannot register"
                );
            }
        }
        list.union(&one);
    }
    Ok(list)
}

/// The `-----BEGIN CERTIFICATE-----` blocks of a PEM bundle; `None` if one is unterminated.
fn pem_certificates(text: &str) -> Option<Vec<&str>> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        let from_begin = rest.get(start..)?;
        let end = from_begin.find(END)? + END.len();
        blocks.push(from_begin.get(..end)?);
        rest = from_begin.get(end..)?;
    }
    Some(blocks)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn policy_defaults_and_values() {
        let p: ApprovalPolicy = serde_json::from_str("{}").unwrap();
        assert_eq!(p, ApprovalPolicy::default());
        assert_eq!(p.user_verification, UserVerification::Required);
        assert!(!p.allow_software_authenticators);
        assert!(p.attestation_ca.is_empty());

        let p: ApprovalPolicy = serde_json::from_str(
            r#"{"user_verification":"discouraged","allow_software_authenticators":true,
                "attestation_ca":["/etc/yubico.pem"]}"#,
        )
        .unwrap();
        assert_eq!(p.user_verification, UserVerification::Discouraged);
        assert!(p.allow_software_authenticators);
        assert_eq!(p.attestation_ca, vec![PathBuf::from("/etc/yubico.pem")]);
    }

    #[test]
    fn policy_rejects_unknown_keys_and_values() {
        let err = serde_json::from_str::<ApprovalPolicy>(r#"{"user_verfication":"required"}"#)
            .unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
        let err = serde_json::from_str::<ApprovalPolicy>(r#"{"user_verification":"Required"}"#)
            .unwrap_err();
        assert!(err.to_string().contains("unknown variant"), "{err}");
    }

    #[test]
    fn pem_splitting() {
        let text = "junk\n-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n\
                    -----BEGIN CERTIFICATE-----\nBBBB\n-----END CERTIFICATE-----\n";
        let blocks = pem_certificates(text).unwrap();
        assert_eq!(blocks.len(), 2);
        assert!(blocks[1].contains("BBBB"));
        assert!(pem_certificates("-----BEGIN CERTIFICATE-----\nAAAA\n").is_none());
        assert!(pem_certificates("nothing").unwrap().is_empty());
    }

    #[test]
    fn bad_ca_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let err =
            load_attestation_cas(std::slice::from_ref(&missing), SystemTime::now()).unwrap_err();
        assert_eq!(err.code(), "attestation_ca_invalid");
        assert!(err.to_string().contains("missing.pem"), "{err}");

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate").unwrap();
        let err = load_attestation_cas(&[empty], SystemTime::now()).unwrap_err();
        assert!(err.to_string().contains("no PEM CERTIFICATE"), "{err}");

        let garbage = dir.path().join("garbage.pem");
        std::fs::write(
            &garbage,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let err = load_attestation_cas(&[garbage], SystemTime::now()).unwrap_err();
        assert!(err.to_string().contains("bad certificate"), "{err}");
        assert!(load_attestation_cas(&[], SystemTime::now())
            .unwrap()
            .is_none());
    }

    #[test]
    fn classification() {
        let soft = KNOWN_SOFTWARE_AAGUIDS[0].0;
        assert_eq!(classify(Some(soft), true), AuthenticatorKind::Software);
        assert_eq!(
            classify(Some(Uuid::new_v4()), true),
            AuthenticatorKind::Hardware
        );
        assert_eq!(classify(None, false), AuthenticatorKind::Unknown);
        assert_eq!(
            known_software(Some(soft)),
            Some("webauthn-authenticator-rs SoftToken")
        );
        // The constant must track the soft token this project ships.
        assert_eq!(soft, webauthn_authenticator_rs::softtoken::AAGUID);
    }
}

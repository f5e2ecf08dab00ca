//! The software authenticator for tests and demos (`credctl --authenticator soft:FILE`): a
//! software CTAP2 device (`ctap::soft_device`) driven by the same CTAP2 client as USB keys, kept
//! in a 0600 file that is rewritten atomically after every operation, because its signature
//! counters change each time.
//!
//! INSECURE by design: the private keys sit unprotected in that file, and a copy of it is a
//! working clone of the "key". The caller must say so loudly; this module prints nothing.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use uuid::Uuid;
use webauthn_authenticator_rs::error::WebauthnCError;
use webauthn_authenticator_rs::prelude::{
    CreationChallengeResponse, PublicKeyCredential, RegisterPublicKeyCredential,
    RequestChallengeResponse, Url,
};
use webauthn_authenticator_rs::WebauthnAuthenticator;
use zeroize::Zeroizing;

use super::ctap::prf::PrfInputs;
use super::ctap::soft_device::SoftDevice;
use super::ctap::{CtapClient, CtapError, PrfOutput};

/// The AAGUID every soft authenticator reports (agents recognise it as software).
pub const SOFT_AAGUID: Uuid = webauthn_authenticator_rs::softtoken::AAGUID;

/// Largest state file we read: a token with thousands of credentials stays far below.
const MAX_FILE_SIZE: u64 = 16 << 20;

/// The environment variable that holds the software authenticator's PIN: set when the file is
/// created, the new authenticator gets that PIN; set when it is used, it is the PIN credctl
/// gives it. Only the software authenticator reads it (a real key's PIN is asked on the
/// terminal, never taken from the environment, which other programs of the user can read).
pub const SOFT_PIN_VAR: &str = "CREDCTL_SOFT_PIN";

/// How a new soft authenticator behaves.
#[derive(Debug, Clone, Default)]
pub struct SoftOptions {
    /// Set the user-verified flag without verifying anyone, so policies that require user
    /// verification can be exercised in tests. Without it (and without a PIN), such requests
    /// are refused.
    pub claim_user_verification: bool,
    /// A PIN: the authenticator then verifies the user as a security key with a PIN does
    /// (clientPIN, pinUvAuthToken with permissions).
    pub pin: Option<Zeroizing<String>>,
}

impl SoftOptions {
    /// The options for a file created on first use: a PIN from [`SOFT_PIN_VAR`] if it is set.
    pub fn from_env() -> SoftOptions {
        SoftOptions {
            claim_user_verification: false,
            pin: soft_pin(),
        }
    }
}

/// The PIN from [`SOFT_PIN_VAR`], if it is set and not empty.
fn soft_pin() -> Option<Zeroizing<String>> {
    std::env::var(SOFT_PIN_VAR)
        .ok()
        .filter(|p| !p.is_empty())
        .map(Zeroizing::new)
}

/// Why the software authenticator could not act.
#[derive(Debug, thiserror::Error)]
pub enum SoftError {
    #[error("cannot {action} software authenticator file {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "software authenticator file {} is damaged or from another version: delete it and \
         register the new authenticator with `credctl key add`",
        path.display()
    )]
    Corrupt { path: PathBuf },
    #[error("software authenticator file {} already exists: use it, or pick another path", path.display())]
    Exists { path: PathBuf },
    #[error(
        "software authenticator path {} is a directory: name a file (soft:FILE), e.g. {}/soft.cbor",
        path.display(),
        path.display()
    )]
    NotAFile { path: PathBuf },
    #[error(
        "software authenticator file {} can be read or written by others (mode {mode:o}): \
         `chmod 600` it, or delete it and register a new one",
        path.display()
    )]
    Insecure { path: PathBuf, mode: u32 },
    #[error(
        "the software authenticator refused the origin or relying party ({origin}): it only \
         answers https origins and http://localhost"
    )]
    OriginRefused { origin: String },
    #[error(
        "the software authenticator cannot do what was asked ({0}): it verifies the user only \
         with a PIN, which it gets when created with CREDCTL_SOFT_PIN set (and takes from \
         CREDCTL_SOFT_PIN when used); it has no resident keys"
    )]
    Unsupported(#[source] CtapError),
    #[error(
        "this software authenticator holds none of the requested keys: register it with \
         `credctl key add`"
    )]
    UnknownCredential,
    #[error("the software authenticator failed: {0}")]
    Failed(#[source] CtapError),
}

/// A software CTAP2 device bound to its state file, behind the CTAP2 client.
pub struct SoftAuthenticator {
    /// Where the device lives; rewritten after every operation.
    path: PathBuf,
    client: CtapClient<SoftDevice>,
}

impl SoftAuthenticator {
    /// Opens the authenticator at `path`, or creates one (without user verification) if there is
    /// none.
    pub fn open_or_create(path: &Path) -> Result<Self, SoftError> {
        match Self::open(path) {
            Err(SoftError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                match Self::create(path, SoftOptions::from_env()) {
                    Ok(authenticator) => Ok(authenticator),
                    // Someone created it in the meantime: use theirs.
                    Err(SoftError::Exists { .. }) => Self::open(path),
                    Err(err) => Err(err),
                }
            }
            other => other,
        }
    }

    /// Opens an existing authenticator; the file must be private to its owner.
    pub fn open(path: &Path) -> Result<Self, SoftError> {
        let io_err = |source| SoftError::Io {
            action: "read",
            path: path.to_path_buf(),
            source,
        };
        let mut file = File::open(path).map_err(io_err)?;
        let meta = file.metadata().map_err(io_err)?;
        if !meta.is_file() {
            return Err(SoftError::NotAFile {
                path: path.to_path_buf(),
            });
        }
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(SoftError::Insecure {
                path: path.to_path_buf(),
                mode,
            });
        }
        let mut bytes = Zeroizing::new(Vec::new());
        (&mut file)
            .take(MAX_FILE_SIZE)
            .read_to_end(&mut bytes)
            .map_err(io_err)?;
        let device = SoftDevice::from_bytes(&bytes, *SOFT_AAGUID.as_bytes()).ok_or_else(|| {
            SoftError::Corrupt {
                path: path.to_path_buf(),
            }
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            client: client(device),
        })
    }

    /// Creates a new authenticator at `path`, which must not exist. It attests its credentials
    /// with `packed` self attestation (signed by the credential key, no certificate), so
    /// `attestation_ca` policies refuse it.
    pub fn create(path: &Path, options: SoftOptions) -> Result<Self, SoftError> {
        let mut device = SoftDevice::new(options.claim_user_verification, *SOFT_AAGUID.as_bytes());
        if let Some(pin) = &options.pin {
            device = device.with_pin(pin, true);
        }
        let bytes = device
            .to_bytes()
            .ok_or(SoftError::Failed(CtapError::Malformed(
                "cannot encode the state",
            )))?;
        create_new_atomic(path, &bytes).map_err(|source| match source.kind() {
            io::ErrorKind::AlreadyExists => SoftError::Exists {
                path: path.to_path_buf(),
            },
            _ => SoftError::Io {
                action: "create",
                path: path.to_path_buf(),
                source,
            },
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            client: client(device),
        })
    }

    /// Whether the authenticator has a PIN (and so verifies the user).
    pub fn has_pin(&self) -> bool {
        self.client.device().has_pin()
    }

    /// The state file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates a credential for the relying party's challenge, as a client at `origin` would.
    pub fn register(
        &mut self,
        origin: &Url,
        challenge: CreationChallengeResponse,
    ) -> Result<RegisterPublicKeyCredential, SoftError> {
        self.register_with_prf(origin, challenge, false)
            .map(|(credential, _)| credential)
    }

    /// `register`, asking for hmac-secret when `prf` is set; then also returns whether the
    /// authenticator's signed extensions say PRF is enabled.
    pub fn register_with_prf(
        &mut self,
        origin: &Url,
        challenge: CreationChallengeResponse,
        prf: bool,
    ) -> Result<(RegisterPublicKeyCredential, Option<bool>), SoftError> {
        self.client.request_prf_on_create(prf);
        let credential = self
            .client
            .do_registration(origin.clone(), challenge)
            .map_err(|err| self.map_error(err, origin))?;
        let enabled = self.client.take_prf_enabled();
        self.save()?;
        Ok((credential, enabled))
    }

    /// Signs the relying party's challenge, as a client at `origin` would. The new counter is on
    /// disk before the assertion is returned.
    pub fn authenticate(
        &mut self,
        origin: &Url,
        challenge: RequestChallengeResponse,
    ) -> Result<PublicKeyCredential, SoftError> {
        self.authenticate_with_prf(origin, challenge, None)
            .map(|(credential, _)| credential)
    }

    /// `authenticate` with PRF inputs; also returns the PRF output (32 bytes) when there is one.
    pub fn authenticate_with_prf(
        &mut self,
        origin: &Url,
        challenge: RequestChallengeResponse,
        prf: Option<PrfInputs>,
    ) -> Result<(PublicKeyCredential, Option<PrfOutput>), SoftError> {
        self.client.set_prf_inputs(prf);
        let assertion = self
            .client
            .do_authentication(origin.clone(), challenge)
            .map_err(|err| self.map_error(err, origin))?;
        let output = self.client.take_prf_output();
        self.save()?;
        Ok((assertion, output))
    }

    /// The PRF output of `credential` from a touch without user verification
    /// ([`CtapClient::prf_without_uv`]); the new counter is on disk before it is returned.
    pub fn prf_without_uv(
        &mut self,
        rp_id: &str,
        credential: &[u8],
        input: &[u8],
    ) -> Result<PrfOutput, SoftError> {
        let output = self
            .client
            .prf_without_uv(rp_id, credential, input)
            .map_err(|e| match e {
                CtapError::NoCredentials => SoftError::UnknownCredential,
                e => SoftError::Failed(e),
            })?;
        self.save()?;
        Ok(output)
    }

    fn map_error(&mut self, err: WebauthnCError, origin: &Url) -> SoftError {
        match self.client.take_error() {
            Some(CtapError::NoCredentials) => SoftError::UnknownCredential,
            Some(
                e @ (CtapError::UnsupportedOption
                | CtapError::UnsupportedAlgorithm
                | CtapError::UnsupportedExtension
                | CtapError::PinNotSet
                | CtapError::Unsupported(_)),
            ) => SoftError::Unsupported(e),
            Some(e) => SoftError::Failed(e),
            // Refused by the WebAuthn client before the device was asked.
            None => match err {
                WebauthnCError::Security => SoftError::OriginRefused {
                    origin: origin.to_string(),
                },
                WebauthnCError::NotSupported => {
                    SoftError::Unsupported(CtapError::Client(err.to_string()))
                }
                other => SoftError::Failed(CtapError::Client(other.to_string())),
            },
        }
    }

    fn save(&self) -> Result<(), SoftError> {
        let bytes =
            self.client
                .device()
                .to_bytes()
                .ok_or(SoftError::Failed(CtapError::Malformed(
                    "cannot encode the state",
                )))?;
        replace_atomic(&self.path, &bytes).map_err(|source| SoftError::Io {
            action: "write",
            path: self.path.clone(),
            source,
        })
    }
}

/// The CTAP2 client over a soft device, given its PIN from [`SOFT_PIN_VAR`] when asked.
fn client(device: SoftDevice) -> CtapClient<SoftDevice> {
    CtapClient::new(device).with_pin_callback(Box::new(soft_pin))
}

fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Writes `bytes` to a new 0600 temp file beside `path` and fsyncs it; returns the temp path.
fn write_temp(path: &Path, bytes: &[u8]) -> io::Result<PathBuf> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = parent_dir(path).join(format!(".{name}.tmp-{}", Uuid::new_v4().simple()));
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()
    })();
    match written {
        Ok(()) => Ok(tmp),
        Err(err) => {
            // Best effort: the temp file may not even exist.
            let _ = fs::remove_file(&tmp);
            Err(err)
        }
    }
}

/// temp + fsync + rename over `path` + fsync of the directory.
fn replace_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = write_temp(path, bytes)?;
    if let Err(err) = fs::rename(&tmp, path) {
        // Best effort cleanup; the rename error is what matters.
        let _ = fs::remove_file(&tmp);
        return Err(err);
    }
    File::open(parent_dir(path))?.sync_all()
}

/// Like `replace_atomic`, but fails with `AlreadyExists` instead of replacing a file (link(2)
/// does not overwrite).
fn create_new_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = write_temp(path, bytes)?;
    let linked = fs::hard_link(&tmp, path);
    // The temp name is no longer needed whether or not the link worked.
    let _ = fs::remove_file(&tmp);
    linked?;
    File::open(parent_dir(path))?.sync_all()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use webauthn_rs::prelude::{SecurityKey, Webauthn, WebauthnBuilder};

    fn relying_party() -> Webauthn {
        let origin = Url::parse("http://localhost").unwrap();
        WebauthnBuilder::new("localhost", &origin)
            .unwrap()
            .allow_any_port(true)
            .danger_set_user_presence_only_security_keys(true)
            .build()
            .unwrap()
    }

    fn origin() -> Url {
        Url::parse("http://localhost:41234").unwrap()
    }

    fn register(rp: &Webauthn, soft: &mut SoftAuthenticator) -> SecurityKey {
        let (ccr, state) = rp
            .start_securitykey_registration(Uuid::new_v4(), "u", "u", None, None, None)
            .unwrap();
        let reg = soft.register(&origin(), ccr).unwrap();
        rp.finish_securitykey_registration(&reg, &state).unwrap()
    }

    fn authenticate(
        rp: &Webauthn,
        soft: &mut SoftAuthenticator,
        key: &SecurityKey,
    ) -> Result<u32, String> {
        let (rcr, state) = rp
            .start_securitykey_authentication(std::slice::from_ref(key))
            .unwrap();
        let cred = soft
            .authenticate(&origin(), rcr)
            .map_err(|e| e.to_string())?;
        rp.finish_securitykey_authentication(&cred, &state)
            .map(|r| r.counter())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn round_trip_persists_the_counter() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token.cbor");
        let rp = relying_party();
        let mut soft = SoftAuthenticator::open_or_create(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let key = register(&rp, &mut soft);
        assert_eq!(authenticate(&rp, &mut soft, &key).unwrap(), 1);
        drop(soft);

        // Reopening continues from the saved counter, and the file stays private.
        let mut soft = SoftAuthenticator::open_or_create(&path).unwrap();
        assert_eq!(authenticate(&rp, &mut soft, &key).unwrap(), 2);
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(leftovers.len(), 1, "temp files left behind");
    }

    #[test]
    fn create_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token.cbor");
        let _soft = SoftAuthenticator::create(&path, SoftOptions::default()).unwrap();
        let before = fs::read(&path).unwrap();
        let err = SoftAuthenticator::create(&path, SoftOptions::default())
            .err()
            .unwrap();
        assert!(matches!(err, SoftError::Exists { .. }), "{err}");
        assert_eq!(fs::read(&path).unwrap(), before);
    }

    #[test]
    fn damaged_or_shared_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token.cbor");
        replace_atomic(&path, b"not cbor").unwrap();
        let err = SoftAuthenticator::open_or_create(&path).err().unwrap();
        assert!(matches!(err, SoftError::Corrupt { .. }), "{err}");
        assert_eq!(fs::read(&path).unwrap(), b"not cbor");

        SoftAuthenticator::create(&dir.path().join("t2"), SoftOptions::default()).unwrap();
        fs::set_permissions(dir.path().join("t2"), fs::Permissions::from_mode(0o644)).unwrap();
        let err = SoftAuthenticator::open(&dir.path().join("t2"))
            .err()
            .unwrap();
        assert!(matches!(err, SoftError::Insecure { .. }), "{err}");
    }

    #[test]
    fn refuses_foreign_origins_and_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        let rp = relying_party();
        let mut soft = SoftAuthenticator::open_or_create(&dir.path().join("a")).unwrap();
        let (ccr, _state) = rp
            .start_securitykey_registration(Uuid::new_v4(), "u", "u", None, None, None)
            .unwrap();
        let evil = Url::parse("http://evil.example").unwrap();
        let err = soft.register(&evil, ccr).err().unwrap();
        assert!(matches!(err, SoftError::OriginRefused { .. }), "{err}");

        // A key registered in another soft token is not held by this one.
        let mut other = SoftAuthenticator::open_or_create(&dir.path().join("b")).unwrap();
        let key = register(&rp, &mut other);
        let err = authenticate(&rp, &mut soft, &key).unwrap_err();
        assert!(err.contains("holds none of the requested keys"), "{err}");
    }

    #[test]
    fn aaguid_is_the_soft_token_one() {
        assert_eq!(
            SOFT_AAGUID.to_string(),
            "0fb9bcbc-a0d4-4042-bbb0-559bc1631e28"
        );
    }
}

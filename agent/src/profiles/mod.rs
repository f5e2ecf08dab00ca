//! Roles from the AWS shared config file: `role_arn` / `source_profile` chains, resolved into
//! [`RoleSpec`]s, parsed with the AWS SDK's own profile parser (`aws_runtime::env_config`, the
//! parser behind aws-config's `profile::load`).

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use aws_runtime::env_config::file::{EnvConfigFileKind as ProfileFileKind, EnvConfigFiles};
use aws_runtime::env_config::section::EnvConfigSections as ProfileSet;
use aws_types::os_shim_internal::{Env, Fs};
use secrecy::SecretString;
use serde::Serialize;

use crate::sources::{SourceCredentials, SourceError};

mod sso;
use sso::{is_sso_profile, sso_role};
pub use sso::{SsoSource, DEFAULT_SSO_SCOPES};

/// Looks up an environment variable. Tests pass a map; the agent passes `std::env::var`.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment, as an [`EnvLookup`].
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// One AssumeRole step from the source toward the role, taken from one profile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hop {
    /// The profile this hop comes from (for messages).
    pub profile: String,
    pub role_arn: String,
    pub external_id: Option<String>,
    /// `duration_seconds` of the profile, if set.
    pub duration_seconds: Option<u32>,
    /// `role_session_name` of the profile, if set.
    pub role_session_name: Option<String>,
}

/// The longest session STS grants a chained role, in seconds.
pub const MAX_CHAINED_SECS: u64 = 3600;

/// Everything needed to obtain credentials for one role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleSpec {
    /// The profile name the user calls the role by.
    pub name: String,
    /// ARN of the final role (the last hop).
    pub role_arn: String,
    /// The root source profile whose long-lived keys start the chain.
    pub source: String,
    /// Hops from the source to this role, in call order; the last one is the role itself.
    pub chain: Vec<Hop>,
    /// MFA device: from the role profile, else the nearest profile on the chain, else the source.
    pub mfa_serial: Option<String>,
    /// Region: from the role profile, else the nearest profile on the chain.
    pub region: Option<String>,
    /// Whether the source has a section in the config file. A source may live only in the
    /// keyring; when its keys are missing too, a typo in `source_profile` is likely.
    pub source_in_config: bool,
    /// When the chain starts at IAM Identity Center rather than an access key: the login and
    /// the account and permission set of the `source` profile.
    pub sso: Option<SsoSource>,
}

impl RoleSpec {
    /// What a touch for this role approves, in words: the source and every role ARN of the
    /// chain (with external ids). Two specs with the same target open the same thing.
    /// [`RoleSpec::target`] naming the access key id the source holds too, so the touch (and
    /// `trusted.json`) vouch for the key, not only for the source's name: a source entry
    /// replaced behind the agent's back is a change like a re-pointed role.
    pub fn target_with_key(&self, key_id: Option<&str>) -> String {
        match (key_id, &self.sso) {
            (Some(id), None) => {
                let plain = format!("source {}", self.source);
                let target = self.target();
                match target.strip_prefix(&plain) {
                    Some(rest) => format!("{plain} (key {id}){rest}"),
                    None => target,
                }
            }
            _ => self.target(),
        }
    }

    /// The source and the access key id a target made by [`RoleSpec::target_with_key`] names.
    pub fn source_key_in(target: &str) -> Option<(&str, &str)> {
        let rest = target.strip_prefix("source ")?;
        let (source, rest) = rest.split_once(" (key ")?;
        let (key, _) = rest.split_once(')')?;
        Some((source, key))
    }

    /// The account the role lives in: from the last role ARN (`arn:PARTITION:iam::ACCOUNT:
    /// role/NAME`), else the permission set's account. Scripts read it as `AWS_ACCOUNT_ID`.
    pub fn account_id(&self) -> Option<&str> {
        match (self.chain.last(), &self.sso) {
            (Some(hop), _) => hop
                .role_arn
                .split(':')
                .nth(4)
                .filter(|a| a.len() == 12 && a.bytes().all(|b| b.is_ascii_digit())),
            (None, Some(sso)) => Some(sso.account_id.as_str()),
            (None, None) => None,
        }
    }

    /// Whether the MFA code goes on the role's own AssumeRole, signed with the source's
    /// long-lived keys, rather than on a GetSessionToken shared by the source's roles: an MFA
    /// role asking for more than an hour with a single hop. A role assumed with the MFA
    /// session's temporary credentials is chained, and STS caps chained roles at one hour;
    /// the AWS CLI sends `SerialNumber`/`TokenCode` on AssumeRole itself (botocore
    /// `credentials.py`, `AssumeRoleCredentialFetcher._assume_role_kwargs`), and aws-vault
    /// skips GetSessionToken above an hour for this reason.
    pub fn mfa_on_assume_role(&self) -> bool {
        self.sso.is_none()
            && self.mfa_serial.is_some()
            && self.chain.len() == 1
            && self.chain[0]
                .duration_seconds
                .is_some_and(|s| u64::from(s) > MAX_CHAINED_SECS)
    }

    /// Whether the final AssumeRole is signed with temporary credentials (role → role,
    /// Identity Center → role, MFA session → role): AWS calls that role chaining, caps its
    /// sessions at one hour ("exceeds the 1 hour session limit for roles assumed by role
    /// chaining") and refuses a console `SessionDuration` for it.
    pub fn is_chained(&self) -> bool {
        self.chain.len() > 1
            || (!self.chain.is_empty()
                && (self.sso.is_some()
                    || (self.mfa_serial.is_some() && !self.mfa_on_assume_role())))
    }

    pub fn target(&self) -> String {
        let mut out = match &self.sso {
            Some(sso) => format!("source {} ({})", self.source, sso.describe()),
            None => format!("source {}", self.source),
        };
        for hop in &self.chain {
            out.push_str(" → ");
            out.push_str(&hop.role_arn);
            if let Some(id) = &hop.external_id {
                out.push_str(&format!(" (external id {id})"));
            }
        }
        out
    }
}

/// The names in the `[profile NAME]` (and `[default]`) headers of config text.
fn profile_headers(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let inner = l.strip_prefix('[')?.split(']').next()?.trim();
            if inner == "default" {
                return Some("default".to_owned());
            }
            let name = inner.strip_prefix("profile")?;
            // `profile` must be followed by whitespace.
            name.starts_with(char::is_whitespace)
                .then(|| name.trim().to_owned())
        })
        .collect()
}

/// One line of `credctl roles`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RoleSummary {
    pub name: String,
    /// Empty for an IAM Identity Center profile (its ARN only AWS knows): see `sso_role`.
    pub role_arn: String,
    /// An IAM Identity Center profile's account and permission set.
    pub sso_role: Option<(String, String)>,
    /// Root source profile, when the chain resolves.
    pub source: Option<String>,
    /// Why the chain does not resolve, when it does not.
    pub error: Option<String>,
}

/// Errors reading or resolving profiles.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("no AWS config file: set HOME or AWS_CONFIG_FILE for the agent")]
    NoFile,
    #[error("cannot read AWS config file {path}: {source}: fix the path or set AWS_CONFIG_FILE")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot parse AWS config file {path}: {detail}: fix the file")]
    Parse { path: PathBuf, detail: String },
    #[error(
        "profile {chain}: profile `{missing}` not found in {path}: add it or fix source_profile"
    )]
    NotFound {
        chain: Chain,
        missing: String,
        path: PathBuf,
    },
    #[error("profile `{name}` has no role_arn in {path}: it is not a role (use a profile with role_arn)")]
    NotARole { name: String, path: PathBuf },
    #[error("profile {chain}: source_profile cycle: break the loop in {path}")]
    Cycle { chain: Chain, path: PathBuf },
    #[error("profile {chain}: `{profile}` has role_arn but no source_profile: credagent needs a source_profile (credential_source is not supported)")]
    NoSource { chain: Chain, profile: String },
    /// An `aws login` profile (`login_session`): its refresh token sits in the AWS CLI's
    /// plaintext cache, which credagent does not read; the sealed `aws login` source does not
    /// open roles yet.
    #[error("profile {chain}: `{profile}` signs in with `aws login` (login_session = {session}), and credagent does not open roles on an `aws login` sign-in yet (its refresh token would come from the AWS CLI's plaintext cache, which credagent does not read): give `{profile}` an IAM Identity Center login, or store access keys for it with `credctl source add {profile}`")]
    LoginSession {
        chain: Chain,
        profile: String,
        session: String,
    },
    #[error("profile `{profile}` uses IAM Identity Center but has no {missing}: add it (`aws configure sso` writes the whole block)")]
    SsoIncomplete {
        profile: String,
        missing: &'static str,
    },
    #[error("profile `{profile}` names sso_session `{session}`, which has no [sso-session {session}] section in {path}: add it or fix the name")]
    SsoSessionNotFound {
        profile: String,
        session: String,
        path: PathBuf,
    },
    #[error("profile `{profile}` and [sso-session {session}] disagree on {key} (`{profile_value}` vs `{session_value}`): keep one, as the AWS CLI requires")]
    SsoMismatch {
        profile: String,
        session: String,
        key: &'static str,
        profile_value: String,
        session_value: String,
    },
    #[error("there is no [sso-session {name}] and no IAM Identity Center profile {name} in {path}: name one of them (`aws configure sso-session` writes the block)")]
    NoSsoLogin { name: String, path: PathBuf },
    #[error("profile `{profile}`: invalid {key} `{value}`: {expected}")]
    BadValue {
        profile: String,
        key: &'static str,
        value: String,
        expected: &'static str,
    },
}

/// A chain of profile names, shown as `prod → dev → base`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain(pub Vec<String>);

impl fmt::Display for Chain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(" → "))
    }
}

/// The parsed AWS config file.
pub struct Profiles {
    sections: ProfileSet,
    /// `[profile NAME]` headers the parser dropped (names the AWS CLI accepts but the SDK's
    /// parser does not, with spaces or other characters): listed as broken, never silently gone.
    dropped: Vec<String>,
    /// Where the profiles came from, for error messages.
    path: PathBuf,
}

impl fmt::Debug for Profiles {
    // Names only: a config file may hold keys too.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&str> = self.sections.profiles().collect();
        names.sort_unstable();
        f.debug_struct("Profiles")
            .field("path", &self.path)
            .field("profiles", &names)
            .finish()
    }
}

impl Profiles {
    /// Loads `config_path`, else `$AWS_CONFIG_FILE`, else `~/.aws/config`, from the process
    /// environment. A missing file gives no profiles, except an explicit `config_path`.
    pub fn load(config_path: Option<&Path>) -> Result<Profiles, ProfileError> {
        Self::load_with_env(config_path, &process_env)
    }

    /// [`Profiles::load`] with the environment as a parameter.
    pub fn load_with_env(
        config_path: Option<&Path>,
        env: EnvLookup<'_>,
    ) -> Result<Profiles, ProfileError> {
        let (path, must_exist) = match config_path {
            Some(p) => (p.to_path_buf(), true),
            None => (aws_file_path("AWS_CONFIG_FILE", "config", env), false),
        };
        let contents = read_optional(&path, must_exist)?;
        Self::from_contents(&path, contents)
    }

    /// Parses config text directly (tests, and `credctl` previews).
    pub fn from_contents(path: &Path, contents: String) -> Result<Profiles, ProfileError> {
        let headers = profile_headers(&contents);
        let sections = parse(path, contents, ProfileFileKind::Config)?;
        let dropped = headers
            .into_iter()
            .filter(|h| sections.get_profile(h).is_none())
            .collect();
        Ok(Profiles {
            sections,
            dropped,
            path: path.to_path_buf(),
        })
    }

    /// The file the profiles were read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every profile with a `role_arn`, sorted by name, with its resolved source or the error.
    pub fn roles(&self) -> Vec<RoleSummary> {
        let mut out: Vec<RoleSummary> = self
            .sections
            .profiles()
            .filter_map(|name| {
                let profile = self.sections.get_profile(name)?;
                let (arn, sso_role) = match profile.get("role_arn") {
                    Some(arn) => (arn.to_owned(), None),
                    None if is_sso_profile(profile) => (String::new(), Some(sso_role(profile))),
                    None => return None,
                };
                let resolved = self.resolve(name);
                Some(RoleSummary {
                    name: name.to_owned(),
                    role_arn: arn,
                    sso_role,
                    source: resolved.as_ref().ok().map(|s| s.source.clone()),
                    error: resolved.err().map(|e| e.to_string()),
                })
            })
            .collect();
        out.extend(self.dropped.iter().map(|name| RoleSummary {
            name: name.clone(),
            role_arn: String::new(),
            sso_role: None,
            source: None,
            error: Some(format!(
                "the profile name {name:?} is not one the AWS SDKs' config parser accepts \
                 (letters, digits and _-/.%@:+ only): rename the profile in {}",
                self.path.display()
            )),
        }));
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Follows `source_profile` from `name` to the root source (any depth).
    pub fn resolve(&self, name: &str) -> Result<RoleSpec, ProfileError> {
        let mut visited = vec![name.to_owned()];
        let mut hops_rev: Vec<Hop> = Vec::new();
        let mut mfa_serial = None;
        let mut region = None;
        let mut current = name.to_owned();
        let mut source_in_config = true;
        let mut sso = None;
        let source = loop {
            let Some(profile) = self.sections.get_profile(&current) else {
                if hops_rev.is_empty() {
                    return Err(ProfileError::NotFound {
                        chain: Chain(visited),
                        missing: current,
                        path: self.path.clone(),
                    });
                }
                // A source needs no section: its keys live in the keyring (and an import
                // removes its section from ~/.aws/credentials).
                source_in_config = false;
                break current;
            };
            if mfa_serial.is_none() {
                mfa_serial = profile.get("mfa_serial").map(str::to_owned);
            }
            if region.is_none() {
                region = profile.get("region").map(str::to_owned);
                if let Some(r) = region.as_deref().filter(|r| !is_region_name(r)) {
                    return Err(ProfileError::BadValue {
                        profile: current.clone(),
                        key: "region",
                        value: r.to_owned(),
                        expected: "a region name such as eu-west-1 (lower-case letters, digits \
                                   and dashes)",
                    });
                }
            }
            let Some(role_arn) = profile.get("role_arn") else {
                if let Some(session) = profile.get("login_session") {
                    return Err(ProfileError::LoginSession {
                        chain: Chain(visited),
                        profile: current.clone(),
                        session: session.chars().filter(|c| !c.is_control()).collect(),
                    });
                }
                if is_sso_profile(profile) {
                    sso = Some(self.sso_source(&current, profile)?);
                    break current;
                }
                if hops_rev.is_empty() {
                    return Err(ProfileError::NotARole {
                        name: name.to_owned(),
                        path: self.path.clone(),
                    });
                }
                break current;
            };
            if !is_role_arn(role_arn) {
                return Err(ProfileError::BadValue {
                    profile: current.clone(),
                    key: "role_arn",
                    value: role_arn.to_owned(),
                    expected: "a role ARN: arn:aws:iam::123456789012:role/NAME (aws-cn or \
                               aws-us-gov for those partitions)",
                });
            }
            hops_rev.push(Hop {
                profile: current.clone(),
                role_arn: role_arn.to_owned(),
                external_id: profile.get("external_id").map(str::to_owned),
                duration_seconds: parse_duration_seconds(
                    &current,
                    profile.get("duration_seconds"),
                )?,
                role_session_name: profile.get("role_session_name").map(str::to_owned),
            });
            let Some(next) = profile.get("source_profile") else {
                return Err(ProfileError::NoSource {
                    chain: Chain(visited),
                    profile: current,
                });
            };
            if next == current {
                // AWS semantics: a profile naming itself uses its own static keys as the source.
                break current;
            }
            let next = next.to_owned();
            visited.push(next.clone());
            if visited[..visited.len() - 1].contains(&next) {
                return Err(ProfileError::Cycle {
                    chain: Chain(visited),
                    path: self.path.clone(),
                });
            }
            current = next;
        };
        hops_rev.reverse();
        let role_arn = match (hops_rev.last(), &sso) {
            (Some(h), _) => h.role_arn.clone(),
            (None, Some(sso)) => format!(
                "arn:aws:iam::{}:role/{} (IAM Identity Center)",
                sso.account_id, sso.role_name
            ),
            (None, None) => String::new(),
        };
        Ok(RoleSpec {
            name: name.to_owned(),
            role_arn,
            source,
            chain: hops_rev,
            mfa_serial,
            region,
            source_in_config,
            sso,
        })
    }
}

/// A region name as AWS spells them (`eu-west-1`, `us-gov-west-1`, `cn-north-1`): what an SDK
/// can build an endpoint from. Checked before a touch is asked for.
fn is_region_name(r: &str) -> bool {
    !r.is_empty()
        && r.len() <= 32
        && r.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !r.starts_with('-')
        && !r.ends_with('-')
}

/// `arn:PARTITION:iam::ACCOUNT:role/PATH/NAME`, which STS accepts as a RoleArn.
fn is_role_arn(arn: &str) -> bool {
    let mut parts = arn.splitn(6, ':');
    let (Some("arn"), Some(partition), Some("iam"), Some(""), Some(account), Some(resource)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return false;
    };
    matches!(
        partition,
        "aws" | "aws-cn" | "aws-us-gov" | "aws-iso" | "aws-iso-b"
    ) && (1..=12).contains(&account.len())
        && account.bytes().all(|b| b.is_ascii_digit())
        && resource
            .strip_prefix("role/")
            .is_some_and(|name| !name.is_empty() && !name.contains(char::is_whitespace))
}

fn parse_duration_seconds(profile: &str, value: Option<&str>) -> Result<Option<u32>, ProfileError> {
    let Some(value) = value else { return Ok(None) };
    match value.trim().parse::<u32>() {
        Ok(v) if (900..=43_200).contains(&v) => Ok(Some(v)),
        _ => Err(ProfileError::BadValue {
            profile: profile.to_owned(),
            key: "duration_seconds",
            value: value.to_owned(),
            expected: "a number of seconds from 900 to 43200",
        }),
    }
}

/// `$VAR` if set (with `~/` expanded), else `$HOME/.aws/<file>`.
fn aws_file_path(var: &str, file: &str, env: EnvLookup<'_>) -> PathBuf {
    let home = env("HOME").map(PathBuf::from).unwrap_or_default();
    match env(var).filter(|v| !v.is_empty()) {
        Some(p) => match p.strip_prefix("~/") {
            Some(rest) => home.join(rest),
            None => PathBuf::from(p),
        },
        None => home.join(".aws").join(file),
    }
}

/// The AWS config file the agent reads roles from (`AWS_CONFIG_FILE`, else `~/.aws/config`),
/// looked at before each role operation so edits apply without a restart, and parsed again only
/// when it changed (a thousand profiles take milliseconds to parse; a `stat` takes microseconds).
#[derive(Debug)]
pub struct AwsConfigFile {
    path: Option<PathBuf>,
    /// What the file was when it was last parsed successfully.
    parsed: std::sync::Mutex<Option<FileStamp>>,
}

/// What tells one version of a file from another without reading it: device, inode, size, and
/// modification and change times to the nanosecond. An editor that replaces the file changes
/// the inode; one that writes in place changes the times.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileStamp {
    /// The stamp of the file at `path` now (following symbolic links, as reading does).
    pub fn of(path: &Path) -> std::io::Result<FileStamp> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path)?;
        Ok(FileStamp {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }
}

impl AwsConfigFile {
    /// The file named by `env` (the agent's own environment in production).
    pub fn from_env(env: EnvLookup<'_>) -> AwsConfigFile {
        let path = env("AWS_CONFIG_FILE")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| {
                env("HOME")
                    .filter(|v| !v.is_empty())
                    .map(|h| PathBuf::from(h).join(".aws/config"))
            });
        AwsConfigFile {
            path,
            parsed: std::sync::Mutex::new(None),
        }
    }

    /// The file, if one is named.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The profiles now in the file; the error says what to fix.
    pub fn load(&self) -> Result<Profiles, ProfileError> {
        let Some(path) = self.path.as_deref() else {
            return Err(ProfileError::NoFile);
        };
        Profiles::load(Some(path))
    }

    /// The profiles now in the file if it changed since the last successful parse (`None`:
    /// unchanged, the profiles in effect are current); the error says what to fix.
    pub fn load_if_changed(&self) -> Result<Option<Profiles>, ProfileError> {
        let stamp = self.path.as_deref().and_then(|p| FileStamp::of(p).ok());
        let mut parsed = crate::util::LockExt::locked(&self.parsed);
        if stamp.is_some() && *parsed == stamp {
            return Ok(None);
        }
        // Stamped before reading: a change while reading shows as another change next time.
        let profiles = self.load()?;
        *parsed = stamp;
        Ok(Some(profiles))
    }

    /// The profiles now in the file, or none when it cannot be read (at start-up, where a
    /// missing file is no error: each role operation re-reads it and reports).
    pub fn load_or_empty(&self) -> Result<Profiles, ProfileError> {
        match self.load() {
            Ok(p) => Ok(p),
            Err(_) => Profiles::from_contents(Path::new("(none)"), String::new()),
        }
    }
}

/// `$AWS_SHARED_CREDENTIALS_FILE`, else `~/.aws/credentials`.
pub fn credentials_file_path(env: EnvLookup<'_>) -> PathBuf {
    aws_file_path("AWS_SHARED_CREDENTIALS_FILE", "credentials", env)
}

fn read_optional(path: &Path, must_exist: bool) -> Result<String, ProfileError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(s),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !must_exist => Ok(String::new()),
        Err(source) => Err(ProfileError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Runs the SDK's parser on text we already read. The SDK's loader is `async` only because
/// it may read files; given contents it never awaits, so one poll finishes it.
fn parse(path: &Path, contents: String, kind: ProfileFileKind) -> Result<ProfileSet, ProfileError> {
    let parse_error = |detail: String| ProfileError::Parse {
        path: path.to_path_buf(),
        detail,
    };
    let files = EnvConfigFiles::builder()
        .with_contents(kind, contents)
        .build();
    let (fs, env) = (Fs::from_slice(&[]), Env::from_slice(&[]));
    let fut = pin!(aws_runtime::env_config::source::load(&env, &fs, &files));
    let source = match fut.poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(r) => r.map_err(|e| parse_error(e.to_string()))?,
        Poll::Pending => return Err(parse_error("the profile loader unexpectedly waited".into())),
    };
    ProfileSet::parse(source).map_err(|e| parse_error(e.to_string()))
}

/// Where a source profile's keys sit in the shared credentials file.
#[derive(Debug)]
pub struct CredentialsFileEntry {
    pub path: PathBuf,
    pub credentials: SourceCredentials,
    /// The profile also holds `aws_session_token`: the keys are temporary.
    pub session_token: bool,
}

/// Whether `~/.aws/credentials` (or `$AWS_SHARED_CREDENTIALS_FILE`) holds static keys for
/// `profile`. The caller refuses to use them and says: "import it with
/// `credctl source add NAME --import-profile NAME`".
pub fn source_keys_in_credentials_file(
    profile: &str,
    env: EnvLookup<'_>,
) -> Result<Option<CredentialsFileEntry>, ProfileError> {
    read_credentials_file(&credentials_file_path(env), profile)
}

/// What to say of a source the keyring does not hold: that its keys are in the plain-text
/// credentials file (read here, so the error types themselves do no I/O), or `missing` as is.
pub fn locate_missing_source(missing: SourceError, env: EnvLookup<'_>) -> SourceError {
    let SourceError::NotFound { name, .. } = &missing else {
        return missing;
    };
    match source_keys_in_credentials_file(name, env) {
        Ok(Some(entry)) => SourceError::OnlyInCredentialsFile {
            name: name.clone(),
            path: entry.path,
        },
        _ => missing,
    }
}

/// Reads the static keys of `profile` from a credentials file (for `--import-profile`).
pub fn read_credentials_file(
    path: &Path,
    profile: &str,
) -> Result<Option<CredentialsFileEntry>, ProfileError> {
    // The SDK parser keeps its own copies of the values; they are dropped (not zeroized) with
    // `sections` at the end of this function.
    let sections = parse(
        path,
        read_optional(path, false)?,
        ProfileFileKind::Credentials,
    )?;
    let Some(p) = sections.get_profile(profile) else {
        return Ok(None);
    };
    match (p.get("aws_access_key_id"), p.get("aws_secret_access_key")) {
        (Some(id), Some(secret)) if !id.is_empty() && !secret.is_empty() => {
            Ok(Some(CredentialsFileEntry {
                path: path.to_path_buf(),
                credentials: SourceCredentials {
                    access_key_id: id.to_owned(),
                    secret_access_key: SecretString::from(secret),
                },
                session_token: p
                    .get("aws_session_token")
                    .is_some_and(|t| !t.trim().is_empty()),
            }))
        }
        _ => Ok(None),
    }
}

/// Environment built from pairs, for tests and callers that scrub the environment.
pub fn env_from_pairs(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |k: &str| map.get(k).cloned()
}

#[cfg(test)]
mod tests;

//! The agent's configuration file (`$XDG_CONFIG_HOME/credagent/config.toml`): parsing, defaults
//! and validation. Every error names the file, the key and the line.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::approval::ApprovalPolicy;

use crate::sessions::{MAX_SESSION_TTL, MIN_SESSION_TTL};
use crate::sources::Backend;

/// The whole configuration, with defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address of the credential endpoint. Must be a loopback address; port 0 picks one.
    #[serde(deserialize_with = "de_loopback")]
    pub listen: SocketAddr,
    /// STS endpoint override (else `AWS_ENDPOINT_URL_STS`, else AWS).
    #[serde(deserialize_with = "de_sts_endpoint")]
    pub sts_endpoint: Option<String>,
    /// IAM Identity Center OIDC endpoint override (else `AWS_ENDPOINT_URL_SSO_OIDC`, else AWS).
    #[serde(deserialize_with = "de_sso_oidc_endpoint")]
    pub sso_oidc_endpoint: Option<String>,
    /// IAM Identity Center portal endpoint override (else `AWS_ENDPOINT_URL_SSO`, else AWS).
    #[serde(deserialize_with = "de_sso_endpoint")]
    pub sso_endpoint: Option<String>,
    /// The AWS federation endpoint for `credctl console` (tests use a local one).
    #[serde(deserialize_with = "de_federation_endpoint")]
    pub federation_endpoint: Option<String>,
    /// Keyring backend; `None` picks Secret Service when a session bus exists, else keyutils;
    /// `file` keeps sealed sources in 0600 files under the state directory (no keyring).
    pub keyring: Option<Backend>,
    /// How long one touch keeps a role session open.
    #[serde(deserialize_with = "de_session_ttl")]
    pub session_ttl: Duration,
    /// Close a session unused for this long; zero means never.
    #[serde(deserialize_with = "de_duration")]
    pub idle_timeout: Duration,
    /// Lifetime of GetSessionToken credentials for sources with `mfa_serial`.
    #[serde(deserialize_with = "de_mfa_ttl")]
    pub mfa_session_ttl: Duration,
    pub approval: ApprovalPolicy,
    /// What locks the agent besides `credctl lock`: `suspend`, `screen-lock` (default both).
    pub lock_on: Vec<crate::lock_signals::LockOn>,
    /// Per-role program rules (`[roles.NAME]`: `allow`, `confirm`).
    pub roles: std::collections::BTreeMap<String, RoleRules>,
}

/// `[roles.NAME]`: which programs may use the role's session.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoleRules {
    /// Executables (absolute paths) that may use the role; empty or absent: any.
    pub allow: Vec<PathBuf>,
    /// `each-process`: the first request of each new process waits for a touch.
    pub confirm: ConfirmRule,
}

/// `confirm` of a `[roles.NAME]` table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConfirmRule {
    #[default]
    Never,
    EachProcess,
}

impl Config {
    /// The program rules as the sessions apply them: each listed path resolved as the kernel
    /// names a running program (`/proc/PID/exe`), so a symlink in the list matches its target.
    pub fn program_policies(&self) -> crate::sessions::ProgramPolicies {
        let map = self
            .roles
            .iter()
            .map(|(name, rules)| {
                let allow = rules
                    .allow
                    .iter()
                    .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()))
                    .collect();
                let confirm = match rules.confirm {
                    ConfirmRule::Never => crate::sessions::Confirm::Never,
                    ConfirmRule::EachProcess => crate::sessions::Confirm::EachProcess,
                };
                (
                    name.clone(),
                    crate::sessions::ProgramPolicy { allow, confirm },
                )
            })
            .collect();
        std::sync::Arc::new(map)
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            sts_endpoint: None,
            sso_oidc_endpoint: None,
            sso_endpoint: None,
            federation_endpoint: None,
            keyring: None,
            session_ttl: Duration::from_secs(3600),
            idle_timeout: Duration::ZERO,
            mfa_session_ttl: Duration::from_secs(12 * 3600),
            approval: ApprovalPolicy::default(),
            lock_on: crate::lock_signals::default_lock_on(),
            roles: std::collections::BTreeMap::new(),
        }
    }
}

/// A configuration file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The TOML error already names the line, column and key.
    #[error("invalid config file {path}: {message}\nfix the key named above, or move the file away to use the defaults")]
    Invalid { path: PathBuf, message: String },
    /// The policy lives here: a file others may write is no policy.
    #[error("config file {path} {problem}: it holds the approval policy, so only you may write it; run `chmod go-w {path}` (and `chown $USER` if needed)")]
    Insecure { path: PathBuf, problem: String },
}

impl Config {
    /// Loads `path`. A missing file means defaults only when `required` is false (the implicit
    /// default path); a path the user named explicitly must exist.
    pub fn load(path: &Path, required: bool) -> Result<Config, ConfigError> {
        Self::load_seen(path, required).map(|(config, _)| config)
    }

    /// As [`Config::load`], with the SHA-256 of the content it parsed (`None`: no file), so a
    /// later change of the file is told from the very bytes these settings came from.
    pub fn load_seen(
        path: &Path,
        required: bool,
    ) -> Result<(Config, Option<[u8; 32]>), ConfigError> {
        use sha2::Digest;
        match std::fs::read_to_string(path) {
            Ok(text) => {
                check_owner_and_mode(path)?;
                let digest = sha2::Sha256::digest(text.as_bytes()).into();
                Ok((Self::parse(&text, path)?, Some(digest)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                Ok((Config::default(), None))
            }
            Err(source) => Err(ConfigError::Read {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// Parses configuration text; `path` is used in error messages only.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let mut message = e.to_string().trim_end().to_owned();
            if let Some(hint) = table_hint(&message) {
                message.push('\n');
                message.push_str(&hint);
            }
            ConfigError::Invalid {
                path: path.to_owned(),
                message,
            }
        })?;
        // A CA path is shown before the touch that confirms it: nothing in it may steer the
        // terminal that shows it.
        if let Some(bad) = config
            .approval
            .attestation_ca
            .iter()
            .find(|p| p.to_string_lossy().chars().any(char::is_control))
        {
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                message: format!(
                    "attestation_ca {bad:?} holds a control character: name the CA file by a \
                     plain path"
                ),
            });
        }
        // A program list names programs by absolute path (what the kernel reports), in words a
        // terminal shows as they are (the touch shows them).
        for (role, rules) in &config.roles {
            let bad_name =
                role.is_empty() || role.chars().any(|c| c.is_control() || c.is_whitespace());
            if bad_name {
                return Err(ConfigError::Invalid {
                    path: path.to_owned(),
                    message: format!(
                        "[roles.{role:?}] is not a role name: use the profile name of                          ~/.aws/config"
                    ),
                });
            }
            if let Some(p) = rules
                .allow
                .iter()
                .find(|p| !p.is_absolute() || p.to_string_lossy().chars().any(char::is_control))
            {
                return Err(ConfigError::Invalid {
                    path: path.to_owned(),
                    message: format!(
                        "[roles.{role}] allow = {p:?}: name each program by its absolute path                          (as `command -v PROGRAM` prints it), without control characters"
                    ),
                });
            }
        }
        // An MFA session shorter than a role session cannot refresh the role to its end: the
        // session would show hours left while every refresh failed.
        if config.mfa_session_ttl < config.session_ttl {
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                message: format!(
                    "mfa_session_ttl ({}) is shorter than session_ttl ({}): roles with \
                     mfa_serial could not refresh to the end of their session; make \
                     mfa_session_ttl at least session_ttl",
                    humantime::format_duration(config.mfa_session_ttl),
                    humantime::format_duration(config.session_ttl)
                ),
            });
        }
        Ok(config)
    }
}

impl Config {
    /// The settings a touch vouches for (`crate::trust`): where secrets may go (the endpoint
    /// overrides) and how strong the gate is (the security policy), each as the person would
    /// read it. An attestation CA is named with the SHA-256 of its file, so a CA file replaced
    /// behind the agent's back is a change too. The listen address and the keyring backend are
    /// not here: neither decides what a touch opens nor where a secret goes (sources are sealed
    /// in every backend).
    pub fn trusted_settings(&self) -> crate::trust::Settings {
        use sha2::Digest;
        let endpoint = |e: &Option<String>| e.clone().unwrap_or_else(|| "AWS".to_owned());
        let duration = |d: Duration| humantime::format_duration(d).to_string();
        let mut s = crate::trust::Settings::new();
        s.set("sts_endpoint", endpoint(&self.sts_endpoint))
            .set("sso_oidc_endpoint", endpoint(&self.sso_oidc_endpoint))
            .set("sso_endpoint", endpoint(&self.sso_endpoint))
            .set("federation_endpoint", endpoint(&self.federation_endpoint))
            .set("session_ttl", duration(self.session_ttl))
            .set("idle_timeout", duration(self.idle_timeout))
            .set("mfa_session_ttl", duration(self.mfa_session_ttl))
            .set(
                "lock_on",
                format!(
                    "[{}]",
                    self.lock_on.iter().map(word).collect::<Vec<_>>().join(", ")
                ),
            )
            .set(
                "approval.user_verification",
                word(&self.approval.user_verification),
            )
            .set(
                "approval.allow_software_authenticators",
                self.approval.allow_software_authenticators.to_string(),
            )
            .set("approval.sealing", word(&self.approval.sealing));
        let cas: Vec<String> = self
            .approval
            .attestation_ca
            .iter()
            .map(|p| match std::fs::read(p) {
                Ok(bytes) => format!(
                    "{} (sha256 {})",
                    p.display(),
                    hex::encode(&sha2::Sha256::digest(&bytes)[..8])
                ),
                Err(_) => format!("{} (unreadable)", p.display()),
            })
            .collect();
        s.set("approval.attestation_ca", format!("[{}]", cas.join(", ")));
        for (role, rules) in &self.roles {
            let allow: Vec<String> = rules
                .allow
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            s.set(
                &format!("roles.{role}.allow"),
                format!("[{}]", allow.join(", ")),
            );
            s.set(&format!("roles.{role}.confirm"), word(&rules.confirm));
        }
        s
    }
}

/// Serde's name of a unit enum value (`"required"`, `"screen-lock"`), for the settings record.
fn word<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => "?".to_owned(),
    }
}

/// Refuses a config file that another user owns or that group or others may write.
fn check_owner_and_mode(path: &Path) -> Result<(), ConfigError> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let me = nix::unistd::getuid().as_raw();
    // Whoever may write the directory may replace the file (rename over it): the same rule.
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .and_then(|d| std::fs::metadata(d).ok().map(|m| (d, m)));
    let problem = if meta.uid() != me && meta.uid() != 0 {
        format!("is owned by uid {}, not you", meta.uid())
    } else if meta.mode() & 0o022 != 0 {
        format!("is writable by others (mode {:o})", meta.mode() & 0o777)
    } else if let Some((d, m)) = dir.filter(|(_, m)| {
        (m.uid() != me && m.uid() != 0) || (m.mode() & 0o022 != 0 && m.mode() & 0o1000 == 0)
    }) {
        format!(
            "is in {}, which others may write (mode {:o}, owner uid {}): run `chmod go-w {}`",
            d.display(),
            m.mode() & 0o7777,
            m.uid(),
            d.display()
        )
    } else {
        return Ok(());
    };
    Err(ConfigError::Insecure {
        path: path.to_owned(),
        problem,
    })
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map_err(|e| {
        serde::de::Error::custom(format!(
            "invalid duration {s:?}: {e} (write durations like \"90m\" or \"1h\")"
        ))
    })
}

fn de_session_ttl<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let v = de_duration(d)?;
    if v < MIN_SESSION_TTL || v > MAX_SESSION_TTL {
        return Err(serde::de::Error::custom(format!(
            "session_ttl {} is out of range: use 15m to 12h",
            humantime::format_duration(v)
        )));
    }
    Ok(v)
}

fn de_mfa_ttl<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let v = de_duration(d)?;
    // GetSessionToken accepts 15 minutes to 36 hours.
    if v < MIN_SESSION_TTL || v > Duration::from_secs(36 * 3600) {
        return Err(serde::de::Error::custom(format!(
            "mfa_session_ttl {} is out of range: use 15m to 36h",
            humantime::format_duration(v)
        )));
    }
    Ok(v)
}

fn de_loopback<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let s = String::deserialize(d)?;
    let addr: SocketAddr = s.parse().map_err(|_| {
        serde::de::Error::custom(format!(
            "invalid listen address {s:?}: write an IP and port such as \"127.0.0.1:0\""
        ))
    })?;
    // Exactly the addresses the Host check accepts (127.0.0.1, localhost, [::1]): another
    // loopback address would pass here and then have every request refused as a bad Host.
    let ours =
        addr.ip() == std::net::Ipv4Addr::LOCALHOST || addr.ip() == std::net::Ipv6Addr::LOCALHOST;
    if !ours {
        return Err(serde::de::Error::custom(format!(
            "listen address {addr} is not 127.0.0.1 or [::1]: the credential endpoint listens \
             only on those (SDKs reach it as 127.0.0.1, localhost or [::1])"
        )));
    }
    Ok(addr)
}

/// An endpoint override, checked; the error names the setting it came from.
fn de_endpoint<'de, D: Deserializer<'de>>(d: D, key: &str) -> Result<Option<String>, D::Error> {
    let s = String::deserialize(d)?;
    crate::endpoint_url::check_endpoint(&s)
        .map_err(|why| serde::de::Error::custom(format!("{key} {s:?}: {why}")))?;
    Ok(Some(s))
}

/// Keys written at the top of config.toml; TOML puts a key below a `[table]` header into that
/// table, where it is unknown.
const TOP_LEVEL_KEYS: [&str; 10] = [
    "listen",
    "sts_endpoint",
    "sso_oidc_endpoint",
    "sso_endpoint",
    "federation_endpoint",
    "keyring",
    "session_ttl",
    "idle_timeout",
    "mfa_session_ttl",
    "lock_on",
];

/// For "unknown field `session_ttl`" inside `[approval]`: the key belongs above the header.
fn table_hint(message: &str) -> Option<String> {
    let key = message.split("unknown field `").nth(1)?.split('`').next()?;
    TOP_LEVEL_KEYS.contains(&key).then(|| {
        format!(
            "`{key}` is a top-level setting, but TOML reads every key below a `[table]` header \
             as part of that table: move `{key} = …` above the first `[…]` line"
        )
    })
}

fn de_sts_endpoint<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    de_endpoint(d, "sts_endpoint")
}

fn de_sso_oidc_endpoint<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    de_endpoint(d, "sso_oidc_endpoint")
}

fn de_sso_endpoint<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    de_endpoint(d, "sso_endpoint")
}

fn de_federation_endpoint<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    de_endpoint(d, "federation_endpoint")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::approval::UserVerification;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/home/u/.config/credagent/config.toml"))
    }

    #[test]
    fn empty_file_means_defaults() {
        assert_eq!(parse("").unwrap(), Config::default());
    }

    #[test]
    fn full_example_parses() {
        let c = parse(
            r#"
listen = "127.0.0.1:9911"
sts_endpoint = "http://127.0.0.1:5000"
keyring = "keyutils"
session_ttl = "90m"
idle_timeout = "10m"
mfa_session_ttl = "8h"

[approval]
user_verification = "required"
allow_software_authenticators = true
attestation_ca = ["/etc/yubico.pem"]
"#,
        )
        .unwrap();
        assert_eq!(c.listen.port(), 9911);
        assert_eq!(c.keyring, Some(Backend::Keyutils));
        assert_eq!(c.session_ttl, Duration::from_secs(5400));
        assert_eq!(c.idle_timeout, Duration::from_secs(600));
        assert_eq!(c.approval.user_verification, UserVerification::Required);
        assert!(c.approval.allow_software_authenticators);
        assert_eq!(
            c.approval.attestation_ca,
            vec![PathBuf::from("/etc/yubico.pem")]
        );
    }

    #[test]
    fn unknown_key_names_file_key_and_line() {
        let err = parse("listen = \"127.0.0.1:0\"\n\nsesion_ttl = \"1h\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/home/u/.config/credagent/config.toml"),
            "{err}"
        );
        assert!(err.contains("sesion_ttl"), "{err}");
        assert!(err.contains("line 3"), "{err}");
    }

    #[test]
    fn unknown_key_in_table_is_refused() {
        let err = parse("[approval]\nuser_verificaton = \"required\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("user_verificaton") && err.contains("line 2"),
            "{err}"
        );
    }

    #[test]
    fn bad_values_are_explained() {
        for (text, needle) in [
            ("session_ttl = \"13h\"", "out of range"),
            ("session_ttl = \"soon\"", "invalid duration"),
            ("listen = \"0.0.0.0:80\"", "not 127.0.0.1 or [::1]"),
            ("listen = \"127.0.0.2:80\"", "not 127.0.0.1 or [::1]"),
            ("listen = \"localhost\"", "invalid listen address"),
            ("keyring = \"wallet\"", "wallet"),
            ("sts_endpoint = \"127.0.0.1:5000\"", "http://"),
            (
                "federation_endpoint = \"ftp://x\"",
                "federation_endpoint \"ftp://x\"",
            ),
            ("sso_endpoint = \"ftp://x\"", "sso_endpoint \"ftp://x\""),
            (
                "[approval]\nallow_software_authenticators = true\nsession_ttl = \"2h\"",
                "move `session_ttl = …` above the first `[…]` line",
            ),
            ("[approval]\nuser_verification = \"maybe\"", "maybe"),
            ("session_ttl = 3600", "string"),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
            assert!(err.contains("line"), "{text}: {err}");
        }
    }

    #[test]
    fn missing_default_file_is_defaults_but_named_file_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("nope.toml");
        assert_eq!(Config::load(&p, false).unwrap(), Config::default());
        let err = Config::load(&p, true).unwrap_err().to_string();
        assert!(err.contains("nope.toml"), "{err}");
    }

    #[test]
    fn a_config_others_may_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.toml");
        std::fs::write(&p, "[approval]\nallow_software_authenticators = true\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(Config::load(&p, true).is_ok());
        for mode in [0o620, 0o602, 0o666] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = Config::load(&p, true).unwrap_err().to_string();
            assert!(
                err.contains("writable by others") && err.contains("chmod go-w"),
                "{err}"
            );
        }
        // Readable by others is fine: it holds no secret.
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(Config::load(&p, true).is_ok());
        // A directory others may write lets them replace the file.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = Config::load(&p, true).unwrap_err().to_string();
        assert!(err.contains("which others may write"), "{err}");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(Config::load(&p, true).is_ok());
    }

    #[test]
    fn control_characters_in_endpoints_and_ca_paths_are_refused() {
        // A value shown before the touch that confirms it must not rewrite the screen.
        for text in [
            "federation_endpoint = \"https://signin.aws.amazon.com/federation\\r\\u001b[2K\"",
            "sts_endpoint = \"http://127.0.0.1:9/\\u001b[8m\"",
            "[approval]\nattestation_ca = [\"/etc/ca.pem\\u001b[8m\"]",
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(
                err.contains("control character") || err.contains("no spaces or control"),
                "{text}: {err}"
            );
        }
    }

    #[test]
    fn an_mfa_session_shorter_than_a_role_session_is_refused() {
        let err = parse("session_ttl = \"4h\"\nmfa_session_ttl = \"1h\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("mfa_session_ttl") && err.contains("session_ttl"),
            "{err}"
        );
        assert!(parse("session_ttl = \"1h\"\nmfa_session_ttl = \"1h\"\n").is_ok());
    }
}

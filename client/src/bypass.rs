//! What an SDK would pick before the agent: static keys and web identity in the environment
//! (unset by `start`, `env` and `exec`), `AWS_PROFILE`, a profile with keys in the shared
//! credentials file, and a `[default]` in the config file that yields credentials, all of which
//! botocore and the other SDKs read before the container provider (botocore `credentials.py`
//! `create_credential_resolver`: env, assume-role, web identity, SSO, shared credentials, process,
//! config file, then container).

use std::path::PathBuf;

/// Variables that would shadow the agent in an SDK's credential chain: `start`, `env` and
/// `exec` unset them.
pub const SHADOWING: [&str; 8] = [
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
];

/// Keys of a config-file profile that make SDKs take credentials from it (before the container
/// provider): a role, Identity Center, a process, `aws login`, web identity, or keys.
const CREDENTIAL_KEYS: [&str; 9] = [
    "role_arn",
    "sso_session",
    "sso_start_url",
    "sso_account_id",
    "credential_process",
    "login_session",
    "web_identity_token_file",
    "aws_access_key_id",
    "credential_source",
];

/// `AWS_CONFIG_FILE`, else `~/.aws/config`.
pub fn config_file() -> PathBuf {
    if let Some(p) = std::env::var_os("AWS_CONFIG_FILE").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME").unwrap_or_default();
    PathBuf::from(home).join(".aws/config")
}

/// The credential keys set in the default profile of config-file `text` (`[default]` or
/// `[profile default]`), in the order of [`CREDENTIAL_KEYS`].
fn default_credential_keys(text: &str) -> Vec<&'static str> {
    let mut inside = false;
    let mut found = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = name.trim();
            inside = name == "default"
                || name
                    .strip_prefix("profile")
                    .is_some_and(|n| n.starts_with(char::is_whitespace) && n.trim() == "default");
        } else if inside && !line.starts_with(['#', ';']) {
            let key = line.split('=').next().unwrap_or("").trim();
            if let Some(k) = CREDENTIAL_KEYS.iter().find(|k| key.eq_ignore_ascii_case(k)) {
                if !found.contains(k) {
                    found.push(*k);
                }
            }
        }
    }
    CREDENTIAL_KEYS
        .iter()
        .copied()
        .filter(|k| found.contains(k))
        .collect()
}

/// A warning with the command that fixes it, if the config file's default profile yields
/// credentials SDKs take before the agent's.
pub fn config_warning() -> Option<String> {
    let path = config_file();
    let text = std::fs::read_to_string(&path).ok()?;
    let keys = default_credential_keys(&text);
    if keys.is_empty() {
        return None;
    }
    Some(format!(
        "warning: the default profile in {} sets {}, so SDKs take their credentials from it \
         before the agent's; rename it to keep it as a named profile: \
         `{}`",
        path.display(),
        keys.join(", "),
        rename_default_command(&path),
    ))
}

/// The command that renames the config file's default profile (either spelling) so that it
/// stays as a named profile and no longer shadows the agent.
pub fn rename_default_command(path: &std::path::Path) -> String {
    let quoted = format!("'{}'", path.display().to_string().replace('\'', "'\\''"));
    format!(
        "sed -i 's/^\\[\\(profile \\)\\?default\\]/[profile default-before-credagent]/' {quoted}"
    )
}

/// `AWS_SHARED_CREDENTIALS_FILE`, else `~/.aws/credentials`.
pub fn credentials_file() -> PathBuf {
    if let Some(p) = std::env::var_os("AWS_SHARED_CREDENTIALS_FILE").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME").unwrap_or_default();
    PathBuf::from(home).join(".aws/credentials")
}

/// Whether the `[profile]` section of credentials-file `text` holds an access key.
fn has_keys(text: &str, profile: &str) -> bool {
    let mut inside = false;
    for line in text.lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = name.trim() == profile;
        } else if inside {
            let key = line.split('=').next().unwrap_or("").trim();
            if key.eq_ignore_ascii_case("aws_access_key_id") {
                return true;
            }
        }
    }
    false
}

/// The credentials-file profile with keys that SDKs started from a shell without `AWS_PROFILE`
/// pick before the agent (`default`), if there is one.
pub fn shadowing_profile() -> Option<(PathBuf, &'static str)> {
    let path = credentials_file();
    let text = std::fs::read_to_string(&path).ok()?;
    has_keys(&text, "default").then_some((path, "default"))
}

/// A warning with the command that fixes it, if a credentials-file profile shadows the agent.
pub fn warning() -> Option<String> {
    let (path, profile) = shadowing_profile()?;
    Some(format!(
        "warning: [{profile}] in {} holds access keys, and SDKs use those before the agent; \
         move them into the keyring with `credctl source add {profile} --import-profile \
         {profile} --remove-from-file`",
        path.display()
    ))
}

/// Warnings about files: a credentials-file profile with keys, a config-file default profile
/// that yields credentials.
pub fn file_warnings() -> Vec<String> {
    warning().into_iter().chain(config_warning()).collect()
}

/// Warnings for this shell: variables set here that SDKs use before the agent, and a
/// shadowing credentials-file or config-file profile.
pub fn shell_warnings() -> Vec<String> {
    let mut out: Vec<String> = SHADOWING
        .iter()
        .filter(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty()))
        .map(|v| {
            format!(
                "warning: {v} is set in this shell, and SDKs use it before the agent: `unset \
                 {v}`, or run `eval \"$(credctl start)\"` again"
            )
        })
        .collect();
    out.extend(warning());
    out.extend(config_warning());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_keys_in_the_default_section_only() {
        let text = "[work]\naws_access_key_id = A\n\n[ default ]\n# c\nAWS_ACCESS_KEY_ID=B\n";
        assert!(has_keys(text, "default"));
        assert!(has_keys(text, "work"));
        assert!(!has_keys(
            "[default]\nregion = x\n[other]\naws_access_key_id = A\n",
            "default"
        ));
        assert!(!has_keys("", "default"));
    }

    #[test]
    fn finds_what_makes_the_config_default_profile_yield_credentials() {
        let text = "[profile default]\nregion = x\nrole_arn = a\n# credential_process = no\n\
                    SSO_SESSION = corp\n[profile other]\ncredential_process = p\n";
        assert_eq!(default_credential_keys(text), ["role_arn", "sso_session"]);
        let text = "[default]\nregion = eu-west-1\noutput = json\n[profile x]\nrole_arn = a\n";
        assert!(default_credential_keys(text).is_empty());
        let text = "[default]\nlogin_session = arn:aws:sts::1:x\nweb_identity_token_file = /t\n";
        assert_eq!(
            default_credential_keys(text),
            ["login_session", "web_identity_token_file"]
        );
        // `[profiledefault]` is no profile named default.
        assert!(default_credential_keys("[profiledefault]\nrole_arn = a\n").is_empty());
    }
}

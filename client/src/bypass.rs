//! What an SDK would pick before the agent: static keys in the environment (unset by `start`,
//! `env` and `exec`), `AWS_PROFILE`, and a profile with keys in the shared credentials file,
//! which botocore and the other SDKs read before the container provider.

use std::path::PathBuf;

/// Variables that would shadow the agent in an SDK's credential chain: `start`, `env` and
/// `exec` unset them.
pub const SHADOWING: [&str; 6] = [
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
];

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

/// Warnings for this shell: variables set here that SDKs use before the agent, and a
/// shadowing credentials-file profile.
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
}

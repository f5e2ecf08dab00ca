//! Shell completion with role names: `credctl completions SHELL` prints a registration that
//! asks `credctl` itself for candidates (clap_complete's dynamic completion, through
//! `CREDCTL_COMPLETE`), so ROLE arguments complete to the roles of `~/.aws/config` as it is
//! now, not as it was when the script was written.

use std::ffi::OsStr;

use clap_complete::engine::CompletionCandidate;

/// The variable that makes `credctl` answer a completion request instead of running.
pub const VAR: &str = "CREDCTL_COMPLETE";

/// The profiles of the AWS config file that are roles (a `role_arn`, or IAM Identity Center
/// settings), starting with `current`. Read from the file directly: fast, and no agent needed.
pub fn role_names(current: &OsStr) -> Vec<CompletionCandidate> {
    let prefix = current.to_string_lossy();
    let text = std::fs::read_to_string(crate::bypass::config_file()).unwrap_or_default();
    roles_in(&text)
        .into_iter()
        .filter(|name| name.starts_with(prefix.as_ref()))
        .map(CompletionCandidate::new)
        .collect()
}

/// The names of the role profiles in config-file `text`, in file order.
fn roles_in(text: &str) -> Vec<String> {
    let mut roles = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let line = line.trim();
        if let Some(header) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let header = header.trim();
            current = match header.strip_prefix("profile") {
                Some(rest) if rest.starts_with(char::is_whitespace) => Some(rest.trim().to_owned()),
                _ if header == "default" => Some("default".to_owned()),
                _ => None,
            };
            continue;
        }
        let key = line.split('=').next().unwrap_or("").trim();
        if let Some(name) = &current {
            let role = matches!(key, "role_arn" | "sso_account_id" | "sso_role_name");
            if role && !roles.contains(name) && !name.chars().any(char::is_control) {
                roles.push(name.clone());
            }
        }
    }
    roles
}

/// The registration script for `shell`: it hands the command line to the `credctl` on `PATH`
/// (the one the person runs; the package writes these scripts from its staging tree) with
/// [`VAR`] set, which answers with candidates.
pub fn registration(shell: clap_complete::Shell) -> std::io::Result<String> {
    use clap_complete::env::EnvCompleter;
    let completer = "credctl";
    let mut buf = Vec::new();
    let writer: &dyn EnvCompleter = match shell {
        clap_complete::Shell::Bash => &clap_complete::env::Bash,
        clap_complete::Shell::Zsh => &clap_complete::env::Zsh,
        clap_complete::Shell::Fish => &clap_complete::env::Fish,
        clap_complete::Shell::Elvish => &clap_complete::env::Elvish,
        clap_complete::Shell::PowerShell => &clap_complete::env::Powershell,
        _ => {
            return Err(std::io::Error::other(
                "no completion for that shell: use bash, zsh, fish, elvish or powershell",
            ))
        }
    };
    writer.write_registration(VAR, "credctl", "credctl", completer, &mut buf)?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_role_profiles_are_offered() {
        let text = "[default]\nregion = us-east-1\n\n[profile base]\nregion = eu-west-1\n\
                    [profile prod]\nrole_arn = arn:aws:iam::1:role/p\nsource_profile = base\n\
                    [ profile  dev-admin ]\nsso_session = corp\nsso_account_id = 111122223333\n\
                    [sso-session corp]\nsso_start_url = https://x\n\
                    [services s]\nrole_arn = not-a-profile\n";
        assert_eq!(roles_in(text), vec!["prod", "dev-admin"]);
    }
}

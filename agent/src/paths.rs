//! The agent's per-user directories (XDG base directories with the usual fallbacks).

use std::path::PathBuf;

fn xdg(var: &str, fallback: &[&str]) -> Option<PathBuf> {
    if let Some(v) = std::env::var_os(var).filter(|v| !v.is_empty()) {
        let p = PathBuf::from(v);
        // The XDG spec says relative paths are invalid and must be ignored.
        if p.is_absolute() {
            return Some(p);
        }
    }
    let home = std::env::var_os("HOME").filter(|v| !v.is_empty())?;
    let mut p = PathBuf::from(home);
    for part in fallback {
        p.push(part);
    }
    Some(p)
}

/// `$XDG_CONFIG_HOME/credagent` (default `~/.config/credagent`).
pub fn config_dir() -> Option<PathBuf> {
    xdg("XDG_CONFIG_HOME", &[".config"]).map(|p| p.join("credagent"))
}

/// `$XDG_STATE_HOME/credagent` (default `~/.local/state/credagent`): keys, counters, audit log.
pub fn state_dir() -> Option<PathBuf> {
    xdg("XDG_STATE_HOME", &[".local", "state"]).map(|p| p.join("credagent"))
}

/// The default configuration file.
pub fn default_config_file() -> Option<PathBuf> {
    config_dir().map(|d| d.join("config.toml"))
}

//! What each role was last approved as (`<state>/approved.json`: role → source and role ARNs),
//! so that a profile whose ARN or chain changed since is not opened silently: like `ssh` with a
//! changed host key, the person sees old and new and confirms.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::util::{write_atomic, LockExt};

/// The file's name in the state directory.
pub const KNOWN_FILE: &str = "approved.json";

/// Roles and what they were last approved as.
pub struct KnownTargets {
    path: PathBuf,
    map: Mutex<BTreeMap<String, String>>,
}

impl KnownTargets {
    /// Loads `<state_dir>/approved.json` (missing or unreadable: nothing known yet, which only
    /// means the next approval of each role is recorded without a comparison).
    pub fn load(state_dir: &Path) -> KnownTargets {
        let path = state_dir.join(KNOWN_FILE);
        let map = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        KnownTargets {
            path,
            map: Mutex::new(map),
        }
    }

    /// What `role` was last approved as.
    pub fn get(&self, role: &str) -> Option<String> {
        self.map.locked().get(role).cloned()
    }

    /// Records that `role` was approved as `target`; returns what it was before, if different.
    pub fn record(&self, role: &str, target: &str) -> Option<String> {
        let mut map = self.map.locked();
        let before = map.insert(role.to_owned(), target.to_owned());
        if before.as_deref() != Some(target) {
            if let Ok(bytes) = serde_json::to_vec_pretty(&*map) {
                if let Err(e) = write_atomic(&self.path, &bytes, 0o600) {
                    tracing::warn!(error = %e, path = %self.path.display(), "cannot record the approved role");
                }
            }
        }
        before.filter(|b| b != target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_remembered_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let k = KnownTargets::load(dir.path());
        assert_eq!(k.get("prod"), None);
        assert_eq!(k.record("prod", "source base → arn:1"), None);
        assert_eq!(k.record("prod", "source base → arn:1"), None);
        let again = KnownTargets::load(dir.path());
        assert_eq!(again.get("prod").as_deref(), Some("source base → arn:1"));
        assert_eq!(
            again.record("prod", "source base → arn:2").as_deref(),
            Some("source base → arn:1")
        );
    }
}

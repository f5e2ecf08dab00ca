//! What a touch vouches for besides the role it opens: the settings that decide where secrets go
//! and how strong the gate is (endpoint overrides and the security policy in `config.toml`), and
//! what each role was approved as (source and role ARNs). They live in `<state>/trusted.json`
//! under an HMAC-SHA256 whose key is derived from the vault's private half
//! ([`VaultSecret::derive_key`]), so only a touch of one of the user's keys can write a record
//! that verifies: a same-user process can rewrite `config.toml`, `trusted.json` or
//! `~/.aws/config`, but not the MAC.
//!
//! Every touch that unwraps the vault runs [`Trusted::verify`] before anything leaves the agent.
//! A setting or role that differs from the record is shown like a changed host key (was, now) and
//! is applied only when that touch carried an explicit `--accept-change`; otherwise the touch is
//! refused and nothing is sent anywhere. The first record is written by the touch that creates
//! the vault (trust on first use, said in the log and the audit). A record that is missing or does
//! not verify while a vault exists is a change like any other: it needs `--accept-change`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::util::write_atomic;
use crate::vault::{fingerprint, VaultSecret};

/// The record's file name in the state directory.
pub const TRUSTED_FILE: &str = "trusted.json";

/// HKDF `info` of the record's MAC key: its own purpose, so it equals no other derived key.
const MAC_PURPOSE: &[u8] = b"credagent trusted.json mac v1";
/// Prefixed to the MAC input: the format and its version.
const MAC_DOMAIN: &[u8] = b"credagent trusted.json v1\0";

/// The settings a touch vouches for, by name (`sts_endpoint`, `approval.user_verification`, …),
/// each with the value as the person would read it. Built from `config.toml` at start and at
/// each `credctl reload`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settings(BTreeMap<String, String>);

impl Settings {
    /// No settings (tests).
    pub fn new() -> Self {
        Self::default()
    }

    /// Records setting `name` as `value`.
    pub fn set(&mut self, name: &str, value: impl Into<String>) -> &mut Self {
        self.0.insert(name.to_owned(), value.into());
        self
    }

    /// The value of setting `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// The settings that send secrets elsewhere than AWS (endpoint overrides) or weaken the
    /// approval (touch-only, unsealed keys), as `name = value (default: …)`: what the first
    /// touch of a new agent would vouch for only when the person said so.
    pub fn risky_against(&self, defaults: &Settings) -> Vec<String> {
        const RISKY: &[&str] = &[
            "sts_endpoint",
            "sso_oidc_endpoint",
            "sso_endpoint",
            "federation_endpoint",
            "approval.user_verification",
            "approval.allow_software_authenticators",
            "approval.sealing",
        ];
        RISKY
            .iter()
            .filter_map(|name| {
                let (now, default) = (self.get(name)?, defaults.get(name).unwrap_or(""));
                (now != default).then(|| format!("{name} = {now} (default: {default})"))
            })
            .collect()
    }
}

/// One difference between what a touch last vouched for and what the agent runs with now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// A setting in `config.toml` (`was`: none recorded).
    Setting {
        name: String,
        was: Option<String>,
        now: String,
    },
    /// A source now holds another access key than the one a touch last confirmed (or than the
    /// one `source add` stored with the person's touch).
    SourceKey {
        source: String,
        was: String,
        now: String,
    },
    /// A role now resolves to another source or role ARNs than it was approved as.
    Role {
        role: String,
        was: String,
        now: String,
    },
    /// `trusted.json` is missing although a vault exists.
    Missing,
    /// `trusted.json` does not verify under this vault: rewritten behind the agent's back (or
    /// written for another vault).
    Forged,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::Setting { name, was, now } => write!(
                f,
                "setting {name} in config.toml: was {}, now {now}",
                was.as_deref().unwrap_or("(not recorded)")
            ),
            Change::Role { role, was, now } => {
                write!(f, "role {role}: was {was}, now {now}")
            }
            Change::SourceKey { source, was, now } => write!(
                f,
                "source {source} holds access key {now}, but the key your touch confirmed (or \
                 `source add` stored) is {was}"
            ),
            Change::Missing => write!(
                f,
                "{TRUSTED_FILE} (the settings your last touch confirmed) is missing: every \
                 setting below is unconfirmed"
            ),
            Change::Forged => write!(
                f,
                "{TRUSTED_FILE} does not verify under your vault: it was rewritten behind the \
                 agent's back"
            ),
        }
    }
}

/// What [`Trusted::verify`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Everything matches the record (a role seen for the first time is added to it).
    Unchanged,
    /// Differences, applied because the touch carried `--accept-change`.
    Accepted(Vec<Change>),
}

/// Why a touch may not be used.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// Differences the touch did not confirm.
    #[error("{}", describe(.0))]
    Changed(Vec<Change>),
    /// The record could not be written: the touch is refused, so nothing is applied unrecorded.
    #[error(
        "cannot write {path}: {source}; free space or fix the permissions of the state directory"
    )]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl TrustError {
    /// The differences, if that is why.
    pub fn changes(&self) -> &[Change] {
        match self {
            TrustError::Changed(c) => c,
            TrustError::Write { .. } => &[],
        }
    }
}

fn describe(changes: &[Change]) -> String {
    let mut out =
        String::from("what this touch would rely on changed since a touch last confirmed it:");
    for c in changes {
        out.push_str("\n  ");
        out.push_str(&c.to_string());
    }
    out
}

/// The record as stored.
#[derive(Serialize, Deserialize, Default, Clone)]
struct Body {
    version: u32,
    /// Fingerprint of the vault whose key MACs this record.
    vault: String,
    settings: BTreeMap<String, String>,
    roles: BTreeMap<String, String>,
    /// Source name → the access key id a touch confirmed it holds.
    #[serde(default)]
    sources: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize)]
struct File {
    #[serde(flatten)]
    body: Body,
    /// HMAC-SHA256 of [`MAC_DOMAIN`] ‖ the canonical JSON of `body`, hex.
    mac: String,
}

impl Body {
    /// The MAC over this body under `secret`'s record key, ready for its final step.
    fn mac(&self, secret: &VaultSecret) -> Option<Hmac<Sha256>> {
        let key = secret.derive_key(MAC_PURPOSE);
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key.as_slice()).ok()?;
        mac.update(MAC_DOMAIN);
        // BTreeMaps serialize in key order: the JSON of a body is canonical.
        mac.update(&serde_json::to_vec(self).ok()?);
        Some(mac)
    }

    fn verifies(&self, secret: &VaultSecret, mac_hex: &str) -> bool {
        match (hex::decode(mac_hex), self.mac(secret)) {
            // Constant time.
            (Ok(tag), Some(mac)) => mac.verify_slice(&tag).is_ok(),
            _ => false,
        }
    }
}

/// The authenticated record and the settings this agent runs with.
pub struct Trusted {
    path: PathBuf,
    /// What `config.toml` said when the agent started, or at the last `credctl reload` a touch
    /// confirmed.
    current: std::sync::RwLock<Settings>,
    /// Whether a touch verified (or accepted) `current` in this agent's life: until then an
    /// endpoint override receives nothing, not even a login that needs no touch.
    confirmed: AtomicBool,
    /// Sources stored by `source add` (with the person's touch) since the last touch: the key
    /// each now holds, folded into the record by the next touch.
    added: std::sync::Mutex<BTreeMap<String, String>>,
    /// The settings of an empty config.toml, against which [`Trusted::risky`] tells what a
    /// first touch would adopt only when told.
    defaults: Settings,
}

impl Trusted {
    /// The record in `state_dir`, for an agent running with `current`.
    pub fn new(state_dir: &Path, current: Settings) -> Self {
        Self {
            path: state_dir.join(TRUSTED_FILE),
            current: std::sync::RwLock::new(current),
            confirmed: AtomicBool::new(false),
            added: std::sync::Mutex::new(BTreeMap::new()),
            defaults: Settings::new(),
        }
    }

    /// The settings of an empty config.toml (what [`Trusted::risky`] compares with).
    pub fn with_defaults(mut self, defaults: Settings) -> Self {
        self.defaults = defaults;
        self
    }

    /// The settings in force that send secrets elsewhere than AWS or weaken the approval,
    /// against the defaults (see [`Settings::risky_against`]).
    pub fn risky(&self) -> Vec<String> {
        self.current().risky_against(&self.defaults)
    }

    /// The settings this agent runs with.
    pub fn current(&self) -> Settings {
        crate::util::RwLockExt::read_locked(&self.current).clone()
    }

    /// Puts `settings` in force without a touch: only where no key could vouch (no key
    /// registered and no vault, `credctl reload` before the first `key add`), or for settings
    /// [`Trusted::verify_settings`] just recorded.
    pub fn set_current(&self, settings: Settings) {
        *crate::util::RwLockExt::write_locked(&self.current) = settings;
    }

    /// Whether a touch confirmed the current settings since the agent started.
    pub fn confirmed(&self) -> bool {
        self.confirmed.load(Ordering::Acquire)
    }

    fn load(&self) -> Option<File> {
        let bytes = std::fs::read(&self.path).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// What `role` was last approved as, as the file says: **not verified** (no touch yet), so
    /// only for the warning before a touch; [`Trusted::verify`] decides.
    pub fn recorded_target(&self, role: &str) -> Option<String> {
        self.load().and_then(|f| f.body.roles.get(role).cloned())
    }

    /// `source add` stored `source` with access key `key_id` on a connection the person's touch
    /// proved: the next touch records it as the key that source holds.
    pub fn source_added(&self, source: &str, key_id: &str) {
        crate::util::LockExt::locked(&self.added).insert(source.to_owned(), key_id.to_owned());
    }

    /// The vault fingerprint the file names (not verified), to name a replaced `vault.json`.
    pub fn recorded_vault(&self) -> Option<String> {
        self.load().map(|f| f.body.vault)
    }
}

/// The vault fingerprint `<state_dir>/trusted.json` names, if there is one (not verified): a
/// vault existed here, so a missing `vault.json` was lost or removed, not never made.
pub fn recorded_vault(state_dir: &Path) -> Option<String> {
    Trusted::new(state_dir, Settings::new()).recorded_vault()
}

impl Trusted {
    fn write(&self, body: &Body, secret: &VaultSecret) -> Result<(), TrustError> {
        let mac = body
            .mac(secret)
            .map(|m| hex::encode(m.finalize().into_bytes()))
            .unwrap_or_default();
        let file = File {
            mac,
            body: body.clone(),
        };
        let bytes = serde_json::to_vec_pretty(&file).unwrap_or_default();
        write_atomic(&self.path, &bytes, 0o600).map_err(|source| TrustError::Write {
            path: self.path.clone(),
            source,
        })
    }

    fn body_now(
        &self,
        secret: &VaultSecret,
        settings: &Settings,
        roles: BTreeMap<String, String>,
        sources: BTreeMap<String, String>,
    ) -> Body {
        Body {
            version: 1,
            vault: fingerprint(secret.public()),
            settings: settings.0.clone(),
            roles,
            sources,
        }
    }

    /// The touch that created the vault adopts the current settings (trust on first use).
    pub fn adopt(&self, secret: &VaultSecret) -> Result<(), TrustError> {
        let added = crate::util::LockExt::locked(&self.added).clone();
        self.write(
            &self.body_now(secret, &self.current(), BTreeMap::new(), added),
            secret,
        )?;
        self.confirmed.store(true, Ordering::Release);
        tracing::info!(
            path = %self.path.display(),
            "a new vault: its first touch confirmed the current settings (trust on first use)"
        );
        Ok(())
    }

    /// What differs between the record and the current settings (and `role`'s target), as the
    /// file says: **not verified** (no touch yet), so only to show before a touch what it would
    /// have to confirm; [`Trusted::verify`] decides.
    pub fn preview(&self, role: Option<(&str, &str)>) -> Vec<Change> {
        self.preview_against(&self.current(), role)
    }

    /// As [`Trusted::preview`], for `settings` instead of those in force (a reload's).
    pub fn preview_against(&self, settings: &Settings, role: Option<(&str, &str)>) -> Vec<Change> {
        let recorded = self.load().map(|f| f.body);
        let missing = recorded.is_none().then_some(Change::Missing);
        let (changes, _, _, _) = self.diff(settings, recorded.as_ref(), role);
        missing.into_iter().chain(changes).collect()
    }

    /// The differences from `recorded` (none: every setting counts as changed), the role map
    /// to write back, and whether `role` is new to it.
    fn diff(
        &self,
        current: &Settings,
        recorded: Option<&Body>,
        role: Option<(&str, &str)>,
    ) -> (
        Vec<Change>,
        BTreeMap<String, String>,
        BTreeMap<String, String>,
        bool,
    ) {
        let mut changes = Vec::new();
        // The key the role's source holds: against the key `source add` stored with the
        // person's touch since, else the one a touch confirmed before. A source never seen is
        // recorded as it is now (trust on first use).
        let mut sources = recorded.map(|b| b.sources.clone()).unwrap_or_default();
        let added = crate::util::LockExt::locked(&self.added).clone();
        let mut new_source = !added.is_empty();
        if let Some((source, key)) =
            role.and_then(|(_, target)| crate::profiles::RoleSpec::source_key_in(target))
        {
            match added.get(source).or_else(|| sources.get(source)) {
                Some(was) if was != key => changes.push(Change::SourceKey {
                    source: source.to_owned(),
                    was: was.clone(),
                    now: key.to_owned(),
                }),
                Some(_) => {}
                None => new_source = true,
            }
            sources.extend(added);
            sources.insert(source.to_owned(), key.to_owned());
        } else {
            sources.extend(added);
        }
        // The role first: it is what the person asked to open.
        let mut roles = recorded.map(|b| b.roles.clone()).unwrap_or_default();
        let mut new_role = false;
        if let Some((role, target)) = role {
            // The key its source holds is checked above, as the source's: here, the rest.
            let without_key = |t: &str| match crate::profiles::RoleSpec::source_key_in(t) {
                Some((_, key)) => t.replacen(&format!(" (key {key})"), "", 1),
                None => t.to_owned(),
            };
            match roles.get(role) {
                Some(was) if without_key(was) == without_key(target) => {}
                // No record to compare with: what the role opens is unconfirmed too.
                None if recorded.is_none() => changes.push(Change::Role {
                    role: role.to_owned(),
                    was: "(unconfirmed)".to_owned(),
                    now: target.to_owned(),
                }),
                Some(was) if was != target => changes.push(Change::Role {
                    role: role.to_owned(),
                    was: was.clone(),
                    now: target.to_owned(),
                }),
                Some(_) => {}
                None => new_role = true,
            }
            roles.insert(role.to_owned(), target.to_owned());
        }
        let empty = BTreeMap::new();
        let recorded_settings = recorded.map_or(&empty, |b| &b.settings);
        for (name, now) in &current.0 {
            let was = recorded_settings.get(name);
            if recorded.is_none() || was != Some(now) {
                changes.push(Change::Setting {
                    name: name.clone(),
                    was: was.cloned(),
                    now: now.clone(),
                });
            }
        }
        for (name, was) in recorded_settings {
            if !current.0.contains_key(name) {
                changes.push(Change::Setting {
                    name: name.clone(),
                    was: Some(was.clone()),
                    now: "(not set)".into(),
                });
            }
        }
        (changes, roles, sources, new_role || new_source)
    }

    /// Checks, for a touch that unwrapped `secret`, the current settings and (for a role) the
    /// role's `target` against the record. Differences are refused unless `accept`; accepted
    /// ones, and a role seen for the first time, are written back under the MAC.
    pub fn verify(
        &self,
        secret: &VaultSecret,
        role: Option<(&str, &str)>,
        accept: bool,
    ) -> Result<Verdict, TrustError> {
        self.verify_settings(secret, None, role, accept)
    }

    /// As [`Trusted::verify`], for `settings` (a reload's, none: those in force) instead of
    /// those in force: once the touch verified them and they are recorded, they are the ones
    /// in force.
    pub fn verify_settings(
        &self,
        secret: &VaultSecret,
        settings: Option<&Settings>,
        role: Option<(&str, &str)>,
        accept: bool,
    ) -> Result<Verdict, TrustError> {
        let current = settings.cloned().unwrap_or_else(|| self.current());
        let (first, recorded) = match self.load() {
            None => (Some(Change::Missing), None),
            Some(f) if !f.body.verifies(secret, &f.mac) => (Some(Change::Forged), None),
            Some(f) => (None, Some(f.body)),
        };
        let (changes, roles, sources, new_entry) = self.diff(&current, recorded.as_ref(), role);
        let changes: Vec<Change> = first.into_iter().chain(changes).collect();
        if !changes.is_empty() && !accept {
            return Err(TrustError::Changed(changes));
        }
        if !changes.is_empty() || new_entry {
            self.write(&self.body_now(secret, &current, roles, sources), secret)?;
            crate::util::LockExt::locked(&self.added).clear();
        }
        if settings.is_some() {
            *crate::util::RwLockExt::write_locked(&self.current) = current;
        }
        self.confirmed.store(true, Ordering::Release);
        Ok(if changes.is_empty() {
            Verdict::Unchanged
        } else {
            Verdict::Accepted(changes)
        })
    }
}

#[cfg(test)]
mod tests;

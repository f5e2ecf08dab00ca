//! Bearer tokens for the credential endpoint. A token names which role it may be served: a
//! shell token follows the role `credctl use` makes current for that shell, an exec/env token is
//! bound to one role for life.
//!
//! A token is `cat1_<id>_<secret>`: 64 bits of public id (used to find the entry and to name the
//! token in audit lines) and 256 bits of secret. The agent keeps only SHA-256 of the secret and
//! compares it in constant time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::generation::{Generation, Versioned};
use crate::procs::ProcessId;

const PREFIX: &str = "cat1_";
/// Most live tokens at once: enough for every shell and command of a person, and a bound on
/// what a runaway script can make the agent hold.
pub const MAX_TOKENS: usize = 1024;
const ID_BYTES: usize = 8;
const SECRET_BYTES: usize = 32;

/// The public id of a token: safe to log and to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenId([u8; ID_BYTES]);

impl std::fmt::Display for TokenId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl TokenId {
    pub fn parse(s: &str) -> Option<TokenId> {
        let mut id = [0u8; ID_BYTES];
        hex::decode_to_slice(s, &mut id).ok()?;
        Some(TokenId(id))
    }
}

/// What a token may be served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Binding {
    /// A shell's token: serves the role `credctl use` made current for it, if any.
    Shell { current: Option<Arc<str>> },
    /// Bound to one role for its whole life (`credctl exec`, `credctl env`).
    Role { role: Arc<str> },
}

impl Binding {
    /// The role this binding serves now (a reference count, no copy).
    pub fn role(&self) -> Option<&Arc<str>> {
        match self {
            Binding::Shell { current } => current.as_ref(),
            Binding::Role { role } => Some(role),
        }
    }
}

struct Entry {
    secret_hash: [u8; 32],
    binding: Binding,
    /// Who it was issued for: "shell", "exec", "env", "role".
    purpose: String,
    created: SystemTime,
    /// Unix seconds of the last successful authentication (0: never). Not versioned: it
    /// changes no answer.
    last_used: AtomicU64,
    /// The process whose tree alone may present it (`None`: whoever holds it).
    holder: Option<ProcessId>,
}

/// A token that passed its secret check: what it may be served, and by whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    pub id: TokenId,
    /// The role it may be served now.
    pub role: Option<Arc<str>>,
    /// The process whose tree alone may present it.
    pub holder: Option<ProcessId>,
    /// A `credctl exec` job's token: served by a session held for running jobs.
    pub job: bool,
}

/// Why a token was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token")]
    Malformed,
    #[error("unknown or revoked token")]
    Unknown,
    #[error("this token is bound to one role and cannot switch")]
    Bound,
}

/// Why no token was issued.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("the random generator failed: {0}")]
    Random(getrandom::Error),
    #[error(
        "{MAX_TOKENS} endpoint tokens are live already: revoke unused ones (`credctl token list`, \
         `credctl token revoke ID`) or end them all with `credctl lock`"
    )]
    TooMany,
}

/// All live tokens.
#[cfg_attr(test, derive(Default))]
pub struct Tokens {
    /// Versioned: every change to the tokens can change an endpoint answer.
    entries: Versioned<HashMap<TokenId, Entry>>,
    /// Requests refused because a bound token came from outside its holder's tree.
    refused_elsewhere: AtomicU64,
}

fn hash(secret: &[u8]) -> [u8; 32] {
    Sha256::digest(secret).into()
}

/// Splits `cat1_<id>_<secret>` into its id and secret bytes.
fn parse(token: &str) -> Result<(TokenId, [u8; SECRET_BYTES]), TokenError> {
    let rest = token.strip_prefix(PREFIX).ok_or(TokenError::Malformed)?;
    let (id, secret) = rest.split_once('_').ok_or(TokenError::Malformed)?;
    let id = TokenId::parse(id).ok_or(TokenError::Malformed)?;
    let mut s = [0u8; SECRET_BYTES];
    hex::decode_to_slice(secret, &mut s).map_err(|_| TokenError::Malformed)?;
    Ok((id, s))
}

impl Tokens {
    /// An empty table whose changes bump `generation`.
    pub fn new(generation: Generation) -> Tokens {
        Tokens {
            entries: Versioned::new(HashMap::new(), generation),
            refused_elsewhere: AtomicU64::new(0),
        }
    }

    /// Issues a new token. The returned secret is the only copy of the token in clear.
    pub fn issue(
        &self,
        binding: Binding,
        purpose: &str,
        holder: Option<ProcessId>,
        now: SystemTime,
    ) -> Result<(TokenId, SecretString), IssueError> {
        let mut id = [0u8; ID_BYTES];
        let mut secret = zeroize::Zeroizing::new([0u8; SECRET_BYTES]);
        getrandom::fill(&mut id).map_err(IssueError::Random)?;
        getrandom::fill(secret.as_mut()).map_err(IssueError::Random)?;
        let id = TokenId(id);
        let token = SecretString::from(format!(
            "{PREFIX}{id}_{}",
            zeroize::Zeroizing::new(hex::encode(secret.as_ref())).as_str()
        ));
        let entry = Entry {
            secret_hash: hash(secret.as_ref()),
            binding,
            purpose: purpose.into(),
            created: now,
            last_used: AtomicU64::new(0),
            holder,
        };
        let mut entries = self.entries.write();
        if entries.len() >= MAX_TOKENS {
            return Err(IssueError::TooMany);
        }
        entries.insert(id, entry);
        Ok((id, token))
    }

    /// Checks a presented token; on success returns its id and the role it may be served now.
    pub fn authenticate(
        &self,
        presented: &str,
        now: SystemTime,
    ) -> Result<Authenticated, TokenError> {
        let (id, secret) = parse(presented)?;
        let presented_hash = hash(&secret);
        let entries = self.entries.read();
        let entry = entries.get(&id).ok_or(TokenError::Unknown)?;
        if bool::from(entry.secret_hash.ct_eq(&presented_hash)) {
            entry
                .last_used
                .store(crate::util::unix_secs(now), Ordering::Relaxed);
            Ok(Authenticated {
                id,
                role: entry.binding.role().cloned(),
                holder: entry.holder,
                job: entry.purpose == "exec",
            })
        } else {
            Err(TokenError::Unknown)
        }
    }

    /// The role `presented` may be served now, without counting as a use (a shell prompt asks
    /// on every line).
    pub fn role_of(&self, presented: &str) -> Result<Option<Arc<str>>, TokenError> {
        let (id, secret) = parse(presented)?;
        let presented_hash = hash(&secret);
        let entries = self.entries.read();
        let entry = entries.get(&id).ok_or(TokenError::Unknown)?;
        if bool::from(entry.secret_hash.ct_eq(&presented_hash)) {
            Ok(entry.binding.role().cloned())
        } else {
            Err(TokenError::Unknown)
        }
    }

    /// Makes `role` current for a shell token (`credctl use`).
    pub fn set_current(&self, presented: &SecretString, role: &str) -> Result<TokenId, TokenError> {
        let (id, secret) = parse(presented.expose_secret())?;
        let presented_hash = hash(&secret);
        let mut entries = self.entries.write();
        let entry = entries
            .get_mut(&id)
            .filter(|e| bool::from(e.secret_hash.ct_eq(&presented_hash)))
            .ok_or(TokenError::Unknown)?;
        match &mut entry.binding {
            Binding::Shell { current } => {
                *current = Some(Arc::from(role));
                Ok(id)
            }
            Binding::Role { .. } => Err(TokenError::Bound),
        }
    }

    /// Revokes one token; returns whether it existed.
    pub fn revoke(&self, id: TokenId) -> bool {
        self.entries.write().remove(&id).is_some()
    }

    /// Forgets the current role of every shell token (after `credctl lock`).
    pub fn clear_current_roles(&self) {
        for e in self.entries.write().values_mut() {
            if let Binding::Shell { current } = &mut e.binding {
                *current = None;
            }
        }
    }

    /// Revokes the token whose public id is `id`; returns whether it existed.
    pub fn revoke_str(&self, id: &str) -> bool {
        TokenId::parse(id).is_some_and(|id| self.revoke(id))
    }

    /// Revokes every token bound to one role (`exec`, `env`): after `credctl lock` none of
    /// them may serve again when its role reopens.
    pub fn revoke_role_bound(&self) -> usize {
        let mut entries = self.entries.write();
        let before = entries.len();
        entries.retain(|_, e| !matches!(e.binding, Binding::Role { .. }));
        before - entries.len()
    }

    /// A screen lock while jobs run: revokes every role-bound token but the running jobs'
    /// (`credctl exec`, which end with their command); returns how many.
    pub fn revoke_role_bound_but_jobs(&self) -> usize {
        let mut entries = self.entries.write();
        let before = entries.len();
        entries.retain(|_, e| !matches!(e.binding, Binding::Role { .. }) || e.purpose == "exec");
        before - entries.len()
    }

    /// A bound token was presented from outside its holder's tree: counted for `status`.
    pub fn note_refused_elsewhere(&self) {
        self.refused_elsewhere.fetch_add(1, Ordering::Relaxed);
    }

    /// How many requests were refused so, since the agent started.
    pub fn refused_elsewhere(&self) -> u64 {
        self.refused_elsewhere.load(Ordering::Relaxed)
    }

    /// The live tokens, oldest first, without their secrets.
    pub fn list(&self) -> Vec<TokenView> {
        let mut out: Vec<TokenView> = self
            .entries
            .read()
            .iter()
            .map(|(id, e)| TokenView {
                id: id.to_string(),
                kind: e.purpose.clone(),
                role: e.binding.role().map(|r| r.to_string()),
                created: crate::util::unix_secs(e.created),
                last_used: Some(e.last_used.load(Ordering::Relaxed)).filter(|t| *t > 0),
                holder: e.holder,
            })
            .collect();
        out.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
        out
    }
}

/// A live token as `credctl token list` shows it: never its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenView {
    /// The public id (16 hex digits), as in audit lines.
    pub id: String,
    /// "shell", "exec", "env" or "role".
    pub kind: String,
    /// The role it is bound to, or the shell's current role.
    pub role: Option<String>,
    /// Unix seconds.
    pub created: u64,
    /// Unix seconds of the last credential request made with it (`None`: never used).
    pub last_used: Option<u64>,
    /// The process whose tree alone may present it (`None`: unbound).
    pub holder: Option<ProcessId>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_are_long_printable_and_unique() {
        let t = Tokens::default();
        let (_, a) = t
            .issue(
                Binding::Shell { current: None },
                "shell",
                None,
                SystemTime::now(),
            )
            .unwrap();
        let (_, b) = t
            .issue(
                Binding::Shell { current: None },
                "shell",
                None,
                SystemTime::now(),
            )
            .unwrap();
        let a = a.expose_secret();
        assert!(a.starts_with("cat1_"));
        assert_eq!(a.len(), 5 + 16 + 1 + 64);
        assert!(a.bytes().all(|c| c.is_ascii_graphic()));
        assert_ne!(a, b.expose_secret());
    }

    #[test]
    fn authenticate_and_bindings() {
        let t = Tokens::default();
        let now = SystemTime::now();
        let (sid, shell) = t
            .issue(Binding::Shell { current: None }, "shell", None, now)
            .unwrap();
        let (_, exec) = t
            .issue(
                Binding::Role {
                    role: "prod".into(),
                },
                "exec",
                None,
                now,
            )
            .unwrap();
        assert_eq!(
            t.authenticate(shell.expose_secret(), SystemTime::UNIX_EPOCH)
                .unwrap(),
            Authenticated {
                id: sid,
                role: None,
                holder: None,
                job: false,
            }
        );
        assert_eq!(t.set_current(&shell, "dev").unwrap(), sid);
        assert_eq!(
            t.authenticate(shell.expose_secret(), SystemTime::UNIX_EPOCH)
                .unwrap()
                .role
                .as_deref(),
            Some("dev")
        );
        assert_eq!(
            t.authenticate(exec.expose_secret(), SystemTime::UNIX_EPOCH)
                .unwrap()
                .role
                .as_deref(),
            Some("prod")
        );
        assert_eq!(t.set_current(&exec, "dev"), Err(TokenError::Bound));
        t.clear_current_roles();
        assert_eq!(
            t.authenticate(shell.expose_secret(), SystemTime::UNIX_EPOCH)
                .unwrap()
                .role,
            None
        );
        assert_eq!(
            t.authenticate(exec.expose_secret(), SystemTime::UNIX_EPOCH)
                .unwrap()
                .role
                .as_deref(),
            Some("prod")
        );
    }

    #[test]
    fn wrong_secret_right_id_is_refused() {
        let t = Tokens::default();
        let (_, tok) = t
            .issue(
                Binding::Shell { current: None },
                "shell",
                None,
                SystemTime::now(),
            )
            .unwrap();
        let s = tok.expose_secret();
        let mut forged = s[..s.len() - 1].to_owned();
        forged.push(if s.ends_with('0') { '1' } else { '0' });
        assert_eq!(
            t.authenticate(&forged, SystemTime::UNIX_EPOCH),
            Err(TokenError::Unknown)
        );
        for bad in [
            "",
            "Bearer x",
            "cat1_",
            "cat1_zz_zz",
            &s[..s.len() - 2],
            &format!("{s} "),
        ] {
            assert!(
                t.authenticate(bad, SystemTime::UNIX_EPOCH).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn revoked_tokens_are_refused() {
        let t = Tokens::default();
        let (id, tok) = t
            .issue(
                Binding::Role { role: "r".into() },
                "exec",
                None,
                SystemTime::now(),
            )
            .unwrap();
        assert!(t.revoke(id));
        assert_eq!(
            t.authenticate(tok.expose_secret(), SystemTime::UNIX_EPOCH),
            Err(TokenError::Unknown)
        );
        assert!(!t.revoke(id));
    }

    #[test]
    fn live_tokens_are_capped_listed_and_revoked() {
        let t = Tokens::default();
        let t0 = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000);
        let (shell, shell_tok) = t
            .issue(Binding::Shell { current: None }, "shell", None, t0)
            .unwrap();
        let (env, env_tok) = t
            .issue(Binding::Role { role: "dev".into() }, "env", None, t0)
            .unwrap();
        let later = t0 + std::time::Duration::from_secs(5);
        t.authenticate(env_tok.expose_secret(), later).unwrap();
        let list = t.list();
        assert_eq!(list.len(), 2);
        let env_info = list.iter().find(|i| i.id == env.to_string()).unwrap();
        assert_eq!(env_info.kind, "env");
        assert_eq!(env_info.role.as_deref(), Some("dev"));
        assert_eq!(env_info.created, 1_000);
        assert_eq!(env_info.last_used, Some(1_005));
        assert_eq!(
            list.iter()
                .find(|i| i.id == shell.to_string())
                .unwrap()
                .last_used,
            None
        );

        // Lock: role-bound tokens go, shell tokens stay (they follow `credctl use`).
        assert_eq!(t.revoke_role_bound(), 1);
        assert_eq!(
            t.authenticate(env_tok.expose_secret(), later),
            Err(TokenError::Unknown)
        );
        assert!(t.authenticate(shell_tok.expose_secret(), later).is_ok());
        assert!(t.revoke_str(&shell.to_string()));
        assert!(!t.revoke_str(&shell.to_string()), "revoked once");
        assert!(!t.revoke_str("not-an-id"));

        for _ in 0..MAX_TOKENS {
            t.issue(Binding::Shell { current: None }, "shell", None, t0)
                .unwrap();
        }
        assert!(matches!(
            t.issue(Binding::Shell { current: None }, "shell", None, t0),
            Err(IssueError::TooMany)
        ));
    }

    #[test]
    fn set_current_needs_the_secret_too() {
        let t = Tokens::default();
        let (id, _) = t
            .issue(
                Binding::Shell { current: None },
                "shell",
                None,
                SystemTime::UNIX_EPOCH,
            )
            .unwrap();
        let forged = SecretString::from(format!("{PREFIX}{id}_{}", "00".repeat(SECRET_BYTES)));
        assert_eq!(t.set_current(&forged, "prod"), Err(TokenError::Unknown));
    }
}

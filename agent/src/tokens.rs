//! Bearer tokens for the credential endpoint. A token names which role it may be served: a
//! shell token follows the role `credctl use` makes current for that shell, an exec/env token is
//! bound to one role for life.
//!
//! A token is `cat1_<id>_<secret>`: 64 bits of public id (used to find the entry and to name the
//! token in audit lines) and 256 bits of secret. The agent keeps only SHA-256 of the secret and
//! compares it in constant time.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::generation::{Generation, Versioned};

const PREFIX: &str = "cat1_";
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

/// A token's public description.
#[derive(Debug, Clone, Serialize)]
pub struct TokenInfo {
    pub id: String,
    pub binding: Binding,
    /// Who it was issued for: "shell", "exec", "env".
    pub purpose: String,
    pub created: u64,
}

struct Entry {
    secret_hash: [u8; 32],
    binding: Binding,
    purpose: String,
    created: SystemTime,
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

/// All live tokens.
#[cfg_attr(test, derive(Default))]
pub struct Tokens {
    /// Versioned: every change to the tokens can change an endpoint answer.
    entries: Versioned<HashMap<TokenId, Entry>>,
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
        }
    }

    /// Issues a new token. The returned secret is the only copy of the token in clear.
    pub fn issue(
        &self,
        binding: Binding,
        purpose: &str,
        now: SystemTime,
    ) -> Result<(TokenId, SecretString), getrandom::Error> {
        let mut id = [0u8; ID_BYTES];
        let mut secret = zeroize::Zeroizing::new([0u8; SECRET_BYTES]);
        getrandom::fill(&mut id)?;
        getrandom::fill(secret.as_mut())?;
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
        };
        self.entries.write().insert(id, entry);
        Ok((id, token))
    }

    /// Checks a presented token; on success returns its id and the role it may be served now.
    pub fn authenticate(&self, presented: &str) -> Result<(TokenId, Option<Arc<str>>), TokenError> {
        let (id, secret) = parse(presented)?;
        let presented_hash = hash(&secret);
        let entries = self.entries.read();
        let entry = entries.get(&id).ok_or(TokenError::Unknown)?;
        if bool::from(entry.secret_hash.ct_eq(&presented_hash)) {
            Ok((id, entry.binding.role().cloned()))
        } else {
            Err(TokenError::Unknown)
        }
    }

    /// Makes `role` current for a shell token (`credctl use`).
    pub fn set_current(&self, presented: &SecretString, role: &str) -> Result<TokenId, TokenError> {
        let (id, _) = self.authenticate(presented.expose_secret())?;
        let mut entries = self.entries.write();
        let entry = entries.get_mut(&id).ok_or(TokenError::Unknown)?;
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

    pub fn list(&self) -> Vec<TokenInfo> {
        let mut out: Vec<TokenInfo> = self
            .entries
            .read()
            .iter()
            .map(|(id, e)| TokenInfo {
                id: id.to_string(),
                binding: e.binding.clone(),
                purpose: e.purpose.clone(),
                created: crate::util::unix_secs(e.created),
            })
            .collect();
        out.sort_by_key(|t| t.created);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_are_long_printable_and_unique() {
        let t = Tokens::default();
        let (_, a) = t
            .issue(Binding::Shell { current: None }, "shell", SystemTime::now())
            .unwrap();
        let (_, b) = t
            .issue(Binding::Shell { current: None }, "shell", SystemTime::now())
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
            .issue(Binding::Shell { current: None }, "shell", now)
            .unwrap();
        let (_, exec) = t
            .issue(
                Binding::Role {
                    role: "prod".into(),
                },
                "exec",
                now,
            )
            .unwrap();
        assert_eq!(t.authenticate(shell.expose_secret()).unwrap(), (sid, None));
        assert_eq!(t.set_current(&shell, "dev").unwrap(), sid);
        assert_eq!(
            t.authenticate(shell.expose_secret()).unwrap().1.as_deref(),
            Some("dev")
        );
        assert_eq!(
            t.authenticate(exec.expose_secret()).unwrap().1.as_deref(),
            Some("prod")
        );
        assert_eq!(t.set_current(&exec, "dev"), Err(TokenError::Bound));
        t.clear_current_roles();
        assert_eq!(t.authenticate(shell.expose_secret()).unwrap().1, None);
        assert_eq!(
            t.authenticate(exec.expose_secret()).unwrap().1.as_deref(),
            Some("prod")
        );
    }

    #[test]
    fn wrong_secret_right_id_is_refused() {
        let t = Tokens::default();
        let (_, tok) = t
            .issue(Binding::Shell { current: None }, "shell", SystemTime::now())
            .unwrap();
        let s = tok.expose_secret();
        let mut forged = s[..s.len() - 1].to_owned();
        forged.push(if s.ends_with('0') { '1' } else { '0' });
        assert_eq!(t.authenticate(&forged), Err(TokenError::Unknown));
        for bad in [
            "",
            "Bearer x",
            "cat1_",
            "cat1_zz_zz",
            &s[..s.len() - 2],
            &format!("{s} "),
        ] {
            assert!(t.authenticate(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn revoked_tokens_are_refused() {
        let t = Tokens::default();
        let (id, tok) = t
            .issue(
                Binding::Role { role: "r".into() },
                "exec",
                SystemTime::now(),
            )
            .unwrap();
        assert!(t.revoke(id));
        assert_eq!(
            t.authenticate(tok.expose_secret()),
            Err(TokenError::Unknown)
        );
        assert!(!t.revoke(id));
    }
}

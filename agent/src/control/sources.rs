//! Source requests: add (typed or imported from `~/.aws/credentials`), list and remove the
//! long-lived keys kept in the keyring.

use credagent_proto::{ErrorCode, Response, Secret, SourceInfo};
use secrecy::SecretString;

use std::time::SystemTime;

use super::{Conn, Control};
use crate::audit::Event;
use crate::sources::{rewrite_credentials_file_without, SourceCredentials, SourceError, Stored};

/// The refusal of a request that hands over a secret to seal before this connection's touch.
pub(super) fn touch_required(what: &str) -> Response {
    Response::error(
        ErrorCode::TouchRequired,
        format!("{what} takes a touch of your security key: it proves the vault the secret is sealed to is yours"),
    )
}

/// A keyring call's result as a reply.
fn reply(r: Result<Response, SourceError>) -> Response {
    r.unwrap_or_else(|e| Response::from(e.refusal()))
}

impl Control {
    /// A change to the stored sources (`channel`: its audit name), audited with its outcome.
    /// Adding one hands the agent a secret to seal: it needs this connection's own touch first.
    pub(super) async fn source_change(
        &self,
        channel: &'static str,
        name: &str,
        seals: bool,
        conn: &Conn,
        now: SystemTime,
        change: impl std::future::Future<Output = Response>,
    ) -> Response {
        let reply = if seals && !self.approvals.may_seal_for(conn.id, now) {
            touch_required("adding a source")
        } else {
            change.await
        };
        let refused = match &reply {
            Response::Error { code, .. } => Some(code.as_str()),
            _ => None,
        };
        self.audit(
            now,
            Event::action(channel, &conn.peer(), refused).subject(name),
        );
        reply
    }

    pub(super) async fn source_remove(&self, name: String) -> Response {
        reply(
            self.sources
                .with_store(move |store, k| {
                    store.forget(&name);
                    k.delete(&name).map(|()| Response::Ok)
                })
                .await,
        )
    }

    pub(super) async fn source_add(
        &self,
        name: String,
        key_id: String,
        secret: Secret,
    ) -> Response {
        if let Some(refusal) = refuse_temporary(&key_id, false, "") {
            return refusal;
        }
        let creds = SourceCredentials {
            access_key_id: key_id,
            secret_access_key: SecretString::from(secret.expose().to_owned()),
        };
        drop(secret);
        let (source, key) = (name.clone(), creds.access_key_id.clone());
        let reply = reply(
            self.sources
                .with_store(move |store, k| store.store(k, &name, &creds).map(|_| Response::Ok))
                .await,
        );
        if matches!(reply, Response::Ok) {
            self.approvals.source_added(&source, &key);
        }
        reply
    }

    pub(super) async fn source_import(
        &self,
        name: String,
        path: String,
        profile: String,
        remove: bool,
    ) -> Response {
        let path = std::path::PathBuf::from(path);
        let entry = {
            let (file, section) = (path.clone(), profile.clone());
            match tokio::task::spawn_blocking(move || {
                crate::profiles::read_credentials_file(&file, &section)
            })
            .await
            {
                Ok(Ok(Some(entry))) => entry,
                Ok(Ok(None)) => {
                    return Response::error(
                        ErrorCode::NotFound,
                        format!(
                            "no profile [{profile}] with aws_access_key_id and aws_secret_access_key in {}: check the name with `grep '\\[' {}`",
                            path.display(),
                            path.display()
                        ),
                    )
                }
                Ok(Err(e)) => return Response::error(ErrorCode::Profile, e.to_string()),
                Err(e) => {
                    return Response::error(
                        ErrorCode::Internal,
                        format!("credentials file task failed: {e}"),
                    )
                }
            }
        };
        let tail = format!(
            " (and profile [{profile}] was left in {} as it is)",
            path.display()
        );
        if let Some(refusal) =
            refuse_temporary(&entry.credentials.access_key_id, entry.session_token, &tail)
        {
            return refusal;
        }
        let (source, key) = (name.clone(), entry.credentials.access_key_id.clone());
        let reply = reply(
            self.sources
                .with_store(move |store, k| {
                    store.store(k, &name, &entry.credentials)?;
                    if remove {
                        rewrite_credentials_file_without(&path, &profile)?;
                    }
                    Ok(Response::Ok)
                })
                .await,
        );
        if matches!(reply, Response::Ok) {
            self.approvals.source_added(&source, &key);
        }
        reply
    }

    pub(super) async fn source_list(&self) -> Response {
        reply(
            self.sources
                .with_store(|store, keyring| {
                    let mut sources = Vec::new();
                    for name in keyring.list()? {
                        let (suffix, state) = match keyring.get_stored(&name) {
                            Ok(stored) => {
                                let id = match &stored {
                                    Stored::Plain(c) => c.access_key_id.as_str(),
                                    Stored::Sealed { access_key_id, .. } => access_key_id.as_str(),
                                };
                                let start = id.char_indices().rev().nth(3).map_or(0, |(i, _)| i);
                                (id[start..].to_owned(), store.state(&stored, &name))
                            }
                            Err(_) => ("????".into(), "damaged"),
                        };
                        sources.push(SourceInfo {
                            name,
                            key_id_suffix: suffix,
                            state: state.into(),
                        });
                    }
                    Ok(Response::Sources { sources })
                })
                .await,
        )
    }
}

/// Temporary credentials (an STS key id `ASIA…`, or keys with a session token) expire within
/// hours and sign nothing without their token: a source must be a long-lived key. Refused with
/// what to do instead; `tail` adds what was left untouched.
fn refuse_temporary(key_id: &str, session_token: bool, tail: &str) -> Option<Response> {
    (key_id.starts_with("ASIA") || session_token).then(|| {
        Response::error(
            ErrorCode::BadRequest,
            format!(
                "{key_id} is a temporary access key (issued by STS: it expires within hours and \
                 needs its session token), so it cannot be a source; nothing was stored{tail}. \
                 A source is a long-lived IAM user access key (AKIA…); for short-lived \
                 credentials from a sign-in, use an IAM Identity Center profile (`sso_session`) \
                 and `credctl login`"
            ),
        )
    })
}

//! Control requests, one handler per family: keys, sources, roles and sessions, tokens.

use std::sync::Arc;
use std::time::SystemTime;

use credagent_proto::{
    ErrorCode, KeyInfo, Request, Response, RoleInfo, Secret, SessionState, SourceInfo,
};
use secrecy::{ExposeSecret, SecretString};
use webauthn_rs::prelude::{PublicKeyCredential, RegisterPublicKeyCredential};

use super::gate::{self, Begin, Kind};
use super::Core;
use crate::approval::ApprovalError;
use crate::audit::{rfc3339, Event, Origin, Outcome};
use crate::keystore::{KeystoreError, SourceCredentials};
use crate::sessions::SessionError;
use crate::tokens::{Binding, TokenId};

/// One control connection's identity and the things that die with it.
pub struct Conn {
    pub id: u64,
    pub uid: u32,
    pub pid: i32,
    /// Tokens revoked when the connection closes (`credctl exec`).
    pub scoped_tokens: Vec<TokenId>,
}

impl Conn {
    fn origin(&self) -> Origin {
        Origin::Unix {
            uid: self.uid,
            pid: self.pid,
        }
    }
    fn requester(&self) -> String {
        let exe = std::fs::read_link(format!("/proc/{}/exe", self.pid))
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "unknown".into());
        format!("pid {} ({exe})", self.pid)
    }
}

/// A parsed answer to a ceremony.
enum Answer {
    Register(RegisterPublicKeyCredential),
    Approve(Box<PublicKeyCredential>),
}

fn approval_error(e: &ApprovalError) -> Response {
    let code = match e.code() {
        "no_keys" => ErrorCode::NoKeys,
        "software_authenticator_refused"
        | "attestation_untrusted"
        | "no_eligible_keys"
        | "user_not_verified"
        | "attestation_ca_invalid" => ErrorCode::Policy,
        "key_exists" | "credential_exists" => ErrorCode::Exists,
        "unknown_key" => ErrorCode::NotFound,
        "last_key" => ErrorCode::Refused,
        "state_corrupt" | "state_insecure" | "io" | "internal" => ErrorCode::Internal,
        _ => ErrorCode::ApprovalFailed,
    };
    Response::error(code, e.to_string())
}

fn session_error(e: &SessionError) -> Response {
    let code = match e {
        SessionError::NoSession { .. } => ErrorCode::NotFound,
        SessionError::MfaRequired { .. } => ErrorCode::MfaRequired,
        SessionError::Profile { .. } => ErrorCode::Profile,
        SessionError::Source { .. } => ErrorCode::Keyring,
        SessionError::Sts { .. } if e.is_transient() => ErrorCode::StsUnavailable,
        SessionError::Sts { .. } => ErrorCode::StsDenied,
        SessionError::ApprovalMismatch { .. } | SessionError::Locked { .. } => {
            ErrorCode::ApprovalFailed
        }
    };
    Response::error(code, e.to_string())
}

fn keystore_error(e: &KeystoreError) -> Response {
    let code = match e {
        KeystoreError::NotFound { .. } => ErrorCode::NotFound,
        KeystoreError::InvalidName { .. } | KeystoreError::InvalidCredentials { .. } => {
            ErrorCode::BadRequest
        }
        _ => ErrorCode::Keyring,
    };
    Response::error(code, e.to_string())
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<serde_json::Value, Box<Response>> {
    serde_json::to_value(v).map_err(|e| {
        Box::new(Response::error(
            ErrorCode::Internal,
            format!("cannot encode options: {e}"),
        ))
    })
}

fn key_info(k: &crate::approval::KeyInfo) -> KeyInfo {
    let kind = serde_json::to_value(k.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into());
    KeyInfo {
        name: k.name.clone(),
        created: k.created,
        last_used: k.last_used,
        counter: k.counter,
        kind,
        aaguid: k.aaguid.map(|u| u.to_string()),
    }
}

impl Core {
    fn origin_url(&self) -> String {
        format!("http://localhost:{}", self.facts.http_addr.port())
    }

    fn challenge(&self, id: &str, role: Option<&str>, options: serde_json::Value) -> Response {
        Response::Challenge {
            ceremony_id: id.to_owned(),
            origin: self.origin_url(),
            role: role.map(str::to_owned),
            purpose: None,
            session_secs: role.map(|_| self.config.session_ttl.as_secs()),
            approve_url: format!("{}/approve/{id}", self.origin_url()),
            options,
        }
    }

    /// Answers one control request after the handshake. The flag asks for shutdown.
    pub async fn handle(self: &Arc<Self>, req: Request, conn: &mut Conn) -> (Response, bool) {
        let now = SystemTime::now();
        let resp = match req {
            Request::Hello { .. } => crate::control::hello(&req),
            Request::Status => Response::Status(self.status(now)),
            Request::Stop => return (Response::Stopping, true),
            Request::Lock => {
                self.lock();
                Response::Ok
            }
            Request::KeyAddStart { name } => self.key_add_start(&name, conn, now).await,
            Request::KeyAddFinish {
                ceremony_id,
                credential,
            } => self.key_add_finish(&ceremony_id, credential, now).await,
            Request::KeyList => Response::Keys {
                keys: self.approver.keys().iter().map(key_info).collect(),
            },
            Request::KeyRemove { name, force } => match self.approver.remove_key(&name, force) {
                Ok(()) => Response::Ok,
                Err(e) => approval_error(&e),
            },
            Request::SourceAdd {
                name,
                access_key_id,
                secret_access_key,
            } => {
                self.source_add(name, access_key_id, secret_access_key)
                    .await
            }
            Request::SourceImport {
                name,
                path,
                profile,
                remove_from_file,
            } => {
                self.source_import(name, path, profile, remove_from_file)
                    .await
            }
            Request::SourceList => self.source_list().await,
            Request::SourceRemove { name } => self.source_remove(name).await,
            Request::Roles => self.roles(now),
            Request::Open { role, mfa_code } => self.open(&role, mfa_code, conn, now).await,
            Request::Approve {
                ceremony_id,
                credential,
            } => self.answer(&ceremony_id, credential, now).await,
            Request::AwaitCeremony { ceremony_id } => {
                match self.gate.subscribe(&ceremony_id, conn.id) {
                    Some(rx) => gate::wait(rx).await,
                    None => Response::error(
                        ErrorCode::NotFound,
                        "no such ceremony (finished or expired)",
                    ),
                }
            }
            Request::TokenShell => self.issue(Binding::Shell { current: None }, "shell", None, now),
            Request::TokenForRole {
                role,
                scoped,
                purpose,
            } => {
                let purpose = if scoped {
                    "exec"
                } else if purpose == "env" {
                    "env"
                } else {
                    "role"
                };
                self.issue(
                    Binding::Role { role: role.into() },
                    purpose,
                    scoped.then_some(conn),
                    now,
                )
            }
            Request::Use { token, role } => {
                let t = SecretString::from(token.expose().to_owned());
                match self.tokens.set_current(&t, &role) {
                    Ok(_) => Response::Ok,
                    Err(e) => Response::error(
                        ErrorCode::BadToken,
                        format!("{e}: this shell's token is not known to the agent: run `eval \"$(credctl start)\"`"),
                    ),
                }
            }
            Request::Credentials { role } => self.credentials(&role, conn, now).await,
            Request::Imds { role } => {
                if let Some(ep) = self.endpoint.get() {
                    ep.set_imds_role(role.map(Into::into));
                }
                Response::Ok
            }
            Request::Pending => {
                let core = self.clone();
                let pending =
                    tokio::task::spawn_blocking(move || core.pending.list(SystemTime::now()))
                        .await
                        .unwrap_or_default();
                Response::Pending { pending }
            }
            Request::Unknown => Response::error(
                ErrorCode::UnknownRequest,
                "this agent does not know that request: update and restart the agent",
            ),
        };
        (resp, false)
    }

    /// `credctl key add`. The first key registers directly; every later one needs a touch of a
    /// key already registered first, so a process of the user cannot enrol its own "key" (say, a
    /// fake authenticator) and then approve roles without the person.
    async fn key_add_start(&self, name: &str, conn: &Conn, now: SystemTime) -> Response {
        let keys = self.approver.keys();
        if keys.is_empty() {
            return self.registration_challenge(name, conn.id, now);
        }
        if keys.iter().any(|k| k.name == name) {
            return Response::error(
                ErrorCode::Exists,
                format!("a key named {name} is registered already: pick another name"),
            );
        }
        let role = gate::key_add_role(name);
        let begin = self
            .gate
            .open_or_join(&role, conn.id, conn.requester(), None, now, || {
                let (id, rcr) = self
                    .approver
                    .start_approval(&role, now)
                    .map_err(|e| Box::new(approval_error(&e)))?;
                Ok::<_, Box<Response>>((id.to_string(), to_json(&rcr)?))
            });
        match begin {
            Ok(Begin::Lead(id)) => match self.gate.view(&id) {
                Some(v) => Response::Challenge {
                    ceremony_id: id.clone(),
                    origin: self.origin_url(),
                    role: Some(role),
                    purpose: Some(format!(
                        "with a key you registered before, to allow adding the new key {name}"
                    )),
                    session_secs: None,
                    approve_url: format!("{}/approve/{id}", self.origin_url()),
                    options: v.options,
                },
                None => Response::error(ErrorCode::Internal, "the ceremony vanished"),
            },
            Ok(Begin::Follow(rx)) => gate::wait(rx).await,
            Err(r) => *r,
        }
    }

    /// A registration ceremony for a new key named `name`, led by control connection `leader`.
    fn registration_challenge(&self, name: &str, leader: u64, now: SystemTime) -> Response {
        match self.approver.start_registration(name, now) {
            Ok((id, ccr)) => {
                let options = match to_json(&ccr) {
                    Ok(v) => v,
                    Err(r) => return *r,
                };
                let id = id.to_string();
                self.gate.register(&id, name, options.clone(), leader, now);
                self.challenge(&id, None, options)
            }
            Err(e) => approval_error(&e),
        }
    }

    async fn key_add_finish(
        &self,
        id: &str,
        credential: serde_json::Value,
        now: SystemTime,
    ) -> Response {
        match self.gate.view(id).map(|v| v.kind) {
            Some(Kind::Register { .. }) => self.answer(id, credential, now).await,
            Some(Kind::Approve { .. }) => Response::error(
                ErrorCode::BadRequest,
                "that ceremony opens a role; send approve",
            ),
            None => Response::error(
                ErrorCode::NotFound,
                "no such ceremony (finished or expired)",
            ),
        }
    }

    /// Opens `role` if needed: already open → `Opened`; else lead or follow the role's ceremony.
    async fn open(
        &self,
        role: &str,
        mfa_code: Option<Secret>,
        conn: &Conn,
        now: SystemTime,
    ) -> Response {
        if let Err(r) = self.reload_profiles() {
            return *r;
        }
        if let Some(st) = self
            .sessions
            .status(now)
            .into_iter()
            .find(|s| s.role == role)
        {
            if self.sessions.get_cached(role, now).is_some() {
                return Response::Opened {
                    role: role.to_owned(),
                    expires_at: st.session_expires_at,
                };
            }
        }
        tracing::debug!(role, "open: no usable session; checking MFA");
        match self.sessions.mfa_needed(role, now) {
            Err(e) => return session_error(&e),
            Ok(Some(serial)) if mfa_code.is_none() => {
                return Response::error(
                    ErrorCode::MfaRequired,
                    format!("role {role} needs a code from MFA device {serial}"),
                )
            }
            Ok(_) => {}
        }
        let begin = self
            .gate
            .open_or_join(role, conn.id, conn.requester(), mfa_code, now, || {
                let (id, rcr) = self
                    .approver
                    .start_approval(role, now)
                    .map_err(|e| Box::new(approval_error(&e)))?;
                Ok::<_, Box<Response>>((id.to_string(), to_json(&rcr)?))
            });
        match &begin {
            Ok(Begin::Lead(id)) => {
                tracing::debug!(role, ceremony = %id, "open: leading a ceremony")
            }
            Ok(Begin::Follow(_)) => tracing::debug!(role, "open: following the ceremony under way"),
            Err(_) => tracing::debug!(role, "open: cannot start a ceremony"),
        }
        match begin {
            Ok(Begin::Lead(id)) => match self.gate.view(&id) {
                Some(v) => self.challenge(&id, Some(role), v.options),
                None => Response::error(ErrorCode::Internal, "the ceremony vanished"),
            },
            Ok(Begin::Follow(rx)) => gate::wait(rx).await,
            Err(r) => *r,
        }
    }

    /// The one answer to ceremony `id` (from credctl or the browser page). The answer is parsed
    /// before the ceremony is claimed, so junk cannot burn a live ceremony.
    pub async fn answer(
        &self,
        id: &str,
        credential: serde_json::Value,
        now: SystemTime,
    ) -> Response {
        let gone = || {
            Response::error(
                ErrorCode::NotFound,
                "no such ceremony (already answered or expired): run the command again",
            )
        };
        let Some(view) = self.gate.view(id) else {
            return gone();
        };
        let parsed = match &view.kind {
            Kind::Register { .. } => {
                serde_json::from_value::<RegisterPublicKeyCredential>(credential)
                    .map(Answer::Register)
                    .map_err(|e| format!("malformed registration: {e}"))
            }
            Kind::Approve { .. } => serde_json::from_value::<PublicKeyCredential>(credential)
                .map(|c| Answer::Approve(Box::new(c)))
                .map_err(|e| format!("malformed assertion: {e}")),
        };
        let answer = match parsed {
            Ok(a) => a,
            Err(msg) => return Response::error(ErrorCode::BadRequest, msg),
        };
        let Ok(cid) = id.parse() else { return gone() };
        let Some((kind, mfa_code)) = self.gate.claim(id) else {
            return gone();
        };
        let outcome = match (kind, answer) {
            (Kind::Register { .. }, Answer::Register(cred)) => {
                self.finish_registration(cid, &cred, now).await
            }
            (Kind::Approve { role }, Answer::Approve(cred)) => match gate::key_add_name(&role) {
                Some(name) => {
                    let leader = self.gate.leader(id).unwrap_or(0);
                    self.finish_key_add_approval(cid, &role, name, &cred, leader, now)
                        .await
                }
                None => self.finish_approval(cid, &role, &cred, mfa_code, now).await,
            },
            _ => Response::error(
                ErrorCode::BadRequest,
                "the answer does not match the ceremony",
            ),
        };
        self.gate.finish(id, outcome.clone());
        outcome
    }

    async fn finish_registration(
        &self,
        cid: crate::approval::CeremonyId,
        cred: &RegisterPublicKeyCredential,
        now: SystemTime,
    ) -> Response {
        match self.approver.finish_registration(cid, cred, now) {
            Ok(k) => {
                tracing::info!(key = %k.name, "security key registered");
                Response::KeyAdded { key: key_info(&k) }
            }
            Err(e) => {
                tracing::warn!(code = e.code(), "key registration refused");
                tokio::time::sleep(self.approver.failure_delay()).await;
                approval_error(&e)
            }
        }
    }

    /// An existing key authorized adding `name`: answer with the registration challenge.
    async fn finish_key_add_approval(
        &self,
        cid: crate::approval::CeremonyId,
        role: &str,
        name: &str,
        cred: &PublicKeyCredential,
        leader: u64,
        now: SystemTime,
    ) -> Response {
        match self.approver.finish_approval(cid, role, cred, now) {
            Ok(approval) => {
                tracing::info!(
                    new_key = name,
                    by = approval.key_name(),
                    "adding a key was authorized"
                );
                drop(approval);
                self.registration_challenge(name, leader, now)
            }
            Err(e) => {
                tracing::warn!(
                    new_key = name,
                    code = e.code(),
                    "authorization to add a key refused"
                );
                tokio::time::sleep(self.approver.failure_delay()).await;
                approval_error(&e)
            }
        }
    }

    async fn finish_approval(
        &self,
        cid: crate::approval::CeremonyId,
        role: &str,
        cred: &PublicKeyCredential,
        mfa_code: Option<Secret>,
        now: SystemTime,
    ) -> Response {
        let approval = match self.approver.finish_approval(cid, role, cred, now) {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(role, code = e.code(), "approval refused");
                tokio::time::sleep(self.approver.failure_delay()).await;
                return approval_error(&e);
            }
        };
        tracing::info!(
            role,
            key = approval.key_name(),
            "touch verified; opening the session"
        );
        let code = mfa_code.map(|c| SecretString::from(c.expose().to_owned()));
        match self.sessions.open(role, approval, code, now).await {
            Ok(info) => {
                self.pending.resolve(role);
                Response::Opened {
                    role: role.to_owned(),
                    expires_at: info.expires_at,
                }
            }
            Err(e) => {
                tracing::warn!(role, code = e.code(), "session did not open");
                let mut r = session_error(&e);
                if let Response::Error { message, .. } = &mut r {
                    *message =
                        format!("your key was accepted, but the session did not open: {message}");
                }
                r
            }
        }
    }

    fn issue(
        &self,
        binding: Binding,
        purpose: &str,
        scoped: Option<&mut Conn>,
        now: SystemTime,
    ) -> Response {
        match self.tokens.issue(binding, purpose, now) {
            Ok((id, token)) => {
                if let Some(conn) = scoped {
                    conn.scoped_tokens.push(id);
                }
                Response::Token {
                    token: Secret::new(token.expose_secret()),
                    token_id: id.to_string(),
                    uri: format!(
                        "http://{}{}",
                        self.facts.http_addr,
                        crate::endpoint::ECS_PATH
                    ),
                }
            }
            Err(e) => Response::error(ErrorCode::Internal, format!("random generator failed: {e}")),
        }
    }

    async fn credentials(&self, role: &str, conn: &Conn, now: SystemTime) -> Response {
        let result = self.sessions.credentials(role, now).await;
        let (outcome, reason) = match &result {
            Ok(_) => (Outcome::Served, None),
            Err(_) => (Outcome::Refused, Some("not_approved")),
        };
        if let Some(ep) = self.endpoint.get() {
            ep.audit.record(
                now,
                Event {
                    channel: "credential_process",
                    role: Some(role.into()),
                    token_id: None,
                    origin: conn.origin(),
                    outcome,
                    reason,
                },
            );
        }
        match result {
            Ok(c) => Response::Credentials {
                access_key_id: c.access_key_id.clone(),
                secret_access_key: Secret::new(c.secret_access_key.expose_secret()),
                session_token: Secret::new(c.session_token.expose_secret()),
                expiration: rfc3339(c.expiration),
            },
            Err(e) => session_error(&e),
        }
    }

    async fn source_add(&self, name: String, key_id: String, secret: Secret) -> Response {
        let ks = self.keystore.clone();
        let creds = SourceCredentials {
            access_key_id: key_id,
            secret_access_key: SecretString::from(secret.expose().to_owned()),
        };
        drop(secret);
        let r = tokio::task::spawn_blocking(move || ks.get()?.put(&name, &creds)).await;
        match r {
            Ok(Ok(())) => Response::Ok,
            Ok(Err(e)) => keystore_error(&e),
            Err(e) => Response::error(ErrorCode::Internal, format!("keyring task failed: {e}")),
        }
    }

    async fn source_import(
        &self,
        name: String,
        path: String,
        profile: String,
        remove: bool,
    ) -> Response {
        let ks = self.keystore.clone();
        let r = tokio::task::spawn_blocking(move || -> Result<Response, Box<Response>> {
            let path = std::path::PathBuf::from(path);
            let entry = crate::profiles::read_credentials_file(&path, &profile)
                .map_err(|e| Box::new(Response::error(ErrorCode::Profile, e.to_string())))?
                .ok_or_else(|| {
                    Box::new(Response::error(
                        ErrorCode::NotFound,
                        format!(
                            "no profile [{profile}] with aws_access_key_id and aws_secret_access_key in {}: check the name with `grep '\\[' {}`",
                            path.display(),
                            path.display()
                        ),
                    ))
                })?;
            let store = ks.get().map_err(|e| Box::new(keystore_error(&e)))?;
            store.put(&name, &entry.credentials).map_err(|e| Box::new(keystore_error(&e)))?;
            if remove {
                crate::keystore::rewrite_credentials_file_without(&path, &profile)
                    .map_err(|e| Box::new(keystore_error(&e)))?;
            }
            Ok(Response::Ok)
        })
        .await;
        match r {
            Ok(Ok(resp)) => resp,
            Ok(Err(resp)) => *resp,
            Err(e) => Response::error(ErrorCode::Internal, format!("keyring task failed: {e}")),
        }
    }

    async fn source_list(&self) -> Response {
        let ks = self.keystore.clone();
        let r = tokio::task::spawn_blocking(move || -> Result<Vec<SourceInfo>, KeystoreError> {
            let store = ks.get()?;
            let mut out = Vec::new();
            for name in store.list()? {
                let suffix = match store.get(&name) {
                    Ok(c) => c
                        .access_key_id
                        .chars()
                        .rev()
                        .take(4)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect(),
                    Err(_) => "????".into(),
                };
                out.push(SourceInfo {
                    name,
                    key_id_suffix: suffix,
                });
            }
            Ok(out)
        })
        .await;
        match r {
            Ok(Ok(sources)) => Response::Sources { sources },
            Ok(Err(e)) => keystore_error(&e),
            Err(e) => Response::error(ErrorCode::Internal, format!("keyring task failed: {e}")),
        }
    }

    async fn source_remove(&self, name: String) -> Response {
        let ks = self.keystore.clone();
        match tokio::task::spawn_blocking(move || ks.get()?.delete(&name)).await {
            Ok(Ok(())) => Response::Ok,
            Ok(Err(e)) => keystore_error(&e),
            Err(e) => Response::error(ErrorCode::Internal, format!("keyring task failed: {e}")),
        }
    }

    fn roles(&self, now: SystemTime) -> Response {
        if let Err(r) = self.reload_profiles() {
            return *r;
        }
        Response::Roles {
            roles: self.role_infos(now, false),
        }
    }

    /// Roles with their session state; with `open_only`, just the open ones.
    pub fn role_infos(&self, now: SystemTime, open_only: bool) -> Vec<RoleInfo> {
        let status = self.sessions.status(now);
        let profiles = self.sessions.profiles();
        let mut out = Vec::new();
        for summary in profiles.roles() {
            let session = status
                .iter()
                .find(|s| s.role == summary.name)
                .map(|s| SessionState {
                    expires_at: s.session_expires_at,
                    remaining_secs: s.session_remaining_secs,
                    credentials_expire_at: s.credentials_expire_at,
                    next_refresh: s.next_refresh,
                    sts_calls: s.sts_calls,
                    refreshes: s.refreshes,
                    failures: s.failures,
                    last_error: s.last_error.clone(),
                });
            if open_only && session.is_none() {
                continue;
            }
            let (chain, mfa) = match profiles.resolve(&summary.name) {
                Ok(spec) => {
                    let mut chain = vec![spec.source.clone()];
                    chain.extend(spec.chain.iter().map(|h| h.profile.clone()));
                    (chain, spec.mfa_serial.is_some())
                }
                Err(_) => (Vec::new(), false),
            };
            out.push(RoleInfo {
                name: summary.name,
                role_arn: summary.role_arn,
                chain,
                mfa,
                session,
            });
        }
        out
    }

    /// The full status report.
    pub fn status(&self, now: SystemTime) -> credagent_proto::StatusInfo {
        let mut info = self.facts.status();
        info.keys = self.approver.keys().len();
        info.sessions = self.role_infos(now, true);
        info.imds_role = self
            .endpoint
            .get()
            .and_then(|ep| ep.imds_role().as_deref().map(str::to_owned));
        info.pending = self.pending.list(now);
        info
    }
}

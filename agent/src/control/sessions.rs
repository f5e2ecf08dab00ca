//! Role and session requests: list roles, open a role (the touch), answer or await a
//! ceremony, and `credential-process` credentials.

use std::time::SystemTime;

use credagent_proto::{ErrorCode, Response, RoleInfo, Secret, SessionState};
use secrecy::ExposeSecret;

use super::{Conn, Control};
use crate::audit::{rfc3339, Event, Outcome};

impl Control {
    /// Every way a role opens (already open, this client's touch, a touch another client
    /// led, the browser page) ends in `Opened`: the region is added here, once, from the
    /// profiles as they are now.
    pub(super) fn with_region(&self, mut reply: Response) -> Response {
        if let Response::Opened {
            role,
            region,
            account_id,
            ..
        } = &mut reply
        {
            if let Ok(spec) = self.sessions.profiles().resolve(role) {
                *account_id = spec.account_id().map(str::to_owned);
                *region = spec.region;
            }
        }
        reply
    }

    /// The answer to anything but a touch for a session held for running jobs.
    pub(super) fn held_refusal(&self, role: &str) -> Response {
        Response::error(
            ErrorCode::ApprovalFailed,
            format!(
                "role {role} is open only for the `credctl exec` jobs that were running when the \
                 screen locked or the session went idle: touch your key to open it again \
                 (`credctl use {role}`)"
            ),
        )
    }

    /// For a role only some programs may use: the refusal of a control request that hands its
    /// credentials out (`credential_process`, `export`, `console`). Whoever gets them cannot be
    /// told: the program that ran credctl may `exec` another the moment it did (an attack
    /// review did, with curl), and `export` hands them to a terminal. `None`: allowed.
    fn program_refusal(&self, role: &str) -> Option<Response> {
        self.sessions.restricts(role).then(|| {
            Response::error(
                ErrorCode::Policy,
                format!(
                    "role {role} serves only the programs config.toml lets use it, which \
                     credential_process, `credctl export` and `credctl console` cannot check (the \
                     program that receives the credentials is not known): run the program with \
                     the role's endpoint instead (`credctl exec {role} -- PROGRAM`, or `credctl \
                     use {role}` in a shell from `credctl start`)"
                ),
            )
        })
    }

    /// `credctl allow`: the touch that lets process `pid` (with `program_wide`, every process
    /// of its program) use `role`'s open session, which the role's program rules refuse it.
    pub(super) async fn allow_program(
        &self,
        role: &str,
        pid: i32,
        program_wide: bool,
        conn: &Conn,
        now: SystemTime,
    ) -> Response {
        if let Err(e) = crate::approval::check_role_name(role) {
            return Response::from(e.refusal());
        }
        if !self.sessions.restricts(role) {
            return Response::error(
                ErrorCode::Refused,
                format!(
                    "role {role} has no program rules in config.toml ([roles.{role}]): every \
                     program may use its session already"
                ),
            );
        }
        let open = self
            .sessions
            .status(now)
            .into_iter()
            .any(|s| s.role == role && !s.held);
        if !open {
            return Response::error(
                ErrorCode::NotFound,
                format!(
                    "role {role} has no open session: open it first (`credctl use {role}`); a \
                     program is allowed for one session"
                ),
            );
        }
        let Some(process) = crate::procs::ProcessId::of(pid) else {
            return Response::error(
                ErrorCode::NotFound,
                format!("no process {pid} runs: check the pid (`credctl status` lists those that asked)"),
            );
        };
        // Only the very process that asked (its pid *and* start time), so a process that took
        // the pid of one that exited gets nothing from a touch meant for that one.
        let asked = self.pending.program_ask(role);
        if asked.as_ref().map(|a| a.process) != Some(process) {
            return Response::error(
                ErrorCode::NotFound,
                format!(
                    "process {pid} is not the one waiting for role {role} (it never asked, or the \
                     one that asked exited and another now has its pid): `credctl status` lists \
                     the process waiting; run it again if it exited"
                ),
            );
        }
        let Ok(exe) = std::fs::read_link(format!("/proc/{pid}/exe")) else {
            return Response::error(
                ErrorCode::NotFound,
                format!("the program of process {pid} cannot be read (has it exited?)"),
            );
        };
        // A grant for every process of a program is a grant for whatever that file becomes.
        if program_wide {
            if let Some(why) = crate::sessions::writable_by_others_than_root(&exe) {
                return Response::error(
                    ErrorCode::Policy,
                    format!(
                        "not for every process of {}: {why}, so any code written there would \
                         be let in; allow this process only (without --program), or install the \
                         program where only root writes",
                        crate::util::printable(&exe.display().to_string())
                    ),
                );
            }
        }
        // Shown before the touch: nothing the process chose may steer the terminal.
        let exe_shown = crate::util::printable(&exe.display().to_string());
        let command = crate::util::printable(&process.command_line());
        let shown = if program_wide {
            format!(
                "to let every process of {exe_shown} use role {role} until its session ends \
                 (asked for by pid {pid}: {command})"
            )
        } else {
            format!(
                "to let {exe_shown} (pid {pid}: {command}) use role {role} until its session ends"
            )
        };
        let purpose = crate::approval::Purpose::AllowProgram {
            role: role.to_owned(),
            exe,
            process: (!program_wide).then_some(process),
            shown,
        };
        self.approvals
            .allow_program_start(purpose, &conn.requester(), now)
            .await
            .into()
    }

    /// `credctl roles`: the roles of `~/.aws/config` as it is now, with their sessions.
    pub(super) fn roles(&self, now: SystemTime) -> Response {
        match self.fresh_profiles() {
            Ok(()) => Response::Roles {
                roles: self.role_infos(now, false),
                aws_config: self.aws_config.path().map(|p| p.display().to_string()),
            },
            Err(r) => *r,
        }
    }

    /// `credctl console`: a sign-in link for `role`'s session, audited.
    pub(super) async fn console_request(
        &self,
        role: &str,
        destination: Option<&str>,
        region: Option<&str>,
        conn: &Conn,
        now: SystemTime,
    ) -> Response {
        let reply = match self.program_refusal(role) {
            Some(refused) => refused,
            None => self.console(role, destination, region, now).await,
        };
        let refused = match &reply {
            Response::Error { code, .. } => Some(code.as_str()),
            _ => None,
        };
        self.audit(
            now,
            Event::action("console", &conn.peer(), refused).role(role),
        );
        reply
    }

    /// Opens `role` if needed: already open → `Opened`; else lead or follow the role's ceremony.
    /// `renew`: a touch even if it is open, for a session from now (a running job's session
    /// nearing its end).
    pub(super) async fn open(
        &self,
        role: &str,
        mfa_code: Option<Secret>,
        (accept_change, renew): (bool, bool),
        conn: &Conn,
        now: SystemTime,
    ) -> Response {
        // Every check that needs no touch comes before the touch.
        if let Err(e) = crate::approval::check_role_name(role) {
            return Response::from(e.refusal());
        }
        if let Err(r) = self.fresh_profiles() {
            return *r;
        }
        // A session held for running jobs (the screen locked while they ran) is open for them
        // only: this requester needs a touch, which opens it for everyone again.
        if let Some(st) = self
            .sessions
            .status(now)
            .into_iter()
            .find(|s| s.role == role && !s.held && !renew)
        {
            // The session is open: serve it, fetching at once if its credentials ran out (a
            // laptop resuming from sleep) — a valid session never asks for another touch.
            return match self.sessions.credentials(role, now).await {
                Ok(_) => Response::Opened {
                    role: role.to_owned(),
                    expires_at: st.session_expires_at,
                    region: None,
                    account_id: None,
                },
                Err(e) => Response::from(e.refusal()),
            };
        }
        tracing::debug!(role, "open: no usable session; checking MFA");
        match self.sessions.mfa_needed(role, now) {
            Err(e) => return Response::from(e.refusal()),
            Ok(Some(serial)) if mfa_code.is_none() => {
                return Response::error(
                    ErrorCode::MfaRequired,
                    format!("role {role} needs a code from MFA device {serial}"),
                )
            }
            Ok(_) => {}
        }
        let key_id = match self.source_is_stored(role).await {
            Ok(key_id) => key_id,
            Err(r) => return *r,
        };
        let target = match self.sessions.profiles().resolve(role) {
            Ok(spec) => spec.target_with_key(key_id.as_deref()),
            Err(e) => return Response::error(ErrorCode::Profile, e.to_string()),
        };
        // A role whose ARN or chain changed since it was last approved, or settings changed
        // behind the agent's back, are not opened silently: shown now, before the touch (which
        // checks them again against the record only the vault's key can write).
        let changes = self.approvals.preview_changes(Some((role, &target)));
        if !changes.is_empty() && !accept_change {
            self.audit(
                now,
                Event::action("change_refused", &conn.peer(), Some("not_confirmed"))
                    .role(role)
                    .subject(&crate::approval::join_changes(&changes)),
            );
            return Response::error(
                ErrorCode::Refused,
                crate::approval::changes_before_touch(&changes, Some(role)),
            );
        }
        self.approvals
            .open(
                role,
                target,
                mfa_code.map(|c| secrecy::SecretString::from(c.expose().to_owned())),
                accept_change,
                &conn.requester(),
                now,
            )
            .await
            .into()
    }

    /// Refuses, before the touch, a role whose source is not in the keyring: the touch would be
    /// asked for nothing.
    /// Returns the access key id the source holds (for an access-key source), which the touch
    /// vouches for with the role.
    async fn source_is_stored(&self, role: &str) -> Result<Option<String>, Box<Response>> {
        let Ok(spec) = self.sessions.profiles().resolve(role) else {
            // resolve errors are reported by mfa_needed already.
            return Ok(None);
        };
        if let Some(sso) = &spec.sso {
            // Log in first, then touch: the order the person sees.
            if self.logins.usable(sso, std::time::SystemTime::now()) {
                return Ok(None);
            }
            return Err(Box::new(Response::error(
                ErrorCode::LoginRequired,
                format!(
                    "role {role} comes from IAM Identity Center ({}), and there is no login \
                     for it: run `credctl login {}`",
                    sso.start_url,
                    sso.session.as_deref().unwrap_or(&spec.source)
                ),
            )));
        }
        let source = spec.source.clone();
        let stored = source.clone();
        match self.sources.with(move |k| k.list()).await {
            Ok(names) if names.contains(&source) => Ok(self
                .sources
                .with(move |k| k.get_stored(&stored))
                .await
                .ok()
                .map(|s| match s {
                    crate::sources::Stored::Sealed { access_key_id, .. } => access_key_id,
                    crate::sources::Stored::Plain(creds) => creds.access_key_id.clone(),
                })),
            Ok(_) => {
                let missing = crate::profiles::locate_missing_source(
                    crate::sources::SourceError::NotFound {
                        backend: self.sources.backend(),
                        name: source,
                    },
                    &crate::profiles::process_env,
                );
                Err(Box::new(
                    crate::sessions::SessionError::from_source_error(&spec, &missing)
                        .refusal()
                        .into(),
                ))
            }
            // The keyring's own trouble (locked, absent) is reported when the session opens.
            Err(_) => Ok(None),
        }
    }

    /// A one-time console link for `role`'s open session.
    async fn console(
        &self,
        role: &str,
        destination: Option<&str>,
        region: Option<&str>,
        now: SystemTime,
    ) -> Response {
        let creds = match self.sessions.credentials(role, now).await {
            Ok(c) => c,
            Err(e) => return Response::from(e.refusal()),
        };
        let spec = match self.sessions.profiles().resolve(role) {
            Ok(s) => s,
            Err(e) => return Response::error(ErrorCode::Profile, e.to_string()),
        };
        // The last AssumeRole was signed with temporary credentials (role → role, Identity
        // Center → role, an MFA session → role): the federation endpoint refuses a
        // SessionDuration for such credentials (IAM User Guide, "Enabling custom identity broker
        // access to the AWS console").
        let chained = spec.is_chained();
        let remaining = self
            .sessions
            .status(now)
            .into_iter()
            .find(|s| s.role == role)
            .map_or(0, |s| s.session_remaining_secs);
        let duration =
            crate::console::session_duration(std::time::Duration::from_secs(remaining), chained);
        let region = region.or(spec.region.as_deref());
        let dest = match crate::console::destination(destination, region) {
            Ok(d) => d,
            Err(e) => return Response::error(ErrorCode::BadRequest, e.to_string()),
        };
        match self
            .consoles
            .link(&creds, duration, &dest, region, now)
            .await
        {
            Ok((url, expires)) => Response::ConsoleLink {
                url,
                expires_at: crate::util::unix_secs(expires),
            },
            Err(e) => Response::error(ErrorCode::StsUnavailable, e.to_string()),
        }
    }

    pub(super) async fn credentials(
        &self,
        role: &str,
        export: bool,
        conn: &Conn,
        now: SystemTime,
    ) -> Response {
        if let Some(refused) = self.program_refusal(role) {
            self.audit(
                now,
                Event::action(
                    "credential_process",
                    &conn.peer(),
                    Some("program_not_allowed"),
                )
                .role(role),
            );
            return refused;
        }
        let result = self.sessions.credentials(role, now).await;
        let (outcome, reason) = match &result {
            Ok(_) => (Outcome::Served, None),
            Err(_) => (Outcome::Refused, Some("not_approved")),
        };
        self.audit(
            now,
            Event {
                channel: if export {
                    "export"
                } else {
                    "credential_process"
                },
                role: Some(role.into()),
                token_id: None,
                origin: conn.origin(),
                outcome,
                reason,
                subject: None,
                // Named when the connection arrived: `credctl export` is gone before the
                // audit writer could look.
                exe: conn.exe.clone(),
            },
        );
        match result {
            Ok(c) => Response::Credentials {
                access_key_id: c.access_key_id.clone(),
                secret_access_key: Secret::new(c.secret_access_key.expose_secret()),
                session_token: Secret::new(c.session_token.expose_secret()),
                expiration: rfc3339(c.expiration),
                account_id: crate::http::endpoint::account_of(&c).map(str::to_owned),
            },
            Err(e) => Response::from(e.refusal()),
        }
    }

    /// Roles with their session state; with `open_only`, just the open ones.
    pub(super) fn role_infos(&self, now: SystemTime, open_only: bool) -> Vec<RoleInfo> {
        let status = self.sessions.status(now);
        let profiles = self.sessions.profiles();
        let exec_tokens: Vec<crate::tokens::TokenView> = self
            .tokens
            .list()
            .into_iter()
            .filter(|t| t.kind == "exec")
            .collect();
        let jobs_of = |role: &str| -> Vec<String> {
            exec_tokens
                .iter()
                .filter(|t| t.role.as_deref() == Some(role))
                .filter_map(|t| t.holder)
                .map(|h| match h.exe() {
                    Some(exe) => format!("pid {} ({exe})", h.pid),
                    None => format!("pid {}", h.pid),
                })
                .collect()
        };
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
                    last_error_message: s.last_error_message.clone(),
                    clock_skew_secs: s.clock_skew_secs,
                    // Set below when the profile now says something else.
                    serves_approved: Some(s.target.clone()),
                    held: s.held,
                    jobs: if s.jobs > 0 {
                        jobs_of(&s.role)
                    } else {
                        Vec::new()
                    },
                });
            if open_only && session.is_none() {
                continue;
            }
            let mut session = session;
            let (chain, mfa, region, sso) = match profiles.resolve(&summary.name) {
                Ok(spec) => {
                    if let Some(s) = session.as_mut() {
                        if s.serves_approved.as_deref() == Some(spec.target().as_str()) {
                            s.serves_approved = None;
                        }
                    }
                    let mut chain = vec![spec.source.clone()];
                    chain.extend(spec.chain.iter().map(|h| h.profile.clone()));
                    let sso = spec.sso.as_ref().map(|s| credagent_proto::SsoState {
                        login: s.session.clone().unwrap_or_else(|| s.start_url.clone()),
                        logged_in: self.logins.usable(s, now),
                    });
                    (chain, spec.mfa_serial.is_some(), spec.region, sso)
                }
                Err(_) => (Vec::new(), false, None, None),
            };
            let problem = summary.error.clone().or_else(|| {
                crate::approval::check_role_name(&summary.name)
                    .err()
                    .map(|e| e.to_string())
            });
            out.push(RoleInfo {
                name: summary.name,
                role_arn: summary.role_arn,
                sso_role: summary.sso_role.map(|(account_id, permission_set)| {
                    credagent_proto::SsoRole {
                        account_id,
                        permission_set,
                    }
                }),
                chain,
                mfa,
                region,
                session,
                sso,
                problem,
            });
        }
        out
    }
}

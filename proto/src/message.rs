//! Request and response messages of the control protocol, as internally tagged JSON objects.

use serde::{Deserialize, Serialize};

use crate::Secret;

/// A message from `credctl` to the agent.
///
/// Internally tagged by `type`. A request type this agent does not know decodes as
/// [`Request::Unknown`] and is answered with [`ErrorCode::UnknownRequest`] on a connection that
/// stays open, so a newer client can probe an older agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    /// Must be the first request on every connection.
    Hello {
        /// The client's [`crate::PROTOCOL_VERSION`].
        protocol_version: u32,
        /// The client's package version, for messages only.
        client_version: String,
    },
    /// Describe the running agent.
    Status,
    /// Shut the agent down gracefully.
    Stop,
    /// End every role session and wipe every cached credential (`credctl lock`).
    Lock,

    /// `credctl allow`: let process `pid` (with `program`, every process of its program) use
    /// `role`'s open session although the role's program rules (`[roles.NAME]`) refuse it,
    /// until that session ends. Answered with a [`Response::Challenge`], then `Ok`.
    AllowProgram {
        role: String,
        pid: i32,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        program: bool,
    },
    /// Begin registering a FIDO credential named `name`: answered with [`Response::Challenge`].
    KeyAddStart {
        name: String,
        /// For the first key: its touch may vouch for settings of `config.toml` that send
        /// secrets elsewhere than AWS or weaken the approval (shown before the touch).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        accept_change: bool,
    },
    /// Finish a registration with the authenticator's `RegisterPublicKeyCredential` JSON.
    KeyAddFinish {
        ceremony_id: String,
        credential: serde_json::Value,
    },
    /// List registered keys.
    KeyList,
    /// Remove a key; the last one only with `force`.
    KeyRemove { name: String, force: bool },
    /// A touch that opens nothing: it unwraps the vault (so new sources and logins may be
    /// sealed to it) and checks the agent's settings against what touches confirmed before;
    /// with `accept_change`, it confirms the changes it was shown. Answered with a
    /// [`Response::Challenge`], then `Ok`.
    Confirm {
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        accept_change: bool,
    },

    /// `credctl reload`: read `config.toml` again and put its settings in force without ending
    /// a session or changing the port. Settings a touch vouches for (all but `listen` and
    /// `keyring`, which apply at the next start) take one touch that is shown what changed:
    /// answered with a [`Response::Challenge`], then `Ok`; with nothing to confirm,
    /// [`Response::Reloaded`].
    Reload,

    /// `credctl key pin`: move the keys' copies of the vault that still open with a touch alone
    /// to their PIN. The challenge names those keys (`PRF_WITHOUT_UV`): the answer carries a
    /// touch without the PIN, which opens the old copy, and the touch with it, which wraps the
    /// vault anew. Only this request ever asks for a touch without the PIN. Answered with a
    /// [`Response::Challenge`], then `Ok`.
    KeyPin {
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        accept_change: bool,
    },

    /// Store a source's long-lived keys in the keyring.
    SourceAdd {
        name: String,
        access_key_id: String,
        secret_access_key: Secret,
    },
    /// Store a source's keys taken from `profile` of the credentials file at `path`, and with
    /// `remove_from_file` rewrite that file without the profile.
    SourceImport {
        name: String,
        path: String,
        profile: String,
        remove_from_file: bool,
    },
    /// List sources (names and the last 4 characters of each key id).
    SourceList,
    /// Remove a source from the keyring.
    SourceRemove { name: String },

    /// List roles from `~/.aws/config` with their session state.
    Roles,
    /// Open a session for `role` if none is open. Answered with [`Response::Opened`] (already
    /// open, or opened by a ceremony another client led), [`Response::Challenge`] (this client
    /// must take the touch), or an error (`mfa_required`: ask for a code and open again).
    Open {
        role: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mfa_code: Option<Secret>,
        /// Open the role although its ARN or chain changed since it was last approved (the
        /// person saw the change and confirms it).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        accept_change: bool,
        /// Touch even if the session is open, for a new one from now (a running job's session
        /// nearing its end: see [`PendingInfo::ends_at`]).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        renew: bool,
    },
    /// Finish an approval with the authenticator's `PublicKeyCredential` JSON.
    Approve {
        ceremony_id: String,
        credential: serde_json::Value,
    },
    /// Wait for a ceremony answered elsewhere (the browser page) to finish.
    AwaitCeremony { ceremony_id: String },

    /// Issue a token for a shell (`credctl start`): it serves the role `Use` makes current.
    /// With `holder` (the shell's pid: the requester or one of its ancestors), only that
    /// process and its descendants may present it; without, anyone who holds it may.
    TokenShell {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        holder: Option<i32>,
    },
    /// Issue a token bound to `role` only. With `scoped`, the token is revoked when this
    /// control connection closes, and only the requester and its descendants may present it
    /// (`credctl exec`); else `holder` binds it as for `TokenShell`.
    TokenForRole {
        role: String,
        scoped: bool,
        purpose: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        holder: Option<i32>,
    },
    /// `credctl prompt`: the role `token` is served now, its time left, and how many
    /// approvals wait. Cheap: a shell asks on every prompt.
    Prompt { token: Secret },
    /// Make `role` current for the shell token `token` (`credctl use`).
    Use { token: Secret, role: String },
    /// The role's current credentials, for `credential_process` (or `credctl export`, with
    /// `export`: the audit names which).
    Credentials {
        role: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        export: bool,
    },
    /// Choose the one role IMDS serves (`None`: IMDS serves nothing).
    Imds { role: Option<String> },
    /// Pending approvals (SDK requests for roles with no session).
    Pending,
    /// The live endpoint tokens.
    TokenList,
    /// Revoke the endpoint token whose public id is `id`.
    TokenRevoke { id: String },

    /// Start (or join) the IAM Identity Center login `login` (an `[sso-session]` name, or a
    /// profile that uses one): answered with [`Response::LoginPending`] (what the person must
    /// do) or [`Response::LoggedIn`] (a usable login exists already).
    Login {
        login: String,
        /// The device code flow, for machines without a browser; else PKCE in the browser.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        device_code: bool,
    },
    /// Wait for the login under way for `login` to finish.
    AwaitLogin { login: String },
    /// Revoke and forget the tokens of `login`.
    Logout { login: String },
    /// A one-time link that signs in to the AWS console with `role`'s open session:
    /// answered with [`Response::ConsoleLink`].
    Console {
        role: String,
        /// An https URL, or a service name (`s3`); the console home page by default.
        #[serde(default)]
        destination: Option<String>,
        /// The console's region; the role's by default.
        #[serde(default)]
        region: Option<String>,
    },
    /// The accounts and permission sets the login `login` can reach (ListAccounts,
    /// ListAccountRoles): answered with [`Response::SsoAccounts`].
    SsoDiscover { login: String },

    /// Any request type this build does not know.
    #[serde(other)]
    Unknown,
}

/// A WebAuthn ceremony for the client to answer: hand `options` to the authenticator with
/// `origin`, then send the result back with `ceremony_id`. The client reads it as sent; it
/// never copies it field by field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Challenge {
    pub ceremony_id: String,
    /// `http://localhost:PORT`, the origin the agent verifies.
    pub origin: String,
    /// The role the touch opens; `None` for a key registration. An assertion is asked for
    /// whenever this is `Some`.
    pub role: Option<String>,
    /// What the touch is for, in words, when it is not opening a role (e.g. authorizing a
    /// new key with an existing one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
    /// Session length the touch grants, in seconds (for the prompt).
    pub session_secs: Option<u64>,
    /// What the touch opens, resolved: the source and every role ARN of the chain (for the
    /// prompt: a touch approves this, not a profile name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The browser approval page for this ceremony.
    pub approve_url: String,
    /// webauthn-rs `CreationChallengeResponse` or `RequestChallengeResponse` JSON.
    pub options: serde_json::Value,
    /// What kind of touch this is, so a client need not read it from `role`'s wording
    /// (absent from older agents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<ChallengeStep>,
}

impl Challenge {
    /// Whether this is the new key's sealing touch of `key add`. An older agent says so only in
    /// its pseudo-role (`key seal: NAME`).
    pub fn seals_new_key(&self) -> bool {
        match self.step {
            Some(step) => step == ChallengeStep::SealNewKey,
            None => self
                .role
                .as_deref()
                .is_some_and(|r| r.starts_with("key seal: ")),
        }
    }
}

/// A message from the agent to `credctl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    /// Answer to [`Request::Hello`] when the versions match.
    Hello {
        protocol_version: u32,
        agent_version: String,
        /// The agent's process id, so a second agent can say which one is running.
        pid: u32,
    },
    /// Answer to [`Request::Status`].
    Status(Box<StatusInfo>),
    /// Answer to [`Request::Stop`]; the agent closes its listeners right after sending it.
    Stopping,
    /// A request that needs no data back succeeded.
    Ok,
    /// Answer to [`Request::Prompt`].
    Prompt {
        /// The role the shell's token is served (`None`: none chosen, or the token is unknown).
        role: Option<String>,
        /// Seconds its session has left (`None`: not open).
        remaining_secs: Option<u64>,
        /// Roles waiting for an approval.
        pending: u32,
        /// Whether the token is known to this agent.
        known: bool,
    },
    /// Answer to [`Request::Reload`] when no touch was needed: nothing a touch vouches for
    /// changed. `restart` names the settings that differ but apply only at the next start.
    Reloaded {
        #[serde(default)]
        restart: Vec<String>,
    },
    /// An IAM Identity Center login is under way: open `authorize_url` in a browser (PKCE), or
    /// enter `user_code` at `verification_uri` (device code). Then send `AwaitLogin`.
    LoginPending {
        login: String,
        #[serde(default)]
        authorize_url: Option<String>,
        #[serde(default)]
        user_code: Option<String>,
        #[serde(default)]
        verification_uri: Option<String>,
        #[serde(default)]
        verification_uri_complete: Option<String>,
        /// Unix seconds when the login attempt expires.
        expires_at: u64,
    },
    /// The login `login` is usable; its access token lasts until `expires_at` (Unix seconds)
    /// and is refreshed in the background while a refresh token is open.
    LoggedIn {
        login: String,
        expires_at: u64,
    },
    /// Answer to [`Request::Logout`]: the login's tokens are revoked and forgotten, and the role
    /// sessions opened on it ended (their names).
    LoggedOut {
        login: String,
        #[serde(default)]
        ended: Vec<String>,
    },
    /// A one-time loopback link (`http://127.0.0.1:PORT/console/ID`) that redirects once to the
    /// console's sign-in; it expires at `expires_at` (Unix seconds).
    ConsoleLink {
        url: String,
        expires_at: u64,
    },
    /// Answer to [`Request::SsoDiscover`].
    SsoAccounts {
        /// The sso-session name, when the login has one.
        session: Option<String>,
        start_url: String,
        sso_region: String,
        accounts: Vec<SsoAccountInfo>,
    },
    /// A WebAuthn ceremony for this client to answer (see [`Challenge`]).
    Challenge(Box<Challenge>),
    /// A key was registered.
    KeyAdded {
        key: KeyInfo,
    },
    Keys {
        keys: Vec<KeyInfo>,
    },
    Sources {
        sources: Vec<SourceInfo>,
    },
    Roles {
        roles: Vec<RoleInfo>,
        /// The AWS config file the agent read them from.
        #[serde(default)]
        aws_config: Option<String>,
    },
    /// A session for `role` is open until `expires_at` (Unix seconds).
    Opened {
        role: String,
        expires_at: u64,
        /// The role's region as `~/.aws/config` says it: the role profile's `region`, else the
        /// nearest profile's on its chain. `None` from agents before this field, and for roles
        /// with no region anywhere on their chain.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        region: Option<String>,
        /// The account the role lives in (from its ARN or permission set), for
        /// `AWS_ACCOUNT_ID`. `None` from agents before this field.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        account_id: Option<String>,
    },
    /// A token and how to reach the endpoint with it.
    Token {
        token: Secret,
        token_id: String,
        /// `http://127.0.0.1:PORT/v1/credentials`.
        uri: String,
    },
    /// Credentials for `credential_process`.
    Credentials {
        access_key_id: String,
        secret_access_key: Secret,
        session_token: Secret,
        /// `YYYY-MM-DDTHH:MM:SSZ`.
        expiration: String,
        /// The credentials' account, which SDKs read as `AccountId` (account-based endpoints).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        account_id: Option<String>,
    },
    Pending {
        pending: Vec<PendingInfo>,
    },
    /// Answer to [`Request::TokenList`].
    Tokens {
        tokens: Vec<TokenInfo>,
    },
    /// A request failed. `code` is stable and machine-readable; `message` is for people.
    Error {
        code: ErrorCode,
        message: String,
    },
    /// Any response type this build does not know (a newer agent).
    #[serde(other)]
    Unknown,
}

impl Response {
    /// Builds an error response.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Response::Error {
            code,
            message: message.into(),
        }
    }
}

/// One live endpoint token, as `credctl token list` shows it (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    /// The public id (16 hex digits), as in audit lines.
    pub id: String,
    /// "shell", "exec", "env" or "role".
    pub kind: String,
    /// The role it is bound to (exec/env tokens), or the shell's current role.
    pub role: Option<String>,
    /// Unix seconds.
    pub created: u64,
    /// Unix seconds of the last credential request made with it (`None`: never used).
    pub last_used: Option<u64>,
    /// The process whose tree alone may present it (`pid 1234 (/usr/bin/bash)`); `None`:
    /// unbound, anyone who holds it may.
    #[serde(default)]
    pub holder: Option<String>,
}

/// Stable error codes. Never renumber or rename one; add new ones at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The peer speaks another protocol version: restart the agent with the matching build.
    VersionMismatch,
    /// The first request on a connection was not `Hello`.
    HelloRequired,
    /// The frame held JSON that is not a valid request.
    BadRequest,
    /// The frame announced a length over [`crate::MAX_FRAME_LEN`].
    FrameTooLarge,
    /// The request type is not known to this agent.
    UnknownRequest,
    /// The agent is shutting down.
    ShuttingDown,
    /// An unexpected internal failure; the message says more.
    Internal,
    /// No FIDO key is registered: `credctl key add`.
    NoKeys,
    /// The WebAuthn ceremony failed (expired, replayed, wrong role, bad assertion, cloned key…).
    ApprovalFailed,
    /// A named key, source, role or ceremony does not exist.
    NotFound,
    /// The thing to create exists already.
    Exists,
    /// The source needs an MFA code: ask for it and send `Open` again with `mfa_code`.
    MfaRequired,
    /// STS refused (access denied, invalid or expired source key, wrong MFA code).
    StsDenied,
    /// STS could not be reached or kept failing; try again.
    StsUnavailable,
    /// The keyring is locked, missing, or failed.
    Keyring,
    /// `~/.aws/config` is missing, unreadable or inconsistent for this role.
    Profile,
    /// The request is not allowed (e.g. removing the last key without force).
    Refused,
    /// A token is unknown, revoked, or cannot do this.
    BadToken,
    /// The policy refuses this authenticator or key.
    Policy,
    /// A sealed source did not open: only a touch of a key that holds the vault opens it.
    Sealed,
    /// The role's IAM Identity Center login is missing or expired: `credctl login`.
    LoginRequired,
    /// The request hands the agent a secret to seal (a source, an Identity Center login) and
    /// needs a touch of one of your keys on this same connection first (`Confirm`): it proves
    /// the vault the secret goes to is yours.
    TouchRequired,
    /// An error code this build does not know (a newer peer).
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// The wire name of the code, as it appears in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::VersionMismatch => "version_mismatch",
            ErrorCode::HelloRequired => "hello_required",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::FrameTooLarge => "frame_too_large",
            ErrorCode::UnknownRequest => "unknown_request",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::Internal => "internal",
            ErrorCode::NoKeys => "no_keys",
            ErrorCode::ApprovalFailed => "approval_failed",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Exists => "exists",
            ErrorCode::MfaRequired => "mfa_required",
            ErrorCode::StsDenied => "sts_denied",
            ErrorCode::StsUnavailable => "sts_unavailable",
            ErrorCode::Keyring => "keyring",
            ErrorCode::Profile => "profile",
            ErrorCode::Refused => "refused",
            ErrorCode::BadToken => "bad_token",
            ErrorCode::Policy => "policy",
            ErrorCode::Sealed => "sealed",
            ErrorCode::LoginRequired => "login_required",
            ErrorCode::TouchRequired => "touch_required",
            ErrorCode::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A registered FIDO credential, as `credctl key list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInfo {
    pub name: String,
    /// Unix seconds.
    pub created: u64,
    pub last_used: Option<u64>,
    pub counter: u32,
    /// `hardware`, `software` or `unknown`.
    pub kind: String,
    pub aaguid: Option<String>,
    /// Whether the key holds a copy of the vault (its hmac-secret/PRF unwraps it): a touch of
    /// it opens sealed sources. `false`: it approves by policy only ("unsealed").
    #[serde(default)]
    pub sealed: bool,
    /// Whether its copy of the vault opens only with user verification (PIN or biometric).
    /// `false` for a sealed key: a touch alone opens it (made touch-only, or before user
    /// verification was required; it moves at the key's next approval through credctl).
    #[serde(default)]
    pub verified_seal: bool,
}

/// A source profile whose keys are in the keyring.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceInfo {
    pub name: String,
    /// The last 4 characters of the access key id; never more.
    pub key_id_suffix: String,
    /// `sealed` (only a touch opens it), `open` (sealed, opened by a touch for a session that
    /// may still need it), or `unsealed` (readable in the keyring; sealed at the next touch
    /// that opens it, once a key has sealed the vault).
    #[serde(default)]
    pub state: String,
}

/// A role from `~/.aws/config` and its session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleInfo {
    pub name: String,
    /// The ARN the session assumes; empty for an IAM Identity Center profile, whose role ARN
    /// only AWS knows (see `sso_role`).
    #[serde(default)]
    pub role_arn: String,
    /// For an IAM Identity Center profile: the account and permission set it opens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sso_role: Option<SsoRole>,
    /// Profiles from the source to this role, e.g. `["base", "dev", "prod"]`.
    pub chain: Vec<String>,
    pub mfa: bool,
    /// The role's region: the role profile's `region`, else the nearest profile's on its chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    pub session: Option<SessionState>,
    /// For a role whose chain starts at IAM Identity Center: the login (sso-session name, or
    /// the start URL of the legacy form) and whether it is usable now or after a touch
    /// (`logged in`), or needs `credctl login` (`login needed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sso: Option<SsoState>,
    /// Why the role cannot be opened as written (a broken chain, a bad value, a name too long),
    /// so `roles` never lists a broken profile as usable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// An account a login can reach, with its permission sets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SsoAccountInfo {
    pub account_id: String,
    #[serde(default)]
    pub account_name: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    pub roles: Vec<String>,
}

/// What a challenge's touch is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChallengeStep {
    /// A registered key's touch that opens a role.
    OpenRole,
    /// A new key's registration.
    Register,
    /// The new key's second touch, which seals the vault to it.
    SealNewKey,
    /// A registered key's touch that allows something else (a key change, `confirm`,
    /// `key pin`); it opens no role.
    Authorize,
    /// A step this client does not know (a newer agent).
    #[serde(other)]
    Other,
}

/// The account and permission set of an IAM Identity Center profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SsoRole {
    pub account_id: String,
    pub permission_set: String,
}

/// The IAM Identity Center login behind a role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SsoState {
    pub login: String,
    pub logged_in: bool,
}

/// An open role session, without secrets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionState {
    pub expires_at: u64,
    pub remaining_secs: u64,
    pub credentials_expire_at: Option<u64>,
    pub next_refresh: Option<u64>,
    pub sts_calls: u64,
    pub refreshes: u64,
    pub failures: u64,
    pub last_error: Option<String>,
    /// Why the last refresh failed, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error_message: Option<String>,
    /// Seconds this machine's clock runs ahead of STS's (negative: behind), when over a minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_skew_secs: Option<i64>,
    /// What the session serves (source and role ARNs, as its touch approved them), when
    /// `~/.aws/config` now says something else for the role: an open session keeps serving what
    /// was approved until it ends or `credctl lock`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serves_approved: Option<String>,
    /// Served only to its running `credctl exec` jobs: the screen locked, or the session went
    /// idle, while they ran. Anyone else needs a touch.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub held: bool,
    /// The `credctl exec` jobs running on the role, holding its session open (their leases),
    /// each as "pid N (executable)".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jobs: Vec<String>,
}

/// An SDK asked for a role that has no session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingInfo {
    pub role: String,
    /// Unix seconds of the first and latest request.
    pub first_seen: u64,
    pub last_seen: u64,
    pub requests: u64,
    pub peer_pid: Option<i32>,
    pub peer_exe: Option<String>,
    /// Not a request for a closed role: the session (or the MFA session under it) ends at this
    /// unix second while a `credctl exec` job runs on it; a touch now (`Open` with `renew`)
    /// extends it before the job fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<u64>,
    /// What ends then ("session", "MFA session").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ending: Option<String>,
    /// A program the role's rules (`[roles.NAME]`) refused: its executable, pid and command
    /// line; `credctl allow ROLE --pid PID` (a touch) lets it use the session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program_pid: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_line: Option<String>,
}

/// A touch the agent is asking for right now: one at a time, so every other approval waits for
/// it to be touched or to time out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalInProgress {
    /// What the touch is for, in words ("role prod", "adding the key laptop").
    pub what: String,
    /// The process that asked, as the agent names it.
    pub requester: String,
    /// Unix seconds when it began.
    pub started_at: u64,
}

/// What `credctl status` shows about the running agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusInfo {
    pub pid: u32,
    pub agent_version: String,
    pub protocol_version: u32,
    /// Unix time (seconds) when the agent started.
    pub started_at: u64,
    pub uptime_secs: u64,
    /// Path of the control socket.
    pub socket: String,
    /// Address of the credential endpoint, e.g. `127.0.0.1:41234`.
    pub http_addr: String,
    /// The configuration file in effect, if one was read.
    pub config_path: Option<String>,
    /// Whether that file changed (or appeared) since the agent read it: `credctl reload`
    /// applies it.
    #[serde(default)]
    pub config_changed: bool,
    /// Settings `config.toml` holds that differ from those in force but apply only at the next
    /// start (`listen`, `keyring`), each as `name: in force → in the file`.
    #[serde(default)]
    pub config_needs_restart: Vec<String>,
    /// Requests refused since the agent started because a token bound to one process tree
    /// was presented from outside it (a token copied out of a process's environment).
    #[serde(default)]
    pub tokens_refused_elsewhere: u64,
    /// New connections presenting a bound token, looked up in its holder's process tree; how
    /// many a free-descriptor hint found at once; and their total time in microseconds.
    #[serde(default)]
    pub binding_lookups: u64,
    #[serde(default)]
    pub binding_hint_hits: u64,
    #[serde(default)]
    pub binding_micros: u64,
    /// The AWS config file the agent reads roles from.
    #[serde(default)]
    pub aws_config: Option<String>,
    /// Settings in force that send the agent elsewhere than AWS, with where each came from.
    #[serde(default)]
    pub overrides: Vec<String>,
    /// Registered FIDO keys.
    #[serde(default)]
    pub keys: usize,
    /// Open role sessions.
    #[serde(default)]
    pub sessions: Vec<RoleInfo>,
    /// Pending approvals.
    #[serde(default)]
    pub pending: Vec<PendingInfo>,
    /// The role IMDS serves, if any.
    #[serde(default)]
    pub imds_role: Option<String>,
    /// The vault's fingerprint (16 hex digits), once a key has sealed it.
    #[serde(default)]
    pub vault: Option<String>,
    /// `required` (every touch must unwrap the vault) or `allow-unsealed`.
    #[serde(default)]
    pub sealing: String,
    /// Registered keys that hold no copy of the vault: their touch opens no sealed source.
    #[serde(default)]
    pub unsealed_keys: Vec<String>,
    /// `[approval] user_verification`: `required` (the default: a touch opens the vault only
    /// with the key's PIN or biometric) or `discouraged` (a touch alone; weaker).
    #[serde(default)]
    pub user_verification: String,
    /// Sealed keys whose copy of the vault still opens with a touch alone.
    #[serde(default)]
    pub touch_only_keys: Vec<String>,
    /// The lock signals (suspend, screen lock) and whether the agent could subscribe to each.
    #[serde(default)]
    pub lock_on: Vec<String>,
    /// Whether a touch has confirmed the settings in force (endpoints, policy) since the agent
    /// started, in words.
    #[serde(default)]
    pub settings: String,
    /// The touches being asked for now (any other approval waits for them).
    #[serde(default)]
    pub approvals: Vec<ApprovalInProgress>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_tagged_by_type() {
        let json = serde_json::to_string(&Request::Status).unwrap();
        assert_eq!(json, r#"{"type":"status"}"#);
        let hello: Request =
            serde_json::from_str(r#"{"type":"hello","protocol_version":7,"client_version":"x"}"#)
                .unwrap();
        assert_eq!(
            hello,
            Request::Hello {
                protocol_version: 7,
                client_version: "x".into()
            }
        );
    }

    #[test]
    fn unknown_request_type_decodes_as_unknown() {
        let r: Request = serde_json::from_str(r#"{"type":"teleport","to":"mars"}"#).unwrap();
        assert_eq!(r, Request::Unknown);
    }

    #[test]
    fn opened_region_is_optional_both_ways() {
        // An agent from before the field: no region.
        let old: Response =
            serde_json::from_str(r#"{"type":"opened","role":"r","expires_at":5}"#).unwrap();
        assert_eq!(
            old,
            Response::Opened {
                role: "r".into(),
                expires_at: 5,
                region: None,
                account_id: None,
            }
        );
        // No region: the same bytes as before, so older clients see nothing new.
        let none = Response::Opened {
            role: "r".into(),
            expires_at: 5,
            region: None,
            account_id: None,
        };
        assert_eq!(
            serde_json::to_string(&none).unwrap(),
            r#"{"type":"opened","role":"r","expires_at":5}"#
        );
        let some = Response::Opened {
            role: "r".into(),
            expires_at: 5,
            region: Some("eu-west-1".into()),
            account_id: None,
        };
        let json = serde_json::to_string(&some).unwrap();
        assert_eq!(serde_json::from_str::<Response>(&json).unwrap(), some);
    }

    #[test]
    fn unknown_error_code_decodes_as_unknown() {
        let r: Response =
            serde_json::from_str(r#"{"type":"error","code":"from_the_future","message":"m"}"#)
                .unwrap();
        assert_eq!(r, Response::error(ErrorCode::Unknown, "m"));
    }

    #[test]
    fn error_code_names_match_serde() {
        for code in [
            ErrorCode::VersionMismatch,
            ErrorCode::HelloRequired,
            ErrorCode::BadRequest,
            ErrorCode::FrameTooLarge,
            ErrorCode::UnknownRequest,
            ErrorCode::ShuttingDown,
            ErrorCode::Internal,
            ErrorCode::NoKeys,
            ErrorCode::ApprovalFailed,
            ErrorCode::NotFound,
            ErrorCode::Exists,
            ErrorCode::MfaRequired,
            ErrorCode::StsDenied,
            ErrorCode::StsUnavailable,
            ErrorCode::Keyring,
            ErrorCode::Profile,
            ErrorCode::Refused,
            ErrorCode::BadToken,
            ErrorCode::Policy,
            ErrorCode::Sealed,
            ErrorCode::LoginRequired,
        ] {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }
}

//! The whole `credctl` command line, as clap derive types. Help text is the doc comments.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

pub const EXIT_CODES: &str = "\
Exit status:
  0  success
  1  the command failed (the message says why and what to do), e.g. AWS could not be
     reached
  2  usage error
  3  no agent is running (run `eval \"$(credctl start)\"`)
  4  the agent speaks another protocol version (restart it)
  5  the request was refused (by the agent's checks or policy, or by AWS)
  6  the touch was not given or not accepted
  7  the socket is not safely yours: its directory or file belongs to someone else or is open
     to others, or the process behind it runs as another user or is not the credagent credctl
     starts (nothing was sent to it)
  126 `credctl exec`: the command cannot be run (not executable), as in a shell
  127 `credctl exec`: no such command, as in a shell
Any other status from `credctl exec` is the command's own.";

/// credctl: control the credagent AWS credential agent.
///
/// Start the agent with `eval "$(credctl start)"`; it then serves AWS SDKs in this shell.
#[derive(Debug, Parser)]
#[command(name = "credctl", version, about, long_about, after_help = EXIT_CODES)]
pub struct Cli {
    /// Control socket of the agent [default: $CREDAGENT_SOCK, else
    /// $XDG_RUNTIME_DIR/credagent/agent.sock, else /tmp/credagent-$UID/agent.sock].
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

/// Shell syntax for `start`'s output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum ShellKind {
    #[default]
    Sh,
    Fish,
    Csh,
}

/// `credctl export --format`: the formats of `aws configure export-credentials`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum ExportFormat {
    /// `export AWS_ACCESS_KEY_ID=…` lines (sh, bash, zsh).
    Env,
    /// `AWS_ACCESS_KEY_ID=…` lines, not exported.
    EnvNoExport,
    /// The JSON `credential_process` expects (no region: it has no field for one).
    #[default]
    Process,
    /// `$Env:AWS_ACCESS_KEY_ID="…"` lines.
    Powershell,
    /// `set AWS_ACCESS_KEY_ID=…` lines.
    WindowsCmd,
    /// `set -gx AWS_ACCESS_KEY_ID "…"` lines.
    Fish,
}

/// `--region` for the commands that hand a region on.
#[derive(Debug, Clone, clap::Args)]
pub struct RegionArgs {
    /// Set AWS_REGION and AWS_DEFAULT_REGION to R, whatever the role's profile or this
    /// environment says. Without it, the region is this environment's AWS_REGION, else its
    /// AWS_DEFAULT_REGION, else the role's profile (or the nearest profile on its chain), and
    /// only a variable this environment has not set is set.
    #[arg(long, value_name = "R", value_parser = crate::region::parse_flag)]
    pub region: Option<String>,
}

/// How to take a touch: shared by every command that may need one.
#[derive(Debug, Clone, clap::Args)]
pub struct AuthArgs {
    /// How to answer the agent's WebAuthn challenge: `usb` (a FIDO security key on this
    /// machine), `browser` (the approval page: platform authenticators, phones), or `soft:FILE`
    /// (an INSECURE software authenticator for tests and demos) [env: CREDCTL_AUTHENTICATOR;
    /// default: usb].
    #[arg(long, value_name = "KIND")]
    pub authenticator: Option<String>,
    /// Shorthand for `--authenticator browser`.
    #[arg(long, conflicts_with = "authenticator")]
    pub browser: bool,
}

/// Options of commands that open a role: the touch, and an MFA code for sources that need one.
#[derive(Debug, Clone, clap::Args)]
pub struct TouchArgs {
    #[command(flatten)]
    pub auth: AuthArgs,
    /// TOTP code for a source with `mfa_serial` (asked for on the terminal when needed).
    #[arg(long, value_name = "CODE")]
    pub mfa_code: Option<String>,
    /// Open the role although its role ARN or chain, or the agent's settings (endpoints,
    /// policy), changed since a touch last confirmed them (you made that change and saw old
    /// and new).
    #[arg(long)]
    pub accept_change: bool,
    /// Touch for a new session even if the role's is open: extends it from now (a running
    /// `credctl exec` job's session nearing its end; `credctl watch` does this when asked).
    #[arg(long)]
    pub renew: bool,
}

/// Shell syntax flags.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct ShellArgs {
    /// Print fish syntax.
    #[arg(long, conflicts_with = "csh")]
    pub fish: bool,
    /// Print csh syntax.
    #[arg(long)]
    pub csh: bool,
}

impl ShellArgs {
    pub fn kind(self) -> ShellKind {
        Command::shell(self.fish, self.csh)
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the agent if none is running and print the shell lines that point tools at it.
    ///
    /// Use as `eval "$(credctl start)"` (sh, bash, zsh), `credctl start --fish | source`, or
    /// `eval \`credctl start --csh\``. A running agent is reused; each call issues a new token
    /// for the shell that evaluates it.
    Start {
        #[command(flatten)]
        shell: ShellArgs,
        /// Configuration file for a newly started agent.
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
    },
    /// Stop the agent: every session ends and every cached credential is wiped.
    Stop,
    /// Apply config.toml again, keeping every session open and the port the same.
    ///
    /// Settings that decide where secrets go or how strong the gate is (all but listen and
    /// keyring) take one touch that shows what changed, old and new; until it, the agent keeps
    /// the settings it had. listen and keyring apply at the next start.
    Reload {
        #[command(flatten)]
        touch: AuthArgs,
    },
    /// Show the agent, its listeners, keys, sessions with time left, and pending approvals.
    Status {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// One short line for a shell prompt: this shell's role, its time left, and approvals
    /// waiting ("prod 42m", "prod closed", "prod 42m !1"); nothing when no agent serves this
    /// shell. Fast enough for every prompt: it asks the agent's memory only.
    ///
    /// bash: PS1='$(credctl prompt) \$ '. starship: a custom module with
    /// command = "credctl prompt" and when = "test -n \"$AWS_CONTAINER_AUTHORIZATION_TOKEN\"".
    Prompt {
        /// Print JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// Register, list and remove FIDO security keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Store, list and remove source credentials (long-lived access keys) in the OS keyring.
    #[command(subcommand)]
    Source(SourceCommand),
    /// Touch once to confirm the agent's settings, opening no role.
    ///
    /// The touch unwraps your vault, so new sources and Identity Center logins can be sealed
    /// to it, and checks the settings that decide where secrets go and how strong the gate is
    /// (endpoint overrides and the policy in config.toml) against what your touches confirmed
    /// before. A change made behind the agent's back is shown, old and new, and applies only
    /// with --accept-change.
    Confirm {
        /// Confirm the changes shown (you made them).
        #[arg(long)]
        accept_change: bool,
        #[command(flatten)]
        touch: AuthArgs,
    },
    /// List the roles in ~/.aws/config with their session state.
    Roles {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
        /// List the accounts and permission sets an IAM Identity Center login (an sso-session,
        /// or a profile that uses one) can reach, instead of ~/.aws/config's roles.
        #[arg(long, value_name = "SSO_SESSION", value_parser = name_arg)]
        discover: Option<String>,
        /// With --discover: print ready-to-paste ~/.aws/config profile blocks.
        #[arg(long, requires = "discover")]
        config: bool,
        /// With --config: the `region` each profile gets (what SDKs call; default: the
        /// Identity Center region), as `aws configure sso` asks for its "CLI default client
        /// Region".
        #[arg(long, requires = "config", value_parser = crate::region::parse_flag)]
        region: Option<String>,
    },
    /// Open a session for ROLE if needed (touch) and make ROLE current for this shell.
    Use {
        /// The role: a profile of ~/.aws/config with role_arn or IAM Identity Center settings
        /// (see `credctl roles`).
        #[arg(value_parser = name_arg, add = clap_complete::engine::ArgValueCompleter::new(crate::completion::role_names))]
        role: String,
        #[command(flatten)]
        touch: TouchArgs,
    },
    /// Run CMD with credentials for ROLE only; the token dies when CMD exits.
    ///
    /// CMD also gets AWS_REGION and AWS_DEFAULT_REGION from the role's profile (or the nearest
    /// profile on its chain) when this environment sets neither; one this environment set is
    /// kept, and an unset one follows it. --region sets both.
    Exec {
        /// The role: a profile of ~/.aws/config with role_arn or IAM Identity Center settings
        /// (see `credctl roles`).
        #[arg(value_parser = name_arg, add = clap_complete::engine::ArgValueCompleter::new(crate::completion::role_names))]
        role: String,
        #[command(flatten)]
        touch: TouchArgs,
        #[command(flatten)]
        region: RegionArgs,
        /// The command and its arguments (after `--`).
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            required = true,
            value_name = "CMD"
        )]
        cmd: Vec<String>,
    },
    /// Print exports for a new token bound to ROLE (for IDEs, systemd units, other shells).
    ///
    /// The exports include AWS_REGION and AWS_DEFAULT_REGION from the role's profile (or the
    /// nearest profile on its chain), except a variable already set in credctl's environment,
    /// which is never overwritten (an unset one follows it). --region prints both.
    Env {
        /// The role: a profile of ~/.aws/config with role_arn or IAM Identity Center settings
        /// (see `credctl roles`).
        #[arg(value_parser = name_arg, add = clap_complete::engine::ArgValueCompleter::new(crate::completion::role_names))]
        role: String,
        #[command(flatten)]
        shell: ShellArgs,
        #[command(flatten)]
        touch: TouchArgs,
        #[command(flatten)]
        region: RegionArgs,
        /// Write the token to FILE (mode 0600, no newline) and export
        /// AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE instead of the token itself.
        #[arg(long, value_name = "FILE")]
        token_file: Option<PathBuf>,
        /// Replace FILE even if it is not an earlier token file (or is a symbolic link, which is
        /// replaced, not followed).
        #[arg(long, requires = "token_file")]
        force: bool,
    },
    /// Print credentials for ROLE as `credential_process` in ~/.aws/config expects.
    ///
    /// The JSON has no field for a region: put `region = …` in the profile that names
    /// `credential_process`, or set AWS_REGION.
    CredentialProcess {
        /// The role: a profile of ~/.aws/config with role_arn or IAM Identity Center settings
        /// (see `credctl roles`).
        #[arg(value_parser = name_arg, add = clap_complete::engine::ArgValueCompleter::new(crate::completion::role_names))]
        role: String,
        #[command(flatten)]
        touch: TouchArgs,
    },
    /// Print ROLE's current credentials in the formats of `aws configure export-credentials`.
    ///
    /// Opens a session if needed (touch). For credentials as STS issues them, the output is that
    /// of `aws configure export-credentials --format F` byte for byte: key id, secret, session
    /// token and expiration. Other values are quoted for the target syntax, or refused where it
    /// cannot carry them. The shell formats then set AWS_REGION and AWS_DEFAULT_REGION as
    /// `credctl env` does (never overwriting one set in credctl's environment; --region sets
    /// both); `process` has no field for a region. These are long-lived copies of the
    /// credentials, unlike `env` and `exec`: `credctl lock` does not take them back.
    Export {
        /// The role: a profile of ~/.aws/config with role_arn or IAM Identity Center settings
        /// (see `credctl roles`).
        #[arg(value_parser = name_arg, add = clap_complete::engine::ArgValueCompleter::new(crate::completion::role_names))]
        role: String,
        /// The output format.
        #[arg(long, value_enum, default_value_t = ExportFormat::Process)]
        format: ExportFormat,
        #[command(flatten)]
        touch: TouchArgs,
        #[command(flatten)]
        region: RegionArgs,
    },
    /// Choose the one role the IMDSv2 endpoint serves (`--off`: none).
    Imds {
        /// The role IMDS serves from now on.
        #[arg(required_unless_present = "off", value_parser = name_arg, add = clap_complete::engine::ArgValueCompleter::new(crate::completion::role_names))]
        role: Option<String>,
        /// Serve no role over IMDS.
        #[arg(long, conflicts_with = "role")]
        off: bool,
    },
    /// End every session, revoke every token bound to a role (exec, env) and wipe every cached
    /// credential (the agent keeps running).
    Lock,
    /// List or revoke the live endpoint tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Let a program use a role its `[roles.NAME]` rules in config.toml refuse, with a touch,
    /// until the role's session ends (`credctl status` lists the programs that asked).
    Allow {
        /// The role.
        #[arg(value_parser = name_arg, add = clap_complete::engine::ArgValueCompleter::new(crate::completion::role_names))]
        role: String,
        /// The process to allow (its pid).
        #[arg(long)]
        pid: i32,
        /// Allow every process of that program, not just this one.
        #[arg(long)]
        program: bool,
        #[command(flatten)]
        touch: crate::cli::AuthArgs,
    },
    /// Follow pending approvals (SDK requests for roles with no session, programs a role's
    /// rules refused, running jobs' sessions about to end) and take the touch.
    Watch {
        #[command(flatten)]
        touch: TouchArgs,
        /// Handle what is pending now, then exit.
        #[arg(long)]
        once: bool,
    },
    /// Show the issuance audit log.
    Audit {
        /// Keep printing new lines as they are written.
        #[arg(long)]
        follow: bool,
        /// Print the raw JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Log in to IAM Identity Center (an `[sso-session]` of ~/.aws/config, or a profile that
    /// uses one): in the browser (PKCE), or with `--device-code` on a machine without one. One
    /// login serves every profile of the session; each role still takes a touch to open.
    Login {
        /// The sso-session name (or a profile that uses it).
        #[arg(value_parser = name_arg)]
        login: String,
        /// Print a code to enter on another device instead of opening a browser here.
        #[arg(long)]
        device_code: bool,
        /// A new login takes a touch first: it proves the vault its tokens are sealed to is
        /// yours.
        #[command(flatten)]
        touch: AuthArgs,
    },
    /// Revoke and forget an IAM Identity Center login.
    Logout {
        /// The sso-session name (or a profile that uses it).
        #[arg(value_parser = name_arg)]
        login: String,
    },
    /// Sign in to the AWS console with ROLE's session (a touch if none is open). The browser
    /// gets a one-time link on the agent's own listener, never the sign-in token.
    Console {
        /// The role (see `credctl roles`).
        #[arg(value_parser = name_arg, add = clap_complete::engine::ArgValueCompleter::new(crate::completion::role_names))]
        role: String,
        /// Print the one-time link instead of opening the browser.
        #[arg(long)]
        print: bool,
        /// Where the console opens: an https URL, or a service name such as s3 or ec2.
        #[arg(long, value_name = "URL|SERVICE")]
        destination: Option<String>,
        /// The console's region (default: the role's).
        #[arg(long, value_name = "R")]
        region: Option<String>,
        #[command(flatten)]
        touch: TouchArgs,
    },
    /// Check what stands between this shell and working credentials (agent, versions, shadowing
    /// AWS_* variables, region, keyring, authenticator, file modes, sealing, clock), each with
    /// the command that fixes it. Exits 1 when a check fails.
    Doctor {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Print the shell completion script: `source <(credctl completions bash)` (zsh: the same;
    /// fish: `credctl completions fish | source`). ROLE arguments complete to the roles of
    /// ~/.aws/config as it is when you press TAB.
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) on stdout, e.g. `credctl man | man -l -`.
    Man,
}

/// A name on the command line (a role, a login, a key, a source, a token id): not empty, and
/// short enough for any of them; a refusal quotes only its beginning.
pub fn name_arg(text: &str) -> Result<String, String> {
    const MAX: usize = 256;
    if text.trim().is_empty() {
        return Err(
            "a name is required here (`credctl roles`, `key list`, `source list` and \
                    `token list` show the names)"
                .into(),
        );
    }
    if text.chars().any(char::is_control) {
        return Err(format!(
            "{:?} holds a control character (a line break, an escape); no name here does: \
             type the name again",
            crate::text::printable(text)
        ));
    }
    if text.chars().count() > MAX {
        let start: String = text.chars().take(32).collect();
        return Err(format!(
            "{}… is too long ({} characters; names here are at most {MAX})",
            crate::text::printable(&start),
            text.chars().count()
        ));
    }
    Ok(text.to_owned())
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Register a FIDO credential. The first key takes one touch; a later key first needs a
    /// touch of a key registered before.
    Add {
        /// A name for the key [default: key-N].
        name: Option<String>,
        #[command(flatten)]
        touch: AuthArgs,
        /// The authenticator holding a registered key, which authorizes the new one when keys
        /// exist already [default: the same as --authenticator].
        #[arg(long, value_name = "KIND")]
        authorizer: Option<String>,
        /// For the first key: let its touch vouch for settings of config.toml that send secrets
        /// elsewhere than AWS or weaken the approval (they are shown first).
        #[arg(long)]
        accept_change: bool,
    },
    /// List registered keys.
    List {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Move a key's copy of your vault that still opens with a touch alone (sealed touch-only)
    /// to its PIN: one touch without the PIN, one with it. Run it once, only if you used
    /// touch-only approvals before; `key list` shows such keys as TOUCH ONLY.
    Pin {
        /// Accept settings changed since your last confirming touch (they are shown first).
        #[arg(long)]
        accept_change: bool,
        #[command(flatten)]
        touch: AuthArgs,
    },
    /// Remove a key. Takes a touch of a registered key (the one removed, or another), so that
    /// no program can take your keys away and enrol its own. Removing the last one needs
    /// --force: no session can open without a key.
    Remove {
        /// The key's name, as `credctl key list` shows it.
        #[arg(value_parser = name_arg)]
        name: String,
        /// Allow removing the last registered key.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        touch: AuthArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// List the live endpoint tokens: id, kind, role, created, last used (never the secret).
    List {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token: every request with it is refused from now on.
    Revoke {
        /// The token's id, as `credctl token list` and `credctl audit` show it.
        #[arg(value_parser = name_arg)]
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum SourceCommand {
    /// Store the access key of source profile NAME in the keyring.
    ///
    /// Asks for the key id and secret on the terminal (the secret hidden), or reads them from
    /// standard input with --stdin (key id on the first line, secret on the second), or takes
    /// them from a profile in ~/.aws/credentials with --import-profile.
    Add {
        /// The source profile's name, as `source_profile` in ~/.aws/config names it.
        #[arg(value_parser = name_arg)]
        name: String,
        /// Read the key id and secret from standard input.
        #[arg(long, conflicts_with = "import_profile")]
        stdin: bool,
        /// Take the keys from this profile of ~/.aws/credentials (or AWS_SHARED_CREDENTIALS_FILE).
        #[arg(long, value_name = "PROFILE")]
        import_profile: Option<String>,
        /// After importing, remove that profile's keys from the credentials file (its other
        /// settings, such as region, stay).
        #[arg(long, requires = "import_profile")]
        remove_from_file: bool,
        /// Replace a source of that name already stored (its open sessions keep the old key
        /// until they end).
        #[arg(long)]
        replace: bool,
        /// Once a key is registered, adding a source takes its touch: it proves the vault the
        /// source is sealed to is yours.
        #[command(flatten)]
        touch: AuthArgs,
    },
    /// List stored sources (name and the last 4 characters of the key id).
    List {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Remove a source from the keyring.
    Remove {
        /// The source's name, as `credctl source list` shows it.
        #[arg(value_parser = name_arg)]
        name: String,
    },
}

impl Command {
    pub fn shell(fish: bool, csh: bool) -> ShellKind {
        match (fish, csh) {
            (true, _) => ShellKind::Fish,
            (_, true) => ShellKind::Csh,
            _ => ShellKind::Sh,
        }
    }
}

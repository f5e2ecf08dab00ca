//! credctl: the command-line client of credagent. A synchronous shell over the control
//! protocol; the agent's refusals arrive as a code and a message, which credctl prints (adding
//! what only it knows, such as the command to run next) and maps to its exit status.

pub mod agent;
pub mod authenticator;
pub mod bypass;
pub mod ceremony;
pub mod cli;
pub mod commands;
pub mod completion;
pub mod error;
pub mod holder;
pub mod identity;
pub mod prompt;
pub mod region;
pub mod shell;
pub mod text;
pub mod touch;
pub mod trust;

use std::io::Write;

use clap::CommandFactory;

use crate::cli::{Cli, Command, KeyCommand, SourceCommand, TokenCommand};
use crate::commands::{
    audit, export, keys, lifecycle, roles, session, sources, sso, status, tokens,
};
use crate::error::{Failure, Result};

/// What a command asks `main` to exit with.
pub enum Outcome {
    Success,
    /// `credctl exec`: the command's own status.
    Status(u8),
}

/// Runs one parsed command, writing its output to stdout.
pub fn run(cli: Cli) -> Result<Outcome> {
    let socket = agent::socket_path(cli.socket.as_deref());
    let out = match cli.command {
        Command::Start { shell, config } => {
            lifecycle::start(&socket, shell.kind(), config.as_deref())?
        }
        Command::Stop => lifecycle::stop(&socket)?,
        Command::Reload { touch } => keys::reload(&socket, &touch)?,
        Command::Status { json } => status::status(&socket, json)?,
        Command::Prompt { json } => status::prompt(&socket, json),
        Command::Key(KeyCommand::Add {
            name,
            touch,
            authorizer,
            accept_change,
        }) => keys::add(&socket, name, &touch, authorizer.as_deref(), accept_change)?,
        Command::Key(KeyCommand::List { json }) => keys::list(&socket, json)?,
        Command::Key(KeyCommand::Pin {
            accept_change,
            touch,
        }) => keys::pin(&socket, accept_change, &touch)?,
        Command::Confirm {
            accept_change,
            touch,
        } => keys::confirm(&socket, accept_change, &touch)?,
        Command::Key(KeyCommand::Remove { name, force, touch }) => {
            keys::remove(&socket, &name, force, &touch)?
        }
        Command::Source(SourceCommand::Add {
            name,
            stdin,
            import_profile,
            remove_from_file,
            replace,
            touch,
        }) => sources::add(
            &socket,
            &name,
            stdin,
            import_profile.as_deref(),
            remove_from_file,
            replace,
            &touch,
        )?,
        Command::Source(SourceCommand::List { json }) => sources::list(&socket, json)?,
        Command::Source(SourceCommand::Remove { name }) => sources::remove(&socket, &name)?,
        Command::Roles {
            json,
            discover: Some(login),
            config,
            region,
        } => roles::discover(&socket, &login, json, config.then_some(region))?,
        Command::Roles { json, .. } => roles::roles(&socket, json)?,
        Command::Use { role, touch } => {
            eprint!("{}", session::use_role(&socket, &role, &touch)?);
            String::new()
        }
        Command::Exec {
            role,
            touch,
            region,
            cmd,
        } => {
            return Ok(Outcome::Status(session::exec(
                &socket,
                &role,
                &touch,
                region.region.as_deref(),
                &cmd,
            )?))
        }
        Command::Env {
            role,
            shell,
            touch,
            region,
            token_file,
            force,
        } => session::env(
            &socket,
            &role,
            shell.kind(),
            &touch,
            token_file.as_deref().map(|p| (p, force)),
            region.region.as_deref(),
        )?,
        Command::Export {
            role,
            format,
            touch,
            region,
        } => export::export(&socket, &role, format, &touch, region.region.as_deref())?,
        Command::CredentialProcess { role, touch } => {
            session::credential_process(&socket, &role, &touch)?
        }
        Command::Imds { role, off } => session::imds(&socket, if off { None } else { role })?,
        Command::Lock => session::lock(&socket)?,
        Command::Token(TokenCommand::List { json }) => tokens::list(&socket, json)?,
        Command::Token(TokenCommand::Revoke { id }) => tokens::revoke(&socket, &id)?,
        Command::Watch { touch, once } => session::watch(&socket, &touch, once)?,
        Command::Allow {
            role,
            pid,
            program,
            touch,
        } => session::allow(&socket, &role, pid, program, &touch)?,
        Command::Audit { follow, json } => audit::audit(follow, json)?,
        Command::Completions { shell } => crate::completion::registration(shell)
            .map_err(|e| Failure::failed(format!("cannot write the completion script: {e}")))?,
        Command::Man => man_page()?,
        Command::Login {
            login,
            device_code,
            touch,
        } => sso::login(&socket, &login, device_code, &touch)?,
        Command::Console {
            role,
            print,
            destination,
            region,
            touch,
        } => commands::console::console(
            &socket,
            &role,
            print,
            destination.as_deref(),
            region.as_deref(),
            &touch,
        )?,
        Command::Doctor { json } => {
            let (out, failed) = commands::doctor::doctor(&socket, json);
            let mut stdout = std::io::stdout().lock();
            let _ = stdout.write_all(out.as_bytes());
            let _ = stdout.flush();
            return Ok(if failed {
                Outcome::Status(1)
            } else {
                Outcome::Success
            });
        }
        Command::Logout { login } => sso::logout(&socket, &login)?,
    };
    let mut stdout = std::io::stdout().lock();
    // A closed stdout (e.g. `credctl status | head -1`) is not an error worth reporting.
    let _ = stdout.write_all(out.as_bytes());
    let _ = stdout.flush();
    Ok(Outcome::Success)
}

/// `~/.config/credagent/config.toml`, key by key: what it does and its default. The agent reads
/// it when it starts and at `credctl reload`, which keeps sessions and the port; a change to a
/// setting a touch vouches for (all but listen and keyring) applies only after a touch that
/// shows it, and listen and keyring apply at the next start.
const CONFIGURATION: &[(&str, &str)] = &[
    ("sts_endpoint, sso_oidc_endpoint, sso_endpoint, federation_endpoint", "Endpoint overrides (default: AWS's endpoints for the partition). Secrets go to an override only after a touch confirmed it; the agent never reads AWS_ENDPOINT_URL_* from its environment."),
    ("listen", "The credential endpoint's address: a loopback address, port 0 for any free one (default 127.0.0.1:0). Applies at the next start."),
    ("keyring", "Applies at the next start. Where sealed sources live: \"secret-service\" (default with a session bus), \"keyutils\" (the kernel keyring) or \"file\" (0600 files in the state directory). Each holds ciphertext only."),
    ("session_ttl", "How long one touch keeps a role session open: 15m to 12h (default 1h)."),
    ("idle_timeout", "Lock after this long without a credential request (default 0s: never)."),
    ("mfa_session_ttl", "GetSessionToken lifetime for sources with mfa_serial (default 12h, at least session_ttl)."),
    ("lock_on", "Signals that lock the agent: \"suspend\", \"screen-lock\" (default both; [] for neither)."),
    ("[approval] user_verification", "\"required\" (default): every touch needs the key's PIN or biometric, and the vault opens only with such a touch. \"discouraged\": a touch alone (weaker)."),
    ("[approval] sealing", "\"required\" (default): every touch must unwrap the vault. \"allow-unsealed\": keys without hmac-secret approve by policy, their sources readable in the keyring."),
    ("[approval] allow_software_authenticators", "Accept authenticators that identify themselves as software (default false; tests and demos only)."),
    ("[approval] attestation_ca", "PEM files of vendor CAs: only keys they attest may register (default []: any key)."),
];

/// The environment credctl reads.
const ENVIRONMENT: &[(&str, &str)] = &[
    ("CREDAGENT_SOCK", "The agent's control socket (default $XDG_RUNTIME_DIR/credagent/agent.sock); --socket wins."),
    ("CREDAGENT_BIN", "The credagent binary credctl starts and accepts as the agent (default: next to credctl, else on PATH)."),
    ("CREDCTL_AUTHENTICATOR", "The default for --authenticator: usb, browser or soft:FILE."),
    ("CREDCTL_USB_WAIT_SECS", "How long to wait for a USB key to be plugged in and picked (default 30)."),
    ("CREDCTL_SOFT_PIN", "The PIN of the insecure software authenticator (soft:FILE): given to a new one, and given to it when used. Never read for a real key."),
    ("CREDCTL_TOKEN_HOLDER", "The process a shell's token (start, env) is given to: a pid (credctl's or one of its ancestors'), or none for a token anyone holding it may present. Default: the shell that evaluates the output."),
    ("CREDCTL_SSO_DEVICE_CODE", "Set to 1 so that a login a role needs on the spot uses the device code flow (for machines without a browser)."),
    ("AWS_CONFIG_FILE", "The AWS config file with your profiles (default ~/.aws/config)."),
    ("XDG_RUNTIME_DIR, XDG_CONFIG_HOME, XDG_STATE_HOME", "Where the socket, config.toml and the agent's state live."),
];

/// The files credctl and the agent use.
const FILES: &[(&str, &str)] = &[
    ("~/.config/credagent/config.toml", "The agent's settings (CONFIGURATION). Must be yours and not writable by group or others."),
    ("~/.aws/config", "Your profiles: roles (role_arn, source_profile), sources, IAM Identity Center sessions."),
    ("$XDG_RUNTIME_DIR/credagent/agent.sock", "The control socket (0600, in a 0700 directory)."),
    ("~/.local/state/credagent/keys.json", "Your registered security keys (public keys and counters)."),
    ("~/.local/state/credagent/vault.json", "The vault's public key, and its private key wrapped once per key (opened only by that key's touch)."),
    ("~/.local/state/credagent/trusted.json", "What your touches vouched for (settings, role targets, source keys), authenticated with a key from the vault."),
    ("~/.local/state/credagent/sso/", "IAM Identity Center refresh tokens, sealed to the vault."),
    ("~/.local/state/credagent/audit.jsonl", "The audit log: every credential served or refused, every touch and change (credctl audit)."),
];

/// Roff-escapes one line of text.
fn roff(text: &str) -> String {
    let t = text.replace('\\', "\\e").replace('-', "\\-");
    if t.starts_with('.') || t.starts_with('\'') {
        format!("\\&{t}")
    } else {
        t
    }
}

/// The one man page, `credctl(1)`: every command is described here (no `credctl-start(1)` and
/// the like, which are not shipped), and the exit statuses are a list, not run-together text.
fn man_page() -> Result<String> {
    let fail = |e: std::io::Error| Failure::failed(format!("cannot render the man page: {e}"));
    let cmd = Cli::command().after_help(None::<&str>);
    let man = clap_mangen::Man::new(cmd.clone());
    let mut buf = Vec::new();
    man.render_title(&mut buf).map_err(fail)?;
    man.render_name_section(&mut buf).map_err(fail)?;
    man.render_synopsis_section(&mut buf).map_err(fail)?;
    man.render_description_section(&mut buf).map_err(fail)?;
    man.render_options_section(&mut buf).map_err(fail)?;
    let mut out = String::from_utf8_lossy(&buf).into_owned();
    out.push_str(".SH COMMANDS\n");
    fn walk(out: &mut String, prefix: &str, cmd: &clap::Command) {
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            let name = format!("{prefix} {}", sub.get_name());
            if sub.has_subcommands() {
                walk(out, &name, sub);
                continue;
            }
            let usage = sub
                .clone()
                .bin_name(&name)
                .render_usage()
                .to_string()
                .trim_start_matches("Usage: ")
                .to_owned();
            out.push_str(&format!(".TP\n\\fB{}\\fR\n", roff(&usage)));
            let about = sub
                .get_long_about()
                .or(sub.get_about())
                .map(|a| a.to_string())
                .unwrap_or_default();
            for line in about.lines() {
                out.push_str(&roff(line));
                out.push('\n');
            }
        }
    }
    walk(&mut out, "credctl", &cmd);
    out.push_str(".SH EXIT STATUS\n");
    let mut current: Option<String> = None;
    for line in cli::EXIT_CODES.lines().skip(1) {
        let t = line.trim();
        match t.split_once(' ') {
            Some((code, text)) if code.chars().all(|c| c.is_ascii_digit()) => {
                if let Some(c) = current.take() {
                    out.push_str(&c);
                }
                current = Some(format!(".TP\n\\fB{code}\\fR\n{}\n", roff(text.trim())));
            }
            _ if line.starts_with("  ") => {
                if let Some(c) = current.as_mut() {
                    c.push_str(&roff(t));
                    c.push('\n');
                }
            }
            _ => {
                if let Some(c) = current.take() {
                    out.push_str(&c);
                }
                out.push_str(&format!(".PP\n{}\n", roff(t)));
            }
        }
    }
    if let Some(c) = current {
        out.push_str(&c);
    }
    for (title, entries) in [
        ("CONFIGURATION", CONFIGURATION),
        ("ENVIRONMENT", ENVIRONMENT),
        ("FILES", FILES),
    ] {
        out.push_str(&format!(".SH {title}\n"));
        for (name, text) in entries {
            out.push_str(&format!(".TP\n\\fB{}\\fR\n{}\n", roff(name), roff(text)));
        }
    }
    out.push_str(".SH SEE ALSO\n\\fBcredagent\\fR(1), \\fBaws\\fR(1)\n");
    Ok(out)
}

//! Start-up and shutdown: configuration, listeners, detaching, the runtime, signal handling.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::agent::Agent;
use crate::approval::{Approvals, Approver, PendingApprovals};
use crate::cli::Args;
use crate::config::Config;
use crate::control::Control;
use crate::http::approve_page::Page;
use crate::http::endpoint::{Endpoint, SessionSource};
use crate::profiles::AwsConfigFile;
use crate::reload::{Built, Live, Parts};
use crate::sessions::Sessions;
use crate::sources::SourceStore;
use crate::state::AgentState;
use crate::sts::{RetryPolicy, Retrying};
use crate::tokens::Tokens;
use crate::{audit, control, daemon, http, listeners, logging, notify, paths, preflight, systemd};

/// Runs the agent until it is told to stop. Called from a synchronous `main` after hardening.
pub fn run(args: Args) -> anyhow::Result<()> {
    let under_systemd =
        std::env::var_os("JOURNAL_STREAM").is_some() || std::env::var_os("NOTIFY_SOCKET").is_some();
    let uid = nix::unistd::getuid().as_raw();
    let log_file = paths::state_dir()
        .map(|d| d.join("agent.log"))
        .unwrap_or_else(|| PathBuf::from(format!("/tmp/credagent-{uid}/agent.log")));
    if !args.foreground {
        if let Some(dir) = log_file.parent() {
            crate::util::create_private_dir(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
    }
    let target = match (args.foreground, under_systemd) {
        (false, _) => logging::Target::File(&log_file),
        (true, true) => logging::Target::Journal,
        (true, false) => logging::Target::Stderr,
    };
    logging::init(target)
        .with_context(|| format!("cannot open the log file {}", log_file.display()))?;

    let (config_path, required) = match &args.config {
        Some(p) => (Some(p.clone()), true),
        None => (paths::default_config_file(), false),
    };
    // The digest of the content read: a change from then on is reported by `status`.
    let (config, config_seen) = match &config_path {
        Some(p) => Config::load_seen(p, required)?,
        None => (Config::default(), None),
    };
    let config_file = config_path.map(|p| (p, required));

    let (socket, create_dir) = match &args.socket {
        Some(p) => (p.clone(), true),
        None => {
            let (p, _) = credagent_proto::socket_path(uid);
            (p, true)
        }
    };
    // Everything that can fail is checked now, while whoever started the agent still hears it:
    // the state directory first (one agent per state), then the listeners, then the rest.
    let state = preflight::take_state(&socket)?;
    listeners::refuse_activation()?;
    let mut bound = listeners::bind(&socket, create_dir, config.listen)?;
    let mut prepared = match preflight::prepare(state, &config, bound.http_addr.port()) {
        Ok(p) => p,
        Err(e) => {
            // Ours: bound a moment ago under the lock, and no agent will serve it.
            let _ = std::fs::remove_file(&bound.control_path);
            return Err(e);
        }
    };

    if !args.foreground {
        daemon::detach(&log_file)?;
        // The parent that listened has exited: credctl must find this process behind the socket.
        listeners::claim_control(&bound.control, &bound.control_path)?;
    }
    // The control socket carries the set-group-id group from here on; the process need not.
    crate::harden::drop_setgid().context("cannot give up the credagent group")?;
    listeners::record_pid(&mut bound.lock).context("cannot record the agent pid")?;
    preflight::write_owner(&mut prepared.state_lock, &bound.control_path)
        .context("cannot record the agent pid in the state directory")?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("credagent")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(bound, prepared, config, config_file, config_seen))
}

async fn serve(
    bound: listeners::Listeners,
    prepared: preflight::Prepared,
    config: Config,
    config_file: Option<(PathBuf, bool)>,
    config_seen: Option<[u8; 32]>,
) -> anyhow::Result<()> {
    let listeners::Listeners {
        control,
        control_path,
        http,
        http_addr,
        lock,
    } = bound;
    let control_listener =
        tokio::net::UnixListener::from_std(control).context("cannot adopt the control socket")?;
    let http = tokio::net::TcpListener::from_std(http).context("cannot adopt the HTTP listener")?;
    let facts = AgentState {
        started_at: SystemTime::now(),
        started: Instant::now(),
        socket: control_path.clone(),
        http_addr,
    };
    let preflight::Prepared {
        state_dir,
        state_lock,
        approver,
        vault,
        audit_file,
        audit_path,
        instance,
        adopt_legacy,
    } = prepared;
    let (audit, audit_task) = audit::start_with(audit_file, &audit_path);
    let sources = SourceStore::new(
        SourceStore::backend_for(config.keyring),
        instance,
        adopt_legacy,
        vault.clone(),
    )
    .with_state_dir(&state_dir);
    let trusted = Arc::new(
        crate::trust::Trusted::new(&state_dir, config.trusted_settings())
            .with_defaults(Config::default().trusted_settings()),
    );
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let control = Arc::new(wire(
        facts,
        Read {
            config: &config,
            file: config_file,
            seen: config_seen,
        },
        Kept {
            approver,
            vault,
            audit,
            sources,
            trusted,
            state_dir: &state_dir,
        },
        Running {
            shutdown: shutdown.clone(),
            tracker: &tracker,
        },
    )?);
    let agent = control.agent.clone();
    let sessions = control.sessions.clone();
    let endpoint = control.endpoint.clone();

    let mut sigterm = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut sigint = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let mut sigusr1 = signal(SignalKind::user_defined1()).context("cannot watch SIGUSR1")?;
    // A daemon's usual "read your configuration again" must not end every session: the
    // settings a touch vouches for change only with `credctl reload`, which takes that touch.
    let mut sighup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;

    tracker.spawn(control::serve(
        control_listener,
        control.clone(),
        shutdown.clone(),
        tracker.clone(),
    ));
    tracker.spawn(http::serve(
        http,
        endpoint,
        shutdown.clone(),
        tracker.clone(),
    ));
    // IAM Identity Center access tokens are refreshed ahead of time, while a refresh token is
    // open, so a session's credential refresh never waits on a token refresh.
    let (logins, profiles_of) = (control.logins.clone(), sessions.clone());
    let sso_stop = shutdown.clone();
    tracker.spawn(async move {
        // `CREDAGENT_SSO_TICK` (a humantime duration) lets tests see a background refresh
        // in seconds.
        let every = std::env::var("CREDAGENT_SSO_TICK")
            .ok()
            .and_then(|v| humantime::parse_duration(&v).ok())
            .filter(|d| !d.is_zero())
            .unwrap_or(Duration::from_secs(30));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = sso_stop.cancelled() => break,
                _ = tick.tick() => {
                    let sources = profiles_of.profiles().sso_sources();
                    logins.refresh_due(&sources, SystemTime::now()).await;
                }
            }
        }
    });
    // A session that ends by itself (its time is up, or it sat idle) is audited like one a
    // person ended: the log says when every session stopped being served.
    let ends = control.audit.clone();
    sessions.on_end(Arc::new(move |role: &str, why: &'static str, now| {
        ends.record(
            now,
            crate::audit::Event::action("session_end", &Agent::itself(), None)
                .role(role)
                .subject(why),
        );
    }));
    let refresher = sessions;
    let refresh_stop = shutdown.clone();
    tracker.spawn(async move {
        tokio::select! {
            _ = refresh_stop.cancelled() => {}
            _ = refresher.run_refresher(Duration::from_secs(15), SystemTime::now) => {}
        }
    });
    notify::spawn_announcer(&control.pending, shutdown.clone(), &tracker);
    // Running jobs are asked for in advance before their session (or MFA session) ends under
    // them. `CREDAGENT_JOBS_TICK` and `CREDAGENT_EXTEND_AHEAD` (humantime durations) let tests
    // see it in seconds; they only move when the question is asked.
    let duration_var = |name: &str, default: Duration| {
        std::env::var(name)
            .ok()
            .and_then(|v| humantime::parse_duration(&v).ok())
            .filter(|d| !d.is_zero())
            .unwrap_or(default)
    };
    let (jobs_every, ahead) = (
        duration_var("CREDAGENT_JOBS_TICK", Duration::from_secs(15)),
        duration_var("CREDAGENT_EXTEND_AHEAD", Duration::from_secs(10 * 60)),
    );
    let asker = agent.clone();
    let jobs_stop = shutdown.clone();
    tracker.spawn(async move {
        let mut tick = tokio::time::interval(jobs_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = jobs_stop.cancelled() => break,
                _ = tick.tick() => { asker.ask_ahead(SystemTime::now(), ahead); }
            }
        }
    });
    // Approvals nobody touched end after a minute: the audit says so (a timeout is not quiet).
    let expiry = control.approvals.clone();
    let expiry_stop = shutdown.clone();
    tracker.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = expiry_stop.cancelled() => break,
                _ = tick.tick() => expiry.audit_expired(SystemTime::now()),
            }
        }
    });
    tracing::info!(
        pid = std::process::id(),
        socket = %control_path.display(),
        http = %http_addr,
        "credagent ready"
    );
    systemd::notify(&format!("READY=1\nMAINPID={}", std::process::id()));

    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = sigterm.recv() => { tracing::info!("SIGTERM: shutting down"); break }
            _ = sigint.recv() => { tracing::info!("SIGINT: shutting down"); break }
            _ = sighup.recv() => {
                tracing::warn!(
                    "SIGHUP: nothing changed; config.toml is applied by `credctl reload`, with a \
                     touch that shows what changed"
                );
            }
            // The sender of a signal is not known here: the agent's own uid, no pid.
            _ = sigusr1.recv() => { agent.lock_for("SIGUSR1"); }
        }
    }
    agent.shutdown();
    systemd::notify("STOPPING=1");
    tracker.close();
    if tokio::time::timeout(Duration::from_secs(5), tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("some connections did not finish within 5 s; closing them");
    }
    // Every part that can still audit is gone with its task: drop the last handles, and the
    // writer drains what is queued before the socket goes (`credctl stop` waits for that).
    drop(control);
    drop(agent);
    if tokio::time::timeout(Duration::from_secs(3), audit_task)
        .await
        .is_err()
    {
        tracing::warn!("the audit writer did not finish within 3 s");
    }
    // We still hold the lock, so this socket file is ours to remove.
    if let Err(e) = std::fs::remove_file(&control_path) {
        tracing::warn!(error = %e, "cannot remove the control socket");
    }
    // Removed while still held: an agent starting now re-checks that the file it locks is the
    // one at the path (see `listeners::take_lock`).
    if let Err(e) = std::fs::remove_file(listeners::lock_path(&control_path)) {
        tracing::debug!(error = %e, "cannot remove the lock file");
    }
    drop(lock);
    drop(state_lock);
    tracing::info!("credagent stopped");
    Ok(())
}

/// `config.toml` as the agent read it at start.
struct Read<'a> {
    config: &'a Config,
    /// The file the agent reads, and whether it must exist (`--config`).
    file: Option<(PathBuf, bool)>,
    /// SHA-256 of the content read (`None`: no file).
    seen: Option<[u8; 32]>,
}

/// What the agent keeps in its state directory, opened by `preflight` and `serve`.
struct Kept<'a> {
    approver: Approver,
    /// Shared by the approver (which unwraps it) and the sources and logins sealed to it.
    vault: Arc<crate::vault::VaultKeeper>,
    audit: audit::Audit,
    sources: SourceStore,
    trusted: Arc<crate::trust::Trusted>,
    state_dir: &'a std::path::Path,
}

/// What runs for as long as the agent does: the parts' background tasks join it.
struct Running<'a> {
    shutdown: CancellationToken,
    tracker: &'a TaskTracker,
}

/// Builds the agent's parts in dependency order, from the audit, sources and trust `serve`
/// opened: sessions and the tokens that share their answer generation, approval, the HTTP
/// endpoint, the `Agent`, the lock watchers, control; each is handed what it uses. Reads the
/// AWS config; touches nothing on the network.
fn wire(
    facts: AgentState,
    read: Read<'_>,
    kept: Kept<'_>,
    running: Running<'_>,
) -> anyhow::Result<Control> {
    let Kept {
        approver,
        vault,
        audit,
        sources,
        trusted,
        state_dir,
    } = kept;
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let config = read.config;
    let built = Built::new(config.clone(), &env).map_err(anyhow::Error::msg)?;
    let sts = Arc::new(Retrying::new(built.sts.clone(), RetryPolicy::default()));
    let sources = Arc::new(sources);
    let logins = Arc::new(crate::sso::Logins::new(
        built.sso.clone(),
        vault,
        trusted.clone(),
        built.sso_overrides.clone(),
        state_dir,
        facts.http_addr.port(),
    ));
    let aws_config = AwsConfigFile::from_env(&env);
    let profiles = aws_config
        .load_or_empty()
        .context("cannot build an empty profile set")?;
    let origins = crate::origins::Origins {
        store: sources.clone(),
        logins: logins.clone(),
    };
    let sessions = Sessions::new(
        built.session.clone(),
        sts.clone(),
        Arc::new(origins),
        profiles,
    );
    let generation = sessions.generation().clone();
    let tokens = Arc::new(Tokens::new(generation.clone()));

    let pending = Arc::new(PendingApprovals::default());
    let approvals = Arc::new(Approvals::new(
        approver,
        pending.clone(),
        Arc::new(sessions.clone()),
        audit.clone(),
        trusted.clone(),
        facts.http_addr.port(),
        config.session_ttl,
    ));

    let page = Page::new(approvals.clone(), sessions.clone(), facts.http_addr);
    let consoles =
        crate::console::Consoles::new(config.federation_endpoint.as_deref(), facts.http_addr);
    let endpoint = Arc::new(
        Endpoint::new(
            facts.http_addr,
            tokens.clone(),
            Arc::new(SessionSource::new(sessions.clone(), pending.clone())),
            audit.clone(),
            generation,
            Some(Arc::new(page)),
        )
        .with_oauth_callback(Arc::new(crate::http::oauth::Callback::new(
            logins.clone(),
            audit.clone(),
            facts.http_addr,
        )))
        .with_console(consoles.clone()),
    );
    let agent = Arc::new(Agent::new(
        sessions.clone(),
        endpoint.clone(),
        tokens.clone(),
        (approvals.clone(), pending.clone()),
        audit.clone(),
        running.shutdown.clone(),
    ));
    // The watchers call the agent, which holds nothing that holds them: no back-reference.
    let locker = agent.clone();
    let lock_watch = crate::lock_signals::LockWatch::start(
        &config.lock_on,
        Arc::new(move |trigger| locker.lock_on_signal(trigger)),
        running.shutdown,
        running.tracker,
    );
    let live = Arc::new(Live::new(
        read.file,
        read.seen,
        &built,
        Parts {
            sts,
            logins: logins.clone(),
            consoles: consoles.clone(),
            sessions: sessions.clone(),
            approvals: approvals.clone(),
            trusted,
            lock_watch,
        },
        Box::new(env),
    ));

    Ok(Control {
        agent,
        facts,
        approvals,
        pending,
        sessions,
        tokens,
        sources,
        logins,
        consoles,
        endpoint,
        audit,
        aws_config,
        live,
    })
}

//! Lock on suspend and on screen lock (`lock_on` in config.toml, default both): the agent
//! listens on D-Bus for logind's `PrepareForSleep(true)` and a session's `Lock` on the system
//! bus, and for the screensaver's `ActiveChanged(true)` (freedesktop and GNOME) on the session
//! bus, and locks as `credctl lock` does. What it could subscribe to is shown by `status`.
//!
//! Senders are not checked: a process that fakes one of these signals can only make the agent
//! lock, which is always safe.

use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::util::LockExt;

/// What locks the agent besides `credctl lock`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LockOn {
    /// logind's PrepareForSleep: suspend and hibernate.
    Suspend,
    /// The session's Lock (logind) and the screensaver turning on.
    ScreenLock,
}

impl LockOn {
    /// The lock's reason in the audit and the log (`suspend`, `screen-lock`).
    pub fn reason(self) -> &'static str {
        match self {
            LockOn::Suspend => "suspend",
            LockOn::ScreenLock => "screen-lock",
        }
    }
}

/// The default `lock_on`: both.
pub fn default_lock_on() -> Vec<LockOn> {
    vec![LockOn::Suspend, LockOn::ScreenLock]
}

#[derive(Clone, Copy)]
enum Bus {
    System,
    Session,
}

/// One signal to watch: its bus, interface and member, whether its first argument must be
/// `true`, and what `status` calls it.
struct Watch {
    bus: Bus,
    interface: &'static str,
    member: &'static str,
    needs_true: bool,
    label: &'static str,
}

const WATCHES: &[(LockOn, Watch)] = &[
    (
        LockOn::Suspend,
        Watch {
            bus: Bus::System,
            interface: "org.freedesktop.login1.Manager",
            member: "PrepareForSleep",
            needs_true: true,
            label: "suspend (logind PrepareForSleep)",
        },
    ),
    (
        LockOn::ScreenLock,
        Watch {
            bus: Bus::System,
            interface: "org.freedesktop.login1.Session",
            member: "Lock",
            needs_true: false,
            label: "screen-lock (logind session Lock)",
        },
    ),
    (
        LockOn::ScreenLock,
        Watch {
            bus: Bus::Session,
            interface: "org.freedesktop.ScreenSaver",
            member: "ActiveChanged",
            needs_true: true,
            label: "screen-lock (org.freedesktop.ScreenSaver)",
        },
    ),
    (
        LockOn::ScreenLock,
        Watch {
            bus: Bus::Session,
            interface: "org.gnome.ScreenSaver",
            member: "ActiveChanged",
            needs_true: true,
            label: "screen-lock (org.gnome.ScreenSaver)",
        },
    ),
];

/// What the watchers report for `status`: one line per signal, subscribed or why not.
#[derive(Clone, Default)]
pub struct LockSignals(Arc<Mutex<Vec<String>>>);

impl LockSignals {
    pub fn lines(&self) -> Vec<String> {
        self.0.locked().clone()
    }

    fn say(&self, line: String) {
        self.0.locked().push(line);
    }
}

/// The watchers in force, restarted with another list by `credctl reload`.
pub struct LockWatch {
    lock: Arc<dyn Fn(LockOn) + Send + Sync>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    /// What the watchers report, and what stops them (a child of `shutdown`).
    current: Mutex<(Vec<LockOn>, LockSignals, CancellationToken)>,
}

impl LockWatch {
    /// Starts the watchers `lock_on` names (see [`spawn`]).
    pub fn start(
        lock_on: &[LockOn],
        lock: Arc<dyn Fn(LockOn) + Send + Sync>,
        shutdown: CancellationToken,
        tracker: &TaskTracker,
    ) -> LockWatch {
        let stop = shutdown.child_token();
        let report = spawn(lock_on, lock.clone(), stop.clone(), tracker);
        LockWatch {
            lock,
            shutdown,
            tracker: tracker.clone(),
            current: Mutex::new((lock_on.to_vec(), report, stop)),
        }
    }

    /// Watches what `lock_on` names from now on; the same list changes nothing.
    pub fn restart(&self, lock_on: &[LockOn]) {
        let mut current = self.current.locked();
        if current.0 == lock_on {
            return;
        }
        current.2.cancel();
        let stop = self.shutdown.child_token();
        let report = spawn(lock_on, self.lock.clone(), stop.clone(), &self.tracker);
        *current = (lock_on.to_vec(), report, stop);
    }

    /// One line per signal watched, for `status`.
    pub fn lines(&self) -> Vec<String> {
        self.current.locked().1.lines()
    }
}

/// Starts one watcher per signal `lock_on` names; each calls `lock(trigger)` when its signal
/// comes.
pub fn spawn(
    lock_on: &[LockOn],
    lock: Arc<dyn Fn(LockOn) + Send + Sync>,
    shutdown: CancellationToken,
    tracker: &TaskTracker,
) -> LockSignals {
    let report = LockSignals::default();
    for (trigger, watch) in WATCHES {
        if !lock_on.contains(trigger) {
            continue;
        }
        let (lock, stop, report) = (lock.clone(), shutdown.clone(), report.clone());
        let trigger = *trigger;
        tracker.spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = run(watch, trigger, lock, report) => {}
            }
        });
    }
    report
}

async fn run(
    watch: &'static Watch,
    trigger: LockOn,
    lock: Arc<dyn Fn(LockOn) + Send + Sync>,
    report: LockSignals,
) {
    let conn = match watch.bus {
        Bus::System => zbus::Connection::system().await,
        Bus::Session => zbus::Connection::session().await,
    };
    let conn = match conn {
        Ok(c) => c,
        Err(e) => {
            let bus = match watch.bus {
                Bus::System => "system",
                Bus::Session => "session",
            };
            report.say(format!("{}: not watched (no {bus} bus: {e})", watch.label));
            return;
        }
    };
    let rule = zbus::MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .interface(watch.interface)
        .and_then(|b| b.member(watch.member))
        .map(|b| b.build());
    let stream = match rule {
        Ok(rule) => zbus::MessageStream::for_match_rule(rule, &conn, Some(16)).await,
        Err(e) => Err(e),
    };
    let mut stream = match stream {
        Ok(s) => s,
        Err(e) => {
            report.say(format!("{}: not watched ({e})", watch.label));
            return;
        }
    };
    report.say(format!("{}: watched", watch.label));
    tracing::debug!(signal = watch.label, "watching");
    while let Some(msg) = stream.next().await {
        let Ok(msg) = msg else { continue };
        if watch.needs_true {
            let body = msg.body();
            let on = body
                .deserialize::<bool>()
                .or_else(|_| body.deserialize::<(bool,)>().map(|(b,)| b))
                .unwrap_or(false);
            tracing::debug!(signal = watch.label, on, "signal");
            if !on {
                continue;
            }
        }
        tracing::info!(signal = watch.label, "locking");
        lock(trigger);
    }
}

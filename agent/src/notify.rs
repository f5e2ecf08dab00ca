//! Desktop notifications for pending approvals, through `org.freedesktop.Notifications` on the
//! session bus when one exists. Best effort: no bus, no notification daemon, nothing breaks.

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::approval::{Announcement, PendingApprovals};

/// Starts the task that announces newly pending roles.
pub fn spawn_announcer(
    pending: &PendingApprovals,
    shutdown: CancellationToken,
    tracker: &TaskTracker,
) {
    if std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_none() {
        tracing::debug!(
            "no session bus: pending approvals are announced through `credctl watch` only"
        );
        return;
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Announcement>();
    pending.announce_to(tx);
    tracker.spawn(async move {
        let mut conn: Option<zbus::Connection> = None;
        loop {
            let what = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = rx.recv() => match r { Some(r) => r, None => return },
            };
            if conn.is_none() {
                conn = zbus::Connection::session().await.map_err(|e| {
                    tracing::debug!(error = %e, "cannot reach the session bus for notifications");
                }).ok();
            }
            if let Some(c) = &conn {
                if let Err(e) = send(c, &what).await {
                    tracing::debug!(error = %e, "desktop notification failed");
                }
            }
        }
    });
}

/// `role` as notification text: servers may read the body as markup and a role name is chosen
/// by whatever process asked, so `&`, `<`, `>` and control characters are escaped, and the
/// length is bounded.
fn display_role(role: &str) -> String {
    let mut out = String::new();
    for c in role.chars().take(100) {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c if c.is_control() => out.extend(c.escape_default()),
            c => out.push(c),
        }
    }
    if role.chars().count() > 100 {
        out.push('…');
    }
    out
}

/// The title and body of a notification.
fn text(what: &Announcement) -> (String, String) {
    match what {
        Announcement::Requested(role) => {
            let role = display_role(role);
            (
                format!("Approve AWS role {role}?"),
                format!(
                    "A program asked for AWS credentials for role {role}.\nRun `credctl use {role}` (or `credctl watch`) and touch your security key to approve."
                ),
            )
        }
        Announcement::Ending { role, ending, secs } => {
            let role = display_role(role);
            (
                format!("Extend AWS role {role}?"),
                format!(
                    "The {ending} of role {role} ends in {} min while a job runs on it.\nRun `credctl use --renew {role}` (or `credctl watch`) and touch your security key to extend it.",
                    secs.div_ceil(60)
                ),
            )
        }
        Announcement::Program { role, exe, pid } => {
            let role = display_role(role);
            let exe = display_role(exe);
            (
                format!("Allow {exe} to use AWS role {role}?"),
                format!(
                    "{exe} (pid {pid}) asked for role {role}, which config.toml does not let it use.\nRun `credctl allow {role} --pid {pid}` (or `credctl watch`) and touch your security key to allow it."
                ),
            )
        }
    }
}

async fn send(conn: &zbus::Connection, what: &Announcement) -> zbus::Result<()> {
    let (title, body) = text(what);
    let hints: std::collections::HashMap<&str, zbus::zvariant::Value<'_>> =
        [("urgency", zbus::zvariant::Value::U8(1))]
            .into_iter()
            .collect();
    conn.call_method(
        Some("org.freedesktop.Notifications"),
        "/org/freedesktop/Notifications",
        Some("org.freedesktop.Notifications"),
        "Notify",
        &(
            "credagent",
            0u32,
            "dialog-password",
            title,
            body,
            Vec::<&str>::new(),
            hints,
            15_000i32,
        ),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_cannot_inject_markup_or_control_characters() {
        assert_eq!(display_role("prod"), "prod");
        assert_eq!(
            display_role("<a href='x'>b</a>&\x1b[2J"),
            "&lt;a href='x'&gt;b&lt;/a&gt;&amp;\\u{1b}[2J"
        );
        assert_eq!(display_role(&"r".repeat(300)).chars().count(), 101);
    }
}

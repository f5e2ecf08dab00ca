//! Desktop notifications for pending approvals, through `org.freedesktop.Notifications` on the
//! session bus when one exists. Best effort: no bus, no notification daemon, nothing breaks.

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::approval::PendingApprovals;

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
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    pending.announce_to(tx);
    tracker.spawn(async move {
        let mut conn: Option<zbus::Connection> = None;
        loop {
            let role = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = rx.recv() => match r { Some(r) => r, None => return },
            };
            if conn.is_none() {
                conn = zbus::Connection::session().await.map_err(|e| {
                    tracing::debug!(error = %e, "cannot reach the session bus for notifications");
                }).ok();
            }
            if let Some(c) = &conn {
                if let Err(e) = send(c, &role).await {
                    tracing::debug!(error = %e, "desktop notification failed");
                }
            }
        }
    });
}

async fn send(conn: &zbus::Connection, role: &str) -> zbus::Result<()> {
    let hints: std::collections::HashMap<&str, zbus::zvariant::Value<'_>> =
        [("urgency", zbus::zvariant::Value::U8(1))]
            .into_iter()
            .collect();
    let body = format!(
        "A program asked for AWS credentials for role {role}.\nRun `credctl use {role}` (or `credctl watch`) and touch your security key to approve."
    );
    conn.call_method(
        Some("org.freedesktop.Notifications"),
        "/org/freedesktop/Notifications",
        Some("org.freedesktop.Notifications"),
        "Notify",
        &(
            "credagent",
            0u32,
            "dialog-password",
            format!("Approve AWS role {role}?"),
            body,
            Vec::<&str>::new(),
            hints,
            15_000i32,
        ),
    )
    .await?;
    Ok(())
}

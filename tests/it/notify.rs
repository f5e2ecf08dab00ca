//! Pending approvals reach the desktop: the agent calls org.freedesktop.Notifications.Notify on
//! the session bus. A real dbus-daemon runs the bus; the test serves the notification interface.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::stack::Stack;
use crate::util::wait_until;

#[derive(Clone, Default)]
struct Notifications {
    seen: Arc<Mutex<Vec<(String, String, String)>>>,
}

#[zbus::interface(name = "org.freedesktop.Notifications")]
impl Notifications {
    #[allow(clippy::too_many_arguments)]
    async fn notify(
        &self,
        app_name: String,
        _replaces_id: u32,
        _app_icon: String,
        summary: String,
        body: String,
        _actions: Vec<String>,
        _hints: HashMap<String, zbus::zvariant::OwnedValue>,
        _expire_timeout: i32,
    ) -> u32 {
        self.seen.lock().unwrap().push((app_name, summary, body));
        1
    }
}

#[test]
fn a_pending_approval_is_announced_on_the_session_bus() {
    let (_daemon, address) = crate::stack::private_bus();

    let server = Notifications::default();
    let seen = server.seen.clone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let _conn = rt.block_on(async {
        zbus::connection::Builder::address(address.as_str())
            .unwrap()
            .name("org.freedesktop.Notifications")
            .unwrap()
            .serve_at("/org/freedesktop/Notifications", server)
            .unwrap()
            .build()
            .await
            .unwrap()
    });

    let s = Stack::new_with_env(
        "[profile other]\nrole_arn = arn:aws:iam::123456789012:role/other\nsource_profile = SOURCE\n",
        "",
        &[("DBUS_SESSION_BUS_ADDRESS", &address)],
    )
    .with_key_and_source();
    let token = s.unopened_role_token("demo");
    let other = s.unopened_role_token("other");
    assert_eq!(s.ecs(Some(&token), &[]).0, 403);
    wait_until(Duration::from_secs(10), || !seen.lock().unwrap().is_empty())
        .unwrap_or_else(|| panic!("no Notify call; agent log:\n{}", s.agent.log_text()));
    let (app, summary, body) = seen.lock().unwrap()[0].clone();
    assert_eq!(app, "credagent");
    assert!(summary.contains("demo"), "{summary}");
    assert!(body.contains("credctl use demo"), "{body}");
    // A second request for the same pending role does not notify again. To know that nothing is
    // still on its way, another role then becomes pending: the agent announces in request order,
    // so once that notification is here, a second one for demo would have arrived before it.
    assert_eq!(s.ecs(Some(&token), &[]).0, 403);
    assert_eq!(s.ecs(Some(&other), &[]).0, 403);
    wait_until(Duration::from_secs(10), || seen.lock().unwrap().len() >= 2).unwrap_or_else(|| {
        panic!(
            "no Notify call for other; agent log:\n{}",
            s.agent.log_text()
        )
    });
    let summaries: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|(_, summary, _)| summary.clone())
        .collect();
    assert_eq!(summaries.len(), 2, "{summaries:?}");
    assert!(
        summaries[0].contains("demo") && summaries[1].contains("other"),
        "{summaries:?}"
    );
}

//! Lock on suspend and screen lock: signals emitted on private dbus-daemon buses (one standing
//! in for the system bus, one for the session bus) end every session, as `credctl lock` does;
//! `status` says what is watched; a screensaver turning off locks nothing.

use std::process::Command;
use std::time::Duration;

use crate::stack::Stack;
use crate::util::wait_until;

pub(crate) fn emit(address: &str, path: &str, signal: &str, args: &[&str]) {
    let out = Command::new("dbus-send")
        .arg(format!("--bus={address}"))
        .args(["--type=signal", path, signal])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "dbus-send: {}",
        crate::util::stderr(&out)
    );
}

/// How many of the lock signals `status` names end with ": watched" and contain `which`.
pub(crate) fn watched(s: &Stack, which: &str) -> usize {
    let status: serde_json::Value = serde_json::from_str(&s.ok(&["status", "--json"])).unwrap();
    status["lock_on"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l.as_str())
        .filter(|l| l.ends_with(": watched") && l.contains(which))
        .count()
}

fn open_sessions(s: &Stack) -> usize {
    let status: serde_json::Value = serde_json::from_str(&s.ok(&["status", "--json"])).unwrap();
    status["sessions"].as_array().map_or(0, Vec::len)
}

#[test]
fn suspend_and_screen_lock_signals_end_every_session() {
    let (_system, system) = crate::stack::private_bus();
    let (_session, session) = crate::stack::private_bus();
    let s = Stack::new_with_env(
        "",
        "",
        &[
            ("DBUS_SYSTEM_BUS_ADDRESS", &system),
            ("DBUS_SESSION_BUS_ADDRESS", &session),
        ],
    )
    .with_key_and_source();
    wait_until(Duration::from_secs(10), || watched(&s, "") == 4).expect("four signals watched");
    assert!(s.ok(&["status"]).contains("lock on"));

    let cases: [(&str, &str, &str, &[&str]); 4] = [
        (
            &system,
            "/org/freedesktop/login1",
            "org.freedesktop.login1.Manager.PrepareForSleep",
            &["boolean:true"],
        ),
        (
            &system,
            "/org/freedesktop/login1/session/_31",
            "org.freedesktop.login1.Session.Lock",
            &[],
        ),
        (
            &session,
            "/org/freedesktop/ScreenSaver",
            "org.freedesktop.ScreenSaver.ActiveChanged",
            &["boolean:true"],
        ),
        (
            &session,
            "/org/gnome/ScreenSaver",
            "org.gnome.ScreenSaver.ActiveChanged",
            &["boolean:true"],
        ),
    ];
    for (address, path, signal, args) in cases {
        s.role_token("demo");
        assert_eq!(open_sessions(&s), 1);
        // Waking up or unlocking locks nothing.
        if !args.is_empty() {
            emit(address, path, signal, &["boolean:false"]);
            std::thread::sleep(Duration::from_millis(300));
            assert_eq!(open_sessions(&s), 1, "{signal} false must not lock");
        }
        emit(address, path, signal, args);
        wait_until(Duration::from_secs(10), || open_sessions(&s) == 0)
            .unwrap_or_else(|| panic!("{signal} did not lock; agent log:\n{}", s.agent.log_text()));
    }
    let audit =
        std::fs::read_to_string(s.env.home.join(".local/state/credagent/audit.jsonl")).unwrap();
    assert!(audit.contains("\"subject\":\"suspend\""), "{audit}");
    assert!(audit.contains("\"subject\":\"screen-lock\""), "{audit}");
}

#[test]
fn lock_on_can_be_turned_off() {
    let (_system, system) = crate::stack::private_bus();
    let s = Stack::new_with_env("", "lock_on = []", &[("DBUS_SYSTEM_BUS_ADDRESS", &system)])
        .with_key_and_source();
    let status: serde_json::Value = serde_json::from_str(&s.ok(&["status", "--json"])).unwrap();
    assert_eq!(status["lock_on"], serde_json::json!([]));
    s.role_token("demo");
    emit(
        &system,
        "/org/freedesktop/login1",
        "org.freedesktop.login1.Manager.PrepareForSleep",
        &["boolean:true"],
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(open_sessions(&s), 1);
}

//! A large organisation: a thousand profiles and dozens of open sessions, whose answers no
//! longer fit one 64 KiB control frame (they span frames), through the real credctl.

use crate::stack::Stack;
use crate::util::stderr;

#[test]
fn a_thousand_profiles_and_many_open_sessions_list_without_a_frame_limit() {
    let mut profiles = String::new();
    for i in 0..1000 {
        profiles.push_str(&format!(
            "[profile team-{i:04}-deploy-with-a-long-permission-set-name]\nrole_arn = arn:aws:iam::{:012}:role/deploy-{i:04}\nsource_profile = SOURCE\n\n",
            100_000_000_000u64 + i
        ));
    }
    let s = Stack::new(&profiles, "").with_key_and_source();
    let open = 40;
    for i in 0..open {
        s.ok(&[
            "env",
            &format!("team-{i:04}-deploy-with-a-long-permission-set-name"),
        ]);
    }

    let json = s.ok(&["roles", "--json"]);
    assert!(
        json.len() > credagent_proto::MAX_FRAME_LEN,
        "the answer must span frames to test anything: {} bytes",
        json.len()
    );
    let roles: serde_json::Value = serde_json::from_str(&json).unwrap();
    let roles = roles.as_array().unwrap();
    assert_eq!(roles.len(), 1001, "every profile, the demo role included");
    assert_eq!(
        roles.iter().filter(|r| !r["session"].is_null()).count(),
        open
    );

    let text = s.ok(&["roles"]);
    assert!(
        text.contains(&format!("1001 roles: {open} open, 0 broken")),
        "{}",
        &text[text.len().saturating_sub(300)..]
    );

    let status = s.credctl(&["status"]);
    assert!(status.status.success(), "{}", stderr(&status));
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains(&format!("sessions   {open} open")), "{text}");
    let status: serde_json::Value = serde_json::from_str(&s.ok(&["status", "--json"])).unwrap();
    assert_eq!(status["sessions"].as_array().unwrap().len(), open);
}

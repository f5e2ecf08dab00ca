//! `credctl token list | revoke`, and `lock` revoking every token bound to a role so none of
//! them serves again when its role reopens.

use crate::stack::{token_from_exports, Stack};

fn tokens(s: &Stack) -> Vec<serde_json::Value> {
    serde_json::from_str::<serde_json::Value>(&s.ok(&["token", "list", "--json"]))
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// The public id of a `cat1_<id>_<secret>` token.
fn id_of(token: &str) -> &str {
    token.split('_').nth(1).unwrap()
}

#[test]
fn tokens_are_listed_revoked_and_ended_by_lock() {
    let s = Stack::new("", "").with_key_and_source();
    let env_token = s.role_token("demo");
    let shell_token = token_from_exports(&s.ok(&["start"]));
    assert_eq!(s.ecs(Some(&env_token), &[]).0, 200);

    let listed = tokens(&s);
    let env = listed
        .iter()
        .find(|t| t["id"] == id_of(&env_token))
        .unwrap_or_else(|| panic!("{listed:?}"));
    assert_eq!(env["kind"], "env");
    assert_eq!(env["role"], "demo");
    assert!(env["last_used"].as_u64().is_some(), "{env}");
    let text = s.ok(&["token", "list"]);
    assert!(!text.contains(&env_token), "a secret in the listing");
    assert!(text.contains(id_of(&env_token)), "{text}");

    // Revoke: refused at once, and the id is gone.
    s.ok(&["token", "revoke", id_of(&env_token)]);
    assert_eq!(s.ecs(Some(&env_token), &[]).0, 401);
    assert!(tokens(&s).iter().all(|t| t["id"] != id_of(&env_token)));
    let again = s.credctl(&["token", "revoke", id_of(&env_token)]);
    assert!(!again.status.success());

    // Lock ends role-bound tokens for good: reopening the role does not revive them.
    let bound = s.role_token("demo");
    assert_eq!(s.ecs(Some(&bound), &[]).0, 200);
    s.ok(&["lock"]);
    s.role_token("demo");
    assert_eq!(
        s.ecs(Some(&bound), &[]).0,
        401,
        "a role-bound token outlived lock"
    );
    // A shell token stays (it follows `credctl use`), with no role current.
    assert!(tokens(&s).iter().any(|t| t["id"] == id_of(&shell_token)));
}

//! `credctl token list | revoke`, and `lock` revoking every token bound to a role so none of
//! them serves again when its role reopens.

use crate::stack::{token_from_exports, Stack};
use crate::util::stderr;

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

#[test]
fn a_token_file_never_replaces_what_is_not_an_earlier_token_file() {
    let s = Stack::new("", "").with_key_and_source();
    let live = |s: &Stack| tokens(s).len();
    let before = live(&s);
    // ~/.aws/config as the token file: refused before anything is asked of the agent.
    let cfg = s.env.home.join(".aws/config");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let out = s.credctl(&["env", "demo", "--token-file", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is not a credctl token file") && stderr(&out).contains("--force"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read_to_string(&cfg).unwrap(), text, "untouched");
    assert_eq!(live(&s), before, "no token was made");

    // A symbolic link: neither followed nor replaced without --force.
    let target = s.env.home.join("precious");
    std::fs::write(&target, "keep me").unwrap();
    let link = s.env.home.join("token-link");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let out = s.credctl(&["env", "demo", "--token-file", link.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is a symbolic link"),
        "{}",
        stderr(&out)
    );
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());

    // A missing directory: said at once, no token made.
    let nowhere = s.env.home.join("no/such/dir/token");
    let out = s.credctl(&["env", "demo", "--token-file", nowhere.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is not a directory"),
        "{}",
        stderr(&out)
    );
    assert_eq!(live(&s), before, "no token was made");

    // A new file, then the same file again (an earlier token file is replaced), then the link
    // with --force: the link is replaced by a file, and what it pointed to is left alone.
    let file = s.env.home.join("token");
    s.ok(&["env", "demo", "--token-file", file.to_str().unwrap()]);
    let first = std::fs::read_to_string(&file).unwrap();
    s.ok(&["env", "demo", "--token-file", file.to_str().unwrap()]);
    assert_ne!(std::fs::read_to_string(&file).unwrap(), first);
    s.ok(&[
        "env",
        "demo",
        "--token-file",
        link.to_str().unwrap(),
        "--force",
    ]);
    assert!(std::fs::symlink_metadata(&link).unwrap().is_file());
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me");
}

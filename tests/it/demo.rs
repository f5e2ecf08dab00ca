//! The demo runs in its own throw-away HOME and keyring namespace: a source of the user's own
//! called `base`, the demo's name for its source too, is still there afterwards, unchanged.

use std::io::Write;
use std::process::Stdio;

use crate::stack::Stack;
use crate::util::{bin, repo, stderr, stdout, without_cargo_run_vars};

#[test]
fn the_demo_leaves_the_users_own_source_alone() {
    let s = Stack::new("", "");
    let mut add = s
        .env
        .command(bin("credctl"))
        .args(["source", "add", "base", "--stdin"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    add.stdin
        .take()
        .unwrap()
        .write_all(b"AKIAUSERSOWNKEY12345\nthe-users-own-secret-key-0123456789\n")
        .unwrap();
    assert!(add.wait().unwrap().success());
    let before = s.ok(&["source", "list", "--json"]);
    assert!(before.contains("2345"), "{before}");

    // The demo builds the binaries with cargo: as the tests' own build, so that it relinks
    // nothing under the agents of the tests running beside it.
    let mut demo = std::process::Command::new("bash");
    without_cargo_run_vars(&mut demo);
    let demo = demo
        .arg(repo().join("scripts/demo"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        demo.status.success(),
        "the demo failed:\n{}\n{}",
        stdout(&demo),
        stderr(&demo)
    );
    assert!(
        stdout(&demo).contains("assumed-role/demo"),
        "{}",
        stdout(&demo)
    );
    assert_eq!(
        s.ok(&["source", "list", "--json"]),
        before,
        "the user's base changed"
    );
    let _ = s.credctl(&["source", "remove", "base"]);
}

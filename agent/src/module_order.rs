//! The agent's modules in the order they may import each other, checked against the source:
//! each module's `crate::` paths (comments and tests left out) must name only modules it is
//! allowed, and each of those must come earlier in the list, so no import runs back up and no
//! circle can form. ARCHITECTURE.md describes this order; a new arrow is added here, on purpose.

#![cfg(test)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Lowest first: a module may import only modules above it in this list.
const ORDER: &[(&str, &[&str])] = &[
    ("util", &[]),
    ("paths", &[]),
    ("cli", &[]),
    ("harden", &[]),
    ("systemd", &[]),
    ("daemon", &["util"]),
    ("logging", &["util"]),
    ("endpoint_url", &[]),
    ("refusal", &[]),
    ("procs", &["util"]),
    ("generation", &["util"]),
    ("vault", &["util"]),
    ("lock_signals", &["util"]),
    ("listeners", &["util"]),
    ("tokens", &["generation", "procs", "util"]),
    ("audit", &["procs", "tokens", "util"]),
    ("sources", &["util", "vault", "refusal"]),
    ("profiles", &["sources", "util"]),
    ("trust", &["profiles", "util", "vault"]),
    ("sts", &["endpoint_url", "profiles", "sources", "util"]),
    (
        "approval",
        &["audit", "procs", "trust", "util", "vault", "refusal"],
    ),
    ("notify", &["approval"]),
    (
        "sso",
        &[
            "endpoint_url",
            "profiles",
            "sources",
            "sts",
            "trust",
            "util",
            "vault",
            "refusal",
        ],
    ),
    ("signin", &["sso", "sts", "util", "vault"]),
    (
        "sessions",
        &[
            "approval",
            "generation",
            "procs",
            "profiles",
            "sources",
            "sts",
            "util",
            "refusal",
            "vault",
        ],
    ),
    (
        "origins",
        &["profiles", "sessions", "sources", "sso", "sts", "vault"],
    ),
    (
        "http",
        &[
            "approval",
            "audit",
            "generation",
            "harden",
            "procs",
            "sessions",
            "sso",
            "sts",
            "tokens",
            "util",
            "refusal",
        ],
    ),
    (
        "agent",
        &[
            "approval",
            "audit",
            "http",
            "lock_signals",
            "sessions",
            "tokens",
        ],
    ),
    ("console", &["audit", "http", "sts", "util"]),
    (
        "config",
        &[
            "approval",
            "endpoint_url",
            "lock_signals",
            "sessions",
            "sources",
            "trust",
        ],
    ),
    (
        "preflight",
        &[
            "approval", "audit", "config", "paths", "sources", "util", "vault",
        ],
    ),
    ("state", &[]),
    (
        "reload",
        &[
            "approval",
            "config",
            "console",
            "endpoint_url",
            "lock_signals",
            "sessions",
            "sources",
            "sso",
            "state",
            "sts",
            "trust",
            "util",
            "refusal",
        ],
    ),
    (
        "control",
        &[
            "agent", "approval", "audit", "console", "http", "procs", "profiles", "reload",
            "sessions", "sources", "sso", "state", "tokens", "util", "refusal",
        ],
    ),
    (
        "server",
        &[
            "agent",
            "approval",
            "audit",
            "cli",
            "config",
            "console",
            "control",
            "daemon",
            "harden",
            "http",
            "listeners",
            "lock_signals",
            "logging",
            "notify",
            "origins",
            "paths",
            "preflight",
            "profiles",
            "reload",
            "sessions",
            "sources",
            "sso",
            "state",
            "sts",
            "systemd",
            "tokens",
            "trust",
            "util",
            "vault",
        ],
    ),
];

/// Where a file's inline unit-test module begins (`#[cfg(test)]`, other attributes, then
/// `mod NAME {`): it sits at the end of the file. A `#[cfg(test)] mod tests;` declaration near
/// the top is not it (its file is left out by name), so it cuts nothing.
fn inline_tests_start(text: &str) -> usize {
    let mut from = 0;
    while let Some(i) = text[from..].find("#[cfg(test)]") {
        let at = from + i;
        let after = text[at + "#[cfg(test)]".len()..]
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with("#["))
            .unwrap_or("");
        let item = after
            .strip_prefix("pub(crate) ")
            .or_else(|| after.strip_prefix("pub "))
            .unwrap_or(after);
        if item.starts_with("mod ") && item.ends_with('{') {
            return at;
        }
        from = at + 1;
    }
    text.len()
}

/// Every `crate::NAME` a module's files use outside comments and tests.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let name = path.file_name().unwrap().to_str().unwrap().to_owned();
            if !name.ends_with(".rs") || name == "tests.rs" || name.ends_with("_tests.rs") {
                continue;
            }
            let rel = path.strip_prefix(&src).unwrap();
            let top = rel
                .components()
                .next()
                .unwrap()
                .as_os_str()
                .to_str()
                .unwrap()
                .trim_end_matches(".rs")
                .to_owned();
            if ["lib", "main", "module_order"].contains(&top.as_str()) {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let code = &text[..inline_tests_start(&text)];
            let used = out.entry(top.clone()).or_default();
            let code: String = code
                .lines()
                .map(|line| line.split("//").next().unwrap_or(""))
                .collect::<Vec<_>>()
                .join("\n");
            let mut rest = code.as_str();
            while let Some(i) = rest.find("crate::") {
                rest = &rest[i + "crate::".len()..];
                // `crate::{a, b::c}` names each of its members.
                let names: Vec<&str> = match rest.strip_prefix('{') {
                    Some(group) => {
                        let end = group.find('}').unwrap_or(group.len());
                        group[..end].split(',').collect()
                    }
                    None => vec![rest],
                };
                for n in names {
                    let name: String = n
                        .trim_start()
                        .chars()
                        .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                        .collect();
                    if !name.is_empty() && name != top && name != "self" {
                        used.insert(name);
                    }
                }
            }
        }
    }
    out
}

#[test]
fn only_an_inline_test_module_is_left_out() {
    let declared = "#[cfg(test)]\nmod tests;\nuse crate::a;\n";
    assert_eq!(inline_tests_start(declared), declared.len());
    let inline = "use crate::a;\n#[cfg(test)]\n#[allow(x)]\nmod tests {\nuse crate::b;\n}\n";
    assert_eq!(&inline[..inline_tests_start(inline)], "use crate::a;\n");
}

#[test]
fn the_order_itself_runs_one_way() {
    let mut seen = BTreeSet::new();
    for (module, allowed) in ORDER {
        for a in *allowed {
            assert!(
                seen.contains(a),
                "{module} may import {a}, which is not listed before it"
            );
        }
        assert!(seen.insert(*module), "{module} is listed twice");
    }
}

#[test]
fn every_module_imports_only_what_the_order_allows() {
    let order: BTreeMap<&str, &[&str]> = ORDER.iter().copied().collect();
    let found = imports();
    assert!(found.len() > 20, "the source tree was read: {found:?}");
    let mut wrong = Vec::new();
    for (module, used) in &found {
        let Some(allowed) = order.get(module.as_str()) else {
            wrong.push(format!(
                "module {module} is not in ORDER: place it where it belongs"
            ));
            continue;
        };
        for u in used.iter().filter(|u| !allowed.contains(&u.as_str())) {
            wrong.push(format!(
                "{module} imports crate::{u}, which ORDER does not allow it"
            ));
        }
        // An arrow nobody draws any more is a false sentence in the order (and the document).
        for a in allowed.iter().filter(|a| !used.contains(**a)) {
            wrong.push(format!(
                "ORDER lets {module} import crate::{a}, which it no longer does: remove the arrow"
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{}\nmove the item down, or add the arrow to ORDER (and ARCHITECTURE.md) if it is meant",
        wrong.join("\n")
    );
    for (module, _) in ORDER {
        assert!(
            found.contains_key(*module),
            "ORDER names {module}, which is gone"
        );
    }
}

use super::*;

fn settings(pairs: &[(&str, &str)]) -> Settings {
    let mut s = Settings::new();
    for (k, v) in pairs {
        s.set(k, *v);
    }
    s
}

fn base() -> Settings {
    settings(&[
        ("sts_endpoint", "AWS"),
        ("session_ttl", "1h"),
        ("approval.user_verification", "required"),
    ])
}

/// A record adopted by a new vault's first touch, for an agent running with `settings`.
fn adopted(settings: Settings) -> (tempfile::TempDir, VaultSecret, Trusted) {
    let dir = tempfile::tempdir().unwrap();
    let vault = VaultSecret::generate().unwrap();
    let t = Trusted::new(dir.path(), settings);
    t.adopt(&vault).unwrap();
    (dir, vault, t)
}

#[test]
fn the_first_touch_adopts_and_later_touches_verify() {
    let dir = tempfile::tempdir().unwrap();
    let vault = VaultSecret::generate().unwrap();
    let t = Trusted::new(dir.path(), base());
    assert!(!t.confirmed());
    t.adopt(&vault).unwrap();
    assert!(t.confirmed());
    // A restart with the same settings: the next touch verifies, and a new role is recorded.
    let again = Trusted::new(dir.path(), base());
    assert!(!again.confirmed());
    assert_eq!(
        again
            .verify(&vault, Some(("prod", "base → arn:1")), false)
            .unwrap(),
        Verdict::Unchanged
    );
    assert!(again.confirmed());
    assert_eq!(
        again.recorded_target("prod").as_deref(),
        Some("base → arn:1")
    );
}

#[test]
fn a_weakened_setting_after_a_restart_is_refused_then_accepted_with_confirmation() {
    let dir = tempfile::tempdir().unwrap();
    let vault = VaultSecret::generate().unwrap();
    Trusted::new(dir.path(), base()).adopt(&vault).unwrap();
    let mut weaker = base();
    weaker.set("sts_endpoint", "http://127.0.0.1:9999");
    weaker.set("session_ttl", "12h");
    let t = Trusted::new(dir.path(), weaker.clone());
    let err = t.verify(&vault, None, false).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("sts_endpoint in config.toml: was AWS, now http://127.0.0.1:9999"),
        "{text}"
    );
    assert!(
        text.contains("session_ttl in config.toml: was 1h, now 12h"),
        "{text}"
    );
    assert_eq!(err.changes().len(), 2);
    assert!(!t.confirmed(), "a refused touch confirms nothing");
    // Refused again on the next touch: nothing was written.
    assert!(t.verify(&vault, None, false).is_err());
    // The explicit confirmation applies it, once.
    assert!(matches!(t.verify(&vault, None, true).unwrap(), Verdict::Accepted(c) if c.len() == 2));
    assert_eq!(
        Trusted::new(dir.path(), weaker)
            .verify(&vault, None, false)
            .unwrap(),
        Verdict::Unchanged
    );
}

#[test]
fn a_removed_setting_counts_as_a_change() {
    let dir = tempfile::tempdir().unwrap();
    let vault = VaultSecret::generate().unwrap();
    Trusted::new(dir.path(), base()).adopt(&vault).unwrap();
    let fewer = settings(&[("sts_endpoint", "AWS"), ("session_ttl", "1h")]);
    let err = Trusted::new(dir.path(), fewer)
        .verify(&vault, None, false)
        .unwrap_err();
    assert!(
        err.to_string().contains("approval.user_verification"),
        "{err}"
    );
}

#[test]
fn a_rewritten_record_does_not_verify() {
    let (dir, vault, t) = adopted(base());
    t.verify(&vault, Some(("dev", "base → arn:dev")), false)
        .unwrap();
    // The attacker re-points dev at prod's ARN in the record itself (keeping the old MAC).
    let path = dir.path().join(TRUSTED_FILE);
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("arn:dev", "arn:prod")).unwrap();
    let err = t
        .verify(&vault, Some(("dev", "base → arn:prod")), false)
        .unwrap_err();
    assert_eq!(err.changes().first(), Some(&Change::Forged), "{err}");
}

#[test]
fn a_record_made_by_another_vault_does_not_verify() {
    let dir = tempfile::tempdir().unwrap();
    let attacker = VaultSecret::generate().unwrap();
    let mut weaker = base();
    weaker.set("approval.allow_software_authenticators", "true");
    // The attacker's own vault signs a record of the weaker settings…
    Trusted::new(dir.path(), weaker.clone())
        .adopt(&attacker)
        .unwrap();
    // …which the user's vault does not accept.
    let user = VaultSecret::generate().unwrap();
    let err = Trusted::new(dir.path(), weaker)
        .verify(&user, None, false)
        .unwrap_err();
    assert_eq!(err.changes().first(), Some(&Change::Forged));
}

#[test]
fn a_deleted_record_needs_confirmation() {
    let (dir, vault, t) = adopted(base());
    std::fs::remove_file(dir.path().join(TRUSTED_FILE)).unwrap();
    let err = t.verify(&vault, Some(("prod", "x")), false).unwrap_err();
    assert_eq!(err.changes().first(), Some(&Change::Missing));
    assert!(t.verify(&vault, Some(("prod", "x")), true).is_ok());
}

#[test]
fn a_changed_role_is_refused_without_confirmation() {
    let (_dir, vault, t) = adopted(base());
    t.verify(&vault, Some(("dev", "base → arn:dev")), false)
        .unwrap();
    let err = t
        .verify(&vault, Some(("dev", "base → arn:prod")), false)
        .unwrap_err();
    assert_eq!(
        err.changes(),
        &[Change::Role {
            role: "dev".into(),
            was: "base → arn:dev".into(),
            now: "base → arn:prod".into()
        }]
    );
    assert!(err
        .to_string()
        .contains("\n  role dev: was base → arn:dev, now base → arn:prod"));
    t.verify(&vault, Some(("dev", "base → arn:prod")), true)
        .unwrap();
    assert_eq!(t.recorded_target("dev").as_deref(), Some("base → arn:prod"));
}

#[test]
fn the_key_a_source_holds_is_recorded_per_source() {
    let (_dir, vault, t) = adopted(base());
    // demo opens with base holding key A: recorded for the source.
    t.verify(
        &vault,
        Some(("demo", "source base (key A) → arn:demo")),
        false,
    )
    .unwrap();
    // prod, never opened, finds base holding key B: a change, whatever role asks.
    let err = t
        .verify(
            &vault,
            Some(("prod", "source base (key B) → arn:prod")),
            false,
        )
        .unwrap_err();
    assert_eq!(
        err.changes(),
        &[Change::SourceKey {
            source: "base".into(),
            was: "A".into(),
            now: "B".into()
        }]
    );
    // `source add` (the person's touch) stored key B: no change to confirm.
    t.source_added("base", "B");
    t.verify(
        &vault,
        Some(("prod", "source base (key B) → arn:prod")),
        false,
    )
    .unwrap();
    t.verify(
        &vault,
        Some(("demo", "source base (key B) → arn:demo")),
        false,
    )
    .unwrap();
}

#[test]
fn a_reload_touch_verifies_and_records_the_settings_it_would_put_in_force() {
    let (dir, vault, t) = adopted(base());
    let mut reloaded = base();
    reloaded.set("sts_endpoint", "https://sts.example");
    // What the reload's touch is shown: the change against the record, not the settings in
    // force.
    assert_eq!(
        t.preview_against(&reloaded, None),
        vec![Change::Setting {
            name: "sts_endpoint".into(),
            was: Some("AWS".into()),
            now: "https://sts.example".into(),
        }]
    );
    assert!(
        t.preview(None).is_empty(),
        "the settings in force are the record"
    );
    // Without acceptance nothing is recorded and nothing is in force.
    assert!(t
        .verify_settings(&vault, Some(&reloaded), None, false)
        .is_err());
    assert_eq!(t.current(), base());
    // Accepted: recorded under the MAC and in force; a later agent with them verifies.
    assert!(matches!(
        t.verify_settings(&vault, Some(&reloaded), None, true),
        Ok(Verdict::Accepted(_))
    ));
    assert_eq!(t.current(), reloaded);
    let restarted = Trusted::new(dir.path(), reloaded);
    assert_eq!(
        restarted.verify(&vault, None, false).unwrap(),
        Verdict::Unchanged
    );
}

#[test]
fn what_a_first_touch_adopts_only_when_told_includes_every_weakening() {
    let defaults = crate::config::Config::default().trusted_settings();
    assert!(defaults.risky_against(&defaults).is_empty());
    for (text, name) in [
        ("sts_endpoint = \"https://sts.example\"", "sts_endpoint"),
        (
            "federation_endpoint = \"https://fed.example\"",
            "federation_endpoint",
        ),
        (
            "[approval]\nuser_verification = \"discouraged\"",
            "approval.user_verification",
        ),
        (
            "[approval]\nallow_software_authenticators = true",
            "approval.allow_software_authenticators",
        ),
        (
            "[approval]\nsealing = \"allow-unsealed\"",
            "approval.sealing",
        ),
    ] {
        let config =
            crate::config::Config::parse(text, std::path::Path::new("config.toml")).unwrap();
        let risky = config.trusted_settings().risky_against(&defaults);
        assert!(
            risky.iter().any(|r| r.starts_with(&format!("{name} = "))),
            "{text}: {risky:?}"
        );
    }
}

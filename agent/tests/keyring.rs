//! The keystore against real keyrings. `cargo test` leaves this target out (`test = false`);
//! `scripts/test` runs each test by name inside the session it needs and says which backend to
//! expect (a test run without that word fails, it never passes untested):
//! - `CREDAGENT_TEST_SECRET_SERVICE=1`: an unlocked Secret Service (gnome-keyring under
//!   `dbus-run-session`); `=absent`: no session bus at all, expect a clear "no backend" error;
//!   `=locked`: gnome-keyring started without unlocking (and no prompter), expect "locked".
//! - `CREDAGENT_TEST_KEYUTILS=1`: inside a session keyring (`keyctl session -`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use credagent::sources::{Backend, Keyring, SourceCredentials, SourceError, SourceStore, Stored};
use credagent::vault::{PrfOutput, VaultKeeper, VaultSecret};
use secrecy::{ExposeSecret, SecretString};
use std::sync::Arc;

/// What the wrapper says about the backend.
fn expected(var: &str) -> String {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "{var} is not set: this test needs a live keyring session; run it through \
             scripts/test (which starts gnome-keyring under dbus-run-session, or a kernel \
             session keyring, and sets {var})"
        ),
    }
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}-{:08x}", std::process::id(), rand_suffix())
}

fn rand_suffix() -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    t.subsec_nanos() ^ (t.as_secs() as u32)
}

fn creds(id: &str, secret: &str) -> SourceCredentials {
    SourceCredentials {
        access_key_id: id.into(),
        secret_access_key: SecretString::from(secret),
    }
}

/// Two agent instances of one user (two HOMEs, the demo, the tests) never see or overwrite one
/// another's sources, and sources stored before namespacing move into the instance that adopts
/// them, unchanged.
fn namespaces(backend: Backend, legacy_store: std::sync::Arc<keyring_core::CredentialStore>) {
    let mine = Keyring::open(backend, &unique("instance-a")).unwrap();
    let theirs = Keyring::open(backend, &unique("instance-b")).unwrap();
    let name = unique("base");
    mine.put(&name, &creds("AKIDMINE", "mine")).unwrap();
    theirs.put(&name, &creds("AKIDTHEIRS", "theirs")).unwrap();
    assert_eq!(mine.get(&name).unwrap().access_key_id, "AKIDMINE");
    assert_eq!(theirs.get(&name).unwrap().access_key_id, "AKIDTHEIRS");
    theirs.delete(&name).unwrap();
    assert_eq!(mine.get(&name).unwrap().access_key_id, "AKIDMINE");
    assert!(!theirs.list().unwrap().contains(&name));
    mine.delete(&name).unwrap();

    // A source written the way earlier versions did, without a namespace.
    let legacy = unique("legacy");
    let entry = |service: &str, user: &str| {
        keyring_core::Entry::new_in_store(&legacy_store, service, user).unwrap()
    };
    entry("credagent", &legacy)
        .set_password("credagent-source-v1\nAKIDLEGACY\nlegacy-secret")
        .unwrap();
    let index = entry("credagent-index", "sources");
    let mut names = index.get_password().unwrap_or_default();
    names.push('\n');
    names.push_str(&legacy);
    index.set_password(&names).unwrap();

    let upgraded = Keyring::open(backend, &unique("instance-c")).unwrap();
    assert!(upgraded.adopt_legacy().unwrap() >= 1);
    let got = upgraded.get(&legacy).unwrap();
    assert_eq!(got.access_key_id, "AKIDLEGACY");
    assert_eq!(got.secret_access_key.expose_secret(), "legacy-secret");
    assert!(upgraded.list().unwrap().contains(&legacy));
    assert!(
        matches!(
            entry("credagent", &legacy).get_password(),
            Err(keyring_core::Error::NoEntry)
        ),
        "the old entry is gone once moved"
    );
    // Another instance adopts nothing more, and does not see it.
    let fresh = Keyring::open(backend, &unique("instance-d")).unwrap();
    assert_eq!(fresh.adopt_legacy().unwrap(), 0);
    assert!(!fresh.list().unwrap().contains(&legacy));
    upgraded.delete(&legacy).unwrap();
}

fn round_trip(store: &Keyring) {
    let a = unique("credagent-test-a");
    let b = unique("credagent-test-b");
    store.put(&a, &creds("AKIDAAAA", "secret/a+1")).unwrap();
    store.put(&b, &creds("AKIDBBBB", "secret-b")).unwrap();
    let got = store.get(&a).unwrap();
    assert_eq!(got.access_key_id, "AKIDAAAA");
    assert_eq!(got.secret_access_key.expose_secret(), "secret/a+1");
    let list = store.list().unwrap();
    assert!(list.contains(&a) && list.contains(&b), "{list:?}");

    store.put(&a, &creds("AKIDCCCC", "rotated")).unwrap();
    assert_eq!(store.get(&a).unwrap().access_key_id, "AKIDCCCC");
    assert_eq!(store.list().unwrap().iter().filter(|n| **n == a).count(), 1);

    store.delete(&a).unwrap();
    let err = store.get(&a).unwrap_err();
    assert!(matches!(err, SourceError::NotFound { .. }), "{err}");
    assert!(
        err.to_string().contains(&format!("credctl source add {a}")),
        "{err}"
    );
    assert!(matches!(
        store.delete(&a),
        Err(SourceError::NotFound { .. })
    ));
    let list = store.list().unwrap();
    assert!(!list.contains(&a) && list.contains(&b), "{list:?}");
    store.delete(&b).unwrap();
    assert!(!store.list().unwrap().contains(&b));
}

/// Every form the secret could take in a stored entry.
fn forms(secret: &str) -> Vec<String> {
    use base64::Engine as _;
    let b = secret.as_bytes();
    vec![
        secret.to_owned(),
        hex::encode(b),
        base64::engine::general_purpose::STANDARD.encode(b),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b),
    ]
}

/// Sealed sources in a real keyring: a source stored before the vault stays readable until the
/// first touch seals it (migration); once sealed, the entry holds no form of the secret, only
/// the vault's private half opens it, it opens only under its own name, and forgetting it
/// (lock, session end) leaves it sealed again.
fn sealing(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let vault = Arc::new(VaultKeeper::load(dir.path()).unwrap());
    let instance = unique("instance-sealed");
    let store = SourceStore::new(backend, instance.clone(), false, vault.clone());
    let keyring = store.get().unwrap();
    let (old, new) = (unique("sealed-old"), unique("sealed-new"));
    let secret_old = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYOLDSOURCE";
    let secret_new = "je7MtGbClwBF/2Zp9Utk/h3yCo8nvbNEWSOURCE";

    // No vault yet: stored unsealed, and said so.
    assert!(!store
        .store(&keyring, &old, &creds("AKIDOLD1", secret_old))
        .unwrap());
    let stored = keyring.get_stored(&old).unwrap();
    assert_eq!(store.state(&stored, &old), "unsealed");

    // The first key's touch creates the vault; the touch that opens the source seals it.
    let prf = PrfOutput::from_slice(&[0x42; 32]).unwrap();
    let secret = vault.create(b"credential-a", [7; 32], &prf, true).unwrap();
    store.unseal(&keyring, &old, &secret).unwrap();
    let stored = keyring.get_stored(&old).unwrap();
    assert!(matches!(stored, Stored::Sealed { .. }), "migrated");
    assert_eq!(store.state(&stored, &old), "open");
    assert_eq!(
        store
            .lookup(&keyring, &old)
            .unwrap()
            .secret_access_key
            .expose_secret(),
        secret_old
    );
    drop(secret);

    // With a vault, `source add` seals at once, with the public half only (no touch).
    assert!(store
        .store(&keyring, &new, &creds("AKIDNEW1", secret_new))
        .unwrap());
    let err = store.lookup(&keyring, &new).unwrap_err();
    assert!(matches!(err, SourceError::Sealed { .. }), "{err}");
    assert!(err.to_string().contains("credctl use"), "{err}");

    // Nothing in the raw keyring entries is the secret, in any encoding.
    let raw_store: Arc<keyring_core::CredentialStore> = match backend {
        Backend::SecretService => zbus_secret_service_keyring_store::Store::new().unwrap(),
        Backend::Keyutils => linux_keyutils_keyring_store::Store::new().unwrap(),
        Backend::File => panic!("the file backend is tested in sources::tests"),
    };
    for (name, plain) in [(&old, secret_old), (&new, secret_new)] {
        let service = format!("credagent/{instance}");
        let raw = keyring_core::Entry::new_in_store(&raw_store, &service, name)
            .unwrap()
            .get_secret()
            .unwrap();
        let text = String::from_utf8(raw).unwrap();
        assert!(text.starts_with("credagent-source-v2\n"), "{name}: {text}");
        for form in forms(plain) {
            assert!(!text.contains(&form), "{name} holds its secret as {form}");
        }
    }

    // Forgotten (lock, last session ended): sealed again until the next touch.
    store.forget_all();
    assert!(matches!(
        store.lookup(&keyring, &old),
        Err(SourceError::Sealed { .. })
    ));

    // Another vault's private half opens nothing.
    let stranger = VaultSecret::generate().unwrap();
    let err = store.unseal(&keyring, &new, &stranger).unwrap_err();
    assert!(matches!(err, SourceError::Unseal { .. }), "{err}");
    assert!(err.to_string().contains("another vault"), "{err}");

    // A sealed blob copied into another source's entry does not open there.
    let Stored::Sealed { sealed, .. } = keyring.get_stored(&new).unwrap() else {
        panic!("not sealed");
    };
    keyring.put_sealed(&old, "AKIDNEW1", &sealed).unwrap();
    let secret = vault.unwrap(b"credential-a", &prf).unwrap();
    assert!(matches!(
        store.unseal(&keyring, &old, &secret),
        Err(SourceError::Unseal { .. })
    ));
    store.unseal(&keyring, &new, &secret).unwrap();
    assert_eq!(
        store
            .lookup(&keyring, &new)
            .unwrap()
            .secret_access_key
            .expose_secret(),
        secret_new
    );
    keyring.delete(&old).unwrap();
    keyring.delete(&new).unwrap();
}

#[test]
fn secret_service_round_trip() {
    let mode = expected("CREDAGENT_TEST_SECRET_SERVICE");
    if mode == "absent" {
        let err = Keyring::open(Backend::SecretService, &unique("instance")).unwrap_err();
        assert!(matches!(err, SourceError::NoBackend { .. }), "{err}");
        assert!(err.to_string().contains("keyring = \"keyutils\""), "{err}");
        return;
    }
    let store = Keyring::open(Backend::SecretService, &unique("instance"))
        .unwrap_or_else(|e| panic!("CREDAGENT_TEST_SECRET_SERVICE={mode} but: {e}"));
    if mode == "locked" {
        let err = store
            .put(&unique("credagent-test-locked"), &creds("AKIDLOCK", "x"))
            .unwrap_err();
        assert!(matches!(err, SourceError::Locked { .. }), "{err}");
        assert!(
            err.to_string().contains("gnome-keyring-daemon --unlock"),
            "{err}"
        );
        return;
    }
    round_trip(&store);
    sealing(Backend::SecretService);
    namespaces(
        Backend::SecretService,
        zbus_secret_service_keyring_store::Store::new().unwrap(),
    );
}

#[test]
fn keyutils_round_trip() {
    expected("CREDAGENT_TEST_KEYUTILS");
    let store = Keyring::open(Backend::Keyutils, &unique("instance"))
        .unwrap_or_else(|e| panic!("CREDAGENT_TEST_KEYUTILS=1 but: {e}"));
    round_trip(&store);
    sealing(Backend::Keyutils);
    namespaces(
        Backend::Keyutils,
        linux_keyutils_keyring_store::Store::new().unwrap(),
    );
}

//! Response bodies rendered once per set of credentials. Every SDK request for a role then
//! clones an `Arc`: no JSON encoding and no copy of a secret on the hot path.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use secrecy::ExposeSecret;
use serde::Serialize;
use zeroize::Zeroizing;

use super::Rendered;
use crate::audit::rfc3339;
use crate::generation::{Generation, Versioned};
use crate::sts::TempCredentials;

type Entry = (Arc<TempCredentials>, Arc<Rendered>);

/// Rendered bodies by role, valid while the session cache holds the same credentials.
#[cfg_attr(test, derive(Default))]
pub struct RenderCache {
    by_role: Versioned<HashMap<String, Entry>>,
}

/// The ECS body. Field order and names follow what every SDK parses.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct EcsBody<'a> {
    access_key_id: &'a str,
    secret_access_key: &'a str,
    token: &'a str,
    expiration: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    account_id: Option<&'a str>,
}

/// The IMDS body, as EC2 sends it.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ImdsBody<'a> {
    code: &'a str,
    last_updated: &'a str,
    #[serde(rename = "Type")]
    kind: &'a str,
    access_key_id: &'a str,
    secret_access_key: &'a str,
    token: &'a str,
    expiration: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    account_id: Option<&'a str>,
}

/// The account id: from STS, else from the assumed-role ARN (`arn:aws:sts::ACCOUNT:…`).
pub fn account_of(creds: &TempCredentials) -> Option<&str> {
    creds.account_id.as_deref().or_else(|| {
        creds
            .assumed_role_arn
            .as_deref()
            .and_then(|arn| arn.split(':').nth(4))
            .filter(|a| !a.is_empty())
    })
}

/// Serializes into a buffer big enough never to reallocate (a reallocation would leave an
/// unzeroed copy of the secret behind).
fn to_zeroizing<T: Serialize>(value: &T) -> Zeroizing<Vec<u8>> {
    let mut buf = Zeroizing::new(Vec::with_capacity(8192));
    // Serializing plain strings into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *buf, value);
    buf
}

/// Renders both bodies for one set of credentials.
pub fn render(creds: &TempCredentials, now: SystemTime) -> Rendered {
    let expiration = rfc3339(creds.expiration);
    let updated = rfc3339(now);
    let account_id = account_of(creds);
    let ecs = to_zeroizing(&EcsBody {
        access_key_id: &creds.access_key_id,
        secret_access_key: creds.secret_access_key.expose_secret(),
        token: creds.session_token.expose_secret(),
        expiration: &expiration,
        account_id,
    });
    let imds = to_zeroizing(&ImdsBody {
        code: "Success",
        last_updated: &updated,
        kind: "AWS-HMAC",
        access_key_id: &creds.access_key_id,
        secret_access_key: creds.secret_access_key.expose_secret(),
        token: creds.session_token.expose_secret(),
        expiration: &expiration,
        account_id,
    });
    Rendered::new(ecs, imds)
}

impl RenderCache {
    pub fn new(generation: Generation) -> RenderCache {
        RenderCache {
            by_role: Versioned::new(HashMap::new(), generation),
        }
    }

    /// The rendered bodies for `creds`, rendering them on the first request after a refresh.
    pub fn get(&self, role: &str, creds: &Arc<TempCredentials>, now: SystemTime) -> Arc<Rendered> {
        {
            let map = self.by_role.read();
            if let Some((c, r)) = map.get(role) {
                if Arc::ptr_eq(c, creds) {
                    return r.clone();
                }
            }
        }
        let rendered = Arc::new(render(creds, now));
        let mut map = self.by_role.write();
        map.insert(role.to_owned(), (creds.clone(), rendered.clone()));
        rendered
    }

    /// Drops the body rendered for `role`, once its session has ended, so no credential bytes
    /// stay behind it. Looks first under the read lock: the common case (nothing there) writes
    /// nothing and moves no generation.
    pub fn forget(&self, role: &str) {
        if self.by_role.read().contains_key(role) {
            self.by_role.write().remove(role);
        }
    }

    /// Drops every rendered body (their buffers are zeroed once in-flight responses finish).
    pub fn clear(&self) {
        self.by_role.write().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;
    use std::time::Duration;

    fn creds() -> TempCredentials {
        TempCredentials {
            access_key_id: "ASIAEXAMPLE".into(),
            secret_access_key: SecretString::from("s3cr3t"),
            session_token: SecretString::from("t0ken"),
            expiration: SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_912_526),
            account_id: None,
            assumed_role_arn: Some("arn:aws:sts::123456789012:assumed-role/demo/s".into()),
        }
    }

    #[test]
    fn ecs_body_is_exactly_what_sdks_parse() {
        let r = render(&creds(), SystemTime::UNIX_EPOCH);
        let v: serde_json::Value = serde_json::from_slice(&r.ecs).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "AccessKeyId": "ASIAEXAMPLE", "SecretAccessKey": "s3cr3t", "Token": "t0ken",
                "Expiration": "2026-11-29T00:35:26Z", "AccountId": "123456789012"
            })
        );
    }

    #[test]
    fn imds_body_has_code_type_and_last_updated() {
        let r = render(&creds(), SystemTime::UNIX_EPOCH + Duration::from_secs(60));
        let v: serde_json::Value = serde_json::from_slice(&r.imds).unwrap();
        assert_eq!(v["Code"], "Success");
        assert_eq!(v["Type"], "AWS-HMAC");
        assert_eq!(v["LastUpdated"], "1970-01-01T00:01:00Z");
        assert_eq!(v["Expiration"], "2026-11-29T00:35:26Z");
        assert!(!r.imds.ends_with(b"\n"));
    }

    #[test]
    fn cache_reuses_until_credentials_change() {
        let cache = RenderCache::default();
        let a = Arc::new(creds());
        let r1 = cache.get("demo", &a, SystemTime::now());
        let r2 = cache.get("demo", &a, SystemTime::now());
        assert!(Arc::ptr_eq(&r1, &r2));
        let b = Arc::new(creds());
        let r3 = cache.get("demo", &b, SystemTime::now());
        assert!(!Arc::ptr_eq(&r1, &r3));
    }

    #[test]
    fn forget_leaves_no_rendered_bytes() {
        let cache = RenderCache::default();
        let creds = Arc::new(creds());
        let weak = Arc::downgrade(&cache.get("demo", &creds, SystemTime::now()));
        assert!(weak.upgrade().is_some(), "cached");
        cache.forget("other");
        assert!(
            weak.upgrade().is_some(),
            "another role's end forgets nothing"
        );
        cache.forget("demo");
        assert!(
            weak.upgrade().is_none(),
            "the rendered body outlived its session"
        );
    }
}

//! The control requests that carry a touch (`Approve`, `KeyAddFinish`), decoded from arbitrary
//! bytes and answered by a real relying party with a registered key and a live ceremony: no input
//! may panic, and none may be accepted (only the key's private half can sign the challenge).
#![no_main]

use std::sync::OnceLock;
use std::time::SystemTime;

use credagent::approval::{ApprovalPolicy, Approver};
use credagent_proto::{decode_body, Request};
use libfuzzer_sys::fuzz_target;
use webauthn_authenticator_rs::softtoken::SoftToken;
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_rs::prelude::{PublicKeyCredential, RegisterPublicKeyCredential, Url};

const PORT: u16 = 38211;

struct Fixture {
    /// One registered software key.
    approver: Approver,
    /// No key at all.
    empty: Approver,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let policy = ApprovalPolicy {
            allow_software_authenticators: true,
            ..ApprovalPolicy::default()
        };
        let approver = Approver::new(policy, dir.path(), PORT, SystemTime::now()).unwrap();
        let (mut auth, _) = SoftToken::new(false).unwrap();
        let origin = Url::parse(&format!("http://localhost:{PORT}")).unwrap();
        let (id, ccr) = approver.start_registration("fuzz", SystemTime::now()).unwrap();
        let reg = auth.do_registration(origin, ccr).unwrap();
        approver
            .finish_registration(id, &reg, SystemTime::now())
            .unwrap();
        let empty_dir = tempfile::tempdir().unwrap();
        let empty = Approver::new(
            ApprovalPolicy {
                allow_software_authenticators: true,
                ..ApprovalPolicy::default()
            },
            empty_dir.path(),
            PORT,
            SystemTime::now(),
        )
        .unwrap();
        Fixture {
            approver,
            empty,
            _dirs: (dir, empty_dir),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let Ok(req) = decode_body::<Request>(data) else {
        return;
    };
    let now = SystemTime::now();
    match req {
        Request::Approve { credential, .. } => {
            let Ok(cred) = serde_json::from_value::<PublicKeyCredential>(credential) else {
                return;
            };
            let (id, _) = f.approver.start_approval("prod", now).unwrap();
            assert!(
                f.approver.finish_approval(id, "prod", &cred, now).is_err(),
                "an assertion nobody signed was accepted"
            );
        }
        Request::KeyAddFinish { credential, .. } => {
            let Ok(cred) = serde_json::from_value::<RegisterPublicKeyCredential>(credential) else {
                return;
            };
            // The bootstrap state (no key yet) is the one where a registration needs no other
            // touch: an answer to a live ceremony that no authenticator made must not register.
            let empty = &f.empty;
            let (id, _) = empty.start_registration("fuzz", now).unwrap();
            assert!(
                empty.finish_registration(id, &cred, now).is_err(),
                "a registration nobody made was accepted"
            );
        }
        _ => {}
    }
});

//! A FIDO security key over USB HID (CTAP2, webauthn-authenticator-rs `usb`). Needs read/write
//! access to `/dev/hidraw*` (the `uaccess` udev tag gives it to the logged-in user).

use std::time::Duration;

use credagent_proto::{Request, Response};
use webauthn_authenticator_rs::ctap2::select_one_device;
use webauthn_authenticator_rs::prelude::Url;
use webauthn_authenticator_rs::transport::Transport;
use webauthn_authenticator_rs::types::{CableRequestType, CableState, EnrollSampleStatus};
use webauthn_authenticator_rs::ui::UiCallback;
use webauthn_authenticator_rs::usb::USBTransport;
use webauthn_authenticator_rs::WebauthnAuthenticator;

use crate::agent::Agent;
use crate::error::{Exit, Failure, Result};
use crate::touch::Challenge;

/// How long to wait for a key to be plugged in and picked (`CREDCTL_USB_WAIT_SECS`, default 30).
fn find_key_wait() -> Duration {
    let secs = std::env::var("CREDCTL_USB_WAIT_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    Duration::from_secs(secs)
}

/// Terminal prompts for the CTAP2 exchange.
#[derive(Debug)]
struct Prompt {
    what: String,
}

impl UiCallback for Prompt {
    fn request_pin(&self) -> Option<String> {
        crate::prompt::ask(
            "Security key PIN: ",
            true,
            "the key needs its PIN: run credctl in a terminal",
        )
        .ok()
        .map(|p| p.to_string())
    }
    fn request_touch(&self) {
        eprintln!("credctl: touch your security key {}…", self.what);
    }
    fn processing(&self) {}
    fn fingerprint_enrollment_feedback(
        &self,
        _remaining: u32,
        _feedback: Option<EnrollSampleStatus>,
    ) {
    }
    fn cable_qr_code(&self, _request_type: CableRequestType, _url: String) {}
    fn dismiss_qr_code(&self) {}
    fn cable_status_update(&self, _state: CableState) {}
}

fn fail(e: impl std::fmt::Debug, advice: &str) -> Failure {
    Failure::new(Exit::NotApproved, format!("security key: {e:?}: {advice}"))
}

/// Whether this machine has any HID device node at all (keyboards and mice have one too; a
/// container or a headless server usually has none, and then no key can appear either).
fn any_hidraw() -> bool {
    std::fs::read_dir("/dev")
        .map(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("hidraw"))
        })
        .unwrap_or(false)
}

/// Takes the touch on a USB key and sends the answer to the agent.
pub fn answer(agent: &mut Agent, c: &Challenge, what: &str) -> Result<Response> {
    if !any_hidraw() {
        return Err(Failure::new(
            Exit::NotApproved,
            "no USB security key can be reached: this machine has no /dev/hidraw* device (a \
             container or a remote session?); plug in your key and run the command again, or \
             approve in a browser with --browser",
        ));
    }
    let origin = Url::parse(&c.origin)
        .map_err(|e| Failure::failed(format!("the agent sent a bad origin {:?}: {e}", c.origin)))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::failed(format!("cannot start the USB runtime: {e}")))?;
    let ui = Prompt {
        what: what.to_owned(),
    };
    let credential = rt.block_on(async {
        let transport = USBTransport::new()
            .await
            .map_err(|e| fail(e, "check that /dev/hidraw* is readable by you (udev uaccess), or use --browser"))?;
        let stream = transport
            .watch()
            .await
            .map_err(|e| fail(e, "cannot list USB security keys; use --browser instead"))?;
        eprintln!("credctl: looking for a security key (plug it in if it is not)…");
        let wait = find_key_wait();
        let mut key = tokio::time::timeout(wait, select_one_device(stream, &ui))
            .await
            .ok()
            .flatten()
            .ok_or_else(|| {
                Failure::new(
                    Exit::NotApproved,
                    format!(
                        "no security key found within {} s: plug in your key and run the command again, or use --browser",
                        wait.as_secs()
                    ),
                )
            })?;
        if c.role.is_some() {
            let options = serde_json::from_value(c.options.clone())
                .map_err(|e| Failure::failed(format!("the agent sent bad options: {e}")))?;
            key.do_authentication(origin.clone(), options)
                .map_err(|e| fail(e, "the key was not touched in time, or it is not registered: `credctl key list`"))
                .and_then(|a| serde_json::to_value(a).map_err(|e| Failure::failed(e.to_string())))
        } else {
            let options = serde_json::from_value(c.options.clone())
                .map_err(|e| Failure::failed(format!("the agent sent bad options: {e}")))?;
            key.do_registration(origin.clone(), options)
                .map_err(|e| fail(e, "the key was not touched in time, or it is already registered"))
                .and_then(|r| serde_json::to_value(r).map_err(|e| Failure::failed(e.to_string())))
        }
    })?;
    agent.request(&Request::Approve {
        ceremony_id: c.ceremony_id.clone(),
        credential,
    })
}

//! A FIDO security key over USB HID. webauthn-authenticator-rs `usb` finds the key and frames
//! CTAPHID messages; the CTAP2 exchange itself (PIN, makeCredential, getAssertion, hmac-secret)
//! is credctl's own client in `ctap`, the same code the software authenticator is tested with.
//! Needs read/write access to `/dev/hidraw*` (the `uaccess` udev tag gives it to the logged-in
//! user).

use std::time::{Duration, Instant};

use tokio::runtime::Runtime;
use webauthn_authenticator_rs::error::WebauthnCError;
use webauthn_authenticator_rs::prelude::Url;
use webauthn_authenticator_rs::transport::{Token, Transport};
use webauthn_authenticator_rs::types::{CableRequestType, CableState, EnrollSampleStatus};
use webauthn_authenticator_rs::ui::UiCallback;
use webauthn_authenticator_rs::usb::{USBToken, USBTransport};
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_rs_proto::AuthenticatorTransport;

use super::ctap::{prf, CtapClient, CtapDevice, CtapError};
use crate::ceremony::Challenge;
use crate::error::{Exit, Failure, Result};

/// authenticatorSelection (CTAP 2.1 §6.9): blinks the key until it is touched.
const CMD_SELECTION: u8 = 0x0B;

/// How long to wait for a key to be plugged in and picked (`CREDCTL_USB_WAIT_SECS`, default 30).
fn find_key_wait() -> Duration {
    let secs = std::env::var("CREDCTL_USB_WAIT_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    Duration::from_secs(secs)
}

/// Terminal prompts for the CTAP2 exchange.
#[derive(Debug, Clone)]
struct Prompt {
    what: String,
}

impl UiCallback for Prompt {
    fn request_pin(&self) -> Option<String> {
        None
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

/// The key's PIN, asked on the terminal.
fn ask_pin() -> Option<zeroize::Zeroizing<String>> {
    crate::prompt::ask(
        "Security key PIN: ",
        true,
        "the key needs its PIN: run credctl in a terminal",
    )
    .ok()
}

fn fail(e: impl std::fmt::Display, advice: &str) -> Failure {
    Failure::new(Exit::NotApproved, format!("security key: {e}: {advice}"))
}

/// The transport's errors as CTAP2 errors: a status the key answered keeps its meaning.
fn ctap_error(e: WebauthnCError) -> CtapError {
    match e {
        WebauthnCError::Ctap(status) => CtapError::from_status(u8::from(status)),
        other => CtapError::Transport(other.to_string()),
    }
}

/// One USB key as a `CtapDevice`: each command is one CTAPHID_CBOR message (the command byte,
/// then the CBOR payload); the transport strips the status byte and turns a failure status into
/// `WebauthnCError::Ctap`.
struct UsbDevice<'r> {
    rt: &'r Runtime,
    token: USBToken,
    ui: Prompt,
}

impl CtapDevice for UsbDevice<'_> {
    fn command(&mut self, cmd: u8, payload: &[u8]) -> std::result::Result<Vec<u8>, CtapError> {
        let mut frame = Vec::with_capacity(payload.len() + 1);
        frame.push(cmd);
        frame.extend_from_slice(payload);
        self.rt
            .block_on(self.token.transmit_raw(&frame, &self.ui))
            .map_err(ctap_error)
    }
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

/// Waits up to `wait` for keys, initialises them, and picks one: the only one, or the first one
/// touched when there are several (CTAP 2.1 selection; a key that cannot do selection is used
/// when none is touched or none can).
async fn pick_key(ui: &Prompt, wait: Duration) -> Result<USBToken> {
    let transport = USBTransport::new().await.map_err(|e| {
        fail(
            e,
            "check that /dev/hidraw* is readable by you (udev uaccess), or use --browser",
        )
    })?;
    eprintln!("credctl: looking for a security key (plug it in if it is not)…");
    let deadline = Instant::now() + wait;
    let mut keys = Vec::new();
    loop {
        let found = transport
            .tokens()
            .await
            .map_err(|e| fail(e, "cannot list USB security keys; use --browser instead"))?;
        for mut token in found {
            if token.init().await.is_ok() {
                keys.push(token);
            }
        }
        if !keys.is_empty() || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    if keys.len() <= 1 {
        return keys.pop().ok_or_else(|| {
            Failure::new(
                Exit::NotApproved,
                format!(
                    "no security key found within {} s: plug in your key and run the command \
                     again, or use --browser",
                    wait.as_secs()
                ),
            )
        });
    }
    eprintln!("credctl: several security keys found: touch the one to use");
    let mut tasks = tokio::task::JoinSet::new();
    for mut token in keys {
        let ui = ui.clone();
        tasks.spawn(async move {
            let picked = token.transmit_raw(&[CMD_SELECTION], &ui).await;
            (token, picked)
        });
    }
    let mut fallback = None;
    let remaining = deadline.saturating_duration_since(Instant::now());
    let picked = tokio::time::timeout(remaining.max(Duration::from_secs(10)), async {
        while let Some(done) = tasks.join_next().await {
            match done {
                Ok((token, Ok(_))) => return Some(token),
                Ok((token, Err(_))) => {
                    fallback.get_or_insert(token);
                }
                Err(_) => {}
            }
        }
        None
    })
    .await
    .ok()
    .flatten();
    tasks.abort_all();
    picked.or(fallback).ok_or_else(|| {
        Failure::new(
            Exit::NotApproved,
            "no security key was touched: run the command again and touch the key to use, or \
             unplug the others",
        )
    })
}

/// Takes the touch on a USB key: the answer to `c`, for the caller to send to the agent.
pub fn touch(c: &Challenge, what: &str) -> Result<serde_json::Value> {
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
    let token = rt.block_on(pick_key(&ui, find_key_wait()))?;
    let device = UsbDevice { rt: &rt, token, ui };
    let mut client = CtapClient::new(device)
        .with_pin_callback(Box::new(ask_pin))
        .with_transports(vec![AuthenticatorTransport::Usb]);
    if c.role.is_some() {
        let (options, inputs) = prf::parse_authentication(&c.options).map_err(Failure::failed)?;
        let rp_id = options.public_key.rp_id.clone();
        client.set_prf_inputs(inputs.clone());
        let cred = client.do_authentication(origin, options).map_err(|e| {
            let why = client
                .take_error()
                .map_or_else(|| e.to_string(), |c| c.to_string());
            fail(
                why,
                "the key was not touched in time, or it is not registered: `credctl key list`",
            )
        })?;
        let output = client.take_prf_output();
        let mut answer =
            prf::authentication_answer(&cred, output.as_deref()).map_err(Failure::failed)?;
        if let Some(input) =
            crate::ceremony::without_uv_input(&c.options, &cred.raw_id, inputs.as_ref())
        {
            crate::ceremony::say_moving_to_user_verification();
            let touch_only = client
                .prf_without_uv(&rp_id, &cred.raw_id, input)
                .map_err(|e| fail(e.to_string(), "the key was not touched in time"))?;
            crate::ceremony::add_without_uv(&mut answer, &touch_only);
        }
        Ok(answer)
    } else {
        let (options, want_prf) = prf::parse_registration(&c.options).map_err(Failure::failed)?;
        client.request_prf_on_create(want_prf);
        let cred = client.do_registration(origin, options).map_err(|e| {
            let why = client
                .take_error()
                .map_or_else(|| e.to_string(), |c| c.to_string());
            fail(
                why,
                "the key was not touched in time, or it is already registered",
            )
        })?;
        prf::registration_answer(&cred, client.take_prf_enabled())
    }
    .map_err(Failure::failed)
}

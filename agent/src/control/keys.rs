//! Key requests: register (`key add`) and remove (`key remove`) FIDO keys, each a ceremony
//! that a registered key must authorize once one exists, and list them.

use std::time::SystemTime;

use credagent_proto::{Request, Response};

use super::reply::wire_key_info;
use super::{Conn, Control};

impl Control {
    pub(super) async fn keys_family(&self, req: Request, conn: &Conn, now: SystemTime) -> Response {
        match req {
            Request::KeyAddStart {
                name,
                accept_change,
            } => self
                .approvals
                .key_add_start(&name, accept_change, &conn.requester(), now)
                .await
                .into(),
            Request::KeyAddFinish {
                ceremony_id,
                credential,
            } => self
                .approvals
                .key_add_finish(&ceremony_id, credential, conn.id, &conn.peer(), now)
                .await
                .into(),
            Request::KeyList => Response::Keys {
                keys: self.approvals.keys().iter().map(wire_key_info).collect(),
            },
            Request::KeyRemove { name, force } => self
                .approvals
                .key_remove_start(&name, force, &conn.requester(), now)
                .await
                .into(),
            Request::Confirm { accept_change } => self
                .approvals
                .confirm_start(accept_change, &conn.requester(), now)
                .await
                .into(),
            Request::KeyPin { accept_change } => self
                .approvals
                .key_pin_start(accept_change, &conn.requester(), now)
                .await
                .into(),
            _ => super::misrouted(),
        }
    }
}

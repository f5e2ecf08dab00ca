//! Key requests: register (`key add`) and remove (`key remove`) FIDO keys, each a ceremony
//! that a registered key must authorize once one exists, and list them.

use credagent_proto::Response;

use super::reply::wire_key_info;
use super::Control;

impl Control {
    /// The registered keys, as `credctl key list` shows them.
    pub(super) fn key_list(&self) -> Response {
        Response::Keys {
            keys: self.approvals.keys().iter().map(wire_key_info).collect(),
        }
    }
}

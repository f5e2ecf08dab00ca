//! AWS Sign-In (`aws login`) as a source: a console sign-in, protected by the person's passkey
//! or security key, that yields SDK credentials refreshed for up to 12 hours. Here: the
//! protocol, as the AWS CLI v2 speaks it (DPoP proofs, `dpop`; the authorize URL and the token
//! endpoint, `client`), the sign-in kept sealed to the vault (`store`), and the agent's
//! sign-ins with their refresh (`logins`). The control requests, the `/oauth/callback` route
//! and the sessions' source build on these.

pub mod client;
pub mod dpop;
pub mod logins;
pub mod store;

pub use client::{endpoint_for, ClientId, Signin, SigninError, Tokens};
pub use dpop::{DpopError, DpopKey};
pub use logins::{SigninLogins, Started};
pub use store::{LoginSecret, LoginStore, StoreError};

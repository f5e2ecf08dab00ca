//! `credctl console ROLE`: the AWS console, signed in with the role's session, through a
//! one-time link on the agent's listener (the sign-in token never reaches a command line).

use std::path::Path;

use credagent_proto::{Request, Response};

use crate::agent::{unexpected, Agent};
use crate::cli::TouchArgs;
use crate::commands::open::open_role;
use crate::error::Result;

pub fn console(
    socket: &Path,
    role: &str,
    print: bool,
    destination: Option<&str>,
    region: Option<&str>,
    touch: &TouchArgs,
) -> Result<String> {
    let mut agent = Agent::connect_or_fail(socket)?;
    open_role(&mut agent, role, touch)?;
    let resp = agent.request(&Request::Console {
        role: role.to_owned(),
        destination: destination.map(str::to_owned),
        region: region.map(str::to_owned),
    })?;
    let Response::ConsoleLink { url, .. } = resp else {
        return Err(unexpected(&resp));
    };
    if print {
        return Ok(format!("{url}\n"));
    }
    if crate::touch::open_browser(&url) {
        Ok(format!(
            "opened the AWS console for {role} in your browser (the link works once, within a \
             minute: {url})\n"
        ))
    } else {
        // No browser here: the address is the result (it works once, within a minute).
        Ok(format!("{url}\n"))
    }
}

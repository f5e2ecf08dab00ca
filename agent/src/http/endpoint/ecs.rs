//! The ECS container-credentials route: `GET /v1/credentials` with the token in `Authorization`.

use std::time::SystemTime;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};

use super::memo::{Memo, Offer};
use super::{json_ok, Endpoint, ECS_PATH};
use crate::audit::{ConnAudit, Origin};
use crate::http::checks::error_response;
use crate::tokens::{Authenticated, TokenError};

pub(super) fn handle<B>(
    ep: &Endpoint,
    req: &Request<B>,
    origin: Origin,
    now: SystemTime,
    audit: &ConnAudit,
    memo: &mut Memo,
) -> Response<Full<Bytes>> {
    if req.method() != Method::GET {
        return error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "use GET",
        );
    }
    let Some(presented) = req.headers().get(hyper::header::AUTHORIZATION) else {
        ep.refused(audit, now, "ecs", None, None, origin, "missing_token");
        return error_response(
            StatusCode::UNAUTHORIZED,
            "missing_token",
            "no Authorization token: set AWS_CONTAINER_AUTHORIZATION_TOKEN with `eval \"$(credctl start)\"`",
        );
    };
    if let Some(body) = memo.recall(
        ECS_PATH,
        presented.as_bytes(),
        now,
        ep.generation.current(),
        audit,
    ) {
        return json_ok(body);
    }
    // Read before the token and the session are looked at (see `crate::generation`).
    let generation = ep.generation.current();
    let Authenticated {
        id,
        role,
        holder,
        job,
    } = match presented
        .to_str()
        .map_err(|_| TokenError::Malformed)
        .and_then(|t| ep.tokens.authenticate(t, now))
    {
        Ok(v) => v,
        Err(e) => {
            ep.refused(audit, now, "ecs", None, None, origin, "bad_token");
            return error_response(
                StatusCode::UNAUTHORIZED,
                "bad_token",
                &format!(
                    "{e}: this shell's token is not known to the running agent (revoked, or the \
                     agent restarted): run `eval \"$(credctl start)\"` again"
                ),
            );
        }
    };
    // A token given to one process tree (a shell, a command under `credctl exec`) serves only
    // that tree: the same token copied out of a process's environment is worthless elsewhere.
    // Checked once per connection: a served answer is remembered for it (the memo above).
    if let (Some(holder), Origin::Tcp { inode, .. }) = (holder, origin) {
        let found = if memo.bound_to(holder, inode) {
            true
        } else if let Some((client, fd)) = crate::procs::find_in_tree(holder, inode, &ep.hints) {
            memo.set_bound(holder, client, fd);
            true
        } else {
            false
        };
        if !found {
            ep.tokens.note_refused_elsewhere();
            ep.refused(audit, now, "ecs", role, Some(id), origin, "token_elsewhere");
            return error_response(
                StatusCode::UNAUTHORIZED,
                "token_elsewhere",
                &format!(
                    "this token was given to process {} and its descendants, and this request \
                     comes from outside them (a token copied out of another process works only \
                     there): get a token of your own with `eval \"$(credctl start)\"`, or run \
                     the program under `credctl exec ROLE -- …`",
                    holder.pid
                ),
            );
        }
    }
    let Some(role) = role else {
        ep.refused(audit, now, "ecs", None, Some(id), origin, "no_role");
        return error_response(
            StatusCode::FORBIDDEN,
            "no_role",
            "no role selected for this shell: run `credctl use ROLE` (see `credctl roles`)",
        );
    };
    let offer = Offer {
        generation,
        key: presented.as_bytes(),
        path: ECS_PATH,
        until: None,
    };
    ep.serve_role(
        audit,
        "ecs",
        &role,
        (Some(id), job),
        origin,
        now,
        |r| &r.ecs,
        (memo, offer),
    )
}

#!/usr/bin/env python3
"""A local IAM Identity Center (SSO OIDC + the SSO portal API), for credagent's tests.

moto implements neither `sso-oidc` nor `sso`, so this is a small, faithful fake of both, driven by
the real AWS clients. Its wire formats are botocore's service models (sso-oidc 2019-06-10 and
sso 2019-06-10, both REST-JSON) and what the AWS CLI v2 login code sends:

  sso-oidc  POST /client/register        RegisterClient
            POST /device_authorization   StartDeviceAuthorization
            POST /token                  CreateToken (device_code, authorization_code + PKCE S256,
                                         refresh_token)
            GET  /authorize              the browser's authorize step of the PKCE flow, as the
                                         CLI v2 builds it; an HTML page with an Allow button
                                         (id "allow") that redirects to redirect_uri?code=&state=
                                         (`_auto=approve` or `_auto=deny` in its query, or the
                                         `authorize` setting, answers with the redirect at once)
            POST /authorize/decision     the page's form (decision=allow|deny)
            GET  /device                 the device flow's verification page (Allow, id "allow")
            POST /device/decision        its form
  sso       GET  /assignment/accounts    ListAccounts       (bearer: x-amz-sso_bearer_token)
            GET  /assignment/roles       ListAccountRoles
            GET  /federation/credentials GetRoleCredentials (ASIA... keys, expiration in ms)
            POST /logout                 Logout (ends the sign-in session: its access and refresh
                                         tokens stop working)

Errors are the models' error shapes with the models' HTTP statuses: sso-oidc answers
{"error": "<oauth code>", "error_description": ...}, the portal {"message": ...}, and both name
the exception in the x-amzn-ErrorType header as AWS does (botocore reads the code from there).
GetRoleCredentials for a role that is not assigned answers 403 ForbiddenException "No access",
as the real portal does (that error is not in the model).

Choices where AWS's behaviour is not documented (all configurable or visible in /_control/state):
refresh tokens are issued only to clients registered with scopes (`refresh_tokens`: "scoped",
"always" or "never"); a refresh rotates the refresh token (`rotate_refresh_tokens`), and without
rotation the same refresh token is returned (botocore drops the refresh token from its cache when
the response has none); a used, wrong-verifier or replayed authorization code is refused with
InvalidGrantException, and a replay also revokes what the code was exchanged for
(`revoke_on_code_replay`, RFC 6749 4.1.2); loopback redirect URIs match on any port (RFC 8252
7.3: the CLI registers http://127.0.0.1/oauth/callback and authorizes with its listener's port).

Test control, JSON in and out, under /_control/:
  GET  config            the effective configuration
  POST config            change settings at run time (any key of DEFAULTS, accounts too)
  GET  secrets           every access token, refresh token and client secret issued (for tests
                         that search logs and files for them)
  GET  state             counters: calls and errors per operation, successful CreateToken per
                         grant type, GetRoleCredentials per "account/role", role credentials
                         issued (key ids only), live tokens
  POST reset             zero the counters
  POST device/approve    {"userCode"} or {"deviceCode"} or {} for every pending one
  POST device/deny       the same, the next poll gets AccessDeniedException
  POST revoke            {"refreshToken": T} / {"accessToken": T} / {"refreshTokens": true} /
                         {"accessTokens": true} / {"all": true} (sign-in sessions too)
  POST expire            {"accessTokens", "refreshTokens", "deviceCodes", "authCodes", "clients":
                         true}: they expire now
  POST fault             {"operation": "GetRoleCredentials", "error": "TooManyRequestsException",
                         "count": 1}: the next calls of that operation fail so

Configuration: a JSON file and/or key=value arguments (values parsed as JSON when they parse):

  sso_server.py [CONFIG.json] [key=value ...]   e.g. access_token_lifetime=5 rotate_refresh_tokens=false

Binds 127.0.0.1:0 itself and prints the port as the first line on stdout once it listens (as
tests/py/moto_sts.py does). Logs one line per request on stderr: method, path and status, never a
query string, token, code or secret.
"""
import base64
import copy
import hashlib
import hmac
import html
import json
import re
import secrets
import string
import sys
import threading
import time
import traceback
import urllib.parse
import uuid

from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
GRANT_SHORT = {
    DEVICE_GRANT: "device_code",
    "authorization_code": "authorization_code",
    "refresh_token": "refresh_token",
}
PORTAL_SCOPE = "sso:account:access"

DEFAULTS = {
    "region": "us-east-1",
    # None: any https start URL is accepted; else StartDeviceAuthorization must name this one.
    "start_url": None,
    "accounts": [
        {
            "accountId": "111111111111",
            "accountName": "dev",
            "emailAddress": "dev@example.com",
            "roles": ["ReadOnly", "Admin"],
        },
        {
            "accountId": "222222222222",
            "accountName": "staging",
            "emailAddress": "staging@example.com",
            "roles": ["ReadOnly"],
        },
        {
            "accountId": "333333333333",
            "accountName": "prod",
            "emailAddress": "prod@example.com",
            "roles": ["ReadOnly", "Deploy", "Admin"],
        },
    ],
    "access_token_lifetime": 28800,
    "refresh_tokens": "scoped",
    "rotate_refresh_tokens": True,
    "refresh_token_lifetime": 90 * 86400,
    "client_secret_lifetime": 90 * 86400,
    "device_code_lifetime": 600,
    "device_interval": 1,
    # Approve device authorizations as they start (a "pre-authorized" client).
    "device_auto_approve": False,
    "auth_code_lifetime": 600,
    # What GET /authorize does: "page" (HTML with Allow/Deny), "approve" or "deny" (302 at once).
    "authorize": "page",
    "revoke_on_code_replay": True,
    "credential_lifetime": 3600,
    # Page size of the list operations when the request gives no maxResults.
    "page_size": 20,
    # Seconds to wait before answering, per operation name (to widen race windows in tests).
    "delays": {},
}

# sso-oidc errors: model shape -> (HTTP status, the OAuth "error" value AWS puts in the body).
OIDC_ERRORS = {
    "AccessDeniedException": (400, "access_denied"),
    "AuthorizationPendingException": (400, "authorization_pending"),
    "ExpiredTokenException": (400, "expired_token"),
    "InternalServerException": (500, "server_error"),
    "InvalidClientException": (401, "invalid_client"),
    "InvalidClientMetadataException": (400, "invalid_client_metadata"),
    "InvalidGrantException": (400, "invalid_grant"),
    "InvalidRedirectUriException": (400, "invalid_redirect_uri"),
    "InvalidRequestException": (400, "invalid_request"),
    "InvalidScopeException": (400, "invalid_scope"),
    "SlowDownException": (400, "slow_down"),
    "UnauthorizedClientException": (400, "unauthorized_client"),
    "UnsupportedGrantTypeException": (400, "unsupported_grant_type"),
}
# sso portal errors: model shape -> HTTP status (ForbiddenException is what the portal really
# answers for a role that is not assigned, though the model does not list it).
PORTAL_ERRORS = {
    "InvalidRequestException": 400,
    "UnauthorizedException": 401,
    "ForbiddenException": 403,
    "ResourceNotFoundException": 404,
    "TooManyRequestsException": 429,
    "InternalServerException": 500,
}
OIDC_OPS = {"RegisterClient", "StartDeviceAuthorization", "CreateToken"}
PORTAL_OPS = {"ListAccounts", "ListAccountRoles", "GetRoleCredentials", "Logout"}
ERROR_NAMESPACE = {
    "oidc": "http://internal.amazon.com/coral/com.amazonaws.switchboard.oidc/",
    "portal": "http://internal.amazon.com/coral/com.amazonaws.switchboard.portal/",
}
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
USER_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"


class ApiError(Exception):
    def __init__(self, api, code, description, status=None):
        super().__init__(code)
        self.api, self.code, self.description = api, code, description
        table = OIDC_ERRORS if api == "oidc" else PORTAL_ERRORS
        known = table.get(code)
        if status is None:
            status = (known[0] if api == "oidc" else known) if known else 500
        self.status = status

    def response(self):
        if self.api == "oidc":
            oauth = OIDC_ERRORS.get(self.code, (0, "server_error"))[1]
            body = {"error": oauth, "error_description": self.description}
        else:
            body = {"message": self.description}
        return json_response(
            body,
            self.status,
            {"x-amzn-ErrorType": f"{self.code}:{ERROR_NAMESPACE[self.api]}"},
        )


def oidc_error(code, description):
    return ApiError("oidc", code, description)


def portal_error(code, description):
    return ApiError("portal", code, description)


def json_response(body, status=200, headers=None):
    r = Response(
        json.dumps(body) if body is not None else "",
        status=status,
        content_type="application/json",
    )
    r.headers["x-amzn-RequestId"] = str(uuid.uuid4())
    for k, v in (headers or {}).items():
        r.headers[k] = v
    return r


def html_response(title, body, status=200):
    page = (
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title></head>\n<body>\n<h1>{html.escape(title)}</h1>\n"
        f"{body}\n</body></html>\n"
    )
    return Response(page, status=status, content_type="text/html; charset=utf-8")


def redirect(location):
    r = Response("", status=302)
    r.headers["Location"] = location
    r.headers["Cache-Control"] = "no-store"
    return r


def with_query(uri, params):
    """uri with params added to its query (kept in order)."""
    parts = urllib.parse.urlsplit(uri)
    extra = urllib.parse.urlencode(params)
    query = f"{parts.query}&{extra}" if parts.query else extra
    return urllib.parse.urlunsplit(parts._replace(query=query))


def b64url_nopad(raw):
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def same(a, b):
    return isinstance(a, str) and isinstance(b, str) and hmac.compare_digest(a.encode(), b.encode())


def normalize_accounts(accounts):
    """Accounts as a list of {accountId, accountName, emailAddress, roles} or as a map of
    account id -> role names (or -> {accountName, emailAddress, roles})."""
    if isinstance(accounts, dict):
        accounts = [
            {"accountId": k, **(v if isinstance(v, dict) else {"roles": v})}
            for k, v in accounts.items()
        ]
    out = []
    for a in accounts:
        aid = str(a["accountId"])
        if not re.fullmatch(r"\d{12}", aid):
            raise SystemExit(f"sso_server: account id {aid!r} is not 12 digits")
        out.append(
            {
                "accountId": aid,
                "accountName": a.get("accountName", f"account-{aid}"),
                "emailAddress": a.get("emailAddress", f"aws+{aid}@example.com"),
                "roles": [str(r) for r in a.get("roles", [])],
            }
        )
    return out


def load_config(argv):
    cfg = copy.deepcopy(DEFAULTS)
    for arg in argv:
        if "=" in arg and not arg.endswith(".json"):
            key, _, raw = arg.partition("=")
            try:
                value = json.loads(raw)
            except ValueError:
                value = raw
            update = {key: value}
        else:
            with open(arg) as f:
                update = json.load(f)
        apply_config(cfg, update)
    return cfg


def apply_config(cfg, update):
    unknown = set(update) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown settings: {sorted(unknown)}")
    for k, v in update.items():
        if k == "accounts":
            v = normalize_accounts(v)
        if k == "refresh_tokens" and v not in ("scoped", "always", "never"):
            raise ValueError("refresh_tokens is one of scoped, always, never")
        if k == "authorize" and v not in ("page", "approve", "deny"):
            raise ValueError("authorize is one of page, approve, deny")
        cfg[k] = v


def new_counters():
    return {
        "calls": {},
        "errors": {},
        "createToken": {"device_code": 0, "authorization_code": 0, "refresh_token": 0},
        "roleCredentials": {},
        "issuedCredentials": [],
    }


class Fake:
    """All state, behind one lock."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.lock = threading.Lock()
        self.counters = new_counters()
        self.faults = {}  # operation -> [error code, ...]
        self.clients = {}  # clientId -> registration
        self.devices = {}  # deviceCode -> device authorization
        self.pending_authz = {}  # request id -> authorize request awaiting the user
        self.codes = {}  # authorization code -> grant
        self.sessions = {}  # sign-in session id -> session
        self.access = {}  # access token -> {session, expires, revoked}
        self.refresh = {}  # refresh token -> {session, clientId, expires, state}
        self.pages = {}  # next token -> (kind, account id, offset)

    # -- bookkeeping -------------------------------------------------------------------------

    def count_call(self, op):
        self.counters["calls"][op] = self.counters["calls"].get(op, 0) + 1

    def count_error(self, op, code):
        errs = self.counters["errors"].setdefault(op, {})
        errs[code] = errs.get(code, 0) + 1

    def take_fault(self, op):
        queue = self.faults.get(op)
        if queue:
            return queue.pop(0)
        return None

    # -- sso-oidc ----------------------------------------------------------------------------

    def client(self, body):
        cid, secret = body.get("clientId"), body.get("clientSecret")
        reg = self.clients.get(cid) if isinstance(cid, str) else None
        if reg is None or not same(secret, reg["clientSecret"]):
            raise oidc_error("InvalidClientException", "Invalid client provided")
        if reg["secretExpiresAt"] <= time.time():
            raise oidc_error("InvalidClientException", "Client registration has expired")
        return reg

    def register_client(self, body, base):
        name, ctype = body.get("clientName"), body.get("clientType")
        if not isinstance(name, str) or not name or not isinstance(ctype, str):
            raise oidc_error("InvalidRequestException", "clientName and clientType are required")
        if ctype != "public":
            raise oidc_error("InvalidClientMetadataException", "clientType must be public")
        scopes = body.get("scopes") or []
        for s in scopes:
            if not isinstance(s, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+:[A-Za-z0-9_.:*-]+", s):
                raise oidc_error("InvalidScopeException", "Invalid scope requested")
        grants = body.get("grantTypes")
        if grants is not None:
            bad = [g for g in grants if g not in GRANT_SHORT]
            if bad or not grants:
                raise oidc_error("UnsupportedGrantTypeException", "Unsupported grant type")
        redirects = body.get("redirectUris") or []
        for uri in redirects:
            p = urllib.parse.urlsplit(uri) if isinstance(uri, str) else None
            ok = p is not None and p.fragment == "" and (
                p.scheme == "https" and p.hostname
                or p.scheme == "http" and p.hostname in LOOPBACK_HOSTS
            )
            if not ok:
                raise oidc_error("InvalidRedirectUriException", "Invalid redirect URI")
        if grants and "authorization_code" in grants and not redirects:
            raise oidc_error(
                "InvalidRequestException", "redirectUris are required for authorization_code"
            )
        now = int(time.time())
        reg = {
            "clientId": b64url_nopad(secrets.token_bytes(24)),
            "clientSecret": "eyJraWQiOiJrZXktMSIsImFsZyI6IkhTMzg0In0." + secrets.token_urlsafe(600),
            "clientName": name,
            "scopes": list(scopes),
            # A client registered without grantTypes is a device-flow client (the CLI's legacy
            # registration): it may use the device code and refresh token grants.
            "grantTypes": list(grants) if grants else [DEVICE_GRANT, "refresh_token"],
            "redirectUris": list(redirects),
            "issuedAt": now,
            "secretExpiresAt": now + int(self.cfg["client_secret_lifetime"]),
        }
        self.clients[reg["clientId"]] = reg
        out = {
            "clientId": reg["clientId"],
            "clientSecret": reg["clientSecret"],
            "clientIdIssuedAt": now,
            "clientSecretExpiresAt": reg["secretExpiresAt"],
        }
        if "authorization_code" in reg["grantTypes"]:
            out["authorizationEndpoint"] = f"{base}/authorize"
            out["tokenEndpoint"] = f"{base}/token"
        return out

    def start_device_authorization(self, body, base):
        reg = self.client(body)
        if DEVICE_GRANT not in reg["grantTypes"]:
            raise oidc_error("UnauthorizedClientException", "Client is not allowed this grant")
        start_url = body.get("startUrl")
        if not isinstance(start_url, str) or not start_url.startswith("https://"):
            raise oidc_error("InvalidRequestException", "Invalid start url")
        if self.cfg["start_url"] and start_url.rstrip("/") != self.cfg["start_url"].rstrip("/"):
            raise oidc_error("InvalidRequestException", "Invalid start url")
        while True:
            letters = "".join(secrets.choice(USER_CODE_ALPHABET) for _ in range(8))
            user_code = f"{letters[:4]}-{letters[4:]}"
            if not any(d["userCode"] == user_code for d in self.devices.values()):
                break
        device_code = secrets.token_urlsafe(64)
        lifetime = int(self.cfg["device_code_lifetime"])
        self.devices[device_code] = {
            "clientId": reg["clientId"],
            "userCode": user_code,
            "expires": time.time() + lifetime,
            "status": "approved" if self.cfg["device_auto_approve"] else "pending",
        }
        verification = f"{base}/device"
        return {
            "deviceCode": device_code,
            "userCode": user_code,
            "verificationUri": verification,
            "verificationUriComplete": with_query(verification, {"user_code": user_code}),
            "expiresIn": lifetime,
            "interval": int(self.cfg["device_interval"]),
        }

    def create_token(self, body):
        grant = body.get("grantType")
        reg = self.client(body)
        if grant not in GRANT_SHORT:
            raise oidc_error("UnsupportedGrantTypeException", "Unsupported grant type")
        if grant not in reg["grantTypes"]:
            raise oidc_error("UnauthorizedClientException", "Client is not allowed this grant")
        requested = body.get("scope")
        if requested and not set(requested) <= set(reg["scopes"]):
            raise oidc_error("InvalidScopeException", "Invalid scope requested")
        if grant == DEVICE_GRANT:
            out = self.device_grant(reg, body)
        elif grant == "authorization_code":
            out = self.code_grant(reg, body)
        else:
            out = self.refresh_grant(reg, body)
        out.pop("_session", None)
        self.counters["createToken"][GRANT_SHORT[grant]] += 1
        return out

    def new_session(self, reg, scopes):
        sid = uuid.uuid4().hex
        self.sessions[sid] = {"clientId": reg["clientId"], "scopes": list(scopes), "revoked": False}
        return sid

    def issue(self, reg, sid, refresh=True):
        now = time.time()
        lifetime = int(self.cfg["access_token_lifetime"])
        access = "aoa" + secrets.token_urlsafe(384)
        self.access[access] = {"session": sid, "expires": now + lifetime, "revoked": False}
        out = {"accessToken": access, "tokenType": "Bearer", "expiresIn": lifetime, "_session": sid}
        mode = self.cfg["refresh_tokens"]
        scoped = bool(self.sessions[sid]["scopes"])
        if refresh and "refresh_token" in reg["grantTypes"] and (
            mode == "always" or (mode == "scoped" and scoped)
        ):
            token = "aor" + secrets.token_urlsafe(384)
            self.refresh[token] = {
                "session": sid,
                "clientId": reg["clientId"],
                "expires": now + int(self.cfg["refresh_token_lifetime"]),
                "state": "live",
            }
            out["refreshToken"] = token
        return out

    def device_grant(self, reg, body):
        code = body.get("deviceCode")
        dev = self.devices.get(code) if isinstance(code, str) else None
        if dev is None or dev["clientId"] != reg["clientId"] or dev["status"] == "used":
            raise oidc_error("InvalidGrantException", "Invalid grant provided")
        if dev["expires"] <= time.time():
            raise oidc_error("ExpiredTokenException", "Device code has expired")
        if dev["status"] == "denied":
            raise oidc_error("AccessDeniedException", "Access denied")
        if dev["status"] == "pending":
            raise oidc_error("AuthorizationPendingException", "Authorization is still pending")
        dev["status"] = "used"
        return self.issue(reg, self.new_session(reg, reg["scopes"]))

    def code_grant(self, reg, body):
        code = body.get("code")
        grant = self.codes.get(code) if isinstance(code, str) else None
        if grant is None or grant["clientId"] != reg["clientId"]:
            raise oidc_error("InvalidGrantException", "Invalid grant provided")
        if grant["used"]:
            if self.cfg["revoke_on_code_replay"] and grant["session"]:
                self.revoke_session(grant["session"])
            raise oidc_error("InvalidGrantException", "Invalid grant provided")
        # One attempt per code, successful or not.
        grant["used"] = True
        if grant["expires"] <= time.time():
            raise oidc_error("InvalidGrantException", "Authorization code has expired")
        if body.get("redirectUri") != grant["redirectUri"]:
            raise oidc_error("InvalidGrantException", "Invalid redirect URI")
        verifier = body.get("codeVerifier")
        if not isinstance(verifier, str) or not re.fullmatch(r"[A-Za-z0-9._~-]{43,128}", verifier):
            raise oidc_error("InvalidGrantException", "Invalid code verifier")
        challenge = b64url_nopad(hashlib.sha256(verifier.encode()).digest())
        if not same(challenge, grant["challenge"]):
            raise oidc_error("InvalidGrantException", "Invalid code verifier")
        sid = self.new_session(reg, grant["scopes"])
        grant["session"] = sid
        return self.issue(reg, sid)

    def refresh_grant(self, reg, body):
        token = body.get("refreshToken")
        rt = self.refresh.get(token) if isinstance(token, str) else None
        if rt is None or rt["clientId"] != reg["clientId"] or rt["state"] != "live":
            raise oidc_error("InvalidGrantException", "Invalid refresh token provided")
        session = self.sessions[rt["session"]]
        if session["revoked"]:
            raise oidc_error("InvalidGrantException", "Invalid refresh token provided")
        if rt["expires"] <= time.time():
            raise oidc_error("InvalidGrantException", "Refresh token has expired")
        if self.cfg["rotate_refresh_tokens"]:
            rt["state"] = "rotated"
            return self.issue(reg, rt["session"])
        out = self.issue(reg, rt["session"], refresh=False)
        out["refreshToken"] = token
        return out

    def revoke_session(self, sid):
        self.sessions[sid]["revoked"] = True
        for t in self.access.values():
            if t["session"] == sid:
                t["revoked"] = True
        for t in self.refresh.values():
            if t["session"] == sid:
                t["state"] = "revoked"

    # -- the authorize step of the auth code flow -------------------------------------------

    def authorize_check(self, args):
        """The request of GET /authorize, validated. Raises a (status, html) pair for requests
        that may not be sent back to their redirect_uri; returns (request, error or None)."""
        reg = self.clients.get(args.get("client_id", ""))
        if reg is None:
            raise PageError(400, "Unknown client")
        redirect_uri = args.get("redirect_uri", "")
        if not any(redirect_matches(r, redirect_uri) for r in reg["redirectUris"]):
            raise PageError(400, "The redirect URI is not registered for this client")
        req = {
            "clientId": reg["clientId"],
            "redirectUri": redirect_uri,
            "state": args.get("state"),
        }
        if args.get("response_type") != "code":
            return req, "unsupported_response_type"
        if "authorization_code" not in reg["grantTypes"]:
            return req, "unauthorized_client"
        if args.get("code_challenge_method") != "S256":
            return req, "invalid_request"
        challenge = args.get("code_challenge", "").rstrip("=")
        if not re.fullmatch(r"[A-Za-z0-9_-]{43}", challenge):
            return req, "invalid_request"
        # The CLI sends the scopes space separated in "scopes" (not OAuth's "scope").
        raw = args.get("scopes", args.get("scope", ""))
        scopes = [s for s in raw.split(" ") if s]
        if not set(scopes) <= set(reg["scopes"]):
            return req, "invalid_scope"
        req["challenge"] = challenge
        req["scopes"] = scopes or list(reg["scopes"])
        return req, None

    def grant_code(self, req):
        code = secrets.token_urlsafe(48)
        self.codes[code] = {
            "clientId": req["clientId"],
            "redirectUri": req["redirectUri"],
            "challenge": req["challenge"],
            "scopes": req["scopes"],
            "expires": time.time() + int(self.cfg["auth_code_lifetime"]),
            "used": False,
            "session": None,
        }
        params = {"code": code}
        if req["state"] is not None:
            params["state"] = req["state"]
        return redirect(with_query(req["redirectUri"], params))

    # -- sso portal --------------------------------------------------------------------------

    def bearer(self, environ):
        values = environ.get("sso.bearer_token") or []
        if len(values) != 1:
            raise portal_error("UnauthorizedException", "Session token not found or invalid")
        t = self.access.get(values[0])
        if t is None or t["revoked"] or t["expires"] <= time.time():
            raise portal_error("UnauthorizedException", "Session token not found or invalid")
        session = self.sessions[t["session"]]
        if session["revoked"]:
            raise portal_error("UnauthorizedException", "Session token not found or invalid")
        if session["scopes"] and PORTAL_SCOPE not in session["scopes"]:
            raise portal_error("UnauthorizedException", "Session token not found or invalid")
        return t

    def account(self, account_id):
        for a in self.cfg["accounts"]:
            if a["accountId"] == account_id:
                return a
        return None

    def page(self, kind, account_id, items, args):
        raw_max = args.get("max_result")
        if raw_max is None:
            size = int(self.cfg["page_size"])
        else:
            try:
                size = int(raw_max)
            except ValueError:
                size = 0
            if not 1 <= size <= 100:
                raise portal_error("InvalidRequestException", "Invalid maxResults")
        offset = 0
        token = args.get("next_token")
        if token is not None:
            where = self.pages.get(token)
            if where is None or where[:2] != (kind, account_id):
                raise portal_error("InvalidRequestException", "Invalid nextToken")
            offset = where[2]
        out = items[offset : offset + size]
        nxt = None
        if offset + size < len(items):
            nxt = secrets.token_urlsafe(32)
            self.pages[nxt] = (kind, account_id, offset + size)
        return out, nxt

    def list_accounts(self, environ, args):
        self.bearer(environ)
        items = [
            {k: a[k] for k in ("accountId", "accountName", "emailAddress")}
            for a in self.cfg["accounts"]
        ]
        out, nxt = self.page("accounts", None, items, args)
        body = {"accountList": out}
        if nxt:
            body["nextToken"] = nxt
        return body

    def list_account_roles(self, environ, args):
        self.bearer(environ)
        account_id = args.get("account_id")
        if not account_id:
            raise portal_error("InvalidRequestException", "accountId is required")
        a = self.account(account_id)
        if a is None:
            raise portal_error("ResourceNotFoundException", "Account not found")
        items = [{"roleName": r, "accountId": account_id} for r in a["roles"]]
        out, nxt = self.page("roles", account_id, items, args)
        body = {"roleList": out}
        if nxt:
            body["nextToken"] = nxt
        return body

    def get_role_credentials(self, environ, args):
        self.bearer(environ)
        role, account_id = args.get("role_name"), args.get("account_id")
        if not role or not account_id:
            raise portal_error("InvalidRequestException", "roleName and accountId are required")
        a = self.account(account_id)
        if a is None or role not in a["roles"]:
            raise portal_error("ForbiddenException", "No access")
        expiration_ms = int((time.time() + int(self.cfg["credential_lifetime"])) * 1000)
        key_id = "ASIA" + "".join(secrets.choice(string.ascii_uppercase + "234567") for _ in range(16))
        secret = base64.b64encode(secrets.token_bytes(30)).decode()
        session_token = "IQoJb3JpZ2luX2VjE" + base64.b64encode(secrets.token_bytes(600)).decode()
        where = f"{account_id}/{role}"
        per = self.counters["roleCredentials"]
        per[where] = per.get(where, 0) + 1
        self.counters["issuedCredentials"].append(
            {"accountId": account_id, "roleName": role, "accessKeyId": key_id, "expiration": expiration_ms}
        )
        return {
            "roleCredentials": {
                "accessKeyId": key_id,
                "secretAccessKey": secret,
                "sessionToken": session_token,
                "expiration": expiration_ms,
            }
        }

    def logout(self, environ):
        t = self.bearer(environ)
        self.revoke_session(t["session"])
        return None

    # -- control -----------------------------------------------------------------------------

    def state(self):
        now = time.time()
        c = copy.deepcopy(self.counters)
        c["live"] = {
            "clients": sum(1 for r in self.clients.values() if r["secretExpiresAt"] > now),
            "sessions": sum(1 for s in self.sessions.values() if not s["revoked"]),
            "accessTokens": sum(
                1
                for t in self.access.values()
                if not t["revoked"] and t["expires"] > now and not self.sessions[t["session"]]["revoked"]
            ),
            "refreshTokens": sum(
                1 for t in self.refresh.values() if t["state"] == "live" and t["expires"] > now
            ),
            "pendingDeviceAuthorizations": sum(
                1 for d in self.devices.values() if d["status"] == "pending" and d["expires"] > now
            ),
        }
        return c

    def decide_devices(self, body, status):
        user_code = body.get("userCode")
        device_code = body.get("deviceCode")
        n = 0
        for code, d in self.devices.items():
            if d["status"] != "pending" or d["expires"] <= time.time():
                continue
            if user_code is not None and normalize_user_code(user_code) != d["userCode"]:
                continue
            if device_code is not None and device_code != code:
                continue
            d["status"] = status
            n += 1
        return n

    def revoke(self, body):
        n = 0
        if body.get("all"):
            for sid, s in self.sessions.items():
                if not s["revoked"]:
                    self.revoke_session(sid)
                    n += 1
        if "refreshToken" in body:
            rt = self.refresh.get(body["refreshToken"])
            if rt is not None and rt["state"] == "live":
                rt["state"] = "revoked"
                n += 1
        if body.get("refreshTokens"):
            for rt in self.refresh.values():
                if rt["state"] == "live":
                    rt["state"] = "revoked"
                    n += 1
        if "accessToken" in body:
            t = self.access.get(body["accessToken"])
            if t is not None and not t["revoked"]:
                t["revoked"] = True
                n += 1
        if body.get("accessTokens"):
            for t in self.access.values():
                if not t["revoked"]:
                    t["revoked"] = True
                    n += 1
        return n

    def expire(self, body):
        now = time.time()
        n = 0
        kinds = {
            "accessTokens": (self.access.values(), "expires"),
            "refreshTokens": (self.refresh.values(), "expires"),
            "deviceCodes": (self.devices.values(), "expires"),
            "authCodes": (self.codes.values(), "expires"),
            "clients": (self.clients.values(), "secretExpiresAt"),
        }
        unknown = set(body) - set(kinds)
        if unknown:
            raise ValueError(f"unknown kinds: {sorted(unknown)}")
        for kind, (items, field) in kinds.items():
            if body.get(kind):
                for item in items:
                    if item[field] > now:
                        item[field] = now
                        n += 1
        return n


class PageError(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status, self.message = status, message


def normalize_user_code(code):
    letters = re.sub(r"[^A-Za-z]", "", code).upper()
    return f"{letters[:4]}-{letters[4:]}"


def redirect_matches(registered, requested):
    """Exact match, or for http loopback URIs a match on everything but the port (RFC 8252 7.3):
    the CLI registers http://127.0.0.1/oauth/callback and authorizes with its listener's port."""
    if registered == requested:
        return True
    try:
        r, q = urllib.parse.urlsplit(registered), urllib.parse.urlsplit(requested)
        q.port  # noqa: B018 (raises on a malformed port)
    except ValueError:
        return False
    return (
        r.scheme == q.scheme == "http"
        and r.hostname in LOOPBACK_HOSTS
        and r.hostname == q.hostname
        and r.path == q.path
        and r.query == q.query
        and q.fragment == ""
    )


def read_json(request):
    raw = request.get_data()
    if not raw:
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise oidc_error("InvalidRequestException", "The request body is not a JSON object")
    return body


class App:
    def __init__(self, fake):
        self.fake = fake

    def __call__(self, environ, start_response):
        request = Request(environ)
        try:
            response = self.dispatch(request)
        except Exception as e:  # the type and where only: a message could hold a token
            where = traceback.extract_tb(e.__traceback__)[-1]
            print(
                f"sso_server: internal error: {type(e).__name__} at line {where.lineno} ({where.name})",
                file=sys.stderr,
                flush=True,
            )
            response = ApiError("oidc", "InternalServerException", "Internal error").response()
        return response(environ, start_response)

    def dispatch(self, request):
        method, path = request.method, request.path
        base = request.host_url.rstrip("/")
        routes = {
            ("POST", "/client/register"): ("RegisterClient", lambda f, b: f.register_client(b, base)),
            ("POST", "/device_authorization"): (
                "StartDeviceAuthorization",
                lambda f, b: f.start_device_authorization(b, base),
            ),
            ("POST", "/token"): ("CreateToken", lambda f, b: f.create_token(b)),
            ("GET", "/assignment/accounts"): (
                "ListAccounts",
                lambda f, b: f.list_accounts(request.environ, request.args),
            ),
            ("GET", "/assignment/roles"): (
                "ListAccountRoles",
                lambda f, b: f.list_account_roles(request.environ, request.args),
            ),
            ("GET", "/federation/credentials"): (
                "GetRoleCredentials",
                lambda f, b: f.get_role_credentials(request.environ, request.args),
            ),
            ("POST", "/logout"): ("Logout", lambda f, b: f.logout(request.environ)),
        }
        if (method, path) in routes:
            op, handler = routes[(method, path)]
            return self.api(op, handler, request)
        if path == "/authorize" and method == "GET":
            return self.authorize(request)
        if path == "/authorize/decision" and method == "POST":
            return self.authorize_decision(request)
        if path == "/device" and method == "GET":
            return self.device_page(request)
        if path == "/device/decision" and method == "POST":
            return self.device_decision(request)
        if path == "/start" and method in ("GET", "HEAD"):
            return html_response("AWS access portal (local fake)", "<p>Sign in with the AWS CLI.</p>")
        if path.startswith("/_control/"):
            return self.control(request, path[len("/_control/") :])
        if any(p == path for _, p in routes):
            return json_response({"message": "Method not allowed"}, 405)
        return json_response({"message": "Not found"}, 404)

    def api(self, op, handler, request):
        api = "oidc" if op in OIDC_OPS else "portal"
        delay = float(self.fake.cfg["delays"].get(op, 0))
        if delay > 0:
            time.sleep(delay)
        f = self.fake
        with f.lock:
            f.count_call(op)
            try:
                fault = f.take_fault(op)
                if fault is not None:
                    raise ApiError(api, fault["error"], fault["message"], fault.get("status"))
                body = read_json(request) if request.method == "POST" and api == "oidc" else {}
                return json_response(handler(f, body))
            except ApiError as e:
                f.count_error(op, e.code)
                return e.response()

    def authorize(self, request):
        f = self.fake
        with f.lock:
            f.count_call("Authorize")
            try:
                req, error = f.authorize_check(request.args)
            except PageError as e:
                f.count_error("Authorize", "page:" + e.message)
                return html_response("Authorization failed", f"<p id=\"error\">{html.escape(e.message)}</p>", e.status)
            if error is None:
                mode = request.args.get("_auto") or f.cfg["authorize"]
                if mode == "approve":
                    return f.grant_code(req)
                if mode == "deny":
                    error = "access_denied"
            if error is not None:
                f.count_error("Authorize", error)
                params = {"error": error}
                if req["state"] is not None:
                    params["state"] = req["state"]
                return redirect(with_query(req["redirectUri"], params))
            rid = secrets.token_urlsafe(24)
            req["expires"] = time.time() + int(f.cfg["auth_code_lifetime"])
            f.pending_authz[rid] = req
            name = f.clients[req["clientId"]]["clientName"]
        scopes = " ".join(req["scopes"])
        return html_response(
            "Allow access?",
            f"<p>Allow <b id=\"client\">{html.escape(name)}</b> to access your data "
            f"(<span id=\"scopes\">{html.escape(scopes)}</span>)?</p>\n"
            "<form method=\"post\" action=\"/authorize/decision\">\n"
            f"<input type=\"hidden\" name=\"request\" value=\"{rid}\">\n"
            "<button type=\"submit\" id=\"allow\" name=\"decision\" value=\"allow\">Allow</button>\n"
            "<button type=\"submit\" id=\"deny\" name=\"decision\" value=\"deny\">Deny</button>\n"
            "</form>",
        )

    def authorize_decision(self, request):
        f = self.fake
        with f.lock:
            req = f.pending_authz.pop(request.form.get("request", ""), None)
            if req is None or req["expires"] <= time.time():
                return html_response("Authorization failed", "<p id=\"error\">Unknown or expired request</p>", 400)
            if request.form.get("decision") == "allow":
                return f.grant_code(req)
            f.count_error("Authorize", "access_denied")
            params = {"error": "access_denied"}
            if req["state"] is not None:
                params["state"] = req["state"]
            return redirect(with_query(req["redirectUri"], params))

    def device_page(self, request):
        code = request.args.get("user_code")
        if not code:
            return html_response(
                "Authorize request",
                "<form method=\"get\" action=\"/device\">\n"
                "<input id=\"user_code\" name=\"user_code\">\n"
                "<button type=\"submit\" id=\"next\">Next</button>\n</form>",
            )
        code = normalize_user_code(code)
        f = self.fake
        with f.lock:
            pending = any(
                d["userCode"] == code and d["status"] == "pending" and d["expires"] > time.time()
                for d in f.devices.values()
            )
        if not pending:
            return html_response("Authorization failed", "<p id=\"error\">Unknown or expired code</p>", 404)
        return html_response(
            "Authorize request",
            f"<p>Code: <b id=\"code\">{html.escape(code)}</b></p>\n"
            "<form method=\"post\" action=\"/device/decision\">\n"
            f"<input type=\"hidden\" name=\"user_code\" value=\"{html.escape(code)}\">\n"
            "<button type=\"submit\" id=\"allow\" name=\"decision\" value=\"allow\">Allow</button>\n"
            "<button type=\"submit\" id=\"deny\" name=\"decision\" value=\"deny\">Deny</button>\n"
            "</form>",
        )

    def device_decision(self, request):
        f = self.fake
        allow = request.form.get("decision") == "allow"
        with f.lock:
            n = f.decide_devices(
                {"userCode": request.form.get("user_code", "")}, "approved" if allow else "denied"
            )
        if n == 0:
            return html_response("Authorization failed", "<p id=\"error\">Unknown or expired code</p>", 404)
        title = "Request approved" if allow else "Request denied"
        return html_response(title, "<p id=\"done\">You can close this window.</p>")

    def control(self, request, what):
        f = self.fake
        try:
            body = json.loads(request.get_data() or b"{}")
            if not isinstance(body, dict):
                raise ValueError("the body is not a JSON object")
            with f.lock:
                if what == "config" and request.method == "GET":
                    return json_response(f.cfg)
                if what == "config" and request.method == "POST":
                    apply_config(f.cfg, body)
                    return json_response(f.cfg)
                if what == "state" and request.method == "GET":
                    return json_response(f.state())
                if what == "secrets" and request.method == "GET":
                    # Every token and client secret issued so far, so a test can search logs and
                    # files for them (this fake is test-only).
                    return json_response(
                        {
                            "accessTokens": list(f.access),
                            "refreshTokens": list(f.refresh),
                            "clientSecrets": [c.get("clientSecret") for c in f.clients.values()],
                        }
                    )
                if request.method != "POST":
                    return json_response({"message": "Not found"}, 404)
                if what == "reset":
                    f.counters = new_counters()
                    return json_response({})
                if what in ("device/approve", "device/deny"):
                    status = "approved" if what.endswith("approve") else "denied"
                    n = f.decide_devices(body, status)
                    named = "userCode" in body or "deviceCode" in body
                    return json_response({"count": n}, 404 if named and n == 0 else 200)
                if what == "revoke":
                    return json_response({"count": f.revoke(body)})
                if what == "expire":
                    return json_response({"count": f.expire(body)})
                if what == "fault":
                    op = body["operation"]
                    if op not in OIDC_OPS | PORTAL_OPS:
                        raise ValueError(f"unknown operation {op}")
                    fault = {
                        "error": body["error"],
                        "message": body.get("message", "Injected fault"),
                        "status": body.get("status"),
                    }
                    f.faults.setdefault(op, []).extend([fault] * int(body.get("count", 1)))
                    return json_response({"pending": len(f.faults[op])})
        except (ValueError, KeyError, TypeError) as e:
            return json_response({"message": f"bad control request: {e}"}, 400)
        return json_response({"message": "Not found"}, 404)


class Handler(WSGIRequestHandler):
    """Keeps the portal's bearer header, and logs no query strings.

    Werkzeug's server drops every header with an underscore in its name (several spellings
    would map to one CGI variable), and the portal's bearer token comes in exactly such a header,
    x-amz-sso_bearer_token. It is passed on under a key of its own, from that spelling only: a
    client that sends x-amz-sso-bearer-token is refused, as AWS refuses it."""

    def make_environ(self):
        environ = super().make_environ()
        environ["sso.bearer_token"] = self.headers.get_all("x-amz-sso_bearer_token") or []
        return environ

    def log_error(self, format, *args):
        # http.server's messages quote the request line, query string included.
        print(f"sso_server: HTTP error {args[0] if args else ''}", file=sys.stderr, flush=True)

    def log_request(self, code="-", size="-"):
        path = urllib.parse.urlsplit(self.path).path
        print(f"{self.command} {path} {getattr(code, 'value', code)}", file=sys.stderr, flush=True)


def main():
    try:
        cfg = load_config(sys.argv[1:])
    except (ValueError, OSError) as e:
        raise SystemExit(f"sso_server: bad configuration: {e}")
    app = App(Fake(cfg))
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Drives tests/py/sso_server.py with the real AWS clients, and fails on any mismatch.

botocore's own `sso-oidc` and `sso` clients (endpoint_url = the fake, us-east-1, unsigned as
botocore's SSO code makes them) go through every flow: client registration, the device code
grant (pending, slow down, denied, expired, approved through the control API and through the
verification page), the authorization code grant with PKCE built exactly as the AWS CLI v2 builds
it (its authorize URL, a loopback callback listener like its AuthCodeFetcher, state checked,
the code exchanged with the verifier; a wrong verifier, a wrong redirect URI and a replayed code
refused), refresh (rotation, revocation), the portal (pagination, role credentials, errors,
logout), 50 parallel GetRoleCredentials counted, and the credentials from GetRoleCredentials
used at moto STS for a chained AssumeRole. Then botocore's SSO credential provider end to end in
a temporary HOME ([sso-session] profile with token refresh, a legacy profile, a profile chained
with source_profile), and the installed AWS CLI v1.

usage: sso_selftest.py SSO_URL MOTO_URL
Prints "ok - ..." per check on stdout; exits 1 with "sso_selftest: FAIL: ..." on stderr.
"""
import atexit
import datetime
import hashlib
import http.server
import json
import os
import secrets
import shutil
import string
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from html.parser import HTMLParser

HERE = os.path.dirname(os.path.abspath(__file__))
SCRATCH = None
if __name__ == "__main__" and sys.argv[1:2] != ["--child"]:
    SCRATCH = tempfile.mkdtemp(prefix="sso-selftest-")
    atexit.register(shutil.rmtree, SCRATCH, ignore_errors=True)
    # No developer configuration or credentials: the SSO clients are unsigned, and the only
    # credentials anywhere below are the fake's.
    for k in list(os.environ):
        if k.startswith("AWS_"):
            del os.environ[k]
    os.environ["AWS_CONFIG_FILE"] = os.path.join(SCRATCH, "no-config")
    os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.path.join(SCRATCH, "no-credentials")
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"

import boto3  # noqa: E402
import botocore  # noqa: E402
from botocore.awsrequest import AWSResponse  # noqa: E402
from botocore.config import Config  # noqa: E402
from botocore.exceptions import ClientError  # noqa: E402
from botocore.utils import percent_encode_sequence  # noqa: E402

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
REGION = "us-east-1"
SCOPE = "sso:account:access"


class Mismatch(Exception):
    pass


def ok(msg):
    print(f"ok - {msg}", flush=True)


def check(cond, msg):
    if not cond:
        raise Mismatch(msg)


def control(path, body=None, method=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        f"{SSO}/_control/{path}", data=data, method=method or ("POST" if data else "GET")
    )
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def ctl(path, body=None):
    status, out = control(path, body)
    check(status == 200, f"control {path}: HTTP {status} {out}")
    return out


def fake_state():
    return ctl("state")


def expect_error(what, fn, code, status, oauth=None):
    """fn() must raise botocore's modeled error `code` with HTTP `status` (and, for sso-oidc,
    the OAuth `error` field)."""
    try:
        fn()
    except ClientError as e:
        got = e.response["Error"]["Code"]
        got_status = e.response["ResponseMetadata"]["HTTPStatusCode"]
        check(got == code, f"{what}: expected {code}, got {got} ({e})")
        check(got_status == status, f"{what}: expected HTTP {status} for {code}, got {got_status}")
        if oauth is not None:
            check(
                e.response.get("error") == oauth and e.response.get("error_description"),
                f"{what}: expected error={oauth!r} and an error_description, got {e.response}",
            )
        ok(f"{what}: {code} (HTTP {status})")
        return e
    raise Mismatch(f"{what}: expected {code}, the call succeeded")


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


def fetch(url, data=None, follow=True, headers=None):
    """(status, headers, body) of one request; redirects not followed unless `follow`."""
    opener = urllib.request.build_opener() if follow else urllib.request.build_opener(NoRedirect)
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    req = urllib.request.Request(url, data=body, headers=headers or {})
    try:
        with opener.open(req) as r:
            return r.status, r.headers, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode()


class Form(HTMLParser):
    """The first form of a page: its action and its hidden inputs, and the ids in the page."""

    def __init__(self, text):
        super().__init__()
        self.action, self.hidden, self.ids = None, {}, set()
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "form" and self.action is None:
            self.action = a.get("action")
        if tag == "input" and a.get("type") == "hidden":
            self.hidden[a["name"]] = a.get("value", "")


# -- the AWS CLI v2's authorization code flow, rewritten -----------------------------------------


class Callback:
    """A loopback listener for the OAuth redirect, as the CLI v2's AuthCodeFetcher: every GET
    records code and state, or (None, None) when the redirect carries an error."""

    def __init__(self):
        outer = self
        self.results = []

        class H(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                q = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                if "error" in q:
                    outer.results.append((None, None, q["error"][0]))
                elif "code" in q and "state" in q:
                    outer.results.append((q["code"][0], q["state"][0], None))
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.end_headers()
                self.wfile.write(b"<html><body>You may close this window.</body></html>")

        self.server = http.server.HTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def redirect_uri_without_port(self):
        return "http://127.0.0.1/oauth/callback"

    def redirect_uri_with_port(self):
        return f"http://127.0.0.1:{self.server.server_port}/oauth/callback"


def pkce_pair():
    """The CLI v2's PKCE pair: 64 unreserved characters, and the base64url SHA-256 of them
    *with* its padding (the CLI trims the one '=' when it puts it in the URL)."""
    import base64

    verifier = "".join(
        secrets.choice(string.ascii_letters + string.digits + "-._~") for _ in range(64)
    )
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode()
    return verifier, challenge


def base_authorization_uri(oidc):
    """The CLI v2's trick: a RegisterClient call short-circuited in before-call, to learn the
    scheme and host the client resolves its endpoint to."""
    seen = {}

    def capture(params, **kwargs):
        parsed = urllib.parse.urlparse(params["url"])
        seen["base"] = f"{parsed.scheme}://{parsed.netloc}"
        return AWSResponse(None, 200, {}, None), {}

    oidc.meta.events.register("before-call", capture)
    oidc.register_client(clientName="temp", clientType="public")
    oidc.meta.events.unregister("before-call", capture)
    return seen["base"]


def authorization_uri(oidc, cb, client_id, state, challenge, scopes=None, method="S256"):
    query = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": cb.redirect_uri_with_port(),
        "state": state,
        "code_challenge_method": method,
    }
    query["scopes"] = " ".join(scopes) if scopes else SCOPE
    return (
        f"{base_authorization_uri(oidc)}/authorize?"
        f"{percent_encode_sequence(query)}"
        f"&code_challenge={challenge[:-1]}"
    )


# -- the checks -------------------------------------------------------------------------------


def main():
    global SSO, MOTO
    SSO, MOTO = sys.argv[1].rstrip("/"), sys.argv[2].rstrip("/")
    cfg = ctl("config")
    ctl("reset", {})
    accounts = cfg["accounts"]
    check(len(accounts) >= 2 and all(a["roles"] for a in accounts[:2]), "the fake needs two accounts with roles")
    start_url = cfg["start_url"] or "https://d-9067000000.awsapps.com/start"
    refresh_mode, rotate = cfg["refresh_tokens"], cfg["rotate_refresh_tokens"]
    lifetime = cfg["access_token_lifetime"]
    print(f"# fake: refresh_tokens={refresh_mode} rotate={rotate} access_token_lifetime={lifetime}")

    session = boto3.session.Session(region_name=REGION)
    unsigned = Config(
        signature_version=botocore.UNSIGNED, region_name=REGION, retries={"total_max_attempts": 1}
    )
    oidc = session.client("sso-oidc", endpoint_url=SSO, config=unsigned)
    sso = session.client("sso", endpoint_url=SSO, config=unsigned)

    # -- RegisterClient --
    legacy = oidc.register_client(clientName="botocore-client-1700000000", clientType="public")
    for k in ("clientId", "clientSecret", "clientIdIssuedAt", "clientSecretExpiresAt"):
        check(k in legacy, f"RegisterClient: no {k} in {sorted(legacy)}")
    check(
        legacy["clientIdIssuedAt"] < legacy["clientSecretExpiresAt"]
        and legacy["clientSecretExpiresAt"] > 1.6e9
        and legacy["clientSecretExpiresAt"] < 1e11,
        "RegisterClient: clientSecretExpiresAt is not epoch seconds after clientIdIssuedAt",
    )
    ok("RegisterClient (legacy device client, as the CLI registers without scopes)")
    scoped = oidc.register_client(clientName="botocore-client-corp", clientType="public", scopes=[SCOPE])
    ok("RegisterClient with scopes (as the CLI registers for an [sso-session])")
    expect_error(
        "RegisterClient clientType=confidential",
        lambda: oidc.register_client(clientName="x", clientType="confidential"),
        "InvalidClientMetadataException", 400, "invalid_client_metadata",
    )
    expect_error(
        "RegisterClient with a malformed scope",
        lambda: oidc.register_client(clientName="x", clientType="public", scopes=["nonsense"]),
        "InvalidScopeException", 400, "invalid_scope",
    )
    expect_error(
        "RegisterClient with a non-loopback http redirect URI",
        lambda: oidc.register_client(
            clientName="x", clientType="public", grantTypes=["authorization_code"],
            redirectUris=["http://evil.example/cb"], issuerUrl=start_url, scopes=[SCOPE],
        ),
        "InvalidRedirectUriException", 400, "invalid_redirect_uri",
    )

    # -- the device code grant --
    def start(reg):
        return oidc.start_device_authorization(
            clientId=reg["clientId"], clientSecret=reg["clientSecret"], startUrl=start_url
        )

    def device_token(reg, da):
        return oidc.create_token(
            grantType=DEVICE_GRANT, clientId=reg["clientId"], clientSecret=reg["clientSecret"],
            deviceCode=da["deviceCode"],
        )

    da = start(legacy)
    for k in ("deviceCode", "userCode", "verificationUri", "verificationUriComplete", "expiresIn", "interval"):
        check(k in da, f"StartDeviceAuthorization: no {k}")
    check(
        da["verificationUriComplete"].startswith(da["verificationUri"])
        and urllib.parse.quote(da["userCode"]) in da["verificationUriComplete"],
        "StartDeviceAuthorization: verificationUriComplete does not carry the user code",
    )
    ok(f"StartDeviceAuthorization (interval {da['interval']}, expiresIn {da['expiresIn']})")
    expect_error(
        "StartDeviceAuthorization with a wrong client secret",
        lambda: oidc.start_device_authorization(
            clientId=legacy["clientId"], clientSecret="nope", startUrl=start_url
        ),
        "InvalidClientException", 401, "invalid_client",
    )
    expect_error("CreateToken before approval", lambda: device_token(legacy, da),
                 "AuthorizationPendingException", 400, "authorization_pending")
    expect_error(
        "CreateToken with a wrong client secret",
        lambda: device_token({**legacy, "clientSecret": "nope"}, da),
        "InvalidClientException", 401, "invalid_client",
    )
    ctl("fault", {"operation": "CreateToken", "error": "SlowDownException", "count": 1})
    expect_error("CreateToken polled too fast (injected)", lambda: device_token(legacy, da),
                 "SlowDownException", 400, "slow_down")
    status, _, page = fetch(da["verificationUriComplete"])
    form = Form(page)
    check(status == 200 and "allow" in form.ids and da["userCode"] in page,
          f"verification page: HTTP {status}, ids {form.ids}")
    ok("verification page shows the user code and an Allow button")
    check(ctl("device/approve", {"userCode": da["userCode"]})["count"] == 1, "control approve: no code approved")
    tok = device_token(legacy, da)
    check(tok["tokenType"] == "Bearer" and tok["accessToken"] and tok["expiresIn"] == lifetime,
          f"CreateToken: unexpected {sorted(tok)} tokenType={tok.get('tokenType')} expiresIn={tok.get('expiresIn')}")
    check(("refreshToken" in tok) == (refresh_mode == "always"),
          f"CreateToken for a client without scopes: refreshToken present={'refreshToken' in tok} with refresh_tokens={refresh_mode}")
    ok("CreateToken (device_code) after approval through the control API")
    expect_error("CreateToken with a used device code", lambda: device_token(legacy, da),
                 "InvalidGrantException", 400, "invalid_grant")
    da2 = start(legacy)
    ctl("device/deny", {"deviceCode": da2["deviceCode"]})
    expect_error("CreateToken after the user denied", lambda: device_token(legacy, da2),
                 "AccessDeniedException", 400, "access_denied")
    da3 = start(legacy)
    ctl("expire", {"deviceCodes": True})
    expect_error("CreateToken with an expired device code", lambda: device_token(legacy, da3),
                 "ExpiredTokenException", 400, "expired_token")
    status, _ = control("device/approve", {"userCode": "BCDF-GHJK"})
    check(status == 404, f"control approve of an unknown code: HTTP {status}, expected 404")
    expect_error(
        "CreateToken with a scoped client's credentials and the legacy client's device code",
        lambda: device_token(scoped, start(legacy)),
        "InvalidGrantException", 400, "invalid_grant",
    )

    def device_login(reg):
        """A device login approved by clicking Allow on the verification page."""
        d = start(reg)
        s, _, page = fetch(f"{d['verificationUri']}?user_code={urllib.parse.quote(d['userCode'])}")
        f = Form(page)
        check(s == 200 and "allow" in f.ids and f.action, f"verification page: HTTP {s}")
        s, _, done = fetch(urllib.parse.urljoin(d["verificationUri"], f.action), {**f.hidden, "decision": "allow"})
        check(s == 200 and "approved" in done, f"Allow on the verification page: HTTP {s}")
        return device_token(reg, d)

    stok = device_login(scoped)
    check(("refreshToken" in stok) == (refresh_mode != "never"),
          f"CreateToken for a scoped client: refreshToken present={'refreshToken' in stok} with refresh_tokens={refresh_mode}")
    ok("device login approved by clicking Allow on the verification page")

    # -- the authorization code grant with PKCE, as the AWS CLI v2 --
    cb = Callback()
    pk = oidc.register_client(
        clientName="botocore-client-corp", clientType="public",
        grantTypes=["authorization_code", "refresh_token"],
        redirectUris=[cb.redirect_uri_without_port()], issuerUrl=start_url, scopes=[SCOPE],
    )
    check(pk.get("authorizationEndpoint") == f"{SSO}/authorize" and pk.get("tokenEndpoint") == f"{SSO}/token",
          f"RegisterClient for authorization_code: endpoints {pk.get('authorizationEndpoint')}, {pk.get('tokenEndpoint')}")
    ok("RegisterClient for the auth code grant (redirect URI without port, as the CLI v2)")

    def browser_code(auto="approve", **kw):
        """Opens the authorize URL (the fake answers with a 302 at once) and follows the
        redirect to the callback listener with urllib: (code, verifier) with the state checked."""
        ctl("config", {"authorize": auto})
        verifier, challenge = pkce_pair()
        state = uuid.uuid4()
        before = len(cb.results)
        status, _, _ = fetch(authorization_uri(oidc, cb, pk["clientId"], state, challenge, **kw))
        check(status == 200 and len(cb.results) == before + 1,
              f"authorize: HTTP {status}, callback hits {len(cb.results) - before}")
        code, got_state, error = cb.results[-1]
        if code is None:
            return None, error
        check(got_state == str(state), "authorize: the callback's state is not the one sent")
        return code, verifier

    def code_token(code, verifier, redirect=None, reg=None):
        reg = reg or pk
        return oidc.create_token(
            grantType="authorization_code", clientId=reg["clientId"], clientSecret=reg["clientSecret"],
            redirectUri=redirect or cb.redirect_uri_with_port(), codeVerifier=verifier, code=code,
        )

    code, verifier = browser_code()
    ok("authorize auto-approved: 302 to the loopback callback with code and the same state")
    ptok = code_token(code, verifier)
    check(ptok["accessToken"] and ptok["tokenType"] == "Bearer", "CreateToken (authorization_code): no token")
    check(("refreshToken" in ptok) == (refresh_mode != "never"), "CreateToken (authorization_code): refreshToken presence")
    ok("CreateToken (authorization_code) with the code verifier")
    code, verifier = browser_code()
    expect_error("CreateToken with a wrong code verifier", lambda: code_token(code, pkce_pair()[0]),
                 "InvalidGrantException", 400, "invalid_grant")
    expect_error("CreateToken with the right verifier after a failed attempt (codes are single use)",
                 lambda: code_token(code, verifier), "InvalidGrantException", 400, "invalid_grant")
    code, verifier = browser_code()
    expect_error("CreateToken with another redirect URI",
                 lambda: code_token(code, verifier, redirect="http://127.0.0.1:1/oauth/callback"),
                 "InvalidGrantException", 400, "invalid_grant")
    code, verifier = browser_code()
    expect_error("CreateToken with another client's credentials",
                 lambda: code_token(code, verifier, reg=scoped), "UnauthorizedClientException", 400)
    code, verifier = browser_code()
    rtok = code_token(code, verifier)
    sso.list_accounts(accessToken=rtok["accessToken"])
    expect_error("CreateToken with a replayed code", lambda: code_token(code, verifier),
                 "InvalidGrantException", 400, "invalid_grant")
    if cfg["revoke_on_code_replay"]:
        expect_error("ListAccounts with the token of a replayed code (revoked)",
                     lambda: sso.list_accounts(accessToken=rtok["accessToken"]), "UnauthorizedException", 401)
    code, error = browser_code(auto="deny")
    check(code is None and error == "access_denied", f"authorize denied: callback got {error}")
    ok("authorize denied: the callback gets error=access_denied (the CLI's handler sees no code)")
    code, error = browser_code(method="plain")
    check(code is None and error == "invalid_request", f"authorize with method plain: callback got {error}")
    ok("authorize with code_challenge_method=plain: error=invalid_request")
    # The page itself: Allow and Deny buttons, a POST that redirects.
    ctl("config", {"authorize": "page"})
    verifier, challenge = pkce_pair()
    state = str(uuid.uuid4())
    url = authorization_uri(oidc, cb, pk["clientId"], state, challenge)
    status, _, page = fetch(url, follow=False)
    form = Form(page)
    check(status == 200 and {"allow", "deny"} <= form.ids and form.action, f"authorize page: HTTP {status}, ids {form.ids}")
    status, headers, _ = fetch(urllib.parse.urljoin(SSO, form.action), {**form.hidden, "decision": "allow"}, follow=False)
    loc = urllib.parse.urlsplit(headers.get("Location", ""))
    q = urllib.parse.parse_qs(loc.query)
    check(status == 302 and f"{loc.scheme}://{loc.netloc}{loc.path}" == cb.redirect_uri_with_port()
          and q.get("state") == [state] and q.get("code"),
          f"Allow on the authorize page: HTTP {status}, Location {headers.get('Location')}")
    code_token(q["code"][0], verifier)
    ok("authorize page: Allow posts, 302 to redirect_uri?code=&state=, the code is exchanged")
    status, _, page = fetch(url, follow=False)
    form = Form(page)
    status, headers, _ = fetch(urllib.parse.urljoin(SSO, form.action), {**form.hidden, "decision": "deny"}, follow=False)
    q = urllib.parse.parse_qs(urllib.parse.urlsplit(headers.get("Location", "")).query)
    check(status == 302 and q.get("error") == ["access_denied"] and q.get("state") == [state], "Deny on the authorize page")
    ok("authorize page: Deny redirects with error=access_denied and the state")
    bad = url.replace(urllib.parse.quote("/oauth/callback", safe=""), urllib.parse.quote("/elsewhere", safe=""))
    check(bad != url, "could not build a URL with another redirect path")
    status, headers, _ = fetch(bad, follow=False)
    check(status == 400 and "Location" not in headers, f"authorize with an unregistered redirect URI: HTTP {status}")
    ok("authorize with an unregistered redirect URI: 400, no redirect")
    status, headers, _ = fetch(url.replace(pk["clientId"], legacy["clientId"]), follow=False)
    check(status == 400 and "Location" not in headers, f"authorize for a client without redirect URIs: HTTP {status}")
    ok("authorize for a device-only client: 400, no redirect")

    # -- refresh --
    def refresh(reg, token):
        return oidc.create_token(grantType="refresh_token", clientId=reg["clientId"],
                                 clientSecret=reg["clientSecret"], refreshToken=token)

    if refresh_mode != "never":
        old = ptok["refreshToken"]
        r1 = refresh(pk, old)
        check(r1["accessToken"] != ptok["accessToken"] and r1["expiresIn"] == lifetime, "refresh: no new access token")
        check("refreshToken" in r1, "refresh: no refreshToken in the response (botocore would lose it)")
        sso.list_accounts(accessToken=r1["accessToken"])
        if rotate:
            check(r1["refreshToken"] != old, "refresh: the refresh token was not rotated")
            expect_error("CreateToken with a rotated-out refresh token", lambda: refresh(pk, old),
                         "InvalidGrantException", 400, "invalid_grant")
        else:
            check(r1["refreshToken"] == old, "refresh without rotation: a different refresh token came back")
            refresh(pk, old)
            ok("refresh without rotation: the same refresh token, usable again")
        ok("CreateToken (refresh_token): a new access token that works at the portal")
        expect_error("CreateToken (refresh_token) by another client",
                     lambda: refresh(scoped, r1["refreshToken"]), "InvalidGrantException", 400, "invalid_grant")
        check(ctl("revoke", {"refreshToken": r1["refreshToken"]})["count"] == 1, "control revoke: nothing revoked")
        expect_error("CreateToken with a revoked refresh token", lambda: refresh(pk, r1["refreshToken"]),
                     "InvalidGrantException", 400, "invalid_grant")
    else:
        print("# refresh_tokens=never: refresh checks skipped")

    # -- the portal --
    token = stok["accessToken"]
    got, nxt, pages = [], None, 0
    while True:
        kw = {"nextToken": nxt} if nxt else {}
        page = sso.list_accounts(accessToken=token, maxResults=1, **kw)
        got += page["accountList"]
        pages += 1
        nxt = page.get("nextToken")
        if not nxt:
            break
    want = [{k: a[k] for k in ("accountId", "accountName", "emailAddress")} for a in accounts]
    check(got == want and pages == len(accounts), f"ListAccounts pages: {got} in {pages} pages")
    paged = [
        a for p in sso.get_paginator("list_accounts").paginate(accessToken=token, PaginationConfig={"PageSize": 2})
        for a in p["accountList"]
    ]
    check(paged == want, "ListAccounts through botocore's paginator")
    ok(f"ListAccounts: {len(want)} accounts, nextToken pagination by hand and by paginator")
    for a in accounts:
        roles = [
            r for p in sso.get_paginator("list_account_roles").paginate(
                accessToken=token, accountId=a["accountId"], PaginationConfig={"PageSize": 1})
            for r in p["roleList"]
        ]
        check(roles == [{"roleName": r, "accountId": a["accountId"]} for r in a["roles"]],
              f"ListAccountRoles {a['accountId']}: {roles}")
    ok("ListAccountRoles for every account, one role per page")
    expect_error("ListAccounts with a forged nextToken",
                 lambda: sso.list_accounts(accessToken=token, nextToken="forged"), "InvalidRequestException", 400)
    expect_error("ListAccountRoles of an unknown account",
                 lambda: sso.list_account_roles(accessToken=token, accountId="999999999999"),
                 "ResourceNotFoundException", 404)

    a1, a2 = accounts[0], accounts[1]
    ctl("reset", {})
    creds = sso.get_role_credentials(accessToken=token, accountId=a1["accountId"], roleName=a1["roles"][0])["roleCredentials"]
    check(creds["accessKeyId"].startswith("ASIA") and len(creds["accessKeyId"]) == 20, "GetRoleCredentials: access key id")
    check(len(creds["secretAccessKey"]) == 40 and len(creds["sessionToken"]) > 300, "GetRoleCredentials: secret/session token lengths")
    check(isinstance(creds["expiration"], int) and creds["expiration"] > 1e12, "GetRoleCredentials: expiration is not epoch ms")
    ok("GetRoleCredentials: ASIA key id, 40-char secret, session token, expiration in ms")
    expect_error("GetRoleCredentials of a role not assigned",
                 lambda: sso.get_role_credentials(accessToken=token, accountId=a2["accountId"], roleName="NotAssigned"),
                 "ForbiddenException", 403)
    expect_error("GetRoleCredentials with an unknown token",
                 lambda: sso.get_role_credentials(accessToken="aoa-unknown", accountId=a1["accountId"], roleName=a1["roles"][0]),
                 "UnauthorizedException", 401)
    status, _, _ = fetch(
        f"{SSO}/federation/credentials?role_name={a1['roles'][0]}&account_id={a1['accountId']}",
        headers={"x-amz-sso-bearer-token": token},
    )
    check(status == 401, f"GetRoleCredentials with the bearer in x-amz-sso-bearer-token (dashes): HTTP {status}")
    ok("GetRoleCredentials takes the bearer only from x-amz-sso_bearer_token")
    ctl("fault", {"operation": "GetRoleCredentials", "error": "TooManyRequestsException", "count": 1})
    expect_error("GetRoleCredentials throttled (injected)",
                 lambda: sso.get_role_credentials(accessToken=token, accountId=a1["accountId"], roleName=a1["roles"][0]),
                 "TooManyRequestsException", 429)
    with ThreadPoolExecutor(max_workers=50) as pool:
        keys = list(pool.map(
            lambda _: sso.get_role_credentials(accessToken=token, accountId=a2["accountId"], roleName=a2["roles"][0])["roleCredentials"]["accessKeyId"],
            range(50),
        ))
    st = fake_state()
    check(len(set(keys)) == 50, "50 parallel GetRoleCredentials: keys are not all distinct")
    check(st["roleCredentials"] == {f"{a1['accountId']}/{a1['roles'][0]}": 1, f"{a2['accountId']}/{a2['roles'][0]}": 50},
          f"counters per account/role: {st['roleCredentials']}")
    check(st["calls"]["GetRoleCredentials"] == 55 and st["errors"]["GetRoleCredentials"] == {
        "ForbiddenException": 1, "UnauthorizedException": 2, "TooManyRequestsException": 1},
          f"GetRoleCredentials calls/errors: {st['calls'].get('GetRoleCredentials')} {st['errors'].get('GetRoleCredentials')}")
    check({c["accessKeyId"] for c in st["issuedCredentials"]} == set(keys) | {creds["accessKeyId"]},
          "issued credentials in the state are not the ones returned")
    ok("50 parallel GetRoleCredentials: 50 distinct keys, counted per account/role, failures counted apart")

    # -- chained AssumeRole at moto with the portal's credentials --
    sts = session.client("sts", endpoint_url=MOTO, region_name=REGION,
                         aws_access_key_id=creds["accessKeyId"], aws_secret_access_key=creds["secretAccessKey"],
                         aws_session_token=creds["sessionToken"])
    sts.get_caller_identity()
    ar = sts.assume_role(RoleArn=f"arn:aws:iam::{a2['accountId']}:role/Deploy", RoleSessionName="sso-selftest")
    c2 = ar["Credentials"]
    ident = session.client("sts", endpoint_url=MOTO, region_name=REGION, aws_access_key_id=c2["AccessKeyId"],
                           aws_secret_access_key=c2["SecretAccessKey"], aws_session_token=c2["SessionToken"]).get_caller_identity()
    check(ident["Arn"] == f"arn:aws:sts::{a2['accountId']}:assumed-role/Deploy/sso-selftest", f"chained identity: {ident['Arn']}")
    ok(f"chained AssumeRole at moto with the portal's credentials: {ident['Arn']}")

    # -- expiry and logout --
    etok = device_login(scoped)
    ctl("expire", {"accessTokens": True})
    expect_error("ListAccounts with an access token expired through the control API",
                 lambda: sso.list_accounts(accessToken=etok["accessToken"]), "UnauthorizedException", 401)
    if "refreshToken" in etok:
        fresh = refresh(scoped, etok["refreshToken"])
        sso.list_accounts(accessToken=fresh["accessToken"])
        ok("an expired access token is replaced through its refresh token")
        etok = {**etok, **fresh}
    else:
        etok = device_login(scoped)
    sso.logout(accessToken=etok["accessToken"])
    ok("Logout")
    expect_error("ListAccounts after Logout", lambda: sso.list_accounts(accessToken=etok["accessToken"]),
                 "UnauthorizedException", 401)
    if "refreshToken" in etok:
        expect_error("CreateToken (refresh_token) after Logout", lambda: refresh(scoped, etok["refreshToken"]),
                     "InvalidGrantException", 400, "invalid_grant")

    botocore_provider(cfg, start_url, accounts, oidc, scoped, legacy, device_login, refresh_mode, rotate)
    cli_v1(cfg, start_url, accounts, legacy, start, device_login)


def iso(ts):
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def aws_home():
    home = os.path.join(SCRATCH, "home")
    return home


def child_env(home):
    return {
        "PATH": os.environ.get("PATH", ""),
        "HOME": home,
        "AWS_ENDPOINT_URL_SSO": SSO,
        "AWS_ENDPOINT_URL_SSO_OIDC": SSO,
        "AWS_ENDPOINT_URL_STS": MOTO,
        "AWS_EC2_METADATA_DISABLED": "true",
        "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
    }


def run_child(home, profile):
    p = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", profile],
                       env=child_env(home), capture_output=True, text=True, timeout=300)
    if p.returncode == 0:
        return json.loads(p.stdout.strip().splitlines()[-1]), p
    return None, p


def botocore_provider(cfg, start_url, accounts, oidc, scoped, legacy, device_login, refresh_mode, rotate):
    """botocore's SSO credential provider against the fake, in a child with a temporary HOME
    (botocore fixes ~/.aws/sso/cache when it is imported)."""
    home = aws_home()
    cache = os.path.join(home, ".aws", "sso", "cache")
    os.makedirs(cache, mode=0o700)
    a1, a2 = accounts[0], accounts[1]
    a3 = accounts[2] if len(accounts) > 2 else accounts[0]
    with open(os.path.join(home, ".aws", "config"), "w") as f:
        f.write(f"""[profile dev]
sso_session = corp
sso_account_id = {a1['accountId']}
sso_role_name = {a1['roles'][0]}
region = us-east-1

[profile chained]
source_profile = dev
role_arn = arn:aws:iam::{a2['accountId']}:role/Deploy
role_session_name = sso-chained
region = us-east-1

[profile legacy]
sso_start_url = {start_url}
sso_region = us-east-1
sso_account_id = {a3['accountId']}
sso_role_name = {a3['roles'][-1]}
region = us-east-1

[sso-session corp]
sso_start_url = {start_url}
sso_region = us-east-1
sso_registration_scopes = {SCOPE}
""")
    # The token cache as the CLI v2 writes it after `aws sso login`: keyed by sha1 of the session
    # name ([sso-session]) or of the start URL (legacy profile).
    tok = device_login(scoped)
    now = datetime.datetime.now(datetime.timezone.utc).timestamp()
    corp = {
        "startUrl": start_url,
        "region": REGION,
        "accessToken": tok["accessToken"],
        # Inside botocore's 15-minute refresh window when a refresh token exists: it refreshes.
        "expiresAt": iso(now + 300 if "refreshToken" in tok else now + tok["expiresIn"]),
        "clientId": scoped["clientId"],
        "clientSecret": scoped["clientSecret"],
        "registrationExpiresAt": iso(scoped["clientSecretExpiresAt"]),
    }
    if "refreshToken" in tok:
        corp["refreshToken"] = tok["refreshToken"]
    corp_file = os.path.join(cache, hashlib.sha1(b"corp").hexdigest() + ".json")
    with open(corp_file, "w") as f:
        json.dump(corp, f)
    # The legacy profile: a token from the legacy device client, cached under sha1(start URL).
    d = oidc.start_device_authorization(clientId=legacy["clientId"], clientSecret=legacy["clientSecret"], startUrl=start_url)
    ctl("device/approve", {"deviceCode": d["deviceCode"]})
    ltok = oidc.create_token(grantType=DEVICE_GRANT, clientId=legacy["clientId"], clientSecret=legacy["clientSecret"], deviceCode=d["deviceCode"])
    with open(os.path.join(cache, hashlib.sha1(start_url.encode()).hexdigest() + ".json"), "w") as f:
        json.dump({"startUrl": start_url, "region": REGION, "accessToken": ltok["accessToken"],
                   "expiresAt": iso(now + ltok["expiresIn"])}, f)

    ctl("reset", {})
    out, p = run_child(home, "dev")
    check(out is not None, f"botocore SSO provider (profile dev) failed:\n{p.stderr}")
    st = fake_state()
    issued = {c["accessKeyId"]: (c["accountId"], c["roleName"]) for c in st["issuedCredentials"]}
    check(issued.get(out["accessKeyId"]) == (a1["accountId"], a1["roles"][0]),
          f"profile dev: key {out['accessKeyId']} not issued for {a1['accountId']}/{a1['roles'][0]}")
    check(st["roleCredentials"] == {f"{a1['accountId']}/{a1['roles'][0]}": 1}, f"profile dev: GetRoleCredentials {st['roleCredentials']}")
    ok(f"boto3 profile with [sso-session]: GetRoleCredentials once, caller {out['arn']}")
    with open(corp_file) as f:
        after = json.load(f)
    if "refreshToken" in tok:
        check(st["createToken"]["refresh_token"] == 1, f"botocore did not refresh once: {st['createToken']}")
        check(after["accessToken"] != corp["accessToken"], "botocore did not write the refreshed token to its cache")
        check(after.get("refreshToken") and (after["refreshToken"] != corp["refreshToken"]) == bool(rotate),
              "botocore's cache does not hold the (rotated) refresh token")
        if rotate:
            expect_error("the refresh token botocore rotated out",
                         lambda: oidc.create_token(grantType="refresh_token", clientId=scoped["clientId"],
                                                   clientSecret=scoped["clientSecret"], refreshToken=corp["refreshToken"]),
                         "InvalidGrantException", 400, "invalid_grant")
        ok("botocore refreshed the token inside its window through CreateToken (refresh_token) and cached the result")
    else:
        check(st["createToken"]["refresh_token"] == 0, "botocore refreshed without a refresh token")

    out, p = run_child(home, "chained")
    check(out is not None, f"boto3 chained profile failed:\n{p.stderr}")
    check(out["arn"] == f"arn:aws:sts::{a2['accountId']}:assumed-role/Deploy/sso-chained", f"chained profile: {out['arn']}")
    ok(f"boto3 profile chained on the SSO profile (source_profile): {out['arn']}")

    out, p = run_child(home, "legacy")
    check(out is not None, f"boto3 legacy SSO profile failed:\n{p.stderr}")
    st = fake_state()
    issued = {c["accessKeyId"]: (c["accountId"], c["roleName"]) for c in st["issuedCredentials"]}
    check(issued.get(out["accessKeyId"]) == (a3["accountId"], a3["roles"][-1]), "legacy profile: key not issued for its role")
    ok("boto3 legacy SSO profile (sso_start_url in the profile, cache keyed by start URL)")

    ctl("revoke", {"all": True})
    ctl("expire", {"accessTokens": True})
    out, p = run_child(home, "dev")
    check(out is None and ("UnauthorizedSSOTokenError" in p.stderr or "TokenRetrievalError" in p.stderr),
          f"boto3 after every token was revoked: expected UnauthorizedSSOTokenError, got rc {p.returncode}:\n{p.stderr}")
    ok("boto3 after revocation: " + p.stderr.strip().splitlines()[-1][:120])
    return home


def cli_v1(cfg, start_url, accounts, legacy, start, device_login):
    """The installed AWS CLI v1: no `sso login` in it, but its generated sso/sso-oidc commands
    and its credential chain (botocore's SSO provider) work against the fake."""
    home = aws_home()
    env = child_env(home)

    def aws(*args):
        return subprocess.run(["aws", *args], env=env, capture_output=True, text=True, timeout=300)

    p = aws("--version")
    version = (p.stdout or p.stderr).strip()
    if p.returncode != 0:
        raise Mismatch(f"aws --version failed: {p.stderr}")
    p = aws("sso", "login", "--help")
    has_login = p.returncode == 0
    print(f"# {version}: `aws sso login` {'exists' if has_login else 'does not exist (CLI v1 has no SSO login)'}")
    if has_login:
        print("# `aws sso login` exists in this CLI; not driven here (it opens a browser)")
    # Its credential chain: a fresh token for the [sso-session] (every token was revoked above).
    with open(os.path.join(home, ".aws", "sso", "cache", hashlib.sha1(b"corp").hexdigest() + ".json")) as f:
        corp = json.load(f)
    scoped_reg = {"clientId": corp["clientId"], "clientSecret": corp["clientSecret"]}
    tok = device_login(scoped_reg)
    now = datetime.datetime.now(datetime.timezone.utc).timestamp()
    corp.update(accessToken=tok["accessToken"], expiresAt=iso(now + tok["expiresIn"]))
    corp.pop("refreshToken", None)
    if "refreshToken" in tok:
        corp["refreshToken"] = tok["refreshToken"]
    with open(os.path.join(home, ".aws", "sso", "cache", hashlib.sha1(b"corp").hexdigest() + ".json"), "w") as f:
        json.dump(corp, f)
    a2 = accounts[1]
    p = aws("sts", "get-caller-identity", "--profile", "chained", "--output", "json")
    check(p.returncode == 0, f"aws sts get-caller-identity --profile chained: rc {p.returncode}\n{p.stderr}")
    arn = json.loads(p.stdout)["Arn"]
    check(arn == f"arn:aws:sts::{a2['accountId']}:assumed-role/Deploy/sso-chained", f"CLI v1 chained: {arn}")
    ok(f"aws (v1) sts get-caller-identity --profile chained: {arn}")
    p = aws("sso", "list-accounts", f"--access-token={tok['accessToken']}", "--region", REGION, "--output", "json")
    check(p.returncode == 0, f"aws sso list-accounts: rc {p.returncode}\n{p.stderr}")
    ids = [a["accountId"] for a in json.loads(p.stdout)["accountList"]]
    check(ids == [a["accountId"] for a in accounts], f"aws sso list-accounts: {ids}")
    ok("aws (v1) sso list-accounts (AWS_ENDPOINT_URL_SSO, the CLI's own pagination)")
    d = start(legacy)
    # --opt=value: the random ids may begin with "-", which argparse would take for an option.
    p = aws("sso-oidc", "create-token", f"--client-id={legacy['clientId']}", f"--client-secret={legacy['clientSecret']}",
            f"--grant-type={DEVICE_GRANT}", f"--device-code={d['deviceCode']}", "--region", REGION)
    check(p.returncode != 0 and "AuthorizationPendingException" in p.stderr,
          f"aws sso-oidc create-token before approval: rc {p.returncode}\n{p.stderr}")
    ok("aws (v1) sso-oidc create-token before approval: AuthorizationPendingException")
    ctl("device/approve", {"deviceCode": d["deviceCode"]})
    p = aws("sso-oidc", "create-token", f"--client-id={legacy['clientId']}", f"--client-secret={legacy['clientSecret']}",
            f"--grant-type={DEVICE_GRANT}", f"--device-code={d['deviceCode']}", "--region", REGION, "--output", "json")
    check(p.returncode == 0 and json.loads(p.stdout).get("accessToken"), f"aws sso-oidc create-token: rc {p.returncode}\n{p.stderr}")
    ok("aws (v1) sso-oidc create-token after approval: an access token")


def child(profile):
    """In a temporary HOME: resolve `profile` through boto3's default chain and call
    GetCallerIdentity; print the key id and ARN as JSON."""
    import boto3 as b3

    try:
        s = b3.Session(profile_name=profile)
        creds = s.get_credentials().get_frozen_credentials()
        ident = s.client("sts").get_caller_identity()
    except Exception as e:  # the parent asserts on the error's type
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(3)
    print(json.dumps({"accessKeyId": creds.access_key, "arn": ident["Arn"], "account": ident["Account"]}))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2])
        sys.exit(0)
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    try:
        main()
    except Mismatch as e:
        print(f"sso_selftest: FAIL: {e}", file=sys.stderr)
        sys.exit(1)
    except ClientError as e:
        print(f"sso_selftest: FAIL: unexpected error from a client: {e}", file=sys.stderr)
        sys.exit(1)
    print("sso_selftest: all checks passed")

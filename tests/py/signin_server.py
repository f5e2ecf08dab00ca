#!/usr/bin/env python3
"""A local AWS Sign-In service (the OAuth 2.0 side `aws login` uses), strict where the real one
is, for credagent's tests.

What it checks, as the service's model and the AWS CLI v2's client say (awscli
customizations/login/utils.py; botocore credentials.py LoginCredentialFetcher; the `signin`
model's CreateOAuth2Token):

- GET /v1/authorize: response_type=code, client_id one of the two devtools clients,
  code_challenge_method literally "SHA-256", scope=openid, a state, a 43-character
  code_challenge, a redirect_uri. The browser stand-in signs in at once: 302 to
  redirect_uri?code=...&state=... (the same-device flow), or, for the cross-device client, a
  page showing base64("state=...&code=...") to paste.
- POST /v1/token: an unsigned JSON body (clientId, grantType, and code, codeVerifier,
  redirectUri, or refreshToken), and a DPoP header: a compact JWS with typ dpop+jwt, alg ES256,
  a P-256 jwk in the header, claims htm=POST, htu = this very URL, iat within 60 s, a jti never
  seen before, signed raw r||s by that key. A code is redeemed once, within 5 minutes, only
  with the verifier whose SHA-256 is its challenge and the same client and redirect_uri. A
  refresh token is bound to the thumbprint of the key that redeemed the code (cnf.jkt) and
  rotates: each refresh returns a new one and spends the old; an old or unknown one is
  TOKEN_EXPIRED. A login lasts SESSION_SECONDS (default 12 h).
- Errors are AccessDeniedException (x-amzn-ErrorType header and __type) with the modeled
  `error` and `message` members: 401 TOKEN_EXPIRED / AUTHCODE_EXPIRED, 403
  USER_CREDENTIALS_CHANGED / INSUFFICIENT_PERMISSIONS; a malformed request is 400
  ValidationException.

Test controls (POST, no body): /control/expire (every login is over: TOKEN_EXPIRED),
/control/password-changed (USER_CREDENTIALS_CHANGED), /control/deny (INSUFFICIENT_PERMISSIONS).
GET /control/log: every token request as JSON lines (grant, key thumbprint, outcome).

Credentials issued are random ASIA keys for the principal LOGIN_SESSION (default
arn:aws:iam::123456789012:user/Admin).

usage: signin_server.py   (prints the port it listens on, then serves until killed)
"""
import base64
import hashlib
import http.server
import json
import os
import secrets
import threading
import time
import urllib.parse

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

CLIENTS = ("arn:aws:signin:::devtools/same-device", "arn:aws:signin:::devtools/cross-device")
LOGIN_SESSION = os.environ.get("LOGIN_SESSION", "arn:aws:iam::123456789012:user/Admin")
SESSION_SECONDS = int(os.environ.get("SESSION_SECONDS", str(12 * 3600)))
EXPIRES_IN = int(os.environ.get("EXPIRES_IN", "900"))

LOCK = threading.Lock()
CODES = {}  # code -> dict(challenge, redirect_uri, client_id, expires)
REFRESH = {}  # refresh token -> dict(jkt, client_id, session_end, current: bool)
JTIS = set()
LOG = []
STATE = {"forced": None}  # None, or (status, error) every refresh gets


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def thumbprint(jwk):
    canonical = json.dumps(
        {"crv": jwk["crv"], "kty": jwk["kty"], "x": jwk["x"], "y": jwk["y"]},
        separators=(",", ":"),
        sort_keys=True,
    )
    return b64url(hashlib.sha256(canonical.encode()).digest())


class Refused(Exception):
    def __init__(self, status, error, message, kind="AccessDeniedException"):
        super().__init__(message)
        self.status, self.error, self.message, self.kind = status, error, message, kind


def check_dpop(proof, url):
    """The key's thumbprint, if `proof` is a valid DPoP proof for POST `url`."""
    try:
        head_b64, claims_b64, sig_b64 = proof.split(".")
        header = json.loads(unb64url(head_b64))
        claims = json.loads(unb64url(claims_b64))
        sig = unb64url(sig_b64)
    except Exception as e:  # noqa: BLE001 - anything malformed is the same refusal
        raise Refused(400, "INVALID_REQUEST", f"malformed DPoP proof: {e}", "ValidationException")
    bad = lambda why: Refused(400, "INVALID_REQUEST", f"DPoP proof {why}", "ValidationException")
    if header.get("typ") != "dpop+jwt" or header.get("alg") != "ES256":
        raise bad("header must say typ dpop+jwt, alg ES256")
    jwk = header.get("jwk") or {}
    if jwk.get("kty") != "EC" or jwk.get("crv") != "P-256" or "d" in jwk:
        raise bad("jwk must be a public P-256 key")
    if len(sig) != 64:
        raise bad("signature must be raw r||s (64 bytes)")
    x = int.from_bytes(unb64url(jwk["x"]), "big")
    y = int.from_bytes(unb64url(jwk["y"]), "big")
    key = ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()
    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    try:
        key.verify(der, f"{head_b64}.{claims_b64}".encode(), ec.ECDSA(hashes.SHA256()))
    except Exception:  # noqa: BLE001
        raise bad("signature does not verify")
    if claims.get("htm") != "POST":
        raise bad("htm must be POST")
    if claims.get("htu") != url:
        raise bad(f"htu {claims.get('htu')!r} is not {url!r}")
    if not isinstance(claims.get("iat"), int) or abs(claims["iat"] - time.time()) > 60:
        raise bad("iat is not now")
    jti = claims.get("jti")
    with LOCK:
        if not jti or jti in JTIS:
            raise bad("jti is missing or was used before")
        JTIS.add(jti)
    return thumbprint(jwk)


def issue(client_id, jkt, session_end, with_id_token):
    refresh = "rt-" + secrets.token_urlsafe(24)
    with LOCK:
        REFRESH[refresh] = {"jkt": jkt, "client_id": client_id, "session_end": session_end,
                            "current": True}
    out = {
        "accessToken": {
            "accessKeyId": "ASIA" + secrets.token_hex(8).upper(),
            "secretAccessKey": secrets.token_urlsafe(30),
            "sessionToken": secrets.token_urlsafe(60),
        },
        "tokenType": "aws_sigv4",
        "expiresIn": EXPIRES_IN,
        "refreshToken": refresh,
    }
    if with_id_token:
        claims = {"sub": LOGIN_SESSION, "aud": "arn:aws:signin:::cli/same-device",
                  "iss": "https://signin.aws.amazon.com/signin", "iat": int(time.time()),
                  "exp": int(time.time()) + 900}
        out["idToken"] = ".".join([b64url(b'{"alg":"none"}'), b64url(json.dumps(claims).encode()),
                                   b64url(b"fake")])
    return out


def token(body, jkt):
    grant = body.get("grantType")
    client_id = body.get("clientId")
    if client_id not in CLIENTS:
        raise Refused(400, "INVALID_REQUEST", "unknown clientId", "ValidationException")
    if grant == "authorization_code":
        with LOCK:
            entry = CODES.pop(body.get("code", ""), None)
        if entry is None:
            raise Refused(400, "INVALID_REQUEST", "unknown or redeemed code", "ValidationException")
        if entry["expires"] < time.time():
            raise Refused(401, "AUTHCODE_EXPIRED", "the authorization code has expired")
        verifier = body.get("codeVerifier", "")
        if not 43 <= len(verifier) <= 128:
            raise Refused(400, "INVALID_REQUEST", "codeVerifier length", "ValidationException")
        if b64url(hashlib.sha256(verifier.encode()).digest()) != entry["challenge"]:
            raise Refused(400, "INVALID_REQUEST", "PKCE verification failed", "ValidationException")
        if body.get("redirectUri") != entry["redirect_uri"] or client_id != entry["client_id"]:
            raise Refused(400, "INVALID_REQUEST", "redirectUri or clientId differ", "ValidationException")
        return issue(client_id, jkt, time.time() + SESSION_SECONDS, True)
    if grant == "refresh_token":
        forced = STATE["forced"]
        if forced:
            raise Refused(forced[0], forced[1], "refused by the test")
        presented = body.get("refreshToken", "")
        with LOCK:
            entry = REFRESH.get(presented)
            if entry is None or not entry["current"] or entry["session_end"] < time.time():
                raise Refused(401, "TOKEN_EXPIRED", "the refresh token has expired or was used")
            if entry["jkt"] != jkt:
                raise Refused(400, "INVALID_REQUEST", "DPoP key is not the refresh token's",
                              "ValidationException")
            if entry["client_id"] != client_id:
                raise Refused(400, "INVALID_REQUEST", "clientId differs", "ValidationException")
            entry["current"] = False
        return issue(client_id, jkt, entry["session_end"], False)
    raise Refused(400, "INVALID_REQUEST", f"grantType {grant!r}", "ValidationException")


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def base(self):
        return f"http://{self.headers.get('Host')}"

    def send(self, status, body, headers=()):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        if not any(k.lower() == "content-type" for k, _ in headers):
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/control/log":
            with LOCK:
                lines = "\n".join(json.dumps(l) for l in LOG)
            return self.send(200, lines.encode(), [("Content-Type", "text/plain")])
        if url.path != "/v1/authorize":
            return self.send(404, {"message": "not found"})
        q = dict(urllib.parse.parse_qsl(url.query))
        problems = []
        if q.get("response_type") != "code":
            problems.append("response_type")
        if q.get("client_id") not in CLIENTS:
            problems.append("client_id")
        if q.get("code_challenge_method") != "SHA-256":
            problems.append("code_challenge_method must be SHA-256")
        if q.get("scope") != "openid":
            problems.append("scope")
        if not q.get("state"):
            problems.append("state")
        if len(q.get("code_challenge", "")) != 43:
            problems.append("code_challenge")
        if not q.get("redirect_uri"):
            problems.append("redirect_uri")
        if problems:
            return self.send(400, {"message": "bad authorize request: " + ", ".join(problems)})
        code = "code-" + secrets.token_urlsafe(18)
        with LOCK:
            CODES[code] = {"challenge": q["code_challenge"], "redirect_uri": q["redirect_uri"],
                           "client_id": q["client_id"], "expires": time.time() + 300}
        if q["client_id"].endswith("cross-device"):
            pasted = base64.b64encode(
                urllib.parse.urlencode({"state": q["state"], "code": code}).encode()).decode()
            page = f"<html><body><p>Your code:</p><code id=code>{pasted}</code></body></html>"
            return self.send(200, page.encode(), [("Content-Type", "text/html")])
        sep = "&" if "?" in q["redirect_uri"] else "?"
        location = q["redirect_uri"] + sep + urllib.parse.urlencode(
            {"code": code, "state": q["state"]})
        self.send(302, b"", [("Location", location), ("Content-Type", "text/plain")])

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        path = urllib.parse.urlsplit(self.path).path
        if path.startswith("/control/"):
            forced = {"/control/expire": (401, "TOKEN_EXPIRED"),
                      "/control/password-changed": (403, "USER_CREDENTIALS_CHANGED"),
                      "/control/deny": (403, "INSUFFICIENT_PERMISSIONS"),
                      "/control/reset": None}
            if path not in forced:
                return self.send(404, {"message": "no such control"})
            STATE["forced"] = forced[path]
            return self.send(200, {})
        if path != "/v1/token":
            return self.send(404, {"message": "not found"})
        entry = {"grant": None, "jkt": None, "outcome": "ok"}
        try:
            if self.headers.get("Authorization"):
                raise Refused(400, "INVALID_REQUEST", "CreateOAuth2Token is unsigned",
                              "ValidationException")
            if not (self.headers.get("Content-Type") or "").startswith("application/json"):
                raise Refused(400, "INVALID_REQUEST", "Content-Type must be application/json",
                              "ValidationException")
            body = json.loads(raw)
            entry["grant"] = body.get("grantType")
            proof = self.headers.get("DPoP")
            if not proof:
                raise Refused(400, "INVALID_REQUEST", "no DPoP header", "ValidationException")
            entry["jkt"] = check_dpop(proof, self.base() + path)
            out = token(body, entry["jkt"])
        except Refused as r:
            entry["outcome"] = r.error
            with LOCK:
                LOG.append(entry)
            return self.send(r.status, {"__type": r.kind, "error": r.error, "message": r.message},
                             [("x-amzn-ErrorType", r.kind)])
        except (ValueError, KeyError) as e:
            entry["outcome"] = "malformed"
            with LOCK:
                LOG.append(entry)
            return self.send(400, {"__type": "ValidationException", "message": str(e)},
                             [("x-amzn-ErrorType", "ValidationException")])
        with LOCK:
            LOG.append(entry)
        self.send(200, out)


def main():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()

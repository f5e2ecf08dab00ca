#!/usr/bin/env python3
"""Checks tests/py/signin_server.py against the real client: botocore's LoginProvider (the
refresh side of `aws login`, botocore credentials.py, with awscrt for its DPoP proofs).

A login is made as the AWS CLI v2 makes it (awscli customizations/login/utils.py: a P-256 key,
PKCE with the method "SHA-256", the authorize URL, the code redeemed with a DPoP proof), and
written where and as the CLI writes it (~/.aws/login/cache/<sha256 of login_session>.json with
the key as a SEC1 "EC PRIVATE KEY" PEM; login_session in the profile). Then boto3, in a
temporary HOME, resolves credentials for that profile: botocore must refresh through the fake
(its own DPoP proof and request accepted), store the rotated refresh token, refresh again with
it, and report TOKEN_EXPIRED and USER_CREDENTIALS_CHANGED with its own messages. A proof
signed by another key, a replayed proof and a spent refresh token are refused by the fake.

usage: signin_selftest.py SIGNIN_URL
Prints "ok - ..." per check; exits 1 with "signin_selftest: FAIL: ..." on stderr.
"""
import base64
import datetime
import hashlib
import json
import os
import secrets
import shutil
import string
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

CLIENT = "arn:aws:signin:::devtools/same-device"


def fail(why):
    print(f"signin_selftest: FAIL: {why}", file=sys.stderr)
    sys.exit(1)


def ok(what):
    print(f"ok - {what}", flush=True)


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def dpop(key, url, jti=None):
    nums = key.public_key().public_numbers()
    jwk = {"kty": "EC", "x": b64url(nums.x.to_bytes(32, "big")),
           "y": b64url(nums.y.to_bytes(32, "big")), "crv": "P-256"}
    header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": jwk}
    claims = {"htm": "POST", "htu": url, "iat": int(time.time()), "jti": jti or str(uuid.uuid4())}
    signing_input = (b64url(json.dumps(header, separators=(",", ":")).encode()) + "." +
                     b64url(json.dumps(claims, separators=(",", ":")).encode()))
    r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return signing_input + "." + b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def post_token(base, body, proof):
    req = urllib.request.Request(f"{base}/v1/token", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json", "DPoP": proof})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def login(base):
    """A login as the AWS CLI v2 makes it: (key, token answer)."""
    key = ec.generate_private_key(ec.SECP256R1())
    alphabet = string.ascii_letters + string.digits + "-._~"
    verifier = "".join(secrets.choice(alphabet) for _ in range(64))
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode()[:-1]
    state = str(uuid.uuid4())
    redirect = "http://127.0.0.1:9/oauth/callback"
    query = urllib.parse.urlencode({"response_type": "code", "client_id": CLIENT, "state": state,
                                    "code_challenge_method": "SHA-256", "scope": "openid",
                                    "redirect_uri": redirect}, quote_via=urllib.parse.quote)
    url = f"{base}/v1/authorize?{query}&code_challenge={challenge}"
    opener = urllib.request.build_opener(NoRedirect)
    try:
        opener.open(url, timeout=10)
        fail("authorize did not redirect")
    except urllib.error.HTTPError as e:
        if e.code != 302:
            fail(f"authorize answered {e.code}")
        back = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(e.headers["Location"]).query))
    if back.get("state") != state:
        fail("authorize did not return the state")
    status, answer = post_token(base, {"clientId": CLIENT, "grantType": "authorization_code",
                                       "code": back["code"], "codeVerifier": verifier,
                                       "redirectUri": redirect}, dpop(key, f"{base}/v1/token"))
    if status != 200:
        fail(f"code exchange answered {status}: {answer}")
    # The same code twice is refused (a code is redeemed once).
    status, _ = post_token(base, {"clientId": CLIENT, "grantType": "authorization_code",
                                  "code": back["code"], "codeVerifier": verifier,
                                  "redirectUri": redirect}, dpop(key, f"{base}/v1/token"))
    if status == 200:
        fail("a code was redeemed twice")
    return key, answer


def main():
    base = sys.argv[1].rstrip("/")
    key, answer = login(base)
    ok("a login as the AWS CLI makes it: PKCE SHA-256, the code redeemed once with DPoP")
    sub = json.loads(base64.urlsafe_b64decode(answer["idToken"].split(".")[1] + "=="))["sub"]

    # Refusals the fake owes: another key, a replayed proof.
    other = ec.generate_private_key(ec.SECP256R1())
    status, body = post_token(base, {"clientId": CLIENT, "grantType": "refresh_token",
                                     "refreshToken": answer["refreshToken"]},
                              dpop(other, f"{base}/v1/token"))
    if status == 200:
        fail("a refresh token was accepted with another key's proof")
    proof = dpop(key, f"{base}/v1/token")
    status, first = post_token(base, {"clientId": CLIENT, "grantType": "refresh_token",
                                      "refreshToken": answer["refreshToken"]}, proof)
    if status != 200:
        fail(f"refresh answered {status}: {first}")
    status, _ = post_token(base, {"clientId": CLIENT, "grantType": "refresh_token",
                                  "refreshToken": first["refreshToken"]}, proof)
    if status == 200:
        fail("a DPoP proof was accepted twice")
    status, body = post_token(base, {"clientId": CLIENT, "grantType": "refresh_token",
                                     "refreshToken": answer["refreshToken"]},
                              dpop(key, f"{base}/v1/token"))
    if status != 401 or body.get("error") != "TOKEN_EXPIRED":
        fail(f"a spent refresh token answered {status} {body}")
    ok("another key's proof, a replayed proof and a spent refresh token are refused")

    # The cache and config as the CLI writes them, with credentials already expired.
    home = tempfile.mkdtemp(prefix="signin-selftest-")
    try:
        for k in list(os.environ):
            if k.startswith("AWS_"):
                del os.environ[k]
        os.environ["HOME"] = home
        os.environ["AWS_CONFIG_FILE"] = os.path.join(home, "config")
        os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.path.join(home, "credentials")
        os.environ["AWS_ENDPOINT_URL_SIGNIN"] = base
        cache_dir = os.path.join(home, ".aws", "login", "cache")
        os.makedirs(cache_dir)
        with open(os.environ["AWS_CONFIG_FILE"], "w") as f:
            f.write(f"[profile dev]\nlogin_session = {sub}\nregion = us-east-1\n")
        pem = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption()).decode()
        past = (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=1))
        cached = {"accessToken": dict(first["accessToken"], accountId=sub.split(":")[4],
                                      expiresAt=past.strftime("%Y-%m-%dT%H:%M:%SZ")),
                  "tokenType": "aws_sigv4", "clientId": CLIENT,
                  "refreshToken": first["refreshToken"], "idToken": answer["idToken"],
                  "dpopKey": pem}
        path = os.path.join(cache_dir, hashlib.sha256(sub.encode()).hexdigest() + ".json")
        with open(path, "w") as f:
            json.dump(cached, f)

        import boto3
        import botocore.exceptions

        def resolve():
            return boto3.Session(profile_name="dev").get_credentials().get_frozen_credentials()

        creds = resolve()
        if creds.access_key == first["accessToken"]["accessKeyId"] or not creds.access_key.startswith("ASIA"):
            fail(f"botocore did not refresh through the fake: {creds.access_key}")
        with open(path) as f:
            after = json.load(f)
        if after["refreshToken"] == first["refreshToken"]:
            fail("botocore did not store the rotated refresh token")
        ok("botocore's LoginProvider refreshes through the fake: its DPoP proof and body accepted, the rotated refresh token stored")

        # Expire the stored credentials again: botocore refreshes with the rotated token.
        after["accessToken"]["expiresAt"] = past.strftime("%Y-%m-%dT%H:%M:%SZ")
        with open(path, "w") as f:
            json.dump(after, f)
        again = resolve()
        if again.access_key in (creds.access_key, first["accessToken"]["accessKeyId"]):
            fail("the second refresh returned old credentials")
        ok("a second refresh uses the rotated token")

        for control, needle in (("expire", "expired"), ("password-changed", "password")):
            urllib.request.urlopen(urllib.request.Request(f"{base}/control/{control}", data=b"",
                                                          method="POST"), timeout=10)
            with open(path) as f:
                now = json.load(f)
            now["accessToken"]["expiresAt"] = past.strftime("%Y-%m-%dT%H:%M:%SZ")
            with open(path, "w") as f:
                json.dump(now, f)
            try:
                resolve()
                fail(f"botocore got credentials after /control/{control}")
            except botocore.exceptions.BotoCoreError as e:
                text = str(e)
                if needle not in text.lower() and "reauthenticate" not in text.lower():
                    fail(f"botocore's message for {control} does not say so: {text}")
            ok(f"botocore reports /control/{control} as a login to renew")
        urllib.request.urlopen(urllib.request.Request(f"{base}/control/reset", data=b"",
                                                      method="POST"), timeout=10)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    print("signin_selftest: all checks passed")


if __name__ == "__main__":
    main()

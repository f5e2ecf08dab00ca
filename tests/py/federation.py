#!/usr/bin/env python3
"""A local AWS federation endpoint (https://signin.aws.amazon.com/federation), for credctl
console's tests.

  GET /federation?Action=getSigninToken[&SessionDuration=N]&Session=JSON
      checks that Session holds sessionId, sessionKey and sessionToken and that SessionDuration,
      when given, is 900..43200, and answers {"SigninToken": <random>}; 400 otherwise. As strict
      as AWS: SessionDuration is refused for the credentials of a role assumed with temporary
      credentials (IAM User Guide, custom identity broker: "…you must call AssumeRole with
      long-term credentials … otherwise the call to the federation endpoint fails"), as the STS
      recorder's LOG.issued says of the sessionId (GET /_sts_log?path=… names that file).
  GET /federation?Action=login&Issuer=..&Destination=..&SigninToken=..
      200 "signed in" for a token it issued
  GET /_state
      {"calls": [{"duration": N, "sessionId": ID}], "tokens": [...], "logins": N}

Binds 127.0.0.1:0 itself and prints the port as its first line on stdout, as moto_sts.py does.
"""
import http.server
import json
import secrets
import sys
import threading
import urllib.parse

STATE = {"calls": [], "tokens": [], "logins": 0, "sts_issued": None}


def signed_with_temporary(access_key_id):
    """Whether STS issued these credentials for a request signed with temporary credentials."""
    path = STATE["sts_issued"]
    if not path:
        return False
    try:
        with open(path) as f:
            for line in f:
                entry = json.loads(line)
                if entry["access_key_id"] == access_key_id:
                    return entry["signed_with_temporary"]
    except FileNotFoundError:
        return False
    return False
LOCK = threading.Lock()


class Handler(http.server.BaseHTTPRequestHandler):
    def reply(self, status, body, kind="application/json"):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802 - the stdlib's name
        url = urllib.parse.urlsplit(self.path)
        q = dict(urllib.parse.parse_qsl(url.query))
        with LOCK:
            if url.path == "/_state":
                return self.reply(200, json.dumps(STATE))
            if url.path == "/_sts_log":
                STATE["sts_issued"] = q.get("path")
                return self.reply(200, "{}")
            if url.path != "/federation":
                return self.reply(404, "{}")
            if q.get("Action") == "getSigninToken":
                try:
                    session = json.loads(q["Session"])
                    assert {"sessionId", "sessionKey", "sessionToken"} <= session.keys()
                    duration = int(q["SessionDuration"]) if "SessionDuration" in q else None
                    if duration is not None:
                        assert 900 <= duration <= 43200
                        assert not signed_with_temporary(session["sessionId"]), (
                            "SessionDuration is not allowed for a role session obtained "
                            "with temporary credentials")
                except Exception as err:  # noqa: BLE001 - any bad input is a 400
                    return self.reply(400, json.dumps({"error": str(err)}))
                token = "fed-" + secrets.token_urlsafe(48)
                STATE["calls"].append({"duration": duration, "sessionId": session["sessionId"]})
                STATE["tokens"].append(token)
                return self.reply(200, json.dumps({"SigninToken": token}))
            if q.get("Action") == "login" and q.get("SigninToken") in STATE["tokens"]:
                STATE["logins"] += 1
                return self.reply(200, "signed in", "text/plain")
            return self.reply(403, "{}")

    def log_message(self, fmt, *args):
        # Method and path only: never the query (it carries the session and the token).
        sys.stderr.write("%s %s\n" % (self.command, urllib.parse.urlsplit(self.path).path))


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()

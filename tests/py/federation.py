#!/usr/bin/env python3
"""A local AWS federation endpoint (https://signin.aws.amazon.com/federation), for credctl
console's tests.

  GET /federation?Action=getSigninToken&SessionDuration=N&Session=JSON
      checks that Session holds sessionId, sessionKey and sessionToken and that SessionDuration is
      900..43200, and answers {"SigninToken": <random>}; 400 otherwise
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

STATE = {"calls": [], "tokens": [], "logins": 0}
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
            if url.path != "/federation":
                return self.reply(404, "{}")
            if q.get("Action") == "getSigninToken":
                try:
                    session = json.loads(q["Session"])
                    duration = int(q["SessionDuration"])
                    assert {"sessionId", "sessionKey", "sessionToken"} <= session.keys()
                    assert 900 <= duration <= 43200
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

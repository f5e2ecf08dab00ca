#!/usr/bin/env python3
"""A recording proxy in front of moto's STS, for credagent's tests.

Every request is appended to LOG as one JSON line with its STS form parameters (Action,
RoleArn, ExternalId, DurationSeconds, RoleSessionName, SerialNumber, ...), then forwarded to the
upstream moto server. Tests count AssumeRole calls here, outside the agent. Each set of
credentials STS issues is also appended to LOG.issued as {"access_key_id", "action",
"signed_with_temporary"}: whether the request that got them was signed with temporary
credentials (it carried X-Amz-Security-Token), which is what makes a role session "chained" for
AWS (the federation fake, tests/py/federation.py, reads it). Optional faults:
a file FAULTS holding lines "status delay_ms" makes the next requests fail with that status (or
hang for delay_ms) before any forwarding, one line per request.

Strict where moto is lenient, as real STS is: an AssumeRole signed with temporary credentials (role
chaining: a role's, an MFA session's, an Identity Center role's) with DurationSeconds above 3600 is
refused with STS's own ValidationError ("exceeds the 1 hour session limit for roles assumed by role
chaining"; IAM User Guide, "Role chaining"). tests/py/sts_strict_selftest.py checks this rule with
boto3.

The first line on stdout is the port it listens on, printed once the socket is listening: pass
LISTEN_PORT 0 to let the kernel pick a free one (tests do, so parallel tests never collide).

usage: sts_recorder.py LISTEN_PORT UPSTREAM_URL LOG [FAULTS]
"""
import http.server
import json
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

LISTEN, UPSTREAM, LOG = int(sys.argv[1]), sys.argv[2].rstrip("/"), sys.argv[3]
FAULTS = sys.argv[4] if len(sys.argv) > 4 else None


def next_fault():
    if not FAULTS:
        return None
    try:
        with open(FAULTS) as f:
            lines = [l for l in f.read().splitlines() if l.strip()]
    except FileNotFoundError:
        return None
    if not lines:
        return None
    with open(FAULTS, "w") as f:
        f.write("\n".join(lines[1:]) + ("\n" if len(lines) > 1 else ""))
    status, delay = lines[0].split()
    return int(status), int(delay)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, payload):
        self.send_response(status)
        self.send_header("Content-Type", "text/xml")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        params = {k: v[0] for k, v in urllib.parse.parse_qs(body.decode()).items()}
        for secret in ("TokenCode",):
            if secret in params:
                params[secret] = "<redacted>"
        with open(LOG, "a") as f:
            f.write(json.dumps({"time": time.time(), "params": params}) + "\n")
        chained = "X-Amz-Security-Token" in self.headers
        if (params.get("Action") == "AssumeRole" and chained
                and int(params.get("DurationSeconds", "3600")) > 3600):
            self.reply(400, (
                '<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error>'
                "<Type>Sender</Type><Code>ValidationError</Code><Message>The requested "
                "DurationSeconds exceeds the 1 hour session limit for roles assumed by role "
                "chaining.</Message></Error><RequestId>c0ffee00-0000-4000-8000-000000000000"
                "</RequestId></ErrorResponse>").encode())
            return
        fault = next_fault()
        if fault:
            status, delay = fault
            time.sleep(delay / 1000)
            if status:
                payload = b"<ErrorResponse><Error><Type>Receiver</Type><Code>ServiceUnavailable</Code><Message>injected</Message></Error></ErrorResponse>"
                self.send_response(status)
                self.send_header("Content-Type", "text/xml")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
        req = urllib.request.Request(UPSTREAM + self.path, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                status, data, ctype = r.status, r.read(), r.headers.get("Content-Type", "text/xml")
        except urllib.error.HTTPError as e:
            status, data, ctype = e.code, e.read(), e.headers.get("Content-Type", "text/xml")
        if status == 200:
            issued = re.search(rb"<AccessKeyId>([^<]+)</AccessKeyId>", data)
            if issued:
                with open(LOG + ".issued", "a") as f:
                    f.write(json.dumps({
                        "access_key_id": issued.group(1).decode(),
                        "action": params.get("Action"),
                        "signed_with_temporary": "X-Amz-Security-Token" in self.headers,
                    }) + "\n")
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


http.server.ThreadingHTTPServer.daemon_threads = True
server = http.server.ThreadingHTTPServer(("127.0.0.1", LISTEN), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()

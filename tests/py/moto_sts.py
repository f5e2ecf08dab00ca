#!/usr/bin/env python3
"""moto's server on a port the kernel picks, for credagent's tests.

Binds 127.0.0.1:0 itself, prints the port it got as the first line on stdout, then serves moto's
WSGI application (the same one `python3 -m moto.server` serves) on that socket. The socket is
listening before the port is printed, so a test can connect as soon as it has read the line, and
no other process can take the port in between: parallel tests never collide.

usage: moto_sts.py
"""
import os

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import make_server

app = DomainDispatcherApplication(create_backend_app)
server = make_server("127.0.0.1", 0, app, threaded=True)
port = server.server_address[1]
# moto builds some URLs from MOTO_PORT (as `moto.server` sets it from -p).
os.environ["MOTO_PORT"] = str(port)
print(port, flush=True)
server.serve_forever()

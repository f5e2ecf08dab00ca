#!/usr/bin/env python3
"""One boto3 process, as a user would run it: create an STS client, call GetCallerIdentity.

usage: sdk_probe.py agent|static

`agent`:  credentials come from the credagent endpoint (AWS_CONTAINER_CREDENTIALS_FULL_URI and
          AWS_CONTAINER_AUTHORIZATION_TOKEN, set by the benchmark driver).
`static`: the same credentials as plain environment variables (BENCH_STATIC_AWS_* copied to
          AWS_*), with the container variables removed; nothing else differs.

Both modes talk to the same STS (AWS_ENDPOINT_URL_STS) and check that the caller is the role.
"""
import os
import sys

MODE = sys.argv[1] if len(sys.argv) > 1 else ""
if MODE == "static":
    for var in ("AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_AUTHORIZATION_TOKEN"):
        os.environ.pop(var, None)
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        os.environ[var] = os.environ["BENCH_STATIC_" + var]
elif MODE != "agent":
    sys.exit("usage: sdk_probe.py agent|static")

import boto3  # noqa: E402  (after the environment is settled, as in a real process)

arn = boto3.client("sts", region_name="us-east-1").get_caller_identity()["Arn"]
if ":assumed-role/demo/" not in arn:
    sys.exit(f"sdk_probe: unexpected caller {arn}")

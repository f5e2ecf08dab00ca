#!/usr/bin/env python3
"""Checks tests/py/sts_recorder.py's strict rule with boto3, the real client: STS refuses an
AssumeRole signed with temporary credentials (role chaining) that asks for more than one hour, and
accepts one hour; long-lived keys may ask for more. A strict fake that boto3 did not read as STS's
own error would prove nothing.

usage: sts_strict_selftest.py STS_URL   (the recorder, in front of moto)
"""
import sys

import boto3
from botocore.exceptions import ClientError

URL = sys.argv[1]


def sts(key, secret, token=None):
    return boto3.client("sts", endpoint_url=URL, region_name="us-east-1", aws_access_key_id=key,
                        aws_secret_access_key=secret, aws_session_token=token)


ARN = "arn:aws:iam::123456789012:role/Deploy"
first = sts("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY").assume_role(
    RoleArn=ARN, RoleSessionName="long-lived", DurationSeconds=7200)["Credentials"]
print("ok: long-lived keys: AssumeRole for 7200 s")
chained = sts(first["AccessKeyId"], first["SecretAccessKey"], first["SessionToken"])
try:
    chained.assume_role(RoleArn=ARN, RoleSessionName="chained", DurationSeconds=7200)
    sys.exit("FAIL: a chained AssumeRole for 7200 s was accepted")
except ClientError as e:
    err = e.response["Error"]
    assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 400, e.response
    assert err["Code"] == "ValidationError", err
    assert "1 hour session limit for roles assumed by role chaining" in err["Message"], err
    print(f"ok: chained AssumeRole for 7200 s: {err['Code']}: {err['Message']}")
chained.assume_role(RoleArn=ARN, RoleSessionName="chained", DurationSeconds=3600)
print("ok: chained AssumeRole for 3600 s")

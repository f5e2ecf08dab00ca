#!/usr/bin/env python3
"""boto3_probe.py: one STS GetCallerIdentity call with credentials from boto3's default session.

The default session's credential chain covers the environment, the shared files (including
credential_process from AWS_CONFIG_FILE), the ECS container endpoint
(AWS_CONTAINER_CREDENTIALS_FULL_URI + AWS_CONTAINER_AUTHORIZATION_TOKEN[_FILE]) and IMDS
(AWS_EC2_METADATA_SERVICE_ENDPOINT), exactly as an ordinary boto3 user gets them.

Prints the caller's ARN as the only line on stdout and exits 0. On failure prints the SDK's error
on stderr and exits 1.

The STS endpoint comes from AWS_ENDPOINT_URL_STS (or AWS_ENDPOINT_URL), which botocore reads
itself. The region is the session's (AWS_REGION, AWS_DEFAULT_REGION, profile), else us-east-1.
"""

import sys
import traceback

import boto3


def main() -> int:
    try:
        session = boto3.session.Session()
        sts = session.client("sts", region_name=session.region_name or "us-east-1")
        arn = sts.get_caller_identity().get("Arn")
    except Exception as err:  # noqa: BLE001 - any SDK failure is reported the same way
        print(f"boto3_probe: GetCallerIdentity failed: {type(err).__name__}: {err}", file=sys.stderr)
        traceback.print_exc(file=sys.stderr)
        return 1
    if not arn:
        print("boto3_probe: GetCallerIdentity returned no Arn", file=sys.stderr)
        return 1
    print(arn)
    return 0


if __name__ == "__main__":
    sys.exit(main())

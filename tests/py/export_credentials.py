#!/usr/bin/env python3
"""export_credentials.py: what `aws configure export-credentials --profile P --format F` prints.

Usage: export_credentials.py PROFILE FORMAT

The AWS CLI installed for the tests is v1, which has no `configure export-credentials` (it came
with v2, and v2 is not on PyPI). So this does what v2's command does, over the same botocore:

- the credentials come from botocore's own resolution for PROFILE (here a profile with
  `credential_process = credctl credential-process ROLE`), converted as v2's
  `convert_botocore_credentials` does: the frozen key, secret and token, and the expiry as
  `credentials._expiry_time.isoformat()`;
- the output follows the formatters of v2's awscli/customizations/configure/exportcreds.py:
  one template per line format, applied to AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
  AWS_SESSION_TOKEN (when there is a token) and AWS_CREDENTIAL_EXPIRATION (when there is an
  expiry), values pasted in unquoted; `process` is `json.dumps(indent=2, separators=(',', ': '))`
  of Version, AccessKeyId, SecretAccessKey, SessionToken, Expiration, and a newline.

Prints the output on stdout, as the AWS CLI would; exits 1 with the error on stderr.
"""

import json
import sys
from datetime import datetime

import botocore.session

# The per-line templates of v2's formatters (`_VAR_FORMAT`).
TEMPLATES = {
    "env": "export {var_name}={var_value}",
    "env-no-export": "{var_name}={var_value}",
    "powershell": '$Env:{var_name}="{var_value}"',
    "windows-cmd": "set {var_name}={var_value}",
    "fish": 'set -gx {var_name} "{var_value}"',
}


def main() -> int:
    profile, fmt = sys.argv[1], sys.argv[2]
    creds = botocore.session.Session(profile=profile).get_credentials()
    if creds is None:
        print("Unable to retrieve credentials: no credentials found", file=sys.stderr)
        return 1
    frozen = creds.get_frozen_credentials()
    expiry = getattr(creds, "_expiry_time", None)
    expiry = expiry.isoformat() if isinstance(expiry, datetime) else None
    if fmt == "process":
        out = {"Version": 1, "AccessKeyId": frozen.access_key, "SecretAccessKey": frozen.secret_key}
        if frozen.token is not None:
            out["SessionToken"] = frozen.token
        if expiry is not None:
            out["Expiration"] = expiry
        sys.stdout.write(json.dumps(out, indent=2, separators=(",", ": ")))
        sys.stdout.write("\n")
        return 0
    template = TEMPLATES[fmt]
    lines = [("AWS_ACCESS_KEY_ID", frozen.access_key), ("AWS_SECRET_ACCESS_KEY", frozen.secret_key)]
    if frozen.token is not None:
        lines.append(("AWS_SESSION_TOKEN", frozen.token))
    if expiry is not None:
        lines.append(("AWS_CREDENTIAL_EXPIRATION", expiry))
    sys.stdout.write("".join(template.format(var_name=k, var_value=v) + "\n" for k, v in lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

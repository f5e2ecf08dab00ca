#!/usr/bin/env node
// sts-probe.mjs: one STS GetCallerIdentity call with credentials from the JS SDK v3 default
// provider chain (environment, shared ini files with credential_process, the ECS container
// endpoint AWS_CONTAINER_CREDENTIALS_FULL_URI, IMDS), exactly as an ordinary user of
// @aws-sdk/client-sts gets them: no explicit credentials are passed.
//
// Prints the caller's ARN as the only line on stdout and exits 0. On failure prints the SDK's
// error on stderr and exits 1.
//
// The STS endpoint comes from AWS_ENDPOINT_URL_STS (or AWS_ENDPOINT_URL), which the SDK reads
// itself. The region is AWS_REGION when set, else us-east-1.
//
// Note: on a 4xx from the container endpoint the SDK retries (4 tries, 1 s apart) and then
// reports only "Could not load credentials from any providers"; the endpoint's message is lost.

import { STSClient, GetCallerIdentityCommand } from '@aws-sdk/client-sts';

const region = process.env.AWS_REGION || 'us-east-1';

try {
  const client = new STSClient({ region });
  const out = await client.send(new GetCallerIdentityCommand({}));
  if (!out.Arn) {
    console.error('sts-probe: GetCallerIdentity returned no Arn:', JSON.stringify(out));
    process.exit(1);
  }
  process.stdout.write(`${out.Arn}\n`);
} catch (err) {
  console.error(`sts-probe: GetCallerIdentity failed: ${err?.name}: ${err?.message}`);
  console.error(err);
  process.exit(1);
}

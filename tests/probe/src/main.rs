//! `aws-config-probe`: one STS `GetCallerIdentity` call with credentials from aws-config's
//! default provider chain (environment, profile files, web identity, ECS container endpoint,
//! IMDS), exactly as an ordinary Rust SDK user gets them.
//!
//! Prints the caller's ARN as the only line on stdout. On failure prints the SDK's error (with
//! its full source chain) on stderr and exits 1.
//!
//! The region comes from the chain too (AWS_REGION, profile, IMDS) and falls back to
//! us-east-1. The STS endpoint comes from `AWS_ENDPOINT_URL_STS` / `AWS_ENDPOINT_URL`, which
//! aws-config honours itself.

use std::error::Error;
use std::process::ExitCode;

use aws_config::{BehaviorVersion, Region};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};

fn report(what: &str, err: &(dyn Error + 'static)) {
    eprintln!("aws-config-probe: {what}: {err}");
    let mut source = err.source();
    while let Some(cause) = source {
        eprintln!("  caused by: {cause}");
        source = cause.source();
    }
    eprintln!("  debug: {err:?}");
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https();
    // The region chain is left to the loader: a `RegionProviderChain::default_provider()` built
    // here would not get the HTTP client above (its IMDS step panics without one).
    let config = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http)
        .load()
        .await;
    let mut sts_config = aws_sdk_sts::config::Builder::from(&config);
    if config.region().is_none() {
        sts_config = sts_config.region(Region::new("us-east-1"));
    }
    let sts = aws_sdk_sts::Client::from_conf(sts_config.build());
    match sts.get_caller_identity().send().await {
        Ok(out) => match out.arn() {
            Some(arn) => {
                println!("{arn}");
                ExitCode::SUCCESS
            }
            None => {
                eprintln!("aws-config-probe: GetCallerIdentity returned no Arn: {out:?}");
                ExitCode::FAILURE
            }
        },
        Err(err) => {
            report("GetCallerIdentity failed", &err);
            ExitCode::FAILURE
        }
    }
}

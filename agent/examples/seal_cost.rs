//! What sealing adds to opening a session, the touch excluded: the agent's work after a
//! verified touch, sealed (unwrap the vault's private half with the PRF output, read the sealed
//! entry, open it) against unsealed (read the entry), in one run, alternating, on the same
//! keyring. Run inside a kernel session keyring (`keyctl session - …`); `tests/bench/run` does.
//!
//! Prints one JSON object: medians and 90th percentiles in microseconds.

use std::sync::Arc;
use std::time::Instant;

use credagent::sources::{Backend, SourceCredentials, SourceStore};
use credagent::vault::{PrfOutput, VaultKeeper};
use secrecy::SecretString;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2000);
    let dir = tempfile::tempdir()?;
    let vault = Arc::new(VaultKeeper::load(dir.path())?);
    let mut id = [0u8; 16];
    getrandom::fill(&mut id)?;
    let instance = format!("seal-cost-{}", hex::encode(id));
    let store = SourceStore::new(Backend::Keyutils, instance, false, vault.clone());
    let keyring = store.get()?;
    let creds = SourceCredentials {
        access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
        secret_access_key: SecretString::from("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
    };
    // The unsealed source is written before the vault exists, the sealed one after.
    store.store(&keyring, "plain", &creds)?;
    let credential = b"bench-credential";
    let prf = PrfOutput::from_slice(&[0x5a; 32])?;
    drop(vault.create(credential, [3; 32], &prf, true)?);
    store.store(&keyring, "sealed", &creds)?;

    let (mut plain, mut sealed, mut seal) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let t = Instant::now();
        let c = store.lookup(&keyring, "plain")?;
        plain.push(t.elapsed().as_secs_f64() * 1e6);
        drop(c);

        let t = Instant::now();
        let secret = vault.unwrap(credential, &prf)?;
        store.unseal(&keyring, "sealed", &secret)?;
        drop(secret);
        let c = store.lookup(&keyring, "sealed")?;
        sealed.push(t.elapsed().as_secs_f64() * 1e6);
        drop(c);
        store.forget("sealed");

        let t = Instant::now();
        store.store(&keyring, "sealed", &creds)?;
        seal.push(t.elapsed().as_secs_f64() * 1e6);
    }
    keyring.delete("plain")?;
    keyring.delete("sealed")?;
    for v in [&mut plain, &mut sealed, &mut seal] {
        v.sort_by(f64::total_cmp);
    }
    println!(
        "{{\"rounds\": {rounds}, \"unsealed_open_us\": {{\"p50\": {:.1}, \"p90\": {:.1}}}, \
         \"sealed_open_us\": {{\"p50\": {:.1}, \"p90\": {:.1}}}, \
         \"added_p50_us\": {:.1}, \"seal_store_us\": {{\"p50\": {:.1}, \"p90\": {:.1}}}}}",
        percentile(&plain, 0.5),
        percentile(&plain, 0.9),
        percentile(&sealed, 0.5),
        percentile(&sealed, 0.9),
        percentile(&sealed, 0.5) - percentile(&plain, 0.5),
        percentile(&seal, 0.5),
        percentile(&seal, 0.9),
    );
    Ok(())
}

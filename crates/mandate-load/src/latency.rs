//! Revocation-to-refusal latency at a verifier subscribed on loopback.
//!
//! A `mandate-verify` [`Verifier`] follows the server's revocation stream. For each round: a
//! fresh token is issued for its own task (outside the measurement) and accepted by the
//! verifier; the task is revoked; the clock starts when the revoke call returns, and stops at
//! the first `verify` that refuses the token because it was revoked (the verifier is asked again
//! and again, as an agent loop would). Prints p50/p90/p99/max over the rounds.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use mandate_verify::{Refusal, Verifier, WhenNotCurrent};
use serde_json::{Value, json};

use crate::server::{RESOURCE, Server, USER};
use crate::stats::percentile;

/// The longest a single round may take before the run is declared failed.
const ROUND_LIMIT: Duration = Duration::from_secs(5);

/// Runs `rounds` revocations and prints the latency table.
pub async fn run(server: &Server, rounds: usize) -> Result<()> {
    let secret = verifier_credential(server).await?;
    let verifier = Verifier::builder(&server.issuer)
        .credential(secret)
        .audience(RESOURCE)
        .events_url(format!("{}/v1/revocations/events", server.url))
        .jwks_url(format!("{}/.well-known/jwks.json", server.url))
        .introspection_url(format!("{}/oauth2/introspect", server.url))
        .when_not_current(WhenNotCurrent::Refuse)
        .start()
        .await
        .context("the verifier could not start")?;
    if !verifier.wait_for(0, Duration::from_secs(10)).await {
        bail!("the verifier did not become current");
    }
    let user = server.user_token(USER, None).await?;
    let run_id = std::process::id();
    let mut samples = Vec::with_capacity(rounds);
    let mut immediate = 0usize;
    for i in 0..rounds {
        let task = format!("latency-{run_id}-{i}");
        let token = server.exchange(&user, &task).await?;
        verifier
            .verify(&token)
            .await
            .map_err(|e| anyhow!("a fresh token was refused: {e}"))?;
        let resp = server
            .http
            .post(format!("{}/v1/revocations", server.url))
            .bearer_auth(&server.admin_token)
            .json(&json!({"kind": "task", "id": task}))
            .send()
            .await
            .context("the revoke call failed")?;
        if resp.status().as_u16() != 201 {
            bail!("the revoke call answered {}", resp.status());
        }
        let returned = Instant::now();
        let mut tries = 0u64;
        loop {
            tries += 1;
            match verifier.verify(&token).await {
                Err(Refusal::Revoked(_)) => break,
                Ok(_) => {}
                Err(e) => bail!("the verifier refused for another reason: {e}"),
            }
            if returned.elapsed() > ROUND_LIMIT {
                bail!("round {i}: still accepted {ROUND_LIMIT:?} after the revocation");
            }
            tokio::task::yield_now().await;
        }
        if tries == 1 {
            immediate += 1;
        }
        samples.push(returned.elapsed());
    }
    samples.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!("| revocations | p50 µs | p90 µs | p99 µs | max µs | refused on first try |");
    println!("|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {} | {:.0} | {:.0} | {:.0} | {:.0} | {} |",
        samples.len(),
        us(percentile(&samples, 50.0)),
        us(percentile(&samples, 90.0)),
        us(percentile(&samples, 99.0)),
        us(samples.last().copied().unwrap_or_default()),
        immediate
    );
    Ok(())
}

/// Makes a credential with the `verifier` role.
async fn verifier_credential(server: &Server) -> Result<String> {
    let id = format!("load-verifier-{}", std::process::id());
    let resp = server
        .http
        .post(format!("{}/v1/credentials", server.url))
        .bearer_auth(&server.admin_token)
        .json(&json!({"id": id, "role": "verifier"}))
        .send()
        .await
        .context("cannot create a verifier credential")?;
    if resp.status().as_u16() != 201 {
        bail!("creating a verifier credential answered {}", resp.status());
    }
    let v: Value = resp.json().await?;
    v.get("secret")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("the credential answer holds no `secret`"))
}

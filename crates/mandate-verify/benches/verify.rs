//! Verification cost per request, with no revoked tokens held and with 1,000,000 (plus 10,000
//! revoked users, agents, tasks and keys): p50/p99/mean in µs over a 3-hop token.
//!
//! `cargo bench -p mandate-verify --bench verify` — a plain timing loop (no criterion): the
//! number that matters is the per-request cost the gateway pays, and whether the size of the
//! revocation index changes it (it must stay within 10%).

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Instant;

use mandate_core::revocation::{RevocationIndex, RevocationKind};
use mandate_token::keys::{Alg, SigningKey};
use mandate_token::sign::sign_jwt;
use mandate_token::verify::{KeySet, VerifyingKey};
use mandate_verify::check::{Expect, verify_token};
use serde_json::json;

const ISSUER: &str = "https://mandate.example";
const NOW: i64 = 1_800_000_000;

fn token(key: &SigningKey, i: usize) -> String {
    let act = json!({"sub": "agent:relay-1", "sub_profile": "agent", "credential": "kid:relay-1-k1",
        "act": {"sub": "agent:analytics-v1", "sub_profile": "agent", "credential": "kid:analytics-v1-k1",
            "act": {"sub": "agent:support-v2", "sub_profile": "agent", "credential": "kid:support-v2-k1"}}});
    let claims = json!({
        "iss": ISSUER, "sub": format!("user-{i}@example.com"), "sub_profile": "user",
        "aud": "https://crm.example", "client_id": "relay-1", "iat": NOW - 10, "nbf": NOW - 10,
        "exp": NOW + 290, "jti": format!("live-{i}"), "scope": "crm.customers:read",
        "act": act, "task": format!("task-{i}"), "stage": "observe", "credential": "kid:relay-1-k1",
    });
    sign_jwt(key, "at+jwt", &claims).unwrap()
}

/// Times one verification of each token against `index`, appending µs to `samples`.
fn pass(tokens: &[String], keys: &KeySet, index: &RevocationIndex, samples: &mut Vec<f64>) {
    let audiences = vec!["https://crm.example".to_owned()];
    let expect = Expect {
        issuer: ISSUER,
        audiences: &audiences,
        now: NOW,
        leeway: 30,
        max_chain_depth: 8,
    };
    for t in tokens {
        let start = Instant::now();
        let ok = verify_token(t, keys, index, &expect);
        samples.push(start.elapsed().as_nanos() as f64 / 1000.0);
        assert!(ok.is_ok());
    }
}

/// Prints a row; returns the p50.
fn report(label: &str, samples: &mut [f64]) -> f64 {
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let p = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    let mean = samples.iter().sum::<f64>() / samples.len() as f64;
    println!(
        "| {label} | {} | {:.1} | {:.1} | {:.1} |",
        samples.len(),
        p(0.5),
        p(0.99),
        mean
    );
    p(0.5)
}

fn main() {
    let key = SigningKey::generate(Alg::EdDSA).unwrap();
    let keys = KeySet::new(vec![VerifyingKey::from_jwk(key.public_jwk()).unwrap()]);
    let tokens: Vec<String> = (0..20_000).map(|i| token(&key, i)).collect();

    let empty = RevocationIndex::default();
    let rss_before = rss_kib();
    let mut full = RevocationIndex::default();
    for i in 0..1_000_000 {
        full.insert(RevocationKind::Token, &format!("revoked-{i}"), NOW + 300);
    }
    for i in 0..10_000 {
        full.insert(RevocationKind::User, &format!("gone-{i}@example.com"), NOW);
        full.insert(RevocationKind::Agent, &format!("old-agent-{i}"), NOW);
        full.insert(RevocationKind::Task, &format!("done-task-{i}"), NOW);
        full.insert(RevocationKind::Key, &format!("lost-key-{i}"), NOW);
    }
    assert_eq!(full.revoked_tokens(), 1_000_000);
    println!(
        "memory of the full index: ~{} MiB (resident set growth)\n",
        (rss_kib() - rss_before) / 1024
    );

    println!("| revocation index | verifications | p50 µs | p99 µs | mean µs |");
    println!("|---|---:|---:|---:|---:|");
    // Warm up, then alternate the two indexes pass by pass so that drift of the machine (other
    // load, frequency) falls on both alike.
    let (mut a, mut b) = (Vec::new(), Vec::new());
    pass(&tokens[..1000], &keys, &empty, &mut Vec::new());
    pass(&tokens[..1000], &keys, &full, &mut Vec::new());
    for _ in 0..5 {
        pass(&tokens, &keys, &empty, &mut a);
        pass(&tokens, &keys, &full, &mut b);
    }
    let pa = report("empty", &mut a);
    let pb = report("1,000,000 tokens + 40,000 roots", &mut b);
    println!();
    println!(
        "p50 with 1M revoked vs empty: {:+.1}%",
        (pb / pa - 1.0) * 100.0
    );
    dpop(&tokens[0]);
}

/// What a DPoP-bound request adds: one proof check (parse, key from the header, signature,
/// claims) and its replay-cache entry, per proof algorithm.
fn dpop(token: &str) {
    use mandate_token::dpop::{ProofCheck, ReplayCache, check_proof, prove};
    const URL: &str = "https://gw.example/customers/9821";
    println!();
    println!("| DPoP proof check + replay cache | proofs | p50 µs | p99 µs | mean µs |");
    println!("|---|---:|---:|---:|---:|");
    for alg in [Alg::EdDSA, Alg::ES256] {
        let key = SigningKey::generate(alg).unwrap();
        let proofs: Vec<String> = (0..20_000)
            .map(|_| prove(&key, "GET", URL, Some(token), None, NOW).unwrap())
            .collect();
        let seen = ReplayCache::new(1_000_000);
        let check = ProofCheck {
            method: "GET",
            url: URL,
            now: NOW,
            max_age: 60,
            leeway: 5,
            access_token: Some(token),
            nonces: None,
        };
        let mut samples = Vec::with_capacity(proofs.len());
        for p in &proofs {
            let start = Instant::now();
            let v = check_proof(p, &check).unwrap();
            seen.remember(&v, NOW).unwrap();
            samples.push(start.elapsed().as_nanos() as f64 / 1000.0);
        }
        report(alg.as_str(), &mut samples);
    }
}

/// The process's resident set size in KiB (Linux), or 0.
fn rss_kib() -> i64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

//! Criterion micro-benchmark of `verify_token`, the one verification every resource server
//! makes: a 3-hop EdDSA access token checked for signature, `typ`, issuer, audience, lifetime,
//! claims shape, delegation chain (depth, no agent twice, `client_id` last) and an empty
//! revocation index. `check/verify_claims` is the same without the index lookup.
//!
//! `cargo bench -p mandate-verify --bench check` (add `-- --warm-up-time 1 --measurement-time 2`
//! for a quick run). The effect of a large revocation index and of DPoP is measured by the
//! plain-timing `verify` bench of this crate.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use mandate_core::revocation::RevocationIndex;
use mandate_token::keys::{Alg, SigningKey};
use mandate_token::sign::sign_jwt;
use mandate_token::verify::{KeySet, VerifyingKey};
use mandate_verify::check::{Expect, verify_claims, verify_token};
use serde_json::json;

const ISSUER: &str = "https://mandate.example";
const NOW: i64 = 1_800_000_000;

/// The same 3-hop token as the `verify` bench.
fn token(key: &SigningKey) -> String {
    let act = json!({"sub": "agent:relay-1", "sub_profile": "agent", "credential": "kid:relay-1-k1",
        "act": {"sub": "agent:analytics-v1", "sub_profile": "agent", "credential": "kid:analytics-v1-k1",
            "act": {"sub": "agent:support-v2", "sub_profile": "agent", "credential": "kid:support-v2-k1"}}});
    let claims = json!({
        "iss": ISSUER, "sub": "alice@example.com", "sub_profile": "user",
        "aud": "https://crm.example", "client_id": "relay-1", "iat": NOW - 10, "nbf": NOW - 10,
        "exp": NOW + 290, "jti": "live-1", "scope": "crm.customers:read",
        "act": act, "task": "task-1", "stage": "observe", "credential": "kid:relay-1-k1",
    });
    sign_jwt(key, "at+jwt", &claims).unwrap()
}

fn bench_check(c: &mut Criterion) {
    let audiences = vec!["https://crm.example".to_owned()];
    let expect = Expect {
        issuer: ISSUER,
        audiences: &audiences,
        now: NOW,
        leeway: 30,
        max_chain_depth: 8,
    };
    let index = RevocationIndex::default();
    let mut g = c.benchmark_group("check");
    for alg in [Alg::EdDSA, Alg::ES256] {
        let key = SigningKey::generate(alg).unwrap();
        let keys = KeySet::new(vec![VerifyingKey::from_jwk(key.public_jwk()).unwrap()]);
        let t = token(&key);
        assert_eq!(
            verify_token(&t, &keys, &index, &expect)
                .unwrap()
                .chain
                .depth(),
            3
        );
        g.bench_function(format!("verify_token/{}/3_hops", alg.as_str()), |b| {
            b.iter(|| verify_token(black_box(&t), &keys, &index, &expect).unwrap())
        });
        g.bench_function(format!("verify_claims/{}/3_hops", alg.as_str()), |b| {
            b.iter(|| verify_claims(black_box(&t), &keys, &expect).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, bench_check);
criterion_main!(benches);

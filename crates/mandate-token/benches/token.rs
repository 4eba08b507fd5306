//! Criterion micro-benchmarks of Mandate's JOSE layer for a 3-hop access token (user → three
//! agents, 5 scopes), with EdDSA (Ed25519, the default) and ES256 keys:
//!
//! * `token/mint/<alg>`: what the token endpoint does once the grant is decided — a fresh
//!   `jti`, the claims built (`act` chain, `scope` string) and signed as a compact JWS;
//! * `token/sign_jwt/<alg>`: signing claims already built (JSON, base64url, signature);
//! * `token/sign_bytes/<alg>`: the raw signature of the signing input alone;
//! * `token/verify/<alg>`: `verify` — header parse, key lookup, signature, `typ`, `iss`, `aud`,
//!   `exp`/`nbf`/`iat` checks (the claims' shape and chain are checked one layer up, in
//!   `mandate-verify`'s `check` bench);
//! * `token/peek_claims`: decoding the payload without any check, for scale.
//!
//! `cargo bench -p mandate-token --bench token` (add `-- --warm-up-time 1 --measurement-time 2`
//! for a quick run).

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use mandate_core::chain::{Actor, DelegationChain};
use mandate_core::claims::{AccessClaims, Audience, SubProfile};
use mandate_core::ids::AgentId;
use mandate_core::scope::ScopeSet;
use mandate_core::stage::Stage;
use mandate_token::keys::{Alg, SigningKey};
use mandate_token::random_id;
use mandate_token::sign::sign_jwt;
use mandate_token::verify::{AudCheck, ClaimChecks, KeySet, VerifyingKey, peek_claims, verify};

const ISSUER: &str = "https://mandate.example";
const AUDIENCE: &str = "https://crm.example";
const NOW: i64 = 1_800_000_000;

/// What the token endpoint has in hand after the grant decision of the third hop.
struct Issuance {
    chain: DelegationChain,
    scope: ScopeSet,
    aud: Vec<String>,
}

impl Issuance {
    fn three_hops() -> Issuance {
        let actor = |id: &str| Actor {
            agent: AgentId::parse(id).unwrap(),
            credential: format!("kid:{id}-k1"),
        };
        Issuance {
            chain: DelegationChain::new(vec![
                actor("support-v2"),
                actor("analytics-v1"),
                actor("relay-1"),
            ]),
            scope: ScopeSet::parse_oauth(
                "crm.customers:read crm.orders:read tickets:read tickets:list billing.invoices:read",
            )
            .unwrap(),
            aud: vec![AUDIENCE.to_owned()],
        }
    }

    /// The claims as `mandate-server`'s `mint` builds them.
    fn claims(&self) -> AccessClaims {
        let current = self.chain.current().unwrap();
        AccessClaims {
            iss: ISSUER.to_owned(),
            sub: "alice@example.com".to_owned(),
            sub_profile: SubProfile::User,
            sub_iss: Some("https://idp.example".to_owned()),
            groups: vec!["support".to_owned()],
            user_tags: Default::default(),
            aud: Audience::from_vec(self.aud.clone()),
            client_id: current.agent.as_str().to_owned(),
            iat: NOW,
            nbf: NOW,
            exp: NOW + 300,
            jti: random_id::<16>().unwrap(),
            scope: self.scope.to_oauth(),
            act: self.chain.to_act_claim(),
            task: "ticket-12847".to_owned(),
            stage: Stage::Observe,
            credential: current.credential.clone(),
            cnf: None,
        }
    }
}

fn checks(audiences: &[String]) -> ClaimChecks<'_> {
    ClaimChecks {
        now: NOW,
        leeway: 30,
        issuer: Some(ISSUER),
        audience: AudCheck::OneOf(audiences),
        typ: Some("at+jwt"),
        max_lifetime: None,
        require_iat: true,
    }
}

fn bench_token(c: &mut Criterion) {
    let issuance = Issuance::three_hops();
    let audiences = vec![AUDIENCE.to_owned()];
    let mut g = c.benchmark_group("token");
    for alg in [Alg::EdDSA, Alg::ES256] {
        let name = alg.as_str();
        let key = SigningKey::generate(alg).unwrap();
        let keys = KeySet::new(vec![VerifyingKey::from_jwk(key.public_jwk()).unwrap()]);
        let claims = issuance.claims();
        let token = sign_jwt(&key, "at+jwt", &claims).unwrap();
        let verified = verify(&token, &keys, &checks(&audiences)).unwrap();
        assert_eq!(
            verified.claims["act"]["act"]["act"]["sub"],
            "agent:support-v2"
        );
        let signing_input = &token[..token.rfind('.').unwrap()];

        g.bench_function(format!("mint/{name}"), |b| {
            b.iter(|| sign_jwt(&key, "at+jwt", &black_box(&issuance).claims()).unwrap())
        });
        g.bench_function(format!("sign_jwt/{name}"), |b| {
            b.iter(|| sign_jwt(&key, "at+jwt", black_box(&claims)).unwrap())
        });
        g.bench_function(format!("sign_bytes/{name}"), |b| {
            b.iter(|| key.sign_bytes(black_box(signing_input.as_bytes())).unwrap())
        });
        g.bench_function(format!("verify/{name}"), |b| {
            b.iter(|| verify(black_box(&token), &keys, &checks(&audiences)).unwrap())
        });
        if alg == Alg::EdDSA {
            println!("3-hop EdDSA token: {} bytes", token.len());
            g.bench_function("peek_claims", |b| {
                b.iter(|| peek_claims(black_box(&token)).unwrap())
            });
            g.bench_function("claims/build", |b| b.iter(|| black_box(&issuance).claims()));
        }
    }
    g.finish();
}

criterion_group!(benches, bench_token);
criterion_main!(benches);

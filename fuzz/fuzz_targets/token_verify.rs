//! The one verification path (`mandate_token::verify`) and JWK parsing on arbitrary input.
//!
//! The input is tried as a compact JWS (against a fixed key set holding a real Ed25519 and a
//! real P-256 key, with a fixed clock) and as a JWK / JWKS document.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use mandate_token::verify::{AudCheck, ClaimChecks, KeySet, VerifyingKey, peek_claims, verify};
use mandate_token::{Alg, SigningKey};
use serde_json::{Value, json};

/// Seconds since the epoch the checks run at (2027-01-15); the seed tokens are valid then.
const NOW: i64 = 1_800_000_000;

/// The fixed Ed25519 key (seed bytes 1..=32); the seed corpus is signed with it.
const ED25519_SEED: &str = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA";
/// A fixed P-256 key, PKCS#8 DER.
const P256_PKCS8: &str = "308187020100301306072a8648ce3d020106082a8648ce3d030107046d306b0201010420782add139dd9d63657f919dab65a44f26ad3801df00516132f7ecc74e2a09be4a14403420004ecc2fc5197b48fe9f899e16157419e6dee855f606b9a63407da7275f14ac92632c6c914d59d7353aca3ad59f65a21a1162066fdbc8f9cad9046ca5052dddf3a1";

static KEYS: LazyLock<KeySet> = LazyLock::new(|| {
    let ed = SigningKey::from_private_jwk(
        &json!({"kty": "OKP", "crv": "Ed25519", "d": ED25519_SEED, "kid": "fuzz-ed"}),
    )
    .expect("fixed Ed25519 key");
    let der = hex_decode(P256_PKCS8);
    let es =
        SigningKey::from_pkcs8(Alg::ES256, &der, Some("fuzz-es".into())).expect("fixed P-256 key");
    KeySet::new(vec![
        VerifyingKey::from_jwk(ed.public_jwk()).expect("Ed25519 public JWK"),
        VerifyingKey::from_jwk(es.public_jwk()).expect("P-256 public JWK"),
    ])
});

static AUDIENCE: LazyLock<Vec<String>> = LazyLock::new(|| vec!["https://api.fuzz.example".into()]);

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fuzz_target!(|data: &[u8]| {
    if let Ok(token) = std::str::from_utf8(data) {
        let peeked = peek_claims(token);
        let loose = ClaimChecks::at(NOW);
        let strict = ClaimChecks {
            issuer: Some("https://mandate.fuzz.example"),
            audience: AudCheck::OneOf(&AUDIENCE),
            typ: Some("at+jwt"),
            max_lifetime: Some(3600),
            require_iat: true,
            ..ClaimChecks::at(NOW)
        };
        for checks in [&loose, &strict] {
            if let Ok(v) = verify(token, &KEYS, checks) {
                // What verified is what an unverified peek reads, and it is not expired.
                assert_eq!(peeked.as_ref().ok(), Some(&v.claims));
                let exp = v
                    .claims
                    .get("exp")
                    .and_then(|e| e.as_i64().or_else(|| e.as_f64().map(|f| f as i64)));
                assert!(
                    exp.is_some_and(|e| e.saturating_add(checks.leeway) > NOW),
                    "expired token accepted"
                );
                assert!(!v.header.alg.eq_ignore_ascii_case("none"));
            }
        }
    }
    if let Ok(doc) = serde_json::from_slice::<Value>(data) {
        if let Ok(key) = VerifyingKey::from_jwk(&doc) {
            let _ = (key.kid(), key.alg());
        }
        let (set, _errors) = KeySet::from_jwks(&doc);
        let _ = set.len();
    }
});

//! Remembering tokens whose signature and claims already verified.
//!
//! An agent sends the same access token many times. Checking its Ed25519 signature and parsing
//! its claims costs tens of microseconds each time; this cache keeps the parsed [`Principal`] of
//! a token that verified, keyed by the token's SHA-256, so a repeat costs a hash and a lookup.
//! What can change between two uses is still checked on every hit: the lifetime (`exp`, `nbf`
//! against now, with the leeway) and the audience; revocations and agent status are the
//! caller's to check on every use, as before ([`crate::check::revoked`]). A change of key set (a
//! rotation, a refetched JWKS) empties the cache, so a token is never accepted on a key that
//! is no longer trusted.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use mandate_token::{KeySet, VerifyError};
use sha2::{Digest, Sha256};

use crate::check::{Expect, Principal, Refusal, verify_claims};

/// Default number of tokens remembered.
pub const DEFAULT_CAPACITY: usize = 10_000;

/// Verified tokens, by SHA-256.
#[derive(Debug)]
pub struct VerifiedCache {
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Identifies the key set the entries were verified with.
    keys: usize,
    map: HashMap<[u8; 32], Principal>,
}

impl Default for VerifiedCache {
    fn default() -> Self {
        VerifiedCache::new(DEFAULT_CAPACITY)
    }
}

impl VerifiedCache {
    /// A cache of at most `capacity` tokens (0 turns it off).
    pub fn new(capacity: usize) -> VerifiedCache {
        VerifiedCache {
            capacity,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// [`verify_claims`], answered from the cache when `token` verified before with the same
    /// key set (`keys_id` identifies it, e.g. the address of the `Arc` holding it).
    pub fn verify_claims(
        &self,
        token: &str,
        keys: &KeySet,
        keys_id: usize,
        expect: &Expect<'_>,
    ) -> Result<Principal, Refusal> {
        if self.capacity == 0 {
            return verify_claims(token, keys, expect);
        }
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let hit = {
            let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
            if inner.keys != keys_id {
                inner.map.clear();
                inner.keys = keys_id;
            }
            inner.map.get(&digest).cloned()
        };
        if let Some(p) = hit {
            recheck(&p, expect)?;
            return Ok(p);
        }
        let p = verify_claims(token, keys, expect)?;
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if inner.keys == keys_id {
            if inner.map.len() >= self.capacity {
                let now = expect.now;
                inner.map.retain(|_, p| p.claims.exp > now);
                if inner.map.len() >= self.capacity {
                    inner.map.clear();
                }
            }
            inner.map.insert(digest, p.clone());
        }
        Ok(p)
    }

    /// How many tokens are remembered.
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .map
            .len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What may have changed since the token verified: time and the expected audience and issuer.
fn recheck(p: &Principal, expect: &Expect<'_>) -> Result<(), Refusal> {
    let c = &p.claims;
    if expect.now > c.exp.saturating_add(expect.leeway) {
        return Err(VerifyError::Expired.into());
    }
    if c.nbf > expect.now.saturating_add(expect.leeway) {
        return Err(VerifyError::NotYetValid.into());
    }
    if c.iss != expect.issuer {
        return Err(VerifyError::WrongIssuer.into());
    }
    if !expect.audiences.is_empty() && !expect.audiences.iter().any(|a| c.aud.contains(a)) {
        return Err(VerifyError::WrongAudience.into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use mandate_token::sign::sign_jwt;
    use mandate_token::verify::VerifyingKey;
    use mandate_token::{Alg, SigningKey};
    use serde_json::json;

    use super::*;

    const ISSUER: &str = "https://mandate.example";
    const NOW: i64 = 1_800_000_000;

    fn token(key: &SigningKey, jti: &str) -> String {
        let claims = json!({
            "iss": ISSUER, "sub": "alice@example.com", "sub_profile": "user",
            "aud": "https://crm.example", "client_id": "support-v2", "iat": NOW - 10,
            "nbf": NOW - 10, "exp": NOW + 290, "jti": jti, "scope": "crm.customers:read",
            "act": {"sub": "agent:support-v2", "sub_profile": "agent", "credential": "kid:k1"},
            "task": "t-1", "stage": "observe", "credential": "kid:k1",
        });
        sign_jwt(key, "at+jwt", &claims).unwrap()
    }

    fn keys(key: &SigningKey) -> KeySet {
        KeySet::new(vec![VerifyingKey::from_jwk(key.public_jwk()).unwrap()])
    }

    fn expect<'a>(now: i64, audiences: &'a [String]) -> Expect<'a> {
        Expect {
            issuer: ISSUER,
            audiences,
            now,
            leeway: 5,
            max_chain_depth: 4,
        }
    }

    #[test]
    fn a_repeat_is_answered_from_the_cache_with_the_same_principal() {
        let key = SigningKey::generate(Alg::EdDSA).unwrap();
        let ks = keys(&key);
        let cache = VerifiedCache::new(10);
        let t = token(&key, "j-1");
        let first = cache.verify_claims(&t, &ks, 1, &expect(NOW, &[])).unwrap();
        assert_eq!(cache.len(), 1);
        let again = cache.verify_claims(&t, &ks, 1, &expect(NOW, &[])).unwrap();
        assert_eq!(first.claims, again.claims);
        // A token that does not verify is never remembered.
        let forged = format!("{}x", &t[..t.len() - 1]);
        assert!(
            cache
                .verify_claims(&forged, &ks, 1, &expect(NOW, &[]))
                .is_err()
        );
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn lifetime_and_audience_are_checked_on_every_hit() {
        let key = SigningKey::generate(Alg::EdDSA).unwrap();
        let ks = keys(&key);
        let cache = VerifiedCache::new(10);
        let t = token(&key, "j-1");
        cache.verify_claims(&t, &ks, 1, &expect(NOW, &[])).unwrap();
        let late = cache.verify_claims(&t, &ks, 1, &expect(NOW + 400, &[]));
        assert!(
            matches!(late, Err(Refusal::Invalid(VerifyError::Expired))),
            "{late:?}"
        );
        let early = cache.verify_claims(&t, &ks, 1, &expect(NOW - 100, &[]));
        assert!(
            matches!(early, Err(Refusal::Invalid(VerifyError::NotYetValid))),
            "{early:?}"
        );
        let other = ["https://other.example".to_owned()];
        let wrong = cache.verify_claims(&t, &ks, 1, &expect(NOW, &other));
        assert!(
            matches!(wrong, Err(Refusal::Invalid(VerifyError::WrongAudience))),
            "{wrong:?}"
        );
        let right = ["https://crm.example".to_owned()];
        assert!(
            cache
                .verify_claims(&t, &ks, 1, &expect(NOW, &right))
                .is_ok()
        );
    }

    #[test]
    fn a_new_key_set_forgets_what_the_old_one_verified() {
        let old = SigningKey::generate(Alg::EdDSA).unwrap();
        let new = SigningKey::generate(Alg::EdDSA).unwrap();
        let cache = VerifiedCache::new(10);
        let t = token(&old, "j-1");
        cache
            .verify_claims(&t, &keys(&old), 1, &expect(NOW, &[]))
            .unwrap();
        // The old key is no longer trusted: its token is refused, not served from the cache.
        let r = cache.verify_claims(&t, &keys(&new), 2, &expect(NOW, &[]));
        assert!(r.is_err(), "{r:?}");
    }

    #[test]
    fn a_full_cache_drops_expired_tokens_then_everything() {
        let key = SigningKey::generate(Alg::EdDSA).unwrap();
        let ks = keys(&key);
        let cache = VerifiedCache::new(3);
        for i in 0..3 {
            let t = token(&key, &format!("j-{i}"));
            cache.verify_claims(&t, &ks, 1, &expect(NOW, &[])).unwrap();
        }
        assert_eq!(cache.len(), 3);
        let t = token(&key, "j-3");
        cache.verify_claims(&t, &ks, 1, &expect(NOW, &[])).unwrap();
        assert_eq!(
            cache.len(),
            1,
            "none had expired, so the cache started over"
        );
        // Off: nothing is kept.
        let off = VerifiedCache::new(0);
        off.verify_claims(&t, &ks, 1, &expect(NOW, &[])).unwrap();
        assert!(off.is_empty());
    }
}

//! Mandate's JOSE layer: signing keys and their sealed storage, JWKS, minting JWTs, and the one
//! verification path every part of Mandate uses.
//!
//! * [`keys`] — Ed25519 (`EdDSA`, default) and P-256 (`ES256`) signing keys; the master key and
//!   the sealed form private keys take at rest;
//! * [`sign`] — compact JWS signing with a key held in memory;
//! * [`verify`] — public keys from JWKs, signature verification with the algorithm pinned to the
//!   key, and the registered-claim checks (`iss`, `aud`, `exp`, `nbf`, `iat`, `typ`) done by hand
//!   against an injected clock;
//! * [`verified`] — tokens whose signature already verified, so a token presented again only has
//!   its claims checked.
//!
//! Signature checks are done by `jsonwebtoken` (backed by `aws-lc-rs`); nothing here hand-rolls
//! cryptography. Errors never contain a token or key material.

pub mod dpop;
pub mod keys;
pub mod sign;
pub mod verified;
pub mod verify;

pub use keys::{Alg, MasterKey, SealedKey, SigningKey};
pub use verified::VerifiedTokens;
pub use verify::{ClaimChecks, KeySet, VerifiedJwt, VerifyError, VerifyingKey};

/// Failure to create, seal, unseal or use a key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The master key is not 32 bytes of base64 or hex.
    #[error("master key must be 32 bytes, written as base64 or hex")]
    BadMasterKey,
    /// Decryption failed: wrong master key or damaged data.
    #[error("sealed key `{0}` cannot be opened: wrong master key or damaged data")]
    Unseal(String),
    /// The crypto library refused.
    #[error("key operation failed: {0}")]
    Crypto(&'static str),
    /// Unsupported algorithm name.
    #[error("signing algorithm `{0}` is not supported (use `EdDSA` or `ES256`)")]
    UnsupportedAlg(String),
}

/// Random bytes from the operating system's CSPRNG.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], KeyError> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|_| KeyError::Crypto("the system random source failed"))?;
    Ok(b)
}

/// A random URL-safe identifier of `N` bytes of entropy (base64url, no padding).
pub fn random_id<const N: usize>() -> Result<String, KeyError> {
    use base64::Engine;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<N>()?))
}

/// The URL-safe characters in ASCII order, so that encoding a number with them keeps its order.
const SORTABLE: &[u8; 64] = b"-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz";

/// A URL-safe identifier that sorts by creation time: 8 characters of the Unix time in
/// milliseconds (48 bits, in an order-keeping alphabet), then 96 random bits (base64url).
///
/// Token ids are stored in B-tree indexes; ids made one after another land side by side, so a
/// batch of new tokens changes a few index pages instead of one random page per token. The
/// time part only repeats what a token's `iat` already says; the random part keeps ids
/// unguessable and unique.
pub fn ordered_id() -> Result<String, KeyError> {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let mut id = ordered_prefix(ms);
    id.push_str(&random_id::<12>()?);
    Ok(id)
}

/// The time part of [`ordered_id`]: the low 48 bits of `ms`, six bits per character, most
/// significant first.
fn ordered_prefix(ms: u128) -> String {
    (0..8)
        .rev()
        .map(|i| char::from(SORTABLE[((ms >> (6 * i)) & 63) as usize]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordered_ids_sort_by_time() {
        let times = [
            0u128,
            1,
            63,
            64,
            1_700_000_000_000,
            1_700_000_000_001,
            (1 << 48) - 1,
        ];
        let prefixes: Vec<String> = times.iter().map(|&t| ordered_prefix(t)).collect();
        for pair in prefixes.windows(2) {
            assert!(pair[0] < pair[1], "{pair:?} out of order");
        }
        assert_eq!(ordered_prefix(0), "--------");
        assert_eq!(ordered_prefix((1 << 48) - 1), "zzzzzzzz");
    }

    #[test]
    fn ordered_ids_are_url_safe_and_distinct() {
        let a = ordered_id().unwrap();
        let b = ordered_id().unwrap();
        assert_eq!(a.len(), 24);
        assert_ne!(a, b);
        assert!(a.bytes().all(|c| SORTABLE.contains(&c)), "{a}");
        // Made one after the other: the time parts never go backwards.
        assert!(a[..8] <= b[..8]);
    }
}

//! Mandate's JOSE layer: signing keys and their sealed storage, JWKS, minting JWTs, and the one
//! verification path every part of Mandate uses.
//!
//! * [`keys`] — Ed25519 (`EdDSA`, default) and P-256 (`ES256`) signing keys; the master key and
//!   the sealed form private keys take at rest;
//! * [`sign`] — compact JWS signing with a key held in memory;
//! * [`verify`] — public keys from JWKs, signature verification with the algorithm pinned to the
//!   key, and the registered-claim checks (`iss`, `aud`, `exp`, `nbf`, `iat`, `typ`) done by hand
//!   against an injected clock.
//!
//! Signature checks are done by `jsonwebtoken` (backed by `aws-lc-rs`); nothing here hand-rolls
//! cryptography. Errors never contain a token or key material.

pub mod dpop;
pub mod keys;
pub mod sign;
pub mod verify;

pub use keys::{Alg, MasterKey, SealedKey, SigningKey};
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

//! Compact JWS (RFC 7515) signing with a key held in memory.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde_json::{Value, json};

use crate::KeyError;
use crate::keys::SigningKey;

/// Signs `claims` as a compact JWS with header `{alg, kid, typ}`.
pub fn sign_jwt<T: Serialize>(key: &SigningKey, typ: &str, claims: &T) -> Result<String, KeyError> {
    let header = json!({"alg": key.alg().as_str(), "kid": key.kid(), "typ": typ});
    sign_with_header(key, &header, claims)
}

/// Signs `claims` as a compact JWS with `header` as given (it must name `key`'s `alg`).
pub fn sign_with_header<T: Serialize>(
    key: &SigningKey,
    header: &Value,
    claims: &T,
) -> Result<String, KeyError> {
    let header = serde_json::to_vec(header).map_err(|_| KeyError::Crypto("header encoding"))?;
    let payload = serde_json::to_vec(claims).map_err(|_| KeyError::Crypto("claims encoding"))?;
    let mut out = URL_SAFE_NO_PAD.encode(header);
    out.push('.');
    out.push_str(&URL_SAFE_NO_PAD.encode(payload));
    let sig = key.sign_bytes(out.as_bytes())?;
    out.push('.');
    out.push_str(&URL_SAFE_NO_PAD.encode(sig));
    Ok(out)
}

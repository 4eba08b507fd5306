//! DPoP (RFC 9449): proofs of possession that bind a token to the agent's key, so a token
//! copied out of an agent's memory is useless without the private key.
//!
//! Sans-IO: [`check_proof`] verifies one `DPoP` header against the request it came with
//! ([`ProofCheck`]) and returns the key's thumbprint (`jkt`) and the proof's `jti`; the caller
//! remembers the `jti` (in the store at the token endpoint, in a [`ReplayCache`] at a gateway or
//! verifier) and compares the thumbprint with the token's `cnf.jkt`. [`Nonces`] issues and
//! checks stateless server nonces; [`prove`] makes proofs (agents, tests, the demo).

use std::collections::HashMap;
use std::sync::Mutex;

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::keys::{SigningKey, jwk_thumbprint};
use crate::verify::{KeySet, VerifyError, VerifyingKey, verify_signature};
use crate::{KeyError, random_id};

/// The `typ` of a DPoP proof.
pub const DPOP_TYP: &str = "dpop+jwt";

/// The JWS algorithms accepted for proofs: asymmetric only (never `none` or HMAC).
pub const SUPPORTED_ALGS: &[&str] = &["EdDSA", "ES256", "ES384", "RS256", "PS256"];

/// The longest proof accepted (a proof is small: header with a public key, a few claims).
const MAX_PROOF_LEN: usize = 8 * 1024;

/// Why a proof was refused. Messages are for `error_description`; none holds key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// Not a well-formed DPoP proof JWT.
    #[error("the DPoP proof is malformed: {0}")]
    Malformed(&'static str),
    /// The signature, algorithm or key is not acceptable.
    #[error("the DPoP proof is not validly signed: {0}")]
    Signature(String),
    /// `htm` is not the request's method.
    #[error("the DPoP proof's `htm` is not this request's method")]
    WrongMethod,
    /// `htu` is not the request's URL.
    #[error("the DPoP proof's `htu` is not this request's URL")]
    WrongUrl,
    /// `iat` is outside the accepted window.
    #[error("the DPoP proof's `iat` is too old or in the future")]
    Stale,
    /// `ath` does not hash the presented access token.
    #[error("the DPoP proof's `ath` does not match the access token")]
    WrongAth,
    /// A nonce is required and the proof has none, or an old or unknown one.
    #[error("a fresh server nonce is required in the DPoP proof")]
    UseNonce,
    /// The key is not the one the token is bound to.
    #[error("the DPoP proof's key is not the one the token is bound to")]
    WrongKey,
    /// The proof's `jti` was seen before.
    #[error("the DPoP proof was already used")]
    Replayed,
}

impl ProofError {
    /// The RFC 9449 error code: `use_dpop_nonce` for a missing or stale nonce, otherwise
    /// `invalid_dpop_proof`.
    pub fn code(&self) -> &'static str {
        match self {
            ProofError::UseNonce => "use_dpop_nonce",
            _ => "invalid_dpop_proof",
        }
    }
}

/// What a proof must match: the request it arrived with.
#[derive(Debug, Clone, Copy)]
pub struct ProofCheck<'a> {
    /// The request's method (`POST`).
    pub method: &'a str,
    /// The request's URL as the client addressed it, without query or fragment.
    pub url: &'a str,
    /// Now, seconds since the epoch.
    pub now: i64,
    /// How old `iat` may be, seconds.
    pub max_age: i64,
    /// How far `iat` may be in the future (clock skew), seconds.
    pub leeway: i64,
    /// The access token presented with the proof (its hash must be `ath`), if any.
    pub access_token: Option<&'a str>,
    /// The nonce checker, when the server requires nonces.
    pub nonces: Option<&'a Nonces>,
}

/// A proof that passed [`check_proof`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedProof {
    /// The RFC 7638 thumbprint of the proof's key: the token's `cnf.jkt`.
    pub jkt: String,
    /// The proof's `jti`: remember it until [`VerifiedProof::expires`].
    pub jti: String,
    /// The proof's `iat`.
    pub iat: i64,
    /// When the proof can no longer be accepted (so its `jti` can be forgotten).
    pub expires: i64,
}

/// Base64url SHA-256 of an access token: the `ath` claim.
pub fn ath(access_token: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(access_token.as_bytes()))
}

/// A URL reduced to what `htu` compares (RFC 9449 §4.3, RFC 3986 §6.2.2–6.2.3): scheme and
/// host in lower case, the default port dropped, an empty path as `/`, no query or fragment.
/// `None` for anything that is not an absolute `http`/`https` URL.
pub fn normalize_htu(url: &str) -> Option<String> {
    let url = url.split(['#', '?']).next().unwrap_or_default();
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "https" => ":443",
        "http" => ":80",
        _ => return None,
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') || path.chars().any(char::is_whitespace) {
        return None;
    }
    let mut authority = authority.to_ascii_lowercase();
    if authority.ends_with(default_port) {
        authority.truncate(authority.len() - default_port.len());
    }
    Some(format!("{scheme}://{authority}{path}"))
}

/// Verifies a `DPoP` header value against the request it came with. Does not remember the
/// `jti`: the caller does, with the returned [`VerifiedProof`].
pub fn check_proof(proof: &str, check: &ProofCheck<'_>) -> Result<VerifiedProof, ProofError> {
    if proof.len() > MAX_PROOF_LEN {
        return Err(ProofError::Malformed("it is too long"));
    }
    let header = proof_header(proof)?;
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or(ProofError::Malformed("its header has no `alg`"))?;
    if !SUPPORTED_ALGS.contains(&alg) {
        return Err(ProofError::Signature(format!(
            "algorithm `{}` is not accepted for DPoP (use one of {})",
            alg.chars().take(16).collect::<String>(),
            SUPPORTED_ALGS.join(", ")
        )));
    }
    let Some(Value::Object(jwk)) = header.get("jwk") else {
        return Err(ProofError::Malformed("its header has no `jwk` public key"));
    };
    // The key is the proof's own; a `kid` names nothing here, and the header's `alg` is the one
    // the key must verify with (refused when it does not fit the key type).
    let mut public = jwk.clone();
    public.remove("kid");
    public.insert("alg".to_owned(), Value::String(alg.to_owned()));
    let public = Value::Object(public);
    let key = VerifyingKey::from_jwk(&public).map_err(|e| ProofError::Signature(e.to_string()))?;
    let jkt =
        jwk_thumbprint(&public).ok_or(ProofError::Malformed("its `jwk` has no thumbprint"))?;
    let verified =
        verify_signature(proof, &KeySet::new(vec![key]), Some(DPOP_TYP)).map_err(|e| match e {
            VerifyError::WrongType(_) => ProofError::Malformed("its `typ` is not `dpop+jwt`"),
            VerifyError::UnknownKid(_) | VerifyError::NoKid => {
                ProofError::Malformed("its header names a `kid`; a proof carries its key")
            }
            other => ProofError::Signature(other.to_string()),
        })?;
    // jsonwebtoken compares `typ` loosely only through our check above; RFC 9449 wants it exact.
    if verified.header.typ.as_deref() != Some(DPOP_TYP) {
        return Err(ProofError::Malformed("its `typ` is not `dpop+jwt`"));
    }
    let claims = &verified.claims;
    let text = |k: &'static str| claims.get(k).and_then(Value::as_str);
    let jti = text("jti")
        .filter(|j| !j.is_empty() && j.len() <= 256)
        .ok_or(ProofError::Malformed("it has no `jti`"))?;
    let htm = text("htm").ok_or(ProofError::Malformed("it has no `htm`"))?;
    if htm != check.method {
        return Err(ProofError::WrongMethod);
    }
    let htu = text("htu").ok_or(ProofError::Malformed("it has no `htu`"))?;
    match (normalize_htu(htu), normalize_htu(check.url)) {
        (Some(got), Some(want)) if got == want => {}
        _ => return Err(ProofError::WrongUrl),
    }
    let iat = claims
        .get("iat")
        .and_then(Value::as_i64)
        .ok_or(ProofError::Malformed("it has no numeric `iat`"))?;
    if iat > check.now.saturating_add(check.leeway) || iat < check.now.saturating_sub(check.max_age)
    {
        return Err(ProofError::Stale);
    }
    match (check.access_token, text("ath")) {
        (Some(token), Some(got)) if got == ath(token) => {}
        (Some(_), _) => return Err(ProofError::WrongAth),
        (None, _) => {}
    }
    if let Some(nonces) = check.nonces
        && !text("nonce").is_some_and(|n| nonces.is_fresh(n, check.now))
    {
        return Err(ProofError::UseNonce);
    }
    Ok(VerifiedProof {
        jkt,
        jti: jti.to_owned(),
        iat,
        expires: iat
            .saturating_add(check.max_age)
            .saturating_add(check.leeway),
    })
}

fn proof_header(proof: &str) -> Result<Map<String, Value>, ProofError> {
    let mut parts = proof.split('.');
    let (Some(h), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ProofError::Malformed("it is not a compact JWS"));
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(h)
        .map_err(|_| ProofError::Malformed("its header is not base64url"))?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(m)) => {
            if m.contains_key("crit") {
                return Err(ProofError::Malformed("its header has `crit`"));
            }
            Ok(m)
        }
        _ => Err(ProofError::Malformed("its header is not a JSON object")),
    }
}

/// The `jti`s of proofs seen recently, each kept until its proof expires; bounded, so a flood
/// of proofs cannot grow it without limit (when full, new proofs are refused as replays until
/// old ones expire — failing closed).
#[derive(Debug)]
pub struct ReplayCache {
    seen: Mutex<HashMap<String, i64>>,
    capacity: usize,
}

impl ReplayCache {
    /// A cache holding at most `capacity` live `jti`s.
    pub fn new(capacity: usize) -> ReplayCache {
        ReplayCache {
            seen: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    /// Records the proof's key and `jti`; [`ProofError::Replayed`] if they were seen before
    /// (or the cache is full of live entries).
    pub fn remember(&self, proof: &VerifiedProof, now: i64) -> Result<(), ProofError> {
        let Ok(mut seen) = self.seen.lock() else {
            return Err(ProofError::Replayed);
        };
        if seen.len() >= self.capacity {
            seen.retain(|_, exp| *exp >= now);
        }
        if seen.len() >= self.capacity {
            return Err(ProofError::Replayed);
        }
        let key = format!("{}|{}", proof.jkt, proof.jti);
        if seen.get(&key).is_some_and(|exp| *exp >= now) {
            return Err(ProofError::Replayed);
        }
        seen.insert(key, proof.expires);
        Ok(())
    }
}

/// Stateless server nonces (RFC 9449 §8): an HMAC of the current time slot, so every node that
/// shares the secret accepts the others' nonces. A nonce is fresh in its slot and the next.
pub struct Nonces {
    key: hmac::Key,
    slot: i64,
}

impl std::fmt::Debug for Nonces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nonces").field("slot", &self.slot).finish()
    }
}

impl Nonces {
    /// Nonces keyed by `secret` that change every `slot` seconds (at least 1).
    pub fn new(secret: &[u8], slot: i64) -> Nonces {
        Nonces {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
            slot: slot.max(1),
        }
    }

    fn for_slot(&self, slot: i64) -> String {
        let tag = hmac::sign(&self.key, &slot.to_be_bytes());
        let mut out = slot.to_string();
        out.push('.');
        out.push_str(&URL_SAFE_NO_PAD.encode(&tag.as_ref()[..16]));
        out
    }

    /// The nonce to hand out at `now` (in a `DPoP-Nonce` header).
    pub fn current(&self, now: i64) -> String {
        self.for_slot(now.div_euclid(self.slot))
    }

    /// Whether `nonce` was handed out in this slot or the previous one.
    pub fn is_fresh(&self, nonce: &str, now: i64) -> bool {
        let Some((slot, _)) = nonce.split_once('.') else {
            return false;
        };
        let Ok(slot) = slot.parse::<i64>() else {
            return false;
        };
        let current = now.div_euclid(self.slot);
        (slot == current || slot == current.saturating_sub(1)) && self.for_slot(slot) == nonce
    }
}

/// Makes a DPoP proof with `key` for a request (`htm`, `htu`), binding `access_token` (`ath`)
/// when given and carrying the server's `nonce` when one was asked for.
pub fn prove(
    key: &SigningKey,
    htm: &str,
    htu: &str,
    access_token: Option<&str>,
    nonce: Option<&str>,
    now: i64,
) -> Result<String, KeyError> {
    let mut jwk = key.public_jwk().clone();
    if let Some(o) = jwk.as_object_mut() {
        o.remove("kid");
        o.remove("alg");
        o.remove("use");
    }
    let header = json!({"typ": DPOP_TYP, "alg": key.alg().as_str(), "jwk": jwk});
    let mut claims = json!({"jti": random_id::<16>()?, "htm": htm, "htu": htu, "iat": now});
    if let Some(t) = access_token {
        claims["ath"] = json!(ath(t));
    }
    if let Some(n) = nonce {
        claims["nonce"] = json!(n);
    }
    crate::sign::sign_with_header(key, &header, &claims)
}

/// The thumbprint a proof made with `key` carries: what a token bound to it holds in
/// `cnf.jkt`.
pub fn key_thumbprint(key: &SigningKey) -> Option<String> {
    jwk_thumbprint(key.public_jwk())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::keys::Alg;

    const URL: &str = "https://gw.example/customers/9821";

    fn check(now: i64) -> ProofCheck<'static> {
        ProofCheck {
            method: "GET",
            url: URL,
            now,
            max_age: 60,
            leeway: 5,
            access_token: Some("the-token"),
            nonces: None,
        }
    }

    fn forge(header: Value, claims: Value, key: &SigningKey) -> String {
        let mut out = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap());
        out.push('.');
        out.push_str(&URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap()));
        let sig = key.sign_bytes(out.as_bytes()).unwrap();
        out.push('.');
        out.push_str(&URL_SAFE_NO_PAD.encode(sig));
        out
    }

    #[test]
    fn a_good_proof_gives_the_keys_thumbprint() {
        for alg in [Alg::EdDSA, Alg::ES256] {
            let key = SigningKey::generate(alg).unwrap();
            let p = prove(&key, "GET", URL, Some("the-token"), None, 1000).unwrap();
            let v = check_proof(&p, &check(1000)).unwrap();
            assert_eq!(Some(v.jkt), key_thumbprint(&key));
            assert_eq!(v.expires, 1065);
        }
    }

    #[test]
    fn htu_ignores_query_fragment_case_and_default_port_only() {
        let key = SigningKey::generate(Alg::EdDSA).unwrap();
        let p = prove(
            &key,
            "GET",
            "HTTPS://GW.example:443/customers/9821?x=1#f",
            Some("the-token"),
            None,
            1000,
        )
        .unwrap();
        assert!(check_proof(&p, &check(1000)).is_ok());
        for other in [
            "https://gw.example/customers/9822",
            "http://gw.example/customers/9821",
            "https://gw.example:8443/customers/9821",
            "https://evil.example/customers/9821",
            "/customers/9821",
        ] {
            let p = prove(&key, "GET", other, Some("the-token"), None, 1000).unwrap();
            assert_eq!(
                check_proof(&p, &check(1000)),
                Err(ProofError::WrongUrl),
                "{other}"
            );
        }
    }

    #[test]
    fn method_time_and_access_token_must_match() {
        let key = SigningKey::generate(Alg::ES256).unwrap();
        let p = prove(&key, "POST", URL, Some("the-token"), None, 1000).unwrap();
        assert_eq!(check_proof(&p, &check(1000)), Err(ProofError::WrongMethod));
        let p = prove(&key, "GET", URL, Some("the-token"), None, 900).unwrap();
        assert_eq!(check_proof(&p, &check(1000)), Err(ProofError::Stale));
        let p = prove(&key, "GET", URL, Some("the-token"), None, 1010).unwrap();
        assert_eq!(check_proof(&p, &check(1000)), Err(ProofError::Stale));
        let p = prove(&key, "GET", URL, Some("another-token"), None, 1000).unwrap();
        assert_eq!(check_proof(&p, &check(1000)), Err(ProofError::WrongAth));
        let p = prove(&key, "GET", URL, None, None, 1000).unwrap();
        assert_eq!(check_proof(&p, &check(1000)), Err(ProofError::WrongAth));
    }

    #[test]
    fn unsigned_symmetric_private_and_mistyped_proofs_are_refused() {
        let key = SigningKey::generate(Alg::EdDSA).unwrap();
        let jwk = key.public_jwk().clone();
        let claims =
            json!({"jti": "j", "htm": "GET", "htu": URL, "iat": 1000, "ath": ath("the-token")});
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(
                serde_json::to_vec(&json!({"typ": DPOP_TYP, "alg": "none", "jwk": jwk})).unwrap()
            ),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap())
        );
        assert!(matches!(
            check_proof(&none, &check(1000)),
            Err(ProofError::Signature(_))
        ));
        let hs = forge(
            json!({"typ": DPOP_TYP, "alg": "HS256", "jwk": {"kty": "oct", "k": "c2VjcmV0"}}),
            claims.clone(),
            &key,
        );
        assert!(matches!(
            check_proof(&hs, &check(1000)),
            Err(ProofError::Signature(_))
        ));
        let mut private = jwk.clone();
        private["d"] = json!("AAAA");
        let p = forge(
            json!({"typ": DPOP_TYP, "alg": "EdDSA", "jwk": private}),
            claims.clone(),
            &key,
        );
        assert!(matches!(
            check_proof(&p, &check(1000)),
            Err(ProofError::Signature(_))
        ));
        let p = forge(
            json!({"typ": "JWT", "alg": "EdDSA", "jwk": jwk}),
            claims.clone(),
            &key,
        );
        assert!(matches!(
            check_proof(&p, &check(1000)),
            Err(ProofError::Malformed(_))
        ));
        let p = forge(
            json!({"typ": DPOP_TYP, "alg": "EdDSA"}),
            claims.clone(),
            &key,
        );
        assert!(matches!(
            check_proof(&p, &check(1000)),
            Err(ProofError::Malformed(_))
        ));
        // Signed by another key than the one in the header.
        let other = SigningKey::generate(Alg::EdDSA).unwrap();
        let p = forge(
            json!({"typ": DPOP_TYP, "alg": "EdDSA", "jwk": jwk}),
            claims,
            &other,
        );
        assert!(matches!(
            check_proof(&p, &check(1000)),
            Err(ProofError::Signature(_))
        ));
        assert!(matches!(
            check_proof("x.y", &check(1000)),
            Err(ProofError::Malformed(_))
        ));
    }

    #[test]
    fn a_proof_is_accepted_once() {
        let key = SigningKey::generate(Alg::EdDSA).unwrap();
        let p = prove(&key, "GET", URL, Some("the-token"), None, 1000).unwrap();
        let v = check_proof(&p, &check(1000)).unwrap();
        let cache = ReplayCache::new(2);
        cache.remember(&v, 1000).unwrap();
        assert_eq!(cache.remember(&v, 1001), Err(ProofError::Replayed));
        let w = check_proof(
            &prove(&key, "GET", URL, Some("the-token"), None, 1000).unwrap(),
            &check(1000),
        )
        .unwrap();
        cache.remember(&w, 1000).unwrap();
        // Full of live entries: fail closed; once they expire, room again.
        let x = check_proof(
            &prove(&key, "GET", URL, Some("the-token"), None, 1000).unwrap(),
            &check(1000),
        )
        .unwrap();
        assert_eq!(cache.remember(&x, 1000), Err(ProofError::Replayed));
        assert!(cache.remember(&x, 2000).is_ok());
    }

    #[test]
    fn nonces_are_fresh_for_two_slots_and_unforgeable() {
        let n = Nonces::new(b"secret", 60);
        let other = Nonces::new(b"other", 60);
        let nonce = n.current(600);
        assert!(n.is_fresh(&nonce, 600) && n.is_fresh(&nonce, 719));
        assert!(!n.is_fresh(&nonce, 720));
        assert!(!other.is_fresh(&nonce, 600));
        assert!(!n.is_fresh("10.AAAA", 600) && !n.is_fresh("junk", 600));
        let key = SigningKey::generate(Alg::EdDSA).unwrap();
        let mut c = check(600);
        c.nonces = Some(&n);
        let p = prove(&key, "GET", URL, Some("the-token"), None, 600).unwrap();
        assert_eq!(check_proof(&p, &c), Err(ProofError::UseNonce));
        assert_eq!(ProofError::UseNonce.code(), "use_dpop_nonce");
        let p = prove(&key, "GET", URL, Some("the-token"), Some(&nonce), 600).unwrap();
        assert!(check_proof(&p, &c).is_ok());
    }
}

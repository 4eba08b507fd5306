//! The one verification path: public keys from JWKs, signature check with the algorithm pinned to
//! the key, then the registered claims checked by hand against an injected clock.
//!
//! What this refuses, and why (RFC 8725 "JWT Best Current Practices"):
//! * `alg: none` and any algorithm other than the one the key was registered for — so a token
//!   "signed" with HS256 using a public key as the secret is refused before any signature check;
//! * symmetric (`oct`) keys in a key set: Mandate trusts only public keys;
//! * `crit` headers (no extension is understood); `jku`, `x5u` and embedded `jwk` headers are never
//!   used to find a key — keys come only from configured sets;
//! * oversized tokens, expired or not-yet-valid tokens (with a small leeway), tokens issued in the
//!   future, wrong issuer, audience or `typ`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

/// Longest token accepted, in bytes.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Why a JWT was refused. Messages are safe to show a client: they never echo the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// Not a compact JWS, or its header or payload is not JSON.
    #[error("token is malformed: {0}")]
    Malformed(&'static str),
    /// Longer than [`MAX_TOKEN_LEN`].
    #[error("token is longer than {MAX_TOKEN_LEN} bytes")]
    TooLong,
    /// `alg: none`.
    #[error("unsigned tokens (`alg: none`) are not accepted")]
    Unsigned,
    /// The header names an algorithm other than the key's.
    #[error("token algorithm `{got}` does not match the key's `{expected}`")]
    AlgMismatch {
        /// The header's `alg`.
        got: String,
        /// The key's algorithm.
        expected: String,
    },
    /// No key with this `kid`.
    #[error("no trusted key has kid `{0}`")]
    UnknownKid(String),
    /// No `kid`, and the key set has several keys.
    #[error("token has no `kid` and the issuer has several keys")]
    NoKid,
    /// A `crit` header.
    #[error("token has a `crit` header naming extensions that are not understood")]
    Crit,
    /// The signature does not verify.
    #[error("token signature is invalid")]
    BadSignature,
    /// A required claim is absent or has the wrong type.
    #[error("token has no valid `{0}` claim")]
    MissingClaim(&'static str),
    /// Expired.
    #[error("token has expired")]
    Expired,
    /// `nbf` in the future.
    #[error("token is not valid yet")]
    NotYetValid,
    /// `iat` in the future.
    #[error("token was issued in the future")]
    IssuedInFuture,
    /// Lives longer than allowed.
    #[error("token lifetime exceeds {0} seconds")]
    TooLongLived(i64),
    /// Wrong `iss`.
    #[error("token issuer is not trusted here")]
    WrongIssuer,
    /// No acceptable audience.
    #[error("token audience is not accepted here")]
    WrongAudience,
    /// Wrong `typ` header.
    #[error("token type must be `{0}`")]
    WrongType(&'static str),
}

/// A public key, with the one algorithm it may verify.
#[derive(Clone)]
pub struct VerifyingKey {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish()
    }
}

/// Why a JWK was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwkError {
    /// Not a JWK this verifier accepts.
    #[error("key `{kid}` is not usable: {why}")]
    Unusable {
        /// The key's kid (or `-`).
        kid: String,
        /// Why.
        why: &'static str,
    },
}

fn alg_name(a: Algorithm) -> &'static str {
    match a {
        Algorithm::HS256 => "HS256",
        Algorithm::HS384 => "HS384",
        Algorithm::HS512 => "HS512",
        Algorithm::ES256 => "ES256",
        Algorithm::ES384 => "ES384",
        Algorithm::RS256 => "RS256",
        Algorithm::RS384 => "RS384",
        Algorithm::RS512 => "RS512",
        Algorithm::PS256 => "PS256",
        Algorithm::PS384 => "PS384",
        Algorithm::PS512 => "PS512",
        Algorithm::EdDSA => "EdDSA",
        _ => "unsupported",
    }
}

impl VerifyingKey {
    /// Reads a public JWK. The algorithm is the JWK's `alg` if given (it must fit the key
    /// type), otherwise the one its type implies: OKP/Ed25519 → EdDSA, EC P-256 → ES256,
    /// EC P-384 → ES384, RSA → RS256. Symmetric keys and private keys are refused.
    pub fn from_jwk(jwk: &Value) -> Result<VerifyingKey, JwkError> {
        let kid = jwk.get("kid").and_then(Value::as_str).map(str::to_owned);
        let bad = |why| JwkError::Unusable {
            kid: kid.clone().unwrap_or_else(|| "-".into()),
            why,
        };
        if jwk.get("d").is_some() {
            return Err(bad(
                "it holds private key material; register the public key only",
            ));
        }
        let s = |k: &str| jwk.get(k).and_then(Value::as_str);
        let implied = match (s("kty"), s("crv")) {
            (Some("OKP"), Some("Ed25519")) => Algorithm::EdDSA,
            (Some("EC"), Some("P-256")) => Algorithm::ES256,
            (Some("EC"), Some("P-384")) => Algorithm::ES384,
            (Some("RSA"), _) => Algorithm::RS256,
            (Some("oct"), _) => return Err(bad("symmetric keys are not accepted")),
            _ => {
                return Err(bad(
                    "only Ed25519, P-256, P-384 and RSA public keys are accepted",
                ));
            }
        };
        let alg = match s("alg") {
            None => implied,
            Some(name) => {
                let a: Algorithm = name.parse().map_err(|_| bad("unknown `alg`"))?;
                let fits = match implied {
                    Algorithm::RS256 => matches!(
                        a,
                        Algorithm::RS256
                            | Algorithm::RS384
                            | Algorithm::RS512
                            | Algorithm::PS256
                            | Algorithm::PS384
                            | Algorithm::PS512
                    ),
                    other => a == other,
                };
                if !fits {
                    return Err(bad("`alg` does not fit the key type"));
                }
                a
            }
        };
        let parsed: Jwk =
            serde_json::from_value(jwk.clone()).map_err(|_| bad("not a valid JWK"))?;
        let key = DecodingKey::from_jwk(&parsed).map_err(|_| bad("not a valid JWK"))?;
        Ok(VerifyingKey { kid, alg, key })
    }

    /// The key id.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The JOSE name of the key's algorithm.
    pub fn alg(&self) -> &'static str {
        alg_name(self.alg)
    }
}

/// The keys one party signs with (an IdP's JWKS, an agent's registered keys, Mandate's own).
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: Vec<VerifyingKey>,
}

impl KeySet {
    /// A set of keys.
    pub fn new(keys: Vec<VerifyingKey>) -> KeySet {
        KeySet { keys }
    }

    /// Reads a JWKS document (`{"keys": [...]}`), skipping keys that are not usable for
    /// verification (symmetric, encryption-only, unknown types). Returns the set and the reasons
    /// for each skipped key.
    pub fn from_jwks(doc: &Value) -> (KeySet, Vec<JwkError>) {
        let mut keys = Vec::new();
        let mut skipped = Vec::new();
        for k in doc
            .get("keys")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if k.get("use")
                .and_then(Value::as_str)
                .is_some_and(|u| u != "sig")
            {
                continue;
            }
            match VerifyingKey::from_jwk(k) {
                Ok(v) => keys.push(v),
                Err(e) => skipped.push(e),
            }
        }
        (KeySet { keys }, skipped)
    }

    /// Whether the set has a key with this `kid`.
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there is no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    fn find(&self, kid: Option<&str>) -> Result<&VerifyingKey, VerifyError> {
        match kid {
            Some(kid) => self
                .keys
                .iter()
                .find(|k| k.kid.as_deref() == Some(kid))
                .ok_or_else(|| VerifyError::UnknownKid(kid.chars().take(64).collect())),
            None if self.keys.len() == 1 => self.keys.first().ok_or(VerifyError::NoKid),
            None => Err(VerifyError::NoKid),
        }
    }
}

/// The protected header fields Mandate reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtHeader {
    /// `alg`.
    pub alg: String,
    /// `kid`.
    pub kid: Option<String>,
    /// `typ`.
    pub typ: Option<String>,
}

/// A token whose signature verified and whose registered claims passed the checks.
#[derive(Debug, Clone)]
pub struct VerifiedJwt {
    /// The header.
    pub header: JwtHeader,
    /// All claims.
    pub claims: Value,
}

/// Which audiences are acceptable.
#[derive(Debug, Clone, Copy)]
pub enum AudCheck<'a> {
    /// Do not check `aud`.
    Any,
    /// At least one of the token's audiences must be one of these.
    OneOf(&'a [String]),
}

/// Checks of the registered claims, done after the signature verifies.
#[derive(Debug, Clone, Copy)]
pub struct ClaimChecks<'a> {
    /// Now, seconds since the epoch (injected clock).
    pub now: i64,
    /// Clock skew tolerated, seconds.
    pub leeway: i64,
    /// Required `iss`.
    pub issuer: Option<&'a str>,
    /// Acceptable audiences.
    pub audience: AudCheck<'a>,
    /// Required `typ` header (compared case-insensitively, `application/` prefix allowed).
    pub typ: Option<&'static str>,
    /// Longest allowed `exp − iat` (or `exp − now` without `iat`).
    pub max_lifetime: Option<i64>,
    /// Whether `iat` must be present.
    pub require_iat: bool,
}

impl ClaimChecks<'_> {
    /// Checks with a 30-second leeway and nothing else required but `exp`.
    pub fn at(now: i64) -> ClaimChecks<'static> {
        ClaimChecks {
            now,
            leeway: 30,
            issuer: None,
            audience: AudCheck::Any,
            typ: None,
            max_lifetime: None,
            require_iat: false,
        }
    }
}

fn parse_header(token: &str) -> Result<JwtHeader, VerifyError> {
    let mut parts = token.split('.');
    let (Some(h), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(VerifyError::Malformed("not three dot-separated parts"));
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(h)
        .map_err(|_| VerifyError::Malformed("header is not base64url"))?;
    let v: Value =
        serde_json::from_slice(&bytes).map_err(|_| VerifyError::Malformed("header is not JSON"))?;
    let obj = v
        .as_object()
        .ok_or(VerifyError::Malformed("header is not an object"))?;
    if obj.contains_key("crit") {
        return Err(VerifyError::Crit);
    }
    let alg = obj
        .get("alg")
        .and_then(Value::as_str)
        .ok_or(VerifyError::Malformed("header has no `alg`"))?;
    if alg.eq_ignore_ascii_case("none") {
        return Err(VerifyError::Unsigned);
    }
    let text = |k: &str| obj.get(k).and_then(Value::as_str).map(str::to_owned);
    Ok(JwtHeader {
        alg: alg.chars().take(16).collect(),
        kid: text("kid"),
        typ: text("typ"),
    })
}

fn typ_matches(got: Option<&str>, want: &str) -> bool {
    got.is_some_and(|g| {
        let g = g.to_ascii_lowercase();
        g == want || g.strip_prefix("application/") == Some(want)
    })
}

/// Reads the claims of a token without verifying it. Only for routing decisions (which issuer's
/// keys to use); never trust what it returns.
pub fn peek_claims(token: &str) -> Result<Value, VerifyError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(VerifyError::TooLong);
    }
    let payload = token
        .split('.')
        .nth(1)
        .ok_or(VerifyError::Malformed("not three dot-separated parts"))?;
    let bytes = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| VerifyError::Malformed("payload is not base64url"))?;
    let v: Value = serde_json::from_slice(&bytes)
        .map_err(|_| VerifyError::Malformed("payload is not JSON"))?;
    if !v.is_object() {
        return Err(VerifyError::Malformed("payload is not an object"));
    }
    Ok(v)
}

/// Verifies `token` with `keys` and checks its claims. The one path every verifier uses.
pub fn verify(
    token: &str,
    keys: &KeySet,
    checks: &ClaimChecks<'_>,
) -> Result<VerifiedJwt, VerifyError> {
    let verified = verify_signature(token, keys, checks.typ)?;
    check_claims(&verified.claims, checks)?;
    Ok(verified)
}

/// Verifies only `token`'s signature (algorithm pinned to the key), its `typ` header when `typ`
/// is given, and that its payload is a JSON object — no time or audience claims. For signed
/// records that never expire (audit checkpoints); tokens go through [`verify`].
pub fn verify_signature(
    token: &str,
    keys: &KeySet,
    typ: Option<&'static str>,
) -> Result<VerifiedJwt, VerifyError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(VerifyError::TooLong);
    }
    let header = parse_header(token)?;
    let key = keys.find(header.kid.as_deref())?;
    if header.alg != alg_name(key.alg) {
        return Err(VerifyError::AlgMismatch {
            got: header.alg,
            expected: alg_name(key.alg).to_owned(),
        });
    }
    let mut validation = Validation::new(key.alg);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    let data = jsonwebtoken::decode::<Value>(token, &key.key, &validation).map_err(|e| {
        use jsonwebtoken::errors::ErrorKind;
        match e.kind() {
            ErrorKind::InvalidSignature => VerifyError::BadSignature,
            ErrorKind::Json(_) | ErrorKind::Utf8(_) | ErrorKind::Base64(_) => {
                VerifyError::Malformed("payload is not base64url JSON")
            }
            _ => VerifyError::BadSignature,
        }
    })?;
    let claims = data.claims;
    if !claims.is_object() {
        return Err(VerifyError::Malformed("payload is not an object"));
    }
    check_typ(&header, typ)?;
    Ok(VerifiedJwt { header, claims })
}

/// The `typ` header, when one is required.
pub(crate) fn check_typ(header: &JwtHeader, typ: Option<&'static str>) -> Result<(), VerifyError> {
    match typ {
        Some(want) if !typ_matches(header.typ.as_deref(), want) => {
            Err(VerifyError::WrongType(want))
        }
        _ => Ok(()),
    }
}

/// The registered claims (the signature, `typ` and payload shape were checked by
/// [`verify_signature`]).
pub(crate) fn check_claims(claims: &Value, c: &ClaimChecks<'_>) -> Result<(), VerifyError> {
    let num = |k: &'static str| -> Result<Option<i64>, VerifyError> {
        match claims.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_i64()
                .or_else(|| v.as_f64().map(|f| f as i64))
                .map(Some)
                .ok_or(VerifyError::MissingClaim(k)),
        }
    };
    let exp = num("exp")?.ok_or(VerifyError::MissingClaim("exp"))?;
    if c.now >= exp.saturating_add(c.leeway) {
        return Err(VerifyError::Expired);
    }
    if let Some(nbf) = num("nbf")?
        && c.now.saturating_add(c.leeway) < nbf
    {
        return Err(VerifyError::NotYetValid);
    }
    let iat = num("iat")?;
    if c.require_iat && iat.is_none() {
        return Err(VerifyError::MissingClaim("iat"));
    }
    if let Some(iat) = iat
        && iat > c.now.saturating_add(c.leeway)
    {
        return Err(VerifyError::IssuedInFuture);
    }
    if let Some(max) = c.max_lifetime {
        let start = iat.unwrap_or(c.now);
        if exp.saturating_sub(start) > max.saturating_add(c.leeway) {
            return Err(VerifyError::TooLongLived(max));
        }
    }
    if let Some(iss) = c.issuer
        && claims.get("iss").and_then(Value::as_str) != Some(iss)
    {
        return Err(VerifyError::WrongIssuer);
    }
    if let AudCheck::OneOf(accepted) = c.audience {
        let ok = match claims.get("aud") {
            Some(Value::String(a)) => accepted.iter().any(|x| x == a),
            Some(Value::Array(list)) => list
                .iter()
                .filter_map(Value::as_str)
                .any(|a| accepted.iter().any(|x| x == a)),
            _ => false,
        };
        if !ok {
            return Err(VerifyError::WrongAudience);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{Alg, SigningKey};
    use crate::sign::sign_jwt;
    use serde_json::json;

    fn set_for(key: &SigningKey) -> KeySet {
        KeySet::new(vec![VerifyingKey::from_jwk(key.public_jwk()).unwrap()])
    }

    fn forge(header: Value, claims: Value, sig: &[u8]) -> String {
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string()),
            URL_SAFE_NO_PAD.encode(sig)
        )
    }

    #[test]
    fn signature_only_verification_needs_no_exp_but_checks_signature_and_type() {
        let k = SigningKey::generate(Alg::EdDSA).unwrap();
        let other = SigningKey::generate(Alg::EdDSA).unwrap().with_kid(k.kid());
        let claims = json!({"iss": "m", "iat": 100, "seq": 7, "hash": "ab"});
        let t = sign_jwt(&k, "audit-checkpoint+jwt", &claims).unwrap();
        let v = verify_signature(&t, &set_for(&k), Some("audit-checkpoint+jwt")).unwrap();
        assert_eq!(v.claims["seq"], 7);
        // `verify` would want an `exp`.
        assert_eq!(
            verify(&t, &set_for(&k), &ClaimChecks::at(150)).unwrap_err(),
            VerifyError::MissingClaim("exp")
        );
        assert_eq!(
            verify_signature(&t, &set_for(&k), Some("at+jwt")).unwrap_err(),
            VerifyError::WrongType("at+jwt")
        );
        let forged = sign_jwt(&other, "audit-checkpoint+jwt", &claims).unwrap();
        assert_eq!(
            verify_signature(&forged, &set_for(&k), None).unwrap_err(),
            VerifyError::BadSignature
        );
    }

    #[test]
    fn signs_and_verifies_both_algorithms() {
        for alg in [Alg::EdDSA, Alg::ES256] {
            let k = SigningKey::generate(alg).unwrap();
            let t = sign_jwt(
                &k,
                "at+jwt",
                &json!({"iss": "m", "aud": "x", "exp": 200, "iat": 100}),
            )
            .unwrap();
            let mut c = ClaimChecks::at(150);
            c.typ = Some("at+jwt");
            c.issuer = Some("m");
            let aud = ["x".to_owned()];
            c.audience = AudCheck::OneOf(&aud);
            let v = verify(&t, &set_for(&k), &c).unwrap();
            assert_eq!(v.claims["iss"], "m");
        }
    }

    #[test]
    fn refuses_the_classic_attacks() {
        let k = SigningKey::generate(Alg::EdDSA).unwrap();
        let keys = set_for(&k);
        let claims = json!({"exp": 200});
        let now = ClaimChecks::at(100);
        let none = forge(json!({"alg": "none", "kid": k.kid()}), claims.clone(), b"");
        assert_eq!(
            verify(&none, &keys, &now).unwrap_err(),
            VerifyError::Unsigned
        );
        // HS256 "signed" with the public key bytes as the HMAC secret.
        let hs = {
            let x = k.public_jwk()["x"].as_str().unwrap();
            let h = jsonwebtoken::Header {
                alg: Algorithm::HS256,
                kid: Some(k.kid().into()),
                ..Default::default()
            };
            jsonwebtoken::encode(
                &h,
                &claims,
                &jsonwebtoken::EncodingKey::from_secret(x.as_bytes()),
            )
            .unwrap()
        };
        assert!(matches!(
            verify(&hs, &keys, &now),
            Err(VerifyError::AlgMismatch { .. })
        ));
        let crit = forge(
            json!({"alg": "EdDSA", "kid": k.kid(), "crit": ["exp"]}),
            claims.clone(),
            b"x",
        );
        assert_eq!(verify(&crit, &keys, &now).unwrap_err(), VerifyError::Crit);
        let unknown = forge(
            json!({"alg": "EdDSA", "kid": "../../etc/passwd"}),
            claims.clone(),
            b"x",
        );
        assert!(matches!(
            verify(&unknown, &keys, &now),
            Err(VerifyError::UnknownKid(_))
        ));
        let bad_sig = forge(
            json!({"alg": "EdDSA", "kid": k.kid()}),
            claims.clone(),
            &[0u8; 64],
        );
        assert_eq!(
            verify(&bad_sig, &keys, &now).unwrap_err(),
            VerifyError::BadSignature
        );
        // A key embedded in the header is not trusted.
        let other = SigningKey::generate(Alg::EdDSA).unwrap();
        let embedded = sign_jwt(&other, "JWT", &claims).unwrap();
        assert!(verify(&embedded, &keys, &now).is_err());
        assert_eq!(
            verify(&"a".repeat(MAX_TOKEN_LEN + 1), &keys, &now).unwrap_err(),
            VerifyError::TooLong
        );
        assert!(matches!(
            verify("a.b", &keys, &now),
            Err(VerifyError::Malformed(_))
        ));
    }

    #[test]
    fn checks_time_issuer_audience_and_type() {
        let k = SigningKey::generate(Alg::EdDSA).unwrap();
        let keys = set_for(&k);
        let t = sign_jwt(
            &k,
            "JWT",
            &json!({"iss": "a", "aud": ["x", "y"], "exp": 200, "nbf": 100, "iat": 100}),
        )
        .unwrap();
        assert_eq!(
            verify(&t, &keys, &ClaimChecks::at(231)).unwrap_err(),
            VerifyError::Expired
        );
        assert_eq!(
            verify(&t, &keys, &ClaimChecks::at(60)).unwrap_err(),
            VerifyError::NotYetValid
        );
        let mut c = ClaimChecks::at(150);
        c.issuer = Some("b");
        assert_eq!(verify(&t, &keys, &c).unwrap_err(), VerifyError::WrongIssuer);
        let aud = ["z".to_owned()];
        let mut c = ClaimChecks::at(150);
        c.audience = AudCheck::OneOf(&aud);
        assert_eq!(
            verify(&t, &keys, &c).unwrap_err(),
            VerifyError::WrongAudience
        );
        let mut c = ClaimChecks::at(150);
        c.typ = Some("at+jwt");
        assert_eq!(
            verify(&t, &keys, &c).unwrap_err(),
            VerifyError::WrongType("at+jwt")
        );
        let mut c = ClaimChecks::at(150);
        c.max_lifetime = Some(50);
        assert_eq!(
            verify(&t, &keys, &c).unwrap_err(),
            VerifyError::TooLongLived(50)
        );
        let no_exp = sign_jwt(&k, "JWT", &json!({"iss": "a"})).unwrap();
        assert_eq!(
            verify(&no_exp, &keys, &ClaimChecks::at(150)).unwrap_err(),
            VerifyError::MissingClaim("exp")
        );
    }

    #[test]
    fn jwks_skips_symmetric_and_private_keys() {
        let k = SigningKey::generate(Alg::ES256).unwrap();
        let doc = json!({"keys": [k.public_jwk(), {"kty": "oct", "k": "c2VjcmV0", "kid": "s"},
            {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "d": "x", "kid": "p"}]});
        let (set, skipped) = KeySet::from_jwks(&doc);
        assert_eq!(set.len(), 1);
        assert_eq!(skipped.len(), 2);
        assert!(set.has_kid(k.kid()));
    }
}

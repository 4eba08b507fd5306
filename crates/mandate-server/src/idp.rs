//! Trusted identity providers: which issuers' user tokens Mandate accepts, and their keys.
//!
//! Keys come from a JWKS file (read at start), a JWKS URL (fetched at start, cached, and fetched
//! again when a token names a `kid` the cache does not have — at most once every few seconds, so
//! a flood of made-up `kid`s cannot turn Mandate into a request amplifier), or, in `--dev`, the
//! built-in test IdP's key.

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use mandate_core::ids::UserPrincipal;
use mandate_token::verify::{AudCheck, ClaimChecks, peek_claims};
use mandate_token::{KeySet, VerifiedTokens, VerifyError};
use serde_json::Value;

use crate::config::TrustedIssuerConfig;

/// Least time between two JWKS fetches of one issuer triggered by unknown `kid`s.
const REFRESH_INTERVAL: Duration = Duration::from_secs(5);
/// Largest JWKS document read.
const MAX_JWKS_BYTES: usize = 256 * 1024;

/// Why a user token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserTokenError {
    /// No trusted issuer has this `iss`.
    #[error("subject token issuer `{0}` is not trusted")]
    UntrustedIssuer(String),
    /// Verification failed.
    #[error("subject token refused: {0}")]
    Invalid(#[from] VerifyError),
    /// The configured user claim is missing.
    #[error("subject token has no `{0}` claim naming the user")]
    NoUser(String),
}

enum Source {
    Url(String),
    Static,
}

/// One trusted issuer and its cached keys.
pub struct TrustedIssuer {
    /// Its configuration.
    pub config: TrustedIssuerConfig,
    source: Source,
    keys: RwLock<Arc<IssuerKeys>>,
    last_fetch: Mutex<Option<Instant>>,
}

/// Tokens whose signature verified, remembered per issuer key set (see [`VerifiedTokens`]).
const VERIFIED_TOKENS: usize = 4096;

/// An issuer's current keys and the tokens they already verified: replaced together, so a
/// token is never accepted on the word of a key the issuer no longer publishes.
struct IssuerKeys {
    set: KeySet,
    verified: VerifiedTokens,
}

impl IssuerKeys {
    fn new(set: KeySet) -> Arc<IssuerKeys> {
        Arc::new(IssuerKeys {
            set,
            verified: VerifiedTokens::new(VERIFIED_TOKENS),
        })
    }
}

/// Failure to load an issuer's keys.
#[derive(Debug, thiserror::Error)]
#[error("cannot load keys of issuer `{issuer}`: {why}")]
pub struct JwksError {
    /// The issuer's name.
    pub issuer: String,
    /// Why.
    pub why: String,
}

impl TrustedIssuer {
    /// An issuer whose keys are fixed (a JWKS file, or the dev IdP).
    pub fn with_keys(config: TrustedIssuerConfig, keys: KeySet) -> TrustedIssuer {
        TrustedIssuer {
            config,
            source: Source::Static,
            keys: RwLock::new(IssuerKeys::new(keys)),
            last_fetch: Mutex::new(None),
        }
    }

    /// Builds an issuer from configuration, reading its JWKS file if it has one.
    pub fn from_config(config: TrustedIssuerConfig) -> Result<TrustedIssuer, JwksError> {
        let err = |why: String| JwksError {
            issuer: config.name.clone(),
            why,
        };
        if let Some(path) = &config.jwks_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| err(format!("`{}`: {e}", path.display())))?;
            let doc: Value = serde_json::from_str(&text)
                .map_err(|e| err(format!("`{}` is not JSON: {e}", path.display())))?;
            let (keys, _skipped) = KeySet::from_jwks(&doc);
            if keys.is_empty() {
                return Err(err(format!(
                    "`{}` holds no usable public key",
                    path.display()
                )));
            }
            return Ok(TrustedIssuer::with_keys(config, keys));
        }
        let url = config.jwks_url.clone().unwrap_or_default();
        Ok(TrustedIssuer {
            config,
            source: Source::Url(url),
            keys: RwLock::new(IssuerKeys::new(KeySet::default())),
            last_fetch: Mutex::new(None),
        })
    }

    fn key_set(&self) -> Arc<IssuerKeys> {
        match self.keys.read() {
            Ok(k) => k.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Fetches the JWKS URL now (if this issuer has one and was not fetched in the last few
    /// seconds, unless `force`). Returns whether keys were replaced.
    pub async fn refresh(&self, http: &reqwest::Client, force: bool) -> Result<bool, JwksError> {
        let Source::Url(url) = &self.source else {
            return Ok(false);
        };
        {
            let mut last = match self.last_fetch.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            if !force && last.is_some_and(|t| t.elapsed() < REFRESH_INTERVAL) {
                return Ok(false);
            }
            *last = Some(Instant::now());
        }
        let err = |why: String| JwksError {
            issuer: self.config.name.clone(),
            why,
        };
        let resp = http
            .get(url)
            .send()
            .await
            .map_err(|e| err(format!("fetching `{url}`: {e}")))?;
        if !resp.status().is_success() {
            return Err(err(format!("`{url}` answered {}", resp.status())));
        }
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| err(format!("reading `{url}`: {e}")))?;
        if bytes.len() > MAX_JWKS_BYTES {
            return Err(err(format!(
                "`{url}` is larger than {MAX_JWKS_BYTES} bytes"
            )));
        }
        let doc: Value =
            serde_json::from_slice(&bytes).map_err(|e| err(format!("`{url}` is not JSON: {e}")))?;
        let (keys, _) = KeySet::from_jwks(&doc);
        match self.keys.write() {
            Ok(mut g) => *g = IssuerKeys::new(keys),
            Err(p) => *p.into_inner() = IssuerKeys::new(keys),
        }
        Ok(true)
    }

    fn verify_with_cache(
        &self,
        token: &str,
        checks: &ClaimChecks<'_>,
    ) -> Result<Value, VerifyError> {
        let keys = self.key_set();
        keys.verified
            .verify(token, &keys.set, checks)
            .map(|v| v.claims)
    }
}

/// The trusted issuers.
#[derive(Default)]
pub struct Idps {
    issuers: Vec<Arc<TrustedIssuer>>,
    http: reqwest::Client,
}

impl Idps {
    /// The given issuers, with an HTTP client for JWKS fetches.
    pub fn new(issuers: Vec<Arc<TrustedIssuer>>) -> Idps {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Idps { issuers, http }
    }

    /// Whether `iss` is a trusted issuer.
    pub fn trusts(&self, iss: &str) -> bool {
        self.issuers.iter().any(|i| i.config.issuer == iss)
    }

    /// Fetches every URL-backed issuer's keys; returns the failures (logged by the caller).
    pub async fn refresh_all(&self) -> Vec<JwksError> {
        let mut errors = Vec::new();
        for i in &self.issuers {
            if let Err(e) = i.refresh(&self.http, true).await {
                errors.push(e);
            }
        }
        errors
    }

    /// Verifies a user's token and names the user.
    pub async fn verify_user(
        &self,
        token: &str,
        now: i64,
        leeway: i64,
    ) -> Result<(UserPrincipal, Value), UserTokenError> {
        let peeked = peek_claims(token)?;
        let iss = peeked
            .get("iss")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let issuer = self
            .issuers
            .iter()
            .find(|i| i.config.issuer == iss)
            .ok_or_else(|| UserTokenError::UntrustedIssuer(iss.chars().take(100).collect()))?;
        self.verify_at(issuer, token, &issuer.config.audiences, now, leeway)
            .await
    }

    /// Verifies an OpenID Connect ID token from the trusted issuer `iss`, issued to the client
    /// `client_id` (its `aud`), and names the user. The caller checks `nonce`.
    pub async fn verify_id_token(
        &self,
        token: &str,
        iss: &str,
        client_id: &str,
        now: i64,
        leeway: i64,
    ) -> Result<(UserPrincipal, Value), UserTokenError> {
        let issuer = self
            .issuers
            .iter()
            .find(|i| i.config.issuer == iss)
            .ok_or_else(|| UserTokenError::UntrustedIssuer(iss.chars().take(100).collect()))?;
        let audiences = [client_id.to_owned()];
        self.verify_at(issuer, token, &audiences, now, leeway).await
    }

    async fn verify_at(
        &self,
        issuer: &TrustedIssuer,
        token: &str,
        audiences: &[String],
        now: i64,
        leeway: i64,
    ) -> Result<(UserPrincipal, Value), UserTokenError> {
        let checks = ClaimChecks {
            now,
            leeway,
            issuer: Some(&issuer.config.issuer),
            audience: AudCheck::OneOf(audiences),
            typ: None,
            max_lifetime: None,
            require_iat: false,
        };
        let claims = match issuer.verify_with_cache(token, &checks) {
            Err(VerifyError::UnknownKid(kid)) => {
                if issuer.refresh(&self.http, false).await.unwrap_or(false) {
                    issuer.verify_with_cache(token, &checks)?
                } else {
                    return Err(VerifyError::UnknownKid(kid).into());
                }
            }
            other => other?,
        };
        let subject = claims
            .get(&issuer.config.user_claim)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty() && s.len() <= 256)
            .ok_or_else(|| UserTokenError::NoUser(issuer.config.user_claim.clone()))?
            .to_owned();
        let groups = match claims.get(&issuer.config.groups_claim) {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            Some(Value::String(s)) => s
                .split([' ', ','])
                .filter(|g| !g.is_empty())
                .map(str::to_owned)
                .collect(),
            _ => Vec::new(),
        };
        Ok((
            UserPrincipal {
                issuer: issuer.config.issuer.clone(),
                subject,
                groups,
            },
            claims,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mandate_token::sign::sign_jwt;
    use mandate_token::{Alg, SigningKey};
    use serde_json::json;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A real HTTP JWKS endpoint on loopback whose keys can be swapped, counting fetches.
    async fn jwks_server(doc: Arc<RwLock<Value>>, hits: Arc<AtomicUsize>) -> String {
        let app = axum::Router::new().route(
            "/jwks",
            axum::routing::get(move || {
                let doc = doc.clone();
                let hits = hits.clone();
                async move {
                    hits.fetch_add(1, Ordering::SeqCst);
                    let v = doc.read().map(|d| d.clone()).unwrap_or_default();
                    axum::Json(v)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}/jwks")
    }

    fn config(url: &str) -> TrustedIssuerConfig {
        TrustedIssuerConfig {
            name: "corp".into(),
            issuer: "https://login.example.com".into(),
            audiences: vec!["mandate".into()],
            jwks_url: Some(url.into()),
            jwks_file: None,
            user_claim: "email".into(),
            groups_claim: "roles".into(),
        }
    }

    fn token(key: &SigningKey, now: i64, aud: &str) -> String {
        sign_jwt(
            key,
            "JWT",
            &json!({"iss": "https://login.example.com", "aud": aud, "sub": "u-42",
                    "email": "dana@example.com", "roles": "support finance", "iat": now, "exp": now + 300}),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn jwks_url_is_fetched_cached_and_refetched_on_an_unknown_kid() {
        let old = SigningKey::generate(Alg::EdDSA).unwrap().with_kid("k-old");
        let doc = Arc::new(RwLock::new(json!({"keys": [old.public_jwk()]})));
        let hits = Arc::new(AtomicUsize::new(0));
        let url = jwks_server(doc.clone(), hits.clone()).await;
        let idps = Idps::new(vec![Arc::new(
            TrustedIssuer::from_config(config(&url)).unwrap(),
        )]);
        assert!(idps.refresh_all().await.is_empty());
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        let now = 1_800_000_000;

        let (user, _) = idps
            .verify_user(&token(&old, now, "mandate"), now, 30)
            .await
            .unwrap();
        assert_eq!(
            user.subject, "dana@example.com",
            "the configured user claim names the user"
        );
        assert_eq!(user.groups, vec!["support", "finance"]);
        assert_eq!(
            hits.load(Ordering::SeqCst),
            1,
            "a known kid is served from the cache"
        );

        // The IdP rotates: a token with the new kid makes Mandate fetch the JWKS again.
        let new = SigningKey::generate(Alg::EdDSA).unwrap().with_kid("k-new");
        *doc.write().unwrap() = json!({"keys": [old.public_jwk(), new.public_jwk()]});
        // The startup fetch was just now, so force the clock of the rate limit past it.
        if let Ok(mut last) = idps.issuers[0].last_fetch.lock() {
            *last = Some(Instant::now() - REFRESH_INTERVAL);
        }
        let (user, _) = idps
            .verify_user(&token(&new, now, "mandate"), now, 30)
            .await
            .unwrap();
        assert_eq!(user.subject, "dana@example.com");
        assert_eq!(hits.load(Ordering::SeqCst), 2);

        // A flood of made-up kids does not become a flood of fetches.
        let rogue = SigningKey::generate(Alg::EdDSA)
            .unwrap()
            .with_kid("k-rogue");
        for _ in 0..5 {
            let err = idps
                .verify_user(&token(&rogue, now, "mandate"), now, 30)
                .await
                .unwrap_err();
            assert!(
                matches!(err, UserTokenError::Invalid(VerifyError::UnknownKid(_))),
                "{err}"
            );
        }
        assert_eq!(hits.load(Ordering::SeqCst), 2, "refetches are rate-limited");

        let err = idps
            .verify_user(&token(&old, now, "someone-else"), now, 30)
            .await
            .unwrap_err();
        assert_eq!(err, UserTokenError::Invalid(VerifyError::WrongAudience));
    }

    #[tokio::test]
    async fn a_remembered_token_is_refused_once_its_key_is_withdrawn() {
        let key = SigningKey::generate(Alg::EdDSA).unwrap().with_kid("k-1");
        let doc = Arc::new(RwLock::new(json!({"keys": [key.public_jwk()]})));
        let url = jwks_server(doc.clone(), Arc::new(AtomicUsize::new(0))).await;
        let idps = Idps::new(vec![Arc::new(
            TrustedIssuer::from_config(config(&url)).unwrap(),
        )]);
        assert!(idps.refresh_all().await.is_empty());
        let now = 1_800_000_000;
        let t = token(&key, now, "mandate");
        for _ in 0..2 {
            idps.verify_user(&t, now, 30).await.unwrap();
        }
        assert_eq!(idps.issuers[0].key_set().verified.len(), 1, "remembered");

        // The IdP withdraws the key (e.g. it leaked): the same token no longer verifies.
        let other = SigningKey::generate(Alg::EdDSA).unwrap().with_kid("k-2");
        *doc.write().unwrap() = json!({"keys": [other.public_jwk()]});
        assert!(idps.refresh_all().await.is_empty());
        let err = idps.verify_user(&t, now, 30).await.unwrap_err();
        assert!(
            matches!(err, UserTokenError::Invalid(VerifyError::UnknownKid(_))),
            "{err}"
        );
    }
}

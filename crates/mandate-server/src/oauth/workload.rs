//! Workload identity of agents (SPEC §3): SPIFFE JWT-SVIDs (`client_assertion_type`
//! `…:jwt-spiffe`, draft-ietf-oauth-spiffe-client-auth) and JWTs of configured OIDC workload
//! issuers (a Kubernetes service-account token, a CI job's OIDC token).
//!
//! Keys come only from configuration: a trust domain's SPIFFE bundle (a file, re-read when it
//! changes, or an endpoint, fetched at start, again after the bundle's `spiffe_refresh_hint` or
//! `workload.refresh_secs`), an issuer's JWKS (its `jwks_uri`, or the one its discovery document
//! names). A token naming a `kid` the cache does not have triggers one fetch at most every
//! `workload.unknown_kid_refresh_secs`, so made-up `kid`s cannot make Mandate a request
//! amplifier. Fetches follow no redirects and read at most [`MAX_DOCUMENT_BYTES`].
//!
//! Verification goes through [`mandate_token::verify::verify`]: the algorithm is pinned to the
//! bundle key's, `alg: none` and symmetric keys are refused, `exp` is required. SVIDs and workload
//! tokens have no reliable `jti` and are reused for their lifetime by design, so they are not
//! single-use; their lifetime is bounded by `workload.max_token_lifetime` instead.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use mandate_core::agent::WorkloadBinding;
use mandate_token::verify::{AudCheck, ClaimChecks, VerifyingKey, peek_claims, verify};
use mandate_token::{KeySet, VerifyError};
use serde_json::Value;

use crate::config::{Workload, fetchable_url};

/// Largest bundle, JWKS or discovery document read.
pub const MAX_DOCUMENT_BYTES: usize = 256 * 1024;
/// Longest SPIFFE ID accepted (the SPIFFE ID standard's limit).
const MAX_SPIFFE_ID: usize = 2048;
/// Least time between two checks of a bundle file for changes (an unknown `kid` checks at once).
const FILE_CHECK: Duration = Duration::from_secs(2);
/// Least interval a bundle's `spiffe_refresh_hint` may ask for.
const MIN_REFRESH: Duration = Duration::from_secs(5);
/// Longest interval a bundle's `spiffe_refresh_hint` may ask for.
const MAX_REFRESH: Duration = Duration::from_secs(86_400);

/// A workload identity that verified: what proved the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proven {
    /// A JWT-SVID's SPIFFE ID.
    Spiffe {
        /// The SPIFFE ID (`sub`).
        id: String,
    },
    /// An OIDC workload token's issuer and subject.
    Oidc {
        /// `iss`.
        iss: String,
        /// `sub`.
        sub: String,
    },
}

impl Proven {
    /// The credential recorded in tokens and audit events: `spiffe:<SPIFFE ID>` or
    /// `oidc:<iss>#<sub>`.
    pub fn credential(&self) -> String {
        match self {
            Proven::Spiffe { id } => format!("spiffe:{id}"),
            Proven::Oidc { iss, sub } => format!("oidc:{iss}#{sub}"),
        }
    }

    /// Whether `binding` admits this identity.
    pub fn matches(&self, binding: &WorkloadBinding) -> bool {
        match self {
            Proven::Spiffe { id } => binding.matches_spiffe(id),
            Proven::Oidc { iss, sub } => binding.matches_oidc(iss, sub),
        }
    }

    /// How the identity is named in messages.
    pub fn describe(&self) -> String {
        match self {
            Proven::Spiffe { id } => format!("SPIFFE ID `{id}`"),
            Proven::Oidc { iss, sub } => format!("subject `{sub}` of workload issuer `{iss}`"),
        }
    }
}

/// The trust domain of a well-formed SPIFFE ID naming a workload
/// (`spiffe://<trust domain>/<path>`), or why it is not one.
pub fn spiffe_trust_domain(id: &str) -> Result<&str, String> {
    if id.len() > MAX_SPIFFE_ID {
        return Err(format!("a SPIFFE ID is at most {MAX_SPIFFE_ID} characters"));
    }
    let shown: String = id.chars().take(200).collect();
    let bad = |why: &str| format!("`{shown}` is not a SPIFFE ID: {why}");
    let Some(rest) = id.strip_prefix("spiffe://") else {
        return Err(bad("it must start with `spiffe://`"));
    };
    let Some((domain, path)) = rest.split_once('/') else {
        return Err(bad("it has no path naming a workload"));
    };
    if domain.is_empty()
        || !domain
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_'))
    {
        return Err(bad(
            "the trust domain holds only lowercase letters, digits, `.`, `-` and `_`",
        ));
    }
    for seg in path.split('/') {
        if seg.is_empty() || seg == "." || seg == ".." {
            return Err(bad("empty, `.` and `..` path segments are not allowed"));
        }
        if !seg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        {
            return Err(bad(
                "path segments hold only letters, digits, `.`, `-` and `_`",
            ));
        }
    }
    Ok(domain)
}

enum Origin {
    /// A SPIFFE bundle file.
    BundleFile(PathBuf),
    /// A SPIFFE bundle endpoint.
    BundleUrl(String),
    /// An OIDC issuer's JWKS at a configured URL.
    Jwks(String),
    /// An OIDC issuer whose JWKS URL its discovery document names.
    Discovery(String),
}

#[derive(Default)]
struct Timing {
    /// When the keys should be fetched again (URL sources).
    next_refresh: Option<Instant>,
    /// The last fetch an unknown `kid` caused.
    last_kid_fetch: Option<Instant>,
    /// The bundle file's modification time and length when last read.
    file_stamp: Option<(SystemTime, u64)>,
    /// The last check of the bundle file.
    last_file_check: Option<Instant>,
    /// A discovered `jwks_uri`.
    jwks_uri: Option<String>,
}

/// One trust domain's or OIDC issuer's keys and where they come from.
struct KeySource {
    /// The trust domain or the issuer.
    name: String,
    /// What an OIDC issuer's tokens must carry in `aud` (none: Mandate's own audiences).
    audience: Option<String>,
    /// Whether the keys are a SPIFFE bundle (`use: "jwt-svid"` keys) rather than a JWKS.
    bundle: bool,
    origin: Origin,
    keys: RwLock<Arc<KeySet>>,
    timing: Mutex<Timing>,
    /// One fetch at a time.
    fetching: tokio::sync::Mutex<()>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// The keys of a JWKS or SPIFFE bundle document: in a bundle only JWT-SVID keys
/// (`use: "jwt-svid"`; X.509 roots are skipped), in a JWKS signature keys.
fn keys_of(doc: &Value, bundle: bool) -> KeySet {
    if !bundle {
        return KeySet::from_jwks(doc).0;
    }
    let keys = doc
        .get("keys")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|k| k.get("use").and_then(Value::as_str) == Some("jwt-svid"))
        .filter_map(|k| {
            let mut k = k.clone();
            if let Some(obj) = k.as_object_mut() {
                obj.remove("use");
            }
            VerifyingKey::from_jwk(&k).ok()
        })
        .collect();
    KeySet::new(keys)
}

fn refresh_hint(doc: &Value, default: Duration) -> Duration {
    doc.get("spiffe_refresh_hint")
        .and_then(Value::as_u64)
        .map_or(default, |s| {
            Duration::from_secs(s).clamp(MIN_REFRESH, MAX_REFRESH)
        })
}

async fn fetch_json(http: &reqwest::Client, url: &str) -> Result<Value, String> {
    if !fetchable_url(url) {
        return Err(format!(
            "`{url}` is not an `https` URL (`http` only on loopback)"
        ));
    }
    let mut resp = http
        .get(url)
        .send()
        .await
        .map_err(|e| format!("fetching `{url}`: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("`{url}` answered {}", resp.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| format!("reading `{url}`: {e}"))?
    {
        if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
            return Err(format!("`{url}` is larger than {MAX_DOCUMENT_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body).map_err(|e| format!("`{url}` is not JSON: {e}"))
}

fn file_stamp(meta: &std::fs::Metadata) -> (SystemTime, u64) {
    (
        meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        meta.len(),
    )
}

impl KeySource {
    fn new(name: String, audience: Option<String>, bundle: bool, origin: Origin) -> KeySource {
        KeySource {
            name,
            audience,
            bundle,
            origin,
            keys: RwLock::new(Arc::new(KeySet::default())),
            timing: Mutex::new(Timing::default()),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    fn key_set(&self) -> Arc<KeySet> {
        match self.keys.read() {
            Ok(k) => k.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn set_keys(&self, keys: KeySet) {
        match self.keys.write() {
            Ok(mut g) => *g = Arc::new(keys),
            Err(p) => *p.into_inner() = Arc::new(keys),
        }
    }

    /// Reads the bundle file if it changed since it was last read (or `force`d to look now).
    /// Returns whether keys were replaced.
    async fn check_file(&self, path: &PathBuf, force: bool) -> Result<bool, String> {
        {
            let mut t = lock(&self.timing);
            if !force && t.last_file_check.is_some_and(|c| c.elapsed() < FILE_CHECK) {
                return Ok(false);
            }
            t.last_file_check = Some(Instant::now());
        }
        let shown = path.display();
        let meta = tokio::fs::metadata(path)
            .await
            .map_err(|e| format!("`{shown}`: {e}"))?;
        let stamp = file_stamp(&meta);
        if lock(&self.timing).file_stamp == Some(stamp) {
            return Ok(false);
        }
        if meta.len() > MAX_DOCUMENT_BYTES as u64 {
            return Err(format!(
                "`{shown}` is larger than {MAX_DOCUMENT_BYTES} bytes"
            ));
        }
        let text = tokio::fs::read_to_string(path)
            .await
            .map_err(|e| format!("`{shown}`: {e}"))?;
        let doc: Value =
            serde_json::from_str(&text).map_err(|e| format!("`{shown}` is not JSON: {e}"))?;
        let keys = keys_of(&doc, self.bundle);
        if keys.is_empty() {
            return Err(format!(
                "`{shown}` holds no usable JWT-SVID key (`use: \"jwt-svid\"`)"
            ));
        }
        self.set_keys(keys);
        lock(&self.timing).file_stamp = Some(stamp);
        Ok(true)
    }

    /// Fetches the keys of a URL source now.
    async fn fetch(&self, http: &reqwest::Client, default_refresh: Duration) -> Result<(), String> {
        let _one = self.fetching.lock().await;
        let url = match &self.origin {
            Origin::BundleFile(_) => return Ok(()),
            Origin::BundleUrl(u) | Origin::Jwks(u) => u.clone(),
            Origin::Discovery(issuer) => {
                let known = lock(&self.timing).jwks_uri.clone();
                match known {
                    Some(u) => u,
                    None => {
                        let at = format!("{issuer}/.well-known/openid-configuration");
                        let doc = fetch_json(http, &at).await?;
                        if doc.get("issuer").and_then(Value::as_str) != Some(issuer.as_str()) {
                            return Err(format!(
                                "the discovery document at `{at}` names another `issuer`"
                            ));
                        }
                        let uri = doc
                            .get("jwks_uri")
                            .and_then(Value::as_str)
                            .filter(|u| fetchable_url(u))
                            .ok_or_else(|| {
                                format!(
                                    "the discovery document at `{at}` has no `https` `jwks_uri`"
                                )
                            })?
                            .to_owned();
                        lock(&self.timing).jwks_uri = Some(uri.clone());
                        uri
                    }
                }
            }
        };
        // Whatever happens, do not try again before the interval (an unknown kid may).
        lock(&self.timing).next_refresh = Some(Instant::now() + default_refresh);
        let doc = fetch_json(http, &url).await?;
        let keys = keys_of(&doc, self.bundle);
        if keys.is_empty() {
            return Err(format!("`{url}` holds no usable key"));
        }
        self.set_keys(keys);
        let next = if self.bundle {
            refresh_hint(&doc, default_refresh)
        } else {
            default_refresh
        };
        lock(&self.timing).next_refresh = Some(Instant::now() + next);
        Ok(())
    }
}

/// The trusted trust domains and workload issuers, with their cached keys.
pub struct Workloads {
    domains: Vec<Arc<KeySource>>,
    issuers: Vec<Arc<KeySource>>,
    http: reqwest::Client,
    max_lifetime: i64,
    refresh: Duration,
    unknown_kid: Duration,
}

impl Default for Workloads {
    fn default() -> Self {
        Workloads::new(&Workload::default())
    }
}

impl Workloads {
    /// The configured sources, with no keys loaded yet (see [`Workloads::load`]).
    pub fn new(config: &Workload) -> Workloads {
        let domains = config
            .spiffe
            .iter()
            .filter(|d| d.bundle_file.is_some() || d.bundle_endpoint.is_some())
            .map(|d| {
                let origin = match (&d.bundle_file, &d.bundle_endpoint) {
                    (Some(f), _) => Origin::BundleFile(f.clone()),
                    (None, u) => Origin::BundleUrl(u.clone().unwrap_or_default()),
                };
                Arc::new(KeySource::new(d.trust_domain.clone(), None, true, origin))
            })
            .collect();
        let issuers = config
            .oidc
            .iter()
            .map(|o| {
                let origin = match &o.jwks_uri {
                    Some(u) => Origin::Jwks(u.clone()),
                    None => Origin::Discovery(o.issuer.clone()),
                };
                Arc::new(KeySource::new(
                    o.issuer.clone(),
                    o.audience.clone(),
                    false,
                    origin,
                ))
            })
            .collect();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Workloads {
            domains,
            issuers,
            http,
            max_lifetime: config.max_token_lifetime,
            refresh: Duration::from_secs(config.refresh_secs),
            unknown_kid: Duration::from_secs(config.unknown_kid_refresh_secs),
        }
    }

    /// Loads every source's keys at start. A bundle file that cannot be read is an error (the
    /// configuration is wrong); endpoints that cannot be fetched are returned as warnings and
    /// tried again on first use.
    pub async fn load(&self) -> Result<Vec<String>, String> {
        let mut warnings = Vec::new();
        for s in self.domains.iter().chain(&self.issuers) {
            match &s.origin {
                Origin::BundleFile(path) => {
                    s.check_file(path, true)
                        .await
                        .map_err(|e| format!("trust domain `{}`: {e}", s.name))?;
                }
                _ => {
                    if let Err(e) = s.fetch(&self.http, self.refresh).await {
                        warnings.push(format!("`{}`: {e}", s.name));
                    }
                }
            }
        }
        Ok(warnings)
    }

    /// Whether `iss` is a configured OIDC workload issuer.
    pub fn is_oidc_issuer(&self, iss: &str) -> bool {
        self.issuers.iter().any(|i| i.name == iss)
    }

    /// Whether any trust domain is configured.
    pub fn has_trust_domains(&self) -> bool {
        !self.domains.is_empty()
    }

    /// Keeps a source fresh: a changed bundle file is re-read, a URL source past its refresh
    /// time is fetched in the background (this request uses the keys at hand).
    async fn freshen(&self, source: &Arc<KeySource>) {
        match &source.origin {
            Origin::BundleFile(path) => {
                if let Err(e) = source.check_file(path, false).await {
                    tracing::warn!(trust_domain = %source.name, error = %e, "bundle file not re-read; keeping the keys at hand");
                }
            }
            _ => {
                let due = {
                    let mut t = lock(&source.timing);
                    let due = t.next_refresh.is_none_or(|n| Instant::now() >= n);
                    if due {
                        t.next_refresh = Some(Instant::now() + self.refresh);
                    }
                    due
                };
                if due {
                    let source = source.clone();
                    let http = self.http.clone();
                    let refresh = self.refresh;
                    tokio::spawn(async move {
                        if let Err(e) = source.fetch(&http, refresh).await {
                            tracing::warn!(source = %source.name, error = %e, "workload keys not refreshed; keeping the keys at hand");
                        }
                    });
                }
            }
        }
    }

    /// Fetches (or re-reads) a source's keys because a token named a `kid` they lack — at most
    /// once per `workload.unknown_kid_refresh_secs` for a URL. Returns whether to try again.
    async fn refresh_for_unknown_kid(&self, source: &KeySource) -> bool {
        match &source.origin {
            Origin::BundleFile(path) => source.check_file(path, true).await.unwrap_or(false),
            _ => {
                {
                    let mut t = lock(&source.timing);
                    if t.last_kid_fetch
                        .is_some_and(|l| l.elapsed() < self.unknown_kid)
                    {
                        return false;
                    }
                    t.last_kid_fetch = Some(Instant::now());
                }
                match source.fetch(&self.http, self.refresh).await {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::warn!(source = %source.name, error = %e, "workload keys not fetched");
                        false
                    }
                }
            }
        }
    }

    async fn verify_with(
        &self,
        source: &Arc<KeySource>,
        token: &str,
        checks: &ClaimChecks<'_>,
    ) -> Result<Value, VerifyError> {
        self.freshen(source).await;
        match verify(token, &source.key_set(), checks) {
            Err(VerifyError::UnknownKid(_) | VerifyError::NoKid)
                if self.refresh_for_unknown_kid(source).await =>
            {
                verify(token, &source.key_set(), checks).map(|v| v.claims)
            }
            other => other.map(|v| v.claims),
        }
    }

    /// Verifies a JWT-SVID: `sub` a SPIFFE ID of a configured trust domain, signed by a key of
    /// that trust domain's bundle, `exp` in the future, `aud` one of `audiences`, lifetime within
    /// `workload.max_token_lifetime`.
    pub async fn verify_svid(
        &self,
        token: &str,
        now: i64,
        leeway: i64,
        audiences: &[String],
    ) -> Result<Proven, String> {
        let peeked = peek_claims(token).map_err(|e| format!("JWT-SVID refused: {e}"))?;
        let sub = peeked
            .get("sub")
            .and_then(Value::as_str)
            .ok_or("JWT-SVID has no `sub` naming a SPIFFE ID")?;
        let domain = spiffe_trust_domain(sub).map_err(|e| format!("JWT-SVID `sub`: {e}"))?;
        let source = self
            .domains
            .iter()
            .find(|d| d.name == domain)
            .ok_or_else(|| format!("trust domain `{domain}` is not trusted"))?;
        let checks = ClaimChecks {
            now,
            leeway,
            issuer: None,
            audience: AudCheck::OneOf(audiences),
            typ: None,
            max_lifetime: Some(self.max_lifetime),
            require_iat: false,
        };
        let claims = self
            .verify_with(source, token, &checks)
            .await
            .map_err(|e| match e {
                VerifyError::UnknownKid(kid) => format!(
                    "JWT-SVID refused: no key `{kid}` is in the bundle of trust domain `{domain}`"
                ),
                other => format!("JWT-SVID refused: {other}"),
            })?;
        match claims.get("sub").and_then(Value::as_str) {
            Some(s) if s == sub => Ok(Proven::Spiffe { id: s.to_owned() }),
            _ => Err("JWT-SVID has no `sub` naming a SPIFFE ID".to_owned()),
        }
    }

    /// Verifies a token of the configured workload issuer `iss`: its keys, `aud` (the configured
    /// `audience`, or one of `audiences`), `exp`, lifetime within
    /// `workload.max_token_lifetime`, and a `sub`.
    pub async fn verify_oidc(
        &self,
        token: &str,
        iss: &str,
        now: i64,
        leeway: i64,
        audiences: &[String],
    ) -> Result<Proven, String> {
        let source = self
            .issuers
            .iter()
            .find(|i| i.name == iss)
            .ok_or_else(|| format!("workload issuer `{iss}` is not trusted"))?;
        let configured: Vec<String> = source.audience.iter().cloned().collect();
        let checks = ClaimChecks {
            now,
            leeway,
            issuer: Some(&source.name),
            audience: AudCheck::OneOf(if configured.is_empty() {
                audiences
            } else {
                &configured
            }),
            typ: None,
            max_lifetime: Some(self.max_lifetime),
            require_iat: false,
        };
        let claims = self
            .verify_with(source, token, &checks)
            .await
            .map_err(|e| match e {
                VerifyError::UnknownKid(kid) => {
                    format!("workload token refused: issuer `{iss}` has no key `{kid}`")
                }
                other => format!("workload token refused: {other}"),
            })?;
        let sub = claims
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| {
                !s.is_empty() && s.len() <= MAX_SPIFFE_ID && !s.chars().any(char::is_control)
            })
            .ok_or("workload token has no valid `sub`")?;
        Ok(Proven::Oidc {
            iss: source.name.clone(),
            sub: sub.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use serde_json::json;

    #[test]
    fn spiffe_ids_are_checked() {
        assert_eq!(
            spiffe_trust_domain("spiffe://prod.example/ns/a/sa/b"),
            Ok("prod.example")
        );
        for bad in [
            "spiffe://prod.example",
            "spiffe://prod.example/",
            "spiffe://prod.example/a/",
            "spiffe://prod.example//a",
            "spiffe://prod.example/a/../b",
            "spiffe://Prod.example/a",
            "spiffe://prod.example:8443/a",
            "spiffe://user@prod.example/a",
            "spiffe://prod.example/a?b",
            "spiffe://prod.example/a%20b",
            "spiffe://prod.example/*",
            "https://prod.example/a",
            "SPIFFE://prod.example/a",
        ] {
            assert!(spiffe_trust_domain(bad).is_err(), "{bad}");
        }
        let long = format!("spiffe://prod.example/{}", "a".repeat(2100));
        assert!(spiffe_trust_domain(&long).is_err());
    }

    #[test]
    fn bundles_keep_only_jwt_svid_keys_and_clamp_their_hint() {
        let doc = json!({
            "spiffe_refresh_hint": 1,
            "keys": [
                {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "kid": "j1", "use": "jwt-svid"},
                {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "kid": "x1", "use": "x509-svid"},
                {"kty": "oct", "k": "c2VjcmV0", "kid": "h1", "use": "jwt-svid"},
            ]
        });
        let keys = keys_of(&doc, true);
        assert_eq!(keys.len(), 1);
        assert!(keys.has_kid("j1"));
        assert_eq!(refresh_hint(&doc, Duration::from_secs(300)), MIN_REFRESH);
        assert_eq!(
            refresh_hint(&json!({}), Duration::from_secs(300)),
            Duration::from_secs(300)
        );
    }
}

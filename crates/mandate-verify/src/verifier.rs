//! [`Verifier`]: Mandate tokens verified locally, with keys and revocation state kept current in
//! the background.
//!
//! The verifier follows the authorization server's revocation stream
//! (`GET /v1/revocations/events`, server-sent events) and applies every revocation to its own
//! [`RevocationIndex`] the moment it arrives; on reconnect it sends the last event id it applied
//! and is sent exactly what it missed. While it is not current (starting, disconnected, catching
//! up) it never answers from a possibly stale index alone: it asks the introspection endpoint, or
//! refuses, as configured ([`WhenNotCurrent`]).

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use mandate_core::revocation::{RevocationEntry, RevocationIndex};
use mandate_token::VerifyError;
use mandate_token::verify::KeySet;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::check::{Expect, Principal, Refusal, revoked};
use mandate_token::dpop::{ProofCheck, ProofError, ReplayCache, check_proof};

/// How old a DPoP proof may be, seconds.
const DPOP_MAX_AGE: i64 = 60;
/// Most DPoP proofs remembered at once; beyond it new proofs are refused until old ones expire.
const DPOP_REPLAY_CAPACITY: usize = 1_000_000;

/// A token as a request presented it, for [`Verifier::verify_presented`].
#[derive(Debug, Clone, Copy)]
pub struct Presented<'a> {
    /// The access token.
    pub token: &'a str,
    /// Whether it came with the `DPoP` scheme (else `Bearer`).
    pub dpop: bool,
    /// The one `DPoP` header, if sent.
    pub proof: Option<&'a str>,
    /// The request's method.
    pub method: &'a str,
    /// The request's `Host` (used when no public URL is set).
    pub host: &'a str,
    /// The request's path, without query.
    pub path: &'a str,
}
use crate::sse::SseReader;

/// What to do with a token while the revocation state is not current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenNotCurrent {
    /// Ask the introspection endpoint (RFC 7662) for each token. The default.
    Introspect,
    /// Refuse every token (fail closed) until the stream is current again.
    Refuse,
}

/// How the verifier stands with the revocation stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    /// Connected, and every revocation up to the server's head at connect time applied.
    pub current: bool,
    /// The sequence number of the last revocation applied (0 for none).
    pub seq: i64,
}

/// Settings; see [`Verifier::builder`].
#[derive(Clone)]
pub struct Builder {
    issuer: String,
    credential: Option<String>,
    audiences: Vec<String>,
    leeway: i64,
    max_chain_depth: usize,
    when_not_current: WhenNotCurrent,
    stale_after: Duration,
    jwks_refresh_interval: Duration,
    jwks_url: Option<String>,
    events_url: Option<String>,
    introspection_url: Option<String>,
    clock: Option<Clock>,
    public_url: Option<String>,
}

/// A source of the current time, seconds since the epoch.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// Why a verifier could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A URL or setting is unusable.
    #[error("{0}")]
    Config(String),
    /// The JWKS could not be fetched or has no usable key.
    #[error("could not load the issuer's keys from `{url}`: {reason}")]
    Jwks {
        /// Where from.
        url: String,
        /// What went wrong.
        reason: String,
    },
}

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The credential is a secret: never printed.
        f.debug_struct("Builder")
            .field("issuer", &self.issuer)
            .field("audiences", &self.audiences)
            .field("when_not_current", &self.when_not_current)
            .finish_non_exhaustive()
    }
}

impl Builder {
    /// Sends `Authorization: Bearer <credential>` to the revocation stream and the
    /// introspection endpoint: a Mandate credential with the `verifier` role.
    pub fn credential(mut self, credential: impl Into<String>) -> Self {
        self.credential = Some(credential.into());
        self
    }

    /// Accepts only tokens with this audience (may be called several times; none accepts any).
    pub fn audience(mut self, aud: impl Into<String>) -> Self {
        self.audiences.push(aud.into());
        self
    }

    /// Clock skew tolerated on `exp`, `nbf` and `iat` (default 30 s).
    pub fn leeway(mut self, secs: i64) -> Self {
        self.leeway = secs.max(0);
        self
    }

    /// The longest delegation chain accepted (default 8).
    pub fn max_chain_depth(mut self, depth: usize) -> Self {
        self.max_chain_depth = depth;
        self
    }

    /// What to do while the revocation state is not current (default: introspect).
    pub fn when_not_current(mut self, w: WhenNotCurrent) -> Self {
        self.when_not_current = w;
        self
    }

    /// A stream that sends nothing (not even its keep-alive) for this long is taken for dead
    /// (default 25 s; the server sends a keep-alive every 10 s).
    pub fn stale_after(mut self, d: Duration) -> Self {
        self.stale_after = d;
        self
    }

    /// The shortest time between two JWKS fetches prompted by unknown `kid`s (default 5 s).
    pub fn jwks_refresh_interval(mut self, d: Duration) -> Self {
        self.jwks_refresh_interval = d;
        self
    }

    /// Where to fetch the JWKS (default `<issuer>/.well-known/jwks.json`).
    pub fn jwks_url(mut self, url: impl Into<String>) -> Self {
        self.jwks_url = Some(url.into());
        self
    }

    /// Where to follow revocations (default `<issuer>/v1/revocations/events`).
    pub fn events_url(mut self, url: impl Into<String>) -> Self {
        self.events_url = Some(url.into());
        self
    }

    /// Where to introspect (default `<issuer>/oauth2/introspect`).
    pub fn introspection_url(mut self, url: impl Into<String>) -> Self {
        self.introspection_url = Some(url.into());
        self
    }

    /// Uses `clock` instead of the system time (for tests).
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// The URL clients address the protected service by (`https://api.example`), against which
    /// DPoP proofs' `htu` is checked. Set it behind a proxy or TLS terminator; without it the
    /// request's own `Host` is used, with `http`.
    pub fn public_url(mut self, url: impl Into<String>) -> Self {
        self.public_url = Some(url.into());
        self
    }

    /// Fetches the JWKS and starts following the revocation stream in the background. Returns
    /// at once; until the stream is current, [`WhenNotCurrent`] applies.
    pub async fn start(self) -> Result<Verifier, StartError> {
        let issuer = self.issuer.trim_end_matches('/').to_owned();
        if !(issuer.starts_with("http://") || issuer.starts_with("https://")) {
            return Err(StartError::Config(format!(
                "issuer `{issuer}` is not an http(s) URL"
            )));
        }
        let url = |o: &Option<String>, path: &str| o.clone().unwrap_or(format!("{issuer}{path}"));
        let jwks_url = url(&self.jwks_url, "/.well-known/jwks.json");
        let events_url = url(&self.events_url, "/v1/revocations/events");
        let introspection_url = url(&self.introspection_url, "/oauth2/introspect");
        // Keys come from the configured URL only: a redirect elsewhere is a failed fetch.
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| StartError::Config(format!("http client: {e}")))?;
        let keys = fetch_jwks(&http, &jwks_url)
            .await
            .map_err(|reason| StartError::Jwks {
                url: jwks_url.clone(),
                reason,
            })?;
        let clock = self.clock.unwrap_or_else(|| Arc::new(system_now));
        let (status, _) = watch::channel(Status {
            current: false,
            seq: 0,
        });
        let inner = Arc::new(Inner {
            issuer,
            credential: self.credential,
            audiences: self.audiences,
            leeway: self.leeway,
            max_chain_depth: self.max_chain_depth,
            when_not_current: self.when_not_current,
            stale_after: self.stale_after,
            jwks_refresh_interval: self.jwks_refresh_interval,
            jwks_url,
            events_url,
            introspection_url,
            http,
            clock,
            keys: RwLock::new(Arc::new(keys)),
            verified: crate::cache::VerifiedCache::default(),
            dpop_seen: ReplayCache::new(DPOP_REPLAY_CAPACITY),
            public_url: self.public_url.map(|u| u.trim_end_matches('/').to_owned()),
            last_jwks_fetch: Mutex::new(None),
            index: RwLock::new(RevocationIndex::default()),
            status,
        });
        let follower = tokio::spawn(follow(Arc::downgrade(&inner)));
        Ok(Verifier {
            inner,
            _follower: Arc::new(AbortOnDrop(follower)),
        })
    }
}

/// Verifies Mandate access tokens. Cheap to clone; the background work stops when the last
/// clone is dropped.
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
    _follower: Arc<AbortOnDrop>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("issuer", &self.inner.issuer)
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct Inner {
    issuer: String,
    credential: Option<String>,
    audiences: Vec<String>,
    leeway: i64,
    max_chain_depth: usize,
    when_not_current: WhenNotCurrent,
    stale_after: Duration,
    jwks_refresh_interval: Duration,
    jwks_url: String,
    events_url: String,
    introspection_url: String,
    http: reqwest::Client,
    clock: Clock,
    keys: RwLock<Arc<KeySet>>,
    /// Tokens whose signature and claims verified with `keys`.
    verified: crate::cache::VerifiedCache,
    /// DPoP proofs seen recently: each is accepted once by this verifier.
    dpop_seen: ReplayCache,
    /// The URL clients address this service by (for DPoP `htu`).
    public_url: Option<String>,
    last_jwks_fetch: Mutex<Option<Instant>>,
    index: RwLock<RevocationIndex>,
    status: watch::Sender<Status>,
}

impl Verifier {
    /// Settings for a verifier of tokens issued by `issuer` (Mandate's URL).
    pub fn builder(issuer: impl Into<String>) -> Builder {
        Builder {
            issuer: issuer.into(),
            credential: None,
            audiences: Vec::new(),
            leeway: 30,
            max_chain_depth: 8,
            when_not_current: WhenNotCurrent::Introspect,
            stale_after: Duration::from_secs(25),
            jwks_refresh_interval: Duration::from_secs(5),
            jwks_url: None,
            events_url: None,
            introspection_url: None,
            clock: None,
            public_url: None,
        }
    }

    /// Where the verifier stands with the revocation stream.
    pub fn status(&self) -> Status {
        *self.inner.status.borrow()
    }

    /// Waits until the verifier is current and has applied revocation `seq` (use the `seq` that
    /// `POST /v1/revocations` answered). `false` if `timeout` passed first.
    pub async fn wait_for(&self, seq: i64, timeout: Duration) -> bool {
        let mut rx = self.inner.status.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|s| s.current && s.seq >= seq))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Number of revoked tokens held in memory.
    pub fn revoked_tokens(&self) -> usize {
        with(&self.inner.index, |idx| idx.revoked_tokens())
    }

    /// Whether a revocation this verifier has applied reaches `principal` (a token verified
    /// earlier, checked again later — a held write before it is sent, say).
    pub fn revoked(&self, principal: &Principal) -> Option<mandate_core::revocation::Revoked> {
        with(&self.inner.index, |idx| revoked(idx, principal))
    }

    /// Verifies a token as a request presented it (RFC 9449 §7): a DPoP-bound token (`cnf.jkt`)
    /// only with the `DPoP` scheme and a fresh proof by the bound key for this method, URL and
    /// token, never seen before by this verifier; an unbound one only with `Bearer`.
    pub async fn verify_presented(&self, presented: &Presented<'_>) -> Result<Principal, Refusal> {
        let principal = self.verify(presented.token).await?;
        let jkt = principal
            .claims
            .cnf
            .as_ref()
            .and_then(|c| c.get("jkt"))
            .and_then(serde_json::Value::as_str);
        match (jkt, presented.dpop) {
            (None, false) => Ok(principal),
            (None, true) => Err(Refusal::Scheme(
                "the token is not DPoP-bound: present it with the `Bearer` scheme",
            )),
            (Some(_), false) => Err(Refusal::Scheme(
                "the token is DPoP-bound: present it with the `DPoP` scheme and a `DPoP` proof",
            )),
            (Some(jkt), true) => {
                let proof = presented.proof.ok_or(Refusal::Dpop(ProofError::Malformed(
                    "send exactly one `DPoP` header",
                )))?;
                let now = (self.inner.clock)();
                let url = match &self.inner.public_url {
                    Some(base) => format!("{base}{}", presented.path),
                    None => format!("http://{}{}", presented.host, presented.path),
                };
                let verified = check_proof(
                    proof,
                    &ProofCheck {
                        method: presented.method,
                        url: &url,
                        now,
                        max_age: DPOP_MAX_AGE,
                        leeway: self.inner.leeway.min(DPOP_MAX_AGE),
                        access_token: Some(presented.token),
                        nonces: None,
                    },
                )
                .map_err(Refusal::Dpop)?;
                if verified.jkt != jkt {
                    return Err(Refusal::Dpop(ProofError::WrongKey));
                }
                self.inner
                    .dpop_seen
                    .remember(&verified, now)
                    .map_err(Refusal::Dpop)?;
                Ok(principal)
            }
        }
    }

    /// Verifies `token`: signature and claims locally, then revocation — from the followed
    /// stream when current, else as [`WhenNotCurrent`] says. Does not check DPoP: a request's
    /// token goes through [`Verifier::verify_presented`], which does.
    pub async fn verify(&self, token: &str) -> Result<Principal, Refusal> {
        let inner = &self.inner;
        let principal = match self.verify_local(token) {
            Err(Refusal::Invalid(VerifyError::UnknownKid(_))) if self.refresh_keys().await => {
                self.verify_local(token)?
            }
            other => other?,
        };
        if let Some(r) = with(&inner.index, |idx| revoked(idx, &principal)) {
            return Err(Refusal::Revoked(r));
        }
        if self.status().current {
            return Ok(principal);
        }
        match inner.when_not_current {
            WhenNotCurrent::Refuse => Err(Refusal::Unavailable(
                "not connected to the revocation stream, and set to refuse until it is".into(),
            )),
            WhenNotCurrent::Introspect => match self.introspect(token).await {
                Ok(true) => Ok(principal),
                Ok(false) => Err(Refusal::Inactive),
                Err(e) => Err(Refusal::Unavailable(format!(
                    "not connected to the revocation stream, and introspection failed: {e}"
                ))),
            },
        }
    }

    fn verify_local(&self, token: &str) -> Result<Principal, Refusal> {
        let inner = &self.inner;
        let keys = read(&inner.keys);
        let expect = Expect {
            issuer: &inner.issuer,
            audiences: &inner.audiences,
            now: (inner.clock)(),
            leeway: inner.leeway,
            max_chain_depth: inner.max_chain_depth,
        };
        let keys_id = Arc::as_ptr(&keys) as usize;
        inner.verified.verify_claims(token, &keys, keys_id, &expect)
    }

    /// Refetches the JWKS unless that was done within the refresh interval. `true` if new keys
    /// were loaded.
    async fn refresh_keys(&self) -> bool {
        let inner = &self.inner;
        {
            let mut last = match inner.last_jwks_fetch.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            if last.is_some_and(|t| t.elapsed() < inner.jwks_refresh_interval) {
                return false;
            }
            *last = Some(Instant::now());
        }
        match fetch_jwks(&inner.http, &inner.jwks_url).await {
            Ok(keys) => {
                write(&inner.keys, |k| *k = Arc::new(keys));
                true
            }
            Err(e) => {
                tracing::warn!(url = %inner.jwks_url, error = %e, "JWKS refresh failed");
                false
            }
        }
    }

    async fn introspect(&self, token: &str) -> Result<bool, String> {
        let inner = &self.inner;
        let mut req = inner
            .http
            .post(&inner.introspection_url)
            .timeout(Duration::from_secs(5))
            .form(&[("token", token)]);
        if let Some(c) = &inner.credential {
            req = req.bearer_auth(c);
        }
        let resp = req.send().await.map_err(|e| e.without_url().to_string())?;
        if !resp.status().is_success() {
            return Err(format!("introspection answered {}", resp.status()));
        }
        let body: serde_json::Value = resp.json().await.map_err(|e| e.to_string())?;
        Ok(body.get("active") == Some(&serde_json::Value::Bool(true)))
    }
}

fn read<T: Clone>(l: &RwLock<T>) -> T {
    match l.read() {
        Ok(g) => g.clone(),
        Err(p) => p.into_inner().clone(),
    }
}

fn with<T, R>(l: &RwLock<T>, f: impl FnOnce(&T) -> R) -> R {
    match l.read() {
        Ok(g) => f(&g),
        Err(p) => f(&p.into_inner()),
    }
}

fn write<T>(l: &RwLock<T>, f: impl FnOnce(&mut T)) {
    match l.write() {
        Ok(mut g) => f(&mut g),
        Err(p) => f(&mut p.into_inner()),
    }
}

fn system_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

async fn fetch_jwks(http: &reqwest::Client, url: &str) -> Result<KeySet, String> {
    let resp = http
        .get(url)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .map_err(|e| e.without_url().to_string())?;
    if !resp.status().is_success() {
        return Err(format!("answered {}", resp.status()));
    }
    let doc: serde_json::Value = resp.json().await.map_err(|e| e.to_string())?;
    let (keys, _unusable) = KeySet::from_jwks(&doc);
    if keys.is_empty() {
        return Err("no usable key".into());
    }
    Ok(keys)
}

/// Follows the revocation stream until the verifier is dropped, reconnecting with the last
/// applied id.
async fn follow(inner: std::sync::Weak<Inner>) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        match follow_once(&strong).await {
            Ok(()) => backoff = Duration::from_millis(50),
            Err(e) => tracing::debug!(error = %e, "revocation stream interrupted"),
        }
        strong.status.send_modify(|s| s.current = false);
        drop(strong);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// One connection: applies events until the stream ends, errs, or goes quiet for too long.
/// `Ok` if it was current at some point (so the next reconnect is immediate).
async fn follow_once(inner: &Inner) -> Result<(), String> {
    let seq = inner.status.borrow().seq;
    let mut req = inner
        .http
        .get(&inner.events_url)
        .header(http::header::ACCEPT, "text/event-stream")
        .header("last-event-id", seq.to_string());
    if let Some(c) = &inner.credential {
        req = req.bearer_auth(c);
    }
    let mut resp = tokio::time::timeout(inner.stale_after, req.send())
        .await
        .map_err(|_| "connecting timed out".to_owned())?
        .map_err(|e| e.without_url().to_string())?;
    if !resp.status().is_success() {
        return Err(format!("the revocation stream answered {}", resp.status()));
    }
    let mut reader = SseReader::default();
    let mut was_current = false;
    let mut last_prune = Instant::now();
    loop {
        let chunk = match tokio::time::timeout(inner.stale_after, resp.chunk()).await {
            Err(_) => return Err("the stream went quiet".into()),
            Ok(Err(e)) => return Err(e.without_url().to_string()),
            Ok(Ok(None)) => {
                return if was_current {
                    Ok(())
                } else {
                    Err("ended".into())
                };
            }
            Ok(Ok(Some(c))) => c,
        };
        for ev in reader.push(&chunk).map_err(|e| e.to_string())? {
            match ev.event.as_str() {
                "revocation" => {
                    let entry: RevocationEntry = serde_json::from_str(&ev.data)
                        .map_err(|e| format!("a revocation event does not parse: {e}"))?;
                    write(&inner.index, |idx| idx.apply(&entry));
                    inner.status.send_modify(|s| s.seq = s.seq.max(entry.seq));
                }
                "ready" => {
                    was_current = true;
                    inner.status.send_modify(|s| s.current = true);
                }
                _ => {}
            }
        }
        if last_prune.elapsed() > Duration::from_secs(60) {
            let now = (inner.clock)();
            write(&inner.index, |idx| idx.prune(now));
            last_prune = Instant::now();
        }
    }
}

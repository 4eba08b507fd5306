//! The standalone gateway's [`Authority`]: Mandate reached over the network.
//!
//! * **Tokens** are verified locally by [`mandate_verify::Verifier`], which keeps Mandate's JWKS
//!   and follows the revocation event stream (a revocation reaches this gateway within
//!   milliseconds; while the stream is down it introspects, or refuses, as configured).
//! * **Policy** is decided locally with a copy of Mandate's policy set and agent directory,
//!   fetched from `GET /v1/gateway/bundle` at start and every [`BUNDLE_REFRESH`] (`If-None-Match`:
//!   an unchanged bundle costs a `304`).
//! * **Secrets** come from `GET /v1/gateway/secrets/{name}`, kept [`SECRET_CACHE`] in memory.
//! * **Audit events** are queued and sent in batches to `POST /v1/gateway/events`, in order,
//!   retried until they land; [`Remote::close`] flushes them.
//! * **Suspensions** go to `POST /v1/gateway/suspensions`.
//! * **Transaction Tokens** are signed with a key of the gateway's own, made at start and
//!   published at `<gateway>/.well-known/jwks.json`; their `iss` is the gateway's URL.
//!
//! It authenticates with a Mandate credential of role `gateway`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use mandate_core::agent::Agent;
use mandate_core::audit::NewEvent;
use mandate_core::claims::AccessClaims;
use mandate_policy::Engine;
use mandate_token::{Alg, SigningKey};
use mandate_verify::{Principal, Refusal, Verifier, WhenNotCurrent};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use zeroize::Zeroizing;

use crate::authority::{Ask, Authority, Pending, Receipt, SecretError, Verdict};
use crate::hold::{Delivered, HeldRequest, Proposal};
use crate::txn::TxnClaims;

/// How often the policy bundle is checked for changes.
pub const BUNDLE_REFRESH: Duration = Duration::from_secs(2);

/// How long an opened secret is kept before it is fetched again.
pub const SECRET_CACHE: Duration = Duration::from_secs(10);

/// Most audit events per `POST /v1/gateway/events` (well under the server's body limit).
pub const EVENT_BATCH: usize = 50;

/// Most audit events waiting to be sent; beyond it new events are dropped (and logged).
pub const EVENT_QUEUE: usize = 100_000;

/// What the standalone gateway needs to reach Mandate.
#[derive(Debug, Clone)]
pub struct RemoteConfig {
    /// Where Mandate is reached: its keys, revocation stream, introspection, bundle, secrets.
    pub mandate_url: String,
    /// The `iss` of Mandate's tokens, when it is not `mandate_url` (several nodes behind a
    /// load balancer whose public URL is the issuer, this gateway following one of them).
    pub issuer: Option<String>,
    /// A credential of role `gateway`.
    pub credential: String,
    /// The gateway's public URL (the Transaction Tokens' `iss`).
    pub public_url: String,
    /// The audiences tokens must carry (see [`crate::Plan::audiences`]).
    pub audiences: Vec<String>,
    /// Clock skew tolerated on incoming tokens, seconds.
    pub leeway: i64,
}

/// Why the standalone gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The verifier could not start (JWKS, revocation stream).
    #[error("cannot follow Mandate at `{url}`: {why}")]
    Verifier {
        /// Mandate's URL.
        url: String,
        /// Why.
        why: String,
    },
    /// The policy bundle could not be had.
    #[error("cannot load the policy bundle: {0}")]
    Bundle(String),
    /// A key could not be made.
    #[error("cannot make the transaction token key: {0}")]
    Key(String),
}

struct Bundle {
    version: Option<String>,
    engine: Arc<Engine>,
    agents: HashMap<String, Arc<Agent>>,
}

type SecretCache = Mutex<HashMap<String, (Arc<Zeroizing<String>>, Instant)>>;

/// Mandate, as a standalone gateway reaches it.
pub struct Remote {
    mandate_url: String,
    /// The `iss` of Mandate's tokens (the authorization server clients are sent to).
    issuer: String,
    public_url: String,
    credential: Zeroizing<String>,
    http: reqwest::Client,
    verifier: Arc<Verifier>,
    audiences: Vec<String>,
    bundle: RwLock<Bundle>,
    /// Verdicts of the bundle's policy set in force, for the current second.
    decisions: crate::decide::DecisionCache,
    key: SigningKey,
    jwks: Value,
    secrets: Arc<SecretCache>,
    events: Mutex<Option<mpsc::Sender<NewEvent>>>,
    sender: Mutex<Option<JoinHandle<()>>>,
    refresher: Mutex<Option<JoinHandle<()>>>,
}

impl Remote {
    /// Connects to Mandate: starts the verifier (JWKS and revocation stream), loads the policy
    /// bundle, makes the Transaction Token key, starts the audit sender and the bundle refresh.
    pub async fn connect(config: RemoteConfig) -> Result<Arc<Remote>, RemoteError> {
        let mandate_url = config.mandate_url.trim_end_matches('/').to_owned();
        let issuer = config
            .issuer
            .as_deref()
            .unwrap_or(&mandate_url)
            .trim_end_matches('/')
            .to_owned();
        let mut builder = Verifier::builder(&issuer)
            .jwks_url(format!("{mandate_url}/.well-known/jwks.json"))
            .events_url(format!("{mandate_url}/v1/revocations/events"))
            .introspection_url(format!("{mandate_url}/oauth2/introspect"))
            .credential(config.credential.clone())
            .leeway(config.leeway)
            .when_not_current(WhenNotCurrent::Introspect);
        for a in &config.audiences {
            builder = builder.audience(a.clone());
        }
        let verifier = builder.start().await.map_err(|e| RemoteError::Verifier {
            url: mandate_url.clone(),
            why: e.to_string(),
        })?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| RemoteError::Bundle(e.to_string()))?;
        let key = SigningKey::generate(Alg::EdDSA).map_err(|e| RemoteError::Key(e.to_string()))?;
        let jwks = json!({"keys": [key.public_jwk()]});
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        let remote = Arc::new(Remote {
            mandate_url,
            issuer,
            public_url: config.public_url.trim_end_matches('/').to_owned(),
            credential: Zeroizing::new(config.credential),
            http,
            verifier: Arc::new(verifier),
            audiences: config.audiences,
            decisions: crate::decide::DecisionCache::default(),
            bundle: RwLock::new(Bundle {
                version: None,
                engine: Arc::new(
                    mandate_policy::load_sources(&[], &Default::default())
                        .map_err(|e| RemoteError::Bundle(format!("{e:?}")))?,
                ),
                agents: HashMap::new(),
            }),
            key,
            jwks,
            secrets: Arc::default(),
            events: Mutex::new(Some(tx)),
            sender: Mutex::new(None),
            refresher: Mutex::new(None),
        });
        remote.refresh_bundle().await.map_err(RemoteError::Bundle)?;
        let sender = tokio::spawn(send_events(
            remote.http.clone(),
            format!("{}/v1/gateway/events", remote.mandate_url),
            remote.credential.to_string(),
            rx,
        ));
        *lock(&remote.sender) = Some(sender);
        let weak = Arc::downgrade(&remote);
        let refresher = tokio::spawn(async move {
            let mut tick = tokio::time::interval(BUNDLE_REFRESH);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(r) = weak.upgrade() else { break };
                if let Err(e) = r.refresh_bundle().await {
                    tracing::warn!(error = %e, "policy bundle not refreshed; the last one stays in force");
                }
            }
        });
        *lock(&remote.refresher) = Some(refresher);
        Ok(remote)
    }

    /// Fetches the policy bundle if it changed, and swaps it in when it loads.
    pub async fn refresh_bundle(&self) -> Result<bool, String> {
        let version = read(&self.bundle).version.clone();
        let mut req = self
            .http
            .get(format!("{}/v1/gateway/bundle", self.mandate_url))
            .bearer_auth(self.credential.as_str());
        if let Some(v) = &version {
            req = req.header("if-none-match", format!("\"{v}\""));
        }
        let resp = req.send().await.map_err(|e| e.to_string())?;
        if resp.status() == reqwest::StatusCode::NOT_MODIFIED {
            return Ok(false);
        }
        if !resp.status().is_success() {
            return Err(format!("Mandate answered {}", resp.status()));
        }
        let body: Value = resp.json().await.map_err(|e| e.to_string())?;
        let files: Vec<(String, String)> = body["policies"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| {
                Some((
                    p["file"].as_str()?.to_owned(),
                    p["text"].as_str()?.to_owned(),
                ))
            })
            .collect();
        let engine = mandate_policy::load_sources(&files, &Default::default()).map_err(|errs| {
            errs.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        })?;
        let agents = body["agents"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| serde_json::from_value::<Agent>(a.clone()).ok())
            .map(|a| (a.id.as_str().to_owned(), Arc::new(a)))
            .collect();
        let mut b = self.bundle.write().unwrap_or_else(PoisonError::into_inner);
        b.version = body["version"].as_str().map(str::to_owned);
        b.engine = Arc::new(engine);
        b.agents = agents;
        tracing::info!(policies = b.engine.policy_count(), "policy bundle loaded");
        Ok(true)
    }

    /// The verifier (for its status, and for tests that wait for a revocation).
    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// Stops the background work and sends every queued audit event (waiting at most
    /// `timeout`).
    pub async fn close(&self, timeout: Duration) {
        drop(lock(&self.events).take());
        if let Some(r) = lock(&self.refresher).take() {
            r.abort();
        }
        let sender = lock(&self.sender).take();
        if let Some(s) = sender
            && tokio::time::timeout(timeout, s).await.is_err()
        {
            tracing::error!("audit events still queued at shutdown were not sent");
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(PoisonError::into_inner)
}

/// Sends queued events in order, in batches, retrying each batch until it lands.
async fn send_events(
    http: reqwest::Client,
    url: String,
    credential: String,
    mut rx: mpsc::Receiver<NewEvent>,
) {
    let mut batch = Vec::with_capacity(EVENT_BATCH);
    while rx.recv_many(&mut batch, EVENT_BATCH).await > 0 {
        let body = json!({ "events": batch });
        let mut delay = Duration::from_millis(100);
        loop {
            let sent = http
                .post(&url)
                .bearer_auth(&credential)
                .json(&body)
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => break,
                Ok(r) if r.status().is_client_error() => {
                    // The server refuses the batch itself: retrying cannot help.
                    tracing::error!(status = %r.status(), events = batch.len(), "Mandate refused a batch of gateway audit events");
                    break;
                }
                Ok(r) => {
                    tracing::warn!(status = %r.status(), "gateway audit events not accepted yet; retrying")
                }
                Err(e) => tracing::warn!(error = %e, "gateway audit events not sent yet; retrying"),
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(10));
        }
        batch.clear();
    }
}

impl Remote {
    /// Calls `/v1/gateway/holds…` with the gateway's credential: the status and JSON answer.
    fn holds_call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Pending<Result<(reqwest::StatusCode, Value), String>> {
        let http = self.http.clone();
        let url = format!("{}/v1/gateway/holds{path}", self.mandate_url);
        let credential = self.credential.clone();
        Box::pin(async move {
            let mut req = http.request(method, &url).bearer_auth(credential.as_str());
            if let Some(b) = body {
                req = req.json(&b);
            }
            let resp = req
                .send()
                .await
                .map_err(|e| format!("Mandate could not be reached: {e}"))?;
            let status = resp.status();
            let text = resp
                .text()
                .await
                .map_err(|e| format!("Mandate's answer was cut: {e}"))?;
            let value = if text.is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&text)
                    .map_err(|_| "Mandate's answer is not JSON".to_owned())?
            };
            Ok((status, value))
        })
    }
}

fn refused(status: reqwest::StatusCode, body: &Value) -> String {
    format!(
        "Mandate answered {status}: {}",
        body["message"].as_str().unwrap_or("no reason given")
    )
}

impl Authority for Remote {
    fn issuer(&self) -> &str {
        &self.issuer
    }

    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }

    fn verify(&self, token: &str, _audiences: &[String]) -> Pending<Result<Principal, Refusal>> {
        // The audiences were given to the verifier when it was built.
        let _ = &self.audiences;
        let verifier = Arc::clone(&self.verifier);
        let token = token.to_owned();
        Box::pin(async move { verifier.verify(&token).await })
    }

    fn decide(&self, ask: &Ask<'_>) -> Verdict {
        let (engine, agent) = {
            let b = read(&self.bundle);
            let agent = match ask.principal.claims.user() {
                Some(_) => None,
                None => ask.principal.agent().and_then(|a| b.agents.get(a).cloned()),
            };
            (Arc::clone(&b.engine), agent)
        };
        self.decisions.verdict(
            &engine,
            ask,
            agent.as_deref(),
            self.now_ms().div_euclid(1000),
        )
    }

    fn sign_txn(&self, claims: &TxnClaims) -> Result<String, String> {
        mandate_token::sign::sign_jwt(&self.key, crate::txn::TYP, claims).map_err(|e| e.to_string())
    }

    fn txn_issuer(&self) -> &str {
        &self.public_url
    }

    fn jwks(&self) -> Option<Value> {
        Some(self.jwks.clone())
    }

    fn secret(&self, name: &str) -> Pending<Result<Zeroizing<String>, SecretError>> {
        let cache = Arc::clone(&self.secrets);
        let http = self.http.clone();
        let url = format!("{}/v1/gateway/secrets/{name}", self.mandate_url);
        let credential = self.credential.clone();
        let name = name.to_owned();
        Box::pin(async move {
            let cached = lock(&cache)
                .get(&name)
                .filter(|(_, at)| at.elapsed() < SECRET_CACHE)
                .map(|(v, _)| Arc::clone(v));
            if let Some(v) = cached {
                return Ok(Zeroizing::new(v.as_str().to_owned()));
            }
            let resp = http
                .get(&url)
                .bearer_auth(credential.as_str())
                .send()
                .await
                .map_err(|_| {
                    SecretError(format!("secret `{name}`: Mandate could not be reached"))
                })?;
            if !resp.status().is_success() {
                return Err(SecretError(format!(
                    "secret `{name}`: Mandate answered {}",
                    resp.status()
                )));
            }
            let body: Zeroizing<String> = Zeroizing::new(
                resp.text()
                    .await
                    .map_err(|_| SecretError(format!("secret `{name}`: the answer was cut")))?,
            );
            let parsed: Value = serde_json::from_str(&body)
                .map_err(|_| SecretError(format!("secret `{name}`: the answer is not JSON")))?;
            let value = Arc::new(Zeroizing::new(
                parsed["value"]
                    .as_str()
                    .ok_or_else(|| SecretError(format!("secret `{name}`: no value")))?
                    .to_owned(),
            ));
            drop(parsed);
            lock(&cache).insert(name, (Arc::clone(&value), Instant::now()));
            Ok(Zeroizing::new(value.as_str().to_owned()))
        })
    }

    fn record(&self, event: NewEvent) {
        let Some(tx) = lock(&self.events).clone() else {
            tracing::error!(kind = %event.kind, "gateway audit event after shutdown: dropped");
            return;
        };
        if tx.try_send(event).is_err() {
            tracing::error!("gateway audit queue is full: an event was dropped");
        }
    }

    fn suspend(&self, agent: &str, reason: &str) -> Pending<Result<(), String>> {
        let http = self.http.clone();
        let url = format!("{}/v1/gateway/suspensions", self.mandate_url);
        let credential = self.credential.clone();
        let body = json!({"agent": agent, "reason": reason});
        Box::pin(async move {
            let r = http
                .post(&url)
                .bearer_auth(credential.as_str())
                .json(&body)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if r.status().is_success() {
                Ok(())
            } else {
                Err(format!("Mandate answered {}", r.status()))
            }
        })
    }

    fn alert(&self, url: &str, payload: Value) {
        let http = self.http.clone();
        let url = url.to_owned();
        tokio::spawn(async move {
            match http.post(&url).json(&payload).send().await {
                Ok(r) if r.status().is_success() => {}
                Ok(r) => tracing::warn!(status = %r.status(), "breaker webhook refused the alert"),
                Err(e) => tracing::warn!(error = %e, "breaker webhook could not be reached"),
            }
        });
    }

    fn hold(&self, held: HeldRequest, binding_message: String) -> Pending<Result<Receipt, String>> {
        let body = json!({"held": held, "binding_message": binding_message});
        let call = self.holds_call(reqwest::Method::POST, "", Some(body));
        Box::pin(async move {
            let (status, v) = call.await?;
            if !status.is_success() {
                return Err(refused(status, &v));
            }
            match (v["id"].as_str(), v["expires_at"].as_i64()) {
                (Some(id), Some(expires_at)) => Ok(Receipt {
                    id: id.to_owned(),
                    expires_at,
                }),
                _ => Err("Mandate's answer names no approval".into()),
            }
        })
    }

    fn proposal(&self, id: &str) -> Pending<Result<Option<Proposal>, String>> {
        let call = self.holds_call(reqwest::Method::GET, &format!("/{id}"), None);
        Box::pin(async move {
            let (status, v) = call.await?;
            if status == reqwest::StatusCode::NOT_FOUND {
                return Ok(None);
            }
            if !status.is_success() {
                return Err(refused(status, &v));
            }
            serde_json::from_value(v)
                .map(Some)
                .map_err(|e| format!("Mandate's proposal does not decode: {e}"))
        })
    }

    fn claim(&self, id: &str) -> Pending<Result<bool, String>> {
        let call = self.holds_call(reqwest::Method::POST, &format!("/{id}/claim"), None);
        Box::pin(async move {
            let (status, v) = call.await?;
            if !status.is_success() {
                return Err(refused(status, &v));
            }
            Ok(v["claimed"].as_bool().unwrap_or(false))
        })
    }

    fn deliver(&self, id: &str, delivered: Delivered) -> Pending<Result<(), String>> {
        let body = serde_json::to_value(&delivered).unwrap_or(Value::Null);
        let call = self.holds_call(
            reqwest::Method::POST,
            &format!("/{id}/delivery"),
            Some(body),
        );
        Box::pin(async move {
            let (status, v) = call.await?;
            if status.is_success() {
                Ok(())
            } else {
                Err(refused(status, &v))
            }
        })
    }

    fn approved_holds(&self) -> Pending<Result<Vec<String>, String>> {
        let call = self.holds_call(reqwest::Method::GET, "?approved=true", None);
        Box::pin(async move {
            let (status, v) = call.await?;
            if !status.is_success() {
                return Err(refused(status, &v));
            }
            Ok(v["ids"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect())
        })
    }

    fn revoked(&self, claims: &AccessClaims) -> Option<String> {
        let (Ok(chain), Ok(scopes)) = (claims.chain(), claims.scopes()) else {
            return Some("the held request's token claims no longer parse".into());
        };
        let principal = Principal {
            claims: claims.clone(),
            chain,
            scopes,
        };
        self.verifier
            .revoked(&principal)
            .map(|r| format!("{} `{}` has been revoked", r.kind.as_str(), r.id))
    }
}

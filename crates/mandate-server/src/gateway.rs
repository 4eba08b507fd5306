//! The gateway inside `mandate serve`: [`mandate_gateway::Authority`] answered from the
//! server's own memory (keys, revocation index, agent directory, policy set) and store (secrets,
//! audit), and the listener started beside the authorization server.
//!
//! The proxy itself lives in `mandate-gateway`; this module only connects it to the server.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use mandate_core::audit::NewEvent;
use mandate_core::claims::AccessClaims;
use mandate_gateway::authority::{Ask, Pending, Receipt, SecretError, Verdict};
use mandate_gateway::hold::{Delivered, HeldRequest, Proposal};
use mandate_gateway::txn::TxnClaims;
use mandate_gateway::{Authority, Gateway, GatewayConfig, Plan};
use mandate_store::Op;
use mandate_token::sign::sign_jwt;
use mandate_verify::{Principal, Refusal};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use zeroize::Zeroizing;

use crate::state::AppState;

/// How long an opened secret is kept in memory before it is read from the store again, so a
/// changed secret takes effect within this time and a request rarely waits on the database.
pub const SECRET_CACHE: Duration = Duration::from_secs(10);

/// Opened secrets and when they were opened.
type SecretCache = Arc<Mutex<HashMap<String, (Arc<Zeroizing<String>>, Instant)>>>;

/// Mandate, as the in-process gateway sees it.
pub struct InProcess {
    state: Arc<AppState>,
    secrets: SecretCache,
    /// Verdicts of the policy set in force, for the current second.
    decisions: mandate_gateway::decide::DecisionCache,
    http: reqwest::Client,
    /// Audit events on their way to the store, written in batches by [`write_events`].
    events: Mutex<Option<mpsc::Sender<NewEvent>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

/// Most gateway audit events waiting to be written; beyond it new ones are dropped (and logged).
pub const EVENT_QUEUE: usize = 100_000;

/// Most gateway audit events written in one unit.
pub const EVENT_BATCH: usize = 256;

impl InProcess {
    /// The authority over `state`; starts the audit writer.
    pub fn new(state: Arc<AppState>) -> InProcess {
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        let writer = tokio::spawn(write_events(Arc::clone(&state), rx));
        InProcess {
            state,
            secrets: Arc::default(),
            decisions: mandate_gateway::decide::DecisionCache::default(),
            http: crate::ssf::push::client(),
            events: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
        }
    }

    /// Writes the audit events still queued, then stops the writer.
    pub async fn close(&self) {
        drop(
            self.events
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        let writer = self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(w) = writer {
            let _ = w.await;
        }
    }
}

/// Writes queued events in batches: one unit per batch instead of one per request, so a busy
/// gateway costs the store's writer far fewer hand-offs and savepoints.
async fn write_events(state: Arc<AppState>, mut rx: mpsc::Receiver<NewEvent>) {
    let mut batch = Vec::with_capacity(EVENT_BATCH);
    while rx.recv_many(&mut batch, EVENT_BATCH).await > 0 {
        let ops: Vec<Op> = batch.drain(..).map(Op::Audit).collect();
        let n = ops.len();
        if let Err(e) = state.store.commit(ops).await {
            tracing::error!(error = %e, events = n, "gateway audit events could not be written");
        }
    }
}

impl Authority for InProcess {
    fn issuer(&self) -> &str {
        &self.state.issuer
    }

    fn now_ms(&self) -> i64 {
        self.state.clock.now_ms()
    }

    fn verify(&self, token: &str, audiences: &[String]) -> Pending<Result<Principal, Refusal>> {
        let leeway = self.state.config.tokens.leeway;
        let now = self.state.clock.now();
        let result = crate::live::check_for(&self.state, token, now, audiences, leeway);
        Box::pin(std::future::ready(result))
    }

    fn decide(&self, ask: &Ask<'_>) -> Verdict {
        let agent = match ask.principal.claims.user() {
            Some(_) => None,
            None => ask
                .principal
                .agent()
                .and_then(|a| self.state.directory.get(a)),
        };
        let engine = self.state.policy.engine();
        self.decisions
            .verdict(&engine, ask, agent.as_deref(), self.state.clock.now())
    }

    fn sign_txn(&self, claims: &TxnClaims) -> Result<String, String> {
        let keys = self.state.keys.keys();
        sign_jwt(&keys.current, mandate_gateway::txn::TYP, claims).map_err(|e| e.to_string())
    }

    fn secret(&self, name: &str) -> Pending<Result<Zeroizing<String>, SecretError>> {
        let state = Arc::clone(&self.state);
        let cache = Arc::clone(&self.secrets);
        let name = name.to_owned();
        Box::pin(async move {
            let cached = cache
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&name)
                .filter(|(_, at)| at.elapsed() < SECRET_CACHE)
                .map(|(v, _)| Arc::clone(v));
            if let Some(v) = cached {
                return Ok(Zeroizing::new(v.as_str().to_owned()));
            }
            let value = crate::admin::secrets::reveal(&state, &name)
                .await
                .map_err(|e| SecretError(e.to_string()))?;
            let value = Arc::new(Zeroizing::new(value.expose().to_owned()));
            cache
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(name, (Arc::clone(&value), Instant::now()));
            Ok(Zeroizing::new(value.as_str().to_owned()))
        })
    }

    fn record(&self, event: NewEvent) {
        let tx = self
            .events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        match tx {
            Some(tx) => {
                if tx.try_send(event).is_err() {
                    tracing::error!("gateway audit queue is full: an event was dropped");
                }
            }
            None => {
                tracing::error!(kind = %event.kind, "gateway audit event after shutdown: dropped")
            }
        }
    }

    fn suspend(&self, agent: &str, reason: &str) -> Pending<Result<(), String>> {
        let state = Arc::clone(&self.state);
        let agent = agent.to_owned();
        let reason = reason.to_owned();
        Box::pin(async move {
            crate::admin::agents::suspend_for(&state, &agent, "gateway:breaker", &reason)
                .await
                .map_err(|e| format!("{e:?}"))
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
        let state = Arc::clone(&self.state);
        Box::pin(async move { crate::held::hold(&state, held, binding_message, "gateway").await })
    }

    fn proposal(&self, id: &str) -> Pending<Result<Option<Proposal>, String>> {
        let state = Arc::clone(&self.state);
        let id = id.to_owned();
        Box::pin(async move { crate::held::proposal(&state, &id).await })
    }

    fn claim(&self, id: &str) -> Pending<Result<bool, String>> {
        let state = Arc::clone(&self.state);
        let id = id.to_owned();
        Box::pin(async move { crate::held::claim(&state, &id).await })
    }

    fn deliver(&self, id: &str, delivered: Delivered) -> Pending<Result<(), String>> {
        let state = Arc::clone(&self.state);
        let id = id.to_owned();
        Box::pin(async move { crate::held::deliver(&state, &id, &delivered).await })
    }

    fn approved_holds(&self) -> Pending<Result<Vec<String>, String>> {
        let state = Arc::clone(&self.state);
        Box::pin(async move { crate::held::approved(&state).await })
    }

    fn decisions(&self) -> Option<tokio::sync::broadcast::Receiver<String>> {
        Some(self.state.approvals.subscribe())
    }

    fn revoked(&self, claims: &AccessClaims) -> Option<String> {
        crate::held::revoked(&self.state, claims)
    }
}

/// A running gateway.
pub struct RunningGateway {
    /// The bound address.
    pub addr: SocketAddr,
    /// Its public URL (the audience tokens need).
    pub url: String,
    /// The proxy, for in-process callers (tests).
    pub gateway: Arc<Gateway<InProcess>>,
    authority: Arc<InProcess>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
    /// Sends approved held writes (see `mandate_gateway::proxy::run_dispatcher`).
    dispatcher: JoinHandle<()>,
}

impl RunningGateway {
    /// Stops accepting, lets requests in flight finish.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
        self.dispatcher.abort();
        self.authority.close().await;
    }
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayStartError {
    /// The configuration is wrong.
    #[error(transparent)]
    Config(#[from] mandate_gateway::config::ConfigError),
    /// Binding or building the client failed.
    #[error("gateway: {0}")]
    Io(#[from] std::io::Error),
}

/// Binds `listen` and serves `config` in front of its upstreams, asking `state`.
pub async fn start(
    state: Arc<AppState>,
    config: &GatewayConfig,
    listen: SocketAddr,
) -> Result<RunningGateway, GatewayStartError> {
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let plan = Plan::new(config, &format!("http://{addr}"))?;
    let url = plan.public_url.clone();
    let authority = Arc::new(InProcess::new(state));
    let gateway = Arc::new(Gateway::new(plan, Arc::clone(&authority))?);
    let (tx, rx) = oneshot::channel::<()>();
    let serving = Arc::clone(&gateway);
    let task = tokio::spawn(async move {
        mandate_gateway::serve::serve(serving, listener, async {
            let _ = rx.await;
        })
        .await;
    });
    let dispatcher = mandate_gateway::proxy::spawn_dispatcher(&gateway);
    tracing::info!(%addr, %url, "gateway is listening");
    Ok(RunningGateway {
        addr,
        url,
        gateway,
        authority,
        shutdown: Some(tx),
        task,
        dispatcher,
    })
}

/// The secret holding the sample CRM's API key in `--dev`.
pub const DEV_SECRET: &str = "crm-api";

/// The gateway configuration of the `--dev` world (SPEC §10) in front of the sample CRM at
/// `upstream`: its REST routes and its MCP server `crm` at `/mcp`.
pub fn dev_config(upstream: &str) -> GatewayConfig {
    use mandate_gateway::config::{McpConfig, UpstreamConfig};
    use mandate_gateway::forward::Injection;
    use mandate_gateway::route::RouteConfig;
    let route = |method: &str, path: &str, action: &str, resource: &str| RouteConfig {
        method: method.into(),
        path: path.into(),
        action: action.into(),
        resource: resource.into(),
        stage: None,
        upstream: None,
        audience: None,
    };
    GatewayConfig {
        upstreams: vec![UpstreamConfig {
            name: "crm".into(),
            url: upstream.into(),
            secret: Some(DEV_SECRET.into()),
            credential: Some(Injection::Header {
                name: "x-api-key".into(),
                format: None,
            }),
            timeout_secs: None,
            audience: None,
        }],
        routes: vec![
            route(
                "GET",
                "/customers/{id}",
                "crm.customers:read",
                "customers/{id}",
            ),
            route(
                "GET",
                "/regions/{region}/customers/{id}",
                "crm.customers:read",
                "customers/{id}",
            ),
            route("GET", "/tickets/{id}", "tickets:read", "tickets/{id}"),
            route("POST", "/tickets", "tickets:create", "tickets"),
            route("POST", "/email/send", "email:send", "email"),
        ],
        mcp: vec![McpConfig {
            server: "crm".into(),
            path: "/mcp".into(),
            upstream: "crm".into(),
            upstream_path: None,
            tool_classes: Default::default(),
            audience: None,
        }],
        ..GatewayConfig::default()
    }
}

/// A Transaction Token check for the sample CRM: Mandate's keys, `typ: txntoken+jwt`, not
/// expired.
pub fn txn_verifier(state: &Arc<AppState>) -> crate::sample::TxnVerifier {
    let state = Arc::clone(state);
    Arc::new(move |token: &str| {
        let keys = state.keys.keys();
        let jwt = mandate_token::verify::verify_signature(
            token,
            &keys.verify,
            Some(mandate_gateway::txn::TYP),
        )
        .map_err(|e| e.to_string())?;
        let claims = jwt.claims;
        let exp = claims.get("exp").and_then(Value::as_i64).unwrap_or(0);
        if exp < state.clock.now() {
            return Err("expired".into());
        }
        Ok(claims)
    })
}

/// The file (in the data directory, mode 0600) holding the sample CRM's API key in `--dev`, so
/// benchmarks and curious users can call the CRM directly, without the gateway.
pub const DEV_SECRET_FILE: &str = "sample-crm.key";

/// In `--dev`: starts the sample CRM on a loopback port, stores its API key (new and random at
/// each start) as secret [`DEV_SECRET`] and in [`DEV_SECRET_FILE`], and returns it with the dev
/// gateway configuration.
pub async fn start_dev_upstream(
    state: &Arc<AppState>,
) -> Result<(crate::sample::SampleHandle, GatewayConfig), GatewayStartError> {
    let key = mandate_token::random_id::<24>().map_err(|e| std::io::Error::other(e.to_string()))?;
    crate::admin::secrets::store_secret(
        state,
        DEV_SECRET,
        &key,
        "API key of the sample CRM (--dev)",
        "system:dev",
    )
    .await
    .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
    crate::files::write_private(&state.config.data_dir.join(DEV_SECRET_FILE), key.as_bytes())?;
    let sample = crate::sample::Sample::new(key, Some(txn_verifier(state)));
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let handle = sample.serve(listener).await?;
    let config = dev_config(&handle.url());
    Ok((handle, config))
}

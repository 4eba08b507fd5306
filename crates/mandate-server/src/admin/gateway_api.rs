//! `/v1/gateway/*`: what a standalone gateway process asks of the server, and nothing more.
//!
//! * `GET /v1/gateway/bundle` — the policy sources in force and every agent, with a version
//!   (`ETag`; `If-None-Match` answers `304`), so the gateway decides locally.
//! * `GET /v1/gateway/secrets/{name}` — one upstream secret's value, each reveal audited
//!   (`secret.reveal`, never the value).
//! * `POST /v1/gateway/events` — the gateway's own audit events (`gateway.*` kinds only), a batch
//!   appended in one commit.
//! * `POST /v1/gateway/suspensions` — a breaker's suspension of an agent.
//!
//! Only a credential with the `gateway` role reaches them ([`GatewayCaller`]); an `admin`
//! credential is refused, so no admin can read a secret's value.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use mandate_core::agent::Agent;
use mandate_core::audit::{Decision, NewEvent};
use mandate_store::Op;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::admin::auth::GatewayCaller;
use crate::admin::body::JsonBody;
use crate::admin::secrets::{RevealError, reveal, valid_name};
use crate::app::RequestId;
use crate::error::ApiError;
use crate::state::AppState;

/// The most events one `POST /v1/gateway/events` may carry.
pub const MAX_EVENTS: usize = 200;
/// The longest suspension reason, in characters.
pub const MAX_REASON_CHARS: usize = 500;
/// The prefix every event kind a gateway writes must have.
pub const KIND_PREFIX: &str = "gateway.";
/// The longest event kind.
const MAX_KIND_CHARS: usize = 64;

/// One policy source file of the bundle.
#[derive(Debug, Serialize)]
struct PolicyFile<'a> {
    file: &'a str,
    text: &'a str,
}

/// What the bundle's version is the hash of.
#[derive(Serialize)]
struct Content<'a> {
    policies: &'a [PolicyFile<'a>],
    agents: &'a [Agent],
}

/// The bundle as sent.
#[derive(Serialize)]
struct Bundle<'a> {
    version: &'a str,
    policies: &'a [PolicyFile<'a>],
    agents: &'a [Agent],
}

/// Whether an `If-None-Match` header names `version` (quoted or not, weak or not, or `*`).
fn none_match(headers: &HeaderMap, version: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| {
            let tag = tag.trim();
            let tag = tag.strip_prefix("W/").unwrap_or(tag);
            tag.strip_prefix('"')
                .and_then(|t| t.strip_suffix('"'))
                .unwrap_or(tag)
        })
        .any(|tag| tag == version || tag == "*")
}

/// `GET /v1/gateway/bundle` (role `gateway`): `{version, policies: [{file, text}], agents}`.
/// `version` is the hex SHA-256 of the content and is sent as `ETag`; a matching
/// `If-None-Match` answers `304` without a body.
pub async fn bundle(
    State(state): State<Arc<AppState>>,
    _caller: GatewayCaller,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let sources = state.policy.sources();
    let policies: Vec<PolicyFile<'_>> = sources
        .iter()
        .map(|(file, text)| PolicyFile { file, text })
        .collect();
    let agents: Vec<Agent> = state
        .directory
        .all()
        .iter()
        .map(|a| a.as_ref().clone())
        .collect();
    let content = serde_json::to_vec(&Content {
        policies: &policies,
        agents: &agents,
    })
    .map_err(|e| {
        tracing::error!(error = %e, "the gateway bundle could not be serialized");
        ApiError::server_error()
    })?;
    let version = hex::encode(Sha256::digest(&content));
    let etag = HeaderValue::from_str(&format!("\"{version}\"")).ok();
    let mut resp = if none_match(&headers, &version) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        Json(Bundle {
            version: &version,
            policies: &policies,
            agents: &agents,
        })
        .into_response()
    };
    if let Some(etag) = etag {
        resp.headers_mut().insert(header::ETAG, etag);
    }
    Ok(resp)
}

/// `GET /v1/gateway/secrets/{name}` (role `gateway`): `{name, value}`, with
/// `Cache-Control: no-store`. Each reveal writes a `secret.reveal` audit event on
/// `secret:<name>` (never the value) before the answer; `404` if there is no such secret.
pub async fn secret(
    State(state): State<Arc<AppState>>,
    caller: GatewayCaller,
    Extension(rid): Extension<RequestId>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    if !valid_name(&name) {
        let shown: String = name.chars().take(80).collect();
        return Err(ApiError::bad_request(format!(
            "secret name `{shown}` must be 1–63 characters of `a-z`, `0-9`, `.`, `_` and `-`, \
             starting with a letter or digit"
        )));
    }
    let value = match reveal(&state, &name).await {
        Ok(v) => v,
        Err(RevealError::NotFound(_)) => {
            return Err(ApiError::not_found(format!("secret `{name}` not found")));
        }
        Err(RevealError::Unseal(_)) => {
            tracing::error!(secret = %name, "a secret's value does not open under the master key");
            return Err(ApiError::server_error());
        }
        Err(RevealError::Store(e)) => return Err(e.into()),
    };
    let event = NewEvent {
        kind: "secret.reveal".into(),
        action: Some("secret.reveal".into()),
        resource: Some(format!("secret:{name}")),
        decision: Some(Decision::Info),
        reason: format!("by {}", caller.label()),
        request_id: Some(rid.0),
        ..Default::default()
    };
    state.store.commit(vec![Op::Audit(event)]).await?;
    let mut resp = Json(json!({"name": name, "value": value.expose()})).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// One audit event a gateway writes: the fields of `mandate_core::audit::NewEvent`, each
/// optional (absent means empty). `kind` must start with `gateway.`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayEvent {
    /// What happened: `gateway.request`, `gateway.breaker`, … (must start with `gateway.`).
    pub kind: String,
    /// The user's subject, when a user is involved.
    pub user: Option<String>,
    /// Agent ids, earliest first.
    pub chain: Vec<String>,
    /// The task.
    pub task: Option<String>,
    /// The action (a scope).
    pub action: Option<String>,
    /// What the action is on.
    pub resource: Option<String>,
    /// `allow`, `deny` or `info` (absent means `info`).
    #[schema(value_type = Option<String>)]
    pub decision: Option<Decision>,
    /// Why, in words.
    pub reason: String,
    /// The policies or rules that decided.
    pub policy_ids: Vec<String>,
    /// The request that caused it.
    pub request_id: Option<String>,
    /// The credential that proved the current actor.
    pub credential: Option<String>,
    /// The token the event is about (its `jti`, never the token).
    pub jti: Option<String>,
    /// Further facts: empty, or the text of a JSON object.
    pub detail: String,
}

impl From<GatewayEvent> for NewEvent {
    fn from(e: GatewayEvent) -> NewEvent {
        // Every field named, so a field added to `NewEvent` must be added here too.
        NewEvent {
            kind: e.kind,
            user: e.user,
            chain: e.chain,
            task: e.task,
            action: e.action,
            resource: e.resource,
            decision: e.decision,
            reason: e.reason,
            policy_ids: e.policy_ids,
            request_id: e.request_id,
            credential: e.credential,
            jti: e.jti,
            detail: e.detail,
        }
    }
}

/// Body of `POST /v1/gateway/events`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GatewayEvents {
    /// 1–200 events, appended in order in one commit (all or none).
    pub events: Vec<GatewayEvent>,
}

fn check_event(i: usize, e: &GatewayEvent) -> Result<(), ApiError> {
    let kind_ok = e.kind.len() <= MAX_KIND_CHARS
        && e.kind.strip_prefix(KIND_PREFIX).is_some_and(|rest| {
            !rest.is_empty()
                && rest.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
                })
        });
    if !kind_ok {
        let shown: String = e.kind.chars().take(80).collect();
        return Err(ApiError::bad_request(format!(
            "event {i}: kind `{shown}` must be `gateway.` followed by `a-z`, `0-9`, `.`, `_` or \
             `-` (at most {MAX_KIND_CHARS} characters)"
        )));
    }
    if !e.detail.is_empty()
        && !serde_json::from_str::<Value>(&e.detail).is_ok_and(|v| v.is_object())
    {
        return Err(ApiError::bad_request(format!(
            "event {i}: `detail` must be empty or the text of a JSON object"
        )));
    }
    Ok(())
}

/// `POST /v1/gateway/events` (role `gateway`): appends 1–200 `gateway.*` events in one commit
/// (all or none), each with `detail.gateway` naming the sending credential (`gateway:<id>`), and
/// answers `201 {"written": n}`.
pub async fn events(
    State(state): State<Arc<AppState>>,
    caller: GatewayCaller,
    JsonBody(body): JsonBody<GatewayEvents>,
) -> Result<Response, ApiError> {
    let n = body.events.len();
    if n == 0 || n > MAX_EVENTS {
        return Err(ApiError::bad_request(format!(
            "`events` must hold 1–{MAX_EVENTS} events, not {n}"
        )));
    }
    for (i, e) in body.events.iter().enumerate() {
        check_event(i, e)?;
    }
    // Each event names the gateway that sent it: `detail.gateway = "gateway:<credential id>"`.
    let sender = caller.label();
    let ops = body
        .events
        .into_iter()
        .map(|e| {
            let mut event: NewEvent = e.into();
            let mut detail = serde_json::from_str::<serde_json::Map<String, Value>>(&event.detail)
                .unwrap_or_default();
            detail.insert("gateway".into(), Value::String(sender.clone()));
            event.detail = Value::Object(detail).to_string();
            Op::Audit(event)
        })
        .collect();
    state.store.commit(ops).await?;
    Ok((StatusCode::CREATED, Json(json!({ "written": n }))).into_response())
}

/// Body of `POST /v1/gateway/suspensions`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SuspensionRequest {
    /// The agent to suspend.
    pub agent: String,
    /// Why (1–500 characters, no control characters), e.g. the breaker that tripped.
    pub reason: String,
}

/// `POST /v1/gateway/suspensions` (role `gateway`): suspends the agent as
/// `POST /v1/agents/{id}/suspend` does (a revocation of the agent, audited as `agent.suspend`
/// by `gateway:<credential id>`) and answers `200` with the agent; `404` for an unknown agent.
pub async fn suspend(
    State(state): State<Arc<AppState>>,
    caller: GatewayCaller,
    JsonBody(body): JsonBody<SuspensionRequest>,
) -> Result<Json<Agent>, ApiError> {
    if body.agent.is_empty() {
        return Err(ApiError::bad_request("`agent` is required"));
    }
    let reason = body.reason.trim();
    if reason.is_empty()
        || reason.chars().count() > MAX_REASON_CHARS
        || reason.chars().any(char::is_control)
    {
        return Err(ApiError::bad_request(format!(
            "`reason` is required: 1–{MAX_REASON_CHARS} characters, without control characters"
        )));
    }
    crate::admin::agents::suspend_for(&state, &body.agent, &caller.label(), reason).await?;
    let agent = state
        .directory
        .get(&body.agent)
        .ok_or_else(ApiError::server_error)?;
    Ok(Json(agent.as_ref().clone()))
}

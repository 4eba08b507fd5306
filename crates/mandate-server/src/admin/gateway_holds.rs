//! `/v1/gateway/holds*`: a standalone gateway's held writes (draft stage, SPEC §6) — what the
//! in-process gateway does with [`crate::held`] directly.
//!
//! * `POST /v1/gateway/holds` `{held, binding_message}` → `201 {id, expires_at}`: opens the
//!   approval. The held request must name a token Mandate issued (its `jti`, user, agents and
//!   task must match the token record), so a gateway credential cannot attribute a write to
//!   someone who never asked for it.
//! * `GET /v1/gateway/holds?approved=true` → `{ids}`: approved held writes nobody claimed.
//! * `GET /v1/gateway/holds/{id}` → the proposal (approval, dispatch, held request, answer).
//! * `POST /v1/gateway/holds/{id}/claim` → `{claimed}`: `true` for exactly one caller, ever.
//! * `POST /v1/gateway/holds/{id}/delivery` (the upstream's answer) → `204`; only after a claim.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use mandate_core::approval::Dispatch;
use mandate_core::claims::SubProfile;
use mandate_gateway::hold::{Delivered, HeldRequest};
use serde::Deserialize;
use serde_json::json;

use crate::admin::auth::GatewayCaller;
use crate::admin::body::JsonBody;
use crate::error::ApiError;
use crate::state::AppState;

/// The largest body these routes take: a held request's body (base64) or an upstream's answer.
pub const HOLD_BODY_LIMIT: usize = 4 * 1024 * 1024;

/// The longest binding message, in characters.
const MAX_MESSAGE_CHARS: usize = 2000;

/// Body of `POST /v1/gateway/holds`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewHold {
    /// The held request.
    pub held: HeldRequest,
    /// What the approver is shown.
    pub binding_message: String,
}

fn store_error(e: String) -> ApiError {
    tracing::error!(error = %e, "held write");
    ApiError::server_error()
}

/// `POST /v1/gateway/holds`.
pub async fn create(
    State(state): State<Arc<AppState>>,
    caller: GatewayCaller,
    JsonBody(body): JsonBody<NewHold>,
) -> Result<Response, ApiError> {
    let c = &body.held.claims;
    let record = state
        .store
        .token(&c.jti)
        .await?
        .ok_or_else(|| ApiError::bad_request(format!("no token `{}` was issued", c.jti)))?;
    let chain = c
        .chain()
        .map_err(|e| ApiError::bad_request(format!("the held request's claims: {e}")))?
        .agent_ids();
    let profile = match c.sub_profile {
        SubProfile::User => "user",
        SubProfile::Agent => "agent",
    };
    if record.sub != c.sub
        || record.sub_profile != profile
        || record.chain != chain
        || record.task != c.task
    {
        return Err(ApiError::bad_request(format!(
            "the held request's claims do not match token `{}`",
            c.jti
        )));
    }
    let message: String = body
        .binding_message
        .chars()
        .take(MAX_MESSAGE_CHARS)
        .collect();
    let receipt = crate::held::hold(&state, body.held, message, &caller.label())
        .await
        .map_err(store_error)?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"id": receipt.id, "expires_at": receipt.expires_at})),
    )
        .into_response())
}

/// Query of `GET /v1/gateway/holds`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Must be `true`: only approved, unclaimed ones are listed.
    pub approved: bool,
}

/// `GET /v1/gateway/holds?approved=true`.
pub async fn approved(
    State(state): State<Arc<AppState>>,
    _caller: GatewayCaller,
    Query(q): Query<ListQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if !q.approved {
        return Err(ApiError::bad_request(
            "only `approved=true` is supported: a gateway lists what it may send",
        ));
    }
    let ids = crate::held::approved(&state).await.map_err(store_error)?;
    Ok(Json(json!({ "ids": ids })))
}

/// `GET /v1/gateway/holds/{id}`.
pub async fn show(
    State(state): State<Arc<AppState>>,
    _caller: GatewayCaller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    match crate::held::proposal(&state, &id)
        .await
        .map_err(store_error)?
    {
        Some(p) => Ok(Json(p).into_response()),
        None => Err(ApiError::not_found(format!(
            "no held write `{}`",
            id.chars().take(64).collect::<String>()
        ))),
    }
}

/// `POST /v1/gateway/holds/{id}/claim`.
pub async fn claim(
    State(state): State<Arc<AppState>>,
    _caller: GatewayCaller,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if crate::held::proposal(&state, &id)
        .await
        .map_err(store_error)?
        .is_none()
    {
        return Err(ApiError::not_found(format!(
            "no held write `{}`",
            id.chars().take(64).collect::<String>()
        )));
    }
    let claimed = crate::held::claim(&state, &id).await.map_err(store_error)?;
    Ok(Json(json!({ "claimed": claimed })))
}

/// `POST /v1/gateway/holds/{id}/delivery`.
pub async fn deliver(
    State(state): State<Arc<AppState>>,
    _caller: GatewayCaller,
    Path(id): Path<String>,
    JsonBody(delivered): JsonBody<Delivered>,
) -> Result<StatusCode, ApiError> {
    let Some(p) = crate::held::proposal(&state, &id)
        .await
        .map_err(store_error)?
    else {
        return Err(ApiError::not_found(format!(
            "no held write `{}`",
            id.chars().take(64).collect::<String>()
        )));
    };
    if p.dispatch != Dispatch::Sending {
        return Err(ApiError::conflict(format!(
            "held write `{id}` is `{}`: only a claimed one takes its answer",
            p.dispatch.as_str()
        )));
    }
    crate::held::deliver(&state, &id, &delivered)
        .await
        .map_err(store_error)?;
    Ok(StatusCode::NO_CONTENT)
}

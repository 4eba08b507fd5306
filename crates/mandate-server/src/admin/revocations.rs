//! `POST /v1/revocations` (SPEC §10): revoke a token, task, agent, user or key by bare id.

use std::sync::Arc;

use axum::Extension;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use mandate_core::revocation::RevocationKind;
use serde::Deserialize;
use serde_json::json;

use crate::admin::auth::Admin;
use crate::admin::body::JsonBody;
use crate::app::RequestId;
use crate::error::ApiError;
use crate::state::AppState;

/// Body of `POST /v1/revocations`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRevocation {
    /// `token`, `task`, `agent`, `user` or `key`.
    pub kind: String,
    /// The bare id: the token's `jti`, the task id, the agent id, the user's `sub`, the key's
    /// `kid`.
    pub id: String,
    /// Why, for the audit log.
    #[serde(default)]
    pub reason: Option<String>,
}

/// `POST /v1/revocations`.
pub async fn create(
    State(state): State<Arc<AppState>>,
    Extension(rid): Extension<RequestId>,
    admin: Admin,
    JsonBody(body): JsonBody<NewRevocation>,
) -> Result<Response, ApiError> {
    admin.require_admin()?;
    let kind = RevocationKind::parse(&body.kind).ok_or_else(|| {
        ApiError::bad_request(format!(
            "`kind` `{}` is not one of `token`, `task`, `agent`, `user`, `key`",
            body.kind.chars().take(40).collect::<String>()
        ))
    })?;
    let mut req = crate::revocation::Request::new(kind, &body.id, &admin.label());
    req.reason = body.reason.unwrap_or_default();
    req.request_id = Some(rid.0);
    let outcome = crate::revocation::revoke(&state, req).await?;
    let r = &outcome.revocation;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": r.id, "kind": r.kind, "target": r.target, "by": r.by, "reason": r.reason, "at": r.at,
            "seq": outcome.seq,
            "tokens_ended": outcome.tokens.len(),
            "jtis": outcome.tokens.iter().map(|t| &t.jti).collect::<Vec<_>>(),
        })),
    )
        .into_response())
}

/// `GET /v1/revocations`.
pub async fn list(
    State(state): State<Arc<AppState>>,
    _admin: Admin,
) -> Result<Json<serde_json::Value>, ApiError> {
    Ok(Json(
        json!({ "revocations": state.store.revocations().await? }),
    ))
}

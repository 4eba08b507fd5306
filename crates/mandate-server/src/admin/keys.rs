//! `GET /v1/keys` and `POST /v1/keys/rotate`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use mandate_core::audit::{Decision, NewEvent};
use serde_json::{Value, json};

use crate::admin::auth::Admin;
use crate::error::ApiError;
use crate::state::AppState;

/// `GET /v1/keys`: the published signing keys (public facts only).
pub async fn list(State(state): State<Arc<AppState>>, _admin: Admin) -> Json<Value> {
    Json(json!({ "keys": state.keys.keys().listing }))
}

/// `POST /v1/keys/rotate`: a new key signs from now on; the old one stays in the JWKS for the
/// longest token lifetime (plus leeway), so tokens it signed keep verifying until they expire.
pub async fn rotate(
    State(state): State<Arc<AppState>>,
    admin: Admin,
) -> Result<Json<Value>, ApiError> {
    admin.require_admin()?;
    let now = state.clock.now();
    let alg = mandate_token::Alg::parse(&state.config.signing_alg)
        .map_err(|_| ApiError::server_error())?;
    let keep_for = state.config.tokens.max_ttl + state.config.tokens.leeway;
    let event = NewEvent {
        kind: "keys.rotate".into(),
        action: Some("keys.rotate".into()),
        resource: Some("signing-keys".into()),
        decision: Some(Decision::Info),
        reason: format!("by {}", admin.label()),
        ..Default::default()
    };
    let (new, old) = state
        .keys
        .rotate(
            state.store.as_ref(),
            &state.master,
            alg,
            now,
            keep_for,
            event,
        )
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "key rotation failed");
            ApiError::server_error()
        })?;
    Ok(Json(json!({
        "current": new,
        "previous": old,
        "previous_published_until": now + keep_for,
    })))
}

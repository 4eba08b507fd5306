//! `POST /v1/dev/user-token`: a user token from the built-in test IdP. Refused outside `--dev`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::admin::auth::Admin;
use crate::admin::body::JsonBody;
use crate::dev::{demo_groups, demo_region};
use crate::error::ApiError;
use crate::state::AppState;

/// Body of `POST /v1/dev/user-token`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserTokenRequest {
    /// The user's subject, e.g. `alice@example.com`.
    pub sub: String,
    /// Groups; default: the demo user's groups, or none.
    #[serde(default)]
    pub groups: Option<Vec<String>>,
    /// Lifetime in seconds (default 3600; negative for an already-expired token).
    #[serde(default)]
    pub ttl: Option<i64>,
    /// Extra string claims, e.g. `{"tier": "gold"}` (policies read them as the user's tags).
    /// A demo user's token has their `region` unless this sets one.
    #[serde(default)]
    pub claims: std::collections::BTreeMap<String, String>,
}

/// `POST /v1/dev/user-token`.
pub async fn user_token(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    JsonBody(body): JsonBody<UserTokenRequest>,
) -> Result<Json<Value>, ApiError> {
    admin.require_admin()?;
    let Some(idp) = &state.dev else {
        return Err(ApiError::forbidden(
            "the test IdP exists only in `--dev`; use your identity provider's tokens",
        ));
    };
    let sub = body.sub.trim();
    if sub.is_empty() || sub.len() > 256 {
        return Err(ApiError::bad_request("`sub` must be 1–256 characters"));
    }
    let groups = body.groups.or_else(|| demo_groups(sub)).unwrap_or_default();
    let ttl = body.ttl.unwrap_or(3600).clamp(-86_400, 86_400);
    if ttl == 0 {
        return Err(ApiError::bad_request("`ttl` must not be 0"));
    }
    let now = state.clock.now();
    if body.claims.len() > 32 {
        return Err(ApiError::bad_request("at most 32 extra claims"));
    }
    let mut extra: serde_json::Map<String, Value> = body
        .claims
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    if let Some(region) = demo_region(sub) {
        extra.entry("region").or_insert_with(|| json!(region));
    }
    let token = idp
        .user_token_with(sub, &groups, ttl, now, &extra)
        .map_err(|e| {
            tracing::error!(error = %e, "dev user token failed");
            ApiError::server_error()
        })?;
    Ok(Json(json!({
        "token": token, "issuer": idp.issuer, "sub": sub, "groups": groups, "expires_at": now + ttl,
    })))
}

/// `GET /dev-idp/jwks.json`: the test IdP's keys (only routed in `--dev`).
pub async fn jwks(State(state): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    state
        .dev
        .as_ref()
        .map(|d| Json(d.jwks()))
        .ok_or_else(|| ApiError::not_found("no test IdP outside `--dev`"))
}

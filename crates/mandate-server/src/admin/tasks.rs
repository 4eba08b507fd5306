//! `GET /v1/tasks/{id}`: a task with its tokens (never the tokens themselves: their records).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Value, json};

use crate::admin::auth::Admin;
use crate::error::ApiError;
use crate::state::AppState;

/// `GET /v1/tasks/{id}`.
pub async fn show(
    State(state): State<Arc<AppState>>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let task = state.store.task(&id).await?.ok_or_else(|| {
        ApiError::not_found(format!(
            "task `{}` not found",
            id.chars().take(128).collect::<String>()
        ))
    })?;
    let tokens = state.store.tokens_of_task(&id).await?;
    Ok(Json(json!({ "task": task, "tokens": tokens })))
}

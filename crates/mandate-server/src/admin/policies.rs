//! `GET /v1/policies` and `POST /v1/policies/reload`: what is in force, and reloading it. A bad
//! set is refused with file, line and reason; the set in force stays.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use mandate_core::audit::{Decision, NewEvent};
use mandate_policy::PolicyError;
use mandate_store::Op;
use serde_json::{Value, json};

use crate::admin::auth::Admin;
use crate::error::ApiError;
use crate::state::AppState;

fn errors_json(errors: &[PolicyError]) -> Value {
    json!(
        errors
            .iter()
            .map(|e| json!({"file": e.file, "line": e.line, "message": e.message}))
            .collect::<Vec<_>>()
    )
}

/// `GET /v1/policies`.
pub async fn show(State(state): State<Arc<AppState>>, _admin: Admin) -> Json<Value> {
    let engine = state.policy.engine();
    Json(json!({
        "policies": engine.policy_count(),
        "files": engine.files(),
        "warnings": engine.warnings(),
        "last_reload_error": state.policy.last_error().as_deref().map(errors_json),
    }))
}

/// The audit event of a reload's outcome; `by` names who or what asked.
pub fn audit_event(outcome: &Result<usize, Vec<PolicyError>>, by: &str) -> NewEvent {
    match outcome {
        Ok(n) => NewEvent {
            kind: "policy.reload".into(),
            action: Some("policy.reload".into()),
            resource: Some("policies".into()),
            decision: Some(Decision::Allow),
            reason: format!("{n} policies in force, by {by}"),
            ..Default::default()
        },
        Err(errors) => NewEvent {
            kind: "policy.reload".into(),
            action: Some("policy.reload".into()),
            resource: Some("policies".into()),
            decision: Some(Decision::Deny),
            reason: format!(
                "refused ({by}); previous policies stay in force: {}",
                errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            ..Default::default()
        },
    }
}

/// Reloads and records the outcome in the audit log. `by` names who asked.
pub async fn reload_and_audit(state: &Arc<AppState>, by: &str) -> Result<usize, Vec<PolicyError>> {
    let loader = state.clone();
    let outcome = tokio::task::spawn_blocking(move || loader.policy.reload())
        .await
        .unwrap_or_else(|_| {
            Err(vec![PolicyError {
                file: "-".into(),
                line: 0,
                message: "the reload stopped unexpectedly".into(),
            }])
        });
    let event = audit_event(&outcome, by);
    if let Err(e) = state.store.commit(vec![Op::Audit(event)]).await {
        tracing::error!(error = %e, "policy reload audit event could not be written");
    }
    outcome
}

/// `POST /v1/policies/reload`.
pub async fn reload(
    State(state): State<Arc<AppState>>,
    admin: Admin,
) -> Result<Response, ApiError> {
    admin.require_admin()?;
    match reload_and_audit(&state, &admin.label()).await {
        Ok(n) => Ok(Json(json!({"policies": n})).into_response()),
        Err(errors) => Ok((
            StatusCode::BAD_REQUEST,
            Json(json!({
                "error": "bad_request",
                "message": format!(
                    "policies refused; the previous {} stay in force: {}",
                    state.policy.engine().policy_count(),
                    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
                ),
                "errors": errors_json(&errors),
            })),
        )
            .into_response()),
    }
}

//! Admin credentials: the bootstrap credential made on first start, and `POST /v1/credentials`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use mandate_core::audit::{Decision, NewEvent};
use mandate_store::{AdminCredential, Op, Store, StoreError};
use serde::Deserialize;
use serde_json::json;

use crate::admin::auth::{Admin, CREDENTIAL_PREFIX, Role, hash_secret};
use crate::admin::body::JsonBody;
use crate::error::ApiError;
use crate::state::AppState;

/// A freshly made credential: the secret exists only here, and is shown once.
pub struct NewCredential {
    /// The stored record.
    pub record: AdminCredential,
    /// The secret.
    pub secret: String,
}

/// Makes a credential with `role`, storing only its hash, with an audit event.
pub async fn make(
    store: &dyn Store,
    id: &str,
    role: Role,
    by: &str,
    now: i64,
) -> Result<NewCredential, StoreError> {
    let secret = format!(
        "{CREDENTIAL_PREFIX}{}",
        mandate_token::random_id::<32>().map_err(|e| StoreError::Database(e.to_string()))?
    );
    let record = AdminCredential {
        id: id.to_owned(),
        role: role.as_str().to_owned(),
        secret_hash: hash_secret(&secret),
        created_at: now,
        disabled_at: None,
    };
    let event = NewEvent {
        kind: "admin.credential.create".into(),
        action: Some("admin.credential.create".into()),
        resource: Some(format!("admin:{id}")),
        decision: Some(Decision::Info),
        reason: format!("role `{}` by {by}", role.as_str()),
        ..Default::default()
    };
    store
        .commit(vec![
            Op::InsertAdminCredential(record.clone()),
            Op::Audit(event),
        ])
        .await?;
    Ok(NewCredential { record, secret })
}

/// Body of `POST /v1/credentials`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CredentialRequest {
    /// A name for the credential (`[a-z0-9-]`, e.g. `ci-auditor`).
    pub id: String,
    /// `admin`, `auditor`, `verifier` (a resource server's verifier: the revocation stream
    /// and introspection only) or `gateway` (a standalone gateway: what a verifier may do, plus
    /// `/v1/gateway/*`).
    pub role: String,
}

/// `POST /v1/credentials`: makes a credential and returns its secret once.
pub async fn create(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    JsonBody(body): JsonBody<CredentialRequest>,
) -> Result<Response, ApiError> {
    admin.require_admin()?;
    let role = Role::parse(&body.role).ok_or_else(|| {
        ApiError::bad_request("`role` must be `admin`, `auditor`, `verifier` or `gateway`")
    })?;
    let id_ok = !body.id.is_empty()
        && body.id.len() <= 64
        && body
            .id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !id_ok {
        return Err(ApiError::bad_request(
            "`id` must be 1–64 characters of `a-z`, `0-9` and `-`",
        ));
    }
    let made = make(
        state.store.as_ref(),
        &body.id,
        role,
        &admin.label(),
        state.clock.now(),
    )
    .await
    .map_err(|e| match e {
        StoreError::Conflict(_) => {
            ApiError::conflict(format!("credential `{}` already exists", body.id))
        }
        other => other.into(),
    })?;
    state.admins.insert(made.record.clone());
    Ok((
        StatusCode::CREATED,
        Json(json!({"id": made.record.id, "role": made.record.role, "secret": made.secret})),
    )
        .into_response())
}

//! `/v1/secrets`: the encrypted store of the upstreams' real credentials, which the gateway
//! injects into forwarded requests so that agents never hold them.
//!
//! A value is sealed under the master key with the associated data `secret:<name>` (so a sealed
//! value moved to another name does not open) and is never shown back: the API answers with the
//! name, description and times only, and audit events name the secret, never its value. Only
//! [`reveal`] opens a value, for the gateway.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use mandate_core::audit::{Decision, NewEvent};
use mandate_store::{Op, OpOutput, SecretInfo, StoreError, StoredSecret};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::admin::auth::Admin;
use crate::admin::body::JsonBody;
use crate::error::ApiError;
use crate::state::AppState;

/// The longest value, in bytes.
pub const MAX_VALUE_BYTES: usize = 8192;
/// The longest description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 512;

/// Body of `PUT /v1/secrets/{name}`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretRequest {
    /// The value (1–8192 bytes). Stored sealed; never shown back.
    pub value: String,
    /// What it is for (replaces the current description; omitted clears it).
    #[serde(default)]
    pub description: Option<String>,
}

impl std::fmt::Debug for SecretRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretRequest")
            .field("value", &"…")
            .field("description", &self.description)
            .finish()
    }
}

impl Drop for SecretRequest {
    fn drop(&mut self) {
        wipe(&mut self.value);
    }
}

/// A secret's plaintext value, opened by [`reveal`]. It has no `Display` or `Serialize`, and its
/// `Debug` shows nothing; its bytes are overwritten when it is dropped (best effort: the
/// `zeroize` crate is not a dependency of this crate).
pub struct SecretValue(String);

impl SecretValue {
    /// The value. Never log it, put it in an error, an audit event or an answer to a client:
    /// it goes only into the request forwarded to the upstream it belongs to.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretValue(…)")
    }
}

impl Drop for SecretValue {
    fn drop(&mut self) {
        wipe(&mut self.0);
    }
}

/// Overwrites a string's bytes with zeros before its buffer is freed (best effort).
fn wipe(s: &mut String) {
    let mut bytes = std::mem::take(s).into_bytes();
    bytes.fill(0);
    std::hint::black_box(&bytes);
}

/// Why [`reveal`] could not give a value. Messages name the secret, never its value.
#[derive(Debug, thiserror::Error)]
pub enum RevealError {
    /// No secret has this name.
    #[error("secret `{0}` not found")]
    NotFound(String),
    /// The sealed value does not open under this master key and name (wrong key, or a value
    /// moved from another name).
    #[error("secret `{0}` does not open")]
    Unseal(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The associated data a secret's value is sealed with: its name.
fn aad(name: &str) -> Vec<u8> {
    format!("secret:{name}").into_bytes()
}

/// Opens the value of secret `name`, for the gateway to inject into the request it forwards.
///
/// The value must never be logged, written to the audit log, put in an error, or returned to a
/// client (an agent least of all): the point of the store is that agents never hold it.
pub async fn reveal(state: &AppState, name: &str) -> Result<SecretValue, RevealError> {
    let stored = state
        .store
        .secret(name)
        .await?
        .ok_or_else(|| RevealError::NotFound(name.to_owned()))?;
    let mut opened = state
        .master
        .open(&stored.sealed, &aad(name), &format!("secret:{name}"))
        .map_err(|_| RevealError::Unseal(name.to_owned()))?;
    // Move the bytes out of the zeroizing buffer (it is left empty) into the value, which wipes
    // them when dropped.
    let bytes = std::mem::take(&mut *opened);
    match String::from_utf8(bytes) {
        Ok(text) => Ok(SecretValue(text)),
        Err(e) => {
            let mut bytes = e.into_bytes();
            bytes.fill(0);
            std::hint::black_box(&bytes);
            Err(RevealError::Unseal(name.to_owned()))
        }
    }
}

/// Whether `name` fits `[a-z0-9][a-z0-9._-]{0,62}`.
pub fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    let lead = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty()
        && b.len() <= 63
        && b.first().is_some_and(lead)
        && b.iter().all(|c| lead(c) || matches!(c, b'.' | b'_' | b'-'))
}

fn check_name(name: &str) -> Result<(), ApiError> {
    if valid_name(name) {
        Ok(())
    } else {
        let shown: String = name.chars().take(80).collect();
        Err(ApiError::bad_request(format!(
            "secret name `{shown}` must be 1–63 characters of `a-z`, `0-9`, `.`, `_` and `-`, \
             starting with a letter or digit"
        )))
    }
}

fn info_json(s: &SecretInfo) -> Value {
    json!({
        "name": s.name,
        "description": s.description,
        "created_at": s.created_at,
        "updated_at": s.updated_at,
    })
}

fn event(kind: &str, admin: &Admin, name: &str, detail: Value) -> NewEvent {
    NewEvent {
        kind: kind.into(),
        action: Some(kind.into()),
        resource: Some(format!("secret:{name}")),
        decision: Some(Decision::Info),
        reason: format!("by {}", admin.label()),
        detail: detail.to_string(),
        ..Default::default()
    }
}

/// Stores `value` as secret `name` on behalf of `by` (e.g. `system:dev` for the sample CRM's
/// key in `--dev`), with its `secret.set` audit event.
pub async fn store_secret(
    state: &AppState,
    name: &str,
    value: &str,
    description: &str,
    by: &str,
) -> Result<(), ApiError> {
    let sealed = state
        .master
        .seal(value.as_bytes(), &aad(name))
        .map_err(|_| ApiError::server_error())?;
    let now = state.clock.now();
    let stored = StoredSecret {
        name: name.to_owned(),
        sealed,
        description: Some(description.to_owned()),
        created_at: now,
        updated_at: now,
        created_by: by.to_owned(),
    };
    let ev = NewEvent {
        kind: "secret.set".into(),
        action: Some("secret.set".into()),
        resource: Some(format!("secret:{name}")),
        decision: Some(Decision::Info),
        reason: format!("by {by}"),
        detail: json!({"description": description}).to_string(),
        ..Default::default()
    };
    state
        .store
        .commit(vec![Op::PutSecret(stored), Op::Audit(ev)])
        .await?;
    Ok(())
}

/// `GET /v1/secrets` (admin or auditor): names, descriptions and times; never values.
pub async fn list(
    State(state): State<Arc<AppState>>,
    _admin: Admin,
) -> Result<Json<Value>, ApiError> {
    let secrets = state.store.secrets().await?;
    Ok(Json(
        json!({ "secrets": secrets.iter().map(info_json).collect::<Vec<_>>() }),
    ))
}

/// `PUT /v1/secrets/{name}` (admin): seals and stores the value; 201 if the name is new, 200 if
/// it replaced a value. The answer never holds the value.
pub async fn put(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<SecretRequest>,
) -> Result<Response, ApiError> {
    admin.require_admin()?;
    check_name(&name)?;
    if body.value.is_empty() || body.value.len() > MAX_VALUE_BYTES {
        return Err(ApiError::bad_request(format!(
            "`value` must be 1–{MAX_VALUE_BYTES} bytes"
        )));
    }
    let description = body.description.clone().filter(|d| !d.is_empty());
    if let Some(d) = &description
        && (d.chars().count() > MAX_DESCRIPTION_CHARS || d.chars().any(char::is_control))
    {
        return Err(ApiError::bad_request(format!(
            "`description` must be at most {MAX_DESCRIPTION_CHARS} characters, without control characters"
        )));
    }
    let sealed = state
        .master
        .seal(body.value.as_bytes(), &aad(&name))
        .map_err(|e| {
            tracing::error!(error = %e, secret = %name, "sealing a secret failed");
            ApiError::server_error()
        })?;
    drop(body);
    let now = state.clock.now();
    let stored = StoredSecret {
        name: name.clone(),
        sealed,
        description: description.clone(),
        created_at: now,
        updated_at: now,
        created_by: admin.label(),
    };
    let ev = event(
        "secret.set",
        &admin,
        &name,
        json!({"description": description}),
    );
    let out = state
        .store
        .commit(vec![Op::PutSecret(stored), Op::Audit(ev)])
        .await?;
    let replaced = matches!(out.first(), Some(OpOutput::SecretPut { replaced: true }));
    let info = state
        .store
        .secret(&name)
        .await?
        .map(|s| SecretInfo {
            name: s.name,
            description: s.description,
            created_at: s.created_at,
            updated_at: s.updated_at,
            created_by: s.created_by,
        })
        .ok_or_else(|| ApiError::not_found(format!("secret `{name}` not found")))?;
    let status = if replaced {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(info_json(&info))).into_response())
}

/// `DELETE /v1/secrets/{name}` (admin): 204, or 404 if there is no such secret.
pub async fn delete(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    admin.require_admin()?;
    check_name(&name)?;
    let ev = event("secret.delete", &admin, &name, json!({}));
    state
        .store
        .commit(vec![Op::DeleteSecret { name: name.clone() }, Op::Audit(ev)])
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

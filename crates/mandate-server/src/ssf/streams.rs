//! The status endpoint (`GET`/`POST /ssf/status`), the verification endpoint
//! (`POST /ssf/verify`) and the subject endpoints (`POST /ssf/subjects:add`,
//! `POST /ssf/subjects:remove`), SSF 1.0 §7.1.2–§7.1.4.

use std::sync::Arc;

use axum::Extension;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use mandate_store::{Op, SsfSet};
use serde::Deserialize;
use serde_json::{Value, json};

use super::config::{audit, find, parse_body, short, stream_id_param};
use super::set::{self, Event};
use super::{DISABLED, ENABLED, PAUSED, no_store};
use crate::admin::auth::Admin;
use crate::app::RequestId;
use crate::error::ApiError;
use crate::state::AppState;

/// Longest `reason` or `state` kept.
const MAX_TEXT: usize = 1000;
/// Largest subject identifier accepted (serialized bytes).
const MAX_SUBJECT: usize = 4096;
/// The most subjects a stream keeps removed.
const MAX_REMOVED: usize = 1000;

/// A SET for `event` on a stream, ready to queue.
pub fn make_set(issuer: &str, aud: &[String], now: i64, event: &Event) -> Result<SsfSet, ApiError> {
    let jti = mandate_token::random_id::<16>().map_err(|_| ApiError::server_error())?;
    let claims = set::claims(issuer, aud, &jti, now, event).to_string();
    Ok(SsfSet { jti, claims })
}

/// `GET /ssf/status?stream_id=`: the stream's status, with Mandate's delivery facts: `queued`
/// (SETs waiting) and `last_error` (the last failed delivery, if the last attempt failed).
pub async fn read_status(
    State(state): State<Arc<AppState>>,
    _admin: Admin,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let id = stream_id_param(q.as_deref())?
        .ok_or_else(|| ApiError::bad_request("`stream_id` is required"))?;
    let s = find(&state, &id).await?;
    let mut v = json!({"stream_id": s.id, "status": s.status});
    if let Some(r) = &s.reason {
        v["reason"] = r.clone().into();
    }
    v["queued"] = state.store.ssf_outbox_len(&id).await?.into();
    if let Some(e) = &s.last_error {
        let mut err: Value = serde_json::from_str(e).unwrap_or_else(|_| json!({"err": e}));
        if let Some(at) = s.last_error_at {
            err["at"] = at.into();
        }
        v["last_error"] = err;
    }
    Ok(no_store((StatusCode::OK, Json(v)).into_response()))
}

/// Body of `POST /ssf/status`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusBody {
    /// The stream.
    pub stream_id: String,
    /// `enabled`, `paused` or `disabled`.
    pub status: String,
    /// Why.
    #[serde(default)]
    pub reason: Option<String>,
}

/// `POST /ssf/status`: enables, pauses or disables a stream. Pausing holds SETs; disabling
/// drops those waiting and those to come. A change to `enabled` or `paused` queues a
/// stream-updated event, delivered once the stream is enabled.
pub async fn update_status(
    State(state): State<Arc<AppState>>,
    Extension(rid): Extension<RequestId>,
    admin: Admin,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    admin.require_admin()?;
    let body: StatusBody = parse_body(&bytes)?;
    if ![ENABLED, PAUSED, DISABLED].contains(&body.status.as_str()) {
        return Err(ApiError::bad_request(format!(
            "`status` `{}` is not one of `enabled`, `paused`, `disabled`",
            short(&body.status)
        )));
    }
    if body.reason.as_ref().is_some_and(|r| r.len() > MAX_TEXT) {
        return Err(ApiError::bad_request(format!(
            "`reason` is longer than {MAX_TEXT} bytes"
        )));
    }
    let _guard = state.ssf.manage().await;
    let current = find(&state, &body.stream_id).await?;
    let now = state.clock.now();
    let mut next = current.clone();
    next.status = body.status.clone();
    next.reason = body.reason.clone();
    next.updated_at = now;
    let mut ops = vec![Op::UpdateSsfStream(Box::new(next.clone()))];
    if next.status != current.status {
        if next.status == DISABLED {
            ops.push(Op::PurgeSsfOutbox {
                stream: next.id.clone(),
            });
        } else {
            let ev = set::stream_updated_event(&next.id, &next.status, next.reason.as_deref());
            ops.push(Op::EnqueueSsf {
                stream: next.id.clone(),
                sets: vec![make_set(&state.issuer, &next.aud, now, &ev)?],
                cursor: None,
                at: now,
            });
        }
    }
    ops.push(audit(
        "ssf.stream.status",
        &next.id,
        &admin,
        &rid,
        json!({"from": current.status, "to": next.status, "reason": next.reason}),
    ));
    state.store.commit(ops).await?;
    state.ssf.streams_changed();
    state.ssf.queued(&next.id);
    let mut v = json!({"stream_id": next.id, "status": next.status});
    if let Some(r) = &next.reason {
        v["reason"] = r.clone().into();
    }
    Ok(no_store((StatusCode::OK, Json(v)).into_response()))
}

/// Body of `POST /ssf/verify`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyBody {
    /// The stream.
    pub stream_id: String,
    /// Echoed in the verification event.
    #[serde(default)]
    pub state: Option<String>,
}

/// `POST /ssf/verify`: queues a verification event on the stream (204). At most one request per
/// `min_verification_interval` (429 with `Retry-After` otherwise).
pub async fn verify(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    admin.require_admin()?;
    let body: VerifyBody = parse_body(&bytes)?;
    if body.state.as_ref().is_some_and(|s| s.len() > MAX_TEXT) {
        return Err(ApiError::bad_request(format!(
            "`state` is longer than {MAX_TEXT} bytes"
        )));
    }
    let _guard = state.ssf.manage().await;
    let s = find(&state, &body.stream_id).await?;
    if s.status == DISABLED {
        return Err(ApiError::bad_request(format!(
            "stream `{}` is disabled; enable it before asking for a verification event",
            short(&s.id)
        )));
    }
    let now = state.clock.now();
    if let Err(wait) = state.ssf.verification_allowed(&s.id, now) {
        let mut resp = ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            code: "too_many_requests",
            message: format!(
                "a verification event was requested less than {} s ago; retry in {wait} s",
                super::MIN_VERIFICATION_INTERVAL
            ),
        }
        .into_response();
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(wait));
        return Ok(resp);
    }
    let ev = set::verification_event(&s.id, body.state.as_deref());
    let one = make_set(&state.issuer, &s.aud, now, &ev)?;
    state
        .store
        .commit(vec![Op::EnqueueSsf {
            stream: s.id.clone(),
            sets: vec![one],
            cursor: None,
            at: now,
        }])
        .await?;
    state.ssf.queued(&s.id);
    Ok(no_store(StatusCode::NO_CONTENT.into_response()))
}

/// Body of `POST /ssf/subjects:add` and `/ssf/subjects:remove`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubjectBody {
    /// The stream.
    pub stream_id: String,
    /// A subject identifier (RFC 9493, or SSF `complex`).
    pub subject: Value,
    /// Whether the receiver verified the subject (add only; recorded nowhere).
    #[serde(default)]
    pub verified: Option<bool>,
}

fn checked_subject(body: &SubjectBody) -> Result<(), ApiError> {
    if body.subject.to_string().len() > MAX_SUBJECT {
        return Err(ApiError::bad_request(format!(
            "`subject` is larger than {MAX_SUBJECT} bytes"
        )));
    }
    set::valid_subject(&body.subject).map_err(ApiError::bad_request)
}

/// `POST /ssf/subjects:add` (200): every subject is in a stream by default
/// (`default_subjects: ALL`), so adding one only undoes an earlier removal.
pub async fn add_subject(
    State(state): State<Arc<AppState>>,
    Extension(rid): Extension<RequestId>,
    admin: Admin,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    subjects(state, rid, admin, bytes, true).await
}

/// `POST /ssf/subjects:remove` (204): no more events whose subject matches this one.
pub async fn remove_subject(
    State(state): State<Arc<AppState>>,
    Extension(rid): Extension<RequestId>,
    admin: Admin,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    subjects(state, rid, admin, bytes, false).await
}

async fn subjects(
    state: Arc<AppState>,
    rid: RequestId,
    admin: Admin,
    bytes: Bytes,
    add: bool,
) -> Result<Response, ApiError> {
    admin.require_admin()?;
    let body: SubjectBody = parse_body(&bytes)?;
    if !add && body.verified.is_some() {
        return Err(ApiError::bad_request(
            "`verified` applies to adding a subject only",
        ));
    }
    checked_subject(&body)?;
    let _guard = state.ssf.manage().await;
    let current = find(&state, &body.stream_id).await?;
    let mut next = current.clone();
    if add {
        next.removed_subjects.retain(|s| s != &body.subject);
    } else if !next.removed_subjects.contains(&body.subject) {
        if next.removed_subjects.len() >= MAX_REMOVED {
            return Err(ApiError::bad_request(format!(
                "stream `{}` already has {MAX_REMOVED} removed subjects",
                short(&next.id)
            )));
        }
        next.removed_subjects.push(body.subject.clone());
    }
    if next.removed_subjects != current.removed_subjects {
        next.updated_at = state.clock.now();
        let action = if add {
            "ssf.subject.add"
        } else {
            "ssf.subject.remove"
        };
        state
            .store
            .commit(vec![
                Op::UpdateSsfStream(Box::new(next.clone())),
                audit(
                    action,
                    &next.id,
                    &admin,
                    &rid,
                    json!({"subject": body.subject}),
                ),
            ])
            .await?;
        state.ssf.streams_changed();
    }
    let status = if add {
        StatusCode::OK
    } else {
        StatusCode::NO_CONTENT
    };
    Ok(no_store(status.into_response()))
}

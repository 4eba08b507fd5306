//! `GET /v1/audit` (query) and `GET /v1/audit/verify` (walk and check the whole hash chain).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use mandate_core::audit::ChainVerifier;
use mandate_store::AuditFilter;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::admin::audit_export::{self, Format};
use crate::admin::auth::Admin;
use crate::error::ApiError;
use crate::state::AppState;

/// Query of `GET /v1/audit`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// The user's subject.
    pub user: Option<String>,
    /// An agent anywhere in the chain.
    pub agent: Option<String>,
    /// A task id.
    pub task: Option<String>,
    /// An action (a scope, or an admin operation).
    pub action: Option<String>,
    /// A resource.
    pub resource: Option<String>,
    /// `allow`, `deny` or `info`.
    pub decision: Option<String>,
    /// An event kind, e.g. `token.exchange`.
    pub kind: Option<String>,
    /// From this time (RFC 3339, or a date `YYYY-MM-DD`), inclusive.
    pub since: Option<String>,
    /// Until this time, exclusive.
    pub until: Option<String>,
    /// One UTC day `YYYY-MM-DD` (its midnight to the next); not with `since`/`until`.
    pub on: Option<String>,
    /// `json` (default, `{"events": [...]}`), `jsonl` (one event per line) or `ocsf` (one OCSF
    /// API Activity event per line); the line forms answer `application/x-ndjson`.
    pub format: Option<String>,
    /// Events after this `seq`.
    pub after: Option<i64>,
    /// At most this many (default 100, at most 10 000).
    pub limit: Option<u32>,
    /// `asc` (default) or `desc`.
    pub order: Option<String>,
}

/// Normalises a time bound to the audit log's text form (`YYYY-MM-DDTHH:MM:SS.mmmZ`).
pub fn parse_time(s: &str, field: &str) -> Result<String, ApiError> {
    use time::format_description::well_known::Rfc3339;
    let bad = || {
        ApiError::bad_request(format!(
            "`{field}` must be an RFC 3339 time or a date `YYYY-MM-DD`, not `{}`",
            s.chars().take(40).collect::<String>()
        ))
    };
    let t = match time::OffsetDateTime::parse(s, &Rfc3339) {
        Ok(t) => t,
        Err(_) => {
            let date =
                time::Date::parse(s, time::macros::format_description!("[year]-[month]-[day]"))
                    .map_err(|_| bad())?;
            date.midnight().assume_utc()
        }
    };
    let ms = (t.unix_timestamp_nanos() / 1_000_000) as i64;
    Ok(mandate_core::time::rfc3339_millis(ms))
}

/// `GET /v1/audit`.
pub async fn query(
    State(state): State<Arc<AppState>>,
    _admin: Admin,
    Query(q): Query<AuditQuery>,
) -> Result<Response, ApiError> {
    let format = Format::parse(q.format.as_deref()).map_err(ApiError::bad_request)?;
    let (since, until) = match &q.on {
        Some(on) => {
            if q.since.is_some() || q.until.is_some() {
                return Err(ApiError::bad_request(
                    "`on` cannot be combined with `since` or `until`",
                ));
            }
            let (since, until) = audit_export::day_bounds(on).map_err(ApiError::bad_request)?;
            (Some(since), Some(until))
        }
        None => (
            q.since
                .as_deref()
                .map(|s| parse_time(s, "since"))
                .transpose()?,
            q.until
                .as_deref()
                .map(|s| parse_time(s, "until"))
                .transpose()?,
        ),
    };
    if let Some(d) = &q.decision
        && !matches!(d.as_str(), "allow" | "deny" | "info")
    {
        return Err(ApiError::bad_request(
            "`decision` must be `allow`, `deny` or `info`",
        ));
    }
    let newest_first = match q.order.as_deref() {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(_) => return Err(ApiError::bad_request("`order` must be `asc` or `desc`")),
    };
    let filter = AuditFilter {
        user: q.user,
        agent: q.agent,
        task: q.task,
        action: q.action,
        resource: q.resource,
        decision: q.decision,
        kind: q.kind,
        since,
        until,
        after_seq: q.after,
        limit: q.limit,
        newest_first,
    };
    let events = state.store.audit(&filter).await?;
    let line: fn(&mandate_core::audit::AuditEvent) -> String = match format {
        Format::Json => return Ok(Json(json!({ "events": events })).into_response()),
        Format::Jsonl => audit_export::jsonl_line,
        Format::Ocsf => audit_export::ocsf_line,
    };
    let mut body = String::new();
    for e in &events {
        body.push_str(&line(e));
        body.push('\n');
    }
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response())
}

/// Walks the whole chain from `seq` 1 through `store`.
pub async fn verify_store(
    store: &dyn mandate_store::Store,
) -> Result<mandate_core::audit::ChainReport, mandate_store::StoreError> {
    let mut v = ChainVerifier::default();
    let mut after = 0;
    loop {
        let page = store.audit_after(after, 5000).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for e in &page {
            v.push(e);
        }
        if v.is_broken() {
            break;
        }
    }
    Ok(v.report())
}

/// `GET /v1/audit/verify`.
pub async fn verify(
    State(state): State<Arc<AppState>>,
    _admin: Admin,
) -> Result<Json<Value>, ApiError> {
    let report = verify_store(state.store.as_ref()).await?;
    Ok(Json(json!({
        "ok": report.first_break.is_none(),
        "checked": report.checked,
        "head": report.head,
        "first_break": report.first_break,
    })))
}

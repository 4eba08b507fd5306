//! `GET /v1/audit` (query), `GET /v1/audit/verify` (walk and check the whole hash chain and
//! the signed checkpoints), `POST /v1/audit/checkpoint` (sign the chain head now), and audit
//! retention: `POST /v1/audit/archive` and `GET /v1/audit/segments` (see [`crate::archive`]).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use mandate_core::audit::{ChainReport, ChainVerifier};
use mandate_core::checkpoint::{CHECKPOINT_TYP, Checkpoint, CheckpointFinding};
use mandate_store::{AuditFilter, StoredSigningKey};
use mandate_token::verify::{KeySet, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::admin::audit_export::{self, Format};
use crate::admin::auth::Admin;
use crate::admin::body::JsonBody;
use crate::archive::{self, ArchiveSummary, Through};
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

/// The store filter `q` asks for, checked the way `GET /v1/audit` checks it (its `on`, `since`,
/// `until`, `decision` and `order`; `format` is the caller's). The console's audit search uses
/// it too, so both accept the same input and refuse it with the same messages.
pub fn audit_filter(q: AuditQuery) -> Result<AuditFilter, ApiError> {
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
    Ok(AuditFilter {
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
    })
}

/// `GET /v1/audit`.
pub async fn query(
    State(state): State<Arc<AppState>>,
    _admin: Admin,
    Query(q): Query<AuditQuery>,
) -> Result<Response, ApiError> {
    let format = Format::parse(q.format.as_deref()).map_err(ApiError::bad_request)?;
    let filter = audit_filter(q)?;
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

/// Walks the whole chain in `store` — from `seq` 1, or from the last archived segment's anchor
/// when events were archived — and compares it with the stored checkpoints whose signatures
/// verify with `keys` (those that do not are findings). Returns the report and the latest stored
/// checkpoint.
pub async fn verify_store(
    store: &dyn mandate_store::Store,
    keys: &KeySet,
) -> Result<(ChainReport, Option<Checkpoint>), mandate_store::StoreError> {
    let (report, latest, _) = verify_store_archived(store, keys).await?;
    Ok((report, latest))
}

/// [`verify_store`], also returning what was archived. The archive records are checked too
/// (contiguous from seq 1, each one's signed checkpoint: `segment` findings), checkpoints of a
/// segment's last event are compared with its record, and those of other archived events are
/// only counted (the segment files confirm them: `mandate audit verify --segment`).
pub async fn verify_store_archived(
    store: &dyn mandate_store::Store,
    keys: &KeySet,
) -> Result<(ChainReport, Option<Checkpoint>, ArchiveSummary), mandate_store::StoreError> {
    let stored = store.checkpoints().await?;
    let latest = stored.last().cloned();
    let records = store.audit_segments().await?;
    let (trusted, mut bad) = check_signatures(&stored, keys);
    bad.extend(archive::check_records(&records, keys));
    let split = archive::split_checkpoints(trusted, &records);
    bad.extend(split.findings);
    let (mut v, mut after) = match records.last() {
        Some(a) => (
            ChainVerifier::after_anchor(a.last_seq, a.last_hash.clone(), split.live),
            a.last_seq,
        ),
        None => (ChainVerifier::with_checkpoints(split.live), 0),
    };
    loop {
        // The whole log is walked even past a break: checkpoints need to know where it ends.
        let page = store.audit_after(after, 5000).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for e in &page {
            v.push(e);
        }
    }
    let mut report = v.report();
    report.checkpoints_checked += split.checked;
    report.checkpoint_findings.splice(0..0, bad);
    Ok((report, latest, ArchiveSummary::of(&records, split.archived)))
}

/// The answer of `GET /v1/audit/verify` (and of `mandate audit verify --data`).
pub fn report_json(report: &ChainReport, latest: Option<&Checkpoint>) -> Value {
    json!({
        "ok": report.is_ok(),
        "checked": report.checked,
        "head": report.head,
        "first_break": report.first_break,
        "checkpoints_checked": report.checkpoints_checked,
        "checkpoint_findings": report.checkpoint_findings,
        "latest_checkpoint": latest,
    })
}

/// The claims of a checkpoint JWS.
#[derive(Debug, Serialize, Deserialize)]
struct CheckpointClaims {
    iss: String,
    iat: i64,
    seq: i64,
    hash: String,
}

/// The public keys of every signing key in `stored`, retired ones included: a checkpoint stays
/// verifiable long after its key stopped signing tokens.
pub fn stored_key_set(stored: &[StoredSigningKey]) -> KeySet {
    KeySet::new(
        stored
            .iter()
            .filter_map(|k| serde_json::from_str::<Value>(&k.public_jwk).ok())
            .filter_map(|j| VerifyingKey::from_jwk(&j).ok())
            .collect(),
    )
}

/// Checks one checkpoint's JWS with `keys`; on success, the checkpoint as its signed claims
/// state it (the other columns of its row are not trusted).
fn verify_checkpoint(cp: &Checkpoint, keys: &KeySet) -> Result<Checkpoint, String> {
    // A checkpoint never expires: only its signature and type are checked.
    let claims = mandate_token::verify::verify_signature(&cp.jws, keys, Some(CHECKPOINT_TYP))
        .map_err(|e| e.to_string())?
        .claims;
    let c: CheckpointClaims = serde_json::from_value(claims)
        .map_err(|_| "its claims are not `iss`, `iat`, `seq`, `hash`".to_owned())?;
    Ok(Checkpoint {
        seq: c.seq,
        hash: c.hash,
        time: mandate_core::time::rfc3339_millis(c.iat.saturating_mul(1000)),
        jws: cp.jws.clone(),
    })
}

/// Splits stored checkpoints into those whose signatures verify (as their claims state them)
/// and findings for the others.
pub fn check_signatures(
    stored: &[Checkpoint],
    keys: &KeySet,
) -> (Vec<Checkpoint>, Vec<CheckpointFinding>) {
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for cp in stored {
        match verify_checkpoint(cp, keys) {
            Ok(c) => good.push(c),
            Err(why) => bad.push(CheckpointFinding {
                kind: "signature".into(),
                seq: cp.seq,
                problem: format!(
                    "checkpoint of seq {} (stored as signed at {}) does not verify: {why}",
                    cp.seq, cp.time
                ),
            }),
        }
    }
    (good, bad)
}

/// Signs and stores a checkpoint of the chain head, unless the log is empty or its head is
/// still `unless_seq`. Writes no audit event (that would move the head).
pub async fn write_checkpoint(
    state: &AppState,
    unless_seq: Option<i64>,
) -> Result<Option<Checkpoint>, ApiError> {
    let head = state
        .store
        .audit(&AuditFilter {
            limit: Some(1),
            newest_first: true,
            ..AuditFilter::default()
        })
        .await?;
    let Some(head) = head.into_iter().next() else {
        return Ok(None);
    };
    if unless_seq == Some(head.seq) {
        return Ok(None);
    }
    let now_ms = state.clock.now_ms();
    let claims = CheckpointClaims {
        iss: state.issuer.clone(),
        iat: now_ms.div_euclid(1000),
        seq: head.seq,
        hash: head.hash.clone(),
    };
    let jws = mandate_token::sign::sign_jwt(&state.keys.keys().current, CHECKPOINT_TYP, &claims)
        .map_err(|e| {
            tracing::error!(error = %e, "audit checkpoint could not be signed");
            ApiError::server_error()
        })?;
    let cp = Checkpoint {
        seq: head.seq,
        hash: head.hash,
        time: mandate_core::time::rfc3339_millis(now_ms),
        jws,
    };
    state
        .store
        .commit(vec![mandate_store::Op::Checkpoint(cp.clone())])
        .await?;
    Ok(Some(cp))
}

/// `POST /v1/audit/checkpoint`: signs and stores a checkpoint of the chain head now.
pub async fn checkpoint(
    State(state): State<Arc<AppState>>,
    admin: Admin,
) -> Result<Json<Value>, ApiError> {
    admin.require_admin()?;
    let cp = write_checkpoint(&state, None).await?;
    Ok(Json(json!({ "checkpoint": cp })))
}

/// `GET /v1/audit/verify`.
pub async fn verify(
    State(state): State<Arc<AppState>>,
    _admin: Admin,
) -> Result<Json<Value>, ApiError> {
    let stored = state.store.signing_keys().await?;
    let (report, latest, archived) =
        verify_store_archived(state.store.as_ref(), &stored_key_set(&stored)).await?;
    let mut body = report_json(&report, latest.as_ref());
    body["archived"] = json!(archived);
    Ok(Json(body))
}

// Audit retention

/// Body of `POST /v1/audit/archive`: exactly one of `before` and `through_seq`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ArchiveRequest {
    /// Archive every event older than this time (RFC 3339, or a date `YYYY-MM-DD`), except the
    /// newest event, which always stays.
    pub before: Option<String>,
    /// Archive the events through this `seq` (it must be before the chain head).
    pub through_seq: Option<i64>,
}

/// `POST /v1/audit/archive` (admin): moves the oldest events to segment files under
/// `<data_dir>/audit-archive/` and answers the new segments.
pub async fn archive(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    JsonBody(req): JsonBody<ArchiveRequest>,
) -> Result<Json<Value>, ApiError> {
    admin.require_admin()?;
    let through = match (req.before, req.through_seq) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "give `before` or `through_seq`, not both",
            ));
        }
        (None, None) => {
            return Err(ApiError::bad_request(
                "give `before` (a time) or `through_seq` (a seq): what to archive",
            ));
        }
        (Some(before), None) => Through::Before(parse_time(&before, "before")?),
        (None, Some(n)) if n < 1 => {
            return Err(ApiError::bad_request(format!(
                "`through_seq` must be at least 1, not `{n}`"
            )));
        }
        (None, Some(n)) => Through::Seq(n),
    };
    // In its own task: a client that gives up (or the request timeout) must not stop an archive
    // between writing its files and committing.
    let why = format!("by {}", admin.label());
    let worker = state.clone();
    let made = tokio::spawn(async move { archive::archive(&worker, through, &why).await })
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "audit archive task failed");
            ApiError::server_error()
        })??;
    let dir = &state.config.data_dir;
    Ok(Json(json!({
        "segments": made.iter().map(|r| archive::segment_json(dir, r)).collect::<Vec<_>>(),
        "archived": made.iter().map(|r| r.count).sum::<i64>(),
    })))
}

/// `GET /v1/audit/segments`: the archived segments, oldest first.
pub async fn segments(
    State(state): State<Arc<AppState>>,
    _admin: Admin,
) -> Result<Json<Value>, ApiError> {
    let records = state.store.audit_segments().await?;
    let dir = &state.config.data_dir;
    Ok(Json(json!({
        "segments": records.iter().map(|r| archive::segment_json(dir, r)).collect::<Vec<_>>(),
        "dir": dir.join(archive::ARCHIVE_DIR),
    })))
}

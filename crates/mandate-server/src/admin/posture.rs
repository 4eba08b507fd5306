//! `GET /v1/posture`: the inventory, findings and blast radius of this deployment (SPEC §8), for
//! an `admin` or `auditor` credential; and `/v1/reviews`: access reviews (issue 7).
//!
//! A review round is opened by an admin (`POST /v1/reviews`); each item is answered by the
//! agent's owner with their own identity provider token (`POST /v1/reviews/{id}/attest` or
//! `…/remove`) — an admin credential is refused, as for approvals, because an access review is a
//! person vouching for an agent.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use mandate_core::posture::ReviewStatus;
use mandate_store::ReviewFilter;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::admin::approvals::{Human, Viewer};
use crate::admin::auth::Admin;
use crate::admin::body::{JsonBody, OptionalJsonBody};
use crate::app::RequestId;
use crate::error::ApiError;
use crate::posture::{
    self, Answer, DEFAULT_DUE_DAYS, MAX_DAYS, MAX_DUE_DAYS, Options, review_view,
};
use crate::state::AppState;

fn short(s: &str) -> String {
    s.chars().take(40).collect()
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(q)| q)
        .map_err(|e| ApiError::bad_request(format!("query does not fit: {}", e.body_text())))
}

fn days(value: Option<&str>, name: &str, default: i64, max: i64) -> Result<i64, ApiError> {
    match value {
        None => Ok(default),
        Some(s) => s
            .parse::<i64>()
            .ok()
            .filter(|d| (1..=max).contains(d))
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "`{name}` must be a whole number of days from 1 to {max}, not `{}`",
                    short(s)
                ))
            }),
    }
}

/// Query of `GET /v1/posture`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PostureQuery {
    /// A ceiling pattern no token held in this many days is unused (1–3650, default 30).
    pub unused_days: Option<String>,
    /// A key older than this many days is old (1–3650, default 90).
    pub key_age_days: Option<String>,
}

/// `GET /v1/posture`.
pub async fn report(
    State(state): State<Arc<AppState>>,
    _admin: Admin,
    q: Result<Query<PostureQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let q = query(q)?;
    let defaults = Options::default();
    let opts = Options {
        unused_days: days(
            q.unused_days.as_deref(),
            "unused_days",
            defaults.unused_days,
            MAX_DAYS,
        )?,
        key_max_age_days: days(
            q.key_age_days.as_deref(),
            "key_age_days",
            defaults.key_max_age_days,
            MAX_DAYS,
        )?,
    };
    Ok(Json(posture::report(&state, opts).await?))
}

/// Body of `POST /v1/reviews`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReviewRound {
    /// Days until the owners' answers are due (1–365, default 14); an unanswered review past
    /// it is a posture finding.
    #[serde(default)]
    pub due_days: Option<i64>,
}

/// `POST /v1/reviews`: opens a review item per active agent for its owner.
pub async fn start(
    State(state): State<Arc<AppState>>,
    Extension(rid): Extension<RequestId>,
    admin: Admin,
    OptionalJsonBody(body): OptionalJsonBody<ReviewRound>,
) -> Result<Response, ApiError> {
    admin.require_admin()?;
    let due_days = body.due_days.unwrap_or(DEFAULT_DUE_DAYS);
    if !(1..=MAX_DUE_DAYS).contains(&due_days) {
        return Err(ApiError::bad_request(format!(
            "`due_days` must be a whole number of days from 1 to {MAX_DUE_DAYS}, not `{due_days}`"
        )));
    }
    let round = posture::open_round(&state, due_days, &admin.label(), Some(rid.0)).await?;
    let now = state.clock.now();
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "campaign": round.campaign,
            "reviews": round.opened.iter().map(|r| review_view(r, now)).collect::<Vec<_>>(),
            "skipped": round.skipped.iter()
                .map(|(agent, why)| json!({"agent": agent, "reason": why}))
                .collect::<Vec<_>>(),
        })),
    )
        .into_response())
}

/// Query of `GET /v1/reviews`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ReviewQuery {
    /// `open`, `overdue` (open past its due date), `attested` or `narrowed`.
    pub status: Option<String>,
    /// The agent.
    pub agent: Option<String>,
    /// The owner asked.
    pub owner: Option<String>,
    /// The round (`rc-…`).
    pub campaign: Option<String>,
    /// At most this many (default 100, at most 1000).
    pub limit: Option<String>,
}

/// `GET /v1/reviews`: newest first. An `admin` or `auditor` credential sees every review; a
/// human (their identity provider token) sees the reviews they are asked to answer.
pub async fn list(
    State(state): State<Arc<AppState>>,
    viewer: Viewer,
    q: Result<Query<ReviewQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let q = query(q)?;
    let (status, overdue) = match q.status.as_deref() {
        None => (None, false),
        Some("overdue") => (Some(ReviewStatus::Open), true),
        Some(s) => match ReviewStatus::parse(s) {
            Some(st) => (Some(st), false),
            None => {
                return Err(ApiError::bad_request(format!(
                    "`status` must be `open`, `overdue`, `attested` or `narrowed`, not `{}`",
                    short(s)
                )));
            }
        },
    };
    let limit = match q.limit.as_deref() {
        None => 100,
        Some(s) => s
            .parse::<u32>()
            .ok()
            .filter(|l| (1..=1000).contains(l))
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "`limit` must be a number from 1 to 1000, not `{}`",
                    short(s)
                ))
            })?,
    };
    let owner = match &viewer {
        Viewer::Admin(_) => q.owner,
        Viewer::Human(u) => {
            if q.owner.as_ref().is_some_and(|o| *o != u.subject) {
                return Err(ApiError::forbidden(
                    "a human sees only the reviews they are asked to answer; leave `owner` out",
                ));
            }
            Some(u.subject.clone())
        }
    };
    let filter = ReviewFilter {
        status,
        agent: q.agent,
        owner,
        campaign: q.campaign,
        limit: Some(if overdue { 1000 } else { limit }),
    };
    let now = state.clock.now();
    let found = state.store.reviews(&filter).await?;
    let shown: Vec<Value> = found
        .iter()
        .filter(|r| !overdue || r.is_overdue(now))
        .take(usize::try_from(limit).unwrap_or(usize::MAX))
        .map(|r| review_view(r, now))
        .collect();
    Ok(Json(json!({ "reviews": shown })))
}

/// Body of `POST /v1/reviews/{id}/attest`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReviewAttestation {
    /// Why the agent still needs its ceiling (recorded and audited).
    #[serde(default)]
    pub note: Option<String>,
}

/// Body of `POST /v1/reviews/{id}/remove`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReviewRemoval {
    /// Ceiling patterns to remove, as written in the ceiling.
    pub scopes: Vec<String>,
    /// Why (recorded and audited).
    #[serde(default)]
    pub note: Option<String>,
}

/// `POST /v1/reviews/{id}/attest`: the owner confirms the agent still needs its whole ceiling.
pub async fn attest(
    State(state): State<Arc<AppState>>,
    Extension(rid): Extension<RequestId>,
    who: Human,
    Path(id): Path<String>,
    OptionalJsonBody(body): OptionalJsonBody<ReviewAttestation>,
) -> Result<Json<Value>, ApiError> {
    let r = posture::answer(&state, &id, &who.0, Answer::Attest, body.note, Some(rid.0)).await?;
    Ok(Json(review_view(&r, state.clock.now())))
}

/// `POST /v1/reviews/{id}/remove`: the owner removes scopes; the ceiling narrows at once.
pub async fn remove(
    State(state): State<Arc<AppState>>,
    Extension(rid): Extension<RequestId>,
    who: Human,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<ReviewRemoval>,
) -> Result<Json<Value>, ApiError> {
    let r = posture::answer(
        &state,
        &id,
        &who.0,
        Answer::Remove(body.scopes),
        body.note,
        Some(rid.0),
    )
    .await?;
    Ok(Json(review_view(&r, state.clock.now())))
}

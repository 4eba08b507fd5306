//! `/v1/approvals`: list, show, approve, deny (SPEC §6, issue 6).
//!
//! Listing and showing accept an admin credential (`admin` or `auditor`) or a human's own
//! identity-provider token; a human sees the approvals they may decide and those made on their
//! behalf. Deciding needs a human: `Authorization: Bearer <user token>` from a trusted issuer —
//! an admin credential is refused, because separation of duties is about people.

use std::sync::Arc;

use axum::Extension;
use axum::Json;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::header;
use axum::http::request::Parts;
use mandate_core::approval::Status;
use mandate_core::chain::DelegationChain;
use mandate_core::ids::UserPrincipal;
use mandate_core::revocation::TokenFacts;
use mandate_store::ApprovalFilter;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::admin::auth::{Admin, CREDENTIAL_PREFIX, Role, admin_from_bearer};
use crate::admin::body::OptionalJsonBody;
use crate::app::RequestId;
use crate::approvals::{self, MAX_REASON_BYTES, Ruling};
use crate::error::ApiError;
use crate::state::AppState;

/// A human, proven by their identity provider's token.
#[derive(Debug, Clone)]
pub struct Human(pub UserPrincipal);

fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

async fn human(parts: &Parts, state: &AppState) -> Result<Human, ApiError> {
    let Some(token) = bearer(parts) else {
        return Err(ApiError::unauthorized(
            "credentials required: send `Authorization: Bearer <your identity provider token>` \
             (an admin or auditor credential may also list and show approvals, but not decide)",
        ));
    };
    if token.starts_with(CREDENTIAL_PREFIX) {
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if admin_from_bearer(state, value).is_none() {
            return Err(ApiError::unauthorized("admin credential is not valid"));
        }
        return Err(admin_cannot_decide());
    }
    if token.len() > 16 * 1024 {
        return Err(ApiError::unauthorized("the user token is too long"));
    }
    let now = state.clock.now();
    let (user, claims) = state
        .idps
        .verify_user(token, now, state.config.tokens.leeway)
        .await
        .map_err(|e| ApiError::unauthorized(format!("the user token is not valid: {e}")))?;
    // A user revoked after their identity provider token was issued cannot use it to decide,
    // exactly as they can no longer exchange it (without `iat` or `nbf` the revocation applies).
    let iat = ["iat", "nbf"]
        .iter()
        .find_map(|c| claims.get(*c).and_then(Value::as_i64))
        .unwrap_or(i64::MIN);
    let chain = DelegationChain::new(Vec::new());
    let facts = TokenFacts {
        jti: "",
        task: "",
        user: Some(&user.subject),
        chain: &chain,
        iat,
    };
    if let Some(r) = state.revocations.with(|idx| idx.check(&facts)) {
        return Err(ApiError::unauthorized(format!(
            "{} `{}` has been revoked",
            r.kind.as_str(),
            r.id
        )));
    }
    Ok(Human(user))
}

fn admin_cannot_decide() -> ApiError {
    ApiError::forbidden(
        "an admin credential cannot decide an approval: the approver must be a human, \
         proven by their own identity provider token",
    )
}

impl FromRequestParts<Arc<AppState>> for Human {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        human(parts, state).await
    }
}

/// Who is looking: an admin or auditor credential, or a human.
#[derive(Debug, Clone)]
pub enum Viewer {
    /// An `admin` or `auditor` credential: sees every approval.
    Admin(Admin),
    /// A human: sees what they may decide and what was asked on their behalf.
    Human(UserPrincipal),
}

impl FromRequestParts<Arc<AppState>> for Viewer {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if let Some(admin) = admin_from_bearer(state, value) {
            return match admin.role {
                Role::Admin | Role::Auditor => Ok(Viewer::Admin(admin)),
                other => Err(ApiError::forbidden(format!(
                    "this credential has the `{}` role; approvals need `admin`, `auditor` or a \
                     human's token",
                    other.as_str()
                ))),
            };
        }
        if bearer(parts).is_some_and(|t| t.starts_with(CREDENTIAL_PREFIX)) {
            return Err(ApiError::unauthorized("admin credential is not valid"));
        }
        human(parts, state).await.map(|h| Viewer::Human(h.0))
    }
}

impl Viewer {
    fn may_see(&self, state: &AppState, a: &mandate_core::approval::Approval) -> bool {
        match self {
            Viewer::Admin(_) => true,
            Viewer::Human(u) => {
                a.user.as_deref() == Some(u.subject.as_str())
                    || approvals::is_approver_for(state, &a.agent, u)
            }
        }
    }
}

/// Query of `GET /v1/approvals`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// `pending` (undecided and still decidable), `expired` (undecided past its expiry),
    /// `approved` or `denied`.
    pub status: Option<String>,
    /// The agent.
    pub agent: Option<String>,
    /// The user on whose behalf.
    pub user: Option<String>,
    /// `escalation`, `held_write` or `agent_change`.
    pub kind: Option<String>,
    /// At most this many (default 100, at most 1000).
    pub limit: Option<u32>,
}

/// The most approvals one listing shows.
const MAX_LIST: u32 = 1000;
/// How many one listing shows when `limit` is not given.
const DEFAULT_LIST: u32 = 100;

/// `GET /v1/approvals`: newest first.
pub async fn list(
    State(state): State<Arc<AppState>>,
    viewer: Viewer,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    // `expired` is a pending approval past its expiry; `pending` leaves those out.
    let (status, expired) = match q.status.as_deref() {
        None => (None, None),
        Some("expired") => (Some(Status::Pending), Some(true)),
        Some(s) => match Status::parse(s) {
            Some(Status::Pending) => (Some(Status::Pending), Some(false)),
            Some(other) => (Some(other), None),
            None => {
                return Err(ApiError::bad_request(format!(
                    "`status` must be `pending`, `expired`, `approved` or `denied`, not `{}`",
                    s.chars().take(40).collect::<String>()
                )));
            }
        },
    };
    if let Some(k) = q.kind.as_deref()
        && !matches!(k, "escalation" | "held_write" | "agent_change")
    {
        return Err(ApiError::bad_request(format!(
            "`kind` must be `escalation`, `held_write` or `agent_change`, not `{}`",
            k.chars().take(40).collect::<String>()
        )));
    }
    let limit = q.limit.unwrap_or(DEFAULT_LIST).min(MAX_LIST);
    // What the store cannot filter (expiry, what a human may see) is filtered here, so the
    // store is asked for as many as a listing may hold and the limit applies afterwards.
    let filtered_here = expired.is_some() || matches!(viewer, Viewer::Human(_));
    let filter = ApprovalFilter {
        status,
        agent: q.agent,
        user: q.user,
        kind: q.kind,
        undispatched: false,
        limit: Some(if filtered_here { MAX_LIST } else { limit }),
    };
    let now = state.clock.now();
    let found = state.store.approvals(&filter).await?;
    let shown: Vec<Value> = found
        .iter()
        .filter(|s| expired.is_none_or(|e| s.approval.is_expired(now) == e))
        .filter(|s| viewer.may_see(&state, &s.approval))
        .take(usize::try_from(limit).unwrap_or(usize::MAX))
        .map(|s| approvals::view(&state, s, now))
        .collect();
    Ok(Json(json!({ "approvals": shown })))
}

/// `GET /v1/approvals/{id}`.
pub async fn show(
    State(state): State<Arc<AppState>>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let not_found = || {
        ApiError::not_found(format!(
            "no approval `{}`",
            id.chars().take(64).collect::<String>()
        ))
    };
    let stored = state.store.approval(&id).await?.ok_or_else(not_found)?;
    if !viewer.may_see(&state, &stored.approval) {
        return Err(not_found());
    }
    Ok(Json(approvals::view(&state, &stored, state.clock.now())))
}

/// Body of `POST /v1/approvals/{id}/approve` and `…/deny`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionBody {
    /// Why, in the decider's words (recorded and audited).
    #[serde(default)]
    pub reason: Option<String>,
}

/// Who tries to decide: a human, or an admin credential — which is refused, and the attempt
/// audited on the approval. A missing or invalid bearer is a plain `401`, not audited.
#[derive(Debug, Clone)]
pub enum Decider {
    /// A human, proven by their identity provider's token.
    Human(UserPrincipal),
    /// A valid admin credential of any role.
    Admin(Admin),
}

impl FromRequestParts<Arc<AppState>> for Decider {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if let Some(admin) = admin_from_bearer(state, value) {
            return Ok(Decider::Admin(admin));
        }
        human(parts, state).await.map(|h| Decider::Human(h.0))
    }
}

async fn decide(
    state: &AppState,
    who: Decider,
    id: &str,
    approved: bool,
    body: DecisionBody,
    rid: &RequestId,
) -> Result<Json<Value>, ApiError> {
    let who = match who {
        Decider::Human(u) => u,
        Decider::Admin(admin) => {
            let verb = if approved { "approve" } else { "deny" };
            approvals::refuse_credential(state, id, &admin.label(), verb, Some(rid.0.clone()))
                .await?;
            return Err(admin_cannot_decide());
        }
    };
    let reason = body.reason.unwrap_or_default();
    if reason.len() > MAX_REASON_BYTES {
        return Err(ApiError::bad_request(format!(
            "`reason` is longer than {MAX_REASON_BYTES} bytes"
        )));
    }
    let ruling = Ruling {
        approved,
        reason,
        request_id: Some(rid.0.clone()),
    };
    let stored = approvals::decide(state, id, &who, ruling).await?;
    Ok(Json(approvals::view(state, &stored, state.clock.now())))
}

/// `POST /v1/approvals/{id}/approve`.
pub async fn approve(
    State(state): State<Arc<AppState>>,
    Extension(rid): Extension<RequestId>,
    who: Decider,
    Path(id): Path<String>,
    OptionalJsonBody(body): OptionalJsonBody<DecisionBody>,
) -> Result<Json<Value>, ApiError> {
    decide(&state, who, &id, true, body, &rid).await
}

/// `POST /v1/approvals/{id}/deny`.
pub async fn deny(
    State(state): State<Arc<AppState>>,
    Extension(rid): Extension<RequestId>,
    who: Decider,
    Path(id): Path<String>,
    OptionalJsonBody(body): OptionalJsonBody<DecisionBody>,
) -> Result<Json<Value>, ApiError> {
    decide(&state, who, &id, false, body, &rid).await
}

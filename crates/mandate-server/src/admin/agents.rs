//! `/v1/agents`: register, list, show, update, suspend, resume, retire; add and remove keys.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use mandate_core::agent::{Agent, AgentKey, AgentStatus, WorkloadBinding};
use mandate_core::approval::Ask;
use mandate_core::audit::{Decision, NewEvent};
use mandate_core::ids::AgentId;
use mandate_core::revocation::RevocationKind;
use mandate_core::scope::{PatternSet, ScopePattern};
use mandate_core::stage::Stage;
use mandate_store::{Op, StoredApproval};
use mandate_token::verify::VerifyingKey;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::admin::auth::Admin;
use crate::admin::body::JsonBody;
use crate::app::RequestId;
use crate::error::ApiError;
use crate::state::AppState;

/// Body of `POST /v1/agents`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAgent {
    /// Slug id, e.g. `support-v2`.
    pub id: String,
    /// Display name (default: the id).
    #[serde(default)]
    pub name: Option<String>,
    /// The accountable human (required).
    pub owner: String,
    /// What the agent is for.
    #[serde(default)]
    pub description: Option<String>,
    /// Scope patterns: the most it may ever hold.
    #[serde(default)]
    pub ceiling: Vec<String>,
    /// `observe` (default), `draft` or `execute`.
    #[serde(default)]
    pub max_stage: Option<String>,
    /// Labels policies can test (`principal.tags.contains("pii")`).
    #[serde(default)]
    pub tags: Vec<String>,
    /// Public JWKs, each with a `kid`.
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub keys: Vec<Value>,
    /// Why the agent needs ceiling patterns, by pattern (`{"tickets:*": "files tickets for
    /// customers"}`). A write-class pattern without one is a posture finding.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub justifications: BTreeMap<String, String>,
    /// Workload identities that prove the agent (`{"kind": "spiffe", "id": "spiffe://…"}`,
    /// `{"kind": "oidc", "issuer": "…", "subject": "…"}`).
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub workloads: Vec<WorkloadBinding>,
    /// Whether every token issued to the agent must be DPoP-bound (RFC 9449).
    #[serde(default)]
    pub require_dpop: bool,
}

/// Body of `PATCH /v1/agents/{id}`: the fields to change.
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentChange {
    /// New display name.
    #[serde(default)]
    pub name: Option<String>,
    /// New owner.
    #[serde(default)]
    pub owner: Option<String>,
    /// New description.
    #[serde(default)]
    pub description: Option<String>,
    /// New ceiling.
    #[serde(default)]
    pub ceiling: Option<Vec<String>>,
    /// New max stage.
    #[serde(default)]
    pub max_stage: Option<String>,
    /// New tags.
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    /// Why (recorded with the approval when the change needs one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub justification: Option<String>,
    /// Why the agent needs ceiling patterns, merged into what is recorded: a text records or
    /// replaces a pattern's justification, `null` or `""` forgets it. Each pattern must be one of
    /// the ceiling's (after this change). Never needs an approval by itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub justifications: Option<BTreeMap<String, Option<String>>>,
    /// New workload identities (replace the old ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub workloads: Option<Vec<WorkloadBinding>>,
    /// Whether tokens must be DPoP-bound from now on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_dpop: Option<bool>,
}

/// Body of `POST /v1/agents/{id}/keys`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    /// The public JWK, with a `kid`.
    #[schema(value_type = Object)]
    pub jwk: Value,
    /// When the key stops being accepted (seconds since the epoch).
    #[serde(default)]
    pub expires_at: Option<i64>,
}

fn owner(s: &str) -> Result<String, ApiError> {
    let s = s.trim();
    if s.is_empty() || s.len() > 256 {
        return Err(ApiError::bad_request(
            "`owner` is required: name the accountable human",
        ));
    }
    Ok(s.to_owned())
}

fn ceiling(items: &[String]) -> Result<PatternSet, ApiError> {
    if items.len() > 256 {
        return Err(ApiError::bad_request(
            "`ceiling` holds more than 256 scopes",
        ));
    }
    PatternSet::parse(items.iter().map(String::as_str))
        .map_err(|e| ApiError::bad_request(e.to_string()))
}

fn tags(items: &[String]) -> Result<Vec<String>, ApiError> {
    if items.len() > 32 || items.iter().any(|t| t.is_empty() || t.len() > 64) {
        return Err(ApiError::bad_request(
            "`tags` holds at most 32 tags of 1–64 characters",
        ));
    }
    let mut v = items.to_vec();
    v.sort();
    v.dedup();
    Ok(v)
}

fn workloads(items: &[WorkloadBinding]) -> Result<Vec<WorkloadBinding>, ApiError> {
    if items.len() > 32 {
        return Err(ApiError::bad_request(
            "`workloads` holds at most 32 workload identities",
        ));
    }
    for w in items {
        w.check().map_err(ApiError::bad_request)?;
    }
    let mut v = items.to_vec();
    v.dedup();
    Ok(v)
}

fn stage(s: Option<&str>, default: Stage) -> Result<Stage, ApiError> {
    s.map(|s| s.parse::<Stage>().map_err(ApiError::bad_request))
        .transpose()
        .map(|s| s.unwrap_or(default))
}

fn text(s: Option<&str>, field: &str, max: usize) -> Result<Option<String>, ApiError> {
    match s {
        Some(t) if t.len() > max => Err(ApiError::bad_request(format!(
            "`{field}` is longer than {max} characters"
        ))),
        other => Ok(other.map(str::to_owned)),
    }
}

/// Checks a JWK for registration: public, usable for signatures, with a `kid`.
pub fn agent_key(jwk: &Value, expires_at: Option<i64>, now: i64) -> Result<AgentKey, ApiError> {
    let kid = jwk
        .get("kid")
        .and_then(Value::as_str)
        .filter(|k| !k.is_empty() && k.len() <= 128)
        .ok_or_else(|| ApiError::bad_request("every key needs a `kid` of 1–128 characters"))?;
    VerifyingKey::from_jwk(jwk).map_err(|e| ApiError::bad_request(e.to_string()))?;
    if expires_at.is_some_and(|e| e <= now) {
        return Err(ApiError::bad_request(format!(
            "key `{kid}` would already be expired"
        )));
    }
    Ok(AgentKey {
        kid: kid.to_owned(),
        jwk: jwk.clone(),
        expires_at,
        created_at: now,
        revoked_at: None,
    })
}

/// Most justifications one request may record.
const MAX_JUSTIFICATIONS: usize = 256;
/// Longest justification, bytes.
const MAX_JUSTIFICATION_BYTES: usize = 1000;

/// The writes recording `changes` (pattern → why; `None` or blank forgets it) for `agent`, each
/// pattern checked to be one of its ceiling's.
fn justification_ops(
    agent: &Agent,
    changes: &BTreeMap<String, Option<String>>,
    by: &str,
    at: i64,
) -> Result<Vec<Op>, ApiError> {
    if changes.len() > MAX_JUSTIFICATIONS {
        return Err(ApiError::bad_request(format!(
            "`justifications` holds more than {MAX_JUSTIFICATIONS} patterns"
        )));
    }
    let mut ops = Vec::new();
    for (pattern, text) in changes {
        if !agent.ceiling.iter().any(|p| p.as_str() == pattern) {
            let shown: String = pattern.chars().take(64).collect();
            return Err(ApiError::bad_request(format!(
                "`justifications` names `{shown}`, which is not a pattern of the ceiling of \
                 agent `{}`",
                agent.id
            )));
        }
        let text = text.as_deref().map(str::trim).filter(|t| !t.is_empty());
        if text.is_some_and(|t| t.len() > MAX_JUSTIFICATION_BYTES) {
            return Err(ApiError::bad_request(format!(
                "the justification of `{pattern}` is longer than {MAX_JUSTIFICATION_BYTES} bytes"
            )));
        }
        ops.push(Op::SetJustification {
            agent: agent.id.as_str().to_owned(),
            pattern: pattern.clone(),
            text: text.map(str::to_owned),
            by: by.to_owned(),
            at,
        });
    }
    Ok(ops)
}

fn event(kind: &str, by: &str, agent: &str, detail: Value) -> NewEvent {
    NewEvent {
        kind: kind.into(),
        chain: vec![agent.to_owned()],
        action: Some(kind.into()),
        resource: Some(format!("agent:{agent}")),
        decision: Some(Decision::Info),
        reason: format!("by {by}"),
        detail: detail.to_string(),
        ..Default::default()
    }
}

/// `POST /v1/agents`.
pub async fn create(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    JsonBody(body): JsonBody<NewAgent>,
) -> Result<Response, ApiError> {
    admin.require_admin()?;
    let now = state.clock.now();
    let id = AgentId::parse(&body.id).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let mut keys = Vec::new();
    for jwk in &body.keys {
        let k = agent_key(jwk, None, now)?;
        if keys.iter().any(|x: &AgentKey| x.kid == k.kid) {
            return Err(ApiError::bad_request(format!(
                "key `{}` is listed twice",
                k.kid
            )));
        }
        keys.push(k);
    }
    let agent = Agent {
        name: text(body.name.as_deref(), "name", 200)?.unwrap_or_else(|| id.as_str().to_owned()),
        owner: owner(&body.owner)?,
        description: text(body.description.as_deref(), "description", 2000)?.unwrap_or_default(),
        ceiling: ceiling(&body.ceiling)?,
        tags: tags(&body.tags)?,
        max_stage: stage(body.max_stage.as_deref(), Stage::Observe)?,
        status: AgentStatus::Active,
        keys,
        workloads: workloads(&body.workloads)?,
        require_dpop: body.require_dpop,
        created_at: now,
        updated_at: now,
        id,
    };
    let justified: BTreeMap<String, Option<String>> = body
        .justifications
        .iter()
        .map(|(p, t)| (p.clone(), Some(t.clone())))
        .collect();
    let justify = justification_ops(&agent, &justified, &admin.label(), now)?;
    let mut detail = json!({"owner": agent.owner, "ceiling": agent.ceiling, "max_stage": agent.max_stage,
        "keys": agent.keys.iter().map(|k| &k.kid).collect::<Vec<_>>(),
        "workloads": agent.workloads, "require_dpop": agent.require_dpop});
    if !body.justifications.is_empty() {
        detail["justifications"] = json!(body.justifications);
    }
    let ev = event("agent.register", &admin.label(), agent.id.as_str(), detail);
    let id = agent.id.as_str().to_owned();
    let mut ops = vec![Op::InsertAgent(agent)];
    ops.extend(justify);
    ops.push(Op::Audit(ev));
    state.store.commit(ops).await.map_err(|e| match e {
        mandate_store::StoreError::Conflict(_) => {
            ApiError::conflict(format!("agent `{id}` already exists"))
        }
        other => other.into(),
    })?;
    let agent = state
        .directory
        .refresh(state.store.as_ref(), &id)
        .await?
        .ok_or_else(ApiError::server_error)?;
    Ok((StatusCode::CREATED, Json(agent.as_ref().clone())).into_response())
}

/// `GET /v1/agents`.
pub async fn list(State(state): State<Arc<AppState>>, _admin: Admin) -> Json<Value> {
    let agents: Vec<Agent> = state
        .directory
        .all()
        .iter()
        .map(|a| a.as_ref().clone())
        .collect();
    Json(json!({ "agents": agents }))
}

fn get_agent(state: &AppState, id: &str) -> Result<Arc<Agent>, ApiError> {
    state.directory.get(id).ok_or_else(|| {
        ApiError::not_found(format!(
            "agent `{}` not found",
            id.chars().take(64).collect::<String>()
        ))
    })
}

/// `GET /v1/agents/{id}`.
pub async fn show(
    State(state): State<Arc<AppState>>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<Agent>, ApiError> {
    Ok(Json(get_agent(&state, &id)?.as_ref().clone()))
}

/// `PATCH /v1/agents/{id}`. Widening the ceiling or raising `max_stage` needs a human's
/// approval when `approvals.agent_changes` is on (the default outside `--dev`): nothing changes
/// yet, and the answer is `202` with the approval. Narrowing applies at once.
pub async fn update(
    State(state): State<Arc<AppState>>,
    Extension(rid): Extension<RequestId>,
    admin: Admin,
    Path(id): Path<String>,
    JsonBody(change): JsonBody<AgentChange>,
) -> Result<Response, ApiError> {
    admin.require_admin()?;
    let before = get_agent(&state, &id)?;
    let after = changed(&state, &before, &change)?;
    // Checked now, so a bad one is refused before anything waits for an approval.
    let justify = match &change.justifications {
        Some(j) => justification_ops(&after, j, &admin.label(), after.updated_at)?,
        None => Vec::new(),
    };
    if needs_approval(&before, &after) && state.config.approvals.agent_changes.unwrap_or(true) {
        let justification =
            text(change.justification.as_deref(), "justification", 1000)?.unwrap_or_default();
        let ask = Ask::AgentChange {
            agent: id.clone(),
            ceiling: (after.ceiling != before.ceiling).then(|| {
                after
                    .ceiling
                    .iter()
                    .map(|p| p.as_str().to_owned())
                    .collect()
            }),
            max_stage: (after.max_stage != before.max_stage).then_some(after.max_stage),
        };
        let binding_message = change_message(&before, &after);
        let req = crate::approvals::Request {
            ask,
            user: None,
            chain: vec![id.clone()],
            agent: id.clone(),
            task: None,
            justification,
            binding_message,
            payload: serde_json::to_value(&change).map_err(|_| ApiError::server_error())?,
            request_id: Some(rid.0),
            requested_by: admin.label(),
        };
        let stored = crate::approvals::open(&state, req).await?;
        let view = crate::approvals::view(&state, &stored, state.clock.now());
        return Ok((
            StatusCode::ACCEPTED,
            Json(json!({"approval": view, "agent": before.as_ref()})),
        )
            .into_response());
    }
    let mut detail = update_detail(&before, &after);
    if let Some(j) = &change.justifications {
        detail["justifications"] = json!(j);
    }
    let ev = event("agent.update", &admin.label(), &id, detail);
    let mut ops = vec![Op::UpdateAgent(after)];
    ops.extend(justify);
    ops.push(Op::Audit(ev));
    state.store.commit(ops).await?;
    let agent = state
        .directory
        .refresh(state.store.as_ref(), &id)
        .await?
        .ok_or_else(ApiError::server_error)?;
    Ok(Json(agent.as_ref().clone()).into_response())
}

/// The agent after `change`, checked.
fn changed(state: &AppState, before: &Agent, change: &AgentChange) -> Result<Agent, ApiError> {
    if before.status == AgentStatus::Retired {
        return Err(ApiError::conflict(format!(
            "agent `{}` is retired and cannot change",
            before.id
        )));
    }
    let mut after = before.clone();
    if let Some(n) = text(change.name.as_deref(), "name", 200)? {
        after.name = n;
    }
    if let Some(o) = change.owner.as_deref() {
        after.owner = owner(o)?;
    }
    if let Some(d) = text(change.description.as_deref(), "description", 2000)? {
        after.description = d;
    }
    if let Some(c) = &change.ceiling {
        after.ceiling = ceiling(c)?;
    }
    if let Some(t) = &change.tags {
        after.tags = tags(t)?;
    }
    after.max_stage = stage(change.max_stage.as_deref(), before.max_stage)?;
    if let Some(w) = &change.workloads {
        after.workloads = workloads(w)?;
    }
    if let Some(d) = change.require_dpop {
        after.require_dpop = d;
    }
    after.updated_at = state.clock.now();
    Ok(after)
}

/// Whether the change is one a human must approve: `after` may do something `before` could not
/// (a ceiling pattern not within an old one, a higher `max_stage`), its tags change (policies
/// grant by tag), or its owner changes (the owner approves for it, so a new owner would approve
/// the next widening).
fn needs_approval(before: &Agent, after: &Agent) -> bool {
    after.max_stage > before.max_stage
        || after
            .ceiling
            .iter()
            .any(|new| !before.ceiling.iter().any(|old| new.is_subset_of(old)))
        || after.tags != before.tags
        || after.owner != before.owner
}

fn change_message(before: &Agent, after: &Agent) -> String {
    let mut parts = Vec::new();
    if after.ceiling != before.ceiling {
        let list = |a: &Agent| {
            a.ceiling
                .iter()
                .map(ScopePattern::as_str)
                .collect::<Vec<_>>()
                .join(" ")
        };
        parts.push(format!("ceiling `{}` → `{}`", list(before), list(after)));
    }
    if after.max_stage != before.max_stage {
        parts.push(format!(
            "max stage `{}` → `{}`",
            before.max_stage, after.max_stage
        ));
    }
    // The rest of the PATCH waits for the same decision: the approver sees all of it.
    if after.owner != before.owner {
        parts.push(format!("owner `{}` → `{}`", before.owner, after.owner));
    }
    if after.name != before.name {
        parts.push(format!("name `{}` → `{}`", before.name, after.name));
    }
    if after.description != before.description {
        parts.push("a new description".to_owned());
    }
    if after.tags != before.tags {
        parts.push(format!(
            "tags `{}` → `{}`",
            before.tags.join(" "),
            after.tags.join(" ")
        ));
    }
    if after.workloads != before.workloads {
        parts.push(format!("{} workload identities", after.workloads.len()));
    }
    if after.require_dpop != before.require_dpop {
        parts.push(format!("require DPoP `{}`", after.require_dpop));
    }
    format!("agent `{}` changes: {}", before.id, parts.join("; "))
}

fn update_detail(before: &Agent, after: &Agent) -> Value {
    json!({
        "before": {"owner": before.owner, "ceiling": before.ceiling, "max_stage": before.max_stage, "name": before.name, "tags": before.tags, "workloads": before.workloads, "require_dpop": before.require_dpop},
        "after": {"owner": after.owner, "ceiling": after.ceiling, "max_stage": after.max_stage, "name": after.name, "tags": after.tags, "workloads": after.workloads, "require_dpop": after.require_dpop},
    })
}

/// The writes that carry out an approved agent change (its PATCH body is the approval's
/// payload, applied to the agent as it is now), for the decision's own unit. Returns them and
/// the agent's id.
pub async fn apply_approved_change(
    state: &AppState,
    stored: &StoredApproval,
    approver: &str,
    now: i64,
) -> Result<(Vec<Op>, String), ApiError> {
    let change: AgentChange = serde_json::from_str(&stored.payload).map_err(|e| {
        tracing::error!(error = %e, approval = %stored.approval.id, "stored agent change does not decode");
        ApiError::server_error()
    })?;
    let id = stored.approval.agent.clone();
    let before = get_agent(state, &id)?;
    let after = changed(state, &before, &change)?;
    let mut detail = update_detail(&before, &after);
    detail["approval"] = json!(stored.approval.id);
    detail["approver"] = json!(approver);
    let by = format!("approval {} (approved by {approver})", stored.approval.id);
    let justify = match &change.justifications {
        Some(j) => {
            detail["justifications"] = json!(j);
            justification_ops(&after, j, &by, now)?
        }
        None => Vec::new(),
    };
    let ev = event("agent.update", &by, &id, detail);
    let outcome = json!({"applied_at": now, "agent": id}).to_string();
    let mut ops = vec![Op::UpdateAgent(after)];
    ops.extend(justify);
    ops.extend([
        Op::Audit(ev),
        Op::ClaimApproval {
            id: stored.approval.id.clone(),
        },
        Op::FinishApproval {
            id: stored.approval.id.clone(),
            outcome,
        },
    ]);
    Ok((ops, id))
}

/// The writes that take `remove` (patterns of its ceiling, as written) out of agent `id`'s
/// ceiling — the `PATCH` path of a narrowing change, which applies at once and never waits for an
/// approval — with its `agent.update` event by `by` (`detail` is merged into the event's
/// detail). For the caller's own unit; returns them and the agent as it will be. The caller
/// refreshes the directory after committing.
pub fn narrowing(
    state: &AppState,
    id: &str,
    remove: &[String],
    by: &str,
    detail: Value,
) -> Result<(Vec<Op>, Agent), ApiError> {
    let before = get_agent(state, id)?;
    for r in remove {
        if !before.ceiling.iter().any(|p| p.as_str() == r) {
            let shown: String = r.chars().take(64).collect();
            return Err(ApiError::bad_request(format!(
                "`{shown}` is not a pattern of the ceiling of agent `{id}`"
            )));
        }
    }
    let remaining: Vec<String> = before
        .ceiling
        .iter()
        .map(|p| p.as_str().to_owned())
        .filter(|p| !remove.contains(p))
        .collect();
    let change = AgentChange {
        name: None,
        owner: None,
        description: None,
        ceiling: Some(remaining),
        max_stage: None,
        tags: None,
        justification: None,
        justifications: None,
        workloads: None,
        require_dpop: None,
    };
    let after = changed(state, &before, &change)?;
    if needs_approval(&before, &after) {
        // Unreachable by construction (the remaining patterns are the agent's own), but a
        // widening must never slip through here.
        return Err(ApiError::server_error());
    }
    let mut d = update_detail(&before, &after);
    if let (Some(d), Value::Object(extra)) = (d.as_object_mut(), detail) {
        d.extend(extra);
    }
    let ev = event("agent.update", by, id, d);
    Ok((vec![Op::UpdateAgent(after.clone()), Op::Audit(ev)], after))
}

/// Suspends, resumes or retires agent `id` on behalf of `by` (`admin:<id>`, `user:<sub>`), as
/// the admin routes and the console do, with `reason` (may be empty) recorded in the audit
/// event. Suspending or retiring is a revocation of the agent.
pub async fn set_status(
    state: &Arc<AppState>,
    by: &str,
    id: &str,
    to: AgentStatus,
    reason: &str,
) -> Result<Arc<Agent>, ApiError> {
    let agent = get_agent(state, id)?;
    if agent.status == AgentStatus::Retired && to != AgentStatus::Retired {
        return Err(ApiError::conflict(format!(
            "agent `{id}` is retired; retirement is final"
        )));
    }
    let kind = match to {
        AgentStatus::Active => "agent.resume",
        AgentStatus::Suspended => "agent.suspend",
        AgentStatus::Retired => "agent.retire",
    };
    let set = Op::SetAgentStatus {
        id: id.to_owned(),
        status: to,
        at: state.clock.now(),
    };
    if agent.status != to && to != AgentStatus::Active {
        // Suspending or retiring ends every token the agent appears in, everywhere: it is a
        // revocation of the agent, published to verifiers like any other.
        let mut req = crate::revocation::Request::new(RevocationKind::Agent, id, by);
        req.reason = if reason.is_empty() {
            format!("agent {}", to.as_str())
        } else {
            format!("agent {}: {reason}", to.as_str())
        };
        req.action = Some(kind.to_owned());
        req.ops = vec![set];
        crate::revocation::revoke(state, req).await?;
    } else if agent.status != to {
        let mut detail = json!({"from": agent.status, "to": to});
        if !reason.is_empty() {
            detail["reason"] = json!(reason);
        }
        let ev = event(kind, by, id, detail);
        state.store.commit(vec![set, Op::Audit(ev)]).await?;
    }
    state
        .directory
        .refresh(state.store.as_ref(), id)
        .await?
        .ok_or_else(ApiError::server_error)
}

async fn set_status_as_admin(
    state: &Arc<AppState>,
    admin: &Admin,
    id: &str,
    to: AgentStatus,
) -> Result<Json<Agent>, ApiError> {
    admin.require_admin()?;
    let agent = set_status(state, &admin.label(), id, to, "").await?;
    Ok(Json(agent.as_ref().clone()))
}

/// Suspends `id` on behalf of `by` (e.g. `gateway:breaker:mail-flood`) as the admin route does:
/// a revocation of the agent that also sets its status, in one unit. Does nothing to an agent
/// that is not active.
pub async fn suspend_for(
    state: &Arc<AppState>,
    id: &str,
    by: &str,
    reason: &str,
) -> Result<(), ApiError> {
    let agent = get_agent(state, id)?;
    if agent.status != AgentStatus::Active {
        return Ok(());
    }
    let mut req = crate::revocation::Request::new(RevocationKind::Agent, id, by);
    req.reason = reason.to_owned();
    req.action = Some("agent.suspend".to_owned());
    req.ops = vec![Op::SetAgentStatus {
        id: id.to_owned(),
        status: AgentStatus::Suspended,
        at: state.clock.now(),
    }];
    crate::revocation::revoke(state, req).await?;
    state.directory.refresh(state.store.as_ref(), id).await?;
    Ok(())
}

/// `POST /v1/agents/{id}/suspend`.
pub async fn suspend(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<Agent>, ApiError> {
    set_status_as_admin(&state, &admin, &id, AgentStatus::Suspended).await
}

/// `POST /v1/agents/{id}/resume`.
pub async fn resume(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<Agent>, ApiError> {
    set_status_as_admin(&state, &admin, &id, AgentStatus::Active).await
}

/// `POST /v1/agents/{id}/retire`.
pub async fn retire(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<Agent>, ApiError> {
    set_status_as_admin(&state, &admin, &id, AgentStatus::Retired).await
}

/// `POST /v1/agents/{id}/keys`.
pub async fn add_key(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<NewKey>,
) -> Result<Response, ApiError> {
    admin.require_admin()?;
    let agent = get_agent(&state, &id)?;
    let key = agent_key(&body.jwk, body.expires_at, state.clock.now())?;
    if agent.keys.iter().any(|k| k.kid == key.kid) {
        return Err(ApiError::conflict(format!(
            "agent `{id}` already has a key `{}`",
            key.kid
        )));
    }
    let ev = event(
        "agent.key.add",
        &admin.label(),
        &id,
        json!({"kid": key.kid, "expires_at": key.expires_at}),
    );
    state
        .store
        .commit(vec![
            Op::AddAgentKey {
                agent: id.clone(),
                key: key.clone(),
            },
            Op::Audit(ev),
        ])
        .await?;
    state.directory.refresh(state.store.as_ref(), &id).await?;
    Ok((StatusCode::CREATED, Json(key)).into_response())
}

/// `DELETE /v1/agents/{id}/keys/{kid}`.
pub async fn remove_key(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    Path((id, kid)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    admin.require_admin()?;
    let agent = get_agent(&state, &id)?;
    if !agent.keys.iter().any(|k| k.kid == kid) {
        return Err(ApiError::not_found(format!(
            "agent `{id}` has no key `{kid}`"
        )));
    }
    let ev = event("agent.key.remove", &admin.label(), &id, json!({"kid": kid}));
    state
        .store
        .commit(vec![
            Op::RemoveAgentKey {
                agent: id.clone(),
                kid,
            },
            Op::Audit(ev),
        ])
        .await?;
    state.directory.refresh(state.store.as_ref(), &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

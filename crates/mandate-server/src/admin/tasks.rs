//! Tasks as first-class units of agent work (SPEC §1, §7).
//!
//! * `POST /v1/tasks` creates a task explicitly, with its purpose and triggering input.
//! * `POST /v1/tasks/{id}/steps` appends the agent's own record of a step: what it decided, why,
//!   and the tool call it means to make.
//! * `POST /v1/tasks/{id}/complete` ends the task with its outcome — and ends its tokens
//!   everywhere, as a task revocation in the same commit.
//! * `GET /v1/tasks/{id}` shows one timeline's worth of facts: the task, its steps, its token
//!   records (never the tokens), the revocations that reached it and its audit events;
//!   `GET /v1/tasks` lists tasks.
//!
//! The three writes accept an admin credential (role `admin`) or a live Mandate access token of
//! the agent doing the work; a token may only touch its own task (its `task` claim).

use std::sync::Arc;

use axum::Extension;
use axum::Json;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use mandate_core::audit::{Decision, NewEvent};
use mandate_core::claims::SubProfile;
use mandate_core::ids::{AgentId, TaskId};
use mandate_core::revocation::RevocationKind;
use mandate_core::scope::Scope;
use mandate_core::task::{Task, TaskStatus, TaskStep, ToolCall};
use mandate_store::{AuditFilter, Op, OpOutput, StoreError, TaskFilter};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::admin::auth::{Admin, CREDENTIAL_PREFIX, admin_from_bearer};
use crate::admin::body::JsonBody;
use crate::app::RequestId;
use crate::error::ApiError;
use crate::live::Live;
use crate::state::AppState;

/// The most bytes of a task's triggering input, a step's summary or arguments, or an outcome.
pub const MAX_TEXT_BYTES: usize = 4096;
/// The most bytes of a purpose.
const MAX_PURPOSE_BYTES: usize = 1000;
/// The most bytes of a step's decision.
const MAX_DECISION_BYTES: usize = 500;
/// The most bytes of a step's anomaly note.
const MAX_ANOMALY_BYTES: usize = 1000;
/// The most bytes of a tool call's resource.
const MAX_RESOURCE_BYTES: usize = 512;
/// Audit events shown with a task.
const MAX_TASK_EVENTS: u32 = 10_000;

/// Who is writing to a task: an administrator, or the agent itself with its access token.
#[derive(Debug, Clone)]
pub enum Caller {
    /// An admin credential with the `admin` role.
    Admin(Admin),
    /// A live Mandate access token.
    Agent(Box<Live>),
}

impl Caller {
    /// `admin:<id>` or `agent:<acting agent>`, as written in steps and audit events.
    pub fn label(&self) -> String {
        match self {
            Caller::Admin(a) => a.label(),
            Caller::Agent(live) => format!("agent:{}", acting_agent(live)),
        }
    }

    /// Refuses an access token bound to another task than `task`.
    fn may_touch(&self, task: &str) -> Result<(), ApiError> {
        match self {
            Caller::Admin(_) => Ok(()),
            Caller::Agent(live) if live.claims.task == task => Ok(()),
            Caller::Agent(live) => Err(ApiError::forbidden(format!(
                "this access token is bound to task `{}`; it may only write to that task, not `{}`",
                live.claims.task,
                clip(task, 128)
            ))),
        }
    }

    /// The audit event's principal fields: user, chain, credential, token.
    fn stamp(&self, event: &mut NewEvent, task: &Task) {
        match self {
            Caller::Admin(_) => {
                event.user = task.user.clone();
                event.chain = vec![task.agent.clone()];
            }
            Caller::Agent(live) => {
                event.user = token_user(live);
                event.chain = live.chain.agent_ids();
                event.credential = Some(live.claims.credential.clone());
                event.jti = Some(live.claims.jti.clone());
            }
        }
    }
}

/// The agent a token acts as: the last of its chain (the `sub` agent for an agent's own token).
fn acting_agent(live: &Live) -> String {
    live.chain
        .current()
        .map(|a| a.agent.as_str().to_owned())
        .unwrap_or_else(|| live.claims.client_id.clone())
}

/// The user a token acts for, if it acts for one.
fn token_user(live: &Live) -> Option<String> {
    (live.claims.sub_profile == SubProfile::User).then(|| live.claims.sub.clone())
}

fn clip(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    /// `Authorization: Bearer <admin credential>` (role `admin`), or `Bearer <access token>`.
    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let token = value
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim())
            .filter(|t| !t.is_empty());
        let Some(token) = token else {
            return Err(ApiError::unauthorized(
                "credential required: send `Authorization: Bearer <admin credential>` or \
                 `Authorization: Bearer <the agent's access token>`",
            ));
        };
        if token.starts_with(CREDENTIAL_PREFIX) {
            let admin = admin_from_bearer(state, value)
                .ok_or_else(|| ApiError::unauthorized("admin credential is not valid"))?;
            admin.require_admin()?;
            return Ok(Caller::Admin(admin));
        }
        if token.len() > 16 * 1024 {
            return Err(ApiError::unauthorized("access token is too long"));
        }
        match crate::live::check(state, token, state.clock.now()) {
            Ok(live) => Ok(Caller::Agent(Box::new(live))),
            Err(e) => Err(ApiError::unauthorized(format!("access token refused: {e}"))),
        }
    }
}

/// Body of `POST /v1/tasks`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTask {
    /// The task id (1–128 of letters, digits, `-`, `_`, `.`, `:`); generated (`task-…`) if
    /// absent.
    #[serde(default)]
    pub id: Option<String>,
    /// Why the task exists.
    pub purpose: String,
    /// The input that triggered it (at most 4 KiB), e.g. the ticket text.
    pub input: String,
    /// The agent doing the work. Required with an admin credential; with an access token it is
    /// the token's acting agent (and may be omitted).
    #[serde(default)]
    pub agent: Option<String>,
    /// The user it is for. With an access token it is the token's user (and may be omitted).
    #[serde(default)]
    pub user: Option<String>,
}

/// The tool call a step intends.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolCallBody {
    /// The action, a scope such as `crm.customers:read`.
    pub action: String,
    /// What it acts on, e.g. `customers/9821`.
    pub resource: String,
    /// The arguments, any JSON (at most 4 KiB).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub arguments: Option<Value>,
}

/// Body of `POST /v1/tasks/{id}/steps`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewStep {
    /// What the agent decided, in a few words.
    pub decision: String,
    /// Why: its reasoning (at most 4 KiB).
    pub summary: String,
    /// The tool call it intends to make next, if any.
    #[serde(default)]
    #[schema(inline)]
    pub tool_call: Option<ToolCallBody>,
    /// Anything the agent itself flags as anomalous.
    #[serde(default)]
    pub anomaly: Option<String>,
}

/// Body of `POST /v1/tasks/{id}/complete`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskCompletion {
    /// How the task ended, in the agent's words (at most 4 KiB).
    pub outcome: String,
}

/// Query of `GET /v1/tasks`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct TaskQuery {
    /// The agent.
    pub agent: Option<String>,
    /// The user's subject.
    pub user: Option<String>,
    /// `active`, `completed` or `revoked`.
    pub status: Option<String>,
    /// At most this many (default 100, at most 1 000).
    pub limit: Option<u32>,
}

/// A text field within `max` bytes; `required` also refuses blank text.
fn text(value: &str, field: &str, max: usize, required: bool) -> Result<String, ApiError> {
    if required && value.trim().is_empty() {
        return Err(ApiError::bad_request(format!(
            "`{field}` must not be empty"
        )));
    }
    if value.len() > max {
        return Err(ApiError::bad_request(format!(
            "`{field}` must be at most {max} bytes (it has {})",
            value.len()
        )));
    }
    Ok(value.to_owned())
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("task `{}` not found", clip(id, 128)))
}

fn not_active(task: &Task) -> ApiError {
    ApiError::conflict(format!(
        "task `{}` is {}, not active",
        task.id,
        task.status.as_str()
    ))
}

async fn load(state: &AppState, id: &str) -> Result<Task, ApiError> {
    state.store.task(id).await?.ok_or_else(|| not_found(id))
}

fn generated_id() -> Result<String, ApiError> {
    let id = mandate_token::random_id::<9>().map_err(|_| ApiError::server_error())?;
    Ok(format!("task-{}", id.replace('_', "x")))
}

/// `POST /v1/tasks`.
pub async fn create(
    State(state): State<Arc<AppState>>,
    Extension(rid): Extension<RequestId>,
    caller: Caller,
    JsonBody(body): JsonBody<NewTask>,
) -> Result<Response, ApiError> {
    let id = match &body.id {
        Some(id) => TaskId::parse(id)
            .map_err(|e| ApiError::bad_request(e.to_string()))?
            .as_str()
            .to_owned(),
        None => generated_id()?,
    };
    let purpose = text(&body.purpose, "purpose", MAX_PURPOSE_BYTES, true)?;
    let input = text(&body.input, "input", MAX_TEXT_BYTES, false)?;
    let (agent, user, user_issuer) = match &caller {
        Caller::Admin(_) => {
            let agent = body
                .agent
                .as_deref()
                .ok_or_else(|| ApiError::bad_request("`agent` is required"))?;
            let agent = AgentId::parse(agent).map_err(|e| ApiError::bad_request(e.to_string()))?;
            if state.directory.get(agent.as_str()).is_none() {
                return Err(ApiError::bad_request(format!(
                    "agent `{agent}` is not registered"
                )));
            }
            let user = match body.user.as_deref().map(str::trim) {
                None => None,
                Some("") => return Err(ApiError::bad_request("`user` must not be empty")),
                Some(u) => Some(text(u, "user", 256, true)?),
            };
            (agent.as_str().to_owned(), user, None)
        }
        Caller::Agent(live) => {
            let agent = acting_agent(live);
            let user = token_user(live);
            if body.agent.as_deref().is_some_and(|a| a != agent) {
                return Err(ApiError::forbidden(format!(
                    "an access token of agent `{agent}` creates tasks for that agent only"
                )));
            }
            if body.user.is_some() && body.user != user {
                return Err(ApiError::forbidden(
                    "an access token creates tasks for its own user only",
                ));
            }
            let issuer = user.as_ref().and_then(|_| live.claims.sub_iss.clone());
            (agent, user, issuer)
        }
    };
    let now = state.clock.now();
    let task = Task {
        id: id.clone(),
        agent,
        user,
        user_issuer,
        purpose,
        input,
        status: TaskStatus::Active,
        created_at: now,
        updated_at: now,
        outcome: None,
        completed_at: None,
    };
    let mut event = NewEvent {
        kind: "task.create".into(),
        task: Some(id.clone()),
        action: Some("task.create".into()),
        resource: Some(format!("task:{id}")),
        decision: Some(Decision::Info),
        reason: format!("created by {}", caller.label()),
        request_id: Some(rid.0),
        detail: json!({"purpose": task.purpose, "by": caller.label()}).to_string(),
        ..Default::default()
    };
    caller.stamp(&mut event, &task);
    state
        .store
        .commit(vec![Op::InsertTask(task.clone()), Op::Audit(event)])
        .await
        .map_err(|e| match e {
            StoreError::Conflict(_) => ApiError::conflict(format!("task `{id}` already exists")),
            other => other.into(),
        })?;
    Ok((StatusCode::CREATED, Json(json!({ "task": task }))).into_response())
}

/// The intended tool call of a step, checked.
fn tool_call(body: ToolCallBody) -> Result<ToolCall, ApiError> {
    let action = Scope::parse(body.action.trim())
        .map_err(|e| ApiError::bad_request(format!("`tool_call.action` is not a scope: {e}")))?;
    let resource = text(
        body.resource.trim(),
        "tool_call.resource",
        MAX_RESOURCE_BYTES,
        true,
    )?;
    if let Some(args) = &body.arguments {
        let size = args.to_string().len();
        if size > MAX_TEXT_BYTES {
            return Err(ApiError::bad_request(format!(
                "`tool_call.arguments` must be at most {MAX_TEXT_BYTES} bytes of JSON (it has {size})"
            )));
        }
    }
    Ok(ToolCall {
        action: action.as_str().to_owned(),
        resource,
        arguments: body.arguments,
    })
}

/// `POST /v1/tasks/{id}/steps`.
pub async fn step(
    State(state): State<Arc<AppState>>,
    Extension(rid): Extension<RequestId>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<NewStep>,
) -> Result<Response, ApiError> {
    caller.may_touch(&id)?;
    let decision = text(body.decision.trim(), "decision", MAX_DECISION_BYTES, true)?;
    let summary = text(&body.summary, "summary", MAX_TEXT_BYTES, false)?;
    let anomaly = body
        .anomaly
        .as_deref()
        .map(|a| text(a, "anomaly", MAX_ANOMALY_BYTES, true))
        .transpose()?;
    let tool_call = body.tool_call.map(tool_call).transpose()?;
    let task = load(&state, &id).await?;
    if task.status != TaskStatus::Active {
        return Err(not_active(&task));
    }
    let step = TaskStep {
        task: task.id.clone(),
        seq: 0,
        time: mandate_core::time::rfc3339_millis(state.clock.now_ms()),
        by: caller.label(),
        decision,
        summary,
        tool_call,
        anomaly,
    };
    let mut detail = json!({"decision": clip(&step.decision, 200), "by": step.by});
    if let Some(call) = &step.tool_call {
        detail["tool_call"] = json!({"action": call.action, "resource": call.resource});
    }
    if step.anomaly.is_some() {
        detail["anomaly"] = json!(true);
    }
    let mut event = NewEvent {
        kind: "task.step".into(),
        task: Some(task.id.clone()),
        action: Some("task.step".into()),
        resource: Some(format!("task:{}", task.id)),
        decision: Some(Decision::Info),
        reason: clip(&step.decision, 200),
        request_id: Some(rid.0),
        detail: detail.to_string(),
        ..Default::default()
    };
    caller.stamp(&mut event, &task);
    let outputs = state
        .store
        .commit(vec![Op::AppendTaskStep {
            step,
            audit: Some(event),
        }])
        .await
        .map_err(|e| match e {
            StoreError::TaskNotActive { id, status } => {
                ApiError::conflict(format!("task `{id}` is {status}, not active"))
            }
            other => other.into(),
        })?;
    let Some(step) = outputs.into_iter().find_map(|o| match o {
        OpOutput::TaskStep(s) => Some(s),
        _ => None,
    }) else {
        tracing::error!("the store answered a task step without the step");
        return Err(ApiError::server_error());
    };
    Ok((StatusCode::CREATED, Json(json!({ "step": step }))).into_response())
}

/// `POST /v1/tasks/{id}/complete`: the task is `completed` with its outcome, and every token of
/// it ends, as a task revocation (action `task.complete`) in the same commit.
pub async fn complete(
    State(state): State<Arc<AppState>>,
    Extension(rid): Extension<RequestId>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<TaskCompletion>,
) -> Result<Response, ApiError> {
    caller.may_touch(&id)?;
    let outcome = text(&body.outcome, "outcome", MAX_TEXT_BYTES, true)?;
    let task = load(&state, &id).await?;
    if task.status != TaskStatus::Active {
        return Err(not_active(&task));
    }
    let mut req = crate::revocation::Request::new(RevocationKind::Task, &task.id, &caller.label());
    req.reason = "task completed".into();
    req.action = Some("task.complete".into());
    req.request_id = Some(rid.0);
    req.ops = vec![Op::CompleteTask {
        id: task.id.clone(),
        outcome,
        at: state.clock.now(),
    }];
    let outcome = match crate::revocation::revoke(&state, req).await {
        Ok(o) => o,
        Err(e) => {
            // Another change ended the task first (the store refused this one whole).
            if let Ok(Some(now)) = state.store.task(&task.id).await
                && now.status != TaskStatus::Active
            {
                return Err(not_active(&now));
            }
            return Err(e);
        }
    };
    let task = load(&state, &task.id).await?;
    let r = &outcome.revocation;
    Ok(Json(json!({
        "task": task,
        "revocation": {
            "id": r.id, "kind": r.kind, "target": r.target, "by": r.by, "reason": r.reason,
            "at": r.at, "seq": outcome.seq,
            "tokens_ended": outcome.tokens.len(),
            "jtis": outcome.tokens.iter().map(|t| &t.jti).collect::<Vec<_>>(),
        },
    }))
    .into_response())
}

/// `GET /v1/tasks/{id}`: the task, its steps, its token records, the revocations that reached
/// it (each with the tokens of this task it ended) and its audit events.
pub async fn show(
    State(state): State<Arc<AppState>>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let t = timeline(&state, &id).await?;
    Ok(Json(json!({
        "task": t.task,
        "steps": t.steps,
        "tokens": t.tokens,
        "revocations": t.revocations,
        "events": t.events,
    })))
}

/// A task's whole story, as `GET /v1/tasks/{id}` and the console's timeline show it.
#[derive(Debug)]
pub struct Timeline {
    /// The task.
    pub task: Task,
    /// Its steps, in order.
    pub steps: Vec<mandate_core::task::TaskStep>,
    /// The tokens issued for it.
    pub tokens: Vec<mandate_core::task::TokenRecord>,
    /// The revocations that reached it, each with the tokens of this task it ended.
    pub revocations: Vec<Value>,
    /// Its audit events.
    pub events: Vec<mandate_core::audit::AuditEvent>,
}

/// Loads task `id`'s [`Timeline`].
pub async fn timeline(state: &AppState, id: &str) -> Result<Timeline, ApiError> {
    let id = id.to_owned();
    let task = load(state, &id).await?;
    let steps = state.store.task_steps(&id).await?;
    let tokens = state.store.tokens_of_task(&id).await?;
    let mut revocations = Vec::new();
    for e in state.store.task_revocations(&id).await? {
        let jtis: Vec<&str> = e
            .tokens
            .iter()
            .map(|t| t.jti.as_str())
            .filter(|j| tokens.iter().any(|t| t.jti == *j))
            .collect();
        let r = &e.record;
        revocations.push(json!({
            "id": r.id, "kind": r.kind, "target": r.target, "by": r.by, "reason": r.reason,
            "at": r.at, "time": revocation_time(state, r).await?, "seq": e.seq,
            "tokens_ended": jtis.len(), "jtis": jtis,
        }));
    }
    let events = state
        .store
        .audit(&AuditFilter {
            task: Some(id.clone()),
            limit: Some(MAX_TASK_EVENTS),
            ..Default::default()
        })
        .await?;
    Ok(Timeline {
        task,
        steps,
        tokens,
        revocations,
        events,
    })
}

/// When a revocation was recorded, to the millisecond: its audit event's time (a revocation
/// record keeps whole seconds), or its second if the event is not found.
async fn revocation_time(
    state: &AppState,
    r: &mandate_core::revocation::RevocationRecord,
) -> Result<String, ApiError> {
    let events = state
        .store
        .audit(&AuditFilter {
            kind: Some("revocation".into()),
            resource: Some(format!("{}:{}", r.kind.as_str(), r.target)),
            limit: Some(1000),
            ..Default::default()
        })
        .await?;
    let time = events.into_iter().find_map(|e| {
        let detail: Value = serde_json::from_str(&e.detail).ok()?;
        (detail["revocation"] == r.id.as_str()).then_some(e.time)
    });
    Ok(time.unwrap_or_else(|| mandate_core::time::rfc3339_millis(r.at.saturating_mul(1000))))
}

/// `GET /v1/tasks?agent=&user=&status=&limit=`: tasks, newest first.
pub async fn list(
    State(state): State<Arc<AppState>>,
    _admin: Admin,
    Query(q): Query<TaskQuery>,
) -> Result<Json<Value>, ApiError> {
    let status = q
        .status
        .as_deref()
        .map(|s| {
            TaskStatus::parse(s).ok_or_else(|| {
                ApiError::bad_request("`status` must be `active`, `completed` or `revoked`")
            })
        })
        .transpose()?;
    let tasks = state
        .store
        .tasks(&TaskFilter {
            agent: q.agent,
            user: q.user,
            status,
            limit: q.limit,
        })
        .await?;
    Ok(Json(json!({ "tasks": tasks })))
}

//! Tasks: the list, and one task's timeline — the triggering input, the agent's steps, the
//! tokens issued for it, every gateway action and decision, the revocations that reached it and
//! its outcome — with the button that revokes it.

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use mandate_core::revocation::RevocationKind;
use mandate_core::task::{Task, TaskStatus};
use mandate_store::TaskFilter;
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::Value;

use super::Failure;
use super::session::{Person, Posted};
use super::view::{self, Section};
use crate::admin::tasks::Timeline;
use crate::app::RequestId;
use crate::error::ApiError;
use crate::state::AppState;

/// How many tasks the list reads.
const LIST_READ: u32 = 1000;
/// How many it shows.
const LIST_SHOWN: usize = 200;
/// The longest revocation reason accepted.
const MAX_REASON: usize = 1000;

fn owns_agent(state: &AppState, person: &Person, agent: &str) -> bool {
    state.directory.get(agent).is_some_and(|a| person.owns(&a))
}

/// Admins, auditors, the task's user and the owner of its agent may see a task.
fn may_see(state: &AppState, person: &Person, task: &Task) -> bool {
    person.sees_everything()
        || task.user.as_deref() == Some(person.subject())
        || owns_agent(state, person, &task.agent)
}

/// Admins, the task's user and the owner of its agent may revoke it (auditors only read).
fn may_revoke(state: &AppState, person: &Person, task: &Task) -> bool {
    person.roles.admin
        || task.user.as_deref() == Some(person.subject())
        || owns_agent(state, person, &task.agent)
}

/// The list's query.
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    /// `active`, `completed` or `revoked`; empty: all.
    #[serde(default)]
    pub status: String,
}

/// `GET /console/tasks`.
pub async fn list(
    State(state): State<Arc<AppState>>,
    person: Person,
    Query(q): Query<ListQuery>,
) -> Result<Markup, Failure> {
    let status = match q.status.as_str() {
        "" => None,
        s => Some(TaskStatus::parse(s).ok_or_else(|| {
            ApiError::bad_request(format!(
                "`status` must be `active`, `completed` or `revoked`, not `{}`",
                s.chars().take(40).collect::<String>()
            ))
        })?),
    };
    let tasks = state
        .store
        .tasks(&TaskFilter {
            status,
            limit: Some(LIST_READ),
            ..Default::default()
        })
        .await?;
    let shown: Vec<&Task> = tasks
        .iter()
        .filter(|t| may_see(&state, &person, t))
        .take(LIST_SHOWN)
        .collect();
    let body = html! {
        form.filters method="get" action="/console/tasks" {
            label for="status" { "Status"
                select id="status" name="status" {
                    @for (value, label) in [("", "any"), ("active", "active"), ("completed", "completed"), ("revoked", "revoked")] {
                        option value=(value) selected[q.status == value] { (label) }
                    }
                }
            }
            button type="submit" { "Show" }
        }
        @if shown.is_empty() {
            (view::empty("No tasks to show."))
        } @else {
            div.table-wrap { table {
                thead { tr {
                    th scope="col" { "Task" } th scope="col" { "Agent" } th scope="col" { "For" }
                    th scope="col" { "Purpose" } th scope="col" { "Status" } th scope="col" { "Started" }
                } }
                tbody { @for t in &shown { tr {
                    td { a href={ "/console/tasks/" (view::urlencode(&t.id)) } { (t.id) } }
                    td { (t.agent) }
                    td { (t.user.as_deref().unwrap_or("the agent itself")) }
                    td { (t.purpose) }
                    td { (view::decision(t.status.as_str())) }
                    td { (view::time(t.created_at)) }
                } } }
            } }
        }
    };
    let owned = person.owned_agents(&state);
    Ok(view::page(&person, owned, Section::Tasks, "Tasks", body))
}

/// One entry of a task's timeline.
struct Entry {
    /// RFC 3339 UTC with milliseconds (sorts as text).
    time: String,
    /// A class for the marker: `allow`, `deny`, `revocation` or `step`.
    class: &'static str,
    markup: Markup,
}

/// The timeline's entries, oldest first: steps, audit events and revocations.
fn entries(t: &Timeline) -> Vec<Entry> {
    let mut out = Vec::new();
    for s in &t.steps {
        out.push(Entry {
            time: s.time.clone(),
            class: "step",
            markup: html! {
                strong { "Step " (s.seq) ": " (s.decision) }
                " " span.hint { "(" (s.by) ")" }
                @if !s.summary.is_empty() { p { (s.summary) } }
                @if let Some(call) = &s.tool_call {
                    p { "Intends to call " code { (call.action) } " on " code { (call.resource) } }
                }
                @if let Some(a) = &s.anomaly { p.message.bad { "Anomaly flagged: " (a) } }
            },
        });
    }
    for e in &t.events {
        out.push(Entry {
            time: e.time.clone(),
            class: match e.decision.as_str() {
                "allow" => "allow",
                "deny" => "deny",
                _ => "info",
            },
            markup: html! {
                (view::who(e.user.as_deref(), &e.chain)) " "
                strong { (e.kind) } " "
                @if let Some(a) = &e.action { code { (a) } " " }
                @if let Some(r) = &e.resource { code { (r) } " " }
                (view::decision(e.decision.as_str()))
                @if !e.reason.is_empty() { " — " (e.reason) }
            },
        });
    }
    for r in &t.revocations {
        let text = |k: &str| {
            r.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        out.push(Entry {
            time: text("time"),
            class: "revocation",
            markup: html! {
                strong { "Revoked: " (text("kind")) " " code { (text("target")) } }
                " by " (text("by"))
                @if !text("reason").is_empty() { " — " (text("reason")) }
                " (" (r.get("tokens_ended").and_then(Value::as_u64).unwrap_or(0)) " tokens of this task ended)"
            },
        });
    }
    out.sort_by(|a, b| a.time.cmp(&b.time));
    out
}

fn tokens_table(t: &Timeline, now: i64) -> Markup {
    if t.tokens.is_empty() {
        return view::empty("No tokens were issued for this task.");
    }
    html! {
        div.table-wrap { table {
            thead { tr {
                th scope="col" { "Token (jti)" } th scope="col" { "Subject" } th scope="col" { "Via" }
                th scope="col" { "Scopes" } th scope="col" { "Stage" } th scope="col" { "Issued" }
                th scope="col" { "State" }
            } }
            tbody { @for k in &t.tokens { tr {
                td.mono { (k.jti) @if let Some(p) = &k.parent_jti { br; span.hint { "from " (p) } } }
                td { (k.sub) }
                td { (k.chain.join(" > ")) }
                td.mono { (k.scope) }
                td { (k.stage) }
                td { (view::time(k.iat)) }
                td {
                    @if let Some(at) = k.revoked_at { span.badge.bad { "revoked" } " " (view::time(at)) }
                    @else if k.exp <= now { span.badge { "expired" } }
                    @else { span.badge.ok { "live" } " " span.hint { "for " (view::duration(k.exp - now)) } }
                }
            } } }
        } }
    }
}

/// `GET /console/tasks/{id}`: the task's timeline.
pub async fn timeline(
    State(state): State<Arc<AppState>>,
    person: Person,
    Path(id): Path<String>,
) -> Result<Markup, Failure> {
    let t = crate::admin::tasks::timeline(&state, &id).await?;
    if !may_see(&state, &person, &t.task) {
        return Err(ApiError::forbidden(format!(
            "task `{}` is not yours to see: only its user, its agent's owner, admins and \
             auditors may",
            t.task.id
        ))
        .into());
    }
    let now = state.clock.now();
    let task = &t.task;
    let body = html! {
        (view::facts(&[
            ("Status", view::decision(task.status.as_str())),
            ("Agent", html! { a href={ "/console/agents/" (view::urlencode(&task.agent)) } { (task.agent) } }),
            ("For", html! { (task.user.as_deref().unwrap_or("the agent itself")) }),
            ("Purpose", html! { (task.purpose) }),
            ("Started", view::time(task.created_at)),
            ("Outcome", html! { @match &task.outcome {
                Some(o) => { (o) @if let Some(at) = task.completed_at { " (" (view::time(at)) ")" } },
                None => "not completed",
            } }),
        ]))
        @if task.status == TaskStatus::Active && may_revoke(&state, &person, task) {
            form.stack method="post" action={ "/console/tasks/" (view::urlencode(&task.id)) "/revoke" } {
                (view::csrf(&person))
                label for="reason" { "Reason for revoking (recorded in the audit log)" }
                input id="reason" name="reason" type="text" maxlength=(MAX_REASON);
                div.actions {
                    button.danger type="submit" { "Revoke this task" }
                }
                p.hint { "Every token issued for this task stops working at once, at every gateway and verifier." }
            }
        }
        section aria-labelledby="input-h" {
            h2 id="input-h" { "Triggering input" }
            @if task.input.is_empty() { (view::empty("The agent reported no input.")) } @else { pre { (task.input) } }
        }
        section aria-labelledby="timeline-h" {
            h2 id="timeline-h" { "Timeline" }
            @let items = entries(&t);
            @if items.is_empty() {
                (view::empty("Nothing has happened in this task yet."))
            } @else {
                ol.timeline { @for e in &items {
                    li class=(e.class) { span.when.mono { (e.time) } " " (e.markup) }
                } }
            }
        }
        section aria-labelledby="tokens-h" {
            h2 id="tokens-h" { "Tokens" }
            (tokens_table(&t, now))
        }
    };
    let owned = person.owned_agents(&state);
    let title = format!("Task {}", task.id);
    Ok(view::page(&person, owned, Section::Tasks, &title, body))
}

/// The revoke form.
#[derive(Debug, Deserialize)]
pub struct RevokeForm {
    /// Why.
    #[serde(default)]
    pub reason: String,
}

/// `POST /console/tasks/{id}/revoke`.
pub async fn revoke(
    State(state): State<Arc<AppState>>,
    Extension(rid): Extension<RequestId>,
    Path(id): Path<String>,
    posted: Posted<RevokeForm>,
) -> Result<Response, Failure> {
    let person = &posted.person;
    let task = state.store.task(&id).await?.ok_or_else(|| {
        ApiError::not_found(format!(
            "task `{}` not found",
            id.chars().take(64).collect::<String>()
        ))
    })?;
    if !may_revoke(&state, person, &task) {
        return Err(ApiError::forbidden(format!(
            "only admins, the task's user and the owner of agent `{}` may revoke task `{}`",
            task.agent, task.id
        ))
        .into());
    }
    let reason = posted.form.reason.trim();
    if reason.len() > MAX_REASON {
        return Err(
            ApiError::bad_request(format!("the reason is longer than {MAX_REASON} bytes")).into(),
        );
    }
    let mut req = crate::revocation::Request::new(
        RevocationKind::Task,
        &task.id,
        &format!("user:{}", person.subject()),
    );
    req.reason = reason.to_owned();
    req.request_id = Some(rid.0);
    crate::revocation::revoke(&state, req).await?;
    Ok(Redirect::to(&format!("/console/tasks/{}", view::urlencode(&task.id))).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mandate_core::task::TaskStep;

    fn timeline_with(steps: Vec<TaskStep>, revocations: Vec<Value>) -> Timeline {
        Timeline {
            task: Task {
                id: "t1".into(),
                agent: "support-v2".into(),
                user: Some("alice@example.com".into()),
                user_issuer: None,
                purpose: "p".into(),
                input: String::new(),
                status: TaskStatus::Active,
                created_at: 0,
                updated_at: 0,
                outcome: None,
                completed_at: None,
            },
            steps,
            tokens: Vec::new(),
            revocations,
            events: Vec::new(),
        }
    }

    #[test]
    fn the_timeline_is_in_time_order_whatever_the_source() {
        let step = |seq: i64, time: &str| TaskStep {
            task: "t1".into(),
            seq,
            time: time.into(),
            by: "agent:support-v2".into(),
            decision: format!("step {seq}"),
            summary: String::new(),
            tool_call: None,
            anomaly: None,
        };
        let t = timeline_with(
            vec![
                step(1, "2026-11-24T10:00:00.000Z"),
                step(2, "2026-11-24T10:00:02.000Z"),
            ],
            vec![
                serde_json::json!({"time": "2026-11-24T10:00:01.000Z", "kind": "task", "target": "t1", "by": "user:carol", "tokens_ended": 2}),
            ],
        );
        let order: Vec<&str> = entries(&t).iter().map(|e| e.class).collect();
        assert_eq!(order, ["step", "revocation", "step"]);
    }
}

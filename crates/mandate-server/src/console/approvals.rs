//! Approvals: the queue of requests waiting for a human, one request's detail — the binding
//! message and exactly what is held — and the approve/deny form.
//!
//! Deciding goes through [`crate::approvals::decide`], the same function as
//! `POST /v1/approvals/{id}/approve`, so separation of duties is the same rule everywhere: the
//! decider must be the agent's owner or in an approver group, and never the user the request
//! was made for.

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use mandate_core::approval::{Ask, Status};
use mandate_gateway::hold::HeldRequest;
use mandate_store::{ApprovalFilter, StoredApproval};
use maud::{Markup, html};
use serde::Deserialize;

use super::Failure;
use super::session::{Person, Posted};
use super::view::{self, Section};
use crate::app::RequestId;
use crate::approvals::{self as gates, MAX_REASON_BYTES, Ruling};
use crate::error::ApiError;
use crate::state::AppState;

/// How many approvals the queue reads.
const QUEUE_READ: u32 = 1000;
/// How many decided approvals the queue shows.
const RECENT: usize = 20;
/// How much of a held request's body the detail shows.
const BODY_SHOWN: usize = 4096;

/// Whether `person` may see `a`: admins and auditors see all; others what they may decide and
/// what was asked on their behalf.
fn may_see(state: &AppState, person: &Person, a: &mandate_core::approval::Approval) -> bool {
    person.sees_everything()
        || a.user.as_deref() == Some(person.subject())
        || gates::is_approver_for(state, &a.agent, &person.user)
}

/// Why `person` may not decide `a` now, if they may not.
fn cannot_decide(
    state: &AppState,
    person: &Person,
    a: &mandate_core::approval::Approval,
    now: i64,
) -> Option<String> {
    if a.decided.is_some() {
        return Some("this request has been decided".into());
    }
    if a.is_expired(now) {
        return Some("this request expired undecided, which counts as a denial".into());
    }
    if a.user.as_deref() == Some(person.subject()) {
        return Some(
            "this request was made on your behalf: someone else must decide it \
             (separation of duties)"
                .into(),
        );
    }
    if !gates::is_approver_for(state, &a.agent, &person.user) {
        return Some(format!(
            "only the owner of agent `{}` or a member of an approver group may decide this \
             request",
            a.agent
        ));
    }
    None
}

/// The word for where an approval stands.
fn status_word(a: &mandate_core::approval::Approval, now: i64) -> &'static str {
    match a.status() {
        Status::Pending if a.is_expired(now) => "expired",
        other => other.as_str(),
    }
}

/// What is asked, in a few words.
fn asked(ask: &Ask) -> String {
    match ask {
        Ask::Escalation {
            scope,
            stage,
            audience,
        } => format!("a `{}` token for {scope} at {audience}", stage.as_str()),
        Ask::HeldWrite {
            method,
            path,
            action,
            ..
        } => format!("{method} {path} ({action})"),
        Ask::AgentChange { agent, .. } => format!("a change to agent {agent}"),
    }
}

async fn visible(state: &AppState, person: &Person) -> Result<Vec<StoredApproval>, Failure> {
    let all = state
        .store
        .approvals(&ApprovalFilter {
            limit: Some(QUEUE_READ),
            ..Default::default()
        })
        .await?;
    Ok(all
        .into_iter()
        .filter(|s| may_see(state, person, &s.approval))
        .collect())
}

fn rows(list: &[&StoredApproval], now: i64) -> Markup {
    html! {
        div.table-wrap {
            table {
                thead { tr {
                    th scope="col" { "Request" } th scope="col" { "Agent" } th scope="col" { "For" }
                    th scope="col" { "What will happen" } th scope="col" { "Asked" } th scope="col" { "Status" }
                } }
                tbody {
                    @for s in list {
                        @let a = &s.approval;
                        tr {
                            td { a href={ "/console/approvals/" (view::urlencode(&a.id)) } { (asked(&a.ask)) } }
                            td { (a.agent) }
                            td { (a.user.as_deref().unwrap_or("the agent itself")) }
                            td { (a.binding_message) }
                            td { (view::time(a.created_at)) }
                            td {
                                (view::decision(status_word(a, now)))
                                @if a.decided.is_none() && !a.is_expired(now) {
                                    " " span.hint { "expires in " (view::duration(a.expires_at - now)) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The undecided, unexpired approvals `person` may see, newest first.
pub async fn pending_for(
    state: &AppState,
    person: &Person,
    now: i64,
) -> Result<Vec<StoredApproval>, Failure> {
    Ok(visible(state, person)
        .await?
        .into_iter()
        .filter(|s| s.approval.decided.is_none() && !s.approval.is_expired(now))
        .collect())
}

/// The pending list (refreshed live on the queue and the dashboard).
pub fn pending_markup(pending: &[StoredApproval], now: i64) -> Markup {
    let refs: Vec<&StoredApproval> = pending.iter().collect();
    html! {
        @if refs.is_empty() {
            (view::empty("Nothing is waiting for a decision."))
        } @else {
            p { (refs.len()) " waiting for a decision." }
            (rows(&refs, now))
        }
    }
}

/// `GET /console/approvals`: what waits for a decision, then the latest decided.
pub async fn queue(State(state): State<Arc<AppState>>, person: Person) -> Result<Markup, Failure> {
    let now = state.clock.now();
    let list = visible(&state, &person).await?;
    let (pending, done): (Vec<StoredApproval>, Vec<StoredApproval>) = list
        .into_iter()
        .partition(|s| s.approval.decided.is_none() && !s.approval.is_expired(now));
    let recent: Vec<&StoredApproval> = done.iter().take(RECENT).collect();
    let body = html! {
        section aria-labelledby="pending-h" {
            h2 id="pending-h" { "Waiting for a decision" }
            div id="approval-list" aria-live="polite"
                hx-get="/console/approvals/list" hx-trigger="sse:approvals" hx-swap="innerHTML" {
                (pending_markup(&pending, now))
            }
        }
        section aria-labelledby="recent-h" {
            h2 id="recent-h" { "Recently decided" }
            @if recent.is_empty() {
                (view::empty("No decisions yet."))
            } @else {
                (rows(&recent, now))
            }
        }
    };
    let owned = person.owned_agents(&state);
    Ok(view::page(
        &person,
        owned,
        Section::Approvals,
        "Approvals",
        body,
    ))
}

/// `GET /console/approvals/list`: the pending list alone, for the live refresh.
pub async fn list_fragment(
    State(state): State<Arc<AppState>>,
    person: Person,
) -> Result<Markup, Failure> {
    let now = state.clock.now();
    Ok(pending_markup(
        &pending_for(&state, &person, now).await?,
        now,
    ))
}

fn not_found(id: &str) -> Failure {
    ApiError::not_found(format!(
        "no approval `{}`",
        id.chars().take(64).collect::<String>()
    ))
    .into()
}

/// The held request, as the approver must see it: method, path, where it goes, headers, body.
fn held_request(payload: &str) -> Markup {
    let Ok(held) = serde_json::from_str::<HeldRequest>(payload) else {
        return view::empty("The held request could not be read.");
    };
    let body = String::from_utf8_lossy(&held.body);
    let shown: String = body.chars().take(BODY_SHOWN).collect();
    let cut = body.chars().count() > BODY_SHOWN;
    let target = match &held.query {
        Some(q) => format!("{}?{q}", held.path),
        None => held.path.clone(),
    };
    html! {
        (view::facts(&[
            ("Request", html! { code { (held.method) " " (target) } }),
            ("Sent to", html! { "upstream " code { (held.upstream) } " at " code { (held.upstream_path) } }),
            ("Action", html! { code { (held.action) } }),
            ("Resource", html! { code { (held.resource) } }),
        ]))
        @if !held.headers.is_empty() {
            h3 { "Headers" }
            ul { @for (k, v) in &held.headers { li { code { (k) ": " (v) } } } }
        }
        h3 { "Body" }
        @if shown.is_empty() {
            (view::empty("No body."))
        } @else {
            pre { (shown) }
            @if cut { p.hint { "(the first " (BODY_SHOWN) " characters)" } }
        }
    }
}

fn ask_detail(s: &StoredApproval) -> Markup {
    match &s.approval.ask {
        Ask::HeldWrite { .. } => held_request(&s.payload),
        Ask::Escalation {
            scope,
            stage,
            audience,
        } => view::facts(&[
            ("Scopes", html! { code { (scope) } }),
            ("Stage", html! { (stage.as_str()) }),
            ("Audience", html! { code { (audience) } }),
        ]),
        Ask::AgentChange {
            agent,
            ceiling,
            max_stage,
        } => view::facts(&[
            ("Agent", html! { (agent) }),
            (
                "New ceiling",
                html! { @match ceiling { Some(c) => code { (c.join(" ")) }, None => "unchanged" } },
            ),
            (
                "New maximum stage",
                html! { @match max_stage { Some(m) => (m.as_str()), None => "unchanged" } },
            ),
        ]),
    }
}

/// `GET /console/approvals/{id}`.
pub async fn detail(
    State(state): State<Arc<AppState>>,
    person: Person,
    Path(id): Path<String>,
) -> Result<Markup, Failure> {
    let s = state
        .store
        .approval(&id)
        .await?
        .ok_or_else(|| not_found(&id))?;
    let a = &s.approval;
    if !may_see(&state, &person, a) {
        return Err(not_found(&id));
    }
    let now = state.clock.now();
    let why_not = cannot_decide(&state, &person, a, now);
    let outcome_status = s
        .outcome
        .as_deref()
        .and_then(|o| serde_json::from_str::<serde_json::Value>(o).ok())
        .and_then(|o| o.get("status").cloned());
    let body = html! {
        p.message { strong { "What will happen: " } (a.binding_message) }
        (view::facts(&[
            ("Status", view::decision(status_word(a, now))),
            ("Kind", html! { (a.ask.kind()) }),
            ("Who asks", html! { (view::who(a.user.as_deref(), &a.chain)) }),
            ("Task", html! { @match &a.task {
                Some(t) => a href={ "/console/tasks/" (view::urlencode(t)) } { (t) },
                None => "none",
            } }),
            ("Justification", html! { @if a.justification.is_empty() { "none given" } @else { (a.justification) } }),
            ("Asked", view::time(a.created_at)),
            ("Expires", view::time(a.expires_at)),
        ]))
        section aria-labelledby="held-h" {
            h2 id="held-h" { @if matches!(a.ask, Ask::HeldWrite { .. }) { "The held request" } @else { "What is asked" } }
            (ask_detail(&s))
        }
        @if let Some(d) = &a.decided {
            section aria-labelledby="decision-h" {
                h2 id="decision-h" { "Decision" }
                (view::facts(&[
                    ("Decision", view::decision(if d.approved { "approved" } else { "denied" })),
                    ("By", html! { (d.by) }),
                    ("Reason", html! { @if d.reason.is_empty() { "none given" } @else { (d.reason) } }),
                    ("When", view::time(d.at)),
                    ("Carried out", html! {
                        (s.dispatch.as_str())
                        @if let Some(st) = &outcome_status { " — the upstream answered " (st) }
                    }),
                ]))
            }
        }
        @match &why_not {
            Some(why) => p.hint { (why) },
            None => section aria-labelledby="decide-h" {
                h2 id="decide-h" { "Decide" }
                form.stack method="post" action={ "/console/approvals/" (view::urlencode(&a.id)) "/decide" } {
                    (view::csrf(&person))
                    label for="reason" { "Reason (recorded in the audit log)" }
                    textarea id="reason" name="reason" rows="3" maxlength=(MAX_REASON_BYTES) {}
                    div.actions {
                        button type="submit" name="decision" value="approve" { "Approve" }
                        button.danger type="submit" name="decision" value="deny" { "Deny" }
                    }
                }
            },
        }
    };
    let owned = person.owned_agents(&state);
    let title = format!("Approval {}", a.id);
    Ok(view::page(&person, owned, Section::Approvals, &title, body))
}

/// The decide form.
#[derive(Debug, Deserialize)]
pub struct DecideForm {
    /// `approve` or `deny`.
    #[serde(default)]
    pub decision: String,
    /// Why.
    #[serde(default)]
    pub reason: String,
}

/// `POST /console/approvals/{id}/decide`.
pub async fn decide(
    State(state): State<Arc<AppState>>,
    Extension(rid): Extension<RequestId>,
    Path(id): Path<String>,
    posted: Posted<DecideForm>,
) -> Result<Response, Failure> {
    let approved = match posted.form.decision.as_str() {
        "approve" => true,
        "deny" => false,
        other => {
            return Err(ApiError::bad_request(format!(
                "`decision` must be `approve` or `deny`, not `{}`",
                other.chars().take(40).collect::<String>()
            ))
            .into());
        }
    };
    let reason = posted.form.reason.trim().to_owned();
    if reason.len() > MAX_REASON_BYTES {
        return Err(ApiError::bad_request(format!(
            "the reason is longer than {MAX_REASON_BYTES} bytes"
        ))
        .into());
    }
    let ruling = Ruling {
        approved,
        reason,
        request_id: Some(rid.0),
    };
    gates::decide(&state, &id, &posted.person.user, ruling).await?;
    Ok(Redirect::to(&format!("/console/approvals/{}", view::urlencode(&id))).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mandate_core::stage::Stage;

    #[test]
    fn what_is_asked_reads_as_a_sentence() {
        let held = Ask::HeldWrite {
            method: "POST".into(),
            path: "/tickets".into(),
            action: "tickets:create".into(),
            resource: "tickets".into(),
        };
        assert_eq!(asked(&held), "POST /tickets (tickets:create)");
        let esc = Ask::Escalation {
            scope: "billing.payments:create".into(),
            stage: Stage::Execute,
            audience: "https://billing".into(),
        };
        assert_eq!(
            asked(&esc),
            "a `execute` token for billing.payments:create at https://billing"
        );
    }

    #[test]
    fn an_unreadable_held_request_says_so() {
        let m = held_request("not json").into_string();
        assert!(m.contains("could not be read"), "{m}");
    }
}

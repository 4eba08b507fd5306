//! The dashboard: agents, active tasks, issuance and denial over the last day, tripped
//! breakers, and what waits for this person's decision.
//!
//! Admins and auditors see the whole deployment; everyone else sees their own agents and
//! tasks, and the approvals they may decide.

use std::sync::Arc;

use axum::extract::State;
use mandate_core::agent::AgentStatus;
use mandate_core::compliance::AuditCounts;
use mandate_core::task::TaskStatus;
use mandate_store::{AuditFilter, TaskFilter};
use maud::{Markup, html};

use super::Failure;
use super::session::Person;
use super::view::{self, Section};
use crate::state::AppState;

/// The window of the rates shown, seconds.
const WINDOW: i64 = 24 * 3600;

/// Tokens issued and requests refused in a window, from the audit log's counts.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Rates {
    /// Tokens issued (`token.*` events allowed).
    pub issued: u64,
    /// Refusals of any kind.
    pub denied: u64,
    /// Decisions of any kind (allowed or denied).
    pub decided: u64,
}

impl Rates {
    /// Counts from the audit log's per-kind totals.
    pub fn from_counts(c: &AuditCounts) -> Rates {
        let mut r = Rates::default();
        for g in &c.groups {
            match g.decision.as_str() {
                "allow" => {
                    r.decided += g.count;
                    if g.kind.starts_with("token.") {
                        r.issued += g.count;
                    }
                }
                "deny" => {
                    r.decided += g.count;
                    r.denied += g.count;
                }
                _ => {}
            }
        }
        r
    }

    /// The share of decisions that were refusals, as `12.5%`.
    pub fn denial_rate(&self) -> String {
        if self.decided == 0 {
            return "—".into();
        }
        let tenths = self.denied * 1000 / self.decided;
        format!("{}.{}%", tenths / 10, tenths % 10)
    }
}

fn card(n: impl std::fmt::Display, label: &str, href: &str) -> Markup {
    html! {
        li { a href=(href) { span.n { (n) } span.label { (label) } } }
    }
}

/// `GET /console`.
pub async fn page(State(state): State<Arc<AppState>>, person: Person) -> Result<Markup, Failure> {
    let now = state.clock.now();
    let everything = person.sees_everything();
    let agents: Vec<_> = state
        .directory
        .all()
        .into_iter()
        .filter(|a| everything || person.owns(a))
        .collect();
    let active_agents = agents
        .iter()
        .filter(|a| a.status == AgentStatus::Active)
        .count();
    let suspended: Vec<_> = agents
        .iter()
        .filter(|a| a.status == AgentStatus::Suspended)
        .collect();
    let tasks = state
        .store
        .tasks(&TaskFilter {
            status: Some(TaskStatus::Active),
            limit: Some(1000),
            ..Default::default()
        })
        .await?;
    let active_tasks = tasks
        .iter()
        .filter(|t| {
            everything
                || t.user.as_deref() == Some(person.subject())
                || agents.iter().any(|a| a.id.as_str() == t.agent)
        })
        .count();
    let pending = super::approvals::pending_for(&state, &person, now).await?;
    let since = mandate_core::time::rfc3339_millis((now - WINDOW).saturating_mul(1000));
    let (rates, breakers) = if everything {
        let counts = state.store.audit_counts(&since).await?;
        let breakers = state
            .store
            .audit(&AuditFilter {
                kind: Some("gateway.breaker".into()),
                since: Some(since.clone()),
                limit: Some(20),
                ..Default::default()
            })
            .await?;
        (Some(Rates::from_counts(&counts)), breakers)
    } else {
        (None, Vec::new())
    };
    let body = html! {
        ul.cards aria-label="At a glance" {
            (card(format!("{active_agents} / {}", agents.len()), if everything { "agents active" } else { "of your agents active" }, "/console/agents"))
            (card(active_tasks, "active tasks", "/console/tasks?status=active"))
            (card(pending.len(), "approvals waiting", "/console/approvals"))
            @if let Some(r) = &rates {
                (card(r.issued, "tokens issued (24 h)", "/console/audit?decision=allow"))
                (card(format!("{} ({})", r.denied, r.denial_rate()), "refusals (24 h)", "/console/audit?decision=deny"))
                (card(breakers.len(), "breakers tripped (24 h)", "/console/audit?kind=gateway.breaker"))
            }
        }
        section aria-labelledby="waiting-h" {
            h2 id="waiting-h" { "Waiting for a decision" }
            div id="approval-list" aria-live="polite"
                hx-get="/console/approvals/list" hx-trigger="sse:approvals" hx-swap="innerHTML" {
                (super::approvals::pending_markup(&pending, now))
            }
        }
        @if !suspended.is_empty() {
            section aria-labelledby="suspended-h" {
                h2 id="suspended-h" { "Suspended agents" }
                ul { @for a in &suspended {
                    li { a href={ "/console/agents/" (view::urlencode(a.id.as_str())) } { (a.id.as_str()) } " — " (a.name) }
                } }
            }
        }
        @if everything {
            section aria-labelledby="breakers-h" {
                h2 id="breakers-h" { "Tripped breakers" }
                @if breakers.is_empty() {
                    (view::empty("No breaker tripped in the last 24 hours."))
                } @else {
                    (view::events_table(&breakers))
                }
            }
        }
    };
    let owned = person.owned_agents(&state);
    Ok(view::page(
        &person,
        owned,
        Section::Dashboard,
        "Dashboard",
        body,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mandate_core::compliance::EventCount;

    fn group(kind: &str, decision: &str, count: u64) -> EventCount {
        EventCount {
            kind: kind.into(),
            decision: decision.into(),
            code: None,
            count,
            with_task: 0,
            with_principal: 0,
        }
    }

    #[test]
    fn rates_count_issuance_and_refusals() {
        let counts = AuditCounts {
            groups: vec![
                group("token.exchange", "allow", 6),
                group("token.client_credentials", "allow", 1),
                group("gateway.request", "allow", 1),
                group("token.exchange", "deny", 2),
                group("revocation", "info", 5),
            ],
            ..Default::default()
        };
        let r = Rates::from_counts(&counts);
        assert_eq!((r.issued, r.denied, r.decided), (7, 2, 10));
        assert_eq!(r.denial_rate(), "20.0%");
        assert_eq!(Rates::default().denial_rate(), "—");
    }
}

//! Agents: the list, one agent's detail, and suspend/resume/retire with confirmation.
//!
//! Admins and auditors see every agent; everyone else sees the agents they own. Admins and an
//! agent's owner may suspend, resume or retire it, through the same
//! [`crate::admin::agents::set_status`] the admin API uses (so the change is a revocation of
//! the agent, audited as `user:<subject>`).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use mandate_core::agent::{Agent, AgentKey, AgentStatus, WorkloadBinding};
use mandate_core::audit::AuditEvent;
use mandate_core::posture::{self as rules, BlastRadius, DAY, DEFAULT_UNUSED_DAYS, Usage};
use mandate_core::scope::ActionClass;
use mandate_store::AuditFilter;
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::Value;

use super::Failure;
use super::session::{Person, Posted};
use super::view::{self, Section};
use crate::error::ApiError;
use crate::state::AppState;

/// How many recent audit events an agent's page shows.
const RECENT_EVENTS: u32 = 20;
/// Longest reason accepted with a status change, characters.
const MAX_REASON_CHARS: usize = 500;

/// At most 64 characters of user input, for messages.
fn short(s: &str) -> String {
    s.chars().take(64).collect()
}

/// A status change offered in the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Active → suspended: a revocation of the agent; it can be resumed.
    Suspend,
    /// Suspended → active.
    Resume,
    /// Active or suspended → retired, for good.
    Retire,
}

impl Action {
    /// Every action, in the order the buttons are shown.
    pub const ALL: [Action; 3] = [Action::Suspend, Action::Resume, Action::Retire];

    /// The action named in the URL (`suspend`, `resume`, `retire`).
    pub fn parse(s: &str) -> Option<Action> {
        match s {
            "suspend" => Some(Action::Suspend),
            "resume" => Some(Action::Resume),
            "retire" => Some(Action::Retire),
            _ => None,
        }
    }

    /// The name in the URL.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Suspend => "suspend",
            Action::Resume => "resume",
            Action::Retire => "retire",
        }
    }

    /// The verb on a button: `Suspend`.
    pub fn verb(self) -> &'static str {
        match self {
            Action::Suspend => "Suspend",
            Action::Resume => "Resume",
            Action::Retire => "Retire",
        }
    }

    /// The status it leads to.
    pub fn target(self) -> AgentStatus {
        match self {
            Action::Suspend => AgentStatus::Suspended,
            Action::Resume => AgentStatus::Active,
            Action::Retire => AgentStatus::Retired,
        }
    }

    /// Whether it is destructive (its button is red).
    pub fn is_danger(self) -> bool {
        matches!(self, Action::Suspend | Action::Retire)
    }

    /// Whether it makes sense for an agent in `status`.
    pub fn applies_to(self, status: AgentStatus) -> bool {
        matches!(
            (self, status),
            (Action::Suspend, AgentStatus::Active)
                | (Action::Resume, AgentStatus::Suspended)
                | (Action::Retire, AgentStatus::Active | AgentStatus::Suspended)
        )
    }

    /// The actions offered for an agent in `status` (none once it is retired).
    pub fn offered(status: AgentStatus) -> Vec<Action> {
        Action::ALL
            .into_iter()
            .filter(|a| a.applies_to(status))
            .collect()
    }

    /// The status agent `id` (now `status`) would get, or why the action does not apply.
    pub fn transition(self, id: &str, status: AgentStatus) -> Result<AgentStatus, ApiError> {
        if self.applies_to(status) {
            return Ok(self.target());
        }
        Err(ApiError::conflict(match status {
            AgentStatus::Retired => format!("agent `{id}` is retired; retirement is final"),
            _ => format!(
                "agent `{id}` is already {}: there is nothing to {}",
                status.as_str(),
                self.as_str()
            ),
        }))
    }

    /// What happens, in plain words, for the confirmation page.
    pub fn consequences(self, id: &str) -> Vec<String> {
        match self {
            Action::Suspend => vec![
                format!(
                    "Suspending {id} ends every token it appears in — its own and every \
                     delegation through it — everywhere, at once: verifiers following the \
                     revocation stream refuse them within milliseconds."
                ),
                format!("{id} cannot obtain a new token until it is resumed."),
                "Its keys, ceiling, tasks and audit record are kept.".to_owned(),
            ],
            Action::Resume => vec![
                format!("Resuming {id} lets it obtain new tokens again."),
                "The tokens the suspension ended stay ended.".to_owned(),
            ],
            Action::Retire => vec![
                format!(
                    "Retiring {id} ends every token it appears in, everywhere, at once, as \
                     suspending does."
                ),
                format!(
                    "Retiring is final: {id} can never obtain a token, be resumed or be \
                     changed again."
                ),
                "Its audit record is kept.".to_owned(),
            ],
        }
    }
}

/// The badge of an agent's status: active is fine, suspended a warning, retired gone.
pub fn status_badge(status: AgentStatus) -> Markup {
    let class = match status {
        AgentStatus::Active => "badge ok",
        AgentStatus::Suspended => "badge warn",
        AgentStatus::Retired => "badge bad",
    };
    html! { span class=(class) { (status.as_str()) } }
}

/// The agent `id`, if it exists and `person` may see it.
fn visible(state: &AppState, person: &Person, id: &str) -> Result<Arc<Agent>, Failure> {
    let agent = state
        .directory
        .get(id)
        .ok_or_else(|| ApiError::not_found(format!("agent `{}` not found", short(id))))?;
    if !person.may_see_agent(&agent) {
        return Err(ApiError::forbidden(format!(
            "agent `{}` is owned by `{}`; only its owner, admins and auditors may see it",
            agent.id, agent.owner
        ))
        .into());
    }
    Ok(agent)
}

/// The agent `id` and the status `action` (as named in the URL) would give it, if `person` may
/// make that change now.
fn changeable(
    state: &AppState,
    person: &Person,
    id: &str,
    action: &str,
) -> Result<(Arc<Agent>, Action, AgentStatus), Failure> {
    let agent = visible(state, person, id)?;
    let action = Action::parse(action).ok_or_else(|| {
        ApiError::not_found(format!(
            "no such action `{}`: an agent can be suspended, resumed or retired",
            short(action)
        ))
    })?;
    if !person.may_manage_agent(&agent) {
        return Err(ApiError::forbidden(format!(
            "only the owner of agent `{}` (`{}`) and admins may {} it; `{}` is neither",
            agent.id,
            agent.owner,
            action.as_str(),
            person.subject()
        ))
        .into());
    }
    let to = action.transition(agent.id.as_str(), agent.status)?;
    Ok((agent, action, to))
}

/// `GET /console/agents`.
pub async fn list(State(state): State<Arc<AppState>>, person: Person) -> Result<Markup, Failure> {
    let all = state.directory.all();
    let owned = all.iter().filter(|a| person.owns(a)).count();
    let shown: Vec<&Arc<Agent>> = all.iter().filter(|a| person.may_see_agent(a)).collect();
    let now = state.clock.now();
    let body = html! {
        @if person.sees_everything() {
            p.hint { "Every registered agent. Select one to see its credentials, blast radius and activity." }
        } @else {
            p.hint { "The agents you own. Admins and auditors see every agent." }
        }
        @if shown.is_empty() {
            (view::empty(if person.sees_everything() {
                "No agents are registered yet."
            } else {
                "You own no agents, so there are none to show."
            }))
        } @else {
            (agents_table(&shown, now))
        }
    };
    Ok(view::page(&person, owned, Section::Agents, "Agents", body))
}

fn agents_table(agents: &[&Arc<Agent>], now: i64) -> Markup {
    html! {
        div.table-wrap {
            table {
                caption.hint { (agents.len()) " agents" }
                thead { tr {
                    th scope="col" { "Agent" } th scope="col" { "Name" } th scope="col" { "Owner" }
                    th scope="col" { "Status" } th scope="col" { "Max stage" }
                    th scope="col" { "Ceiling" } th scope="col" { "Keys" }
                    th scope="col" { "Workloads" }
                } }
                tbody {
                    @for a in agents {
                        tr {
                            td { a.mono href={ "/console/agents/" (view::urlencode(a.id.as_str())) } { (a.id) } }
                            td { (a.name) }
                            td { (a.owner) }
                            td { (status_badge(a.status)) }
                            td { (a.max_stage.as_str()) }
                            td {
                                @for (i, p) in a.ceiling.iter().enumerate() {
                                    @if i > 0 { " " }
                                    code { (p.as_str()) }
                                }
                            }
                            td { (key_count(&a.keys, now)) }
                            td { (a.workloads.len()) }
                        }
                    }
                }
            }
        }
    }
}

/// `2`, or `1 of 2 usable` when some keys are expired or revoked.
pub fn key_count(keys: &[AgentKey], now: i64) -> String {
    let usable = keys.iter().filter(|k| k.usable_at(now)).count();
    if usable == keys.len() {
        usable.to_string()
    } else {
        format!("{usable} of {} usable", keys.len())
    }
}

/// The signature algorithm of a public JWK: its `alg`, else what its key type implies.
pub fn key_alg(jwk: &Value) -> String {
    let field = |name: &str| jwk.get(name).and_then(Value::as_str).unwrap_or_default();
    if !field("alg").is_empty() {
        return field("alg").to_owned();
    }
    match (field("kty"), field("crv")) {
        ("OKP", "Ed25519") => "EdDSA".to_owned(),
        ("EC", "P-256") => "ES256".to_owned(),
        ("EC", "P-384") => "ES384".to_owned(),
        ("EC", "P-521") => "ES512".to_owned(),
        ("RSA", _) => "RSA".to_owned(),
        ("", _) => "unknown".to_owned(),
        (kty, "") => kty.to_owned(),
        (kty, crv) => format!("{kty} {crv}"),
    }
}

/// `GET /console/agents/{id}`.
pub async fn detail(
    State(state): State<Arc<AppState>>,
    person: Person,
    Path(id): Path<String>,
) -> Result<Markup, Failure> {
    let agent = visible(&state, &person, &id)?;
    let now = state.clock.now();
    let events = state
        .store
        .audit(&AuditFilter {
            agent: Some(agent.id.as_str().to_owned()),
            limit: Some(RECENT_EVENTS),
            newest_first: true,
            ..AuditFilter::default()
        })
        .await?;
    let usage = state
        .store
        .usage(now.saturating_sub(DEFAULT_UNUSED_DAYS * DAY))
        .await?;
    let justifications = state.store.justifications().await?;
    let radius = (agent.status != AgentStatus::Retired).then(|| {
        rules::blast_radius(
            &agent,
            &usage,
            &crate::posture::exposure(&state),
            &state.config.catalog,
        )
    });
    let why = |pattern: &str| {
        justifications
            .iter()
            .find(|j| j.agent == agent.id.as_str() && j.pattern == pattern)
            .map(|j| j.text.clone())
    };
    let ceiling: Vec<(String, ActionClass, Option<String>)> = agent
        .ceiling
        .iter()
        .map(|p| {
            (
                p.as_str().to_owned(),
                rules::pattern_class(p, &state.config.catalog),
                why(p.as_str()),
            )
        })
        .collect();
    let page = Detail {
        agent: &agent,
        now,
        ceiling: &ceiling,
        usage: &usage,
        radius: radius.as_ref(),
        events: &events,
        actions: if person.may_manage_agent(&agent) {
            Action::offered(agent.status)
        } else {
            Vec::new()
        },
    };
    let title = format!("Agent {}", agent.id);
    Ok(view::page(
        &person,
        person.owned_agents(&state),
        Section::Agents,
        &title,
        page.render(),
    ))
}

/// What an agent's page shows.
struct Detail<'a> {
    agent: &'a Agent,
    now: i64,
    /// Each ceiling pattern with its class and recorded justification.
    ceiling: &'a [(String, ActionClass, Option<String>)],
    usage: &'a Usage,
    radius: Option<&'a BlastRadius>,
    /// Newest first.
    events: &'a [AuditEvent],
    actions: Vec<Action>,
}

impl Detail<'_> {
    fn render(&self) -> Markup {
        let a = self.agent;
        let id = a.id.as_str();
        html! {
            (view::facts(&[
                ("Name", html! { (a.name) }),
                ("Id", html! { code { (id) } }),
                ("Description", html! { @if a.description.is_empty() { span.hint { "none" } } @else { (a.description) } }),
                ("Owner", html! { (a.owner) }),
                ("Status", status_badge(a.status)),
                ("Max stage", html! { (a.max_stage.as_str()) }),
                ("Tags", html! { @if a.tags.is_empty() { span.hint { "none" } } @else { @for t in &a.tags { code { (t) } " " } } }),
                ("DPoP", html! { @if a.require_dpop { "required for every token" } @else { "not required" } }),
                ("Registered", view::time(a.created_at)),
                ("Last changed", view::time(a.updated_at)),
                ("Last use", last_use(self.events.first())),
            ]))
            @if !self.actions.is_empty() {
                div.actions {
                    @for act in &self.actions {
                        a.button href={ "/console/agents/" (view::urlencode(id)) "/" (act.as_str()) } {
                            (act.verb()) " " (id)
                        }
                    }
                }
            }
            h2 { "Ceiling" }
            @if self.ceiling.is_empty() {
                (view::empty("The ceiling is empty: this agent can hold no scope."))
            } @else {
                p.hint { "The most this agent may ever hold; each token holds at most a part of it." }
                ul {
                    @for (pattern, class, why) in self.ceiling {
                        li {
                            code { (pattern) } " "
                            @match class {
                                ActionClass::Read => span.badge { "read" },
                                ActionClass::Write => span.badge.warn { "write" },
                            }
                            @if let Some(why) = why { " — " (why) }
                        }
                    }
                }
            }
            h2 { "Credentials" }
            (self.keys())
            (workloads(&a.workloads))
            h2 { "Blast radius" }
            @match self.radius {
                Some(b) => (super::posture::blast_radius(b)),
                None => (view::empty("A retired agent has no blast radius: it can obtain no token.")),
            }
            h2 { "Recent activity" }
            p.hint { "The latest " (RECENT_EVENTS) " audit events naming this agent, newest first." }
            (view::events_table(self.events))
        }
    }

    fn keys(&self) -> Markup {
        let a = self.agent;
        if a.keys.is_empty() {
            return view::empty("No registered keys.");
        }
        html! {
            div.table-wrap {
                table {
                    caption.hint { "Registered keys (private_key_jwt)" }
                    thead { tr {
                        th scope="col" { "Key id" } th scope="col" { "Algorithm" }
                        th scope="col" { "Added" } th scope="col" { "Age" }
                        th scope="col" { "Expires" } th scope="col" { "State" }
                        th scope="col" { "Last used" }
                    } }
                    tbody {
                        @for k in &a.keys {
                            tr {
                                td.mono { (k.kid) }
                                td { (key_alg(&k.jwk)) }
                                td { (view::time(k.created_at)) }
                                td { (view::duration(self.now - k.created_at)) }
                                td {
                                    @match k.expires_at {
                                        Some(e) => (view::time(e)),
                                        None => span.badge.warn { "never expires" },
                                    }
                                }
                                td { (key_state(k, self.now)) }
                                td {
                                    @match self.usage.key_last_used(a.id.as_str(), &k.kid) {
                                        Some(t) => (view::time(t)),
                                        None => span.hint { "not in the last " (DEFAULT_UNUSED_DAYS) " days" },
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A key's state: usable, expired or revoked.
fn key_state(k: &AgentKey, now: i64) -> Markup {
    if let Some(at) = k.revoked_at {
        return html! { span.badge.bad { "revoked" } " " (view::time(at)) };
    }
    if k.usable_at(now) {
        html! { span.badge.ok { "usable" } }
    } else {
        html! { span.badge.bad { "expired" } }
    }
}

fn workloads(bindings: &[WorkloadBinding]) -> Markup {
    if bindings.is_empty() {
        return html! { p.hint { "No workload identities are bound to this agent." } };
    }
    html! {
        div.table-wrap {
            table {
                caption.hint { "Workload identities that prove this agent" }
                thead { tr { th scope="col" { "Kind" } th scope="col" { "Identity" } } }
                tbody {
                    @for w in bindings {
                        tr {
                            @match w {
                                WorkloadBinding::Spiffe { id } => {
                                    td { "SPIFFE ID" }
                                    td.mono { (id) }
                                }
                                WorkloadBinding::Oidc { issuer, subject } => {
                                    td { "OIDC workload" }
                                    td.mono { (issuer) " subject " (subject) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn last_use(latest: Option<&AuditEvent>) -> Markup {
    match latest {
        Some(e) => html! {
            time datetime=(e.time) { (e.time) } " — " code { (e.kind) }
            @if let Some(action) = e.action.as_ref().filter(|a| **a != e.kind) { " " code { (action) } }
        },
        None => html! { span.hint { "no audit event names this agent yet" } },
    }
}

/// `GET /console/agents/{id}/{action}`: the confirmation page.
pub async fn confirm(
    State(state): State<Arc<AppState>>,
    person: Person,
    Path((id, action)): Path<(String, String)>,
) -> Result<Markup, Failure> {
    let (agent, action, _) = changeable(&state, &person, &id, &action)?;
    let id = agent.id.as_str();
    let detail = format!("/console/agents/{}", view::urlencode(id));
    let title = format!("{} {id}?", action.verb());
    let body = html! {
        div.message.bad {
            @for line in action.consequences(id) { p { (line) } }
        }
        (view::facts(&[
            ("Agent", html! { code { (id) } " — " (agent.name) }),
            ("Owner", html! { (agent.owner) }),
            ("Status now", status_badge(agent.status)),
            ("Status after", status_badge(action.target())),
        ]))
        form.stack method="post" action={ (detail) "/" (action.as_str()) } {
            (view::csrf(&person))
            label for="reason" {
                "Reason (optional)"
                textarea id="reason" name="reason" rows="3" maxlength=(MAX_REASON_CHARS) {}
            }
            div.actions {
                @if action.is_danger() {
                    button.danger type="submit" { (action.verb()) " " (id) }
                } @else {
                    button type="submit" { (action.verb()) " " (id) }
                }
                a href=(detail) { "Cancel" }
            }
        }
    };
    Ok(view::page(
        &person,
        person.owned_agents(&state),
        Section::Agents,
        &title,
        body,
    ))
}

/// The confirmation form.
#[derive(Debug, Deserialize)]
pub struct ChangeForm {
    /// Why, recorded in the audit event.
    #[serde(default)]
    pub reason: String,
}

/// `POST /console/agents/{id}/{action}`.
pub async fn change(
    State(state): State<Arc<AppState>>,
    Path((id, action)): Path<(String, String)>,
    posted: Posted<ChangeForm>,
) -> Result<Response, Failure> {
    let person = &posted.person;
    let (agent, _, to) = changeable(&state, person, &id, &action)?;
    if posted.form.reason.chars().count() > MAX_REASON_CHARS {
        return Err(ApiError::bad_request(format!(
            "the reason is longer than {MAX_REASON_CHARS} characters"
        ))
        .into());
    }
    let by = format!("user:{}", person.subject());
    let agent = crate::admin::agents::set_status(
        &state,
        &by,
        agent.id.as_str(),
        to,
        posted.form.reason.trim(),
    )
    .await?;
    Ok(Redirect::to(&format!(
        "/console/agents/{}",
        view::urlencode(agent.id.as_str())
    ))
    .into_response())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use axum::http::StatusCode;
    use serde_json::json;

    #[test]
    fn actions_offered_follow_the_status() {
        assert_eq!(
            Action::offered(AgentStatus::Active),
            vec![Action::Suspend, Action::Retire]
        );
        assert_eq!(
            Action::offered(AgentStatus::Suspended),
            vec![Action::Resume, Action::Retire]
        );
        assert!(Action::offered(AgentStatus::Retired).is_empty());
    }

    #[test]
    fn transitions_are_checked() {
        use AgentStatus::*;
        assert_eq!(Action::Suspend.transition("a", Active).unwrap(), Suspended);
        assert_eq!(Action::Resume.transition("a", Suspended).unwrap(), Active);
        assert_eq!(Action::Retire.transition("a", Active).unwrap(), Retired);
        assert_eq!(Action::Retire.transition("a", Suspended).unwrap(), Retired);
        let e = Action::Suspend.transition("a", Suspended).unwrap_err();
        assert_eq!(e.status, StatusCode::CONFLICT);
        assert!(e.message.contains("already suspended"), "{}", e.message);
        let e = Action::Resume.transition("a", Active).unwrap_err();
        assert!(e.message.contains("already active"), "{}", e.message);
        for a in Action::ALL {
            let e = a.transition("a", Retired).unwrap_err();
            assert_eq!(e.status, StatusCode::CONFLICT);
            assert!(e.message.contains("retirement is final"), "{}", e.message);
        }
    }

    #[test]
    fn actions_parse_and_name_themselves() {
        for a in Action::ALL {
            assert_eq!(Action::parse(a.as_str()), Some(a));
        }
        assert_eq!(Action::parse("delete"), None);
        assert_eq!(Action::parse("Suspend"), None);
        assert!(Action::Suspend.is_danger() && Action::Retire.is_danger());
        assert!(!Action::Resume.is_danger());
        assert!(
            Action::Retire
                .consequences("x")
                .iter()
                .any(|l| l.contains("final"))
        );
        assert!(
            Action::Suspend
                .consequences("x")
                .iter()
                .any(|l| l.contains("every token"))
        );
    }

    #[test]
    fn status_badges_say_the_status() {
        let s = status_badge(AgentStatus::Suspended).into_string();
        assert!(s.contains("badge warn") && s.contains(">suspended<"), "{s}");
        assert!(
            status_badge(AgentStatus::Retired)
                .into_string()
                .contains("badge bad")
        );
    }

    fn key(expires_at: Option<i64>, revoked_at: Option<i64>) -> AgentKey {
        AgentKey {
            kid: "k".into(),
            jwk: json!({}),
            expires_at,
            created_at: 0,
            revoked_at,
        }
    }

    #[test]
    fn keys_are_counted_by_usability() {
        assert_eq!(key_count(&[], 10), "0");
        assert_eq!(key_count(&[key(None, None), key(Some(100), None)], 10), "2");
        assert_eq!(
            key_count(
                &[key(None, None), key(Some(5), None), key(None, Some(3))],
                10
            ),
            "1 of 3 usable"
        );
    }

    #[test]
    fn key_algorithms_come_from_the_jwk() {
        assert_eq!(key_alg(&json!({"kty": "OKP", "crv": "Ed25519"})), "EdDSA");
        assert_eq!(key_alg(&json!({"kty": "EC", "crv": "P-256"})), "ES256");
        assert_eq!(key_alg(&json!({"kty": "RSA", "alg": "PS256"})), "PS256");
        assert_eq!(key_alg(&json!({"kty": "RSA"})), "RSA");
        assert_eq!(key_alg(&json!({"kty": "oct"})), "oct");
        assert_eq!(key_alg(&json!({})), "unknown");
    }
}

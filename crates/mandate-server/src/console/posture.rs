//! Posture and compliance reports, for admins and auditors (SPEC §8).
//!
//! Both pages show what the admin API's `GET /v1/posture` and `GET /v1/compliance` answer: the
//! posture report is [`crate::posture::report`] read back into its typed parts, and the
//! compliance report is the body of [`crate::compliance::Report::html`], which escapes every
//! value itself.

use std::sync::Arc;

use axum::extract::State;
use mandate_core::posture::{BlastRadius, Finding, InventoryEntry, Review, Severity};
use mandate_core::scope::ActionClass;
use maud::{Markup, PreEscaped, html};
use serde::Deserialize;

use super::Failure;
use super::agents::status_badge;
use super::session::Person;
use super::view::{self, Section};
use crate::error::ApiError;
use crate::state::AppState;

/// The posture report's counts.
#[derive(Debug, Default, Deserialize)]
struct Summary {
    agents: u64,
    findings: u64,
    open_reviews: u64,
    overdue_reviews: u64,
    critical: u64,
    high: u64,
    medium: u64,
    low: u64,
}

/// The judging settings the report names.
#[derive(Debug, Default, Deserialize)]
struct Settings {
    unused_days: i64,
    key_max_age_days: i64,
}

/// An open review as the report lists it.
#[derive(Debug, Deserialize)]
struct ReviewRow {
    #[serde(flatten)]
    review: Review,
    #[serde(default)]
    overdue: bool,
}

/// The posture report's JSON, read back into its parts.
#[derive(Debug, Deserialize)]
struct Posture {
    generated_at: String,
    settings: Settings,
    summary: Summary,
    inventory: Vec<InventoryEntry>,
    findings: Vec<Finding>,
    blast_radius: Vec<BlastRadius>,
    #[serde(default)]
    reviews: Vec<ReviewRow>,
}

/// `GET /console/posture`.
pub async fn report(State(state): State<Arc<AppState>>, person: Person) -> Result<Markup, Failure> {
    person.require_reader("the posture report")?;
    let json = crate::posture::report(&state, crate::posture::Options::default()).await?;
    let posture: Posture = serde_json::from_value(json).map_err(|e| {
        tracing::error!(error = %e, "the posture report does not read back");
        ApiError::server_error()
    })?;
    let body = render_posture(&posture, state.clock.now());
    Ok(view::page(
        &person,
        person.owned_agents(&state),
        Section::Posture,
        "Posture",
        body,
    ))
}

/// The badge of a finding's severity.
pub fn severity_badge(s: Severity) -> Markup {
    let class = match s {
        Severity::Critical | Severity::High => "badge bad",
        Severity::Medium => "badge warn",
        Severity::Low => "badge",
    };
    html! { span class=(class) { (s.as_str()) } }
}

fn agent_link(id: &str) -> Markup {
    html! { a.mono href={ "/console/agents/" (view::urlencode(id)) } { (id) } }
}

fn render_posture(p: &Posture, now: i64) -> Markup {
    let s = &p.summary;
    html! {
        p.hint {
            "Generated " (p.generated_at) ". A ceiling pattern no token held in "
            (p.settings.unused_days) " days is unused; a key older than "
            (p.settings.key_max_age_days) " days is old. "
            a href="/console/compliance" { "Compliance report" }
        }
        ul.cards {
            li { span.n { (s.agents) } span.label { "agents" } }
            li { span.n { (s.findings) } span.label { "findings" } }
            li { span.n { (s.critical) } span.label { "critical" } }
            li { span.n { (s.high) } span.label { "high" } }
            li { span.n { (s.medium) } span.label { "medium" } }
            li { span.n { (s.low) } span.label { "low" } }
            li { span.n { (s.open_reviews) } span.label { "open reviews" } }
            li { span.n { (s.overdue_reviews) } span.label { "overdue reviews" } }
        }
        h2 { "Findings" }
        (findings(&p.findings))
        h2 { "Inventory of non-human identities" }
        (inventory(&p.inventory, now))
        h2 { "Blast radius" }
        p.hint {
            "Each active or suspended agent, largest first: scope weight × velocity × detection \
             window, each term shown."
        }
        @if p.blast_radius.is_empty() {
            (view::empty("No agent that can obtain a token."))
        }
        @for b in &p.blast_radius {
            section aria-label={ "Blast radius of " (b.agent) } {
                h3 { (agent_link(&b.agent)) ": " (num(b.score)) }
                (blast_radius(b))
            }
        }
        h2 { "Open access reviews" }
        (reviews(&p.reviews))
    }
}

fn findings(list: &[Finding]) -> Markup {
    if list.is_empty() {
        return view::empty("No findings.");
    }
    html! {
        div.table-wrap {
            table {
                caption.hint { (list.len()) " findings, most severe first" }
                thead { tr {
                    th scope="col" { "Severity" } th scope="col" { "Check" }
                    th scope="col" { "Agent" } th scope="col" { "Subject" }
                    th scope="col" { "Problem" } th scope="col" { "Fix" }
                } }
                tbody {
                    @for f in list {
                        tr {
                            td { (severity_badge(f.severity)) }
                            td.mono { (f.id.id()) }
                            td { (agent_link(&f.agent)) }
                            td.mono { (f.subject) }
                            td { (code_spans(&f.problem)) }
                            td { (code_spans(&f.fix)) }
                        }
                    }
                }
            }
        }
    }
}

fn inventory(list: &[InventoryEntry], now: i64) -> Markup {
    if list.is_empty() {
        return view::empty("No agents are registered.");
    }
    html! {
        div.table-wrap {
            table {
                caption.hint { (list.len()) " agents" }
                thead { tr {
                    th scope="col" { "Agent" } th scope="col" { "Owner" }
                    th scope="col" { "Status" } th scope="col" { "Max stage" }
                    th scope="col" { "Ceiling" } th scope="col" { "Credentials" }
                    th scope="col" { "Registered" }
                } }
                tbody {
                    @for e in list {
                        tr {
                            td { (agent_link(&e.agent)) br; (e.name) }
                            td { @if e.owner.trim().is_empty() { span.badge.bad { "no owner" } } @else { (e.owner) } }
                            td { (status_badge(e.status)) }
                            td { (e.max_stage.as_str()) }
                            td {
                                ul {
                                    @for sc in &e.scopes {
                                        li {
                                            code { (sc.pattern) } " " (class_word(sc.class))
                                            @if sc.class == ActionClass::Write && sc.justification.is_none() {
                                                " " span.badge.warn { "unjustified" }
                                            }
                                            @if sc.last_used.is_none() { " " span.hint { "unused" } }
                                        }
                                    }
                                }
                            }
                            td {
                                @if e.credentials.is_empty() { span.hint { "no keys" } }
                                ul {
                                    @for c in &e.credentials {
                                        li {
                                            code { (c.kid) } ", " (c.age_days) " days old, "
                                            @match c.expires_at {
                                                Some(t) if t > now => { "expires " (view::time(t)) }
                                                Some(_) => span.badge.bad { "expired" },
                                                None => span.badge.warn { "never expires" },
                                            }
                                            @if c.revoked_at.is_some() { " " span.badge.bad { "revoked" } }
                                        }
                                    }
                                }
                            }
                            td { (view::time(e.created_at)) }
                        }
                    }
                }
            }
        }
    }
}

fn class_word(c: ActionClass) -> &'static str {
    match c {
        ActionClass::Read => "(read)",
        ActionClass::Write => "(write)",
    }
}

fn reviews(list: &[ReviewRow]) -> Markup {
    if list.is_empty() {
        return view::empty("No access review is open.");
    }
    html! {
        div.table-wrap {
            table {
                caption.hint { (list.len()) " open reviews" }
                thead { tr {
                    th scope="col" { "Review" } th scope="col" { "Agent" }
                    th scope="col" { "Owner" } th scope="col" { "Opened by" }
                    th scope="col" { "Due" } th scope="col" { "State" }
                } }
                tbody {
                    @for r in list {
                        tr {
                            td.mono { (r.review.id) }
                            td { (agent_link(&r.review.agent)) }
                            td { (r.review.owner) }
                            td { (r.review.opened_by) }
                            td { (view::time(r.review.due_at)) }
                            td {
                                @if r.overdue { span.badge.bad { "overdue" } }
                                @else { span.badge { (r.review.status.as_str()) } }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Text whose `` `code` `` spans are shown as `<code>` (as the reports write them), escaped by
/// maud like any text; an unpaired backtick stays as it is.
pub fn code_spans(text: &str) -> Markup {
    let parts: Vec<&str> = text.split('`').collect();
    let paired = parts.len() % 2 == 1;
    let last = parts.len().saturating_sub(1);
    html! {
        @for (i, part) in parts.iter().enumerate() {
            @if i % 2 == 1 && (paired || i != last) {
                code { (part) }
            } @else {
                @if i % 2 == 1 { "`" }
                (part)
            }
        }
    }
}

/// A number with at most two decimals, without trailing zeros: `600`, `0.5`, `12.25`.
pub fn num(x: f64) -> String {
    let s = format!("{x:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".to_owned()
    } else {
        s.to_owned()
    }
}

/// One agent's blast radius with each term and how it follows: the scope weight (each
/// pattern's weight), the velocity (the limits that apply) and the detection window (token
/// life, revocation latency, time to alert). No headings, so it fits under any.
pub fn blast_radius(b: &BlastRadius) -> Markup {
    let w = &b.scope_weight;
    let v = &b.velocity;
    let d = &b.detection_window;
    html! {
        (view::facts(&[
            ("Score", html! { strong { (num(b.score)) } " = " code { (b.formula) } }),
            ("Scope weight", html! {
                (w.total) br;
                span.hint { (code_spans(&w.rule)) }
            }),
            ("Velocity", html! {
                (num(v.per_minute)) " actions a minute "
                @if v.bounded { span.badge.ok { "bounded" } } @else { span.badge.warn { "unbounded" } }
                br; (code_spans(&v.explanation)) br;
                "Busiest minute observed: " (v.observed_peak_per_minute) " tokens"
                @if !v.limits.is_empty() {
                    ul {
                        @for l in &v.limits {
                            li {
                                code { (l.source) } ": " (num(l.per_minute)) " a minute"
                                @if l.binding { " (binding)" } " — " (code_spans(&l.why))
                            }
                        }
                    }
                }
            }),
            ("Detection window", html! {
                (num(d.minutes)) " minutes" br;
                "Token life " (view::duration(d.token_ttl_secs))
                " + revocation latency " (num(d.revocation_latency_ms)) " ms"
                " + time to alert " (view::duration(d.alerting_secs)) br;
                span.hint { (code_spans(&d.explanation)) }
            }),
        ]))
        @if !w.scopes.is_empty() {
            div.table-wrap {
                table {
                    caption.hint { "Scope weight of each ceiling pattern of " (b.agent) }
                    thead { tr {
                        th scope="col" { "Pattern" } th scope="col" { "Class" }
                        th scope="col" { "Wildcards" } th scope="col" { "Weight" }
                        th scope="col" { "Why" }
                    } }
                    tbody {
                        @for s in &w.scopes {
                            tr {
                                td.mono { (s.pattern) }
                                td { (class_word(s.class).trim_matches(['(', ')'])) }
                                td { (s.wildcards) }
                                td { (s.weight) }
                                td { (code_spans(&s.why)) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `GET /console/compliance`.
pub async fn compliance(
    State(state): State<Arc<AppState>>,
    person: Person,
) -> Result<Markup, Failure> {
    person.require_reader("the compliance report")?;
    let report = crate::compliance::report(&state, crate::compliance::Options::default()).await?;
    let html = report.html();
    let Some(inner) = embeddable(&html) else {
        tracing::error!("the compliance report's HTML has no body to embed");
        return Err(ApiError::server_error().into());
    };
    let body = html! {
        p.hint {
            "SOC 2, HIPAA, OWASP LLM06 and EU AI Act controls mapped to this deployment's own \
             configuration and audit log. "
            a href="/console/posture" { "Posture report" }
        }
        // The report escapes every value itself (`compliance::esc`, `html_inline`).
        div.compliance { (PreEscaped(inner)) }
    };
    Ok(view::page(
        &person,
        person.owned_agents(&state),
        Section::Posture,
        "Compliance report",
        body,
    ))
}

/// The part of the compliance report's standalone page that goes inside a console page: the
/// body without its `<h1>` (the console's layout has its own), header cells scoped to their
/// columns. `None` when the page is not shaped as expected.
pub fn embeddable(page: &str) -> Option<String> {
    let start = page.find("<body>")? + "<body>".len();
    let end = page.rfind("</body>")?;
    let body = page.get(start..end)?.trim_start();
    let body = match body.strip_prefix("<h1>") {
        Some(rest) => rest.get(rest.find("</h1>")? + "</h1>".len()..)?,
        None => body,
    };
    Some(body.replace("<th>", "<th scope=\"col\">"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use mandate_core::compliance::{Evidence, assess};

    #[test]
    fn code_spans_are_code_and_text_is_escaped() {
        assert_eq!(
            code_spans("agent `<x>` & y").into_string(),
            "agent <code>&lt;x&gt;</code> &amp; y"
        );
        assert_eq!(code_spans("a `b").into_string(), "a `b");
        assert_eq!(code_spans("`a` `b").into_string(), "<code>a</code> `b");
        assert_eq!(code_spans("").into_string(), "");
    }

    #[test]
    fn numbers_are_short() {
        assert_eq!(num(600.0), "600");
        assert_eq!(num(0.5), "0.5");
        assert_eq!(num(12.254), "12.25");
        assert_eq!(num(5.4), "5.4");
        assert_eq!(num(0.0), "0");
        assert_eq!(num(-0.001), "0");
    }

    #[test]
    fn severities_are_badged() {
        assert!(
            severity_badge(Severity::Critical)
                .into_string()
                .contains("badge bad")
        );
        let m = severity_badge(Severity::Medium).into_string();
        assert!(m.contains("badge warn") && m.contains(">medium<"), "{m}");
    }

    #[test]
    fn the_compliance_page_embeds_escaped() {
        let evidence = Evidence {
            issuer: "https://m.example/<script>".into(),
            samples: vec!["user:<b>".into()],
            ..Evidence::default()
        };
        let report = crate::compliance::Report {
            results: assess(&evidence),
            evidence,
        };
        let inner = embeddable(&report.html()).unwrap();
        assert!(!inner.contains("<h1>"), "{inner}");
        assert!(
            !inner.contains("<body") && !inner.contains("</body>"),
            "{inner}"
        );
        assert!(
            !inner.contains("<style") && !inner.contains("<head"),
            "{inner}"
        );
        assert!(
            !inner.contains("<script>") && !inner.contains("<b>"),
            "{inner}"
        );
        assert!(inner.contains("&lt;script&gt;"), "{inner}");
        assert!(inner.contains("SOC 2"), "{inner}");
        assert!(inner.contains("<th scope=\"col\">Control</th>"), "{inner}");
        assert!(!inner.contains("<th>"), "{inner}");
        assert_eq!(embeddable("<p>no body</p>"), None);
    }
}

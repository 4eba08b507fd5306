//! The page layout and small markup helpers shared by the console's pages.

use mandate_core::audit::AuditEvent;
use maud::{DOCTYPE, Markup, html};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::session::{CSRF_FIELD, Person};

/// The console's sections, for the navigation bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// The dashboard.
    Dashboard,
    /// Approvals.
    Approvals,
    /// Agents.
    Agents,
    /// Tasks.
    Tasks,
    /// Audit search.
    Audit,
    /// Posture and compliance.
    Posture,
}

impl Section {
    const ALL: [(Section, &'static str, &'static str); 6] = [
        (Section::Dashboard, "Dashboard", "/console"),
        (Section::Approvals, "Approvals", "/console/approvals"),
        (Section::Agents, "Agents", "/console/agents"),
        (Section::Tasks, "Tasks", "/console/tasks"),
        (Section::Audit, "Audit", "/console/audit"),
        (Section::Posture, "Posture", "/console/posture"),
    ];

    /// Audit and posture are for admins and auditors only.
    fn visible_to(self, person: &Person) -> bool {
        !matches!(self, Section::Audit | Section::Posture) || person.sees_everything()
    }
}

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            // htmx: no inline indicator styles (the CSP forbids them), no eval.
            meta name="htmx-config" content=r#"{"includeIndicatorStyles":false,"allowEval":false,"allowScriptTags":false}"#;
            title { (title) " · Mandate console" }
            link rel="stylesheet" href="/console/assets/console.css";
            script src="/console/assets/htmx.min.js" defer {}
            script src="/console/assets/htmx-sse.min.js" defer {}
        }
    }
}

/// A whole page for a signed-in person: header with navigation and who they are, the page's
/// heading, and `body`. The body listens to the console's event stream so that parts of a page
/// marked with `hx-trigger="sse:…"` refresh themselves.
pub fn page(person: &Person, owned: usize, section: Section, title: &str, body: Markup) -> Markup {
    let roles = person.role_names(owned);
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body hx-ext="sse" sse-connect="/console/events" {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/console" { "Mandate" }
                    nav aria-label="Console sections" {
                        ul {
                            @for (s, label, href) in Section::ALL {
                                @if s.visible_to(person) {
                                    li {
                                        @if s == section {
                                            a href=(href) aria-current="page" { (label) }
                                        } @else {
                                            a href=(href) { (label) }
                                        }
                                    }
                                }
                            }
                        }
                    }
                    div.who {
                        span { "Signed in as " strong { (person.subject()) } }
                        @if !roles.is_empty() {
                            span.roles { " (" (roles.join(", ")) ")" }
                        }
                        form method="post" action="/console/sign-out" {
                            (csrf(person))
                            button.link type="submit" { "Sign out" }
                        }
                    }
                }
                main id="main" {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// A page without navigation: sign-in, errors.
pub fn bare_page(title: &str, message: &str) -> Markup {
    bare(
        title,
        html! {
            p.message { (message) }
            p { a href="/console" { "Back to the console" } }
        },
    )
}

/// A page without navigation around `body`.
pub fn bare(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                main id="main" .narrow {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// The hidden CSRF field every form carries.
pub fn csrf(person: &Person) -> Markup {
    html! { input type="hidden" name=(CSRF_FIELD) value=(person.csrf()); }
}

/// A Unix time as `2026-11-24 17:03:09 UTC`, in a `<time>` element.
pub fn time(unix: i64) -> Markup {
    let Ok(t) = OffsetDateTime::from_unix_timestamp(unix) else {
        return html! { (unix) };
    };
    let machine = t.format(&Rfc3339).unwrap_or_default();
    let shown = format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    html! { time datetime=(machine) { (shown) } }
}

/// A duration in seconds as `3d 4h`, `5h 2m`, `4m 10s` or `12s`.
pub fn duration(secs: i64) -> String {
    let s = secs.max(0);
    let (d, h, m) = (s / 86_400, (s / 3600) % 24, (s / 60) % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {}s", s % 60),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// An allow/deny badge (the word is shown, the colour only repeats it).
pub fn decision(word: &str) -> Markup {
    let class = match word {
        "allow" | "approved" | "active" => "badge ok",
        "deny" | "denied" | "revoked" | "retired" => "badge bad",
        _ => "badge",
    };
    html! { span class=(class) { (word) } }
}

/// A `<dl>` of label/value rows.
pub fn facts(rows: &[(&str, Markup)]) -> Markup {
    html! {
        dl.facts {
            @for (label, value) in rows {
                dt { (label) }
                dd { (value) }
            }
        }
    }
}

/// A message shown when a list is empty.
pub fn empty(text: &str) -> Markup {
    html! { p.empty { (text) } }
}

/// Who acted: `user:alice via agent:support-v2 > agent:analytics-v1`, or the agent alone.
pub fn who(user: Option<&str>, chain: &[String]) -> String {
    let mut parts = Vec::new();
    if let Some(u) = user {
        parts.push(format!("user:{u}"));
    }
    if !chain.is_empty() {
        let agents: Vec<String> = chain.iter().map(|a| format!("agent:{a}")).collect();
        if parts.is_empty() {
            parts.push(agents.join(" > "));
        } else {
            parts.push(format!("via {}", agents.join(" > ")));
        }
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(" ")
    }
}

/// A table of audit events, newest or oldest first as given: when, who, task (linked to its
/// timeline), what, on what, the decision and its reason.
pub fn events_table(events: &[AuditEvent]) -> Markup {
    if events.is_empty() {
        return empty("No audit events match.");
    }
    html! {
        div.table-wrap {
            table.events {
                caption.hint { (events.len()) @if events.len() == 1 { " event" } @else { " events" } }
                thead { tr {
                    th scope="col" { "Seq" } th scope="col" { "Time" } th scope="col" { "Who" }
                    th scope="col" { "Task" } th scope="col" { "Event" } th scope="col" { "Action" }
                    th scope="col" { "Resource" } th scope="col" { "Decision" } th scope="col" { "Reason" }
                } }
                tbody {
                    @for e in events {
                        tr {
                            td.mono { (e.seq) }
                            td.mono { (e.time) }
                            td { (who(e.user.as_deref(), &e.chain)) }
                            td { @if let Some(t) = &e.task { a href={ "/console/tasks/" (urlencode(t)) } { (t) } } }
                            td { (e.kind) }
                            td.mono { (e.action.as_deref().unwrap_or("")) }
                            td.mono { (e.resource.as_deref().unwrap_or("")) }
                            td { (decision(e.decision.as_str())) }
                            td { (e.reason) }
                        }
                    }
                }
            }
        }
    }
}

/// Percent-encodes a path segment or query value.
pub fn urlencode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(12), "12s");
        assert_eq!(duration(250), "4m 10s");
        assert_eq!(duration(5 * 3600 + 120), "5h 2m");
        assert_eq!(duration(3 * 86_400 + 4 * 3600), "3d 4h");
        assert_eq!(duration(-5), "0s");
    }

    #[test]
    fn times_are_utc_and_machine_readable() {
        let t = time(0).into_string();
        assert!(t.contains("1970-01-01 00:00:00 UTC"), "{t}");
        assert!(t.contains("datetime=\"1970-01-01T00:00:00Z\""), "{t}");
    }

    #[test]
    fn page_text_is_escaped() {
        let m = bare_page("x", "<script>alert(1)</script>").into_string();
        assert!(!m.contains("<script>alert"), "{m}");
        assert!(m.contains("&lt;script&gt;"), "{m}");
    }
}

//! Audit search with filters, live new events, and export.
//!
//! The filters are those of `GET /v1/audit` (SPEC §10) and are checked by the same function
//! ([`crate::admin::audit::audit_filter`]), so the console accepts and refuses exactly what the
//! API does. The page works as a plain `GET` form; with htmx the form refreshes only the
//! results (`/console/audit/results`, whose answer also sets `HX-Push-Url` to the page's own
//! address), and the results refresh themselves on the event stream's `audit` event.
//!
//! Bad filter input never fails the page: the form comes back with the values as typed and the
//! API's message above the (empty) results. The whole page answers 400 then (it still renders);
//! the htmx fragment answers 200, because htmx does not swap in error answers by default.

use std::borrow::Cow;
use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use mandate_core::audit::AuditEvent;
use maud::{Markup, html};

use super::Failure;
use super::session::Person;
use super::view::{self, Section};
use crate::admin::audit::{AuditQuery, audit_filter};
use crate::admin::audit_export;
use crate::error::ApiError;
use crate::state::AppState;

/// How many events the page shows when the form does not say.
pub const PAGE_DEFAULT_LIMIT: u32 = 100;
/// The most events the page shows.
pub const PAGE_MAX_LIMIT: u32 = 1000;
/// The most events one export holds (and how many it holds unless `limit` says fewer).
pub const EXPORT_MAX_LIMIT: u32 = 10_000;

/// The id of the filter form: htmx names it in `HX-Trigger` when the form sent the request.
const FORM_ID: &str = "audit-filters";

/// The search filters as typed (trimmed; empty means "any"), kept as text so that a bad value
/// can be shown back in the form.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters {
    /// The user's subject.
    pub user: String,
    /// An agent anywhere in the delegation chain.
    pub agent: String,
    /// A task id.
    pub task: String,
    /// An action (a scope, or an admin operation).
    pub action: String,
    /// A resource.
    pub resource: String,
    /// `allow`, `deny`, `info`, or empty for any.
    pub decision: String,
    /// An event kind, e.g. `token.exchange`.
    pub kind: String,
    /// From this time (RFC 3339, or a date `YYYY-MM-DD`), inclusive.
    pub since: String,
    /// Until this time, exclusive.
    pub until: String,
    /// At most this many events.
    pub limit: String,
}

impl Filters {
    /// The filters in a query string (`a=1&b=2`, without `?`); unknown fields are ignored and
    /// the last of repeated fields wins. Also answers its `format`, if any (for exports).
    pub fn parse(raw: Option<&str>) -> (Filters, Option<String>) {
        let mut f = Filters::default();
        let mut format = None;
        for (k, v) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
            let v = v.trim().to_owned();
            let slot = match k.as_ref() {
                "user" => &mut f.user,
                "agent" => &mut f.agent,
                "task" => &mut f.task,
                "action" => &mut f.action,
                "resource" => &mut f.resource,
                "decision" => &mut f.decision,
                "kind" => &mut f.kind,
                "since" => &mut f.since,
                "until" => &mut f.until,
                "limit" => &mut f.limit,
                "format" => {
                    format = Some(v);
                    continue;
                }
                _ => continue,
            };
            *slot = v;
        }
        if f.decision == "any" {
            f.decision.clear();
        }
        (f, format)
    }

    /// The fields that filter (all but `limit`), with their names.
    fn fields(&self) -> [(&'static str, &str); 9] {
        [
            ("user", &self.user),
            ("agent", &self.agent),
            ("task", &self.task),
            ("action", &self.action),
            ("resource", &self.resource),
            ("decision", &self.decision),
            ("kind", &self.kind),
            ("since", &self.since),
            ("until", &self.until),
        ]
    }

    /// The non-empty filters as a query string (without `?`), with `limit` if `with_limit`.
    pub fn query_string(&self, with_limit: bool) -> String {
        let limit = [("limit", self.limit.as_str())];
        let extra: &[(&str, &str)] = if with_limit { &limit } else { &[] };
        self.fields()
            .iter()
            .chain(extra)
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| format!("{k}={}", view::urlencode(v)))
            .collect::<Vec<_>>()
            .join("&")
    }

    /// The store filter, newest first, checked as `GET /v1/audit` checks it; `limit` is
    /// `default_limit` when empty and must be from 1 to `max_limit`.
    pub fn to_filter(
        &self,
        default_limit: u32,
        max_limit: u32,
    ) -> Result<mandate_store::AuditFilter, ApiError> {
        let limit = if self.limit.is_empty() {
            default_limit
        } else {
            match self.limit.parse::<u32>() {
                Ok(n) if (1..=max_limit).contains(&n) => n,
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "`limit` must be a whole number from 1 to {max_limit}, not `{}`",
                        truncate(&self.limit)
                    )));
                }
            }
        };
        let some = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        audit_filter(AuditQuery {
            user: some(&self.user),
            agent: some(&self.agent),
            task: some(&self.task),
            action: some(&self.action),
            resource: some(&self.resource),
            decision: some(&self.decision),
            kind: some(&self.kind),
            since: some(&self.since),
            until: some(&self.until),
            limit: Some(limit),
            order: Some("desc".into()),
            ..AuditQuery::default()
        })
    }
}

/// User input shown in a message: at most 40 characters.
fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

/// The events the filters select (newest first), or the message saying why the filters are
/// not accepted. A store failure is the caller's error.
async fn find(state: &AppState, f: &Filters) -> Result<Result<Vec<AuditEvent>, String>, Failure> {
    let filter = match f.to_filter(PAGE_DEFAULT_LIMIT, PAGE_MAX_LIMIT) {
        Ok(filter) => filter,
        Err(e) => return Ok(Err(e.message)),
    };
    Ok(Ok(state.store.audit(&filter).await?))
}

/// The filter form, with the values as typed.
fn form(f: &Filters) -> Markup {
    let text = |name: &'static str, label: &'static str, value: &str, example: &'static str| {
        let id = format!("f-{name}");
        html! {
            label for=(id) {
                (label)
                input id=(id) type="text" name=(name) value=(value) placeholder=(example)
                    autocomplete="off" spellcheck="false";
            }
        }
    };
    let time = |name: &'static str, label: &'static str, value: &str| {
        let id = format!("f-{name}");
        html! {
            label for=(id) {
                (label)
                input id=(id) type="text" name=(name) value=(value)
                    placeholder="2026-03-14 or 2026-03-14T09:00:00Z" autocomplete="off"
                    spellcheck="false" aria-describedby="audit-time-hint";
            }
        }
    };
    html! {
        h2 id="audit-filters-h" { "Filters" }
        p.hint id="audit-time-hint" {
            "Each filter matches exactly; an agent matches anywhere in the delegation chain. "
            "Since and until take an RFC 3339 time (" code { "2026-03-14T09:00:00Z" } ") or a "
            "date (" code { "2026-03-14" } ", its midnight UTC); since is inclusive, until "
            "exclusive."
        }
        form id=(FORM_ID) .filters method="get" action="/console/audit" role="search"
            aria-labelledby="audit-filters-h"
            hx-get="/console/audit/results" hx-target="#audit-results" {
            (text("user", "User", &f.user, "alice@example.com"))
            (text("agent", "Agent", &f.agent, "support-v2"))
            (text("task", "Task", &f.task, "task id"))
            (text("action", "Action", &f.action, "crm.customers:read"))
            (text("resource", "Resource", &f.resource, "customers/9821"))
            label for="f-decision" {
                "Decision"
                select id="f-decision" name="decision" {
                    @for (value, shown) in [("", "any"), ("allow", "allow"), ("deny", "deny"), ("info", "info")] {
                        option value=(value) selected[f.decision == value] { (shown) }
                    }
                    @if !matches!(f.decision.as_str(), "" | "allow" | "deny" | "info") {
                        // Keep an unknown value so the form shows what was asked.
                        option value=(f.decision) selected { (f.decision) }
                    }
                }
            }
            (text("kind", "Kind", &f.kind, "token.exchange"))
            (time("since", "Since", &f.since))
            (time("until", "Until", &f.until))
            label for="f-limit" {
                "Limit (default " (PAGE_DEFAULT_LIMIT) ", at most " (PAGE_MAX_LIMIT) ")"
                input id="f-limit" type="text" inputmode="numeric" name="limit" value=(f.limit)
                    placeholder=(PAGE_DEFAULT_LIMIT) autocomplete="off";
            }
            div.actions {
                button type="submit" { "Search" }
                a href="/console/audit" { "Clear filters" }
            }
        }
    }
}

/// The contents of `#audit-results`: what the filters found (or why they were refused), the
/// export links, and the element that refreshes them on the event stream's `audit` event.
fn results(f: &Filters, found: &Result<Vec<AuditEvent>, String>) -> Markup {
    let qs = f.query_string(true);
    let refresh = if qs.is_empty() {
        "/console/audit/results".to_owned()
    } else {
        format!("/console/audit/results?{qs}")
    };
    let export_qs = f.query_string(false);
    let export = |format: &str| {
        if export_qs.is_empty() {
            format!("/console/audit/export?format={format}")
        } else {
            format!("/console/audit/export?format={format}&{export_qs}")
        }
    };
    html! {
        div id="audit-live" hx-get=(refresh) hx-trigger="sse:audit" hx-target="#audit-results" {
            h2 id="audit-results-h" { "Results" }
            @match found {
                Err(message) => {
                    p.message.bad role="alert" { (message) }
                }
                Ok(events) => {
                    p.hint role="status" {
                        "Showing " (events.len()) @if events.len() == 1 { " event" } @else { " events" }
                        ", newest first; updates live."
                        @if f.to_filter(PAGE_DEFAULT_LIMIT, PAGE_MAX_LIMIT)
                            .ok()
                            .and_then(|x| x.limit)
                            .is_some_and(|l| events.len() >= l as usize) {
                            " That is the limit: narrow the filters or raise the limit to see older ones."
                        }
                    }
                    (view::events_table(events))
                    @if !events.is_empty() {
                        h2 id="audit-export-h" { "Export" }
                        p.hint {
                            "The events these filters match, up to " (EXPORT_MAX_LIMIT)
                            " (the newest), oldest first."
                        }
                        ul aria-labelledby="audit-export-h" {
                            li { a href=(export("jsonl")) { "JSON lines" } }
                            li { a href=(export("ocsf")) { "OCSF (JSON lines)" } }
                            li { a href=(export("csv")) { "CSV" } }
                        }
                    }
                }
            }
        }
    }
}

/// `GET /console/audit`: the filter form and the results (admins and auditors).
pub async fn search(
    State(state): State<Arc<AppState>>,
    person: Person,
    RawQuery(raw): RawQuery,
) -> Result<Response, Failure> {
    person.require_reader("audit search")?;
    let (f, _) = Filters::parse(raw.as_deref());
    let found = find(&state, &f).await?;
    let status = if found.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    let body = html! {
        (form(&f))
        section id="audit-results" aria-labelledby="audit-results-h" {
            (results(&f, &found))
        }
    };
    let owned = person.owned_agents(&state);
    let page = view::page(&person, owned, Section::Audit, "Audit", body);
    Ok((status, page).into_response())
}

/// `GET /console/audit/results`: the contents of `#audit-results` alone, for htmx. When the
/// filter form sent it, the answer tells htmx to show the page's own address
/// (`/console/audit?…`) in the location bar; live refreshes leave it alone.
pub async fn results_fragment(
    State(state): State<Arc<AppState>>,
    person: Person,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, Failure> {
    person.require_reader("audit search")?;
    let (f, _) = Filters::parse(raw.as_deref());
    let found = find(&state, &f).await?;
    let mut resp = results(&f, &found).into_response();
    let from_form = headers
        .get("hx-trigger")
        .is_some_and(|v| v.as_bytes() == FORM_ID.as_bytes());
    if from_form {
        let qs = f.query_string(true);
        let url = if qs.is_empty() {
            "/console/audit".to_owned()
        } else {
            format!("/console/audit?{qs}")
        };
        if let Ok(v) = HeaderValue::from_str(&url) {
            resp.headers_mut().insert("hx-push-url", v);
        }
    }
    Ok(resp)
}

/// An export's form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ExportFormat {
    Jsonl,
    Ocsf,
    Csv,
}

impl ExportFormat {
    fn parse(s: Option<&str>) -> Result<ExportFormat, ApiError> {
        match s {
            None | Some("") | Some("jsonl") => Ok(ExportFormat::Jsonl),
            Some("ocsf") => Ok(ExportFormat::Ocsf),
            Some("csv") => Ok(ExportFormat::Csv),
            Some(other) => Err(ApiError::bad_request(format!(
                "`format` must be `jsonl`, `ocsf` or `csv`, not `{}`",
                truncate(other)
            ))),
        }
    }

    /// Content type and file name.
    fn file(self) -> (&'static str, &'static str) {
        match self {
            ExportFormat::Jsonl => ("application/x-ndjson", "mandate-audit.jsonl"),
            ExportFormat::Ocsf => ("application/x-ndjson", "mandate-audit.ocsf.jsonl"),
            ExportFormat::Csv => ("text/csv; charset=utf-8", "mandate-audit.csv"),
        }
    }
}

/// `GET /console/audit/export?format=jsonl|ocsf|csv&<filters>`: the events the filters match,
/// up to [`EXPORT_MAX_LIMIT`] (the newest; `limit` may ask for fewer), oldest first, as a
/// download. `jsonl` lines are exactly those of `GET /v1/audit?format=jsonl`, `ocsf` those of
/// `format=ocsf`.
pub async fn export(
    State(state): State<Arc<AppState>>,
    person: Person,
    RawQuery(raw): RawQuery,
) -> Result<Response, Failure> {
    person.require_reader("audit export")?;
    let (f, format) = Filters::parse(raw.as_deref());
    let format = ExportFormat::parse(format.as_deref())?;
    let filter = f.to_filter(EXPORT_MAX_LIMIT, EXPORT_MAX_LIMIT)?;
    let mut events = state.store.audit(&filter).await?;
    events.reverse();
    let body = match format {
        ExportFormat::Jsonl => lines(&events, audit_export::jsonl_line),
        ExportFormat::Ocsf => lines(&events, audit_export::ocsf_line),
        ExportFormat::Csv => csv(&events),
    };
    let (kind, name) = format.file();
    Ok((
        [
            (header::CONTENT_TYPE, kind.to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        body,
    )
        .into_response())
}

/// One line per event, each ending in a newline.
fn lines(events: &[AuditEvent], line: fn(&AuditEvent) -> String) -> String {
    let mut body = String::new();
    for e in events {
        body.push_str(&line(e));
        body.push('\n');
    }
    body
}

/// The CSV columns, in order.
const CSV_COLUMNS: [&str; 17] = [
    "seq",
    "time",
    "kind",
    "user",
    "chain",
    "task",
    "action",
    "resource",
    "decision",
    "reason",
    "policy_ids",
    "request_id",
    "credential",
    "jti",
    "detail",
    "prev_hash",
    "hash",
];

/// The events as CSV (RFC 4180: a header row, CRLF line ends, fields quoted when needed).
/// `chain` is the agents joined by ` > `, `policy_ids` joined by spaces, `detail` the JSON text.
fn csv(events: &[AuditEvent]) -> String {
    let mut out = String::new();
    push_row(&mut out, CSV_COLUMNS.iter().copied());
    for e in events {
        let seq = e.seq.to_string();
        let chain = e.chain.join(" > ");
        let policies = e.policy_ids.join(" ");
        let opt = |o: &Option<String>| o.as_deref().unwrap_or("").to_owned();
        let row: [String; 17] = [
            seq,
            e.time.clone(),
            e.kind.clone(),
            opt(&e.user),
            chain,
            opt(&e.task),
            opt(&e.action),
            opt(&e.resource),
            e.decision.as_str().to_owned(),
            e.reason.clone(),
            policies,
            opt(&e.request_id),
            opt(&e.credential),
            opt(&e.jti),
            e.detail.clone(),
            e.prev_hash.clone(),
            e.hash.clone(),
        ];
        push_row(&mut out, row.iter().map(String::as_str));
    }
    out
}

fn push_row<'a>(out: &mut String, fields: impl Iterator<Item = &'a str>) {
    for (i, field) in fields.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&csv_field(field));
    }
    out.push_str("\r\n");
}

/// One CSV field: quoted (with `"` doubled) when it holds a comma, quote or line break. A
/// field a spreadsheet would run as a formula (starting with `=`, `+`, `-`, `@`, tab or CR) is
/// prefixed with `'` so that it stays text; the `jsonl` export is the verbatim one.
pub fn csv_field(s: &str) -> Cow<'_, str> {
    let formula = s.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let quote = s.contains([',', '"', '\r', '\n']);
    if !formula && !quote {
        return Cow::Borrowed(s);
    }
    let prefix = if formula { "'" } else { "" };
    Cow::Owned(format!("\"{prefix}{}\"", s.replace('"', "\"\"")))
}

#[cfg(test)]
mod tests {
    use mandate_core::audit::Decision;

    use super::*;

    fn event() -> AuditEvent {
        AuditEvent {
            seq: 7,
            time: "2026-03-14T14:32:01.250Z".into(),
            kind: "token.exchange".into(),
            user: Some("alice@example.com".into()),
            chain: vec!["support-v2".into(), "analytics-v1".into()],
            task: Some("ticket-1".into()),
            action: Some("crm.customers:read".into()),
            resource: Some("customers/9821".into()),
            decision: Decision::Deny,
            reason: "not \"granted\", sorry\nreally".into(),
            policy_ids: vec!["a#0".into(), "b#1".into()],
            request_id: None,
            credential: None,
            jti: None,
            detail: r#"{"ttl":300}"#.into(),
            prev_hash: "0".repeat(64),
            hash: "a".repeat(64),
        }
    }

    #[test]
    fn filters_parse_trimmed_last_wins_unknown_ignored() {
        let (f, format) = Filters::parse(Some(
            "user=+bob%40example.com+&user=alice%40example.com&decision=any&foo=1&limit=5&format=ocsf",
        ));
        assert_eq!(f.user, "alice@example.com");
        assert_eq!(f.decision, "");
        assert_eq!(f.limit, "5");
        assert_eq!(format.as_deref(), Some("ocsf"));
        assert_eq!(Filters::parse(None), (Filters::default(), None));
    }

    #[test]
    fn query_strings_skip_empty_fields_and_encode_values() {
        let f = Filters {
            user: "alice@example.com".into(),
            resource: "customers/98 21&x=1".into(),
            decision: "deny".into(),
            limit: "50".into(),
            ..Filters::default()
        };
        assert_eq!(
            f.query_string(true),
            "user=alice%40example.com&resource=customers%2F98+21%26x%3D1&decision=deny&limit=50"
        );
        assert_eq!(
            f.query_string(false),
            "user=alice%40example.com&resource=customers%2F98+21%26x%3D1&decision=deny"
        );
        assert_eq!(Filters::default().query_string(true), "");
        // What is built parses back to the same filters.
        assert_eq!(Filters::parse(Some(&f.query_string(true))).0, f);
    }

    #[test]
    fn filters_are_checked_like_the_api() {
        let ok = Filters {
            since: "2026-03-14".into(),
            decision: "deny".into(),
            ..Filters::default()
        }
        .to_filter(100, 1000)
        .unwrap();
        assert_eq!(ok.since.as_deref(), Some("2026-03-14T00:00:00.000Z"));
        assert_eq!(ok.limit, Some(100));
        assert!(ok.newest_first);
        assert_eq!(ok.user, None);

        let bad_since = Filters {
            since: "yesterday".into(),
            ..Filters::default()
        }
        .to_filter(100, 1000)
        .unwrap_err();
        assert_eq!(
            bad_since.message,
            crate::admin::audit::parse_time("yesterday", "since")
                .unwrap_err()
                .message
        );
        let bad_decision = Filters {
            decision: "maybe".into(),
            ..Filters::default()
        }
        .to_filter(100, 1000)
        .unwrap_err();
        assert!(bad_decision.message.contains("`decision`"));
        for limit in ["0", "1001", "-1", "ten", "1e3"] {
            let e = Filters {
                limit: limit.into(),
                ..Filters::default()
            }
            .to_filter(100, 1000)
            .unwrap_err();
            assert!(e.message.contains(&format!("`{limit}`")), "{}", e.message);
        }
        let long = "x".repeat(500);
        let e = Filters {
            limit: long.clone(),
            ..Filters::default()
        }
        .to_filter(100, 1000)
        .unwrap_err();
        assert!(!e.message.contains(&long));
    }

    #[test]
    fn csv_fields_are_quoted_and_formulas_defused() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field(""), "");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
        assert_eq!(csv_field("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(csv_field("@sum"), "\"'@sum\"");
    }

    #[test]
    fn csv_has_a_header_and_one_record_per_event() {
        let out = csv(&[event()]);
        let (head, rest) = out.split_once("\r\n").unwrap();
        assert_eq!(head, CSV_COLUMNS.join(","));
        assert!(rest.starts_with(
            "7,2026-03-14T14:32:01.250Z,token.exchange,alice@example.com,\
             support-v2 > analytics-v1,ticket-1,crm.customers:read,customers/9821,deny,\
             \"not \"\"granted\"\", sorry\nreally\",a#0 b#1,,,,\"{\"\"ttl\"\":300}\","
        ));
        assert!(rest.ends_with(&format!("{}\r\n", "a".repeat(64))));
    }

    #[test]
    fn export_formats_parse() {
        assert_eq!(ExportFormat::parse(None).unwrap(), ExportFormat::Jsonl);
        assert_eq!(
            ExportFormat::parse(Some("ocsf")).unwrap(),
            ExportFormat::Ocsf
        );
        assert_eq!(ExportFormat::parse(Some("csv")).unwrap(), ExportFormat::Csv);
        assert!(
            ExportFormat::parse(Some("xml"))
                .unwrap_err()
                .message
                .contains("`xml`")
        );
    }

    #[test]
    fn the_form_keeps_values_escaped_and_results_link_the_same_filters() {
        let f = Filters {
            user: "<b>eve</b>".into(),
            decision: "maybe".into(),
            ..Filters::default()
        };
        let m = form(&f).into_string();
        assert!(m.contains("value=\"&lt;b&gt;eve&lt;/b&gt;\""), "{m}");
        assert!(m.contains("<option value=\"maybe\" selected>"), "{m}");
        let f = Filters {
            decision: "deny".into(),
            ..Filters::default()
        };
        let r = results(&f, &Ok(vec![event()])).into_string();
        assert!(
            r.contains("hx-get=\"/console/audit/results?decision=deny\""),
            "{r}"
        );
        assert!(r.contains("hx-trigger=\"sse:audit\""), "{r}");
        assert!(
            r.contains("href=\"/console/audit/export?format=jsonl&amp;decision=deny\""),
            "{r}"
        );
        assert!(
            r.contains("Showing 1 event, newest first; updates live."),
            "{r}"
        );
        let r = results(&f, &Err("`since` is bad".into())).into_string();
        assert!(r.contains("class=\"message bad\""), "{r}");
        assert!(!r.contains("export"), "{r}");
    }
}

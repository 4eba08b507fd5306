//! The console's audit search (`/console/audit`), its htmx results fragment and its export:
//! admins and auditors only, the same filters and messages as `GET /v1/audit`.
//!
//! Bad filter input answers the whole page with 400 (the form with the values as typed and the
//! message), and the htmx fragment with 200 and the message (htmx swaps only 2xx answers).

use mandate_core::ids::UserPrincipal;
use mandate_server::console::session::{Session, SignedInWith};
use serde_json::Value;

use super::harness::*;

/// An admin's console cookie (`name=value`), from the `--dev` sign-in link.
async fn admin_cookie(srv: &Server) -> String {
    let link = srv
        .running()
        .state
        .console
        .issue_dev_link(&srv.running().url)
        .unwrap();
    let r = srv.http.get(&link).send().await.unwrap();
    assert_eq!(r.status(), 303, "the dev link signs in");
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("mandate_console="))
        .and_then(|v| v.split(';').next())
        .expect("a session cookie")
        .to_owned()
}

/// A console cookie for alice, who is in `support` only: neither admin nor auditor.
fn alice_cookie(srv: &Server) -> String {
    let state = &srv.running().state;
    let user = UserPrincipal {
        issuer: state.dev.as_ref().unwrap().issuer.clone(),
        subject: ALICE.into(),
        groups: vec!["support".into()],
    };
    let cookie = Session::begin(state, &user, SignedInWith::Oidc, srv.now())
        .unwrap()
        .cookie(state)
        .unwrap();
    cookie.split(';').next().unwrap().to_owned()
}

struct Page {
    status: u16,
    headers: reqwest::header::HeaderMap,
    text: String,
}

impl Page {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap())
            .unwrap_or("")
    }
}

async fn get(srv: &Server, cookie: Option<&str>, path: &str, extra: &[(&str, &str)]) -> Page {
    let mut req = srv.http.get(srv.at(path));
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let r = req.send().await.unwrap();
    Page {
        status: r.status().as_u16(),
        headers: r.headers().clone(),
        text: r.text().await.unwrap(),
    }
}

/// Some audit events: one allowed exchange and one denied (alice has no billing rights).
async fn produce_events(srv: &Server) {
    let support = srv.agent("support-v2");
    srv.exchange(&support, &srv.alice(), "tickets:read")
        .await
        .expect(200);
    let r = srv
        .exchange(&support, &srv.alice(), "billing.invoices:read")
        .await;
    r.expect_oauth_error(400, "invalid_scope");
    srv.deny_event(&r).await;
}

/// The number in "Showing N event(s)".
fn shown(text: &str) -> usize {
    let at = text.find("Showing ").expect("a `Showing N events` line") + "Showing ".len();
    text[at..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .expect("a count")
}

#[tokio::test]
async fn an_admin_searches_the_audit_log_and_filters_by_decision() {
    let srv = Server::start().await;
    produce_events(&srv).await;
    let cookie = admin_cookie(&srv).await;

    let page = get(&srv, Some(&cookie), "/console/audit", &[]).await;
    assert_eq!(page.status, 200, "{}", page.text);
    let t = &page.text;
    assert!(
        t.contains(
            "<form class=\"filters\" id=\"audit-filters\" method=\"get\" action=\"/console/audit\""
        ),
        "{t}"
    );
    assert!(t.contains("role=\"search\""), "{t}");
    for name in [
        "user", "agent", "task", "action", "resource", "decision", "kind", "since", "until",
        "limit",
    ] {
        assert!(
            t.contains(&format!("<label for=\"f-{name}\"")),
            "{name}: {t}"
        );
        assert!(t.contains(&format!("name=\"{name}\"")), "{name}: {t}");
    }
    assert!(
        t.contains("id=\"audit-results\"") && t.contains("role=\"status\""),
        "{t}"
    );
    assert!(t.contains("hx-trigger=\"sse:audit\""), "{t}");
    assert!(t.contains("newest first; updates live."), "{t}");
    assert!(t.contains("token.exchange"), "{t}");
    assert!(t.contains("<span class=\"badge ok\">allow</span>"), "{t}");
    assert!(t.contains("<span class=\"badge bad\">deny</span>"), "{t}");
    assert!(
        t.contains("href=\"/console/audit/export?format=jsonl\""),
        "{t}"
    );

    // Only denials, as many as the API finds, newest first.
    let page = get(
        &srv,
        Some(&cookie),
        "/console/audit?decision=deny&user=",
        &[],
    )
    .await;
    assert_eq!(page.status, 200, "{}", page.text);
    let t = &page.text;
    assert!(t.contains("<span class=\"badge bad\">deny</span>"), "{t}");
    assert!(!t.contains("<span class=\"badge ok\">allow</span>"), "{t}");
    assert!(!t.contains("<span class=\"badge\">info</span>"), "{t}");
    let denials = srv.audit("decision=deny").await;
    assert!(!denials.is_empty());
    assert_eq!(shown(t), denials.len(), "{t}");
    assert!(t.contains("<option value=\"deny\" selected>"), "{t}");
    assert!(
        t.contains("hx-get=\"/console/audit/results?decision=deny\""),
        "the live refresh keeps the filters: {t}"
    );
    assert!(
        t.contains("href=\"/console/audit/export?format=ocsf&amp;decision=deny\""),
        "{t}"
    );

    // The limit applies.
    let page = get(&srv, Some(&cookie), "/console/audit?limit=1", &[]).await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert_eq!(shown(&page.text), 1, "{}", page.text);
}

#[tokio::test]
async fn the_results_fragment_is_the_results_alone_and_pushes_the_page_address() {
    let srv = Server::start().await;
    produce_events(&srv).await;
    let cookie = admin_cookie(&srv).await;

    let from_form = [("hx-request", "true"), ("hx-trigger", "audit-filters")];
    let page = get(
        &srv,
        Some(&cookie),
        "/console/audit/results?decision=deny&user=",
        &from_form,
    )
    .await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert!(!page.text.contains("<html"), "{}", page.text);
    assert!(!page.text.contains("<form"), "{}", page.text);
    assert!(page.text.contains("id=\"audit-live\""), "{}", page.text);
    assert!(page.text.contains("badge bad\">deny"), "{}", page.text);
    assert_eq!(page.header("hx-push-url"), "/console/audit?decision=deny");

    // A live refresh (not the form) leaves the address alone.
    let page = get(
        &srv,
        Some(&cookie),
        "/console/audit/results?decision=deny",
        &[("hx-request", "true"), ("hx-trigger", "audit-live")],
    )
    .await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert!(page.headers.get("hx-push-url").is_none());
}

#[tokio::test]
async fn bad_filters_show_the_form_with_a_message_and_never_fail() {
    let srv = Server::start().await;
    let cookie = admin_cookie(&srv).await;

    let page = get(
        &srv,
        Some(&cookie),
        "/console/audit?since=yesterday&user=%3Cb%3Ebob",
        &[],
    )
    .await;
    assert_eq!(page.status, 400, "{}", page.text);
    let t = &page.text;
    assert!(t.contains("id=\"audit-filters\""), "{t}");
    assert!(t.contains("class=\"message bad\""), "{t}");
    assert!(
        t.contains("`since` must be an RFC 3339 time or a date `YYYY-MM-DD`, not `yesterday`"),
        "the API's message: {t}"
    );
    assert!(t.contains("value=\"yesterday\""), "{t}");
    assert!(t.contains("value=\"&lt;b&gt;bob\""), "{t}");
    assert!(!t.contains("<b>bob"), "{t}");

    for (query, words) in [
        ("decision=maybe", "`decision` must be"),
        (
            "limit=5000",
            "`limit` must be a whole number from 1 to 1000, not `5000`",
        ),
        ("limit=ten", "not `ten`"),
        ("until=2026-02-30", "`until`"),
    ] {
        let page = get(&srv, Some(&cookie), &format!("/console/audit?{query}"), &[]).await;
        assert_eq!(page.status, 400, "{query}: {}", page.text);
        assert!(page.text.contains(words), "{query}: {}", page.text);
        // The fragment answers 200 so that htmx shows the message.
        let frag = get(
            &srv,
            Some(&cookie),
            &format!("/console/audit/results?{query}"),
            &[("hx-request", "true")],
        )
        .await;
        assert_eq!(frag.status, 200, "{query}: {}", frag.text);
        assert!(frag.text.contains("class=\"message bad\""), "{}", frag.text);
        assert!(frag.text.contains(words), "{query}: {}", frag.text);
    }

    let page = get(&srv, Some(&cookie), "/console/audit/export?format=xml", &[]).await;
    assert_eq!(page.status, 400, "{}", page.text);
    assert!(page.text.contains("`xml`"), "{}", page.text);
    let page = get(&srv, Some(&cookie), "/console/audit/export?since=soon", &[]).await;
    assert_eq!(page.status, 400, "{}", page.text);
    assert!(page.text.contains("`since`"), "{}", page.text);
}

#[tokio::test]
async fn exports_are_downloads_of_the_filtered_events_oldest_first() {
    let srv = Server::start().await;
    produce_events(&srv).await;
    let cookie = admin_cookie(&srv).await;

    let page = get(
        &srv,
        Some(&cookie),
        "/console/audit/export?format=jsonl",
        &[],
    )
    .await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert_eq!(page.header("content-type"), "application/x-ndjson");
    assert_eq!(
        page.header("content-disposition"),
        "attachment; filename=\"mandate-audit.jsonl\""
    );
    let events: Vec<Value> = page
        .text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(events.len() >= 2, "{}", page.text);
    for e in &events {
        assert!(e["seq"].is_i64(), "{e}");
        assert_eq!(e["hash"].as_str().unwrap().len(), 64, "{e}");
    }
    let seqs: Vec<i64> = events.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "oldest first: {seqs:?}"
    );

    // Filtered, and line for line what the API exports.
    let page = get(
        &srv,
        Some(&cookie),
        "/console/audit/export?decision=deny",
        &[],
    )
    .await;
    assert_eq!(page.status, 200, "{}", page.text);
    let api = srv
        .admin_req(reqwest::Method::GET, "/v1/audit?decision=deny&format=jsonl")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(page.text, api);
    assert!(
        page.text
            .lines()
            .all(|l| l.contains("\"decision\":\"deny\""))
    );

    let page = get(
        &srv,
        Some(&cookie),
        "/console/audit/export?format=ocsf",
        &[],
    )
    .await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert_eq!(
        page.header("content-disposition"),
        "attachment; filename=\"mandate-audit.ocsf.jsonl\""
    );
    for l in page.text.lines() {
        let o: Value = serde_json::from_str(l).unwrap();
        assert_eq!(o["class_uid"], 6003, "{o}");
    }

    let page = get(
        &srv,
        Some(&cookie),
        "/console/audit/export?format=csv&decision=deny",
        &[],
    )
    .await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert_eq!(page.header("content-type"), "text/csv; charset=utf-8");
    assert_eq!(
        page.header("content-disposition"),
        "attachment; filename=\"mandate-audit.csv\""
    );
    assert!(
        page.text.starts_with("seq,time,kind,user,chain,"),
        "{}",
        page.text
    );
    assert!(page.text.contains(",deny,"), "{}", page.text);
}

#[tokio::test]
async fn only_admins_and_auditors_search_and_nobody_unsigned() {
    let srv = Server::start().await;
    let alice = alice_cookie(&srv);
    for path in [
        "/console/audit",
        "/console/audit/results",
        "/console/audit/export?format=jsonl",
    ] {
        let page = get(&srv, Some(&alice), path, &[]).await;
        assert_eq!(page.status, 403, "{path}: {}", page.text);
        assert!(
            page.text.contains("for admins and auditors"),
            "{}",
            page.text
        );
        assert!(!page.text.contains("\"seq\""), "{}", page.text);

        let page = get(&srv, None, path, &[]).await;
        assert_eq!(page.status, 303, "{path}");
        assert_eq!(page.header("location"), "/console/sign-in", "{path}");
    }
}

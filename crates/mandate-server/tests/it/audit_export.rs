//! "Who accessed X on day D" (`GET /v1/audit?on=`) and the export forms for a SIEM
//! (`format=jsonl|ocsf`, paged with `after=`).
//!
//! The store stamps audit events with the wall clock, not the server's injected clock, so moving
//! `srv.clock` does not move events to another day: `on=` is checked against the day the events
//! actually carry (today, UTC) and against days that have none.

use serde_json::Value;

use super::harness::*;

/// Another audience, so that a resource filter has something to leave out.
const TICKETS: &str = "https://tickets.example";

/// A `GET` as admin, answered as `(status, content type, body text)`.
async fn raw(srv: &Server, path: &str) -> (u16, String, String) {
    let resp = srv
        .admin_req(reqwest::Method::GET, path)
        .send()
        .await
        .expect("the server answers");
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    (status, ct, resp.text().await.unwrap())
}

async fn on_tickets(srv: &Server, agent: &Agent, subject: &str, scope: &str) -> Reply {
    let mut form = without(exchange_form(subject, TYPE_JWT, scope, &[]), &["resource"]);
    form.push(("resource".into(), TICKETS.into()));
    srv.token_as(agent, form).await
}

/// Several users, both agents, two-hop chains, an over-reach, and another resource.
async fn activity(srv: &Server) {
    let support = srv.agent("support-v2");
    let analytics = srv.agent("analytics-v1");
    let alice = srv.alice();
    let carol = srv.user_token(CAROL, &["support", "approver"], 3600);
    let dave = srv.user_token("dave@example.com", &["support"], 3600);
    let erin = srv.user_token("erin@example.com", &["support"], 3600);
    let bob = srv.user_token(BOB, &["finance"], 3600);

    let t_alice = srv
        .exchange(&support, &alice, "crm.customers:read")
        .await
        .access_token();
    srv.hop(&analytics, &t_alice, "crm.customers:read")
        .await
        .access_token();
    srv.hop(&analytics, &t_alice, "billing.invoices:read")
        .await
        .expect_oauth_error(400, "invalid_scope");
    let t_carol = srv
        .exchange(&support, &carol, "crm.customers:read tickets:read")
        .await
        .access_token();
    srv.hop(&analytics, &t_carol, "crm.customers:read")
        .await
        .access_token();
    srv.exchange(&support, &dave, "crm.customers:read")
        .await
        .access_token();
    srv.exchange(&analytics, &bob, "crm.customers:read")
        .await
        .access_token();
    on_tickets(srv, &support, &erin, "tickets:read")
        .await
        .access_token();
    on_tickets(srv, &support, &alice, "tickets:read")
        .await
        .access_token();
}

fn next_day(day: &str) -> String {
    let d = time::Date::parse(
        day,
        time::macros::format_description!("[year]-[month]-[day]"),
    )
    .unwrap();
    d.next_day().unwrap().to_string()
}

fn epoch_ms(t: &str) -> i64 {
    let t = time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).unwrap();
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

#[tokio::test]
async fn audit_on_a_day_answers_who_accessed_a_resource_then() {
    let srv = Server::start().await;
    activity(&srv).await;
    let all = srv.audit("limit=10000").await;
    let day = all.last().unwrap()["time"].as_str().unwrap()[..10].to_owned();

    let got = srv
        .audit(&format!("resource={CRM}&on={day}&limit=10000"))
        .await;
    let want: Vec<Value> = all
        .iter()
        .filter(|e| e["resource"] == CRM && e["time"].as_str().unwrap().starts_with(&day))
        .cloned()
        .collect();
    assert_eq!(got, want);
    let users: std::collections::BTreeSet<&str> =
        got.iter().filter_map(|e| e["user"].as_str()).collect();
    for u in [ALICE, CAROL, BOB, "dave@example.com"] {
        assert!(users.contains(u), "{u} in {users:?}");
    }
    assert!(
        !users.contains("erin@example.com"),
        "erin only used tickets"
    );
    assert!(got.iter().any(|e| e["chain"].as_array().unwrap().len() == 2
        && e["user"] == CAROL
        && e["decision"] == "allow"));
    assert!(
        got.iter()
            .any(|e| e["decision"] == "deny" && e["user"] == ALICE)
    );

    // The same as since/until by hand; and days without events answer nothing.
    let by_hand = srv
        .audit(&format!(
            "resource={CRM}&since={day}&until={}&limit=10000",
            next_day(&day)
        ))
        .await;
    assert_eq!(by_hand, got);
    assert!(
        srv.audit(&format!("on={}", next_day(&day)))
            .await
            .is_empty()
    );
    assert!(srv.audit("on=2000-01-01").await.is_empty());
    // Other filters still apply on top of `on`.
    let carol_on = srv
        .audit(&format!("on={day}&user={CAROL}&agent=analytics-v1"))
        .await;
    assert!(!carol_on.is_empty());
    assert!(carol_on.iter().all(|e| e["user"] == CAROL));
    srv.shutdown().await;
}

#[tokio::test]
async fn audit_on_refuses_a_bad_date_and_mixing_with_since_or_until() {
    let srv = Server::start().await;
    for bad in ["2026-13-01", "14-03-2026", "2026-03-14T00:00:00Z", "today"] {
        let r = srv.admin_get(&format!("/v1/audit?on={bad}")).await;
        r.expect(400);
        let msg = r.body["message"].as_str().unwrap();
        assert!(msg.contains(&format!("`{bad}`")), "{msg}");
        assert!(msg.contains("`on`"), "{msg}");
    }
    for mix in ["since=2026-03-14", "until=2026-03-15"] {
        let r = srv
            .admin_get(&format!("/v1/audit?on=2026-03-14&{mix}"))
            .await;
        r.expect(400);
        assert!(r.body["message"].as_str().unwrap().contains("`on`"));
    }
    let r = srv.admin_get("/v1/audit?format=csv").await;
    r.expect(400);
    assert!(r.body["message"].as_str().unwrap().contains("`csv`"));
    srv.shutdown().await;
}

#[tokio::test]
async fn audit_jsonl_lines_are_the_json_events_and_page_with_after() {
    let srv = Server::start().await;
    activity(&srv).await;
    let events = srv.audit("limit=10000").await;
    let (status, ct, text) = raw(&srv, "/v1/audit?format=jsonl&limit=10000").await;
    assert_eq!(status, 200);
    assert_eq!(ct, "application/x-ndjson");
    assert!(text.ends_with('\n'));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), events.len());
    for (line, e) in lines.iter().zip(&events) {
        assert_eq!(*line, serde_json::to_string(e).unwrap());
    }

    // Page by page with `after=` (the last `seq` seen), as `mandate audit export` does.
    let mut after = 0;
    let mut paged = Vec::new();
    loop {
        let (_, _, page) = raw(
            &srv,
            &format!("/v1/audit?format=jsonl&limit=3&after={after}"),
        )
        .await;
        let Some(last) = page.lines().last() else {
            break;
        };
        after = serde_json::from_str::<Value>(last).unwrap()["seq"]
            .as_i64()
            .unwrap();
        paged.extend(page.lines().map(str::to_owned));
    }
    assert_eq!(paged, lines);

    // No event: an empty body, still x-ndjson.
    let (status, ct, text) = raw(&srv, "/v1/audit?format=jsonl&on=2000-01-01").await;
    assert_eq!(
        (status, ct.as_str(), text.as_str()),
        (200, "application/x-ndjson", "")
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn audit_ocsf_lines_are_api_activity_events() {
    let srv = Server::start().await;
    activity(&srv).await;
    let q = format!("resource={CRM}&limit=10000");
    let events = srv.audit(&q).await;
    let (status, ct, text) = raw(&srv, &format!("/v1/audit?format=ocsf&{q}")).await;
    assert_eq!(status, 200);
    assert_eq!(ct, "application/x-ndjson");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), events.len());
    assert!(!events.is_empty());
    for (o, e) in lines.iter().zip(&events) {
        assert_eq!(o["class_uid"], 6003, "{o}");
        assert_eq!(o["category_uid"], 6);
        assert_eq!(
            o["type_uid"].as_i64().unwrap(),
            600_300 + o["activity_id"].as_i64().unwrap()
        );
        assert_eq!(
            o["time"].as_i64().unwrap(),
            epoch_ms(e["time"].as_str().unwrap())
        );
        assert_eq!(o["actor"]["user"]["uid"], e["user"]);
        let chain = e["chain"].as_array().unwrap();
        assert_eq!(o["actor"]["app_name"], *chain.last().unwrap());
        assert_eq!(o["unmapped"]["chain"], e["chain"]);
        assert_eq!(o["api"]["operation"], e["action"]);
        assert_eq!(o["resources"][0]["uid"], CRM);
        let (status_id, status) = match e["decision"].as_str().unwrap() {
            "allow" => (1, "Success"),
            "deny" => (2, "Failure"),
            _ => (99, "Other"),
        };
        assert_eq!(o["status_id"], status_id);
        assert_eq!(o["status"], status);
        assert_eq!(o["status_detail"], e["reason"]);
        assert_eq!(o["metadata"]["uid"], e["seq"].to_string());
        assert_eq!(o["metadata"]["product"]["name"], "Mandate");
        assert_eq!(o["metadata"]["product"]["vendor_name"], "Mandate");
        assert!(o["metadata"]["version"].as_str().unwrap().starts_with("1."));
        assert_eq!(o["unmapped"]["hash"], e["hash"]);
        assert_eq!(o["unmapped"]["prev_hash"], e["prev_hash"]);
        assert_eq!(o["unmapped"]["task"], e["task"]);
    }
    assert!(lines.iter().any(|o| o["status"] == "Failure"));
    assert!(
        lines
            .iter()
            .any(|o| o["unmapped"]["chain"].as_array().unwrap().len() == 2)
    );
    // A read scope is a Read activity.
    assert!(
        lines
            .iter()
            .any(|o| o["api"]["operation"] == "crm.customers:read" && o["activity_id"] == 2)
    );
    srv.shutdown().await;
}

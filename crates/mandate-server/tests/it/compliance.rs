//! `GET /v1/compliance` (SPEC §8): every control with a status, evidence that matches the
//! traffic the test made, gaps that a deployment's problems cause, each rendering, escaping in
//! HTML, and who may ask.

use serde_json::{Value, json};

use super::harness::*;

/// Every control the report must hold, by id.
const CONTROLS: &[&str] = &[
    "soc2-cc6.1",
    "soc2-cc6.2",
    "soc2-cc6.3",
    "hipaa-164.312-a-1",
    "hipaa-164.312-a-2-i",
    "hipaa-164.312-b",
    "hipaa-164.312-d",
    "owasp-llm06-2025",
    "eu-ai-act-art-12",
];

/// A `GET` as `bearer`, answered as `(status, content type, body text)`.
async fn raw(srv: &Server, path: &str, bearer: Option<&str>) -> (u16, String, String) {
    let mut req = srv.http.get(srv.at(path));
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    let resp = req.send().await.expect("the server answers");
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    (status, ct, resp.text().await.unwrap())
}

/// The JSON report.
async fn report(srv: &Server, query: &str) -> Value {
    let r = srv.admin_get(&format!("/v1/compliance{query}")).await;
    r.expect(200);
    r.body
}

fn control<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["controls"]
        .as_array()
        .expect("`controls` array")
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no control `{id}` in {report}"))
}

fn status(report: &Value, id: &str) -> String {
    control(report, id)["status"].as_str().unwrap().to_owned()
}

fn lines(c: &Value, field: &str) -> String {
    c[field].to_string()
}

#[tokio::test]
async fn the_report_counts_this_deployments_traffic() {
    let srv = Server::start().await;
    let support = srv.agent("support-v2");
    let alice = srv.alice();
    let mut tokens = Vec::new();
    for _ in 0..3 {
        let r = srv.exchange(&support, &alice, "crm.customers:read").await;
        tokens.push(peek(&r.access_token())["jti"].as_str().unwrap().to_owned());
    }
    // An over-reach: support-v2's ceiling has no billing scope.
    srv.exchange(&support, &alice, "billing.invoices:read")
        .await
        .expect_oauth_error(400, "invalid_scope");
    srv.revoke("token", &tokens[0]).await.expect(201);

    let rep = report(&srv, "").await;
    assert_eq!(rep["dev"], true);
    assert_eq!(rep["window_days"], 30);
    assert_eq!(rep["summary"]["controls"], CONTROLS.len());
    for id in CONTROLS {
        let c = control(&rep, id);
        assert!(
            matches!(c["status"].as_str(), Some("met" | "partial" | "gap")),
            "{c}"
        );
        assert!(!c["evidence"].as_array().unwrap().is_empty(), "{c}");
        assert!(!c["mandate_does"].as_str().unwrap().is_empty(), "{c}");
    }
    let ev = &rep["evidence"];
    let act = &ev["activity"];
    assert_eq!(act["tokens_issued"], 3, "{act}");
    assert_eq!(act["token_denials"], 1, "{act}");
    assert_eq!(act["denials_by_code"]["invalid_scope"], 1, "{act}");
    assert_eq!(act["revocations"], 1, "{act}");
    assert_eq!(act["revocations_total"], 1, "{act}");
    assert_eq!(act["decisions"], 3);
    assert_eq!(act["decisions_without_task"], 0);
    assert_eq!(act["decisions_without_principal"], 0);
    assert_eq!(act["distinct_users"], 1);
    assert_eq!(
        act["distinct_agents"], 2,
        "support-v2 acted; analytics-v1 was registered"
    );
    let exchanges = act["by_kind"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kind"] == "token.exchange")
        .unwrap();
    assert_eq!(
        (exchanges["allow"].as_u64(), exchanges["deny"].as_u64()),
        (Some(3), Some(1))
    );
    assert_eq!(ev["agents"]["total"], 2);
    assert_eq!(ev["agents"]["active"], 2);
    assert!(ev["config"]["policy_count"].as_u64().unwrap() > 0);
    assert_eq!(ev["integrity"]["verification"]["ok"], true);
    // The evidence lines say the same numbers.
    let cc61 = lines(control(&rep, "soc2-cc6.1"), "evidence");
    assert!(
        cc61.contains("tokens issued in the window: 3; token requests refused: 1"),
        "{cc61}"
    );
    assert!(cc61.contains("`--dev` test IdP"), "{cc61}");
    let samples = ev["samples"].to_string();
    assert!(
        samples.contains("user:alice@example.com via agent:support-v2 task:"),
        "{samples}"
    );
    assert!(samples.contains("(invalid_scope"), "{samples}");

    // The demo world, honestly: policies and the dev IdP meet CC6.1; support-v2's `tickets:*`
    // grants every action on tickets; dev keys never expire; agent changes are not held for
    // approval in --dev; no checkpoint was signed yet; draft and observe agents cannot write
    // on their own.
    assert_eq!(status(&rep, "soc2-cc6.1"), "met");
    assert_eq!(status(&rep, "soc2-cc6.2"), "partial");
    assert_eq!(status(&rep, "soc2-cc6.3"), "partial");
    assert!(lines(control(&rep, "soc2-cc6.3"), "gaps").contains("`tickets:*`"));
    assert_eq!(status(&rep, "hipaa-164.312-a-1"), "met");
    assert_eq!(status(&rep, "hipaa-164.312-a-2-i"), "met");
    assert_eq!(status(&rep, "hipaa-164.312-b"), "partial");
    assert_eq!(status(&rep, "hipaa-164.312-d"), "partial");
    assert!(lines(control(&rep, "hipaa-164.312-d"), "gaps").contains("`support-v2-k1`"));
    assert_eq!(status(&rep, "owasp-llm06-2025"), "met");
    assert_eq!(status(&rep, "eu-ai-act-art-12"), "met");

    // A signed checkpoint makes the audit controls whole.
    srv.admin_post("/v1/audit/checkpoint", &json!({}))
        .await
        .expect(200);
    let rep = report(&srv, "?window_days=7").await;
    assert_eq!(rep["window_days"], 7);
    assert_eq!(
        status(&rep, "hipaa-164.312-b"),
        "met",
        "{}",
        control(&rep, "hipaa-164.312-b")
    );
    assert_eq!(rep["evidence"]["integrity"]["checkpoints"], 1);

    // Without verification the chain is not vouched for.
    let rep = report(&srv, "?verify=false").await;
    assert!(rep["evidence"]["integrity"]["verification"].is_null());
    assert_eq!(status(&rep, "hipaa-164.312-b"), "partial");
    assert!(lines(control(&rep, "hipaa-164.312-b"), "evidence").contains("not verified"));
    srv.shutdown().await;
}

#[tokio::test]
async fn markdown_has_the_table_and_html_escapes_every_name() {
    let srv = Server::start().await;
    // A deployment with a problem: an agent that may do anything, named with markup.
    let key = TestKey::ed25519("root-k1");
    let body = json!({
        "id": "root-agent", "name": "<script>alert(1)</script>", "owner": "erin@example.com",
        "description": "too much", "ceiling": ["*:*"], "max_stage": "execute",
        "keys": [key.public_jwk()],
    });
    srv.admin_post("/v1/agents", &body).await.expect(201);
    // A user whose name is markup, in the sample lines.
    let user = srv.user_token("<img src=x onerror=alert(2)>", &["support"], 600);
    srv.exchange(&srv.agent("support-v2"), &user, "tickets:read")
        .await;

    let (code, ct, md) = raw(&srv, "/v1/compliance?format=md", Some(&srv.admin)).await;
    assert_eq!(code, 200, "{md}");
    assert!(ct.starts_with("text/markdown"), "{ct}");
    assert!(md.starts_with("# Mandate compliance report"), "{md}");
    assert!(
        md.contains("| Control | Framework | Title | Status |"),
        "{md}"
    );
    assert!(
        md.contains("| [CC6.1](#soc2-cc6.1) | SOC 2 | Logical access security |"),
        "{md}"
    );
    assert!(
        md.contains("| [LLM06:2025](#owasp-llm06-2025) | OWASP LLM Top 10 |"),
        "{md}"
    );
    assert!(md.contains("**Gaps and fixes:**"), "{md}");
    // Names only ever appear inside code spans or the sample block.
    assert!(
        md.contains("`root-agent` (`<script>alert(1)</script>`): `*:*`"),
        "{md}"
    );
    for line in md.lines().filter(|l| l.contains("<script>")) {
        assert!(line.contains("`<script>alert(1)</script>`"), "{line}");
    }

    let (code, ct, html) = raw(&srv, "/v1/compliance?format=html", Some(&srv.admin)).await;
    assert_eq!(code, 200, "{html}");
    assert!(ct.starts_with("text/html"), "{ct}");
    assert!(html.starts_with("<!doctype html>"), "{html}");
    assert!(!html.contains("<script"), "{html}");
    assert!(!html.contains("<img"), "{html}");
    assert!(
        html.contains("<code>&lt;script&gt;alert(1)&lt;/script&gt;</code>"),
        "{html}"
    );
    assert!(
        html.contains("&lt;img src=x onerror=alert(2)&gt;"),
        "{html}"
    );
    for id in CONTROLS {
        assert!(html.contains(&format!("<section id=\"{id}\">")), "{id}");
    }
    srv.shutdown().await;
}

#[tokio::test]
async fn problems_show_as_gaps_with_their_fix() {
    let srv = Server::start().await;
    // One key pair registered on two agents; one of them may do anything at `execute`.
    let shared = TestKey::ed25519("shared-k1");
    srv.register_agent("wide-open", &["*:*"], "execute", &[&shared])
        .await;
    let mut again = shared.public_jwk();
    again["kid"] = json!("shared-k2");
    let body = json!({
        "id": "twin", "name": "twin", "owner": "erin@example.com", "description": "test agent",
        "ceiling": ["tickets:read"], "max_stage": "observe", "keys": [again],
    });
    srv.admin_post("/v1/agents", &body).await.expect(201);
    // A writer at execute stage with no approval and no breaker.
    let writer = TestKey::ed25519("writer-k1");
    srv.register_agent("mailer", &["email:send"], "execute", &[&writer])
        .await;

    let rep = report(&srv, "?verify=false").await;
    assert_eq!(status(&rep, "soc2-cc6.3"), "gap");
    assert!(lines(control(&rep, "soc2-cc6.3"), "gaps").contains("`wide-open`: `*:*`"));
    let llm = control(&rep, "owasp-llm06-2025");
    assert_eq!(llm["status"], "gap");
    let gaps = lines(llm, "gaps");
    assert!(gaps.contains("any resource"), "{gaps}");
    assert!(gaps.contains("`mailer`: `email:send`"), "{gaps}");
    assert!(gaps.contains("gateway.breakers"), "{gaps}");
    let ident = control(&rep, "hipaa-164.312-a-2-i");
    assert_eq!(ident["status"], "gap");
    let gaps = lines(ident, "gaps");
    assert!(
        gaps.contains("key `shared-k1`, `shared-k2` on `twin`, `wide-open`"),
        "{gaps}"
    );
    let shared = &rep["evidence"]["agents"]["shared_keys"][0];
    assert_eq!(shared["kids"], json!(["shared-k1", "shared-k2"]));

    // Retiring the open agent ends both findings.
    srv.admin_post("/v1/agents/wide-open/retire", &json!({}))
        .await
        .expect(200);
    let rep = report(&srv, "?verify=false").await;
    assert_eq!(status(&rep, "hipaa-164.312-a-2-i"), "met");
    assert_eq!(status(&rep, "owasp-llm06-2025"), "partial");
    srv.shutdown().await;
}

#[tokio::test]
async fn auditors_may_read_it_verifiers_and_strangers_may_not() {
    let srv = Server::start().await;
    let mk = |id: &str, role: &str| json!({"id": id, "role": role});
    let auditor = srv
        .admin_post("/v1/credentials", &mk("aud1", "auditor"))
        .await;
    auditor.expect(201);
    let auditor = auditor.body["secret"].as_str().unwrap().to_owned();
    let verifier = srv
        .admin_post("/v1/credentials", &mk("ver1", "verifier"))
        .await;
    verifier.expect(201);
    let verifier = verifier.body["secret"].as_str().unwrap().to_owned();

    let (code, ct, body) = raw(&srv, "/v1/compliance?verify=false", Some(&auditor)).await;
    assert_eq!(code, 200, "{body}");
    assert!(ct.starts_with("application/json"), "{ct}");
    let (code, _, body) = raw(&srv, "/v1/compliance", Some(&verifier)).await;
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("verifier"), "{body}");
    let (code, _, body) = raw(&srv, "/v1/compliance", None).await;
    assert_eq!(code, 401, "{body}");

    // Bad parameters are refused with a reason, never a crash.
    for (query, says) in [
        ("format=pdf", "`format`"),
        ("window_days=0", "`window_days`"),
        ("window_days=99999999999", "`window_days`"),
        ("verify=maybe", "`verify`"),
        ("colour=red", "colour"),
    ] {
        let r = srv.admin_get(&format!("/v1/compliance?{query}")).await;
        r.expect(400);
        assert!(r.description().contains(says), "{query}: {}", r.body);
    }
    // The route is in the OpenAPI document.
    let doc = srv.admin_get("/v1/openapi.json").await;
    doc.expect(200);
    assert!(doc.body["paths"]["/v1/compliance"]["get"].is_object());
    srv.shutdown().await;
}

#[tokio::test]
async fn an_altered_audit_log_is_a_gap_for_audit_controls_and_record_keeping() {
    let mut srv = Server::start().await;
    let support = srv.agent("support-v2");
    let r = srv.exchange(&support, &srv.alice(), "tickets:read").await;
    let seq = srv.allow_event(&r).await["seq"].as_i64().unwrap();
    srv.stop().await;
    super::audit::tamper(srv.database(), "reason", "nothing to see", seq).await;
    srv.start_again().await;

    let rep = report(&srv, "").await;
    assert_eq!(rep["evidence"]["integrity"]["verification"]["ok"], false);
    let audit = control(&rep, "hipaa-164.312-b");
    assert_eq!(audit["status"], "gap", "{audit}");
    let evidence = lines(audit, "evidence");
    assert!(evidence.contains("DOES NOT VERIFY"), "{evidence}");
    assert!(evidence.contains(&format!("seq {seq}")), "{evidence}");
    assert!(lines(audit, "gaps").contains("mandate audit verify --data"));
    assert_eq!(status(&rep, "eu-ai-act-art-12"), "gap");
    srv.shutdown().await;
}

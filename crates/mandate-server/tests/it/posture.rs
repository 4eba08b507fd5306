//! Posture (SPEC §8): a fixture deployment seeded with each problem is reported with each finding
//! (id, agent, fix), a clean deployment with none; blast radius terms multiply; access reviews
//! are answered by owners only, narrow ceilings, show in posture when overdue, and are audited.

use mandate_core::agent::{Agent as CoreAgent, AgentStatus};
use mandate_core::ids::AgentId;
use mandate_core::scope::PatternSet;
use mandate_core::stage::Stage;
use mandate_core::task::TokenRecord;
use mandate_store::Op;
use serde_json::{Value, json};

use super::harness::*;

const DAY: i64 = 86_400;

fn findings(report: &Value) -> Vec<Value> {
    report["findings"].as_array().unwrap().clone()
}

/// The findings with `id` about `agent`.
fn found<'a>(all: &'a [Value], id: &str, agent: &str) -> Vec<&'a Value> {
    all.iter()
        .filter(|f| f["id"] == id && f["agent"] == agent)
        .collect()
}

#[track_caller]
fn expect_finding<'a>(all: &'a [Value], id: &str, agent: &str, subject: &str) -> &'a Value {
    let f = all
        .iter()
        .find(|f| f["id"] == id && f["agent"] == agent && f["subject"] == subject)
        .unwrap_or_else(|| {
            panic!(
                "no `{id}` finding for `{agent}` / `{subject}` in {}",
                serde_json::to_string_pretty(all).unwrap()
            )
        });
    for field in ["severity", "problem", "fix"] {
        assert!(
            f[field].as_str().is_some_and(|s| !s.is_empty()),
            "{field} of {f}"
        );
    }
    assert!(f["problem"].as_str().unwrap().contains(agent), "{f}");
    assert!(f["fix"].as_str().unwrap().contains("mandate "), "{f}");
    f
}

async fn posture(srv: &Server, query: &str) -> Value {
    let r = srv.admin_get(&format!("/v1/posture{query}")).await;
    r.expect(200);
    r.body
}

/// Every blast radius is the product of its three terms, each explained.
#[track_caller]
fn check_blast_radius(report: &Value) {
    let radii = report["blast_radius"].as_array().unwrap();
    assert!(!radii.is_empty());
    for b in radii {
        let w = b["scope_weight"]["total"].as_f64().unwrap();
        let v = b["velocity"]["per_minute"].as_f64().unwrap();
        let m = b["detection_window"]["minutes"].as_f64().unwrap();
        let score = b["score"].as_f64().unwrap();
        assert!((score - w * v * m).abs() < 1e-6 * score.max(1.0), "{b}");
        let sum: f64 = b["scope_weight"]["scopes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["weight"].as_f64().unwrap())
            .sum();
        assert_eq!(sum, w, "{b}");
        let d = &b["detection_window"];
        let parts = d["token_ttl_secs"].as_f64().unwrap()
            + d["revocation_latency_ms"].as_f64().unwrap() / 1000.0
            + d["alerting_secs"].as_f64().unwrap();
        assert!((parts - d["seconds"].as_f64().unwrap()).abs() < 1e-9, "{d}");
        for text in [
            &b["scope_weight"]["rule"],
            &b["velocity"]["explanation"],
            &d["explanation"],
            &b["formula"],
        ] {
            assert!(text.as_str().is_some_and(|t| !t.is_empty()), "{b}");
        }
    }
}

fn token(jti: &str, agent: &str, kid: &str, scope: &str, iat: i64) -> TokenRecord {
    TokenRecord {
        jti: jti.into(),
        parent_jti: None,
        task: format!("task-{jti}"),
        sub: ALICE.into(),
        sub_profile: "user".into(),
        sub_iss: Some("https://idp.example".into()),
        chain: vec![agent.into()],
        credentials: vec![format!("kid:{kid}")],
        scope: scope.into(),
        aud: vec![CRM.into()],
        stage: "draft".into(),
        iat,
        exp: iat + 300,
        revoked_at: None,
    }
}

#[tokio::test]
async fn posture_finds_each_seeded_problem_in_a_fixture_deployment() {
    let srv = Server::start().await;
    let t0 = srv.now();

    // A key that never expires (keys registered with an agent have no expiry).
    let forever = TestKey::ed25519("forever-k1");
    srv.register_agent("forever", &["crm.customers:read"], "observe", &[&forever])
        .await;
    // A key that will be old: it expires, but only in 400 days.
    srv.register_agent("aging", &["crm.customers:read"], "observe", &[])
        .await;
    let aging = TestKey::ed25519("aging-k1");
    srv.admin_post(
        "/v1/agents/aging/keys",
        &json!({"jwk": aging.public_jwk(), "expires_at": t0 + 400 * DAY}),
    )
    .await
    .expect(201);
    // One key pair on two agents, under two kids.
    let twin = TestKey::ed25519("twin-a-k1");
    srv.register_agent("twin-a", &["crm.customers:read"], "observe", &[&twin])
        .await;
    let mut jwk = twin.public_jwk();
    jwk["kid"] = json!("twin-b-k1");
    srv.admin_post(
        "/v1/agents",
        &json!({"id": "twin-b", "owner": "erin@example.com", "ceiling": ["crm.customers:read"],
                "keys": [jwk]}),
    )
    .await
    .expect(201);
    // One scope used, one not.
    let worker_key = TestKey::ed25519("worker-k1");
    srv.register_agent(
        "worker",
        &["crm.customers:read", "tickets:read"],
        "observe",
        &[&worker_key],
    )
    .await;
    // A write scope without a recorded justification (and one with).
    srv.admin_post(
        "/v1/agents",
        &json!({"id": "writer", "owner": "erin@example.com", "max_stage": "draft",
                "ceiling": ["tickets:read", "tickets:create", "email:send"],
                "justifications": {"email:send": "answers customers by mail"}}),
    )
    .await
    .expect(201);
    // `execute` as its stage.
    srv.admin_post(
        "/v1/agents",
        &json!({"id": "runner", "owner": "erin@example.com", "max_stage": "execute",
                "ceiling": ["email:send"], "justifications": {"email:send": "sends receipts"}}),
    )
    .await
    .expect(201);
    // No owner: the API refuses one, so an older record is seeded through the store.
    let state = &srv.running().state;
    let orphan = CoreAgent {
        id: AgentId::parse("orphan").unwrap(),
        name: "orphan".into(),
        owner: String::new(),
        description: "registered before owners were required".into(),
        ceiling: PatternSet::parse(["crm.customers:read"]).unwrap(),
        tags: Vec::new(),
        max_stage: Stage::Observe,
        status: AgentStatus::Active,
        keys: Vec::new(),
        workloads: Vec::new(),
        require_dpop: false,
        created_at: t0,
        updated_at: t0,
    };
    state
        .store
        .commit(vec![Op::InsertAgent(orphan)])
        .await
        .unwrap();
    state
        .directory
        .refresh(state.store.as_ref(), "orphan")
        .await
        .unwrap();
    // A review round nobody answers.
    let round = srv
        .admin_post("/v1/reviews", &json!({"due_days": 14}))
        .await;
    round.expect(201);
    let worker_review = round.body["reviews"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["agent"] == "worker")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        round.body["skipped"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["agent"] == "orphan" && s["reason"].as_str().unwrap().contains("no owner")),
        "{}",
        round.body
    );

    // 95 days later the worker reads a customer, and nothing else happens.
    srv.clock.advance(95 * DAY);
    let worker = Agent {
        id: "worker".into(),
        key: worker_key,
    };
    let r = srv
        .exchange(&worker, &srv.alice(), "crm.customers:read")
        .await;
    r.access_token();
    let used_at = srv.now();

    let report = posture(&srv, "?unused_days=30").await;
    let all = findings(&report);
    expect_finding(&all, "key-never-expires", "forever", "forever-k1");
    assert!(found(&all, "key-never-expires", "aging").is_empty());
    let old = expect_finding(&all, "key-old", "aging", "aging-k1");
    assert_eq!(old["severity"], "medium");
    assert!(
        old["problem"].as_str().unwrap().contains("95 days old"),
        "{old}"
    );
    let shared = expect_finding(&all, "key-shared", "twin-a", "twin-a-k1");
    assert_eq!(shared["severity"], "critical");
    assert!(shared["problem"].as_str().unwrap().contains("twin-b"));
    expect_finding(&all, "key-shared", "twin-b", "twin-b-k1");
    let unused = expect_finding(&all, "scope-unused", "worker", "tickets:read");
    assert!(
        unused["fix"]
            .as_str()
            .unwrap()
            .contains("mandate agents update worker --ceiling crm.customers:read"),
        "{unused}"
    );
    assert!(
        found(&all, "scope-unused", "worker")
            .iter()
            .all(|f| f["subject"] != "crm.customers:read"),
        "a scope used within the window is not unused"
    );
    let unjustified = expect_finding(&all, "write-scope-unjustified", "writer", "tickets:create");
    assert!(
        unjustified["fix"]
            .as_str()
            .unwrap()
            .contains("mandate agents update writer --justify"),
        "{unjustified}"
    );
    assert_eq!(found(&all, "write-scope-unjustified", "writer").len(), 1);
    assert!(found(&all, "write-scope-unjustified", "runner").is_empty());
    expect_finding(&all, "stage-execute", "runner", "max_stage");
    let orphaned = expect_finding(&all, "no-owner", "orphan", "owner");
    assert_eq!(orphaned["severity"], "high");
    expect_finding(&all, "review-overdue", "worker", &worker_review);
    // The demo world's own: support-v2 may write without a recorded reason.
    for p in ["tickets:*", "email:send", "mcp.crm.*:call"] {
        expect_finding(&all, "write-scope-unjustified", "support-v2", p);
    }
    // Most severe first.
    let rank = |s: &str| {
        ["critical", "high", "medium", "low"]
            .iter()
            .position(|x| *x == s)
    };
    let ranks: Vec<_> = all
        .iter()
        .map(|f| rank(f["severity"].as_str().unwrap()))
        .collect();
    let mut sorted = ranks.clone();
    sorted.sort();
    assert_eq!(ranks, sorted);
    assert_eq!(
        report["summary"]["critical"].as_u64().unwrap(),
        all.iter().filter(|f| f["severity"] == "critical").count() as u64
    );

    // The inventory: credentials with age, expiry and last use; scopes with class and use.
    let inv = report["inventory"].as_array().unwrap();
    let entry = inv.iter().find(|e| e["agent"] == "worker").unwrap();
    assert_eq!(entry["owner"], "erin@example.com");
    assert_eq!(entry["max_stage"], "observe");
    assert_eq!(
        entry["ceiling"],
        json!(["crm.customers:read", "tickets:read"])
    );
    let cred = &entry["credentials"][0];
    assert_eq!(cred["kid"], "worker-k1");
    assert_eq!(cred["age_days"], 95);
    assert_eq!(cred["last_used"], used_at);
    assert_eq!(cred["expires_at"], Value::Null);
    assert_eq!(entry["scopes"][0]["last_used"], used_at);
    assert_eq!(entry["scopes"][1]["last_used"], Value::Null);
    let aging_entry = inv.iter().find(|e| e["agent"] == "aging").unwrap();
    assert_eq!(aging_entry["credentials"][0]["expires_at"], t0 + 400 * DAY);
    let writer_entry = inv.iter().find(|e| e["agent"] == "writer").unwrap();
    let email = writer_entry["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["pattern"] == "email:send")
        .unwrap();
    assert_eq!(email["class"], "write");
    assert_eq!(email["justification"], "answers customers by mail");
    assert!(
        inv.iter()
            .any(|e| e["agent"] == "orphan" && e["owner"] == "")
    );

    // Open reviews are listed, overdue.
    let reviews = report["reviews"].as_array().unwrap();
    assert!(reviews.iter().all(|r| r["overdue"] == true), "{reviews:?}");
    check_blast_radius(&report);
    let radius = |id: &str| {
        report["blast_radius"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["agent"] == id)
            .unwrap()
            .clone()
    };
    // Writes at `execute` weigh more than at `draft`; the observed peak is shown.
    assert_eq!(radius("runner")["scope_weight"]["total"], 3);
    assert_eq!(radius("worker")["velocity"]["observed_peak_per_minute"], 1);

    // Bad settings are a clear 400.
    for q in [
        "?unused_days=0",
        "?unused_days=x",
        "?key_age_days=99999",
        "?nope=1",
    ] {
        let r = srv.admin_get(&format!("/v1/posture{q}")).await;
        r.expect(400);
        assert!(!r.description().is_empty(), "{q}: {}", r.body);
    }
    srv.shutdown().await;
}

#[tokio::test]
async fn a_clean_deployment_has_no_findings() {
    let srv = Server::start_production().await;
    let key = TestKey::ed25519("clean-k1");
    let r = srv
        .admin_post(
            "/v1/agents",
            &json!({"id": "clean-agent", "owner": "carol@example.com", "max_stage": "draft",
                    "ceiling": ["crm.customers:read", "tickets:create"],
                    "justifications": {"tickets:create": "opens tickets for customers"}}),
        )
        .await;
    r.expect(201);
    srv.admin_post(
        "/v1/agents/clean-agent/keys",
        &json!({"jwk": key.public_jwk(), "expires_at": srv.now() + 60 * DAY}),
    )
    .await
    .expect(201);
    let report = posture(&srv, "").await;
    assert_eq!(report["findings"], json!([]), "{report}");
    assert_eq!(report["summary"]["findings"], 0);
    check_blast_radius(&report);

    // A month on, the agent used both scopes this week: still nothing to report.
    srv.clock.advance(31 * DAY);
    let store = &srv.running().state.store;
    let now = srv.now();
    store
        .commit(vec![
            Op::InsertToken(token(
                "c1",
                "clean-agent",
                "clean-k1",
                "crm.customers:read",
                now - DAY,
            )),
            Op::InsertToken(token(
                "c2",
                "clean-agent",
                "clean-k1",
                "tickets:create",
                now,
            )),
        ])
        .await
        .unwrap();
    let report = posture(&srv, "?unused_days=30").await;
    assert_eq!(report["findings"], json!([]), "{report}");
    let entry = &report["inventory"][0];
    assert_eq!(entry["credentials"][0]["last_used"], now);
    assert_eq!(entry["credentials"][0]["age_days"], 31);
    check_blast_radius(&report);
    let b = &report["blast_radius"][0];
    // Draft: the write weighs like a read.
    assert_eq!(b["scope_weight"]["total"], 2);
    assert_eq!(b["velocity"]["bounded"], false);
    srv.shutdown().await;
}

#[tokio::test]
async fn justifications_are_recorded_checked_and_audited() {
    let srv = Server::start().await;
    // A pattern outside the ceiling is refused, at registration and in a change.
    let r = srv
        .admin_post(
            "/v1/agents",
            &json!({"id": "j-agent", "owner": "erin@example.com", "ceiling": ["tickets:*"],
                    "justifications": {"email:send": "mails"}}),
        )
        .await;
    r.expect(400);
    assert!(r.description().contains("`email:send`"), "{}", r.body);
    srv.admin_get("/v1/agents/j-agent").await.expect(404);
    let r = srv
        .send(
            srv.admin_req(reqwest::Method::PATCH, "/v1/agents/support-v2")
                .json(&json!({"justifications": {"billing.payments:create": "no"}})),
        )
        .await;
    r.expect(400);
    let r = srv
        .send(
            srv.admin_req(reqwest::Method::PATCH, "/v1/agents/support-v2")
                .json(&json!({"justifications": {"tickets:*": "x".repeat(1001)}})),
        )
        .await;
    r.expect(400);

    srv.admin_patch(
        "/v1/agents/support-v2",
        &json!({"justifications": {"tickets:*": "files and updates support tickets",
                                   "email:send": "answers customers"}}),
    )
    .await;
    let report = posture(&srv, "").await;
    let all = findings(&report);
    let left: Vec<&str> = found(&all, "write-scope-unjustified", "support-v2")
        .iter()
        .map(|f| f["subject"].as_str().unwrap())
        .collect();
    assert_eq!(left, ["mcp.crm.*:call"]);
    // `null` forgets one.
    srv.admin_patch(
        "/v1/agents/support-v2",
        &json!({"justifications": {"email:send": null}}),
    )
    .await;
    let all = findings(&posture(&srv, "").await);
    assert_eq!(
        found(&all, "write-scope-unjustified", "support-v2").len(),
        2
    );
    let events = srv.audit("kind=agent.update&agent=support-v2").await;
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(
        events[0]["detail"]
            .as_str()
            .unwrap()
            .contains("files and updates")
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn access_reviews_are_answered_by_owners_only_and_narrow_ceilings() {
    let srv = Server::start().await;
    let r = srv.admin_post("/v1/reviews", &json!({"due_days": 7})).await;
    r.expect(201);
    let items = r.body["reviews"].as_array().unwrap().clone();
    let of = |agent: &str| {
        items
            .iter()
            .find(|i| i["agent"] == agent)
            .unwrap_or_else(|| panic!("no review for {agent}: {items:?}"))
            .clone()
    };
    let support = of("support-v2");
    let analytics = of("analytics-v1");
    assert_eq!(items.len(), 2);
    assert_eq!(support["owner"], CAROL);
    assert_eq!(analytics["owner"], BOB);
    assert_eq!(support["status"], "open");
    assert_eq!(support["due_at"], srv.now() + 7 * DAY);
    assert_eq!(
        support["ceiling"],
        json!([
            "crm.customers:read",
            "tickets:*",
            "email:send",
            "mcp.crm.*:call"
        ])
    );
    let support_id = support["id"].as_str().unwrap().to_owned();
    let analytics_id = analytics["id"].as_str().unwrap().to_owned();
    assert_eq!(srv.audit("kind=review.open").await.len(), 2);

    // A second round skips agents whose review is open.
    let again = srv.admin_post("/v1/reviews", &json!({})).await;
    again.expect(201);
    assert_eq!(again.body["reviews"], json!([]));
    assert_eq!(again.body["skipped"].as_array().unwrap().len(), 2);
    for bad in [
        json!({"due_days": 0}),
        json!({"due_days": 400}),
        json!({"due": 1}),
    ] {
        srv.admin_post("/v1/reviews", &bad).await.expect(400);
    }

    // Owners see their own; the admin sees all.
    let carol = srv.user_token(CAROL, &["support", "approver"], 600);
    let bob = srv.user_token(BOB, &["finance"], 600);
    let as_user = |t: &str, m: reqwest::Method, path: &str| {
        srv.http.request(m, srv.at(path)).bearer_auth(t.to_owned())
    };
    let mine = srv
        .send(as_user(
            &carol,
            reqwest::Method::GET,
            "/v1/reviews?status=open",
        ))
        .await;
    mine.expect(200);
    let mine = mine.body["reviews"].as_array().unwrap();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0]["agent"], "support-v2");
    let all = srv.admin_get("/v1/reviews?status=open").await;
    assert_eq!(all.body["reviews"].as_array().unwrap().len(), 2);
    srv.admin_get("/v1/reviews?status=maybe").await.expect(400);

    // Someone else may not answer: 403, audited. An admin credential may not either.
    let path = format!("/v1/reviews/{analytics_id}/attest");
    let r = srv
        .send(as_user(&carol, reqwest::Method::POST, &path).json(&json!({})))
        .await;
    r.expect(403);
    assert!(r.description().contains("only the owner"), "{}", r.body);
    let refused = srv.audit("kind=review.attest&decision=deny").await;
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0]["user"], CAROL);
    srv.admin_post(&path, &json!({})).await.expect(403);

    // The owner attests, once.
    let r = srv
        .send(as_user(&bob, reqwest::Method::POST, &path).json(&json!({"note": "still needed"})))
        .await;
    r.expect(200);
    assert_eq!(r.body["status"], "attested");
    assert_eq!(r.body["decided_by"], BOB);
    assert_eq!(r.body["note"], "still needed");
    let r = srv.send(as_user(&bob, reqwest::Method::POST, &path)).await;
    r.expect(409);
    let attested = srv.audit("kind=review.attest&decision=info").await;
    assert_eq!(attested.len(), 1);
    assert_eq!(attested[0]["user"], BOB);
    assert_eq!(attested[0]["chain"], json!(["analytics-v1"]));

    // The owner removes scopes: the ceiling narrows at once.
    let path = format!("/v1/reviews/{support_id}/remove");
    for bad in [
        json!({"scopes": ["billing.payments:create"]}),
        json!({"scopes": []}),
        json!({}),
        json!({"scopes": "email:send"}),
    ] {
        let r = srv
            .send(as_user(&carol, reqwest::Method::POST, &path).json(&bad))
            .await;
        r.expect(400);
    }
    let r = srv
        .send(
            as_user(&carol, reqwest::Method::POST, &path)
                .json(&json!({"scopes": ["email:send", "mcp.crm.*:call"], "note": "no mail"})),
        )
        .await;
    r.expect(200);
    assert_eq!(r.body["status"], "narrowed");
    assert_eq!(r.body["removed"], json!(["email:send", "mcp.crm.*:call"]));
    let agent = srv.admin_get("/v1/agents/support-v2").await;
    assert_eq!(
        agent.body["ceiling"],
        json!(["crm.customers:read", "tickets:*"])
    );
    let support_agent = srv.agent("support-v2");
    let r = srv
        .exchange(&support_agent, &srv.alice(), "email:send")
        .await;
    r.expect_oauth_error(400, "invalid_scope");
    let removed = srv.audit("kind=review.remove").await;
    assert_eq!(removed.len(), 1);
    assert_eq!(removed[0]["user"], CAROL);
    let updates = srv.audit("kind=agent.update&agent=support-v2").await;
    assert_eq!(updates.len(), 1);
    assert!(updates[0]["reason"].as_str().unwrap().contains(CAROL));
    let r = srv
        .send(as_user(&carol, reqwest::Method::POST, &path).json(&json!({"scopes": ["tickets:*"]})))
        .await;
    r.expect(409);
    let r = srv
        .send(as_user(
            &carol,
            reqwest::Method::POST,
            "/v1/reviews/rv-nope/attest",
        ))
        .await;
    r.expect(404);

    // A new round, unanswered past its due date, shows in posture.
    let round = srv.admin_post("/v1/reviews", &json!({"due_days": 1})).await;
    round.expect(201);
    assert_eq!(round.body["reviews"].as_array().unwrap().len(), 2);
    let report = posture(&srv, "").await;
    assert!(found(&findings(&report), "review-overdue", "support-v2").is_empty());
    srv.clock.advance(2 * DAY);
    let report = posture(&srv, "").await;
    let all = findings(&report);
    for r in round.body["reviews"].as_array().unwrap() {
        expect_finding(
            &all,
            "review-overdue",
            r["agent"].as_str().unwrap(),
            r["id"].as_str().unwrap(),
        );
    }
    assert_eq!(report["summary"]["overdue_reviews"], 2);
    let overdue = srv.admin_get("/v1/reviews?status=overdue").await;
    assert_eq!(overdue.body["reviews"].as_array().unwrap().len(), 2);
    srv.shutdown().await;
}

#[tokio::test]
async fn an_auditor_may_read_posture_but_not_start_reviews() {
    let srv = Server::start().await;
    let r = srv
        .admin_post("/v1/credentials", &json!({"id": "aud", "role": "auditor"}))
        .await;
    let secret = r.body["secret"].as_str().unwrap().to_owned();
    let r = srv
        .send(srv.http.get(srv.at("/v1/posture")).bearer_auth(&secret))
        .await;
    r.expect(200);
    let r = srv
        .send(
            srv.http
                .post(srv.at("/v1/reviews"))
                .bearer_auth(&secret)
                .json(&json!({})),
        )
        .await;
    r.expect(403);
    srv.shutdown().await;
}

#[tokio::test]
async fn configured_limits_and_alerting_breakers_shrink_the_blast_radius() {
    let srv = Server::start_configured(|c| {
        c.limits.issuance_per_agent_per_minute = 30;
        c.gateway
            .breakers
            .push(mandate_gateway::breaker::BreakerRule {
                id: "mail-flood".into(),
                agent: "*".into(),
                action: "email:send".into(),
                max: 50,
                per: "1h".into(),
                then: mandate_gateway::breaker::Then::Deny,
                webhook: Some("https://hooks.example/mandate".into()),
            });
    })
    .await;
    let report = posture(&srv, "").await;
    check_blast_radius(&report);
    let radii = report["blast_radius"].as_array().unwrap();
    let support = radii.iter().find(|b| b["agent"] == "support-v2").unwrap();
    let v = &support["velocity"];
    assert_eq!(v["bounded"], true);
    assert_eq!(v["per_minute"], 30.0);
    let limits = v["limits"].as_array().unwrap();
    assert_eq!(limits.len(), 2, "{limits:?}");
    let breaker = limits
        .iter()
        .find(|l| l["source"] == "breaker:mail-flood")
        .unwrap();
    assert_eq!(breaker["binding"], false);
    assert!((breaker["per_minute"].as_f64().unwrap() - 50.0 / 60.0).abs() < 1e-9);
    let d = &support["detection_window"];
    assert_eq!(d["alerting_secs"], 0);
    assert!(
        d["explanation"]
            .as_str()
            .unwrap()
            .contains("breaker:mail-flood")
    );
    // The example of docs/posture.md: 6 × 30 × 60.0001 ≈ 10800.
    let score = support["score"].as_f64().unwrap();
    assert!((score - 10_800.0).abs() < 0.1, "{score}");
    // analytics-v1 holds no `email:send`: the breaker neither binds nor alerts for it.
    let analytics = radii.iter().find(|b| b["agent"] == "analytics-v1").unwrap();
    assert_eq!(analytics["detection_window"]["alerting_secs"], 3600);
    srv.shutdown().await;
}

//! Tasks as units of agent work: explicit creation, the agent's steps, completion that ends every
//! token of the task, and the one timeline `GET /v1/tasks/{id}` returns.

use reqwest::Method;
use serde_json::{Value, json};

use super::harness::*;

/// `POST path` with `body`, authenticated by `bearer` (an access token or admin credential).
async fn post_as(srv: &Server, bearer: Option<&str>, path: &str, body: &Value) -> Reply {
    let mut req = srv.http.post(srv.at(path)).json(body);
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    srv.send(req).await
}

/// Exchanges alice's token through support-v2 for `task`, with purpose and input.
async fn first_hop(srv: &Server, task: &str, input: &str) -> Reply {
    let support = srv.agent("support-v2");
    srv.token_as(
        &support,
        exchange_form(
            &srv.alice(),
            TYPE_JWT,
            "crm.customers:read tickets:read",
            &[
                ("task", task),
                ("task_purpose", "answer the billing question"),
                ("task_input", input),
            ],
        ),
    )
    .await
}

fn step_body(decision: &str) -> Value {
    json!({
        "decision": decision,
        "summary": format!("the customer asks about an invoice, so {decision}"),
        "tool_call": {"action": "crm.customers:read", "resource": "customers/9821",
                      "arguments": {"fields": ["plan"]}},
    })
}

async fn show(srv: &Server, id: &str) -> Value {
    let r = srv.admin_get(&format!("/v1/tasks/{id}")).await;
    r.expect(200);
    r.body
}

#[tokio::test]
async fn tasks_are_created_explicitly_by_admin_or_by_the_agent_for_itself() {
    let srv = Server::start().await;
    let r = srv
        .admin_post(
            "/v1/tasks",
            &json!({"id": "ticket-1", "purpose": "refund", "input": "Please refund invoice 77",
                    "agent": "support-v2", "user": ALICE}),
        )
        .await;
    r.expect(201);
    assert_eq!(r.body["task"]["id"], "ticket-1");
    assert_eq!(r.body["task"]["status"], "active");
    let t = show(&srv, "ticket-1").await;
    assert_eq!(t["task"]["input"], "Please refund invoice 77");
    assert_eq!(t["task"]["purpose"], "refund");
    assert_eq!(t["task"]["agent"], "support-v2");
    assert_eq!(t["task"]["user"], ALICE);
    assert!(t["task"]["outcome"].is_null());
    let created: Vec<&Value> = t["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "task.create")
        .collect();
    assert_eq!(created.len(), 1);
    assert_eq!(created[0]["request_id"], r.request_id.as_str());

    // The id is unique; without one, a `task-…` id is generated.
    let dup = srv
        .admin_post(
            "/v1/tasks",
            &json!({"id": "ticket-1", "purpose": "x", "input": "", "agent": "support-v2"}),
        )
        .await;
    dup.expect(409);
    assert_eq!(show(&srv, "ticket-1").await["task"]["purpose"], "refund");
    let generated = srv
        .admin_post(
            "/v1/tasks",
            &json!({"purpose": "triage", "input": "", "agent": "analytics-v1"}),
        )
        .await;
    generated.expect(201);
    assert!(
        generated.body["task"]["id"]
            .as_str()
            .unwrap()
            .starts_with("task-")
    );
    assert!(generated.body["task"]["user"].is_null());

    // An agent's token creates tasks for its own acting agent and user.
    let second = first_hop(&srv, "ticket-2", "").await.access_token();
    let analytics = srv.agent("analytics-v1");
    let hop = srv
        .hop(&analytics, &second, "crm.customers:read")
        .await
        .access_token();
    let r = post_as(
        &srv,
        Some(&hop),
        "/v1/tasks",
        &json!({"id": "sub-task", "purpose": "look up the customer", "input": "customer 9821"}),
    )
    .await;
    r.expect(201);
    assert_eq!(r.body["task"]["agent"], "analytics-v1");
    assert_eq!(r.body["task"]["user"], ALICE);
    let e = srv.audit("task=sub-task&kind=task.create").await;
    assert_eq!(e[0]["chain"], json!(["support-v2", "analytics-v1"]));
    assert_eq!(e[0]["user"], ALICE);
    // …and for no one else.
    for body in [
        json!({"purpose": "p", "input": "", "agent": "support-v2"}),
        json!({"purpose": "p", "input": "", "user": BOB}),
    ] {
        post_as(&srv, Some(&hop), "/v1/tasks", &body)
            .await
            .expect(403);
    }

    // Bad bodies change nothing.
    let before = srv.admin_get("/v1/tasks?limit=1000").await.body["tasks"]
        .as_array()
        .unwrap()
        .len();
    for body in [
        json!({"purpose": "p", "input": ""}),
        json!({"purpose": "p", "input": "", "agent": "nobody"}),
        json!({"purpose": " ", "input": "", "agent": "support-v2"}),
        json!({"input": "", "agent": "support-v2"}),
        json!({"id": "bad id!", "purpose": "p", "input": "", "agent": "support-v2"}),
        json!({"purpose": "p", "input": "x".repeat(4097), "agent": "support-v2"}),
        json!({"purpose": "p", "input": "", "agent": "support-v2", "extra": 1}),
    ] {
        let r = srv.admin_post("/v1/tasks", &body).await;
        assert_eq!(r.status, 400, "{body}: {}", r.body);
    }
    let after = srv.admin_get("/v1/tasks?limit=1000").await.body["tasks"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(before, after);
    srv.shutdown().await;
}

#[tokio::test]
async fn the_token_endpoint_stores_the_task_input_on_first_creation() {
    let srv = Server::start().await;
    first_hop(&srv, "ticket-9", "My invoice 77 is wrong")
        .await
        .access_token();
    // A later token for the same task does not change the stored input.
    first_hop(&srv, "ticket-9", "something else")
        .await
        .access_token();
    let t = show(&srv, "ticket-9").await;
    assert_eq!(t["task"]["input"], "My invoice 77 is wrong");
    assert_eq!(t["task"]["purpose"], "answer the billing question");

    let r = first_hop(&srv, "ticket-10", &"x".repeat(4097)).await;
    r.expect_oauth_error(400, "invalid_request");
    assert!(r.description().contains("task_input"), "{}", r.body);
    srv.admin_get("/v1/tasks/ticket-10").await.expect(404);
    srv.shutdown().await;
}

#[tokio::test]
async fn the_agent_records_steps_of_its_own_task_in_order() {
    let srv = Server::start().await;
    let token = first_hop(&srv, "ticket-3", "where is my refund?")
        .await
        .access_token();
    let other = first_hop(&srv, "ticket-4", "").await.access_token();

    for (i, decision) in ["look up the customer", "read the ticket"]
        .iter()
        .enumerate()
    {
        let r = post_as(
            &srv,
            Some(&token),
            "/v1/tasks/ticket-3/steps",
            &step_body(decision),
        )
        .await;
        r.expect(201);
        assert_eq!(r.body["step"]["seq"], i as i64 + 1);
        assert_eq!(r.body["step"]["by"], "agent:support-v2");
    }
    // An administrator may record a step too.
    let r = srv
        .admin_post(
            "/v1/tasks/ticket-3/steps",
            &json!({"decision": "escalate", "summary": "", "anomaly": "asked for another account"}),
        )
        .await;
    r.expect(201);
    assert_eq!(r.body["step"]["seq"], 3);
    assert!(r.body["step"]["by"].as_str().unwrap().starts_with("admin:"));

    // A token bound to another task may not write here; no credential at all is 401.
    let r = post_as(
        &srv,
        Some(&other),
        "/v1/tasks/ticket-3/steps",
        &step_body("sneak"),
    )
    .await;
    r.expect(403);
    assert!(r.description().contains("ticket-4"), "{}", r.body);
    post_as(&srv, None, "/v1/tasks/ticket-3/steps", &step_body("x"))
        .await
        .expect(401);
    post_as(
        &srv,
        Some("not-a-token"),
        "/v1/tasks/ticket-3/steps",
        &step_body("x"),
    )
    .await
    .expect(401);
    post_as(
        &srv,
        Some(&token),
        "/v1/tasks/nothing/steps",
        &step_body("x"),
    )
    .await
    .expect(403);
    srv.admin_post("/v1/tasks/nothing/steps", &step_body("x"))
        .await
        .expect(404);

    // Bad bodies: 400 and nothing written.
    let events_before = srv.audit("task=ticket-3&limit=1000").await.len();
    let big_args = json!({"decision": "d", "summary": "s", "tool_call": {
        "action": "crm.customers:read", "resource": "customers/1",
        "arguments": {"blob": "x".repeat(4100)}}});
    for body in [
        json!({"summary": "no decision"}),
        json!({"decision": "  ", "summary": "blank decision"}),
        json!({"decision": "d"}),
        json!({"decision": "d", "summary": "x".repeat(4097)}),
        json!({"decision": "d", "summary": "s", "tool_call": {"action": "Not A Scope", "resource": "r"}}),
        json!({"decision": "d", "summary": "s", "tool_call": {"action": "crm.customers:read"}}),
        big_args,
        json!({"decision": "d", "summary": "s", "color": "red"}),
    ] {
        let r = post_as(&srv, Some(&token), "/v1/tasks/ticket-3/steps", &body).await;
        assert_eq!(r.status, 400, "{body}: {}", r.body);
    }
    let t = show(&srv, "ticket-3").await;
    let steps = t["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 3);
    assert_eq!(steps[0]["decision"], "look up the customer");
    assert_eq!(steps[0]["tool_call"]["resource"], "customers/9821");
    assert_eq!(
        steps[0]["tool_call"]["arguments"],
        json!({"fields": ["plan"]})
    );
    assert_eq!(steps[1]["decision"], "read the ticket");
    assert_eq!(steps[2]["anomaly"], "asked for another account");
    assert_eq!(
        srv.audit("task=ticket-3&limit=1000").await.len(),
        events_before
    );

    // Each step is an audit event naming its number and the agent's token.
    let events = srv.audit("task=ticket-3&kind=task.step").await;
    let numbers: Vec<i64> = events
        .iter()
        .map(|e| {
            serde_json::from_str::<Value>(e["detail"].as_str().unwrap()).unwrap()["step"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(numbers, [1, 2, 3]);
    assert_eq!(events[0]["user"], ALICE);
    assert_eq!(events[0]["chain"], json!(["support-v2"]));
    assert_eq!(events[0]["jti"], peek(&token)["jti"]);

    // An auditor reads tasks but cannot write to them.
    let aud = srv
        .admin_post("/v1/credentials", &json!({"id": "aud1", "role": "auditor"}))
        .await;
    let secret = aud.body["secret"].as_str().unwrap().to_owned();
    post_as(
        &srv,
        Some(&secret),
        "/v1/tasks/ticket-3/steps",
        &step_body("x"),
    )
    .await
    .expect(403);
    let r = srv
        .send(
            srv.http
                .request(Method::GET, srv.at("/v1/tasks/ticket-3"))
                .bearer_auth(&secret),
        )
        .await;
    r.expect(200);
    srv.shutdown().await;
}

#[tokio::test]
async fn completing_a_task_ends_every_token_of_it_at_once() {
    let srv = Server::start().await;
    let first = first_hop(&srv, "ticket-5", "refund please")
        .await
        .access_token();
    let analytics = srv.agent("analytics-v1");
    let second = srv
        .hop(&analytics, &first, "crm.customers:read")
        .await
        .access_token();
    let bystander = first_hop(&srv, "ticket-6", "").await.access_token();
    assert!(srv.active(&first).await && srv.active(&second).await);

    // The second-hop agent's token is bound to the same task, so it may complete it.
    let r = post_as(
        &srv,
        Some(&second),
        "/v1/tasks/ticket-5/complete",
        &json!({"outcome": "refund of invoice 77 issued"}),
    )
    .await;
    r.expect(200);
    assert_eq!(r.body["task"]["status"], "completed");
    assert_eq!(r.body["revocation"]["tokens_ended"], 2);
    assert!(!srv.active(&first).await, "the first hop ended");
    assert!(!srv.active(&second).await, "the second hop ended");
    assert!(srv.active(&bystander).await, "another task is untouched");

    let t = show(&srv, "ticket-5").await;
    assert_eq!(t["task"]["status"], "completed");
    assert_eq!(t["task"]["outcome"], "refund of invoice 77 issued");
    assert!(t["task"]["completed_at"].as_i64().is_some());
    assert!(
        t["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .all(|tok| tok["revoked_at"].is_i64())
    );

    // The revocation is audited as the completion, by the agent that completed it.
    let revs = srv.audit("task=ticket-5&kind=revocation").await;
    assert_eq!(revs.len(), 1);
    assert_eq!(revs[0]["action"], "task.complete");
    assert_eq!(
        revs[0]["reason"],
        "revoked by agent:analytics-v1: task completed"
    );
    assert_eq!(revs[0]["request_id"], r.request_id.as_str());

    // Nothing more happens in the task.
    let again = first_hop(&srv, "ticket-5", "").await;
    again.expect_oauth_error(400, "invalid_grant");
    assert!(again.description().contains("completed"), "{}", again.body);
    srv.hop(&analytics, &first, "crm.customers:read")
        .await
        .expect_oauth_error(400, "invalid_grant");
    let r = srv
        .admin_post("/v1/tasks/ticket-5/steps", &step_body("late"))
        .await;
    r.expect(409);
    assert!(r.description().contains("completed"), "{}", r.body);
    srv.admin_post("/v1/tasks/ticket-5/complete", &json!({"outcome": "twice"}))
        .await
        .expect(409);
    // Its ended tokens can no longer act at all.
    post_as(
        &srv,
        Some(&first),
        "/v1/tasks/ticket-5/steps",
        &step_body("x"),
    )
    .await
    .expect(401);
    assert_eq!(
        show(&srv, "ticket-5").await["task"]["outcome"],
        "refund of invoice 77 issued"
    );

    // A revoked task cannot be completed either; nor can another task's token complete it.
    srv.revoke("task", "ticket-6").await.expect(201);
    srv.admin_post("/v1/tasks/ticket-6/complete", &json!({"outcome": "x"}))
        .await
        .expect(409);
    let other = first_hop(&srv, "ticket-7", "").await.access_token();
    post_as(
        &srv,
        Some(&other),
        "/v1/tasks/ticket-5/complete",
        &json!({"outcome": "x"}),
    )
    .await
    .expect(403);
    srv.admin_post("/v1/tasks/ticket-7/complete", &json!({}))
        .await
        .expect(400);
    assert!(
        srv.active(&other).await,
        "a refused completion ends nothing"
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn the_task_shows_one_timeline_and_tasks_are_listed() {
    let srv = Server::start().await;
    let token = first_hop(&srv, "ticket-8", "Why was I charged twice?")
        .await
        .access_token();
    post_as(
        &srv,
        Some(&token),
        "/v1/tasks/ticket-8/steps",
        &step_body("look up the customer"),
    )
    .await
    .expect(201);
    // A refused over-reach in the same task is one of its events.
    let support = srv.agent("support-v2");
    srv.token_as(
        &support,
        exchange_form(
            &srv.alice(),
            TYPE_JWT,
            "mcp.crm.delete_customer:call",
            &[("task", "ticket-8")],
        ),
    )
    .await
    .expect_oauth_error(400, "invalid_scope");
    // A user revocation reaches the task's token too.
    srv.revoke("user", ALICE).await.expect(201);

    let t = show(&srv, "ticket-8").await;
    assert_eq!(t["task"]["input"], "Why was I charged twice?");
    assert_eq!(t["steps"].as_array().unwrap().len(), 1);
    let tokens = t["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0]["jti"], peek(&token)["jti"]);
    assert!(tokens[0].get("access_token").is_none());
    let kinds: Vec<&str> = t["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"token.exchange"), "{kinds:?}");
    assert!(kinds.contains(&"task.step"), "{kinds:?}");
    assert!(
        t["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["decision"] == "deny"),
        "{kinds:?}"
    );
    let revs = t["revocations"].as_array().unwrap();
    assert_eq!(revs.len(), 1, "{revs:?}");
    assert_eq!(revs[0]["kind"], "user");
    assert_eq!(revs[0]["jtis"], json!([peek(&token)["jti"]]));

    // Listing, filtered.
    srv.admin_post(
        "/v1/tasks",
        &json!({"id": "report-1", "purpose": "report", "input": "", "agent": "analytics-v1", "user": BOB}),
    )
    .await
    .expect(201);
    srv.admin_post(
        "/v1/tasks",
        &json!({"id": "report-2", "purpose": "report", "input": "", "agent": "analytics-v1"}),
    )
    .await
    .expect(201);
    srv.admin_post("/v1/tasks/report-2/complete", &json!({"outcome": "sent"}))
        .await
        .expect(200);
    let ids = |q: &str| {
        let srv = &srv;
        let q = q.to_owned();
        async move {
            let r = srv.admin_get(&format!("/v1/tasks?{q}")).await;
            r.expect(200);
            r.body["tasks"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["id"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(ids("agent=analytics-v1").await, ["report-2", "report-1"]);
    assert_eq!(ids(&format!("user={BOB}")).await, ["report-1"]);
    assert_eq!(ids("status=completed").await, ["report-2"]);
    assert_eq!(ids("agent=analytics-v1&limit=1").await, ["report-2"]);
    assert_eq!(ids("agent=support-v2").await, ["ticket-8"]);
    srv.admin_get("/v1/tasks?status=finished").await.expect(400);
    srv.admin_get("/v1/tasks/nothing").await.expect(404);
    srv.shutdown().await;
}

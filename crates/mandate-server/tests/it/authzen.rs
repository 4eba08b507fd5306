//! The OpenID AuthZEN Authorization API: the specification's request and response shapes.

use serde_json::json;

use super::harness::*;

#[tokio::test]
async fn a_single_evaluation_answers_decision_and_context() {
    let srv = Server::start().await;
    let r = srv
        .admin_post(
            "/access/v1/evaluation",
            &json!({
                "subject": {"type": "user", "id": "alice@example.com", "properties": {"groups": ["support"]}},
                "action": {"name": "crm.customers:read"},
                "resource": {"type": "customer", "id": "customers/9821"},
                "context": {"stage": "observe"}
            }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["decision"], true);
    assert_eq!(r.body["context"]["policies"], json!(["support-group"]));
    assert!(
        r.headers.get("x-request-id").is_some(),
        "the request id is echoed for the PEP"
    );
    let denied = srv
        .admin_post(
            "/access/v1/evaluation",
            &json!({
                "subject": {"type": "user", "id": "bob@example.com", "properties": {"groups": ["finance"]}},
                "action": {"name": "billing.payments:create"},
                "resource": {"type": "payment", "id": "payments/1"}
            }),
        )
        .await;
    assert_eq!(denied.body["decision"], false);
    assert_eq!(
        denied.body["context"]["policies"],
        json!(["payments-need-gold-tier"])
    );
    let gold = srv
        .admin_post(
            "/access/v1/evaluation",
            &json!({
                "subject": {"type": "user", "id": "bob@example.com", "properties": {"groups": ["finance"], "tier": "gold"}},
                "action": {"name": "billing.payments:create"},
                "resource": {"type": "payment", "id": "payments/1"}
            }),
        )
        .await;
    assert_eq!(gold.body["decision"], true, "{}", gold.body);
    // Each decision is audited.
    let events = srv.audit("kind=authzen.evaluation").await;
    assert_eq!(events.len(), 3);
    assert_eq!(events[0]["user"], "alice@example.com");
    assert_eq!(events[0]["resource"], "customers/9821");
    assert_eq!(events[1]["decision"], "deny");
    srv.shutdown().await;
}

#[tokio::test]
async fn batch_evaluations_take_defaults_and_honour_the_semantic() {
    let srv = Server::start().await;
    let body = json!({
        "subject": {"type": "agent", "id": "support-v2"},
        "resource": {"type": "api", "id": "https://crm.example.com"},
        "evaluations": [
            {"action": {"name": "tickets:read"}},
            {"action": {"name": "email:send"}},
            {"action": {"name": "delegate"}, "resource": {"type": "agent", "id": "analytics-v1"}},
            {"action": {"name": "delegate"}, "resource": {"type": "agent", "id": "support-v2"}}
        ]
    });
    let r = srv.admin_post("/access/v1/evaluations", &body).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let decisions: Vec<bool> = r.body["evaluations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["decision"].as_bool().unwrap())
        .collect();
    assert_eq!(decisions, [true, false, true, false]);
    let mut first_deny = body.clone();
    first_deny["options"] = json!({"evaluations_semantic": "deny_on_first_deny"});
    let r = srv.admin_post("/access/v1/evaluations", &first_deny).await;
    assert_eq!(
        r.body["evaluations"].as_array().unwrap().len(),
        2,
        "stops at the first deny"
    );
    let cfg = srv
        .send(srv.http.get(srv.at("/.well-known/authzen-configuration")))
        .await;
    assert_eq!(
        cfg.body["access_evaluations_endpoint"],
        format!("{}/access/v1/evaluations", srv.url)
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn bad_evaluations_are_denials_that_say_why_and_callers_must_authenticate() {
    let srv = Server::start().await;
    let r = srv
        .admin_post(
            "/access/v1/evaluation",
            &json!({"subject": {"type": "robot", "id": "x"}, "action": {"name": "a:read"}, "resource": {"id": "r"}}),
        )
        .await;
    assert_eq!(r.body["decision"], false);
    assert!(
        r.body["context"]["reason_admin"]["en"]
            .as_str()
            .unwrap()
            .contains("robot")
    );
    let r = srv
        .admin_post(
            "/access/v1/evaluation",
            &json!({"subject": {"type": "user", "id": "alice"}, "action": {"name": "NOT A SCOPE"}, "resource": {"id": "r"}}),
        )
        .await;
    assert_eq!(r.body["decision"], false);
    let anon = srv
        .send(
            srv.http
                .post(srv.at("/access/v1/evaluation"))
                .json(&json!({})),
        )
        .await;
    assert_eq!(anon.status, 401);
    srv.shutdown().await;
}

#[tokio::test]
async fn resource_properties_are_resource_tags() {
    let srv = Server::start().await;
    srv.add_policy(
        "region.cedar",
        r#"@id("same-region-orders")
permit(principal is User, action == Action::"crm.orders:read", resource)
  when {
    principal.hasTag("region") && resource.hasTag("region") &&
    resource.getTag("region") == principal.getTag("region")
  };"#,
    )
    .await;
    let ask = |resource: serde_json::Value| {
        let srv = &srv;
        async move {
            let r = srv
                .admin_post(
                    "/access/v1/evaluation",
                    &json!({
                        "subject": {"type": "user", "id": "alice@example.com",
                                    "properties": {"groups": ["support"], "region": "emea"}},
                        "action": {"name": "crm.orders:read"},
                        "resource": resource,
                    }),
                )
                .await;
            assert_eq!(r.status, 200, "{}", r.body);
            r.body
        }
    };
    let same = ask(json!({"type": "order", "id": "orders/1",
        "properties": {"region": "emea", "size": 3}}))
    .await;
    assert_eq!(same["decision"], true, "{same}");
    assert_eq!(same["context"]["policies"], json!(["same-region-orders"]));
    let other =
        ask(json!({"type": "order", "id": "orders/2", "properties": {"region": "amer"}})).await;
    assert_eq!(other["decision"], false, "{other}");
    let untagged = ask(json!({"type": "order", "id": "orders/3"})).await;
    assert_eq!(untagged["decision"], false, "{untagged}");
    // Only string properties become tags.
    let not_a_string = ask(json!({"type": "order", "id": "orders/4",
        "properties": {"region": ["emea"]}}))
    .await;
    assert_eq!(not_a_string["decision"], false, "{not_a_string}");
    srv.shutdown().await;
}

//! `client_credentials`: an agent's own, autonomous token — `sub = agent:<id>`, no `act`.

use super::harness::*;

fn cc_form(scope: &str) -> Vec<(String, String)> {
    vec![
        ("grant_type".into(), "client_credentials".into()),
        ("scope".into(), scope.into()),
        ("resource".into(), CRM.into()),
    ]
}

#[tokio::test]
async fn client_credentials_issues_an_agent_token_without_act() {
    let srv = Server::start().await;
    let support = srv.agent("support-v2");
    // In the dev world, support-v2 may read tickets on its own.
    let r = srv.token_as(&support, cc_form("tickets:read")).await;
    let token = r.access_token();
    assert_eq!(r.body["token_type"], "Bearer");
    assert_eq!(r.body["scope"], "tickets:read");
    let v = srv.verify(&token, CRM).await.expect("verifies via JWKS");
    let c = &v.claims;
    assert_eq!(v.header.typ.as_deref(), Some("at+jwt"));
    assert_eq!(c["sub"], "agent:support-v2");
    assert_eq!(c["sub_profile"], "agent");
    assert!(c.get("act").is_none(), "no act on autonomous tokens: {c}");
    assert!(
        c.get("groups").is_none() && c.get("user_tags").is_none(),
        "no user claims on autonomous tokens: {c}"
    );
    assert_eq!(c["client_id"], "support-v2");
    assert_eq!(c["scope"], "tickets:read");
    assert_eq!(c["aud"], CRM);
    assert!(c["task"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap() <= 300);

    // Audited as an allow without a user.
    let task = c["task"].as_str().unwrap();
    let events = srv.audit(&format!("task={task}")).await;
    let e = events
        .iter()
        .find(|e| e["jti"] == c["jti"])
        .expect("an audit event for the token");
    assert_eq!(e["decision"], "allow");
    assert_eq!(e["kind"], "token.client_credentials");
    assert!(e["user"].is_null());
    assert_eq!(e["chain"], serde_json::json!(["support-v2"]));

    // Introspection describes it as the agent's own token.
    let i = srv.introspect(&token).await;
    assert_eq!(i["active"], true);
    assert_eq!(i["sub"], "agent:support-v2");
    assert!(i.get("act").is_none() || i["act"].is_null());
    srv.shutdown().await;
}

#[tokio::test]
async fn client_credentials_refuses_scopes_the_agent_has_no_own_right_to() {
    let srv = Server::start().await;
    let support = srv.agent("support-v2");
    // `email:send` is in support-v2's ceiling, but not among its own rights.
    let r = srv.token_as(&support, cc_form("email:send")).await;
    r.expect_oauth_error(400, "invalid_scope");
    assert!(r.description().contains("email:send"), "{}", r.body);
    let e = srv.deny_event(&r).await;
    assert_eq!(e["chain"], serde_json::json!(["support-v2"]));

    // analytics-v1 has no own rights at all.
    let analytics = srv.agent("analytics-v1");
    let r = srv
        .token_as(&analytics, cc_form("crm.customers:read"))
        .await;
    r.expect_oauth_error(400, "invalid_scope");
    srv.deny_event(&r).await;

    // A subject token does not belong in client_credentials.
    let mut form = cc_form("tickets:read");
    form.push(("subject_token".into(), srv.alice()));
    let r = srv.token_as(&support, form).await;
    r.expect_oauth_error(400, "invalid_request");
    srv.shutdown().await;
}

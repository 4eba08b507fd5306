//! Revocation (SPEC §5): a revoked token, task, user, agent or key ends every token derived from
//! it at once — introspection says `active: false` — and the state survives a restart.

use serde_json::json;

use super::harness::*;

/// The `jti` of a token (read without verification; the tests verify tokens elsewhere).
fn jti(token: &str) -> String {
    peek(token)["jti"].as_str().unwrap().to_owned()
}

fn task(token: &str) -> String {
    peek(token)["task"].as_str().unwrap().to_owned()
}

/// A first hop for `user` through support-v2 and its second hop through analytics-v1.
async fn chain_for(srv: &Server, user_token: &str) -> (String, String) {
    let support = srv.agent("support-v2");
    let analytics = srv.agent("analytics-v1");
    let t1 = srv
        .exchange(&support, user_token, "crm.customers:read tickets:read")
        .await
        .access_token();
    let t2 = srv
        .hop(&analytics, &t1, "crm.customers:read")
        .await
        .access_token();
    (t1, t2)
}

#[tokio::test]
async fn revoking_a_token_ends_it_and_its_descendants_and_survives_a_restart() {
    let mut srv = Server::start().await;
    let (t1, t2) = chain_for(&srv, &srv.alice()).await;
    let carol = srv.user_token(CAROL, &["support"], 3600);
    let (u1, u2) = chain_for(&srv, &carol).await;
    for t in [&t1, &t2, &u1, &u2] {
        assert!(srv.active(t).await);
    }

    let r = srv.revoke("token", &jti(&t1)).await;
    r.expect(201);
    let ended: Vec<String> = r.body["jtis"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j.as_str().unwrap().to_owned())
        .collect();
    assert!(
        ended.contains(&jti(&t1)) && ended.contains(&jti(&t2)),
        "{}",
        r.body
    );
    assert!(!ended.contains(&jti(&u1)) && !ended.contains(&jti(&u2)));

    assert_eq!(srv.introspect(&t1).await, json!({"active": false}));
    assert_eq!(srv.introspect(&t2).await, json!({"active": false}));
    // An unrelated token stays active and is described in full, `act` included.
    let i = srv.introspect(&u2).await;
    assert_eq!(i["active"], true);
    assert_eq!(i["sub"], CAROL);
    assert_eq!(i["client_id"], "analytics-v1");
    assert_eq!(i["scope"], "crm.customers:read");
    assert_eq!(i["jti"], jti(&u2).as_str());
    assert_eq!(i["act"]["sub"], "agent:analytics-v1");
    assert_eq!(i["act"]["act"]["sub"], "agent:support-v2");
    assert!(srv.active(&u1).await);

    // The revoked token can no longer be exchanged.
    let analytics = srv.agent("analytics-v1");
    let r = srv.hop(&analytics, &t1, "crm.customers:read").await;
    r.expect_oauth_error(400, "invalid_grant");
    srv.deny_event(&r).await;

    // Still revoked after a restart on the same port and data directory.
    srv.restart().await;
    assert!(srv.healthy().await);
    assert_eq!(srv.introspect(&t1).await, json!({"active": false}));
    assert_eq!(srv.introspect(&t2).await, json!({"active": false}));
    assert!(srv.active(&u1).await);
    assert!(srv.active(&u2).await);
    let analytics = srv.agent("analytics-v1");
    srv.hop(&analytics, &t1, "crm.customers:read")
        .await
        .expect_oauth_error(400, "invalid_grant");
    srv.shutdown().await;
}

#[tokio::test]
async fn a_token_exchanged_from_a_revoked_parent_after_the_fact_is_refused() {
    // Revocation of a parent also reaches hops attempted later, not only tokens that existed.
    let srv = Server::start().await;
    let support = srv.agent("support-v2");
    let analytics = srv.agent("analytics-v1");
    let t1 = srv
        .exchange(&support, &srv.alice(), "crm.customers:read")
        .await
        .access_token();
    srv.revoke("token", &jti(&t1)).await.expect(201);
    let r = srv.hop(&analytics, &t1, "crm.customers:read").await;
    r.expect_oauth_error(400, "invalid_grant");
    assert!(r.description().contains("revoked"), "{}", r.body);
    srv.shutdown().await;
}

#[tokio::test]
async fn revoking_a_task_ends_its_tokens_only() {
    let srv = Server::start().await;
    let (t1, t2) = chain_for(&srv, &srv.alice()).await;
    let (u1, u2) = chain_for(&srv, &srv.alice()).await;
    assert_ne!(task(&t1), task(&u1));
    let r = srv.revoke("task", &task(&t1)).await;
    r.expect(201);
    assert!(!srv.active(&t1).await);
    assert!(!srv.active(&t2).await);
    assert!(srv.active(&u1).await);
    assert!(srv.active(&u2).await);
    // The task cannot be used for new tokens either.
    let support = srv.agent("support-v2");
    let form = exchange_form(
        &srv.alice(),
        TYPE_JWT,
        "crm.customers:read",
        &[("task", &task(&t1))],
    );
    srv.token_as(&support, form)
        .await
        .expect_oauth_error(400, "invalid_grant");
    srv.shutdown().await;
}

#[tokio::test]
async fn revoking_a_user_ends_every_delegation_of_that_user() {
    let srv = Server::start().await;
    let alice = srv.alice();
    let (a1, a2) = chain_for(&srv, &alice).await;
    let (b1, b2) = chain_for(&srv, &alice).await;
    let carol = srv.user_token(CAROL, &["support"], 3600);
    let (c1, c2) = chain_for(&srv, &carol).await;
    srv.revoke("user", ALICE).await.expect(201);
    for t in [&a1, &a2, &b1, &b2] {
        assert!(!srv.active(t).await);
    }
    assert!(srv.active(&c1).await);
    assert!(srv.active(&c2).await);
    // Alice's IdP token, issued before the revocation, cannot start a new delegation.
    let support = srv.agent("support-v2");
    let r = srv.exchange(&support, &alice, "crm.customers:read").await;
    r.expect_oauth_error(400, "invalid_grant");
    srv.deny_event(&r).await;
    srv.shutdown().await;
}

#[tokio::test]
async fn revoking_an_agent_ends_every_token_it_appears_in() {
    let srv = Server::start().await;
    let (t1, t2) = chain_for(&srv, &srv.alice()).await;
    // A token analytics-v1 holds directly for bob, and one support-v2 holds without analytics.
    let analytics = srv.agent("analytics-v1");
    let bob = srv.user_token(BOB, &["finance"], 3600);
    let b1 = srv
        .exchange(&analytics, &bob, "billing.invoices:read")
        .await
        .access_token();
    let support = srv.agent("support-v2");
    let s1 = srv
        .exchange(&support, &srv.alice(), "tickets:read")
        .await
        .access_token();

    srv.revoke("agent", "analytics-v1").await.expect(201);
    assert!(!srv.active(&t2).await, "a hop through analytics-v1");
    assert!(!srv.active(&b1).await, "held by analytics-v1");
    assert!(srv.active(&t1).await, "support-v2's own hop is untouched");
    assert!(srv.active(&s1).await);
    // The agent is suspended: it cannot authenticate.
    let show = srv.admin_get("/v1/agents/analytics-v1").await;
    assert_eq!(show.body["status"], "suspended", "{}", show.body);
    srv.exchange(&analytics, &bob, "billing.invoices:read")
        .await
        .expect_oauth_error(401, "invalid_client");
    srv.shutdown().await;
}

#[tokio::test]
async fn revoking_a_key_ends_the_tokens_it_proved_and_the_key_itself() {
    let srv = Server::start().await;
    let (t1, t2) = chain_for(&srv, &srv.alice()).await;
    let analytics = srv.agent("analytics-v1");
    let bob = srv.user_token(BOB, &["finance"], 3600);
    let b1 = srv
        .exchange(&analytics, &bob, "billing.invoices:read")
        .await
        .access_token();

    srv.revoke("key", "support-v2-k1").await.expect(201);
    assert!(!srv.active(&t1).await, "proved by the revoked key");
    assert!(!srv.active(&t2).await, "derived through the revoked key");
    assert!(srv.active(&b1).await, "no support-v2 key involved");
    // The key no longer authenticates support-v2.
    let support = srv.agent("support-v2");
    srv.exchange(&support, &srv.alice(), "crm.customers:read")
        .await
        .expect_oauth_error(401, "invalid_client");
    srv.shutdown().await;
}

#[tokio::test]
async fn revoking_an_unknown_id_is_404_and_changes_nothing() {
    let srv = Server::start().await;
    let (t1, t2) = chain_for(&srv, &srv.alice()).await;
    let before = srv.admin_get("/v1/revocations").await;
    before.expect(200);
    let audit_before = srv.audit("limit=10000").await.len();
    for (kind, id) in [
        ("token", "no-such-jti"),
        ("task", "no-such-task"),
        ("agent", "no-such-agent"),
        ("key", "no-such-kid"),
    ] {
        srv.revoke(kind, id).await.expect(404);
    }
    let r = srv.revoke("everything", "x").await;
    r.expect(400);
    srv.revoke("token", "").await.expect(400);
    let after = srv.admin_get("/v1/revocations").await;
    assert_eq!(before.body, after.body);
    assert_eq!(srv.audit("limit=10000").await.len(), audit_before);
    assert!(srv.active(&t1).await);
    assert!(srv.active(&t2).await);
    srv.shutdown().await;
}

/// An RFC 7009 revocation request by `agent`.
async fn rfc7009(srv: &Server, agent: &Agent, token: &str) -> Reply {
    let mut form = vec![
        ("token".to_owned(), token.to_owned()),
        ("token_type_hint".to_owned(), "access_token".to_owned()),
    ];
    form.extend(srv.client_auth(agent));
    srv.post_form("/oauth2/revoke", &form).await
}

#[tokio::test]
async fn rfc7009_revocation_by_a_holder_ends_the_token_and_refuses_outsiders() {
    let srv = Server::start().await;
    let support = srv.agent("support-v2");
    let analytics = srv.agent("analytics-v1");
    let (t1, t2) = chain_for(&srv, &srv.alice()).await;

    // analytics-v1 is not in t1's chain: refused, t1 untouched.
    let r = rfc7009(&srv, &analytics, &t1).await;
    r.expect_oauth_error(400, "unauthorized_client");
    assert!(srv.active(&t1).await);

    // analytics-v1 holds t2: it ends t2 and only t2.
    rfc7009(&srv, &analytics, &t2).await.expect(200);
    assert!(!srv.active(&t2).await);
    assert!(srv.active(&t1).await);

    // support-v2 ends t1, and with it a hop made from t1 meanwhile.
    let t3 = srv
        .hop(&analytics, &t1, "crm.customers:read")
        .await
        .access_token();
    rfc7009(&srv, &support, &t1).await.expect(200);
    assert!(!srv.active(&t1).await);
    assert!(!srv.active(&t3).await);

    // Unknown or already-revoked tokens are answered 200 (RFC 7009 §2.2).
    rfc7009(&srv, &support, &t1).await.expect(200);
    rfc7009(&srv, &support, "garbage").await.expect(200);
    // Without client authentication: invalid_client.
    let r = srv
        .post_form("/oauth2/revoke", &[("token".into(), t1.clone())])
        .await;
    r.expect_oauth_error(401, "invalid_client");
    srv.shutdown().await;
}

#[tokio::test]
async fn introspection_accepts_agent_authentication_and_refuses_anonymous_callers() {
    let srv = Server::start().await;
    let support = srv.agent("support-v2");
    let t1 = srv
        .exchange(&support, &srv.alice(), "crm.customers:read")
        .await
        .access_token();
    let mut form = vec![("token".to_owned(), t1.clone())];
    form.extend(srv.client_auth(&support));
    let r = srv.post_form("/oauth2/introspect", &form).await;
    r.expect(200);
    assert_eq!(r.body["active"], true);
    assert_eq!(r.body["act"]["sub"], "agent:support-v2");
    // The same assertion twice: replay refused.
    let r = srv.post_form("/oauth2/introspect", &form).await;
    r.expect_oauth_error(401, "invalid_client");
    // No credential at all.
    let r = srv
        .post_form("/oauth2/introspect", &[("token".into(), t1.clone())])
        .await;
    r.expect_oauth_error(401, "invalid_client");
    // A wrong admin credential is no credential.
    let r = srv
        .send(
            srv.http
                .post(srv.at("/oauth2/introspect"))
                .bearer_auth("mnd_admin_not-a-real-one")
                .form(&[("token", t1.as_str())]),
        )
        .await;
    assert_eq!(r.status, 401, "{}", r.body);
    // Garbage is simply inactive.
    assert_eq!(srv.introspect("garbage").await, json!({"active": false}));
    srv.shutdown().await;
}

#[tokio::test]
async fn an_expired_token_is_inactive_and_cannot_be_exchanged() {
    let srv = Server::start().await;
    let support = srv.agent("support-v2");
    let analytics = srv.agent("analytics-v1");
    let t1 = srv
        .exchange(&support, &srv.alice(), "crm.customers:read")
        .await
        .access_token();
    assert!(srv.active(&t1).await);
    srv.clock.advance(301);
    assert_eq!(srv.introspect(&t1).await, json!({"active": false}));
    let r = srv.hop(&analytics, &t1, "crm.customers:read").await;
    r.expect_oauth_error(400, "invalid_grant");
    srv.deny_event(&r).await;
    srv.shutdown().await;
}

#[tokio::test]
async fn suspension_ends_tokens_for_good_and_resume_only_allows_new_ones() {
    let srv = Server::start().await;
    let (t1, t2) = chain_for(&srv, &srv.alice()).await;

    // Suspending analytics-v1 ends every token it is in, and resuming it does not bring them
    // back: suspension is a revocation of the agent.
    srv.admin_post("/v1/agents/analytics-v1/suspend", &json!({}))
        .await
        .expect(200);
    assert!(!srv.active(&t2).await);
    assert!(srv.active(&t1).await);
    srv.clock.advance(2);
    srv.admin_post("/v1/agents/analytics-v1/resume", &json!({}))
        .await
        .expect(200);
    assert!(!srv.active(&t2).await);
    let (_, fresh) = chain_for(&srv, &srv.alice()).await;
    assert!(
        srv.active(&fresh).await,
        "tokens issued after resuming work"
    );

    // POST /v1/revocations kind=agent does the same.
    srv.revoke("agent", "analytics-v1").await.expect(201);
    assert!(!srv.active(&fresh).await);
    assert!(!srv.active(&t2).await);
    srv.clock.advance(2);
    srv.admin_post("/v1/agents/analytics-v1/resume", &json!({}))
        .await
        .expect(200);
    assert!(!srv.active(&t2).await);
    // New tokens after the resume work.
    let analytics = srv.agent("analytics-v1");
    let t3 = srv
        .hop(&analytics, &t1, "crm.customers:read")
        .await
        .access_token();
    assert!(srv.active(&t3).await);
    srv.shutdown().await;
}

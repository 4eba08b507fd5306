//! Escalation before issuance in OpenID CIBA poll mode (SPEC §6, issue 6): a token request above
//! the agent's `max_stage`, or for a scope in `approvals.scopes`, gets an `auth_req_id`; the agent
//! polls with `grant_type=urn:openid:params:grant-type:ciba` and hears `authorization_pending`,
//! `slow_down`, `expired_token` or `access_denied` until a human decides, then gets its token.

use serde_json::{Value, json};

use super::harness::*;

const CIBA: &str = "urn:openid:params:grant-type:ciba";

fn ciba_form(id: &str) -> Vec<(String, String)> {
    vec![
        ("grant_type".into(), CIBA.into()),
        ("auth_req_id".into(), id.into()),
    ]
}

/// Polls for `id` as `agent`.
async fn poll(srv: &Server, agent: &Agent, id: &str) -> Reply {
    srv.token_as(agent, ciba_form(id)).await
}

/// Carol's token: support and approver, owner of support-v2.
fn carol(srv: &Server) -> String {
    srv.user_token(CAROL, &["support", "approver"], 300)
}

/// `POST /v1/approvals/{id}/approve|deny` as `user_token`.
async fn decide(srv: &Server, id: &str, verb: &str, user_token: &str, reason: &str) -> Reply {
    srv.send(
        srv.http
            .post(srv.at(&format!("/v1/approvals/{id}/{verb}")))
            .bearer_auth(user_token)
            .json(&json!({"reason": reason})),
    )
    .await
}

/// Asks support-v2 for `tickets:create` at stage `execute` (above its max stage `draft`) for
/// Alice, in task `task`; asserts the answer is a CIBA `auth_req_id` and returns the reply.
async fn escalate(srv: &Server, support: &Agent, alice: &str, task: &str) -> Reply {
    let form = exchange_form(
        alice,
        TYPE_JWT,
        "tickets:create",
        &[
            ("stage", "execute"),
            ("task", task),
            ("justification", "the customer asked for a ticket"),
        ],
    );
    let r = srv.token_as(support, form).await;
    r.expect_oauth_error(400, "authorization_pending");
    assert!(
        r.body["auth_req_id"]
            .as_str()
            .is_some_and(|i| !i.is_empty()),
        "{}",
        r.body
    );
    r
}

fn id_of(r: &Reply) -> String {
    r.body["auth_req_id"].as_str().unwrap().to_owned()
}

/// The events of `kind` for request `reply`.
async fn events_of(srv: &Server, reply: &Reply, kind: &str) -> Vec<Value> {
    srv.audit(&format!("kind={kind}&limit=10000"))
        .await
        .into_iter()
        .filter(|e| e["request_id"] == reply.request_id.as_str())
        .collect()
}

#[tokio::test]
async fn ciba_poll_sequence_pending_slow_down_approve_token_then_used() {
    let srv = Server::start().await;
    let support = srv.agent("support-v2");
    let alice = srv.alice();
    let task = unique("ticket");

    // The metadata says so.
    let m = srv
        .send(
            srv.http
                .get(srv.at("/.well-known/oauth-authorization-server")),
        )
        .await;
    m.expect(200);
    assert!(
        m.body["grant_types_supported"]
            .as_array()
            .unwrap()
            .contains(&json!(CIBA)),
        "{}",
        m.body
    );
    assert_eq!(
        m.body["backchannel_token_delivery_modes_supported"],
        json!(["poll"])
    );

    // Stage `execute` is above support-v2's max stage `draft`: no token, no refusal, an
    // `auth_req_id`.
    let r = escalate(&srv, &support, &alice, &task).await;
    let id = id_of(&r);
    assert_eq!(r.header("cache-control"), "no-store");
    assert_eq!(r.body["expires_in"], 900);
    assert_eq!(r.body["interval"], 5);
    assert!(r.body.get("access_token").is_none());
    assert!(
        r.description().contains("needs a human's approval"),
        "{}",
        r.body
    );
    assert!(r.description().contains("max stage `draft`"), "{}", r.body);

    // The request is audited, naming the approval; the approver sees exactly what will happen.
    let ev = events_of(&srv, &r, "token.exchange").await;
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0]["decision"], "info");
    assert!(ev[0]["reason"].as_str().unwrap().contains(&id), "{}", ev[0]);
    assert_eq!(ev[0]["user"], ALICE);
    let shown = srv.admin_get(&format!("/v1/approvals/{id}")).await;
    shown.expect(200);
    assert_eq!(shown.body["kind"], "escalation");
    assert_eq!(shown.body["status"], "pending");
    assert_eq!(
        shown.body["justification"],
        "the customer asked for a ticket"
    );
    assert_eq!(
        shown.body["binding_message"],
        format!(
            "agent `support-v2` acting for {ALICE} gets `tickets:create` at stage `execute` \
             for {CRM} for 60 s (task `{task}`)"
        )
    );
    // What is kept to mint the token later holds neither the user's token nor the assertion.
    let stored = srv
        .running()
        .state
        .store
        .approval(&id)
        .await
        .unwrap()
        .unwrap();
    assert!(
        !stored.payload.contains(&alice),
        "the user token is not stored"
    );
    assert!(!stored.payload.contains("assertion"), "{}", stored.payload);

    // First poll: pending. Polling again at once: slow_down, and the interval grows by 5 s.
    let p = poll(&srv, &support, &id).await;
    p.expect_oauth_error(400, "authorization_pending");
    assert_eq!(p.body["interval"], 5);
    let p = poll(&srv, &support, &id).await;
    p.expect_oauth_error(400, "slow_down");
    assert_eq!(p.body["interval"], 10);
    assert_eq!(p.header("cache-control"), "no-store");
    let ev = events_of(&srv, &p, "token.ciba").await;
    assert_eq!(ev.len(), 1, "every poll is audited: {ev:?}");

    // Carol (owner of support-v2, approver) approves with her own IdP token.
    decide(&srv, &id, "approve", &carol(&srv), "ok for this ticket")
        .await
        .expect(200);

    // The next poll — even a fast one — gets the token, at the escalated stage.
    let r = poll(&srv, &support, &id).await;
    let token = r.access_token();
    assert_eq!(r.header("cache-control"), "no-store");
    assert_eq!(r.body["stage"], "execute");
    assert_eq!(r.body["scope"], "tickets:create");
    assert_eq!(r.body["token_type"], "Bearer");
    let v = srv
        .verify(&token, CRM)
        .await
        .expect("verifies via the JWKS");
    let c = &v.claims;
    assert_eq!(v.header.typ.as_deref(), Some("at+jwt"));
    assert_eq!(c["sub"], ALICE);
    assert_eq!(c["stage"], "execute");
    assert_eq!(c["scope"], "tickets:create");
    assert_eq!(c["task"], task.as_str());
    assert_eq!(c["client_id"], "support-v2");
    assert_eq!(c["act"]["sub"], "agent:support-v2");
    assert_eq!(
        c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(),
        60,
        "an execute-stage write token lives 60 s, counted from issuance"
    );
    assert!(srv.active(&token).await);

    // Audited as `token.ciba`, naming the approver.
    let ev = srv.allow_event(&r).await;
    assert_eq!(ev["kind"], "token.ciba");
    assert_eq!(ev["jti"], c["jti"]);
    assert!(ev["reason"].as_str().unwrap().contains(CAROL), "{ev}");
    let detail: Value = match &ev["detail"] {
        Value::String(s) => serde_json::from_str(s).unwrap(),
        other => other.clone(),
    };
    assert_eq!(detail["approver"], CAROL, "{ev}");
    assert_eq!(detail["approval"], id.as_str());

    // Issued once: a second poll is refused.
    let again = poll(&srv, &support, &id).await;
    again.expect_oauth_error(400, "invalid_grant");
    assert!(
        again.description().contains("already used"),
        "{}",
        again.body
    );
    let shown = srv.admin_get(&format!("/v1/approvals/{id}")).await;
    assert_eq!(shown.body["status"], "approved");
    assert_eq!(shown.body["dispatch"], "sent");
    srv.shutdown().await;
}

#[tokio::test]
async fn slow_down_grows_the_interval_by_five_seconds_each_time() {
    let srv = Server::start().await;
    let support = srv.agent("support-v2");
    let r = escalate(&srv, &support, &srv.alice(), &unique("ticket")).await;
    let id = id_of(&r);
    poll(&srv, &support, &id)
        .await
        .expect_oauth_error(400, "authorization_pending");
    let p = poll(&srv, &support, &id).await;
    p.expect_oauth_error(400, "slow_down");
    assert_eq!(p.body["interval"], 10);
    // Waiting the old interval is still too fast: slow down more.
    srv.clock.advance(6);
    let p = poll(&srv, &support, &id).await;
    p.expect_oauth_error(400, "slow_down");
    assert_eq!(p.body["interval"], 15);
    // Waiting the new one is fine, and the interval stays.
    srv.clock.advance(15);
    let p = poll(&srv, &support, &id).await;
    p.expect_oauth_error(400, "authorization_pending");
    assert_eq!(p.body["interval"], 15);
    assert!(p.body["expires_in"].as_i64().unwrap() <= 900 - 21);
    srv.shutdown().await;
}

#[tokio::test]
async fn a_denied_request_is_access_denied() {
    let srv = Server::start().await;
    let support = srv.agent("support-v2");
    let r = escalate(&srv, &support, &srv.alice(), &unique("ticket")).await;
    let id = id_of(&r);
    decide(&srv, &id, "deny", &carol(&srv), "not for this ticket")
        .await
        .expect(200);
    let p = poll(&srv, &support, &id).await;
    p.expect_oauth_error(400, "access_denied");
    assert!(p.description().contains(CAROL), "{}", p.body);
    assert!(
        p.description().contains("not for this ticket"),
        "{}",
        p.body
    );
    let ev = srv.deny_event(&p).await;
    assert_eq!(ev["kind"], "token.ciba");
    // It stays denied.
    srv.clock.advance(10);
    poll(&srv, &support, &id)
        .await
        .expect_oauth_error(400, "access_denied");
    srv.shutdown().await;
}

#[tokio::test]
async fn an_undecided_request_expires() {
    let srv = Server::start().await;
    let support = srv.agent("support-v2");
    let r = escalate(&srv, &support, &srv.alice(), &unique("ticket")).await;
    let id = id_of(&r);
    poll(&srv, &support, &id)
        .await
        .expect_oauth_error(400, "authorization_pending");
    srv.clock.advance(901);
    poll(&srv, &support, &id)
        .await
        .expect_oauth_error(400, "expired_token");
    // Too late to approve, too.
    let late = decide(&srv, &id, "approve", &carol(&srv), "").await;
    assert_eq!(late.status, 409, "{}", late.body);
    poll(&srv, &support, &id)
        .await
        .expect_oauth_error(400, "expired_token");
    srv.shutdown().await;
}

#[tokio::test]
async fn a_user_revoked_between_approval_and_poll_gets_nothing() {
    let srv = Server::start().await;
    let support = srv.agent("support-v2");
    let r = escalate(&srv, &support, &srv.alice(), &unique("ticket")).await;
    let id = id_of(&r);
    decide(&srv, &id, "approve", &carol(&srv), "")
        .await
        .expect(200);
    srv.revoke("user", ALICE).await.expect(201);
    let p = poll(&srv, &support, &id).await;
    p.expect_oauth_error(400, "invalid_grant");
    assert!(
        p.description()
            .contains(&format!("user `{ALICE}` has been revoked")),
        "{}",
        p.body
    );
    // Final: the approval was used up by that refusal.
    let again = poll(&srv, &support, &id).await;
    again.expect_oauth_error(400, "invalid_grant");
    assert!(
        again.description().contains("already used"),
        "{}",
        again.body
    );
    assert!(again.description().contains("revoked"), "{}", again.body);
    srv.shutdown().await;
}

#[tokio::test]
async fn only_the_agent_that_asked_may_poll() {
    let srv = Server::start().await;
    let support = srv.agent("support-v2");
    let analytics = srv.agent("analytics-v1");
    let r = escalate(&srv, &support, &srv.alice(), &unique("ticket")).await;
    let id = id_of(&r);
    decide(&srv, &id, "approve", &carol(&srv), "")
        .await
        .expect(200);
    let p = poll(&srv, &analytics, &id).await;
    p.expect_oauth_error(400, "invalid_grant");
    assert!(p.description().contains("analytics-v1"), "{}", p.body);
    let ev = srv.deny_event(&p).await;
    assert_eq!(ev["chain"], json!(["analytics-v1"]));
    assert!(
        ev["user"].is_null(),
        "another agent's poll learns nothing: {ev}"
    );
    // The right agent still gets its token.
    let t = poll(&srv, &support, &id).await.access_token();
    let c = srv.verify(&t, CRM).await.unwrap().claims;
    assert_eq!(c["stage"], "execute");
    // Without client authentication, nothing at all.
    let anon = srv.token(&ciba_form(&id)).await;
    anon.expect_oauth_error(401, "invalid_client");
    srv.shutdown().await;
}

#[tokio::test]
async fn an_approval_only_scope_needs_a_human_even_within_max_stage() {
    let srv = Server::start_configured(|c| {
        c.approvals.scopes = vec!["email:send".into()];
    })
    .await;
    let support = srv.agent("support-v2");
    let alice = srv.alice();
    // Within the ceiling, Alice's rights and support-v2's max stage: still a human's call.
    let r = srv.exchange(&support, &alice, "email:send").await;
    r.expect_oauth_error(400, "authorization_pending");
    assert!(
        r.description()
            .contains("`email:send` needs a human's approval"),
        "{}",
        r.body
    );
    let id = id_of(&r);
    let shown = srv.admin_get(&format!("/v1/approvals/{id}")).await;
    let msg = shown.body["binding_message"].as_str().unwrap().to_owned();
    assert!(
        msg.starts_with(&format!(
            "agent `support-v2` acting for {ALICE} gets `email:send` at stage `draft` for {CRM} for 300 s"
        )),
        "{msg}"
    );
    // Other scopes are issued as before.
    srv.exchange(&support, &alice, "crm.customers:read")
        .await
        .access_token();
    decide(&srv, &id, "approve", &carol(&srv), "")
        .await
        .expect(200);
    let r = poll(&srv, &support, &id).await;
    let c = srv.verify(&r.access_token(), CRM).await.unwrap().claims;
    assert_eq!(c["scope"], "email:send");
    assert_eq!(c["stage"], "draft");
    srv.shutdown().await;
}

#[tokio::test]
async fn with_escalation_off_a_stage_above_max_is_refused_as_before() {
    let srv = Server::start_configured(|c| c.approvals.escalation = false).await;
    let support = srv.agent("support-v2");
    let form = exchange_form(
        &srv.alice(),
        TYPE_JWT,
        "tickets:create",
        &[("stage", "execute")],
    );
    let r = srv.token_as(&support, form).await;
    r.expect_oauth_error(400, "invalid_scope");
    assert!(
        r.description()
            .contains("stage `execute` exceeds the agent's max stage `draft`"),
        "{}",
        r.body
    );
    assert!(r.body.get("auth_req_id").is_none());
    srv.shutdown().await;
}

#[tokio::test]
async fn an_escalation_never_lifts_the_other_limits() {
    let srv = Server::start().await;
    let support = srv.agent("support-v2");
    // Outside the ceiling: refused outright, nothing for a human to approve.
    let form = exchange_form(
        &srv.alice(),
        TYPE_JWT,
        "billing.invoices:read",
        &[("stage", "execute")],
    );
    let r = srv.token_as(&support, form).await;
    r.expect_oauth_error(400, "invalid_scope");
    assert!(r.body.get("auth_req_id").is_none());
    // Not among Bob's rights (finance may not create tickets): refused too.
    let bob = srv.user_token(BOB, &["finance"], 3600);
    let form = exchange_form(&bob, TYPE_JWT, "tickets:create", &[("stage", "execute")]);
    srv.token_as(&support, form)
        .await
        .expect_oauth_error(400, "invalid_scope");
    // A justification longer than 1000 bytes is refused.
    let long = "x".repeat(1001);
    let form = exchange_form(
        &srv.alice(),
        TYPE_JWT,
        "tickets:create",
        &[("stage", "execute"), ("justification", &long)],
    );
    srv.token_as(&support, form)
        .await
        .expect_oauth_error(400, "invalid_request");
    let pending = srv.admin_get("/v1/approvals?status=pending").await;
    assert_eq!(pending.body["approvals"], json!([]), "{}", pending.body);
    srv.shutdown().await;
}

#[tokio::test]
async fn the_token_never_outlives_the_subject_token() {
    let srv = Server::start().await;
    let support = srv.agent("support-v2");
    // Alice's token has 100 s left; the request waits 70 of them.
    let alice = srv.user_token(ALICE, &["support"], 100);
    let r = escalate(&srv, &support, &alice, &unique("ticket")).await;
    let id = id_of(&r);
    srv.clock.advance(70);
    decide(&srv, &id, "approve", &carol(&srv), "")
        .await
        .expect(200);
    let r = poll(&srv, &support, &id).await;
    // (The test clock runs ahead of the wall clock here: read the claims, ask the server.)
    let token = r.access_token();
    let c = peek(&token);
    let user_exp = peek(&alice)["exp"].as_i64().unwrap();
    assert_eq!(
        c["exp"].as_i64().unwrap(),
        user_exp,
        "capped at the user token's expiry"
    );
    // 30 s left at issuance, give or take the clock second that may tick during the test.
    assert_eq!(
        r.body["expires_in"].as_i64().unwrap(),
        c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(),
    );
    let left = r.body["expires_in"].as_i64().unwrap();
    assert!((29..=30).contains(&left), "{left}");
    assert!(c["iat"].as_i64().unwrap() >= peek(&alice)["iat"].as_i64().unwrap() + 70);
    assert!(srv.active(&token).await);

    // A user token that expires while the request waits: nothing is issued.
    let short = srv.user_token(ALICE, &["support"], 30);
    let r = escalate(&srv, &support, &short, &unique("ticket")).await;
    let id = id_of(&r);
    srv.clock.advance(40);
    decide(&srv, &id, "approve", &carol(&srv), "")
        .await
        .expect(200);
    let p = poll(&srv, &support, &id).await;
    p.expect_oauth_error(400, "invalid_grant");
    assert!(p.description().contains("expired"), "{}", p.body);
    srv.shutdown().await;
}

#[tokio::test]
async fn an_agents_own_request_escalates_too() {
    let srv = Server::start().await;
    let support = srv.agent("support-v2");
    let form = vec![
        ("grant_type".to_owned(), "client_credentials".to_owned()),
        ("scope".to_owned(), "tickets:read".to_owned()),
        ("resource".to_owned(), CRM.to_owned()),
        ("stage".to_owned(), "execute".to_owned()),
    ];
    let r = srv.token_as(&support, form).await;
    r.expect_oauth_error(400, "authorization_pending");
    let id = id_of(&r);
    let ev = events_of(&srv, &r, "token.client_credentials").await;
    assert_eq!(ev.len(), 1, "{ev:?}");
    let shown = srv.admin_get(&format!("/v1/approvals/{id}")).await;
    let msg = shown.body["binding_message"].as_str().unwrap();
    assert!(
        msg.starts_with(
            "agent `support-v2` acting on its own gets `tickets:read` at stage `execute`"
        ),
        "{msg}"
    );
    decide(&srv, &id, "approve", &carol(&srv), "")
        .await
        .expect(200);
    let t = poll(&srv, &support, &id).await.access_token();
    let c = srv.verify(&t, CRM).await.unwrap().claims;
    assert_eq!(c["sub"], "agent:support-v2");
    assert_eq!(c["stage"], "execute");
    assert!(c.get("act").is_none());
    srv.shutdown().await;
}

#[tokio::test]
async fn a_replayed_assertion_neither_opens_nor_polls() {
    let srv = Server::start().await;
    let support = srv.agent("support-v2");
    let mut form = exchange_form(
        &srv.alice(),
        TYPE_JWT,
        "tickets:create",
        &[("stage", "execute")],
    );
    form.extend(srv.client_auth(&support));
    let r = srv.token(&form).await;
    r.expect_oauth_error(400, "authorization_pending");
    let id = id_of(&r);
    srv.token(&form)
        .await
        .expect_oauth_error(401, "invalid_client");
    let pending = srv.admin_get("/v1/approvals?status=pending").await;
    assert_eq!(
        pending.body["approvals"].as_array().unwrap().len(),
        1,
        "a replay opens no second approval"
    );
    let mut poll_form = ciba_form(&id);
    poll_form.extend(srv.client_auth(&support));
    srv.token(&poll_form)
        .await
        .expect_oauth_error(400, "authorization_pending");
    srv.token(&poll_form)
        .await
        .expect_oauth_error(401, "invalid_client");
    srv.shutdown().await;
}

#[tokio::test]
async fn garbage_auth_req_ids_are_refused_without_harm() {
    let srv = Server::start().await;
    let support = srv.agent("support-v2");
    // A held write's or an agent change's id is not an `auth_req_id` either; nor is anything
    // else.
    let garbage = [
        "ap-doesnotexist".to_owned(),
        "x".repeat(10_000),
        "' OR 1=1 --".to_owned(),
        "\u{0}\u{1}\u{7f}".to_owned(),
        "ap-\u{1F600}".to_owned(),
        "../../etc/passwd".to_owned(),
        "%00".to_owned(),
    ];
    for g in &garbage {
        let r = poll(&srv, &support, g).await;
        assert!(
            r.status == 400 && matches!(r.error(), "invalid_grant" | "invalid_request"),
            "{}: {} {}",
            g.chars().take(20).collect::<String>(),
            r.status,
            r.body
        );
        assert!(r.description().len() < 400, "{}", r.body);
    }
    // Missing or empty.
    let r = srv
        .token_as(&support, vec![("grant_type".into(), CIBA.into())])
        .await;
    r.expect_oauth_error(400, "invalid_request");
    let r = poll(&srv, &support, "").await;
    r.expect_oauth_error(400, "invalid_request");
    assert!(srv.healthy().await);
    srv.shutdown().await;
}

#[tokio::test]
async fn a_hop_escalates_within_its_parent_and_dies_with_it() {
    let srv = Server::start().await;
    let support = srv.agent("support-v2");
    let analytics = srv.agent("analytics-v1");
    // support-v2 holds a draft-stage token for Alice; analytics-v1 (max stage `observe`) asks
    // for `draft` on the next hop.
    let hop_form = |parent: &str| {
        exchange_form(
            parent,
            TYPE_ACCESS_TOKEN,
            "crm.customers:read",
            &[("stage", "draft")],
        )
    };
    let parent_form = exchange_form(
        &srv.alice(),
        TYPE_JWT,
        "crm.customers:read",
        &[("stage", "draft")],
    );
    let parent = srv.token_as(&support, parent_form).await.access_token();
    let r = srv.token_as(&analytics, hop_form(&parent)).await;
    r.expect_oauth_error(400, "authorization_pending");
    let id = id_of(&r);
    let shown = srv.admin_get(&format!("/v1/approvals/{id}")).await;
    let msg = shown.body["binding_message"].as_str().unwrap();
    assert!(
        msg.starts_with(&format!(
            "agent `analytics-v1` (delegated by `support-v2`) acting for {ALICE} gets \
             `crm.customers:read` at stage `draft` for {CRM} for "
        )),
        "{msg}"
    );
    assert_eq!(shown.body["chain"], json!(["support-v2", "analytics-v1"]));
    decide(&srv, &id, "approve", &carol(&srv), "")
        .await
        .expect(200);
    let t = poll(&srv, &analytics, &id).await.access_token();
    let c = srv.verify(&t, CRM).await.unwrap().claims;
    let p = peek(&parent);
    assert_eq!(c["stage"], "draft");
    assert_eq!(c["act"]["sub"], "agent:analytics-v1");
    assert_eq!(c["act"]["act"]["sub"], "agent:support-v2");
    assert_eq!(c["task"], p["task"]);
    assert!(c["exp"].as_i64().unwrap() <= p["exp"].as_i64().unwrap());
    // Revoking the parent ends the hop's token, as for any other hop.
    srv.revoke("token", p["jti"].as_str().unwrap())
        .await
        .expect(201);
    assert!(!srv.active(&t).await);

    // A parent revoked while the hop waits: nothing is issued.
    let parent = srv
        .token_as(
            &support,
            exchange_form(
                &srv.alice(),
                TYPE_JWT,
                "crm.customers:read",
                &[("stage", "draft")],
            ),
        )
        .await
        .access_token();
    let r = srv.token_as(&analytics, hop_form(&parent)).await;
    let id = id_of(&r);
    decide(&srv, &id, "approve", &carol(&srv), "")
        .await
        .expect(200);
    srv.revoke("token", peek(&parent)["jti"].as_str().unwrap())
        .await
        .expect(201);
    let p = poll(&srv, &analytics, &id).await;
    p.expect_oauth_error(400, "invalid_grant");
    assert!(p.description().contains("revoked"), "{}", p.body);

    // Above the parent's stage, no human can help: refused.
    let observe = srv
        .exchange(&support, &srv.alice(), "crm.customers:read")
        .await
        .access_token();
    let r = srv.token_as(&analytics, hop_form(&observe)).await;
    r.expect_oauth_error(400, "invalid_scope");
    assert!(
        r.description().contains("parent token's stage"),
        "{}",
        r.body
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn a_dpop_proof_that_fetched_an_approved_token_is_not_accepted_again() {
    use mandate_token::{Alg, SigningKey, dpop};
    let srv = Server::start().await;
    let support = srv.agent("support-v2");
    let alice = srv.alice();
    let key = SigningKey::generate(Alg::EdDSA).unwrap();
    let new_proof = || {
        dpop::prove(
            &key,
            "POST",
            &srv.at("/oauth2/token"),
            None,
            None,
            srv.now(),
        )
    };
    let proof = new_proof().unwrap();
    let poll_with = |id: String, proof: String| {
        let (srv, support) = (&srv, &support);
        async move {
            let mut form = ciba_form(&id);
            form.extend(srv.client_auth(support));
            srv.send(
                srv.http
                    .post(srv.at("/oauth2/token"))
                    .header("DPoP", proof)
                    .form(&form),
            )
            .await
        }
    };
    // Two escalations, both approved.
    let first = id_of(&escalate(&srv, &support, &alice, &unique("ticket")).await);
    let second = id_of(&escalate(&srv, &support, &alice, &unique("ticket")).await);
    for id in [&first, &second] {
        decide(&srv, id, "approve", &carol(&srv), "ok")
            .await
            .expect(200);
    }
    // The first poll with the proof gets a token bound to its key.
    let r = poll_with(first, proof.clone()).await;
    r.expect(200);
    assert_eq!(r.body["token_type"], "DPoP", "{}", r.body);
    assert_eq!(
        peek(&r.access_token())["cnf"]["jkt"],
        dpop::key_thumbprint(&key).unwrap()
    );
    // The same proof, replayed for the other approval, is refused and claims nothing…
    let replay = poll_with(second.clone(), proof).await;
    replay.expect_oauth_error(400, "invalid_dpop_proof");
    assert!(
        replay.description().contains("already used"),
        "{}",
        replay.body
    );
    // …so a fresh proof still gets that token.
    let fresh = new_proof().unwrap();
    poll_with(second, fresh).await.expect(200);
    srv.shutdown().await;
}

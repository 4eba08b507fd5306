//! Human approvals through the admin API (SPEC §1, §6; issue 6): agent changes that wait for a
//! decision, separation of duties on deciding, listing and showing, expiry, racing decisions,
//! the webhook, and the audit trail of it all.

use mandate_core::approval::Ask;
use mandate_core::stage::Stage;
use mandate_server::approvals::{self, Request};
use reqwest::Method;
use serde_json::{Value, json};

use super::harness::*;

/// A `--dev` server where agent changes need an approval, as they do outside `--dev`.
async fn governed() -> Server {
    Server::start_configured(|c| c.approvals.agent_changes = Some(true)).await
}

/// `method path` with `bearer` (a user token or a credential), optionally a JSON body.
async fn call(
    srv: &Server,
    method: Method,
    path: &str,
    bearer: Option<&str>,
    body: Option<&Value>,
) -> Reply {
    let mut req = srv.http.request(method, srv.at(path));
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    srv.send(req).await
}

/// `POST /v1/approvals/{id}/{verb}` as `bearer`.
async fn decide(srv: &Server, bearer: Option<&str>, id: &str, verb: &str) -> Reply {
    call(
        srv,
        Method::POST,
        &format!("/v1/approvals/{id}/{verb}"),
        bearer,
        Some(&json!({"reason": format!("{verb}: checked with the team")})),
    )
    .await
}

/// `GET /v1/approvals?<query>` as `bearer`; asserts 200 and returns the approvals.
async fn list_as(srv: &Server, bearer: &str, query: &str) -> Vec<Value> {
    let r = call(
        srv,
        Method::GET,
        &format!("/v1/approvals?{query}"),
        Some(bearer),
        None,
    )
    .await;
    r.expect(200);
    r.body["approvals"].as_array().unwrap().clone()
}

fn ids(approvals: &[Value]) -> Vec<String> {
    approvals
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_owned())
        .collect()
}

/// `GET /v1/approvals/{id}` as admin; asserts 200.
async fn show(srv: &Server, id: &str) -> Value {
    let r = srv.admin_get(&format!("/v1/approvals/{id}")).await;
    r.expect(200);
    r.body
}

/// The audit events of `kind` about approval `id`, each with its `detail` parsed.
async fn events(srv: &Server, kind: &str, id: &str) -> Vec<Value> {
    srv.audit(&format!("kind={kind}&limit=10000"))
        .await
        .into_iter()
        .filter_map(|mut e| {
            let detail: Value = serde_json::from_str(e["detail"].as_str()?).ok()?;
            (detail["approval"] == id).then(|| {
                e["detail"] = detail;
                e
            })
        })
        .collect()
}

/// Opens an escalation approval server-side (the way the token endpoint does): agent `agent`
/// asks for `scope` at `execute` on behalf of `user`.
async fn open_escalation(srv: &Server, user: &str, agent: &str, scope: &str) -> String {
    let req = Request {
        ask: Ask::Escalation {
            scope: scope.to_owned(),
            stage: Stage::Execute,
            audience: CRM.to_owned(),
        },
        user: Some(user.to_owned()),
        chain: vec![agent.to_owned()],
        agent: agent.to_owned(),
        task: None,
        justification: "the customer asked for it".to_owned(),
        binding_message: format!("agent `{agent}` will get `{scope}` at `execute` for {user}"),
        payload: json!({"scope": scope}),
        request_id: None,
        requested_by: format!("agent:{agent}"),
    };
    approvals::open(&srv.running().state, req)
        .await
        .unwrap()
        .approval
        .id
}

/// PATCHes `agent` as admin; asserts `202` and returns the approval.
async fn patch_waits(srv: &Server, agent: &str, change: &Value) -> (Reply, Value) {
    let r = srv
        .send(
            srv.admin_req(Method::PATCH, &format!("/v1/agents/{agent}"))
                .json(change),
        )
        .await;
    r.expect(202);
    let approval = r.body["approval"].clone();
    (r, approval)
}

async fn agent(srv: &Server, id: &str) -> Value {
    let r = srv.admin_get(&format!("/v1/agents/{id}")).await;
    r.expect(200);
    r.body
}

fn ceiling(agent: &Value) -> Vec<String> {
    let mut v: Vec<String> = agent["ceiling"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect();
    v.sort();
    v
}

// ---- Agent-change governance ----

#[tokio::test]
async fn widening_an_agent_waits_for_its_owner_and_applies_in_the_decision() {
    let srv = governed().await;
    let before = agent(&srv, "support-v2").await;
    let mut wider = ceiling(&before);
    wider.push("billing.invoices:read".into());
    let (r, approval) = patch_waits(
        &srv,
        "support-v2",
        &json!({"ceiling": wider, "justification": "support answers invoice questions"}),
    )
    .await;
    let id = approval["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("ap-"), "{approval}");
    assert_eq!(approval["status"], "pending");
    assert_eq!(approval["kind"], "agent_change");
    assert_eq!(approval["agent"], "support-v2");
    assert!(approval["user"].is_null());
    assert_eq!(
        approval["justification"],
        "support answers invoice questions"
    );
    assert_eq!(approval["ask"]["kind"], "agent_change");
    assert!(
        approval["ask"]["ceiling"]
            .as_array()
            .unwrap()
            .contains(&json!("billing.invoices:read"))
    );
    let message = approval["binding_message"].as_str().unwrap();
    assert!(
        message.contains("support-v2") && message.contains("billing.invoices:read"),
        "{message}"
    );
    assert!(approval["expires_at"].as_i64().unwrap() > approval["created_at"].as_i64().unwrap());
    // Nothing changed yet: the answer and the agent both show the old ceiling.
    assert_eq!(ceiling(&r.body["agent"]), ceiling(&before));
    assert_eq!(ceiling(&agent(&srv, "support-v2").await), ceiling(&before));
    assert!(
        srv.audit("kind=agent.update&agent=support-v2")
            .await
            .is_empty()
    );
    let requested = events(&srv, "approval.requested", &id).await;
    assert_eq!(requested.len(), 1);
    assert_eq!(requested[0]["request_id"], r.request_id.as_str());
    assert_eq!(requested[0]["detail"]["kind"], "agent_change");
    assert_eq!(requested[0]["detail"]["requested_by"], "admin:bootstrap");
    assert_eq!(requested[0]["action"], "agent.update");
    assert_eq!(requested[0]["resource"], "agent:support-v2");
    assert_eq!(requested[0]["reason"], message);

    // Its owner approves, with her own identity provider token (she needs no approver group).
    let carol = srv.user_token(CAROL, &["support"], 600);
    let r = decide(&srv, Some(&carol), &id, "approve").await;
    r.expect(200);
    assert_eq!(r.body["status"], "approved");
    assert_eq!(r.body["decided"]["by"], CAROL);
    assert_eq!(r.body["decided"]["approved"], true);
    assert_eq!(
        r.body["decided"]["reason"],
        "approve: checked with the team"
    );
    assert_eq!(
        r.body["dispatch"], "sent",
        "applied in the decision's own commit"
    );
    assert!(r.body["outcome"].is_object(), "{}", r.body);
    let after = agent(&srv, "support-v2").await;
    assert!(ceiling(&after).contains(&"billing.invoices:read".to_owned()));
    assert_eq!(after["max_stage"], before["max_stage"]);

    // The change is audited as an `agent.update` naming the approval and its approver.
    let updates = srv.audit("kind=agent.update&agent=support-v2").await;
    assert_eq!(updates.len(), 1, "{updates:?}");
    let detail: Value = serde_json::from_str(updates[0]["detail"].as_str().unwrap()).unwrap();
    assert_eq!(detail["approval"], id.as_str());
    assert_eq!(detail["approver"], CAROL);
    assert!(
        updates[0]["reason"].as_str().unwrap().contains(CAROL),
        "{}",
        updates[0]
    );
    let approved = events(&srv, "approval.approved", &id).await;
    assert_eq!(approved.len(), 1);
    assert_eq!(approved[0]["detail"]["approver"], CAROL);
    assert_eq!(approved[0]["decision"], "allow");
    assert_eq!(approved[0]["request_id"], r.request_id.as_str());
    assert!(approved[0]["reason"].as_str().unwrap().contains(CAROL));
    assert_eq!(show(&srv, &id).await["status"], "approved");

    // Deciding again changes nothing.
    let r = decide(&srv, Some(&carol), &id, "deny").await;
    r.expect(409);
    assert!(r.description().contains("already approved"), "{}", r.body);
    assert_eq!(show(&srv, &id).await["status"], "approved");
    assert_eq!(
        srv.audit("kind=agent.update&agent=support-v2").await.len(),
        1
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn raising_the_max_stage_waits_and_a_denial_changes_nothing() {
    let srv = governed().await;
    let (_, approval) = patch_waits(
        &srv,
        "analytics-v1",
        &json!({"max_stage": "execute", "description": "now writes reports"}),
    )
    .await;
    let id = approval["id"].as_str().unwrap().to_owned();
    let message = approval["binding_message"].as_str().unwrap();
    assert!(
        message.contains("max stage `observe` → `execute`"),
        "{message}"
    );
    assert!(message.contains("description"), "{message}");
    assert_eq!(approval["ask"]["max_stage"], "execute");
    assert!(approval["ask"].get("ceiling").is_none(), "{approval}");
    assert_eq!(agent(&srv, "analytics-v1").await["max_stage"], "observe");

    // A member of an approver group (carol, not its owner) denies it.
    let carol = srv.user_token(CAROL, &["support", "approver"], 600);
    let r = call(
        &srv,
        Method::POST,
        &format!("/v1/approvals/{id}/deny"),
        Some(&carol),
        Some(&json!({"reason": "no writes for analytics"})),
    )
    .await;
    r.expect(200);
    assert_eq!(r.body["status"], "denied");
    assert_eq!(r.body["decided"]["by"], CAROL);
    assert_eq!(r.body["dispatch"], "not_sent");
    let after = agent(&srv, "analytics-v1").await;
    assert_eq!(after["max_stage"], "observe");
    assert_ne!(after["description"], "now writes reports");
    assert!(
        srv.audit("kind=agent.update&agent=analytics-v1")
            .await
            .is_empty()
    );
    let denied = events(&srv, "approval.denied", &id).await;
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0]["detail"]["approver"], CAROL);
    assert_eq!(denied[0]["decision"], "deny");
    assert!(
        denied[0]["reason"]
            .as_str()
            .unwrap()
            .contains("no writes for analytics"),
        "{}",
        denied[0]
    );
    // And a denied approval cannot be approved after all.
    let bob = srv.user_token(BOB, &["finance"], 600);
    let r = decide(&srv, Some(&bob), &id, "approve").await;
    r.expect(409);
    assert!(r.description().contains("already denied"), "{}", r.body);
    assert_eq!(agent(&srv, "analytics-v1").await["max_stage"], "observe");
    srv.shutdown().await;
}

#[tokio::test]
async fn a_change_that_waits_shows_the_approver_all_of_it() {
    let srv = governed().await;
    let (_, approval) = patch_waits(
        &srv,
        "support-v2",
        &json!({"max_stage": "execute", "owner": "mallory@example.com", "name": "Support"}),
    )
    .await;
    let message = approval["binding_message"].as_str().unwrap();
    assert!(
        message.contains("max stage `draft` → `execute`"),
        "{message}"
    );
    assert!(
        message.contains("owner `carol@example.com` → `mallory@example.com`"),
        "{message}"
    );
    assert!(message.contains("name"), "{message}");
    // An owner or tags change alone waits too: the owner approves for the agent, and policies
    // may grant by tag.
    let (_, alone) = patch_waits(
        &srv,
        "analytics-v1",
        &json!({"owner": "mallory@example.com"}),
    )
    .await;
    assert_eq!(alone["status"], "pending");
    let (_, tagged) = patch_waits(&srv, "analytics-v1", &json!({"tags": ["pii"]})).await;
    assert_eq!(tagged["status"], "pending");
    let still = agent(&srv, "analytics-v1").await;
    assert_eq!(still["owner"], BOB);
    assert_eq!(still["tags"], json!([]));
    // The owner now, not the owner asked for, decides.
    let id = approval["id"].as_str().unwrap();
    let mallory = srv.user_token("mallory@example.com", &[], 600);
    decide(&srv, Some(&mallory), id, "approve")
        .await
        .expect(403);
    let carol = srv.user_token(CAROL, &[], 600);
    decide(&srv, Some(&carol), id, "approve").await.expect(200);
    let after = agent(&srv, "support-v2").await;
    assert_eq!(after["owner"], "mallory@example.com");
    assert_eq!(after["max_stage"], "execute");
    assert_eq!(after["name"], "Support");
    srv.shutdown().await;
}

#[tokio::test]
async fn narrowing_applies_at_once_and_without_governance_everything_does() {
    let srv = governed().await;
    let r = srv
        .admin_patch(
            "/v1/agents/support-v2",
            &json!({"ceiling": ["crm.customers:read", "tickets:read"], "max_stage": "observe",
                    "description": "narrower"}),
        )
        .await;
    assert_eq!(
        ceiling(&r.body),
        vec!["crm.customers:read".to_owned(), "tickets:read".to_owned()]
    );
    assert_eq!(r.body["max_stage"], "observe");
    // A pattern within an old one is no widening either.
    srv.admin_patch(
        "/v1/agents/analytics-v1",
        &json!({"ceiling": ["crm.customers:read", "billing.invoices:read"]}),
    )
    .await;
    assert!(list_as(&srv, &srv.admin, "").await.is_empty());
    assert_eq!(srv.audit("kind=agent.update").await.len(), 2);
    assert!(srv.audit("kind=approval.requested").await.is_empty());
    srv.shutdown().await;

    // In --dev, agent changes need no approval unless configured.
    let srv = Server::start().await;
    let r = srv
        .admin_patch(
            "/v1/agents/analytics-v1",
            &json!({"ceiling": ["crm.*:read", "billing.*:read"], "max_stage": "execute"}),
        )
        .await;
    assert_eq!(r.body["max_stage"], "execute");
    assert!(ceiling(&r.body).contains(&"billing.*:read".to_owned()));
    assert!(list_as(&srv, &srv.admin, "").await.is_empty());
    srv.shutdown().await;
    let srv = Server::start_configured(|c| c.approvals.agent_changes = Some(false)).await;
    srv.admin_patch("/v1/agents/support-v2", &json!({"max_stage": "execute"}))
        .await;
    assert!(list_as(&srv, &srv.admin, "").await.is_empty());
    srv.shutdown().await;

    // Outside --dev they do, by default.
    let srv = Server::start_production().await;
    let key = TestKey::ed25519("prod-k1");
    srv.register_agent("prod-agent", &["tickets:read"], "observe", &[&key])
        .await;
    let (_, approval) = patch_waits(&srv, "prod-agent", &json!({"ceiling": ["tickets:*"]})).await;
    assert_eq!(approval["status"], "pending");
    assert_eq!(
        ceiling(&agent(&srv, "prod-agent").await),
        vec!["tickets:read".to_owned()]
    );
    srv.admin_patch("/v1/agents/prod-agent", &json!({"ceiling": []}))
        .await;
    srv.shutdown().await;
}

// ---- Separation of duties ----

#[tokio::test]
async fn separation_of_duties_refuses_and_audits_every_wrong_decider() {
    let srv = Server::start().await;
    // support-v2 (owner carol) asks for carol herself: she may not approve her own request.
    let id = open_escalation(&srv, CAROL, "support-v2", "tickets:create").await;
    let carol = srv.user_token(CAROL, &["support", "approver"], 600);
    let r = decide(&srv, Some(&carol), &id, "approve").await;
    r.expect(403);
    assert!(
        r.description().contains("own behalf") && r.description().contains(CAROL),
        "{}",
        r.body
    );
    // Neither owner nor approver: told who may.
    let bob = srv.user_token(BOB, &["finance"], 600);
    let r = decide(&srv, Some(&bob), &id, "approve").await;
    r.expect(403);
    assert_eq!(
        r.description(),
        "`bob@example.com` may not approve for agent `support-v2` (its owner or a member of \
         `approver` may)"
    );
    let alice = srv.alice();
    decide(&srv, Some(&alice), &id, "deny").await.expect(403);
    // An admin credential never decides, whatever its role.
    let r = decide(&srv, Some(&srv.admin.clone()), &id, "approve").await;
    r.expect(403);
    assert!(r.description().contains("human"), "{}", r.body);
    let auditor = srv
        .admin_post("/v1/credentials", &json!({"id": "aud1", "role": "auditor"}))
        .await;
    let auditor = auditor.body["secret"].as_str().unwrap().to_owned();
    decide(&srv, Some(&auditor), &id, "deny").await.expect(403);
    // No token, a token that is not one, an expired one, an unknown credential: 401.
    let audit_before = srv.audit("limit=10000").await.len();
    decide(&srv, None, &id, "approve").await.expect(401);
    decide(&srv, Some("not-a-token"), &id, "approve")
        .await
        .expect(401);
    let expired = srv.user_token(CAROL, &["approver"], -60);
    let r = decide(&srv, Some(&expired), &id, "approve").await;
    r.expect(401);
    assert!(r.description().contains("not valid"), "{}", r.body);
    decide(
        &srv,
        Some("mnd_admin_not-a-real-credential"),
        &id,
        "approve",
    )
    .await
    .expect(401);
    let r = call(
        &srv,
        Method::POST,
        &format!("/v1/approvals/{id}/approve"),
        Some(&unsigned(
            &json!({"iss": srv.url, "sub": CAROL, "groups": ["approver"]}),
        )),
        None,
    )
    .await;
    r.expect(401);
    assert_eq!(
        srv.audit("limit=10000").await.len(),
        audit_before,
        "a caller with no identity leaves no audit event"
    );

    // Every refusal is audited on the approval, and it is still pending.
    let refused = events(&srv, "approval.refused", &id).await;
    let deciders: Vec<&str> = refused
        .iter()
        .map(|e| e["detail"]["decider"].as_str().unwrap())
        .collect();
    assert_eq!(
        deciders,
        vec![CAROL, BOB, ALICE, "admin:bootstrap", "admin:aud1"],
        "{refused:?}"
    );
    for e in &refused {
        assert_eq!(e["decision"], "deny");
        assert_eq!(e["user"], CAROL);
        assert_eq!(e["chain"], json!(["support-v2"]));
    }
    assert_eq!(refused[1]["detail"]["wanted"], "approve");
    assert_eq!(refused[2]["detail"]["wanted"], "deny");
    let shown = show(&srv, &id).await;
    assert_eq!(shown["status"], "pending");
    assert!(shown["decided"].is_null());
    assert!(events(&srv, "approval.approved", &id).await.is_empty());

    // A member of the approver group who is not the user decides.
    let dave = srv.user_token("dave@example.com", &["approver"], 600);
    let r = decide(&srv, Some(&dave), &id, "approve").await;
    r.expect(200);
    assert_eq!(r.body["decided"]["by"], "dave@example.com");
    srv.shutdown().await;
}

#[tokio::test]
async fn a_revoked_user_cannot_decide() {
    let srv = Server::start().await;
    let id = open_escalation(&srv, ALICE, "support-v2", "tickets:create").await;
    let carol = srv.user_token(CAROL, &["support", "approver"], 600);
    srv.revoke("user", CAROL).await.expect(201);
    let r = decide(&srv, Some(&carol), &id, "approve").await;
    r.expect(401);
    assert!(r.description().contains("revoked"), "{}", r.body);
    assert_eq!(show(&srv, &id).await["status"], "pending");
    // A token issued after the revocation is hers again.
    srv.clock.advance(2);
    let carol = srv.user_token(CAROL, &["support", "approver"], 600);
    decide(&srv, Some(&carol), &id, "approve").await.expect(200);
    srv.shutdown().await;
}

#[tokio::test]
async fn an_expired_approval_cannot_be_decided_and_lists_as_expired() {
    let srv = Server::start_configured(|c| c.approvals.ttl = 60).await;
    let old = open_escalation(&srv, ALICE, "support-v2", "tickets:create").await;
    srv.clock.advance(30);
    let fresh = open_escalation(&srv, ALICE, "support-v2", "email:send").await;
    srv.clock.advance(31);
    assert_eq!(show(&srv, &old).await["status"], "expired");
    assert_eq!(show(&srv, &fresh).await["status"], "pending");
    assert_eq!(
        ids(&list_as(&srv, &srv.admin, "status=expired").await),
        vec![old.clone()]
    );
    assert_eq!(
        ids(&list_as(&srv, &srv.admin, "status=pending").await),
        vec![fresh.clone()]
    );
    let carol = srv.user_token(CAROL, &["support", "approver"], 600);
    let r = decide(&srv, Some(&carol), &old, "approve").await;
    r.expect(409);
    assert_eq!(r.description(), format!("approval `{old}` expired"));
    let refused = events(&srv, "approval.refused", &old).await;
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0]["detail"]["decider"], CAROL);
    let shown = show(&srv, &old).await;
    assert_eq!(shown["status"], "expired");
    assert!(shown["decided"].is_null());
    // The fresh one is still decidable, until it too expires.
    srv.clock.advance(30);
    let carol = srv.user_token(CAROL, &["support", "approver"], 600);
    decide(&srv, Some(&carol), &fresh, "approve")
        .await
        .expect(409);
    assert_eq!(list_as(&srv, &srv.admin, "status=expired").await.len(), 2);
    assert!(list_as(&srv, &srv.admin, "status=pending").await.is_empty());
    srv.shutdown().await;
}

#[tokio::test]
async fn of_racing_decisions_exactly_one_lands() {
    let srv = governed().await;
    let carol = srv.user_token(CAROL, &["support", "approver"], 600);
    let dave = srv.user_token("dave@example.com", &["approver"], 600);

    // On an escalation: eight deciders at once, approving and denying.
    let id = open_escalation(&srv, ALICE, "support-v2", "tickets:create").await;
    let tries = (0..8).map(|i| {
        let (who, verb) = match i % 2 {
            0 => (&carol, "approve"),
            _ => (&dave, "deny"),
        };
        decide(&srv, Some(who), &id, verb)
    });
    let replies = futures_util::future::join_all(tries).await;
    let won: Vec<&Reply> = replies.iter().filter(|r| r.status == 200).collect();
    assert_eq!(won.len(), 1, "{replies:?}");
    assert!(
        replies.iter().all(|r| r.status == 200 || r.status == 409),
        "{replies:?}"
    );
    let status = won[0].body["status"].as_str().unwrap().to_owned();
    assert_eq!(show(&srv, &id).await["status"], status.as_str());
    let decided = events(&srv, "approval.approved", &id).await.len()
        + events(&srv, "approval.denied", &id).await.len();
    assert_eq!(decided, 1);
    assert_eq!(events(&srv, "approval.refused", &id).await.len(), 7);

    // On an agent change: it is applied once.
    let (_, approval) = patch_waits(&srv, "support-v2", &json!({"max_stage": "execute"})).await;
    let id = approval["id"].as_str().unwrap().to_owned();
    let tries = (0..6).map(|i| {
        let who = if i % 2 == 0 { &carol } else { &dave };
        decide(&srv, Some(who), &id, "approve")
    });
    let replies = futures_util::future::join_all(tries).await;
    assert_eq!(
        replies.iter().filter(|r| r.status == 200).count(),
        1,
        "{replies:?}"
    );
    assert_eq!(
        srv.audit("kind=agent.update&agent=support-v2").await.len(),
        1
    );
    assert_eq!(events(&srv, "approval.approved", &id).await.len(), 1);
    assert_eq!(agent(&srv, "support-v2").await["max_stage"], "execute");
    srv.shutdown().await;
}

// ---- Listing and showing ----

#[tokio::test]
async fn listing_filters_and_shows_a_human_only_their_part() {
    let srv = governed().await;
    let (_, change_support) =
        patch_waits(&srv, "support-v2", &json!({"max_stage": "execute"})).await;
    let change_support = change_support["id"].as_str().unwrap().to_owned();
    srv.clock.advance(1);
    let for_alice = open_escalation(&srv, ALICE, "support-v2", "tickets:create").await;
    srv.clock.advance(1);
    let (_, change_analytics) =
        patch_waits(&srv, "analytics-v1", &json!({"max_stage": "draft"})).await;
    let change_analytics = change_analytics["id"].as_str().unwrap().to_owned();
    srv.clock.advance(1);
    let for_bob = open_escalation(&srv, BOB, "analytics-v1", "billing.invoices:read").await;

    // An admin sees everything, newest first, and every filter narrows it.
    let all = list_as(&srv, &srv.admin, "").await;
    assert_eq!(
        ids(&all),
        vec![
            for_bob.clone(),
            change_analytics.clone(),
            for_alice.clone(),
            change_support.clone()
        ]
    );
    assert!(all.iter().all(|a| a["status"] == "pending"));
    assert_eq!(list_as(&srv, &srv.admin, "status=pending").await.len(), 4);
    assert!(
        list_as(&srv, &srv.admin, "status=approved")
            .await
            .is_empty()
    );
    assert_eq!(
        ids(&list_as(&srv, &srv.admin, "agent=support-v2").await),
        vec![for_alice.clone(), change_support.clone()]
    );
    assert_eq!(
        ids(&list_as(&srv, &srv.admin, "kind=agent_change").await),
        vec![change_analytics.clone(), change_support.clone()]
    );
    assert_eq!(
        ids(&list_as(&srv, &srv.admin, "kind=escalation&agent=analytics-v1").await),
        vec![for_bob.clone()]
    );
    assert_eq!(
        ids(&list_as(&srv, &srv.admin, &format!("user={ALICE}")).await),
        vec![for_alice.clone()]
    );
    assert_eq!(
        ids(&list_as(&srv, &srv.admin, "limit=2").await),
        vec![for_bob.clone(), change_analytics.clone()]
    );
    assert!(list_as(&srv, &srv.admin, "agent=nobody").await.is_empty());

    // Bad filters are refused with a clear message.
    let r = srv.admin_get("/v1/approvals?status=sideways").await;
    r.expect(400);
    assert!(
        r.description().contains("`status`") && r.description().contains("`sideways`"),
        "{}",
        r.body
    );
    let r = srv.admin_get("/v1/approvals?kind=coffee").await;
    r.expect(400);
    assert!(r.description().contains("`kind`"), "{}", r.body);
    srv.admin_get("/v1/approvals?limit=-1").await.expect(400);
    srv.admin_get("/v1/approvals?colour=blue").await.expect(400);

    // An auditor reads them all; a verifier credential may not.
    let mk = |id: &str, role: &str| json!({"id": id, "role": role});
    let auditor = srv
        .admin_post("/v1/credentials", &mk("aud1", "auditor"))
        .await;
    let auditor = auditor.body["secret"].as_str().unwrap().to_owned();
    assert_eq!(list_as(&srv, &auditor, "").await.len(), 4);
    assert_eq!(
        call(
            &srv,
            Method::GET,
            &format!("/v1/approvals/{for_alice}"),
            Some(&auditor),
            None
        )
        .await
        .expect(200)
        .body["id"],
        for_alice.as_str()
    );
    let verifier = srv
        .admin_post("/v1/credentials", &mk("ver1", "verifier"))
        .await;
    let verifier = verifier.body["secret"].as_str().unwrap().to_owned();
    call(&srv, Method::GET, "/v1/approvals", Some(&verifier), None)
        .await
        .expect(403);

    // A human sees what they may decide and what was asked for them, nothing else.
    let bob = srv.user_token(BOB, &["finance"], 600);
    assert_eq!(
        ids(&list_as(&srv, &bob, "").await),
        vec![for_bob.clone(), change_analytics.clone()]
    );
    // The limit counts what they may see, not what the store holds.
    assert_eq!(
        ids(&list_as(&srv, &bob, "limit=1").await),
        vec![for_bob.clone()]
    );
    assert!(list_as(&srv, &bob, "agent=support-v2").await.is_empty());
    for id in [&change_support, &for_alice] {
        let r = call(
            &srv,
            Method::GET,
            &format!("/v1/approvals/{id}"),
            Some(&bob),
            None,
        )
        .await;
        r.expect(404);
    }
    call(
        &srv,
        Method::GET,
        &format!("/v1/approvals/{for_bob}"),
        Some(&bob),
        None,
    )
    .await
    .expect(200);
    let alice = srv.alice();
    assert_eq!(
        ids(&list_as(&srv, &alice, "").await),
        vec![for_alice.clone()]
    );
    // Three newer approvals she may not see do not use up her `limit`.
    assert_eq!(
        ids(&list_as(&srv, &alice, "limit=1").await),
        vec![for_alice.clone()]
    );
    // Carol owns support-v2; in the approver group she may decide for every agent.
    let carol_owner = srv.user_token(CAROL, &["support"], 600);
    assert_eq!(
        ids(&list_as(&srv, &carol_owner, "").await),
        vec![for_alice.clone(), change_support.clone()]
    );
    let carol_approver = srv.user_token(CAROL, &["support", "approver"], 600);
    assert_eq!(list_as(&srv, &carol_approver, "").await.len(), 4);
    assert_eq!(
        ids(&list_as(&srv, &carol_approver, "kind=agent_change&limit=1").await),
        vec![change_analytics.clone()]
    );
    // No identity, no list.
    call(&srv, Method::GET, "/v1/approvals", None, None)
        .await
        .expect(401);
    call(&srv, Method::GET, "/v1/approvals", Some("garbage"), None)
        .await
        .expect(401);

    // Unknown ids are 404 for everyone, and a decision on one changes nothing.
    let r = srv.admin_get("/v1/approvals/ap-nope").await;
    r.expect(404);
    assert!(r.description().contains("`ap-nope`"), "{}", r.body);
    decide(&srv, Some(&carol_approver), "ap-nope", "approve")
        .await
        .expect(404);
    decide(&srv, Some(&srv.admin.clone()), "ap-nope", "approve")
        .await
        .expect(403);
    assert!(srv.audit("kind=approval.refused").await.is_empty());

    // Decided ones show as such and filter by status.
    decide(&srv, Some(&bob), &change_analytics, "approve")
        .await
        .expect(200);
    decide(&srv, Some(&carol_approver), &for_bob, "deny")
        .await
        .expect(200);
    assert_eq!(
        ids(&list_as(&srv, &srv.admin, "status=approved").await),
        vec![change_analytics.clone()]
    );
    assert_eq!(
        ids(&list_as(&srv, &srv.admin, "status=denied").await),
        vec![for_bob.clone()]
    );
    assert_eq!(
        ids(&list_as(&srv, &srv.admin, "status=pending").await),
        vec![for_alice.clone(), change_support.clone()]
    );
    srv.shutdown().await;
}

// ---- Notification ----

/// A tiny webhook receiver: every JSON body POSTed to it, sent on the channel.
async fn webhook() -> (String, tokio::sync::mpsc::UnboundedReceiver<Value>) {
    use axum::routing::post;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/hooks/approvals",
        post(move |axum::Json(v): axum::Json<Value>| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(v);
                "ok"
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks/approvals", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });
    (url, rx)
}

#[tokio::test]
async fn a_new_request_is_posted_to_the_webhook() {
    let (url, mut rx) = webhook().await;
    let srv = Server::start_configured(move |c| {
        c.approvals.agent_changes = Some(true);
        c.approvals.webhook = Some(url);
    })
    .await;
    let (_, approval) = patch_waits(&srv, "support-v2", &json!({"max_stage": "execute"})).await;
    let id = approval["id"].as_str().unwrap();
    let got = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv())
        .await
        .expect("the webhook is called within 10 s")
        .unwrap();
    assert_eq!(got["approval"]["id"], id);
    assert_eq!(got["approval"]["status"], "pending");
    assert_eq!(
        got["approval"]["binding_message"],
        approval["binding_message"]
    );
    let text = got["text"].as_str().unwrap();
    assert!(
        text.contains(id) && text.contains("support-v2") && text.contains("execute"),
        "{text}"
    );
    assert_eq!(
        got["links"]["self"],
        format!("{}/v1/approvals/{id}", srv.url).as_str()
    );
    // One notice per request; none for a decision.
    let carol = srv.user_token(CAROL, &[], 600);
    decide(&srv, Some(&carol), id, "approve").await.expect(200);
    let escalation = open_escalation(&srv, ALICE, "support-v2", "tickets:create").await;
    let got = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got["approval"]["id"], escalation.as_str());
    assert!(got["text"].as_str().unwrap().contains(ALICE));
    assert!(rx.try_recv().is_err());
    srv.shutdown().await;
}

#[tokio::test]
async fn an_unreachable_webhook_changes_nothing() {
    // A port nothing listens on: the request is still recorded and decidable.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    drop(l);
    let srv = Server::start_configured(move |c| c.approvals.webhook = Some(url)).await;
    let id = open_escalation(&srv, ALICE, "support-v2", "tickets:create").await;
    assert_eq!(show(&srv, &id).await["status"], "pending");
    let carol = srv.user_token(CAROL, &["approver"], 600);
    decide(&srv, Some(&carol), &id, "approve").await.expect(200);
    srv.shutdown().await;
}

#[tokio::test]
async fn the_openapi_document_describes_the_approval_routes() {
    let srv = Server::start().await;
    let r = srv.admin_get("/v1/openapi.json").await;
    r.expect(200);
    let paths = &r.body["paths"];
    for (path, method) in [
        ("/v1/approvals", "get"),
        ("/v1/approvals/{id}", "get"),
        ("/v1/approvals/{id}/approve", "post"),
        ("/v1/approvals/{id}/deny", "post"),
    ] {
        assert!(paths[path][method].is_object(), "{method} {path}");
    }
    let body = &paths["/v1/approvals/{id}/approve"]["post"]["requestBody"];
    assert_eq!(
        body["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/DecisionBody"
    );
    let schema = &r.body["components"]["schemas"]["DecisionBody"];
    assert!(schema["properties"]["reason"].is_object(), "{schema}");
    assert!(
        paths["/v1/agents/{id}"]["patch"]["summary"]
            .as_str()
            .unwrap()
            .contains("202")
    );
    srv.shutdown().await;
}

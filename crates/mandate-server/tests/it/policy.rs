//! Issuance decided by Cedar policies (SPEC §4): rights from policy, delegation as a policy
//! decision, forbid overriding permit, and reloads that refuse a bad set and keep the last good.

use serde_json::{Value, json};

use super::harness::*;

#[tokio::test]
async fn delegation_not_permitted_by_policy_is_refused_and_names_the_agents() {
    let srv = Server::start().await;
    let (support, analytics) = (srv.agent("support-v2"), srv.agent("analytics-v1"));
    let key = TestKey::ed25519("helper-k1");
    srv.register_agent("helper", &["crm.customers:read"], "observe", &[&key])
        .await;
    let helper = Agent {
        id: "helper".into(),
        key,
    };
    let first = srv
        .exchange(&support, &srv.alice(), "crm.customers:read")
        .await
        .access_token();
    // The demo policy lets support-v2 delegate to analytics-v1, and to nobody else.
    let ok = srv.hop(&analytics, &first, "crm.customers:read").await;
    let event = srv.allow_event(&ok).await;
    assert_eq!(
        event["policy_ids"],
        json!(["support-v2-delegates-to-analytics-v1"])
    );
    let r = srv.hop(&helper, &first, "crm.customers:read").await;
    r.expect_oauth_error(400, "invalid_grant");
    assert!(
        r.description()
            .contains("`support-v2` may not delegate to agent `helper`"),
        "{}",
        r.body
    );
    srv.deny_event(&r).await;
    srv.shutdown().await;
}

#[tokio::test]
async fn a_forbid_overrides_a_permit_and_is_named() {
    let srv = Server::start().await;
    let support = srv.agent("support-v2");
    let before = srv.exchange(&support, &srv.alice(), "email:send").await;
    before.access_token();
    srv.add_policy(
        "freeze.cedar",
        "@id(\"email-freeze\")\nforbid(principal, action == Action::\"email:send\", resource);",
    )
    .await;
    let r = srv.exchange(&support, &srv.alice(), "email:send").await;
    r.expect_oauth_error(400, "invalid_scope");
    assert!(r.description().contains("`email:send`"), "{}", r.body);
    let e = srv.deny_event(&r).await;
    assert_eq!(e["decision"], "deny");
    // Other scopes of the same group are still permitted.
    srv.exchange(&support, &srv.alice(), "tickets:read")
        .await
        .access_token();
    srv.shutdown().await;
}

#[tokio::test]
async fn rights_come_from_policy_including_token_claims() {
    let srv = Server::start().await;
    let key = TestKey::ed25519("payer-k1");
    srv.register_agent("payer", &["billing.*:create"], "draft", &[&key])
        .await;
    let payer = Agent {
        id: "payer".into(),
        key,
    };
    // bob (finance) may create payments, but the demo's tier policy forbids it without `gold`.
    let bob = srv.user_token(BOB, &["finance"], 3600);
    let r = srv.exchange(&payer, &bob, "billing.payments:create").await;
    r.expect_oauth_error(400, "invalid_scope");
    let gold = srv.user_token_with(BOB, &["finance"], 3600, json!({"tier": "gold"}));
    let ok = srv.exchange(&payer, &gold, "billing.payments:create").await;
    let token = ok.access_token();
    assert_eq!(peek(&token)["scope"], "billing.payments:create");
    let e = srv.allow_event(&ok).await;
    assert_eq!(e["policy_ids"], json!(["finance-group"]));
    srv.shutdown().await;
}

#[tokio::test]
async fn a_broken_policy_file_is_refused_with_file_line_and_reason_and_the_old_set_stays() {
    let srv = Server::start().await;
    let support = srv.agent("support-v2");
    let dir = srv.data_dir().join("policies");
    std::fs::write(
        dir.join("broken.cedar"),
        "permit(principal, action == Action::\"tickets:read\", resource);\n\nforbid(principal, action, resource)\n  when { context.stag == \"draft\" };\n",
    )
    .unwrap();
    let r = srv.admin_post("/v1/policies/reload", &json!({})).await;
    assert_eq!(r.status, 400, "{}", r.body);
    let errors = r.body["errors"].as_array().unwrap();
    assert_eq!(errors[0]["file"], "broken.cedar");
    assert_eq!(errors[0]["line"], 4);
    assert!(
        errors[0]["message"].as_str().unwrap().contains("stag"),
        "{}",
        r.body
    );
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("stay in force"),
        "{}",
        r.body
    );
    // The previous set is still deciding.
    srv.exchange(&support, &srv.alice(), "crm.customers:read")
        .await
        .access_token();
    let status = srv.admin_get("/v1/policies").await;
    assert_eq!(status.body["last_reload_error"][0]["line"], 4);
    assert_eq!(status.body["files"], json!(["demo.cedar"]));
    // The refusal is in the audit log.
    let events = srv.audit("kind=policy.reload&decision=deny").await;
    assert!(
        events
            .iter()
            .any(|e: &Value| e["reason"].as_str().unwrap_or("").contains("broken.cedar")),
        "{events:?}"
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn a_policy_file_change_is_picked_up_without_a_call() {
    let srv = Server::start().await;
    let support = srv.agent("support-v2");
    std::fs::write(
        srv.data_dir().join("policies").join("freeze.cedar"),
        "forbid(principal, action == Action::\"tickets:read\", resource);",
    )
    .unwrap();
    // The watcher checks every 2 s; wait for it, bounded.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let r = srv.exchange(&support, &srv.alice(), "tickets:read").await;
        if r.status == 400 {
            r.expect_oauth_error(400, "invalid_scope");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the change was never picked up"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    srv.shutdown().await;
}

#[tokio::test]
async fn issuance_rate_limits_answer_429_with_retry_after_per_user_and_per_agent() {
    let srv = Server::start_configured(|c| {
        c.limits.issuance_per_user_per_minute = 3;
        c.limits.issuance_per_agent_per_minute = 5;
    })
    .await;
    let support = srv.agent("support-v2");
    let alice = srv.alice();
    for _ in 0..3 {
        srv.exchange(&support, &alice, "tickets:read")
            .await
            .access_token();
    }
    let r = srv.exchange(&support, &alice, "tickets:read").await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.body["error"], "slow_down");
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=20).contains(&retry), "retry-after = {retry}");
    srv.deny_event(&r).await;
    // Another user is not held back by alice's limit, until the agent's own limit is reached.
    let carol = srv.user_token(CAROL, &["support"], 3600);
    srv.exchange(&support, &carol, "tickets:read")
        .await
        .access_token();
    let r = srv.exchange(&support, &carol, "tickets:read").await;
    assert_eq!(
        r.status, 429,
        "the agent's 5 per minute are used up: {}",
        r.body
    );
    assert!(r.description().contains("support-v2"), "{}", r.body);
    // Time heals: a minute later alice may go on.
    srv.clock.advance(60);
    let alice = srv.alice();
    srv.exchange(&support, &alice, "tickets:read")
        .await
        .access_token();
    srv.shutdown().await;
}

#[tokio::test]
async fn the_stage_maximum_lifetime_caps_a_longer_request() {
    let srv = Server::start_configured(|c| c.tokens.stage_max_ttl.draft = 120).await;
    let support = srv.agent("support-v2");
    let mut form = exchange_form(&srv.alice(), TYPE_JWT, "tickets:create", &[("ttl", "3600")]);
    form.extend(srv.client_auth(&support));
    let r = srv.token(&form).await;
    let token = r.access_token();
    let c = peek(&token);
    assert_eq!(c["stage"], "draft");
    assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), 120);
    srv.shutdown().await;
}

#[tokio::test]
async fn the_action_catalog_changes_which_stage_a_scope_needs() {
    // `tickets:create` is a write by default: an observe-only agent cannot hold it.
    let srv = Server::start().await;
    let analytics = srv.agent("analytics-v1");
    srv.add_policy(
        "reports.cedar",
        "permit(principal in Group::\"support\", action == Action::\"crm.reports:generate\", resource);",
    )
    .await;
    srv.admin_patch(
        "/v1/agents/analytics-v1",
        &json!({"ceiling": ["crm.*:read", "crm.reports:generate"]}),
    )
    .await;
    let r = srv
        .exchange(&analytics, &srv.alice(), "crm.reports:generate")
        .await;
    r.expect_oauth_error(400, "invalid_scope");
    assert!(r.description().contains("stage `observe`"), "{}", r.body);
    srv.shutdown().await;

    // Declared a read in the catalog, it is fine at `observe`.
    let srv = Server::start_configured(|c| {
        c.catalog.0.insert(
            "crm.reports:generate".into(),
            mandate_core::scope::ActionClass::Read,
        );
    })
    .await;
    let analytics = srv.agent("analytics-v1");
    srv.add_policy(
        "reports.cedar",
        "permit(principal in Group::\"support\", action == Action::\"crm.reports:generate\", resource);",
    )
    .await;
    srv.admin_patch(
        "/v1/agents/analytics-v1",
        &json!({"ceiling": ["crm.*:read", "crm.reports:generate"]}),
    )
    .await;
    let token = srv
        .exchange(&analytics, &srv.alice(), "crm.reports:generate")
        .await
        .access_token();
    assert_eq!(peek(&token)["stage"], "observe");
    srv.shutdown().await;
}

#[tokio::test]
async fn agent_tags_are_set_by_admins_and_read_by_policies() {
    let srv = Server::start().await;
    let key = TestKey::ed25519("tagged-k1");
    let body = json!({
        "id": "tagged", "owner": "erin@example.com", "ceiling": ["tickets:read"],
        "tags": ["untrusted", "batch"], "keys": [key.public_jwk()],
    });
    let r = srv.admin_post("/v1/agents", &body).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["tags"], json!(["batch", "untrusted"]));
    srv.add_policy(
        "tags.cedar",
        "@id(\"untrusted-agents\")\nforbid(principal, action, resource) when { context.chain.contains(\"tagged\") };\n\
         @id(\"tagged-own\")\npermit(principal is Agent, action == Action::\"tickets:read\", resource) unless { principal.tags.contains(\"untrusted\") };",
    )
    .await;
    let tagged = Agent {
        id: "tagged".into(),
        key,
    };
    let mut form = vec![
        ("grant_type".to_owned(), "client_credentials".to_owned()),
        ("scope".to_owned(), "tickets:read".to_owned()),
        ("resource".to_owned(), CRM.to_owned()),
    ];
    form.extend(srv.client_auth(&tagged));
    let r = srv.token(&form).await;
    r.expect_oauth_error(400, "invalid_scope");
    // Once the tag is gone, the agent's own permit applies.
    srv.admin_patch("/v1/agents/tagged", &json!({"tags": ["batch"]}))
        .await;
    std::fs::remove_file(srv.data_dir().join("policies").join("tags.cedar")).unwrap();
    srv.add_policy(
        "tags.cedar",
        "@id(\"tagged-own\")\npermit(principal is Agent, action == Action::\"tickets:read\", resource) unless { principal.tags.contains(\"untrusted\") };",
    )
    .await;
    let mut form = vec![
        ("grant_type".to_owned(), "client_credentials".to_owned()),
        ("scope".to_owned(), "tickets:read".to_owned()),
        ("resource".to_owned(), CRM.to_owned()),
    ];
    form.extend(srv.client_auth(&tagged));
    srv.token(&form).await.access_token();
    srv.shutdown().await;
}

#[tokio::test]
async fn windowed_usage_counts_let_a_policy_stop_too_much_too_fast() {
    let srv = Server::start().await;
    let support = srv.agent("support-v2");
    srv.add_policy(
        "pace.cedar",
        "@id(\"email-pace\")\nforbid(principal, action == Action::\"email:send\", resource)\n  when { context.usage.agent_last_hour >= 2 };",
    )
    .await;
    for _ in 0..2 {
        srv.exchange(&support, &srv.alice(), "email:send")
            .await
            .access_token();
    }
    let r = srv.exchange(&support, &srv.alice(), "email:send").await;
    r.expect_oauth_error(400, "invalid_scope");
    assert!(r.description().contains("`email:send`"), "{}", r.body);
    // Other scopes are not counted against it, and an hour later the window has emptied.
    srv.exchange(&support, &srv.alice(), "tickets:read")
        .await
        .access_token();
    srv.clock.advance(3_601);
    srv.exchange(&support, &srv.alice(), "email:send")
        .await
        .access_token();
    srv.shutdown().await;
}

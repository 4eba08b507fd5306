//! Token exchange (RFC 8693): a user's token turned by an agent into a narrow, short-lived token
//! naming both, and a second hop by another agent that can only narrow it further.

use serde_json::{Value, json};

use super::harness::*;

/// The `aud` claim as a list, whether it was sent as a string or an array.
fn audiences(aud: &Value) -> Vec<String> {
    match aud {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a.iter().map(|v| v.as_str().unwrap().to_owned()).collect(),
        other => panic!("`aud` is neither a string nor an array: {other}"),
    }
}

#[tokio::test]
async fn exchange_issues_a_token_naming_user_and_agent_that_a_generic_jwt_library_verifies() {
    let srv = Server::start().await;
    let support = srv.agent("support-v2");
    let before = srv.now();
    let r = srv
        .exchange(&support, &srv.alice(), "crm.customers:read tickets:read")
        .await;
    let token = r.access_token();

    // The token response (RFC 8693 §2.2.1).
    assert_eq!(r.body["issued_token_type"], TYPE_ACCESS_TOKEN);
    assert_eq!(r.body["token_type"], "Bearer");
    let expires_in = r.body["expires_in"].as_i64().expect("`expires_in`");
    assert!((1..=300).contains(&expires_in), "expires_in = {expires_in}");
    assert_eq!(
        scopes(r.body["scope"].as_str().unwrap()),
        ["crm.customers:read", "tickets:read"]
    );

    // Verified by an outside library with the published JWKS.
    let v = srv
        .verify(&token, CRM)
        .await
        .expect("the token verifies against /.well-known/jwks.json");
    assert_eq!(v.header.typ.as_deref(), Some("at+jwt"));
    assert!(v.header.kid.as_deref().is_some_and(|k| !k.is_empty()));
    let c = &v.claims;
    assert_eq!(c["iss"], srv.url.as_str());
    assert_eq!(c["sub"], ALICE);
    assert_eq!(c["sub_profile"], "user");
    assert_eq!(c["act"]["sub"], "agent:support-v2");
    assert_eq!(c["act"]["sub_profile"], "agent");
    assert!(
        c["act"].get("act").is_none(),
        "one hop has one actor: {}",
        c["act"]
    );
    assert_eq!(c["client_id"], "support-v2");
    assert_eq!(audiences(&c["aud"]), [CRM]);
    // requested ∩ rights(alice) ∩ ceiling(support-v2): both requested scopes survive.
    assert_eq!(
        scopes(c["scope"].as_str().unwrap()),
        ["crm.customers:read", "tickets:read"]
    );
    let (iat, exp) = (c["iat"].as_i64().unwrap(), c["exp"].as_i64().unwrap());
    assert!(exp > iat && exp - iat <= 300, "iat {iat}, exp {exp}");
    assert!(iat >= before - 1 && iat <= srv.now() + 1);
    assert!(
        (exp - srv.now() - expires_in).abs() <= 1,
        "expires_in {expires_in} disagrees with exp {exp}"
    );
    let task = c["task"].as_str().expect("`task`").to_owned();
    assert!(!task.is_empty());
    assert_eq!(c["stage"], "observe");
    let jti = c["jti"].as_str().expect("`jti`").to_owned();
    assert!(!jti.is_empty());
    assert_eq!(r.body["task"], task.as_str());

    // The decision is in the audit log, with user and chain.
    let events = srv.audit(&format!("task={task}&decision=allow")).await;
    let e = events
        .iter()
        .find(|e| e["jti"] == jti.as_str())
        .unwrap_or_else(|| panic!("no allow event for the token in {events:?}"));
    assert_eq!(e["kind"], "token.exchange");
    assert_eq!(e["user"], ALICE);
    assert_eq!(e["chain"], serde_json::json!(["support-v2"]));
    assert_eq!(e["task"], task.as_str());
    assert_eq!(e["resource"], CRM);
    assert_eq!(
        scopes(e["action"].as_str().unwrap()),
        ["crm.customers:read", "tickets:read"]
    );
    assert_eq!(e["request_id"], r.request_id.as_str());
    for field in ["seq", "time", "hash", "prev_hash", "reason"] {
        assert!(e.get(field).is_some(), "event lacks `{field}`: {e}");
    }
    srv.shutdown().await;
}

#[tokio::test]
async fn intersect_mode_keeps_only_what_user_and_ceiling_both_allow() {
    let srv = Server::start().await;
    let support = srv.agent("support-v2");
    // Support and finance: the user may read invoices, but support-v2's ceiling may not;
    // the ceiling allows `tickets:list`, but the user may not.
    let user = srv.user_token(ALICE, &["support", "finance"], 3600);
    let asked = "crm.customers:read tickets:read tickets:list billing.invoices:read";
    let form = exchange_form(&user, TYPE_JWT, asked, &[("scope_mode", "intersect")]);
    let r = srv.token_as(&support, form).await;
    let token = r.access_token();
    let v = srv.verify(&token, CRM).await.unwrap();
    assert_eq!(
        scopes(v.claims["scope"].as_str().unwrap()),
        ["crm.customers:read", "tickets:read"]
    );

    // Without the opt-in, the same request is refused and names both denied scopes.
    let r = srv.exchange(&support, &user, asked).await;
    r.expect_oauth_error(400, "invalid_scope");
    assert!(r.description().contains("tickets:list"), "{}", r.body);
    assert!(
        r.description().contains("billing.invoices:read"),
        "{}",
        r.body
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn second_hop_nests_act_and_never_widens_scope_or_lifetime() {
    let srv = Server::start().await;
    let support = srv.agent("support-v2");
    let analytics = srv.agent("analytics-v1");
    let t1 = srv
        .exchange(&support, &srv.alice(), "crm.customers:read tickets:read")
        .await
        .access_token();
    let parent = srv.verify(&t1, CRM).await.unwrap().claims;

    // analytics-v1 exchanges support-v2's token, asking for a long lifetime.
    let form = exchange_form(
        &t1,
        TYPE_ACCESS_TOKEN,
        "crm.customers:read",
        &[("ttl", "3600")],
    );
    let r = srv.token_as(&analytics, form).await;
    let t2 = r.access_token();
    let v = srv.verify(&t2, CRM).await.expect("the hop token verifies");
    let c = &v.claims;
    assert_eq!(v.header.typ.as_deref(), Some("at+jwt"));
    assert_eq!(c["sub"], ALICE);
    assert_eq!(c["sub_profile"], "user");
    assert_eq!(c["client_id"], "analytics-v1");
    assert_eq!(c["act"]["sub"], "agent:analytics-v1");
    assert_eq!(c["act"]["sub_profile"], "agent");
    assert_eq!(c["act"]["act"]["sub"], "agent:support-v2");
    assert_eq!(c["act"]["act"]["sub_profile"], "agent");
    assert!(c["act"]["act"].get("act").is_none());
    assert_eq!(c["scope"], "crm.customers:read");
    assert!(subset(
        c["scope"].as_str().unwrap(),
        parent["scope"].as_str().unwrap()
    ));
    assert!(
        c["exp"].as_i64().unwrap() <= parent["exp"].as_i64().unwrap(),
        "hop exp {} outlives parent exp {}",
        c["exp"],
        parent["exp"]
    );
    assert!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap() <= 300);
    assert_eq!(c["task"], parent["task"]);
    assert_ne!(c["jti"], parent["jti"]);
    assert_eq!(c["stage"], "observe");
    let task = parent["task"].as_str().unwrap();
    let events = srv.audit(&format!("task={task}&decision=allow")).await;
    let e = events
        .iter()
        .find(|e| e["jti"] == c["jti"])
        .expect("an allow event for the hop");
    assert_eq!(
        e["chain"],
        serde_json::json!(["support-v2", "analytics-v1"])
    );
    assert_eq!(e["user"], ALICE);

    // A scope the parent lacks (though analytics-v1's ceiling has it) is refused by name.
    let r = srv.hop(&analytics, &t1, "billing.invoices:read").await;
    r.expect_oauth_error(400, "invalid_scope");
    assert!(
        r.description().contains("billing.invoices:read"),
        "{}",
        r.body
    );
    srv.deny_event(&r).await;

    // A scope the parent holds but outside analytics-v1's ceiling is refused by name.
    let r = srv.hop(&analytics, &t1, "tickets:read").await;
    r.expect_oauth_error(400, "invalid_scope");
    assert!(r.description().contains("tickets:read"), "{}", r.body);
    srv.deny_event(&r).await;

    // A third hop back to support-v2 is refused: it is already in the chain.
    let r = srv.hop(&support, &t2, "crm.customers:read").await;
    r.expect_oauth_error(400, "invalid_grant");
    assert!(r.description().contains("support-v2"), "{}", r.body);
    let e = srv.deny_event(&r).await;
    assert_eq!(e["user"], ALICE);
    assert_eq!(e["task"], task);

    // A hop cannot move the token to an audience the parent was not for.
    let form = without(
        exchange_form(&t1, TYPE_ACCESS_TOKEN, "crm.customers:read", &[]),
        &["resource"],
    );
    let mut form = form;
    form.push(("resource".into(), "https://billing.example".into()));
    let r = srv.token_as(&analytics, form).await;
    r.expect_oauth_error(400, "invalid_target");
    srv.shutdown().await;
}

#[tokio::test]
async fn a_hop_is_recognised_by_the_subject_token_whatever_its_declared_type() {
    // SPEC §3: the path is chosen by what the subject token is. A Mandate token declared as a
    // plain JWT is still a hop: the chain is kept, nothing is reset.
    let srv = Server::start().await;
    let support = srv.agent("support-v2");
    let analytics = srv.agent("analytics-v1");
    let t1 = srv
        .exchange(&support, &srv.alice(), "crm.customers:read")
        .await
        .access_token();
    let r = srv
        .token_as(
            &analytics,
            exchange_form(&t1, TYPE_JWT, "crm.customers:read", &[]),
        )
        .await;
    let v = srv.verify(&r.access_token(), CRM).await.unwrap();
    assert_eq!(v.claims["act"]["act"]["sub"], "agent:support-v2");
    srv.shutdown().await;
}

#[tokio::test]
async fn exchanging_an_agents_own_token_never_hides_the_new_holder() {
    // An autonomous token (client_credentials) has no user to act for. Exchanging it must not
    // produce a token held by another agent that names no actor — one that would survive that
    // agent's suspension and that the holder could not even revoke.
    let srv = Server::start().await;
    let support = srv.agent("support-v2");
    let key = TestKey::ed25519("helper-k1");
    srv.register_agent("helper", &["tickets:read"], "observe", &[&key])
        .await;
    let helper = Agent {
        id: "helper".into(),
        key,
    };
    let form = vec![
        ("grant_type".to_owned(), "client_credentials".to_owned()),
        ("scope".to_owned(), "tickets:read".to_owned()),
        ("resource".to_owned(), CRM.to_owned()),
    ];
    let own = srv.token_as(&support, form).await.access_token();
    let r = srv.hop(&helper, &own, "tickets:read").await;
    r.expect_oauth_error(400, "invalid_grant");
    let e = srv.deny_event(&r).await;
    assert_eq!(e["chain"], json!(["support-v2", "helper"]));
    assert!(srv.active(&own).await, "the agent's own token is untouched");
    srv.shutdown().await;
}

#[tokio::test]
async fn lifetime_and_stage_only_narrow() {
    let srv = Server::start().await;
    let support = srv.agent("support-v2");
    let analytics = srv.agent("analytics-v1");

    // Never beyond the user's own token.
    let short = srv.user_token(ALICE, &["support"], 100);
    let user_exp = peek(&short)["exp"].as_i64().unwrap();
    let t = srv
        .exchange(&support, &short, "crm.customers:read")
        .await
        .access_token();
    let c = srv.verify(&t, CRM).await.unwrap().claims;
    assert!(c["exp"].as_i64().unwrap() <= user_exp);

    // A shorter lifetime is honoured; a longer one is capped at the maximum.
    let form = exchange_form(
        &srv.alice(),
        TYPE_JWT,
        "crm.customers:read",
        &[("ttl", "10")],
    );
    let c = srv
        .verify(&srv.token_as(&support, form).await.access_token(), CRM)
        .await
        .unwrap()
        .claims;
    assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), 10);
    let form = exchange_form(
        &srv.alice(),
        TYPE_JWT,
        "crm.customers:read",
        &[("ttl", "86400")],
    );
    let c = srv
        .verify(&srv.token_as(&support, form).await.access_token(), CRM)
        .await
        .unwrap()
        .claims;
    assert!(
        c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap() <= 3600,
        "capped at `tokens.max_ttl`"
    );

    // A write scope needs `draft`, which support-v2 may reach and analytics-v1 may not.
    let r = srv.exchange(&support, &srv.alice(), "email:send").await;
    let draft = r.access_token();
    assert_eq!(r.body["stage"], "draft");
    let form = exchange_form(
        &srv.alice(),
        TYPE_JWT,
        "crm.customers:read",
        &[("stage", "execute")],
    );
    // A stage above the agent's max stage is not issued: it waits for a human's approval (OpenID
    // CIBA, see ciba.rs; with `approvals.escalation = false` it is refused with `invalid_scope`).
    let r = srv.token_as(&support, form).await;
    r.expect_oauth_error(400, "authorization_pending");
    assert!(r.description().contains("execute"), "{}", r.body);
    assert!(r.body.get("access_token").is_none());
    let bob = srv.user_token(BOB, &["finance"], 3600);
    let form = exchange_form(&bob, TYPE_JWT, "crm.customers:read", &[("stage", "draft")]);
    let r = srv.token_as(&analytics, form).await;
    r.expect_oauth_error(400, "authorization_pending");
    assert!(r.body.get("access_token").is_none());

    // A hop from a draft token by an observe-only agent is an observe token.
    let form = exchange_form(&draft, TYPE_ACCESS_TOKEN, "crm.customers:read", &[]);
    let r = srv.token_as(&analytics, form).await;
    // The draft parent holds only `email:send`: nothing to hand on.
    r.expect_oauth_error(400, "invalid_scope");
    let parent = srv
        .exchange(&support, &srv.alice(), "crm.customers:read email:send")
        .await
        .access_token();
    let r = srv.hop(&analytics, &parent, "crm.customers:read").await;
    let c = srv.verify(&r.access_token(), CRM).await.unwrap().claims;
    assert_eq!(c["stage"], "observe");
    srv.shutdown().await;
}

#[tokio::test]
async fn the_delegation_chain_depth_is_limited() {
    let srv = Server::start().await;
    let mut agents = vec![srv.agent("support-v2"), srv.agent("analytics-v1")];
    for i in 1..=3 {
        let id = format!("relay-{i}");
        let key = TestKey::ed25519(&format!("{id}-k1"));
        srv.register_agent(&id, &["crm.customers:read"], "observe", &[&key])
            .await;
        agents.push(Agent { id, key });
    }
    srv.add_policy(
        "relays.cedar",
        r#"permit(principal, action == Action::"delegate", resource) when { context.chain.contains("support-v2") };"#,
    )
    .await;
    let mut token = srv
        .exchange(&agents[0], &srv.alice(), "crm.customers:read")
        .await
        .access_token();
    // Depth 2, 3, 4 are fine (the default maximum is 4).
    for agent in &agents[1..4] {
        token = srv
            .hop(agent, &token, "crm.customers:read")
            .await
            .access_token();
    }
    let mut act = &srv.verify(&token, CRM).await.unwrap().claims["act"];
    let mut seen = Vec::new();
    while let Some(sub) = act.get("sub") {
        seen.push(sub.as_str().unwrap().to_owned());
        act = &act["act"];
    }
    assert_eq!(
        seen,
        [
            "agent:relay-2",
            "agent:relay-1",
            "agent:analytics-v1",
            "agent:support-v2"
        ]
    );
    let r = srv.hop(&agents[4], &token, "crm.customers:read").await;
    r.expect_oauth_error(400, "invalid_grant");
    assert!(r.description().contains("depth"), "{}", r.body);
    srv.deny_event(&r).await;
    srv.shutdown().await;
}

#[tokio::test]
async fn a_task_belongs_to_one_agent_and_one_user() {
    let srv = Server::start().await;
    let support = srv.agent("support-v2");
    let analytics = srv.agent("analytics-v1");
    let with_task = |user: &str| {
        exchange_form(
            user,
            TYPE_JWT,
            "crm.customers:read",
            &[
                ("task", "ticket-12847"),
                ("task_purpose", "answer ticket 12847"),
            ],
        )
    };
    let t1 = srv
        .token_as(&support, with_task(&srv.alice()))
        .await
        .access_token();
    assert_eq!(peek(&t1)["task"], "ticket-12847");
    // The same agent and user may use the task again.
    srv.token_as(&support, with_task(&srv.alice()))
        .await
        .access_token();
    let task = srv.admin_get("/v1/tasks/ticket-12847").await;
    task.expect(200);
    assert_eq!(task.body["task"]["agent"], "support-v2");
    assert_eq!(task.body["task"]["user"], ALICE);
    assert_eq!(task.body["task"]["purpose"], "answer ticket 12847");
    assert_eq!(task.body["tokens"].as_array().unwrap().len(), 2);

    // Another agent, or another user, may not.
    let bob = srv.user_token(BOB, &["finance"], 3600);
    let r = srv.token_as(&analytics, with_task(&bob)).await;
    r.expect_oauth_error(400, "invalid_grant");
    srv.deny_event(&r).await;
    let carol = srv.user_token(CAROL, &["support"], 3600);
    let r = srv.token_as(&support, with_task(&carol)).await;
    r.expect_oauth_error(400, "invalid_grant");
    // A hop keeps the task: asking for another one is refused.
    let form = exchange_form(
        &t1,
        TYPE_ACCESS_TOKEN,
        "crm.customers:read",
        &[("task", "something-else")],
    );
    srv.token_as(&analytics, form)
        .await
        .expect_oauth_error(400, "invalid_request");
    srv.shutdown().await;
}

#[tokio::test]
async fn an_actor_token_must_prove_the_authenticated_agent() {
    let srv = Server::start().await;
    let support = srv.agent("support-v2");
    let analytics = srv.agent("analytics-v1");
    let now = srv.now();
    let actor_jwt = |agent: &Agent| {
        agent.key.sign(&json!({
            "iss": agent.id, "sub": agent.id, "aud": srv.url,
            "iat": now, "exp": now + 60, "jti": unique("actor"),
        }))
    };
    // The agent's own proof is accepted.
    let own = actor_jwt(&support);
    let form = exchange_form(
        &srv.alice(),
        TYPE_JWT,
        "crm.customers:read",
        &[("actor_token", &own), ("actor_token_type", TYPE_JWT)],
    );
    srv.token_as(&support, form).await.access_token();
    // Another agent's proof is not.
    let other = actor_jwt(&analytics);
    let form = exchange_form(
        &srv.alice(),
        TYPE_JWT,
        "crm.customers:read",
        &[("actor_token", &other), ("actor_token_type", TYPE_JWT)],
    );
    let r = srv.token_as(&support, form).await;
    r.expect_oauth_error(400, "invalid_request");
    srv.deny_event(&r).await;
    // Nor a Mandate token that names a user, nor one without a type.
    let t = srv
        .exchange(&support, &srv.alice(), "crm.customers:read")
        .await
        .access_token();
    let form = exchange_form(
        &srv.alice(),
        TYPE_JWT,
        "crm.customers:read",
        &[("actor_token", &t), ("actor_token_type", TYPE_ACCESS_TOKEN)],
    );
    srv.token_as(&support, form)
        .await
        .expect_oauth_error(400, "invalid_request");
    let form = exchange_form(
        &srv.alice(),
        TYPE_JWT,
        "crm.customers:read",
        &[("actor_token", &own)],
    );
    srv.token_as(&support, form)
        .await
        .expect_oauth_error(400, "invalid_request");
    srv.shutdown().await;
}

#[tokio::test]
async fn an_es256_deployment_issues_tokens_a_generic_library_verifies_with_es256() {
    let srv = Server::start_configured(|c| c.signing_alg = "ES256".into()).await;
    let jwks = srv.jwks().await;
    assert!(
        jwks.keys.iter().all(|k| k
            .common
            .key_algorithm
            .is_some_and(|a| format!("{a:?}") == "ES256")),
        "the JWKS publishes P-256 keys"
    );
    let support = srv.agent("support-v2");
    let token = srv
        .exchange(&support, &srv.alice(), "crm.customers:read")
        .await
        .access_token();
    let v = srv
        .verify_alg(&token, CRM, jsonwebtoken::Algorithm::ES256)
        .await
        .expect("verifies as ES256 against the JWKS");
    assert_eq!(v.header.alg, jsonwebtoken::Algorithm::ES256);
    assert_eq!(v.claims["act"]["sub"], "agent:support-v2");
    assert!(
        srv.verify(&token, CRM).await.is_err(),
        "a relying party pinned to EdDSA refuses it"
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn exchange_carries_the_users_groups_and_only_the_configured_claims_through_every_hop() {
    // `--dev` carries `region` unless configured otherwise.
    let srv = Server::start().await;
    let support = srv.agent("support-v2");
    let analytics = srv.agent("analytics-v1");
    let user = srv.user_token_with(
        ALICE,
        &["support", "approver"],
        3600,
        json!({"region": "emea", "email": "alice@example.com", "tier": "gold"}),
    );
    let t1 = srv
        .exchange(&support, &user, "crm.customers:read")
        .await
        .access_token();
    let c1 = srv.verify(&t1, CRM).await.unwrap().claims;
    assert_eq!(c1["groups"], json!(["support", "approver"]));
    assert_eq!(c1["user_tags"], json!({"region": "emea"}), "{c1}");
    assert!(
        c1.get("email").is_none() && c1.get("tier").is_none(),
        "{c1}"
    );

    // The next hop carries exactly the same, whatever its own holder is.
    let t2 = srv
        .hop(&analytics, &t1, "crm.customers:read")
        .await
        .access_token();
    let c2 = srv.verify(&t2, CRM).await.unwrap().claims;
    assert_eq!(c2["groups"], c1["groups"]);
    assert_eq!(c2["user_tags"], c1["user_tags"]);
    let i = srv.introspect(&t2).await;
    assert_eq!(i["groups"], c1["groups"]);
    assert_eq!(i["user_tags"], c1["user_tags"]);

    // A user without groups or carried claims: neither claim is present at all.
    srv.add_policy(
        "dave.cedar",
        r#"permit(principal == User::"dave@example.com", action == Action::"crm.customers:read", resource);"#,
    )
    .await;
    let dave = srv.user_token_with(
        "dave@example.com",
        &[],
        3600,
        json!({"email": "dave@example.com"}),
    );
    let t = srv
        .exchange(&support, &dave, "crm.customers:read")
        .await
        .access_token();
    let c = srv.verify(&t, CRM).await.unwrap().claims;
    assert!(
        c.get("groups").is_none() && c.get("user_tags").is_none() && c.get("email").is_none(),
        "{c}"
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn exchange_carries_only_string_claims_named_by_carry_claims() {
    let srv = Server::start_configured(|c| {
        c.tokens.carry_claims = vec!["tier".into(), "level".into(), "department".into()];
    })
    .await;
    let support = srv.agent("support-v2");
    let user = srv.user_token_with(
        ALICE,
        &["support"],
        3600,
        json!({"region": "emea", "tier": "gold", "level": 3, "email": "alice@example.com"}),
    );
    let t = srv
        .exchange(&support, &user, "crm.customers:read")
        .await
        .access_token();
    let c = srv.verify(&t, CRM).await.unwrap().claims;
    // Configured: the dev default (`region`) does not apply; `level` is not a string; the user
    // has no `department`.
    assert_eq!(c["user_tags"], json!({"tier": "gold"}), "{c}");
    assert_eq!(c["groups"], json!(["support"]));
    srv.shutdown().await;
}

#[tokio::test]
async fn exchange_of_a_demo_users_dev_token_carries_their_region() {
    let srv = Server::start().await;
    let support = srv.agent("support-v2");
    let r = srv
        .admin_post("/v1/dev/user-token", &json!({"sub": ALICE}))
        .await;
    r.expect(200);
    let user = r.body["token"].as_str().unwrap().to_owned();
    assert_eq!(peek(&user)["region"], "emea");
    let t = srv
        .exchange(&support, &user, "crm.customers:read")
        .await
        .access_token();
    let c = srv.verify(&t, CRM).await.unwrap().claims;
    assert_eq!(c["user_tags"], json!({"region": "emea"}));
    assert_eq!(c["groups"], json!(["support"]));
    // An explicit claim wins over the demo default.
    let r = srv
        .admin_post(
            "/v1/dev/user-token",
            &json!({"sub": "bob", "claims": {"region": "apac"}}),
        )
        .await;
    assert_eq!(peek(r.body["token"].as_str().unwrap())["region"], "apac");
    srv.shutdown().await;
}

#[test]
fn exchange_config_refuses_a_bad_carry_claims_entry_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mandate.toml");
    for (entry, why) in [
        ("\"sub\"", "registered"),
        ("\"groups\"", "registered"),
        ("\"\"", "1–64"),
    ] {
        std::fs::write(
            &path,
            format!("[tokens]\ncarry_claims = [\"region\", {entry}]\n"),
        )
        .unwrap();
        let err = mandate_server::Config::load(Some(&path), Vec::new())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`tokens.carry_claims`")
                && err.contains(why)
                && err.contains("mandate.toml"),
            "{entry}: {err}"
        );
    }
    std::fs::write(&path, "[tokens]\ncarry_claims = [\"region\"]\n").unwrap();
    let c = mandate_server::Config::load(Some(&path), Vec::new()).unwrap();
    assert_eq!(c.tokens.carry_claims, ["region"]);
}

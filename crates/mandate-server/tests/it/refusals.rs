//! Refusals at the token endpoint: each answered with the right OAuth error, no token, and a
//! durable `deny` audit event for the request.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use super::harness::*;

/// Asserts an OAuth error with no token, and finds the request's `deny` audit event, whose
/// reason starts with the error code.
async fn refused(srv: &Server, r: &Reply, status: u16, error: &str) -> Value {
    r.expect_oauth_error(status, error);
    assert!(r.body.get("access_token").is_none(), "{}", r.body);
    assert!(
        !r.description().is_empty(),
        "a useful error_description: {}",
        r.body
    );
    let e = srv.deny_event(r).await;
    assert_eq!(e["decision"], "deny");
    assert!(
        e["reason"].as_str().unwrap().starts_with(error),
        "deny reason names `{error}`: {e}"
    );
    e
}

const SCOPE: &str = "crm.customers:read";

#[tokio::test]
async fn an_expired_user_token_is_invalid_grant() {
    let srv = Server::start().await;
    let support = srv.agent("support-v2");
    let expired = srv.user_token(ALICE, &["support"], -120);
    let r = srv.exchange(&support, &expired, SCOPE).await;
    let e = refused(&srv, &r, 400, "invalid_grant").await;
    assert!(r.description().contains("expired"), "{}", r.body);
    assert_eq!(e["chain"], json!(["support-v2"]));
    assert_eq!(e["kind"], "token.exchange");

    // The same user token through the admin API's dev endpoint, negative ttl, is refused too.
    let minted = srv
        .admin_post(
            "/v1/dev/user-token",
            &json!({"sub": ALICE, "groups": ["support"], "ttl": -120}),
        )
        .await;
    minted.expect(200);
    let r = srv
        .exchange(&support, minted.body["token"].as_str().unwrap(), SCOPE)
        .await;
    refused(&srv, &r, 400, "invalid_grant").await;
    srv.shutdown().await;
}

#[tokio::test]
async fn a_token_from_an_untrusted_issuer_is_invalid_grant() {
    let srv = Server::start_with_idp().await;
    let support = srv.agent("support-v2");
    let evil = TestKey::ed25519("evil-k1");
    let now = srv.now();
    let token = evil.sign(&json!({
        "iss": "https://evil.example", "aud": TEST_IDP_AUDIENCE, "sub": ALICE,
        "groups": ["support"], "iat": now, "exp": now + 600,
    }));
    let r = srv.exchange(&support, &token, SCOPE).await;
    refused(&srv, &r, 400, "invalid_grant").await;
    assert!(r.description().contains("not trusted"), "{}", r.body);

    // Claiming a trusted issuer while signed by the wrong key does not help either.
    let forged = evil.sign_with_header(
        &json!({"alg": "EdDSA", "kid": "test-idp-k1", "typ": "JWT"}),
        &peek(&srv.idp_token(json!({}))),
    );
    let r = srv.exchange(&support, &forged, SCOPE).await;
    refused(&srv, &r, 400, "invalid_grant").await;
    srv.shutdown().await;
}

#[tokio::test]
async fn a_token_for_another_audience_is_invalid_grant() {
    let srv = Server::start_with_idp().await;
    let support = srv.agent("support-v2");
    // Control: a well-formed token from the configured test IdP is accepted.
    let good = srv.idp_token(json!({}));
    let r = srv.exchange(&support, &good, SCOPE).await;
    let v = srv.verify(&r.access_token(), CRM).await.unwrap();
    assert_eq!(v.claims["sub"], "dave@test.example");

    let other = srv.idp_token(json!({"aud": "other"}));
    let r = srv.exchange(&support, &other, SCOPE).await;
    refused(&srv, &r, 400, "invalid_grant").await;
    assert!(r.description().contains("audience"), "{}", r.body);
    srv.shutdown().await;
}

#[tokio::test]
async fn an_unsigned_alg_none_token_is_invalid_grant() {
    let srv = Server::start_with_idp().await;
    let support = srv.agent("support-v2");
    let claims = peek(&srv.idp_token(json!({})));
    let r = srv.exchange(&support, &unsigned(&claims), SCOPE).await;
    refused(&srv, &r, 400, "invalid_grant").await;

    // Same against the dev IdP's issuer.
    let claims = peek(&srv.alice());
    let r = srv.exchange(&support, &unsigned(&claims), SCOPE).await;
    refused(&srv, &r, 400, "invalid_grant").await;
    srv.shutdown().await;
}

#[tokio::test]
async fn an_hs256_token_keyed_with_the_public_key_is_invalid_grant() {
    let srv = Server::start_with_idp().await;
    let support = srv.agent("support-v2");
    let idp = srv.idp.as_ref().unwrap();
    let claims = peek(&srv.idp_token(json!({})));
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(idp.kid.clone());
    let public_jwk_text = idp.public_jwk().to_string();
    let x_text = idp.public_jwk()["x"].as_str().unwrap().to_owned();
    for secret in [
        idp.public_bytes(),
        public_jwk_text.into_bytes(),
        x_text.into_bytes(),
    ] {
        let token =
            jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(&secret)).unwrap();
        let r = srv.exchange(&support, &token, SCOPE).await;
        refused(&srv, &r, 400, "invalid_grant").await;
    }
    srv.shutdown().await;
}

#[tokio::test]
async fn a_token_with_an_unknown_kid_is_invalid_grant() {
    let srv = Server::start_with_idp().await;
    let support = srv.agent("support-v2");
    let stranger = TestKey::ed25519("test-idp-k9");
    let claims = peek(&srv.idp_token(json!({})));
    let r = srv.exchange(&support, &stranger.sign(&claims), SCOPE).await;
    refused(&srv, &r, 400, "invalid_grant").await;
    assert!(r.description().contains("test-idp-k9"), "{}", r.body);
    srv.shutdown().await;
}

#[tokio::test]
async fn an_unregistered_agent_is_invalid_client() {
    let srv = Server::start().await;
    let ghost = Agent {
        id: "ghost-agent".into(),
        key: TestKey::ed25519("ghost-k1"),
    };
    let r = srv.exchange(&ghost, &srv.alice(), SCOPE).await;
    let e = refused(&srv, &r, 401, "invalid_client").await;
    assert_eq!(
        e["chain"],
        json!([]),
        "an unproven agent is never put in the chain"
    );
    let detail: Value = serde_json::from_str(e["detail"].as_str().unwrap()).unwrap();
    assert_eq!(detail["claimed_client"], "ghost-agent");

    // A registered agent's id with a key that is not registered for it.
    let impostor = Agent {
        id: "support-v2".into(),
        key: TestKey::ed25519("support-v2-k1"),
    };
    let r = srv.exchange(&impostor, &srv.alice(), SCOPE).await;
    refused(&srv, &r, 401, "invalid_client").await;
    srv.shutdown().await;
}

#[tokio::test]
async fn a_suspended_agent_is_invalid_client_until_resumed() {
    let srv = Server::start().await;
    let support = srv.agent("support-v2");
    srv.admin_post("/v1/agents/support-v2/suspend", &json!({}))
        .await
        .expect(200);
    let r = srv.exchange(&support, &srv.alice(), SCOPE).await;
    refused(&srv, &r, 401, "invalid_client").await;
    assert!(r.description().contains("suspended"), "{}", r.body);

    // Issued-at has second precision: a token issued in the second of a suspension counts as
    // issued before it (fail closed).
    srv.clock.advance(1);
    srv.admin_post("/v1/agents/support-v2/resume", &json!({}))
        .await
        .expect(200);
    srv.exchange(&support, &srv.alice(), SCOPE)
        .await
        .access_token();
    srv.shutdown().await;
}

#[tokio::test]
async fn a_retired_agent_is_invalid_client_for_good() {
    let srv = Server::start().await;
    let support = srv.agent("support-v2");
    srv.admin_post("/v1/agents/support-v2/retire", &json!({}))
        .await
        .expect(200);
    let r = srv.exchange(&support, &srv.alice(), SCOPE).await;
    refused(&srv, &r, 401, "invalid_client").await;
    assert!(r.description().contains("retired"), "{}", r.body);
    // Retirement is final.
    srv.admin_post("/v1/agents/support-v2/resume", &json!({}))
        .await
        .expect(409);
    let r = srv.exchange(&support, &srv.alice(), SCOPE).await;
    refused(&srv, &r, 401, "invalid_client").await;
    srv.shutdown().await;
}

#[tokio::test]
async fn a_replayed_client_assertion_is_invalid_client() {
    let srv = Server::start().await;
    let support = srv.agent("support-v2");
    let mut form = exchange_form(&srv.alice(), TYPE_JWT, SCOPE, &[]);
    form.extend(srv.client_auth(&support));
    srv.token(&form).await.access_token();
    let r = srv.token(&form).await;
    let e = refused(&srv, &r, 401, "invalid_client").await;
    assert!(r.description().contains("already used"), "{}", r.body);
    assert_eq!(e["chain"], json!(["support-v2"]));

    // Replaying an assertion that was burned by a refused request is refused too.
    let mut form = exchange_form(&srv.alice(), TYPE_JWT, "billing.invoices:read", &[]);
    form.extend(srv.client_auth(&support));
    refused(&srv, &srv.token(&form).await, 400, "invalid_scope").await;
    let form: Vec<_> = form
        .into_iter()
        .map(|(k, v)| {
            if k == "scope" {
                (k, SCOPE.to_owned())
            } else {
                (k, v)
            }
        })
        .collect();
    refused(&srv, &srv.token(&form).await, 401, "invalid_client").await;
    srv.shutdown().await;
}

#[tokio::test]
async fn bad_client_assertions_are_invalid_client() {
    let srv = Server::start().await;
    let support = srv.agent("support-v2");
    let now = srv.now();
    let base = json!({
        "iss": "support-v2", "sub": "support-v2", "aud": srv.url,
        "iat": now, "exp": now + 60,
    });
    let with = |changes: Value| {
        let mut c = base.clone();
        c["jti"] = json!(unique("jti"));
        for (k, v) in changes.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        support.key.sign(&c)
    };
    let cases = [
        (
            "wrong audience",
            with(json!({"aud": "https://elsewhere.example"})),
        ),
        ("expired", with(json!({"iat": now - 600, "exp": now - 300}))),
        ("lives too long", with(json!({"exp": now + 3600}))),
        ("sub differs from iss", with(json!({"sub": "analytics-v1"}))),
        ("no jti", {
            let mut c = base.clone();
            c.as_object_mut().unwrap().remove("jti");
            support.key.sign(&c)
        }),
        ("garbage", "not.a.jwt".to_owned()),
    ];
    for (what, assertion) in cases {
        let mut form = exchange_form(&srv.alice(), TYPE_JWT, SCOPE, &[]);
        form.push(("client_assertion_type".into(), JWT_BEARER.into()));
        form.push(("client_assertion".into(), assertion));
        let r = srv.token(&form).await;
        assert_eq!(
            (r.status, r.error()),
            (401, "invalid_client"),
            "{what}: {}",
            r.body
        );
        srv.deny_event(&r).await;
    }
    // No client authentication at all.
    let r = srv
        .token(&exchange_form(&srv.alice(), TYPE_JWT, SCOPE, &[]))
        .await;
    refused(&srv, &r, 401, "invalid_client").await;
    // The token endpoint's URL is an acceptable `aud` too.
    let mut form = exchange_form(&srv.alice(), TYPE_JWT, SCOPE, &[]);
    form.push(("client_assertion_type".into(), JWT_BEARER.into()));
    form.push((
        "client_assertion".into(),
        support.assertion_for(&srv.at("/oauth2/token"), now),
    ));
    srv.token(&form).await.access_token();
    srv.shutdown().await;
}

#[tokio::test]
async fn a_scope_outside_the_ceiling_is_invalid_scope_naming_it() {
    let srv = Server::start().await;
    let support = srv.agent("support-v2");
    // Bob (finance) may read invoices, but support-v2's ceiling does not reach them.
    let bob = srv.user_token(BOB, &["finance"], 3600);
    let r = srv
        .exchange(&support, &bob, "crm.customers:read billing.invoices:read")
        .await;
    let e = refused(&srv, &r, 400, "invalid_scope").await;
    assert!(
        r.description().contains("billing.invoices:read"),
        "{}",
        r.body
    );
    assert!(r.description().contains("ceiling"), "{}", r.body);
    assert!(
        !r.description().contains("`crm.customers:read`"),
        "only the denied scope is named: {}",
        r.body
    );
    assert_eq!(e["user"], BOB);
    assert_eq!(e["chain"], json!(["support-v2"]));
    srv.shutdown().await;
}

#[tokio::test]
async fn a_scope_the_user_lacks_is_invalid_scope() {
    let srv = Server::start().await;
    let support = srv.agent("support-v2");
    let bob = srv.user_token(BOB, &["finance"], 3600);
    let r = srv.exchange(&support, &bob, "tickets:read").await;
    let e = refused(&srv, &r, 400, "invalid_scope").await;
    assert!(r.description().contains("tickets:read"), "{}", r.body);
    assert!(r.description().contains("user"), "{}", r.body);
    assert_eq!(e["user"], BOB);
    srv.shutdown().await;
}

#[tokio::test]
async fn a_request_without_resource_or_audience_is_invalid_request() {
    let srv = Server::start().await;
    let support = srv.agent("support-v2");
    let form = without(
        exchange_form(&srv.alice(), TYPE_JWT, SCOPE, &[]),
        &["resource"],
    );
    let r = srv.token_as(&support, form.clone()).await;
    refused(&srv, &r, 400, "invalid_request").await;
    assert!(r.description().contains("resource"), "{}", r.body);

    // `audience` alone is enough (RFC 8693).
    let mut form = form;
    form.push(("audience".into(), "crm".into()));
    let r = srv.token_as(&support, form).await;
    let v = srv.verify(&r.access_token(), "crm").await.unwrap();
    assert_eq!(v.claims["aud"], "crm");
    srv.shutdown().await;
}

#[tokio::test]
async fn a_malformed_form_is_invalid_request() {
    let srv = Server::start().await;
    let support = srv.agent("support-v2");

    // Not a form: JSON.
    let mut fields = serde_json::Map::new();
    for (k, v) in exchange_form(&srv.alice(), TYPE_JWT, SCOPE, &[])
        .into_iter()
        .chain(srv.client_auth(&support))
    {
        fields.insert(k, Value::String(v));
    }
    let r = srv
        .send(
            srv.http
                .post(srv.at("/oauth2/token"))
                .header("content-type", "application/json")
                .body(Value::Object(fields).to_string()),
        )
        .await;
    refused(&srv, &r, 400, "invalid_request").await;

    // A parameter twice.
    let mut form = exchange_form(&srv.alice(), TYPE_JWT, SCOPE, &[]);
    form.push(("scope".into(), "tickets:read".into()));
    let r = srv.token_as(&support, form).await;
    refused(&srv, &r, 400, "invalid_request").await;
    assert!(r.description().contains("scope"), "{}", r.body);

    // Not UTF-8.
    let r = srv
        .send(
            srv.http
                .post(srv.at("/oauth2/token"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(vec![0xffu8, 0xfe, b'=', 0x80]),
        )
        .await;
    refused(&srv, &r, 400, "invalid_request").await;

    // No grant type; an unknown grant type.
    let form = without(
        exchange_form(&srv.alice(), TYPE_JWT, SCOPE, &[]),
        &["grant_type"],
    );
    let r = srv.token_as(&support, form).await;
    refused(&srv, &r, 400, "invalid_request").await;
    let mut form = without(
        exchange_form(&srv.alice(), TYPE_JWT, SCOPE, &[]),
        &["grant_type"],
    );
    form.push(("grant_type".into(), "password".into()));
    let r = srv.token_as(&support, form).await;
    refused(&srv, &r, 400, "unsupported_grant_type").await;

    // A missing or unknown subject token type.
    let form = without(
        exchange_form(&srv.alice(), TYPE_JWT, SCOPE, &[]),
        &["subject_token_type"],
    );
    let r = srv.token_as(&support, form).await;
    refused(&srv, &r, 400, "invalid_request").await;
    let r = srv
        .token_as(
            &support,
            exchange_form(
                &srv.alice(),
                "urn:ietf:params:oauth:token-type:saml2",
                SCOPE,
                &[],
            ),
        )
        .await;
    refused(&srv, &r, 400, "invalid_request").await;
    srv.shutdown().await;
}

#[tokio::test]
async fn an_oversized_body_is_413_invalid_request() {
    let srv = Server::start().await;
    let support = srv.agent("support-v2");
    let mut form = exchange_form(&srv.alice(), TYPE_JWT, SCOPE, &[]);
    form.extend(srv.client_auth(&support));
    form.push(("padding".into(), "x".repeat(70 * 1024)));
    let r = srv.token(&form).await;
    refused(&srv, &r, 413, "invalid_request").await;
    assert!(srv.healthy().await);
    srv.shutdown().await;
}

#[tokio::test]
async fn a_replay_racing_the_original_loses() {
    let srv = Server::start().await;
    let support = srv.agent("support-v2");
    let mut form = exchange_form(&srv.alice(), TYPE_JWT, SCOPE, &[]);
    form.extend(srv.client_auth(&support));
    let attempts = (0..8).map(|_| srv.token(&form));
    let replies = futures_join_all(attempts).await;
    let ok = replies.iter().filter(|r| r.status == 200).count();
    assert_eq!(ok, 1, "exactly one use of the assertion wins");
    for r in replies.iter().filter(|r| r.status != 200) {
        r.expect_oauth_error(401, "invalid_client");
    }
    srv.shutdown().await;
}

/// Runs the futures concurrently on this task and collects their outputs in order.
async fn futures_join_all<F: std::future::Future<Output = Reply>>(
    futs: impl Iterator<Item = F>,
) -> Vec<Reply> {
    let mut set = Vec::new();
    for f in futs {
        set.push(Box::pin(f));
    }
    let mut out: Vec<Option<Reply>> = (0..set.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in set.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(r) => out[i] = Some(r),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(Option::unwrap).collect()
}

#[tokio::test]
async fn a_used_client_assertion_stays_used_after_a_restart() {
    let mut srv = Server::start().await;
    let support = srv.agent("support-v2");
    let alice = srv.alice();
    let mut form = exchange_form(&alice, TYPE_JWT, SCOPE, &[]);
    form.extend(srv.client_auth(&support));
    srv.token(&form).await.access_token();
    srv.restart().await;
    let r = srv.token(&form).await;
    refused(&srv, &r, 401, "invalid_client").await;
    srv.shutdown().await;
}

#[tokio::test]
async fn oauth_errors_are_json_and_never_cached() {
    let srv = Server::start().await;
    let support = srv.agent("support-v2");
    let r = srv.exchange(&support, &srv.alice(), SCOPE).await;
    r.expect(200);
    assert_eq!(r.header("cache-control"), "no-store");
    assert!(r.header("content-type").starts_with("application/json"));
    let r = srv
        .exchange(&support, &srv.alice(), "billing.invoices:read")
        .await;
    r.expect_oauth_error(400, "invalid_scope");
    assert_eq!(r.header("cache-control"), "no-store");
    assert!(r.header("content-type").starts_with("application/json"));
    // 401 invalid_client says how to authenticate.
    let r = srv
        .token(&exchange_form(&srv.alice(), TYPE_JWT, SCOPE, &[]))
        .await;
    r.expect_oauth_error(401, "invalid_client");
    assert!(!r.header("www-authenticate").is_empty());
    // The caller's request id is echoed.
    assert_eq!(r.header("x-request-id"), r.request_id);
    // Descriptions never echo a token back.
    let alice = srv.alice();
    let r = srv
        .exchange(&support, &alice, "crm.customers:read billing.invoices:read")
        .await;
    assert!(!r.body.to_string().contains(&alice));
    srv.shutdown().await;
}

//! The admin API under `/v1`, the OpenAPI document, signing-key rotation and RFC 8414 metadata.

use mandate_server::admin::openapi::ROUTES;
use reqwest::Method;
use serde_json::{Value, json};

use super::harness::*;

fn route_path(path: &str) -> String {
    path.replace("{id}", "support-v2")
        .replace("{kid}", "support-v2-k1")
        .replace("{name}", "crm-api")
}

fn kids(jwks: &jsonwebtoken::jwk::JwkSet) -> Vec<String> {
    jwks.keys
        .iter()
        .filter_map(|k| k.common.key_id.clone())
        .collect()
}

#[tokio::test]
async fn no_admin_route_answers_without_a_valid_credential() {
    let srv = Server::start().await;
    let jwks_before = kids(&srv.jwks().await);
    let audit_before = srv.audit("limit=10000").await.len();
    let mut checked = 0;
    for route in ROUTES {
        let path = route_path(route.path);
        let method = Method::from_bytes(route.method.as_bytes()).unwrap();
        let body = match route.body {
            Some("NewAgent") => {
                json!({"id": "sneaky", "owner": "mallory", "ceiling": ["crm.customers:read"]})
            }
            Some("NewRevocation") => json!({"kind": "agent", "id": "support-v2"}),
            Some("CredentialRequest") => json!({"id": "sneaky", "role": "admin"}),
            Some("UserTokenRequest") => json!({"sub": "alice"}),
            Some("SecretRequest") => json!({"value": "sneaky-value"}),
            Some(_) => json!({}),
            None => Value::Null,
        };
        let creds: [Option<&str>; 4] = [
            None,
            Some("Bearer mnd_admin_not-a-real-credential"),
            Some("Bearer "),
            Some("Basic YWRtaW46YWRtaW4="),
        ];
        for auth in creds {
            let mut req = srv.http.request(method.clone(), srv.at(&path));
            if !body.is_null() {
                req = req.json(&body);
            }
            if let Some(a) = auth {
                req = req.header("authorization", a);
            }
            let r = srv.send(req).await;
            assert_eq!(
                r.status, 401,
                "{} {path} with {auth:?} answered {}: {}",
                route.method, r.status, r.body
            );
            assert_eq!(r.body["error"], "unauthorized");
            checked += 1;
        }
    }
    assert!(ROUTES.len() >= 18, "the route list is complete");
    assert_eq!(checked, 4 * ROUTES.len());
    let r = srv.send(srv.http.get(srv.at("/v1/openapi.json"))).await;
    assert_eq!(r.status, 401);

    // Nothing changed.
    let agent = srv.admin_get("/v1/agents/support-v2").await;
    agent.expect(200);
    assert_eq!(agent.body["status"], "active");
    assert!(
        agent.body["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["kid"] == "support-v2-k1")
    );
    srv.admin_get("/v1/agents/sneaky").await.expect(404);
    assert_eq!(kids(&srv.jwks().await), jwks_before);
    assert_eq!(srv.audit("limit=10000").await.len(), audit_before);
    let revs = srv.admin_get("/v1/revocations").await;
    assert_eq!(revs.body["revocations"], json!([]));
    srv.shutdown().await;
}

#[tokio::test]
async fn an_auditor_can_read_but_not_change() {
    let srv = Server::start().await;
    let r = srv
        .admin_post("/v1/credentials", &json!({"id": "aud1", "role": "auditor"}))
        .await;
    r.expect(201);
    assert_eq!(r.body["role"], "auditor");
    let secret = r.body["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("mnd_admin_"));
    let as_auditor =
        |method: Method, path: &str| srv.http.request(method, srv.at(path)).bearer_auth(&secret);
    for path in [
        "/v1/audit",
        "/v1/audit/verify",
        "/v1/agents",
        "/v1/agents/support-v2",
        "/v1/keys",
        "/v1/revocations",
        "/v1/openapi.json",
    ] {
        let r = srv.send(as_auditor(Method::GET, path)).await;
        assert_eq!(r.status, 200, "GET {path}: {}", r.body);
    }
    let new_agent =
        json!({"id": "by-auditor", "owner": "x@example.com", "ceiling": ["tickets:read"]});
    let writes = [
        (Method::POST, "/v1/agents", new_agent),
        (Method::POST, "/v1/agents/support-v2/suspend", json!({})),
        (Method::POST, "/v1/agents/support-v2/retire", json!({})),
        (
            Method::PATCH,
            "/v1/agents/support-v2",
            json!({"owner": "mallory"}),
        ),
        (
            Method::POST,
            "/v1/revocations",
            json!({"kind": "user", "id": ALICE}),
        ),
        (Method::POST, "/v1/keys/rotate", json!({})),
        (
            Method::POST,
            "/v1/credentials",
            json!({"id": "escalate", "role": "admin"}),
        ),
        (Method::POST, "/v1/dev/user-token", json!({"sub": ALICE})),
        (
            Method::PUT,
            "/v1/secrets/crm-api",
            json!({"value": "by-auditor"}),
        ),
        (Method::DELETE, "/v1/secrets/crm-api", json!({})),
    ];
    for (method, path, body) in writes {
        let r = srv.send(as_auditor(method.clone(), path).json(&body)).await;
        assert_eq!(r.status, 403, "{method} {path}: {}", r.body);
        assert_eq!(r.body["error"], "forbidden");
    }
    srv.admin_get("/v1/agents/by-auditor").await.expect(404);
    let agent = srv.admin_get("/v1/agents/support-v2").await;
    assert_eq!(agent.body["status"], "active");
    assert_eq!(agent.body["owner"], "carol@example.com");
    assert_eq!(
        srv.admin_get("/v1/revocations").await.body["revocations"],
        json!([])
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn registering_an_agent_validates_everything_and_changes_nothing_on_error() {
    let srv = Server::start().await;
    let key = TestKey::ed25519("new-k1");
    let good = json!({
        "id": "new-agent", "owner": "erin@example.com", "ceiling": ["crm.customers:read"],
        "max_stage": "observe", "keys": [key.public_jwk()],
    });
    let with = |k: &str, v: Value| {
        let mut b = good.clone();
        if v.is_null() {
            b.as_object_mut().unwrap().remove(k);
        } else {
            b[k] = v;
        }
        b
    };
    let mut private = key.public_jwk();
    private["d"] = json!("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A");
    let cases: Vec<(&str, Value, u16, Option<&str>)> = vec![
        ("no owner", with("owner", Value::Null), 400, Some("owner")),
        (
            "empty owner",
            with("owner", json!("  ")),
            400,
            Some("owner"),
        ),
        (
            "bad ceiling scope",
            with("ceiling", json!(["crm.customers:read", "Not A Scope"])),
            400,
            Some("Not A Scope"),
        ),
        (
            "ceiling scope without action",
            with("ceiling", json!(["crm.customers"])),
            400,
            Some("crm.customers"),
        ),
        ("bad id", with("id", json!("Bad Id!")), 400, None),
        ("bad stage", with("max_stage", json!("god")), 400, None),
        (
            "private key",
            with("keys", json!([private])),
            400,
            Some("private"),
        ),
        (
            "symmetric key",
            with(
                "keys",
                json!([{"kty": "oct", "k": "c2VjcmV0", "kid": "oct-1"}]),
            ),
            400,
            None,
        ),
        (
            "key without kid",
            with(
                "keys",
                json!([{"kty": "OKP", "crv": "Ed25519", "x": key.public_jwk()["x"]}]),
            ),
            400,
            Some("kid"),
        ),
        ("unknown field", with("superpowers", json!(true)), 400, None),
    ];
    for (what, body, status, mention) in cases {
        let r = srv.admin_post("/v1/agents", &body).await;
        assert_eq!(r.status, status, "{what}: {}", r.body);
        assert_eq!(r.body["error"], "bad_request", "{what}");
        if let Some(m) = mention {
            assert!(r.description().contains(m), "{what}: {}", r.body);
        }
        srv.admin_get("/v1/agents/new-agent").await.expect(404);
    }
    // A duplicate id is a conflict, and leaves the existing agent alone.
    let r = srv
        .admin_post("/v1/agents", &with("id", json!("support-v2")))
        .await;
    r.expect(409);
    assert_eq!(
        srv.admin_get("/v1/agents/support-v2").await.body["owner"],
        "carol@example.com"
    );
    let listed = srv.admin_get("/v1/agents").await;
    assert_eq!(listed.body["agents"].as_array().unwrap().len(), 2);

    // The good one is created, audited, and its key works.
    let r = srv.admin_post("/v1/agents", &good).await;
    r.expect(201);
    assert_eq!(r.body["id"], "new-agent");
    assert_eq!(r.body["owner"], "erin@example.com");
    let agent = Agent {
        id: "new-agent".into(),
        key,
    };
    let t = srv
        .exchange(&agent, &srv.alice(), "crm.customers:read")
        .await
        .access_token();
    let v = srv.verify(&t, CRM).await.unwrap();
    assert_eq!(v.claims["act"]["sub"], "agent:new-agent");
    let events = srv.audit("kind=agent.register&agent=new-agent").await;
    assert_eq!(events.len(), 1, "{events:?}");
    srv.shutdown().await;
}

#[tokio::test]
async fn agents_with_p256_and_rsa_keys_authenticate_and_the_credential_is_recorded() {
    let srv = Server::start().await;
    let ec = TestKey::p256("ec-k1");
    let rsa = TestKey::rsa("rsa-k1");
    srv.register_agent("multi-key", &["crm.*:read"], "observe", &[&ec, &rsa])
        .await;
    for key in [ec, rsa] {
        let kid = key.kid.clone();
        let agent = Agent {
            id: "multi-key".into(),
            key,
        };
        let r = srv
            .exchange(&agent, &srv.alice(), "crm.customers:read")
            .await;
        let v = srv.verify(&r.access_token(), CRM).await.unwrap();
        assert_eq!(v.claims["act"]["sub"], "agent:multi-key");
        let jti = v.claims["jti"].as_str().unwrap();
        let events = srv.audit("agent=multi-key&decision=allow").await;
        let e = events
            .iter()
            .find(|e| e["jti"] == jti)
            .expect("allow event");
        assert_eq!(e["credential"], format!("kid:{kid}"));
        // The key does not sign for another algorithm.
        let header = json!({"alg": "EdDSA", "kid": kid, "typ": "JWT"});
        let now = srv.now();
        let forged = agent.key.sign_with_header(
            &header,
            &json!({"iss": "multi-key", "sub": "multi-key", "aud": srv.url,
                    "iat": now, "exp": now + 60, "jti": unique("j")}),
        );
        let mut form = exchange_form(&srv.alice(), TYPE_JWT, "crm.customers:read", &[]);
        form.push(("client_assertion_type".into(), JWT_BEARER.into()));
        form.push(("client_assertion".into(), forged));
        srv.token(&form)
            .await
            .expect_oauth_error(401, "invalid_client");
    }
    srv.shutdown().await;
}

#[tokio::test]
async fn key_rotation_keeps_old_tokens_verifiable_and_signs_new_ones_with_the_new_key() {
    let mut srv = Server::start().await;
    let support = srv.agent("support-v2");
    let old_token = srv
        .exchange(&support, &srv.alice(), "crm.customers:read")
        .await
        .access_token();
    let old_kid = jsonwebtoken::decode_header(&old_token)
        .unwrap()
        .kid
        .unwrap();
    assert_eq!(kids(&srv.jwks().await), vec![old_kid.clone()]);

    let r = srv.admin_post("/v1/keys/rotate", &json!({})).await;
    r.expect(200);
    assert_eq!(r.body["previous"], old_kid.as_str());
    let new_kid = r.body["current"].as_str().unwrap().to_owned();
    assert_ne!(new_kid, old_kid);
    let published = kids(&srv.jwks().await);
    assert!(
        published.contains(&old_kid) && published.contains(&new_kid),
        "{published:?}"
    );

    let new_token = srv
        .exchange(&support, &srv.alice(), "crm.customers:read")
        .await
        .access_token();
    let new = srv
        .verify(&new_token, CRM)
        .await
        .expect("new token verifies");
    assert_eq!(new.header.kid.as_deref(), Some(new_kid.as_str()));
    let old = srv
        .verify(&old_token, CRM)
        .await
        .expect("old token still verifies");
    assert_eq!(old.header.kid.as_deref(), Some(old_kid.as_str()));
    assert!(srv.active(&old_token).await);

    // A hop from the old token is signed with the new key.
    let analytics = srv.agent("analytics-v1");
    let hop = srv
        .hop(&analytics, &old_token, "crm.customers:read")
        .await
        .access_token();
    assert_eq!(
        srv.verify(&hop, CRM).await.unwrap().header.kid.as_deref(),
        Some(new_kid.as_str())
    );

    // The same after a restart.
    srv.restart().await;
    let published = kids(&srv.jwks().await);
    assert!(
        published.contains(&old_kid) && published.contains(&new_kid),
        "{published:?}"
    );
    srv.verify(&old_token, CRM).await.unwrap();
    let keys = srv.admin_get("/v1/keys").await;
    keys.expect(200);
    let current: Vec<&Value> = keys.body["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["current"] == true)
        .collect();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0]["kid"], new_kid.as_str());
    srv.shutdown().await;
}

#[tokio::test]
async fn the_openapi_document_describes_every_admin_route() {
    let srv = Server::start().await;
    let r = srv.admin_get("/v1/openapi.json").await;
    r.expect(200);
    let doc = &r.body;
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with('3')),
        "{doc}"
    );
    assert!(doc["info"]["title"].is_string());
    for route in ROUTES {
        let op = &doc["paths"][route.path][route.method.to_ascii_lowercase()];
        assert!(
            op.is_object(),
            "{} {} is missing from the document",
            route.method,
            route.path
        );
        assert!(op["responses"]["401"].is_object());
    }
    for schema in ["NewAgent", "NewRevocation"] {
        assert!(doc["components"]["schemas"][schema].is_object(), "{schema}");
    }
    srv.shutdown().await;
}

#[tokio::test]
async fn authorization_server_metadata_is_complete_and_consistent() {
    let srv = Server::start().await;
    let r = srv
        .send(
            srv.http
                .get(srv.at("/.well-known/oauth-authorization-server")),
        )
        .await;
    r.expect(200);
    let m = &r.body;
    assert_eq!(m["issuer"], srv.url.as_str());
    assert_eq!(m["token_endpoint"], srv.at("/oauth2/token"));
    assert_eq!(m["jwks_uri"], srv.at("/.well-known/jwks.json"));
    assert_eq!(m["introspection_endpoint"], srv.at("/oauth2/introspect"));
    assert_eq!(m["revocation_endpoint"], srv.at("/oauth2/revoke"));
    let grants: Vec<&str> = m["grant_types_supported"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g.as_str().unwrap())
        .collect();
    assert!(grants.contains(&TOKEN_EXCHANGE) && grants.contains(&"client_credentials"));
    let auth: Vec<&str> = m["token_endpoint_auth_methods_supported"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g.as_str().unwrap())
        .collect();
    assert!(auth.contains(&"private_key_jwt"), "{auth:?}");
    assert!(!auth.contains(&"client_secret_basic") && !auth.contains(&"none"));
    assert!(m["dpop_signing_alg_values_supported"].is_array());

    // The advertised JWKS is the one tokens verify against, and holds no private material.
    let jwks = srv
        .send(srv.http.get(m["jwks_uri"].as_str().unwrap()))
        .await;
    jwks.expect(200);
    let keys = jwks.body["keys"].as_array().unwrap();
    assert!(!keys.is_empty());
    for k in keys {
        assert!(k.get("d").is_none(), "private key material published: {k}");
        assert!(k["kid"].is_string());
    }
    srv.shutdown().await;
}

#[tokio::test]
async fn agent_keys_can_be_added_and_removed() {
    let srv = Server::start().await;
    let old = srv.agent("support-v2");
    let new_key = TestKey::p256("support-v2-k2");
    let r = srv
        .admin_post(
            "/v1/agents/support-v2/keys",
            &json!({"jwk": new_key.public_jwk()}),
        )
        .await;
    r.expect(201);
    // The same kid twice is a conflict; an already-expired key is refused.
    srv.admin_post(
        "/v1/agents/support-v2/keys",
        &json!({"jwk": new_key.public_jwk()}),
    )
    .await
    .expect(409);
    let stale = TestKey::ed25519("stale-k1");
    srv.admin_post(
        "/v1/agents/support-v2/keys",
        &json!({"jwk": stale.public_jwk(), "expires_at": srv.now() - 10}),
    )
    .await
    .expect(400);
    let new = Agent {
        id: "support-v2".into(),
        key: new_key,
    };
    srv.exchange(&new, &srv.alice(), "crm.customers:read")
        .await
        .access_token();

    // Removing the old key: it no longer authenticates, the new one still does.
    let r = srv
        .send(srv.admin_req(Method::DELETE, "/v1/agents/support-v2/keys/support-v2-k1"))
        .await;
    r.expect(204);
    srv.exchange(&old, &srv.alice(), "crm.customers:read")
        .await
        .expect_oauth_error(401, "invalid_client");
    srv.exchange(&new, &srv.alice(), "crm.customers:read")
        .await
        .access_token();
    srv.send(srv.admin_req(Method::DELETE, "/v1/agents/support-v2/keys/support-v2-k1"))
        .await
        .expect(404);

    // A key that expires soon stops working when it expires.
    let brief = TestKey::ed25519("brief-k1");
    srv.admin_post(
        "/v1/agents/support-v2/keys",
        &json!({"jwk": brief.public_jwk(), "expires_at": srv.now() + 60}),
    )
    .await
    .expect(201);
    let brief = Agent {
        id: "support-v2".into(),
        key: brief,
    };
    srv.exchange(&brief, &srv.alice(), "crm.customers:read")
        .await
        .expect(200);
    srv.clock.advance(120);
    srv.exchange(&brief, &srv.alice(), "crm.customers:read")
        .await
        .expect_oauth_error(401, "invalid_client");
    srv.shutdown().await;
}

#[tokio::test]
async fn agents_can_be_updated_and_a_narrower_ceiling_applies_at_once() {
    let srv = Server::start().await;
    let support = srv.agent("support-v2");
    let r = srv
        .send(
            srv.admin_req(Method::PATCH, "/v1/agents/support-v2")
                .json(&json!({"ceiling": ["crm.customers:read"], "description": "narrower"})),
        )
        .await;
    r.expect(200);
    assert_eq!(r.body["description"], "narrower");
    let r = srv.exchange(&support, &srv.alice(), "tickets:read").await;
    r.expect_oauth_error(400, "invalid_scope");
    assert!(r.description().contains("ceiling"), "{}", r.body);
    let events = srv.audit("kind=agent.update&agent=support-v2").await;
    assert_eq!(events.len(), 1);
    srv.shutdown().await;
}

#[tokio::test]
async fn the_test_idp_exists_only_in_dev_mode() {
    let srv = Server::start_production().await;
    let r = srv
        .admin_post("/v1/dev/user-token", &json!({"sub": ALICE}))
        .await;
    r.expect(403);
    let r = srv.send(srv.http.get(srv.at("/dev-idp/jwks.json"))).await;
    r.expect(404);
    let agents = srv.admin_get("/v1/agents").await;
    assert_eq!(
        agents.body["agents"],
        json!([]),
        "no demo agents outside --dev"
    );
    assert!(!srv.data_dir().join("admin.token").exists());
    srv.shutdown().await;
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    // RFC 7235 §2.1: the authentication scheme is matched case-insensitively.
    let srv = Server::start().await;
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let req = srv
            .http
            .get(srv.at("/v1/agents"))
            .header("authorization", format!("{scheme} {}", srv.admin));
        let r = srv.send(req).await;
        assert_eq!(r.status, 200, "{scheme}: {}", r.body);
    }
    srv.shutdown().await;
}

//! `/v1/gateway/*` and the `gateway` credential role: what a standalone gateway process reads
//! (the policy bundle, secret values) and writes (its audit events, suspensions), and that no
//! other role reaches those routes.

use reqwest::Method;
use serde_json::{Value, json};

use super::harness::*;

/// Makes a credential with `role`; returns its secret.
async fn credential(srv: &Server, id: &str, role: &str) -> String {
    let r = srv
        .admin_post("/v1/credentials", &json!({"id": id, "role": role}))
        .await;
    r.expect(201);
    assert_eq!(r.body["role"], role);
    r.body["secret"].as_str().unwrap().to_owned()
}

/// A request with the credential `secret`.
fn with(srv: &Server, secret: &str, method: Method, path: &str) -> reqwest::RequestBuilder {
    srv.http.request(method, srv.at(path)).bearer_auth(secret)
}

/// A value distinctive enough that finding it anywhere means it leaked.
const VALUE: &str = "sk_live_gateway_Zq8rW3xYv9Kp2Lm7Tn4Hb6Jd";

async fn put_secret(srv: &Server, name: &str, value: &str) {
    let r = srv
        .send(
            srv.admin_req(Method::PUT, &format!("/v1/secrets/{name}"))
                .json(&json!({"value": value})),
        )
        .await;
    r.expect(201);
}

async fn bundle(srv: &Server, gw: &str) -> Reply {
    let r = srv
        .send(with(srv, gw, Method::GET, "/v1/gateway/bundle"))
        .await;
    r.expect(200);
    r
}

fn policy_text<'a>(bundle: &'a Value, file: &str) -> Option<&'a str> {
    bundle["policies"]
        .as_array()?
        .iter()
        .find(|p| p["file"] == file)
        .and_then(|p| p["text"].as_str())
}

#[tokio::test]
async fn only_a_gateway_credential_reaches_the_gateway_routes_and_it_reaches_little_else() {
    let srv = Server::start().await;
    let gw = credential(&srv, "gw1", "gateway").await;
    put_secret(&srv, "crm-api", VALUE).await;

    // What a gateway may do.
    bundle(&srv, &gw).await;
    let r = srv
        .send(with(&srv, &gw, Method::GET, "/v1/gateway/secrets/crm-api"))
        .await;
    r.expect(200);
    let r = srv
        .send(
            with(&srv, &gw, Method::POST, "/v1/gateway/events")
                .json(&json!({"events": [{"kind": "gateway.request"}]})),
        )
        .await;
    r.expect(201);
    let r = srv
        .send(
            with(&srv, &gw, Method::POST, "/v1/gateway/suspensions")
                .json(&json!({"agent": "analytics-v1", "reason": "breaker tripped"})),
        )
        .await;
    r.expect(200);
    // The revocation stream: 200 `text/event-stream` (the body never ends; read no further).
    let stream = srv
        .http
        .get(srv.at("/v1/revocations/events"))
        .bearer_auth(&gw)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert!(
        stream.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    drop(stream);
    // Introspection.
    let r = srv
        .send(with(&srv, &gw, Method::POST, "/oauth2/introspect").form(&[("token", "not-a-token")]))
        .await;
    r.expect(200);
    assert_eq!(r.body["active"], false);

    // Every other /v1 route is refused, naming the role.
    for (method, path, body) in [
        (Method::GET, "/v1/agents", Value::Null),
        (Method::GET, "/v1/agents/support-v2", Value::Null),
        (Method::GET, "/v1/audit", Value::Null),
        (Method::GET, "/v1/secrets", Value::Null),
        (Method::GET, "/v1/policies", Value::Null),
        (Method::GET, "/v1/openapi.json", Value::Null),
        (Method::POST, "/v1/agents/support-v2/suspend", json!({})),
        (
            Method::PUT,
            "/v1/secrets/crm-api",
            json!({"value": "by-gateway"}),
        ),
        (
            Method::POST,
            "/v1/credentials",
            json!({"id": "escalate", "role": "admin"}),
        ),
    ] {
        let mut req = with(&srv, &gw, method.clone(), path);
        if !body.is_null() {
            req = req.json(&body);
        }
        let r = srv.send(req).await;
        assert_eq!(r.status, 403, "{method} {path}: {}", r.body);
        assert_eq!(r.body["error"], "forbidden");
        assert!(r.description().contains("`gateway`"), "{}", r.body);
    }

    // The gateway routes refuse every other role: an admin must never read a secret's value.
    let auditor = credential(&srv, "aud1", "auditor").await;
    let verifier = credential(&srv, "ver1", "verifier").await;
    for secret in [srv.admin.as_str(), auditor.as_str(), verifier.as_str()] {
        for (method, path, body) in [
            (Method::GET, "/v1/gateway/bundle", Value::Null),
            (Method::GET, "/v1/gateway/secrets/crm-api", Value::Null),
            (Method::GET, "/v1/gateway/secrets/x", Value::Null),
            (
                Method::POST,
                "/v1/gateway/events",
                json!({"events": [{"kind": "gateway.request"}]}),
            ),
            (
                Method::POST,
                "/v1/gateway/suspensions",
                json!({"agent": "support-v2", "reason": "r"}),
            ),
        ] {
            let mut req = with(&srv, secret, method.clone(), path);
            if !body.is_null() {
                req = req.json(&body);
            }
            let r = srv.send(req).await;
            assert_eq!(r.status, 403, "{method} {path}: {}", r.body);
            assert!(
                r.description().contains("needs the `gateway` role"),
                "{}",
                r.body
            );
            assert!(!r.body.to_string().contains(VALUE));
        }
    }
    // No credential, or a wrong one.
    for path in ["/v1/gateway/bundle", "/v1/gateway/secrets/crm-api"] {
        let r = srv.send(srv.http.get(srv.at(path))).await;
        assert_eq!(r.status, 401, "{path}");
        let r = srv
            .send(with(&srv, "mnd_admin_not-a-real-one", Method::GET, path))
            .await;
        assert_eq!(r.status, 401, "{path}");
    }
    // Nothing the refused calls asked for happened.
    let agent = srv.admin_get("/v1/agents/support-v2").await;
    assert_eq!(agent.body["status"], "active");
    assert_eq!(srv.audit("kind=gateway.request").await.len(), 1);
    assert_eq!(srv.audit("kind=secret.reveal").await.len(), 1);
    srv.shutdown().await;
}

#[tokio::test]
async fn the_bundle_holds_the_policies_in_force_and_the_agents_and_follows_reloads() {
    let srv = Server::start().await;
    let gw = credential(&srv, "gw1", "gateway").await;
    let first = bundle(&srv, &gw).await;
    let b = &first.body;
    let version = b["version"].as_str().unwrap().to_owned();
    assert_eq!(version.len(), 64);
    assert!(version.bytes().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(first.header("etag"), format!("\"{version}\""));
    let demo = policy_text(b, "demo.cedar").expect("demo.cedar is in the bundle");
    assert!(demo.contains("support-group"));
    // The sources load as the gateway loads them.
    let files: Vec<(String, String)> = b["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["file"].as_str().unwrap().to_owned(),
                p["text"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let engine = mandate_policy::load_sources(&files, &std::collections::BTreeSet::new()).unwrap();
    assert!(engine.policy_count() > 0);
    // The agents, exactly as `GET /v1/agents/{id}` shows them.
    let agents = b["agents"].as_array().unwrap();
    for id in ["support-v2", "analytics-v1"] {
        let shown = srv.admin_get(&format!("/v1/agents/{id}")).await;
        assert!(agents.contains(&shown.body), "{id} missing or different");
    }

    // ETag round trip, quoted and not.
    for tag in [format!("\"{version}\""), version.clone()] {
        let r = srv
            .send(with(&srv, &gw, Method::GET, "/v1/gateway/bundle").header("if-none-match", &tag))
            .await;
        assert_eq!(r.status, 304, "{tag}");
        assert_eq!(r.body, Value::String(String::new()));
    }
    let r = srv
        .send(
            with(&srv, &gw, Method::GET, "/v1/gateway/bundle").header("if-none-match", "\"0000\""),
        )
        .await;
    r.expect(200);
    assert_eq!(r.body["version"], version.as_str());

    // A new policy file, reloaded: a new version holding it.
    srv.add_policy(
        "extra.cedar",
        "@id(\"extra\")\npermit(principal == Agent::\"support-v2\", action == Action::\"tickets:read\", resource);\n",
    )
    .await;
    let second = bundle(&srv, &gw).await;
    let v2 = second.body["version"].as_str().unwrap().to_owned();
    assert_ne!(v2, version);
    assert!(policy_text(&second.body, "extra.cedar").is_some());
    let r = srv
        .send(
            with(&srv, &gw, Method::GET, "/v1/gateway/bundle")
                .header("if-none-match", format!("\"{version}\"")),
        )
        .await;
    assert_eq!(r.status, 200);

    // A refused reload leaves the bundle as it was.
    let dir = srv.data_dir().join("policies");
    std::fs::write(
        dir.join("broken.cedar"),
        "permit(principal, action, resource) when { context.nope",
    )
    .unwrap();
    let r = srv.admin_post("/v1/policies/reload", &json!({})).await;
    assert_eq!(r.status, 400, "{}", r.body);
    let third = bundle(&srv, &gw).await;
    assert_eq!(third.body["version"], v2.as_str());
    assert!(policy_text(&third.body, "broken.cedar").is_none());
    assert_eq!(third.body["policies"], second.body["policies"]);

    // An agent change changes the version too.
    srv.admin_patch(
        "/v1/agents/analytics-v1",
        &json!({"description": "changed"}),
    )
    .await;
    let fourth = bundle(&srv, &gw).await;
    assert_ne!(fourth.body["version"], v2.as_str());
    srv.shutdown().await;
}

#[tokio::test]
async fn a_secret_value_is_revealed_to_the_gateway_and_audited_without_it() {
    let srv = Server::start().await;
    let gw = credential(&srv, "gw1", "gateway").await;
    put_secret(&srv, "crm-api", VALUE).await;
    let r = srv
        .send(with(&srv, &gw, Method::GET, "/v1/gateway/secrets/crm-api"))
        .await;
    r.expect(200);
    assert_eq!(r.body, json!({"name": "crm-api", "value": VALUE}));
    assert_eq!(r.header("cache-control"), "no-store");

    let r = srv
        .send(with(&srv, &gw, Method::GET, "/v1/gateway/secrets/no-such"))
        .await;
    assert_eq!(r.status, 404, "{}", r.body);
    assert!(r.description().contains("`no-such`"), "{}", r.body);
    let r = srv
        .send(with(
            &srv,
            &gw,
            Method::GET,
            "/v1/gateway/secrets/Bad%20Name",
        ))
        .await;
    assert_eq!(r.status, 400, "{}", r.body);

    let reveals = srv.audit("kind=secret.reveal").await;
    assert_eq!(reveals.len(), 1, "{reveals:?}");
    let e = &reveals[0];
    assert_eq!(e["action"], "secret.reveal");
    assert_eq!(e["resource"], "secret:crm-api");
    assert_eq!(e["decision"], "info");
    assert_eq!(e["reason"], "by gateway:gw1");
    let all = Value::Array(srv.audit("limit=10000").await).to_string();
    assert!(!all.contains(VALUE), "the value is in the audit log");
    srv.shutdown().await;
}

#[tokio::test]
async fn event_batches_land_whole_or_not_at_all() {
    let srv = Server::start().await;
    let gw = credential(&srv, "gw1", "gateway").await;
    let post =
        |body: Value| srv.send(with(&srv, &gw, Method::POST, "/v1/gateway/events").json(&body));
    let batch = json!({"events": [
        {"kind": "gateway.request", "chain": ["support-v2"], "action": "crm.customers:read",
         "resource": "https://crm.example/customers/1", "decision": "allow", "reason": "",
         "policy_ids": [], "request_id": "r1", "detail": "{\"status\":200}"},
        {"kind": "gateway.request", "decision": "deny", "reason": "scope missing"},
        {"kind": "gateway.breaker", "user": ALICE, "task": null, "detail": ""},
    ]});
    let r = post(batch).await;
    r.expect(201);
    assert_eq!(r.body, json!({"written": 3}));
    let mine: Vec<Value> = srv
        .audit("limit=10000")
        .await
        .into_iter()
        .filter(|e| e["kind"].as_str().unwrap_or("").starts_with("gateway."))
        .collect();
    assert_eq!(mine.len(), 3, "{mine:?}");
    let seqs: Vec<i64> = mine.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, [seqs[0], seqs[0] + 1, seqs[0] + 2]);
    assert_eq!(mine[0]["decision"], "allow");
    assert_eq!(mine[0]["chain"], json!(["support-v2"]));
    assert_eq!(mine[1]["reason"], "scope missing");
    assert_eq!(mine[2]["user"], ALICE);
    // Each event names the gateway that sent it, beside what the gateway wrote.
    let detail =
        |e: &Value| -> Value { serde_json::from_str(e["detail"].as_str().unwrap()).unwrap() };
    assert_eq!(
        detail(&mine[0]),
        json!({"status": 200, "gateway": "gateway:gw1"})
    );
    assert_eq!(detail(&mine[1]), json!({"gateway": "gateway:gw1"}));
    let verify = srv.admin_get("/v1/audit/verify").await;
    verify.expect(200);
    assert_eq!(verify.body["ok"], true, "{}", verify.body);

    // Refused whole: nothing written.
    let before = srv.audit("limit=10000").await.len();
    let refusals = [
        (
            json!({"events": [{"kind": "gateway.request"}, {"kind": "token.exchange"}]}),
            "event 1",
        ),
        (json!({"events": [{"kind": "gateway."}]}), "event 0"),
        (json!({"events": [{"kind": ""}]}), "event 0"),
        (
            json!({"events": [{"kind": "gateway.request", "detail": "[1,2]"}]}),
            "`detail`",
        ),
        (
            json!({"events": [{"kind": "gateway.request", "detail": "not json"}]}),
            "`detail`",
        ),
        (json!({"events": []}), "`events`"),
        (
            json!({"events": vec![json!({"kind": "gateway.x"}); 201]}),
            "`events`",
        ),
        (
            json!({"events": [{"kind": "gateway.request", "seq": 1}]}),
            "seq",
        ),
        (
            json!({"events": [{"kind": "gateway.request", "decision": "maybe"}]}),
            "",
        ),
        (json!({"events": "all of them"}), ""),
        (json!({}), "events"),
        (json!([1, 2, 3]), ""),
    ];
    for (body, says) in refusals {
        let r = post(body.clone()).await;
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert_eq!(r.body["error"], "bad_request");
        assert!(r.description().contains(says), "{body}: {}", r.body);
    }
    let r = srv
        .send(
            with(&srv, &gw, Method::POST, "/v1/gateway/events")
                .header("content-type", "application/json")
                .body("{\"events\": [{\"kind\": \"gateway.request\""),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(srv.audit("limit=10000").await.len(), before);
    srv.shutdown().await;
}

#[tokio::test]
async fn a_gateway_suspends_an_agent_and_its_tokens_stop_working() {
    let srv = Server::start().await;
    let gw = credential(&srv, "gw1", "gateway").await;
    let support = srv.agent("support-v2");
    let token = srv
        .exchange(&support, &srv.alice(), "crm.customers:read")
        .await
        .access_token();
    assert!(srv.active(&token).await);
    let suspend = |body: Value| {
        srv.send(with(&srv, &gw, Method::POST, "/v1/gateway/suspensions").json(&body))
    };
    let r = suspend(json!({"agent": "support-v2", "reason": "breaker `mail-flood` tripped"})).await;
    r.expect(200);
    assert_eq!(r.body["id"], "support-v2");
    assert_eq!(r.body["status"], "suspended");
    assert_eq!(srv.admin_get("/v1/agents/support-v2").await.body, r.body);
    assert!(!srv.active(&token).await);
    let events = srv.audit("action=agent.suspend").await;
    assert_eq!(events.len(), 1, "{events:?}");
    let reason = events[0]["reason"].as_str().unwrap();
    assert!(reason.contains("gateway:gw1"), "{reason}");
    assert!(reason.contains("mail-flood"), "{reason}");

    let r = suspend(json!({"agent": "no-such-agent", "reason": "x"})).await;
    assert_eq!(r.status, 404, "{}", r.body);
    assert!(r.description().contains("`no-such-agent`"), "{}", r.body);

    let before = srv.audit("limit=10000").await.len();
    for body in [
        json!({"agent": "analytics-v1"}),
        json!({"agent": "analytics-v1", "reason": ""}),
        json!({"agent": "analytics-v1", "reason": "   "}),
        json!({"agent": "analytics-v1", "reason": "x".repeat(501)}),
        json!({"agent": "analytics-v1", "reason": "line\nbreak"}),
        json!({"agent": "", "reason": "x"}),
        json!({"agent": "analytics-v1", "reason": "x", "extra": 1}),
        json!({"agent": 5, "reason": "x"}),
    ] {
        let r = suspend(body.clone()).await;
        assert_eq!(r.status, 400, "{body}: {}", r.body);
    }
    assert_eq!(
        srv.admin_get("/v1/agents/analytics-v1").await.body["status"],
        "active"
    );
    assert_eq!(srv.audit("limit=10000").await.len(), before);
    srv.shutdown().await;
}

#[tokio::test]
async fn garbage_on_the_gateway_routes_never_gets_a_5xx() {
    let srv = Server::start().await;
    let gw = credential(&srv, "gw1", "gateway").await;
    let bodies: [&[u8]; 6] = [
        b"",
        b"null",
        b"\xff\xfe\x00",
        b"{\"events\": [{\"kind\": 5}]}",
        b"{\"agent\": {\"a\": []}, \"reason\": [\"x\"]}",
        b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
    ];
    for path in ["/v1/gateway/events", "/v1/gateway/suspensions"] {
        for body in bodies {
            let r = srv
                .send(
                    with(&srv, &gw, Method::POST, path)
                        .header("content-type", "application/json")
                        .body(body.to_vec()),
                )
                .await;
            assert!(r.status < 500, "{path} answered {}: {}", r.status, r.body);
        }
        // Over the body limit: refused, not a 5xx.
        let big = format!(
            "{{\"events\": [{{\"kind\": \"gateway.x\", \"reason\": \"{}\"}}]}}",
            "x".repeat(70_000)
        );
        let r = srv
            .send(
                with(&srv, &gw, Method::POST, path)
                    .header("content-type", "application/json")
                    .body(big),
            )
            .await;
        assert!((400..500).contains(&r.status), "{path}: {}", r.status);
    }
    for path in [
        "/v1/gateway/secrets/%00%ff",
        "/v1/gateway/secrets/..",
        "/v1/gateway/bundle?x=1",
    ] {
        let r = srv.send(with(&srv, &gw, Method::GET, path)).await;
        assert!(r.status < 500, "{path} answered {}: {}", r.status, r.body);
    }
    let r = srv
        .send(
            with(&srv, &gw, Method::GET, "/v1/gateway/bundle")
                .header("if-none-match", "W/\"\", *garbage*, \"\"\""),
        )
        .await;
    r.expect(200);
    assert!(srv.healthy().await);
    srv.shutdown().await;
}

#[tokio::test]
async fn the_openapi_document_describes_the_gateway_routes() {
    let srv = Server::start().await;
    let r = srv.admin_get("/v1/openapi.json").await;
    r.expect(200);
    let doc = &r.body;
    for (method, path) in [
        ("get", "/v1/gateway/bundle"),
        ("get", "/v1/gateway/secrets/{name}"),
        ("post", "/v1/gateway/events"),
        ("post", "/v1/gateway/suspensions"),
    ] {
        assert!(doc["paths"][path][method].is_object(), "{method} {path}");
    }
    for schema in ["GatewayEvents", "GatewayEvent", "SuspensionRequest"] {
        assert!(doc["components"]["schemas"][schema].is_object(), "{schema}");
    }
    srv.shutdown().await;
}

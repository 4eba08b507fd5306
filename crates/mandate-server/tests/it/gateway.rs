//! The gateway (SPEC §6) in front of real upstreams: the sample CRM of `--dev` and an rmcp MCP
//! server, with tokens exchanged at the real server and checked the way any client would.

use std::net::SocketAddr;

use jsonwebtoken::{DecodingKey, Validation};
use serde_json::{Value, json};

use super::harness::*;
use super::mcp_support::{self, Credential, RmcpUpstream};

/// A `--dev` server whose gateway runs on an ephemeral port in front of the sample CRM.
async fn start() -> Server {
    start_with(|_| {}).await
}

async fn start_with(tune: impl FnOnce(&mut mandate_server::Config)) -> Server {
    Server::start_configured(|c| {
        c.gateway.listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        tune(c);
    })
    .await
}

/// An upstream at `url` whose key is the secret `secret`, sent as `x-api-key`.
fn keyed_upstream(
    name: &str,
    url: String,
    secret: &str,
) -> mandate_gateway::config::UpstreamConfig {
    mandate_gateway::config::UpstreamConfig {
        name: name.into(),
        url,
        secret: Some(secret.into()),
        credential: Some(mandate_gateway::forward::Injection::Header {
            name: "x-api-key".into(),
            format: None,
        }),
        timeout_secs: None,
        audience: None,
    }
}

/// A route to the only upstream.
fn route(
    method: &str,
    path: &str,
    action: &str,
    resource: &str,
) -> mandate_gateway::route::RouteConfig {
    mandate_gateway::route::RouteConfig {
        method: method.into(),
        path: path.into(),
        action: action.into(),
        resource: resource.into(),
        stage: None,
        upstream: None,
        audience: None,
    }
}

pub(super) fn gw(s: &Server) -> String {
    s.running()
        .gateway
        .as_ref()
        .expect("the gateway runs")
        .url
        .clone()
}

pub(super) fn sample(s: &Server) -> &mandate_server::sample::Sample {
    s.running()
        .sample
        .as_ref()
        .expect("the sample CRM runs")
        .sample()
}

/// A token for the gateway: `user` (with `claims`) through `support-v2`, holding `scope`.
async fn token_for(s: &Server, user_token: &str, scope: &str, extra: &[(&str, &str)]) -> String {
    let agent = s.agent("support-v2");
    let mut form = exchange_form(user_token, TYPE_JWT, scope, extra);
    form.retain(|(k, _)| k != "resource");
    form.push(("resource".into(), gw(s)));
    let r = s.token_as(&agent, form).await;
    r.expect(200);
    r.access_token()
}

fn alice_in(s: &Server, region: &str) -> String {
    s.user_token_with(ALICE, &["support"], 3600, json!({"region": region}))
}

async fn get(s: &Server, path: &str, token: Option<&str>) -> Reply {
    let mut req = reqwest::Client::new().get(format!("{}{path}", gw(s)));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    s.send(req).await
}

/// The gateway's audit events (`gateway.request`), newest last.
async fn gateway_events(s: &Server) -> Vec<Value> {
    // Gateway events are written beside the answer, not before it: wait for them to land.
    for _ in 0..100 {
        let events = s.audit("limit=10000").await;
        let gw: Vec<Value> = events
            .into_iter()
            .filter(|e| e["kind"] == "gateway.request")
            .collect();
        if !gw.is_empty() {
            return gw;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    Vec::new()
}

async fn event_where(s: &Server, pred: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..100 {
        if let Some(e) = gateway_events(s).await.into_iter().rev().find(|e| pred(e)) {
            return e;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("no such gateway audit event");
}

fn detail(e: &Value) -> Value {
    serde_json::from_str(e["detail"].as_str().unwrap_or("{}")).unwrap_or(Value::Null)
}

#[tokio::test]
async fn the_upstream_gets_its_secret_and_a_transaction_token_never_the_agents_token() {
    let s = start().await;
    let token = token_for(&s, &alice_in(&s, "emea"), "crm.customers:read", &[]).await;
    let r = get(&s, "/customers/9821", Some(&token)).await;
    r.expect(200);
    assert_eq!(r.body["name"], "Acme Corp", "{}", r.body);
    // The sample verified the Transaction Token and says for whom it served.
    assert_eq!(r.body["served_for"]["user"], ALICE, "{}", r.body);
    assert_eq!(r.body["served_for"]["agents"], json!(["support-v2"]));

    let seen = sample(&s).seen();
    let last = seen.last().expect("the upstream saw the request");
    assert_eq!(last.path, "/customers/9821");
    assert!(last.api_key_ok, "the real API key was injected");
    for (name, value) in &last.headers {
        assert!(
            !value.contains(&token),
            "header `{name}` carries the agent's token"
        );
    }
    assert!(last.header("authorization").is_none());
    // The Transaction Token verifies with Mandate's JWKS, as any upstream would check it.
    let txn = last
        .header("txn-token")
        .expect("a transaction token")
        .to_owned();
    let header = jsonwebtoken::decode_header(&txn).unwrap();
    assert_eq!(header.typ.as_deref(), Some("txntoken+jwt"));
    let jwks = s.jwks().await;
    let key = DecodingKey::from_jwk(jwks.find(header.kid.as_deref().unwrap()).unwrap()).unwrap();
    let mut v = Validation::new(jsonwebtoken::Algorithm::EdDSA);
    v.set_audience(&[gw(&s)]);
    v.set_issuer(&[&s.url]);
    v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    let claims = jsonwebtoken::decode::<Value>(&txn, &key, &v)
        .unwrap()
        .claims;
    assert_eq!(claims["sub"], ALICE);
    assert_eq!(claims["tctx"]["action"], "crm.customers:read");
    assert_eq!(claims["tctx"]["resource"], "customers/9821");
    assert_eq!(claims["tctx"]["agents"], json!(["support-v2"]));

    // One audit line: user via agent, action, resource, allow, with the upstream's status.
    let e = event_where(&s, |e| e["resource"] == "customers/9821").await;
    assert_eq!(e["user"], ALICE);
    assert_eq!(e["chain"], json!(["support-v2"]));
    assert_eq!(e["action"], "crm.customers:read");
    assert_eq!(e["decision"], "allow");
    let d = detail(&e);
    assert_eq!(d["upstream_status"], 200);
    assert_eq!(d["txn"], claims["txn"]);
    // No secret and no token in the audit log.
    let all = serde_json::to_string(&s.audit("limit=10000").await).unwrap();
    assert!(!all.contains(&token));
    s.shutdown().await;
}

#[tokio::test]
async fn a_record_level_rule_allows_one_customer_and_refuses_another() {
    // The demo world's `customers-of-own-region` forbids reading a customer of another region.
    let s = start().await;
    let token = token_for(&s, &alice_in(&s, "emea"), "crm.customers:read", &[]).await;
    get(&s, "/regions/emea/customers/9821", Some(&token))
        .await
        .expect(200);
    let r = get(&s, "/regions/amer/customers/4410", Some(&token)).await;
    r.expect(403);
    assert_eq!(r.body["error"], "access_denied");
    assert!(
        r.body["error_description"]
            .as_str()
            .unwrap()
            .contains("customers-of-own-region"),
        "{}",
        r.body
    );
    let e = event_where(&s, |e| e["decision"] == "deny").await;
    assert_eq!(e["resource"], "customers/4410");
    // Nothing reached the upstream for the refused request.
    assert!(sample(&s).seen().iter().all(|x| !x.path.contains("4410")));
    // Without the rule, the same request is allowed: the refusal was the record-level rule's.
    let demo = s.data_dir().join("policies").join("demo.cedar");
    let text = std::fs::read_to_string(&demo).unwrap();
    let start_at = text.find("@id(\"customers-of-own-region\")").unwrap();
    let end_at = start_at + text[start_at..].find("};").unwrap() + 2;
    std::fs::write(&demo, format!("{}{}", &text[..start_at], &text[end_at..])).unwrap();
    s.admin_post("/v1/policies/reload", &json!({}))
        .await
        .expect(200);
    get(&s, "/regions/amer/customers/4410", Some(&token))
        .await
        .expect(200);
    assert_eq!(e["policy_ids"], json!(["customers-of-own-region"]));
    assert_eq!(detail(&e)["status"], 403);
    s.shutdown().await;
}

#[tokio::test]
async fn refusals_are_clear_and_point_to_the_metadata() {
    let s = start().await;
    let base = gw(&s);
    // No token: 401 with a challenge naming the protected-resource metadata.
    let r = get(&s, "/customers/9821", None).await;
    r.expect(401);
    let challenge = r.header("www-authenticate").to_owned();
    let meta_url = format!("{base}/.well-known/oauth-protected-resource");
    assert_eq!(
        challenge,
        format!("Bearer resource_metadata=\"{meta_url}\"")
    );
    let meta = s.send(reqwest::Client::new().get(&meta_url)).await;
    meta.expect(200);
    assert_eq!(meta.body["resource"], base);
    assert_eq!(meta.body["authorization_servers"], json!([s.url]));

    // A token for another audience, and a garbage one: invalid_token.
    let elsewhere = s
        .exchange(&s.agent("support-v2"), &s.alice(), "crm.customers:read")
        .await;
    let r = get(&s, "/customers/9821", Some(&elsewhere.access_token())).await;
    r.expect(401);
    assert!(
        r.header("www-authenticate")
            .contains("error=\"invalid_token\"")
    );
    get(&s, "/customers/9821", Some("not-a-token"))
        .await
        .expect(401);

    // The right audience but not the scope: 403 insufficient_scope naming the scope.
    let token = token_for(&s, &s.alice(), "tickets:read", &[]).await;
    let r = get(&s, "/customers/9821", Some(&token)).await;
    r.expect(403);
    assert_eq!(r.body["error"], "insufficient_scope");
    assert_eq!(r.body["scope"], "crm.customers:read");
    assert!(
        r.header("www-authenticate")
            .contains("scope=\"crm.customers:read\"")
    );

    // No route; a routed path with another method.
    let r = get(&s, "/nowhere", Some(&token)).await;
    r.expect(404);
    let r = s
        .send(
            reqwest::Client::new()
                .delete(format!("{base}/tickets/1"))
                .bearer_auth(&token),
        )
        .await;
    r.expect(405);
    assert_eq!(r.header("allow"), "GET");

    // A write at the draft stage is not sent: it is held for approval (tests/it/held_writes.rs).
    let writer = token_for(&s, &s.alice(), "tickets:create", &[("stage", "draft")]).await;
    let r = s
        .send(
            reqwest::Client::new()
                .post(format!("{base}/tickets"))
                .bearer_auth(&writer)
                .json(&json!({"customer": "9821", "subject": "x"})),
        )
        .await;
    r.expect(202);
    assert_eq!(r.body["status"], "pending");
    assert!(sample(&s).tickets().iter().all(|t| t.subject != "x"));
    s.shutdown().await;
}

#[tokio::test]
async fn revoking_the_user_stops_the_next_request() {
    let s = start().await;
    let token = token_for(&s, &alice_in(&s, "emea"), "crm.customers:read", &[]).await;
    get(&s, "/customers/9821", Some(&token)).await.expect(200);
    s.revoke("user", ALICE).await.expect(201);
    let r = get(&s, "/customers/9821", Some(&token)).await;
    r.expect(401);
    assert!(
        r.body["error_description"]
            .as_str()
            .unwrap()
            .contains("revoked"),
        "{}",
        r.body
    );
    s.shutdown().await;
}

#[tokio::test]
async fn a_breaker_suspends_the_agent_until_a_human_resumes_it() {
    let s = start_with(|c| {
        c.gateway.breakers = vec![mandate_gateway::breaker::BreakerRule {
            id: "ticket-scrape".into(),
            agent: "support-v2".into(),
            action: "tickets:read".into(),
            max: 2,
            per: "1h".into(),
            then: mandate_gateway::breaker::Then::Suspend,
            webhook: None,
        }];
    })
    .await;
    let token = token_for(&s, &s.alice(), "tickets:read", &[]).await;
    for _ in 0..2 {
        get(&s, "/tickets/12847", Some(&token)).await.expect(200);
    }
    let r = get(&s, "/tickets/12847", Some(&token)).await;
    r.expect(403);
    assert_eq!(r.body["error"], "agent_suspended");
    assert!(
        r.body["error_description"]
            .as_str()
            .unwrap()
            .contains("ticket-scrape")
    );
    // The agent is suspended through the revocation path: its tokens end everywhere.
    let mut suspended = false;
    for _ in 0..100 {
        let a = s.admin_get("/v1/agents/support-v2").await;
        if a.body["status"] == "suspended" {
            suspended = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(suspended, "support-v2 is suspended");
    assert!(!s.active(&token).await);
    get(&s, "/tickets/12847", Some(&token)).await.expect(401);
    // No new token while suspended.
    let agent = s.agent("support-v2");
    let mut form = exchange_form(&s.alice(), TYPE_JWT, "tickets:read", &[]);
    form.retain(|(k, _)| k != "resource");
    form.push(("resource".into(), gw(&s)));
    let r = s.token_as(&agent, form).await;
    r.expect(401);
    assert_eq!(r.error(), "invalid_client");
    let trip = s
        .audit("limit=10000")
        .await
        .into_iter()
        .find(|e| e["kind"] == "gateway.breaker")
        .expect("the trip is audited");
    assert_eq!(trip["policy_ids"], json!(["breaker:ticket-scrape"]));

    // A human resumes it; a new token works again.
    s.admin_post("/v1/agents/support-v2/resume", &json!({}))
        .await
        .expect(200);
    s.clock.advance(1);
    let fresh = token_for(&s, &s.alice(), "tickets:read", &[]).await;
    get(&s, "/tickets/12847", Some(&fresh)).await.expect(200);
    s.shutdown().await;
}

/// A gateway in front of an rmcp MCP server (a third-party upstream with its own API key).
async fn start_mcp() -> (Server, RmcpUpstream) {
    let upstream = RmcpUpstream::start("mcp-upstream-key").await;
    let url = upstream.url();
    let s = start_with(move |c| {
        c.gateway.upstreams = vec![keyed_upstream(
            "tools",
            url.trim_end_matches("/mcp").to_owned(),
            "tools-key",
        )];
        c.gateway.mcp = vec![mandate_gateway::config::McpConfig {
            server: "crm".into(),
            path: "/mcp".into(),
            upstream: "tools".into(),
            upstream_path: None,
            tool_classes: Default::default(),
            audience: None,
        }];
    })
    .await;
    let r = s
        .send(
            s.admin_req(reqwest::Method::PUT, "/v1/secrets/tools-key")
                .json(&json!({"value": "mcp-upstream-key"})),
        )
        .await;
    r.expect(201);
    (s, upstream)
}

#[tokio::test]
async fn an_mcp_client_sees_and_calls_only_what_its_token_allows() {
    let (s, upstream) = start_mcp().await;
    let token = token_for(&s, &s.alice(), "mcp.crm.lookup_customer:call", &[]).await;
    let mcp_url = format!("{}/mcp", gw(&s));
    let client = mcp_support::connect(&mcp_url, Credential::Bearer(&token)).await;

    let tools = client.list_all_tools().await.unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    assert_eq!(
        names,
        vec!["lookup_customer"],
        "only the permitted tool is listed"
    );

    let result = client
        .call_tool(
            rmcp::model::CallToolRequestParams::new("lookup_customer")
                .with_arguments(json!({"id": "9821"}).as_object().unwrap().clone()),
        )
        .await
        .unwrap();
    assert!(mcp_support::first_text(&result).contains("Acme"));

    let refused = client
        .call_tool(
            rmcp::model::CallToolRequestParams::new("delete_customer")
                .with_arguments(json!({"id": "9821"}).as_object().unwrap().clone()),
        )
        .await
        .unwrap_err();
    let why = format!("{refused:?}");
    assert!(
        why.contains("insufficient_scope") || why.contains("403"),
        "{why}"
    );

    // The upstream never saw the agent's token, and always got its own key.
    for headers in upstream.seen_headers() {
        assert!(headers.iter().all(|(_, v)| !v.contains(&token)));
        assert!(
            headers
                .iter()
                .any(|(k, v)| k == "x-api-key" && v == "mcp-upstream-key")
        );
    }
    let e = event_where(&s, |e| e["action"] == "mcp.crm.lookup_customer:call").await;
    assert_eq!(e["decision"], "allow");
    assert_eq!(e["resource"], "mcp/crm/lookup_customer");
    let d = event_where(&s, |e| e["action"] == "mcp.crm.delete_customer:call").await;
    assert_eq!(d["decision"], "deny");
    let _ = client.cancel().await;
    s.shutdown().await;
}

#[tokio::test]
async fn an_mcp_client_without_a_token_is_led_to_the_metadata() {
    let (s, _upstream) = start_mcp().await;
    let mcp_url = format!("{}/mcp", gw(&s));
    let err = mcp_support::try_connect(&mcp_url, None).await.unwrap_err();
    let why = format!("{err:?}");
    assert!(
        why.contains("401") || why.to_lowercase().contains("auth"),
        "{why}"
    );
    // What the client sees on the wire: 401 and the MCP endpoint's own metadata URL.
    let r = s
        .send(
            reqwest::Client::new()
                .post(&mcp_url)
                .header("accept", "application/json, text/event-stream")
                .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "ping"})),
        )
        .await;
    r.expect(401);
    let meta_url = format!("{}/.well-known/oauth-protected-resource/mcp", gw(&s));
    assert!(
        r.header("www-authenticate")
            .contains(&format!("resource_metadata=\"{meta_url}\"")),
        "{}",
        r.header("www-authenticate")
    );
    let meta = s.send(reqwest::Client::new().get(&meta_url)).await;
    meta.expect(200);
    assert_eq!(meta.body["resource"], mcp_url);
    assert_eq!(meta.body["authorization_servers"], json!([s.url]));
    assert_eq!(meta.body["scopes_supported"], json!(["mcp.crm.*:call"]));
    s.shutdown().await;
}

#[tokio::test]
async fn bad_mcp_messages_get_json_rpc_errors_and_never_reach_the_upstream() {
    let (s, upstream) = start_mcp().await;
    let token = token_for(&s, &s.alice(), "mcp.crm.lookup_customer:call", &[]).await;
    let mcp_url = format!("{}/mcp", gw(&s));
    let before = upstream.seen_headers().len();
    for (body, code) in [
        ("{", -32700),
        ("[]", -32600),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":7}}"#,
            -32602,
        ),
    ] {
        let r = s
            .send(
                reqwest::Client::new()
                    .post(&mcp_url)
                    .bearer_auth(&token)
                    .header("content-type", "application/json")
                    .body(body),
            )
            .await;
        r.expect(400);
        assert_eq!(r.body["error"]["code"], code, "{body}: {}", r.body);
    }
    let big = "x".repeat(2 * 1024 * 1024);
    let r = s
        .send(
            reqwest::Client::new()
                .post(&mcp_url)
                .bearer_auth(&token)
                .body(big),
        )
        .await;
    r.expect(413);
    assert_eq!(upstream.seen_headers().len(), before);
    s.shutdown().await;
}

#[tokio::test]
async fn bodies_stream_both_ways_and_oversized_ones_are_refused() {
    let upstream = mandate_server::sample::Sample::new("crm-key-1", None)
        .serve(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap())
        .await
        .unwrap();
    let url = upstream.url();
    let s = start_with(move |c| {
        c.gateway.upstreams = vec![keyed_upstream("crm", url, "crm-key")];
        c.gateway.routes = vec![
            route("GET", "/stream", "crm.customers:read", "stream"),
            route("POST", "/echo", "crm.customers:read", "echo"),
        ];
        c.gateway.max_body_bytes = Some(4 * 1024 * 1024);
    })
    .await;
    s.send(
        s.admin_req(reqwest::Method::PUT, "/v1/secrets/crm-key")
            .json(&json!({"value": "crm-key-1"})),
    )
    .await
    .expect(201);
    let token = token_for(&s, &s.alice(), "crm.customers:read", &[]).await;
    let http = reqwest::Client::new();

    // The answer streams: the first line arrives long before the last is produced.
    let started = std::time::Instant::now();
    let mut resp = http
        .get(format!("{}/stream?chunks=5&delay_ms=300", gw(&s)))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let first = resp.chunk().await.unwrap().expect("a first chunk");
    let first_at = started.elapsed();
    assert!(!first.is_empty());
    while resp.chunk().await.unwrap().is_some() {}
    let total = started.elapsed();
    assert!(
        total >= std::time::Duration::from_millis(1200) && first_at * 2 < total,
        "first chunk after {first_at:?}, all after {total:?}"
    );

    // A 3 MiB body goes up and comes back whole.
    let body: Vec<u8> = (0..3 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let resp = http
        .post(format!("{}/echo", gw(&s)))
        .bearer_auth(&token)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap().as_ref(), body.as_slice());

    // Over the limit: refused before anything is sent.
    let seen = upstream.sample().seen().len();
    let r = s
        .send(
            http.post(format!("{}/echo", gw(&s)))
                .bearer_auth(&token)
                .body(vec![0u8; 5 * 1024 * 1024]),
        )
        .await;
    r.expect(413);
    assert_eq!(upstream.sample().seen().len(), seen);
    s.shutdown().await;
    upstream.shutdown().await;
}

#[tokio::test]
async fn a_dead_upstream_is_a_502_and_never_a_secret() {
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let s = start_with(move |c| {
        c.gateway.upstreams = vec![mandate_gateway::config::UpstreamConfig {
            name: "crm".into(),
            url: format!("http://{dead}"),
            secret: Some("crm-key".into()),
            credential: None,
            timeout_secs: Some(2),
            audience: None,
        }];
        c.gateway.routes = vec![route(
            "GET",
            "/customers/{id}",
            "crm.customers:read",
            "customers/{id}",
        )];
    })
    .await;
    let token = token_for(&s, &s.alice(), "crm.customers:read", &[]).await;
    // The secret is missing first: 502 naming the upstream, not the secret's value.
    let r = get(&s, "/customers/1", Some(&token)).await;
    r.expect(502);
    assert!(
        r.body["error_description"]
            .as_str()
            .unwrap()
            .contains("`crm`")
    );
    s.send(
        s.admin_req(reqwest::Method::PUT, "/v1/secrets/crm-key")
            .json(&json!({"value": "very-secret-value"})),
    )
    .await
    .expect(201);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let r = get(&s, "/customers/1", Some(&token)).await;
    assert!(r.status == 502 || r.status == 504, "{}", r.status);
    assert!(!r.body.to_string().contains("very-secret-value"));
    s.shutdown().await;
}

/// A tiny webhook receiver: every JSON body POSTed to it.
async fn webhook() -> (String, std::sync::Arc<std::sync::Mutex<Vec<Value>>>) {
    use axum::routing::post;
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Value>::new()));
    let keep = got.clone();
    let app = axum::Router::new().route(
        "/alert",
        post(move |axum::Json(v): axum::Json<Value>| {
            let keep = keep.clone();
            async move {
                keep.lock().unwrap().push(v);
                "ok"
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/alert", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });
    (url, got)
}

#[tokio::test]
async fn a_deny_breaker_is_a_rate_limit_with_retry_after_and_alerts_once() {
    let (hook, got) = webhook().await;
    let s = start_with(move |c| {
        c.gateway.breakers = vec![mandate_gateway::breaker::BreakerRule {
            id: "customer-reads".into(),
            agent: "*".into(),
            action: "crm.customers:read".into(),
            max: 3,
            per: "1m".into(),
            then: mandate_gateway::breaker::Then::Deny,
            webhook: Some(hook),
        }];
    })
    .await;
    let token = token_for(&s, &alice_in(&s, "emea"), "crm.customers:read", &[]).await;
    for _ in 0..3 {
        get(&s, "/customers/9821", Some(&token)).await.expect(200);
    }
    for _ in 0..2 {
        let r = get(&s, "/customers/9821", Some(&token)).await;
        r.expect(429);
        assert_eq!(r.body["error"], "rate_limited");
        assert_eq!(r.header("retry-after"), "1");
    }
    // The agent is not suspended by a deny breaker.
    let a = s.admin_get("/v1/agents/support-v2").await;
    assert_eq!(a.body["status"], "active");
    // One alert for the streak, with what tripped.
    let mut alerts = Vec::new();
    for _ in 0..100 {
        alerts = got.lock().unwrap().clone();
        if !alerts.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(got.lock().unwrap().len(), 1, "{alerts:?}");
    let a = &alerts[0];
    assert_eq!(a["rule"], "customer-reads");
    assert_eq!(a["agent"], "support-v2");
    assert_eq!(a["then"], "deny");
    assert_eq!(a["user"], ALICE);
    // The window slides: a minute later the agent may read again.
    s.clock.advance(61);
    get(&s, "/customers/9821", Some(&token)).await.expect(200);
    s.shutdown().await;
}

#[tokio::test]
async fn a_tool_called_before_any_listing_is_classed_from_the_servers_own_list() {
    // The sample's MCP server is stateless JSON: a raw call needs no handshake.
    let s = start().await;
    // A draft-stage token may call read-only tools; the gateway learns that lookup_customer is
    // read-only by asking the server, since this client never listed the tools.
    let token = token_for(
        &s,
        &s.alice(),
        "mcp.crm.lookup_customer:call",
        &[("stage", "draft")],
    )
    .await;
    let r = s
        .send(
            reqwest::Client::new()
                .post(format!("{}/mcp", gw(&s)))
                .bearer_auth(&token)
                .header("accept", "application/json, text/event-stream")
                .json(&json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                    "params": {"name": "lookup_customer", "arguments": {"id": "9821"}}})),
        )
        .await;
    r.expect(200);
    assert_eq!(r.body["id"], 7);
    assert!(r.body["result"].to_string().contains("Acme"), "{}", r.body);
    s.shutdown().await;
}

#[tokio::test]
async fn garbage_never_gets_a_5xx_and_oversized_headers_get_431() {
    let s = start().await;
    let base = gw(&s);
    let http = reqwest::Client::new();
    let token = token_for(&s, &s.alice(), "crm.customers:read", &[]).await;
    for auth in [
        "Bearer",
        "Bearer ",
        "Basic abc",
        "Bearer a.b.c",
        "Bearer ....",
        "bearer eyJhbGciOiJub25lIn0.e30.",
        "DPoP x",
    ] {
        let r = s
            .send(
                http.get(format!("{base}/customers/1"))
                    .header("authorization", auth),
            )
            .await;
        assert_eq!(r.status, 401, "{auth}: {}", r.body);
    }
    for path in [
        "/customers/..%2F..%2Fadmin",
        "/customers/%00",
        "/customers//1",
        "/%",
        "/.well-known/oauth-protected-resource/nothing",
    ] {
        let r = s
            .send(http.get(format!("{base}{path}")).bearer_auth(&token))
            .await;
        assert!(r.status < 500, "{path}: {} {}", r.status, r.body);
    }
    let r = s
        .send(
            http.get(format!("{base}/customers/9821"))
                .bearer_auth(&token)
                .header("x-big", "a".repeat(70 * 1024)),
        )
        .await;
    assert_eq!(r.status, 431);
    // A client that never finishes its headers holds up no one else (hyper cuts it off after
    // the header timeout, 10 s).
    let mut slow = tokio::net::TcpStream::connect(s.running().gateway.as_ref().unwrap().addr)
        .await
        .unwrap();
    use tokio::io::AsyncWriteExt;
    slow.write_all(b"GET /customers/9821 HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    get(&s, "/customers/9821", Some(&token)).await.expect(200);
    // (A connection still sending its headers holds a graceful shutdown for up to the header
    // timeout; this test does not wait for that.)
    drop(slow);
    s.shutdown().await;
}

#[tokio::test]
async fn a_token_is_good_only_for_the_audience_its_route_needs() {
    let upstream = mandate_server::sample::Sample::new("crm-key-1", None)
        .serve(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap())
        .await
        .unwrap();
    let url = upstream.url();
    let s = start_with(move |c| {
        c.gateway.upstreams = vec![keyed_upstream("crm", url, "crm-key")];
        let for_audience = |path: &str, action: &str, resource: &str, audience: Option<&str>| {
            mandate_gateway::route::RouteConfig {
                audience: audience.map(str::to_owned),
                ..route("GET", path, action, resource)
            }
        };
        c.gateway.routes = vec![
            // Agents ask for the CRM's own audience; the gateway fronts it.
            for_audience(
                "/customers/{id}",
                "crm.customers:read",
                "customers/{id}",
                Some(CRM),
            ),
            for_audience("/tickets/{id}", "tickets:read", "tickets/{id}", None),
        ];
    })
    .await;
    s.send(
        s.admin_req(reqwest::Method::PUT, "/v1/secrets/crm-key")
            .json(&json!({"value": "crm-key-1"})),
    )
    .await
    .expect(201);
    let scope = "crm.customers:read tickets:read";
    let for_crm = s
        .exchange(&s.agent("support-v2"), &alice_in(&s, "emea"), scope)
        .await;
    for_crm.expect(200);
    let for_crm = for_crm.access_token();
    let for_gateway = token_for(&s, &alice_in(&s, "emea"), scope, &[]).await;

    get(&s, "/customers/9821", Some(&for_crm)).await.expect(200);
    get(&s, "/tickets/12847", Some(&for_gateway))
        .await
        .expect(200);
    let r = get(&s, "/tickets/12847", Some(&for_crm)).await;
    r.expect(401);
    assert!(
        r.body["error_description"]
            .as_str()
            .unwrap()
            .contains(&gw(&s)),
        "{}",
        r.body
    );
    let r = get(&s, "/customers/9821", Some(&for_gateway)).await;
    r.expect(401);
    assert!(
        r.body["error_description"].as_str().unwrap().contains(CRM),
        "{}",
        r.body
    );
    s.shutdown().await;
    upstream.shutdown().await;
}

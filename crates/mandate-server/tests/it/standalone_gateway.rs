//! `mandate gateway` on its own: the proxy with a remote authority, following a real Mandate
//! server over HTTP (verifier + revocation stream, policy bundle, secrets, audit, suspensions).

use std::net::SocketAddr;
use std::time::Duration;

use jsonwebtoken::{DecodingKey, Validation, jwk::JwkSet};
use mandate_gateway::breaker::{BreakerRule, Then};
use mandate_gateway::config::{GatewayConfig, UpstreamConfig};
use mandate_gateway::forward::Injection;
use mandate_gateway::route::RouteConfig;
use serde_json::{Value, json};

use super::harness::*;

fn route(path: &str) -> RouteConfig {
    RouteConfig {
        method: "GET".into(),
        path: path.into(),
        action: "crm.customers:read".into(),
        resource: "customers/{id}".into(),
        stage: None,
        upstream: None,
        audience: None,
    }
}

/// A sample CRM upstream whose key `crm-key-1` is Mandate's secret `crm-key`, and a credential
/// of role `gateway` for a standalone gateway in front of it.
pub(super) async fn sample_upstream_and_credential(
    s: &Server,
) -> (mandate_server::sample::SampleHandle, String) {
    let upstream = mandate_server::sample::Sample::new("crm-key-1", None)
        .serve(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap())
        .await
        .unwrap();
    s.send(
        s.admin_req(reqwest::Method::PUT, "/v1/secrets/crm-key")
            .json(&json!({"value": "crm-key-1"})),
    )
    .await
    .expect(201);
    let cred = s
        .admin_post("/v1/credentials", &json!({"id": "gw1", "role": "gateway"}))
        .await;
    cred.expect(201);
    (upstream, cred.body["secret"].as_str().unwrap().to_owned())
}

async fn eventually<T>(mut f: impl AsyncFnMut() -> Option<T>) -> T {
    for _ in 0..200 {
        if let Some(v) = f().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("not within 5 s");
}

#[tokio::test]
async fn a_standalone_gateway_follows_mandate_over_the_network() {
    let s = Server::start().await;
    let (upstream, credential) = sample_upstream_and_credential(&s).await;
    let config = GatewayConfig {
        upstreams: vec![UpstreamConfig {
            name: "crm".into(),
            url: upstream.url(),
            secret: Some("crm-key".into()),
            credential: Some(Injection::Header {
                name: "x-api-key".into(),
                format: None,
            }),
            timeout_secs: None,
            audience: None,
        }],
        routes: vec![
            route("/customers/{id}"),
            route("/regions/{region}/customers/{id}"),
        ],
        breakers: vec![BreakerRule {
            id: "read-flood".into(),
            agent: "support-v2".into(),
            action: "crm.customers:read".into(),
            max: 4,
            per: "1h".into(),
            then: Then::Suspend,
            webhook: None,
        }],
        ..GatewayConfig::default()
    };
    let gw = mandate_gateway::standalone::start(
        &config,
        SocketAddr::from(([127, 0, 0, 1], 0)),
        &s.url,
        credential,
        5,
    )
    .await
    .expect("the standalone gateway starts");
    let http = reqwest::Client::new();
    let token_for = async |user: &str| {
        let mut form = exchange_form(user, TYPE_JWT, "crm.customers:read", &[]);
        form.retain(|(k, _)| k != "resource");
        form.push(("resource".into(), gw.url.clone()));
        let r = s.token_as(&s.agent("support-v2"), form).await;
        r.expect(200);
        r.access_token()
    };
    let alice = s.user_token_with(ALICE, &["support"], 3600, json!({"region": "emea"}));
    let token = token_for(&alice).await;

    // Forwarded with the secret from Mandate's store and the gateway's own Transaction Token.
    let r = s
        .send(
            http.get(format!("{}/customers/9821", gw.url))
                .bearer_auth(&token),
        )
        .await;
    r.expect(200);
    assert_eq!(r.body["name"], "Acme Corp");
    let seen = upstream.sample().seen();
    let last = seen.last().unwrap();
    assert!(last.api_key_ok);
    assert!(last.headers.iter().all(|(_, v)| !v.contains(&token)));
    let txn = last.header("txn-token").unwrap().to_owned();
    let jwks: JwkSet = http
        .get(format!("{}/.well-known/jwks.json", gw.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let header = jsonwebtoken::decode_header(&txn).unwrap();
    assert_eq!(header.typ.as_deref(), Some("txntoken+jwt"));
    let key = DecodingKey::from_jwk(jwks.find(header.kid.as_deref().unwrap()).unwrap()).unwrap();
    let mut v = Validation::new(jsonwebtoken::Algorithm::EdDSA);
    v.set_audience(&[gw.url.as_str()]);
    v.set_issuer(&[gw.url.as_str()]);
    v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    let claims = jsonwebtoken::decode::<Value>(&txn, &key, &v)
        .unwrap()
        .claims;
    assert_eq!(claims["tctx"]["user"], ALICE);

    // Mandate's policies, from the bundle: another region's customer is refused.
    let r = s
        .send(
            http.get(format!("{}/regions/amer/customers/4410", gw.url))
                .bearer_auth(&token),
        )
        .await;
    r.expect(403);
    assert!(
        r.body["error_description"]
            .as_str()
            .unwrap()
            .contains("customers-of-own-region")
    );

    // The audit events reach Mandate's log.
    let events = eventually(async || {
        let e: Vec<Value> = s
            .audit("limit=10000")
            .await
            .into_iter()
            .filter(|e| e["kind"] == "gateway.request")
            .collect();
        (e.len() >= 2).then_some(e)
    })
    .await;
    assert!(
        events
            .iter()
            .any(|e| e["resource"] == "customers/9821" && e["decision"] == "allow")
    );
    assert!(
        events
            .iter()
            .any(|e| e["resource"] == "customers/4410" && e["decision"] == "deny")
    );

    // A revocation at Mandate reaches the gateway through the revocation stream.
    let rev = s.revoke("user", ALICE).await;
    rev.expect(201);
    let seq = rev.body["seq"].as_i64().unwrap();
    assert!(
        gw.remote
            .verifier()
            .wait_for(seq, Duration::from_secs(5))
            .await
    );
    let r = s
        .send(
            http.get(format!("{}/customers/9821", gw.url))
                .bearer_auth(&token),
        )
        .await;
    r.expect(401);
    assert!(
        r.body["error_description"]
            .as_str()
            .unwrap()
            .contains("revoked")
    );

    // A breaker suspends the agent at Mandate; its tokens end everywhere.
    let carol = s.user_token_with(
        "carol@example.com",
        &["support"],
        3600,
        json!({"region": "emea"}),
    );
    let token = token_for(&carol).await;
    for _ in 0..3 {
        s.send(
            http.get(format!("{}/customers/9821", gw.url))
                .bearer_auth(&token),
        )
        .await
        .expect(200);
    }
    let r = s
        .send(
            http.get(format!("{}/customers/9821", gw.url))
                .bearer_auth(&token),
        )
        .await;
    r.expect(403);
    assert_eq!(r.body["error"], "agent_suspended");
    eventually(async || {
        let a = s.admin_get("/v1/agents/support-v2").await;
        (a.body["status"] == "suspended").then_some(())
    })
    .await;
    assert!(!s.active(&token).await);
    let suspend = s
        .audit("limit=10000")
        .await
        .into_iter()
        .find(|e| e["kind"] == "revocation" && e["action"] == "agent.suspend")
        .expect("the suspension is audited");
    assert_eq!(
        suspend["reason"].as_str().map(|r| r.contains("read-flood")),
        Some(true)
    );

    gw.shutdown().await;
    upstream.shutdown().await;
    s.shutdown().await;
}

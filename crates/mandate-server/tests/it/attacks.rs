//! The attack catalogue, one test each, named after the attack. Each test plays the attacker
//! against the real server and asserts what a user would notice: the refusal and its error code,
//! that no token was issued (or that what was issued is never wider than asked and allowed), that
//! the request left a `deny` audit event where the token endpoint writes one, and that the server
//! keeps answering. Some attacks are also covered elsewhere under another name (refusals.rs,
//! exchange.rs, robustness.rs, gateway.rs); here each gets its own short test.
//!
//! 1. `alg: none` — on a user token, a client assertion, and a Mandate access token presented
//!    as the subject of a hop and to introspection: all refused.
//! 2. Algorithm confusion — HS256 tokens MAC'd with a public key's bytes (EdDSA/HS with the IdP's,
//!    the agent's and Mandate's own key; RS/HS with an agent's RSA key): refused.
//! 3. `kid` injection — path traversal, SQL, control characters and a very long `kid`: refused
//!    with a 4xx, never a 5xx.
//! 4. `jku` / `x5u` / embedded `jwk` headers naming the attacker's key: never trusted, and never
//!    fetched.
//! 5. `crit` with an unknown extension: refused even when the signature is good.
//! 6. Nested JWT (`cty: JWT`, a validly signed JWS whose payload is another JWS): refused.
//! 7. Huge and deeply nested JSON in token claims and form values, a 1 MB assertion: a clean 4xx,
//!    and the server keeps answering.
//! 8. `exp` / `nbf` / `iat` skew: beyond `tokens.leeway` refused, within it accepted.
//! 9. A replayed client assertion (same `jti`), also replayed at another endpoint: refused.
//! 10. Audience reuse: a token for one resource presented where another audience is required
//!     (the dev gateway, a hop, client authentication): refused; introspection reports `aud`.
//! 11. Chain forgery: an access token with a forged `act` chain signed by a key Mandate does not
//!     hold; a hop by an agent the current actor may not delegate to, or one already in the
//!     chain: refused.
//! 12. Scope escalation in every parameter (`scope`, `resource`, `stage`, `ttl`, a hop, repeated
//!     parameters, wildcards): refused or narrowed, never amplified.
//! 13. SQL injection in every audit filter and in the task and approval list filters: 200 with no
//!     rows or a 400, never other rows, never a 5xx; the tables are intact afterwards.

use std::net::TcpListener;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use super::harness::*;

const SCOPE: &str = "crm.customers:read";

/// Asserts a refusal at the token endpoint: the status and OAuth error, no token, and the
/// request's `deny` audit event.
async fn refused(srv: &Server, r: &Reply, status: u16, error: &str) {
    r.expect_oauth_error(status, error);
    assert!(r.body.get("access_token").is_none(), "{}", r.body);
    let e = srv.deny_event(r).await;
    assert_eq!(e["decision"], "deny");
}

/// Asserts a 4xx (never a 5xx) and that no token came back.
#[track_caller]
fn client_error(what: &str, r: &Reply) {
    assert!(
        (400..500).contains(&r.status),
        "{what}: expected a 4xx, got {}: {}",
        r.status,
        r.body
    );
    assert!(r.body.get("access_token").is_none(), "{what}: {}", r.body);
}

/// A token-exchange form for `subject` authenticated by `assertion` (not a fresh one).
fn form_with_assertion(subject: &str, assertion: &str) -> Vec<(String, String)> {
    let mut form = exchange_form(subject, TYPE_JWT, SCOPE, &[]);
    form.push(("client_assertion_type".into(), JWT_BEARER.into()));
    form.push(("client_assertion".into(), assertion.to_owned()));
    form
}

/// Claims of a good client assertion of `agent`, with a fresh `jti`.
fn assertion_claims(srv: &Server, agent: &Agent) -> Value {
    let now = srv.now();
    json!({
        "iss": agent.id, "sub": agent.id, "aud": srv.url,
        "iat": now, "exp": now + 60, "jti": unique("assertion"),
    })
}

/// An HS256 JWT over `claims` with `kid`, keyed with `secret`.
fn hs256(kid: &str, claims: &Value, secret: &[u8]) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(secret)).unwrap()
}

/// A token support-v2 got for Alice on [`CRM`].
async fn alice_token(srv: &Server, scope: &str) -> String {
    srv.exchange(&srv.agent("support-v2"), &srv.alice(), scope)
        .await
        .access_token()
}

// ---- 1. alg: none ----

#[tokio::test]
async fn attack_alg_none_user_token_is_refused() {
    let srv = Server::start_with_idp().await;
    let support = srv.agent("support-v2");
    for claims in [peek(&srv.idp_token(json!({}))), peek(&srv.alice())] {
        let r = srv.exchange(&support, &unsigned(&claims), SCOPE).await;
        refused(&srv, &r, 400, "invalid_grant").await;
        // `None`, `NONE`: the same algorithm to a careless comparison.
        for alg in ["None", "NONE", "nOnE"] {
            let token = jws(&json!({"alg": alg, "typ": "JWT"}), &claims, |_| Vec::new());
            let r = srv.exchange(&support, &token, SCOPE).await;
            refused(&srv, &r, 400, "invalid_grant").await;
        }
    }
    srv.shutdown().await;
}

#[tokio::test]
async fn attack_alg_none_client_assertion_is_refused() {
    let srv = Server::start().await;
    let support = srv.agent("support-v2");
    let assertion = unsigned(&assertion_claims(&srv, &support));
    let r = srv
        .token(&form_with_assertion(&srv.alice(), &assertion))
        .await;
    refused(&srv, &r, 401, "invalid_client").await;
    // Also with the agent's `kid` in the header.
    let header = json!({"alg": "none", "kid": support.key.kid, "typ": "JWT"});
    let assertion = jws(&header, &assertion_claims(&srv, &support), |_| Vec::new());
    let r = srv
        .token(&form_with_assertion(&srv.alice(), &assertion))
        .await;
    refused(&srv, &r, 401, "invalid_client").await;
    srv.shutdown().await;
}

#[tokio::test]
async fn attack_alg_none_access_token_as_hop_subject_or_at_introspection_is_refused() {
    let srv = Server::start().await;
    let analytics = srv.agent("analytics-v1");
    let real = alice_token(&srv, SCOPE).await;
    let kid = jsonwebtoken::decode_header(&real).unwrap().kid.unwrap();
    let forged = jws(
        &json!({"alg": "none", "kid": kid, "typ": "at+jwt"}),
        &peek(&real),
        |_| Vec::new(),
    );
    let r = srv.hop(&analytics, &forged, SCOPE).await;
    refused(&srv, &r, 400, "invalid_grant").await;
    assert!(!srv.active(&forged).await);
    assert!(!srv.active(&unsigned(&peek(&real))).await);
    // The genuine token is still fine.
    assert!(srv.active(&real).await);
    srv.shutdown().await;
}

// ---- 2. Algorithm confusion ----

#[tokio::test]
async fn attack_hs256_keyed_with_a_public_key_is_refused() {
    let srv = Server::start_with_idp().await;
    let support = srv.agent("support-v2");
    let analytics = srv.agent("analytics-v1");

    // EdDSA/HS: a user token MAC'd with the IdP's public key.
    let idp = srv.idp.as_ref().unwrap();
    let claims = peek(&srv.idp_token(json!({})));
    for secret in [
        idp.public_bytes(),
        idp.public_jwk().to_string().into_bytes(),
    ] {
        let r = srv
            .exchange(&support, &hs256(&idp.kid, &claims, &secret), SCOPE)
            .await;
        refused(&srv, &r, 400, "invalid_grant").await;
    }

    // EdDSA/HS: a client assertion MAC'd with the agent's registered public key.
    let secret = support.key.public_bytes();
    let assertion = hs256(&support.key.kid, &assertion_claims(&srv, &support), &secret);
    let r = srv
        .token(&form_with_assertion(&srv.alice(), &assertion))
        .await;
    refused(&srv, &r, 401, "invalid_client").await;

    // EdDSA/HS: a Mandate access token MAC'd with Mandate's own published key.
    let real = alice_token(&srv, SCOPE).await;
    let kid = jsonwebtoken::decode_header(&real).unwrap().kid.unwrap();
    let jwks = srv
        .send(srv.http.get(srv.at("/.well-known/jwks.json")))
        .await;
    let jwk = jwks.body["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .unwrap()
        .clone();
    let x = URL_SAFE_NO_PAD.decode(jwk["x"].as_str().unwrap()).unwrap();
    let mut wider = peek(&real);
    wider["scope"] = json!("crm.customers:read billing.invoices:read");
    for secret in [x, jwk.to_string().into_bytes()] {
        let forged = hs256(&kid, &wider, &secret);
        let r = srv.hop(&analytics, &forged, "billing.invoices:read").await;
        refused(&srv, &r, 400, "invalid_grant").await;
        assert!(!srv.active(&forged).await);
    }

    // RS/HS: an agent registered with an RSA key; an assertion MAC'd with its modulus or JWK.
    let rsa = TestKey::rsa("rsa-agent-k1");
    srv.register_agent("rsa-agent", &[SCOPE], "observe", &[&rsa])
        .await;
    let agent = Agent {
        id: "rsa-agent".into(),
        key: rsa,
    };
    // Control: the real RS256 assertion is accepted.
    srv.token_as(&agent, exchange_form(&srv.alice(), TYPE_JWT, SCOPE, &[]))
        .await
        .expect(200);
    for secret in [
        agent.key.public_bytes(),
        agent.key.public_jwk().to_string().into_bytes(),
    ] {
        let assertion = hs256(&agent.key.kid, &assertion_claims(&srv, &agent), &secret);
        let r = srv
            .token(&form_with_assertion(&srv.alice(), &assertion))
            .await;
        refused(&srv, &r, 401, "invalid_client").await;
    }
    srv.shutdown().await;
}

// ---- 3. kid injection ----

/// `kid`s an attacker might hope reach a file path, a query or a log line.
fn evil_kids() -> Vec<String> {
    vec![
        "../../etc/passwd".into(),
        "../../../../../../dev/null".into(),
        "/dev/null".into(),
        "' OR 1=1 --".into(),
        "x'; DROP TABLE agents; --".into(),
        "kid\r\nx-injected: yes".into(),
        "\u{0000}".into(),
        "%2e%2e%2f%2e%2e%2fetc%2fpasswd".into(),
        "k".repeat(8 * 1024),
    ]
}

#[tokio::test]
async fn attack_kid_injection_is_refused_without_a_5xx() {
    let srv = Server::start_with_idp().await;
    let support = srv.agent("support-v2");
    let idp = srv.idp.as_ref().unwrap();
    for kid in evil_kids() {
        let shown: String = kid.chars().take(40).collect();
        // A user token, signed by the trusted IdP's real key, under a hostile kid.
        let header = json!({"alg": "EdDSA", "kid": kid, "typ": "JWT"});
        let token = idp.sign_with_header(&header, &peek(&srv.idp_token(json!({}))));
        let r = srv.exchange(&support, &token, SCOPE).await;
        client_error(&format!("user token, kid {shown:?}"), &r);
        assert_eq!(r.error(), "invalid_grant", "{}", r.body);
        srv.deny_event(&r).await;

        // A client assertion, signed by the agent's real key, under a hostile kid.
        let assertion = support
            .key
            .sign_with_header(&header, &assertion_claims(&srv, &support));
        let r = srv
            .token(&form_with_assertion(&srv.alice(), &assertion))
            .await;
        client_error(&format!("assertion, kid {shown:?}"), &r);
        assert_eq!(r.error(), "invalid_client", "{}", r.body);
        srv.deny_event(&r).await;
    }
    assert!(srv.healthy().await);
    // The agents table is intact.
    srv.exchange(&support, &srv.alice(), SCOPE)
        .await
        .access_token();
    srv.shutdown().await;
}

// ---- 4. jku / x5u / embedded jwk ----

#[tokio::test]
async fn attack_jku_x5u_and_embedded_jwk_headers_are_never_trusted() {
    let srv = Server::start_with_idp().await;
    let support = srv.agent("support-v2");
    let analytics = srv.agent("analytics-v1");
    let evil = TestKey::ed25519("evil-k1");
    // Where the attacker's key set "lives": a listener that must never see a connection.
    let trap = TcpListener::bind("127.0.0.1:0").unwrap();
    trap.set_nonblocking(true).unwrap();
    let trap_url = format!("http://{}/jwks.json", trap.local_addr().unwrap());

    let headers = |kid: &str| {
        vec![
            json!({"alg": "EdDSA", "kid": kid, "typ": "JWT", "jku": trap_url}),
            json!({"alg": "EdDSA", "kid": kid, "typ": "JWT", "x5u": trap_url}),
            json!({"alg": "EdDSA", "kid": kid, "typ": "JWT", "jwk": evil.public_jwk()}),
            json!({"alg": "EdDSA", "kid": kid, "typ": "JWT", "jku": trap_url,
                   "x5u": trap_url, "jwk": evil.public_jwk()}),
        ]
    };
    let real = alice_token(&srv, SCOPE).await;
    let mandate_kid = jsonwebtoken::decode_header(&real).unwrap().kid.unwrap();
    for kid in [evil.kid.as_str(), "test-idp-k1"] {
        for header in headers(kid) {
            // A user token of the trusted issuer, signed by the attacker.
            let token = evil.sign_with_header(&header, &peek(&srv.idp_token(json!({}))));
            let r = srv.exchange(&support, &token, SCOPE).await;
            refused(&srv, &r, 400, "invalid_grant").await;
        }
    }
    for kid in [evil.kid.as_str(), support.key.kid.as_str()] {
        for header in headers(kid) {
            // A client assertion for support-v2, signed by the attacker.
            let claims = assertion_claims(&srv, &support);
            let assertion = evil.sign_with_header(&header, &claims);
            let r = srv
                .token(&form_with_assertion(&srv.alice(), &assertion))
                .await;
            refused(&srv, &r, 401, "invalid_client").await;
        }
    }
    for kid in [evil.kid.as_str(), mandate_kid.as_str()] {
        for header in headers(kid) {
            // A Mandate access token, signed by the attacker.
            let forged = evil.sign_with_header(&header, &peek(&real));
            let r = srv.hop(&analytics, &forged, SCOPE).await;
            refused(&srv, &r, 400, "invalid_grant").await;
            assert!(!srv.active(&forged).await);
        }
    }
    // Nothing ever went to fetch the attacker's keys.
    match trap.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the server contacted the attacker's URL: {other:?}"),
    }
    srv.shutdown().await;
}

// ---- 5. crit ----

#[tokio::test]
async fn attack_crit_header_with_an_unknown_extension_is_refused() {
    let srv = Server::start_with_idp().await;
    let support = srv.agent("support-v2");
    let idp = srv.idp.as_ref().unwrap();
    for crit in [json!(["urn:evil:ignore-exp"]), json!(["exp"]), json!([])] {
        let header = json!({"alg": "EdDSA", "kid": idp.kid, "typ": "JWT", "crit": crit,
                            "urn:evil:ignore-exp": true});
        // Signed by the trusted key: only the `crit` header is wrong.
        let token = idp.sign_with_header(&header, &peek(&srv.idp_token(json!({}))));
        let r = srv.exchange(&support, &token, SCOPE).await;
        refused(&srv, &r, 400, "invalid_grant").await;

        let header = json!({"alg": "EdDSA", "kid": support.key.kid, "typ": "JWT",
                            "crit": crit});
        let assertion = support
            .key
            .sign_with_header(&header, &assertion_claims(&srv, &support));
        let r = srv
            .token(&form_with_assertion(&srv.alice(), &assertion))
            .await;
        refused(&srv, &r, 401, "invalid_client").await;
    }
    srv.shutdown().await;
}

// ---- 6. Nested JWT ----

/// An Ed25519 key the test signs raw payload bytes with (the harness's keys sign JSON only),
/// registered for a new agent `id`.
async fn raw_agent(srv: &Server, id: &str) -> (aws_lc_rs::signature::Ed25519KeyPair, String) {
    use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
    let doc = Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new()).unwrap();
    let pair = Ed25519KeyPair::from_pkcs8(doc.as_ref()).unwrap();
    let kid = format!("{id}-k1");
    let jwk = json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "use": "sig", "alg": "EdDSA",
                     "x": URL_SAFE_NO_PAD.encode(pair.public_key().as_ref())});
    let body = json!({"id": id, "name": id, "owner": "erin@example.com",
                      "description": "test agent", "ceiling": [SCOPE],
                      "max_stage": "observe", "keys": [jwk]});
    srv.admin_post("/v1/agents", &body).await.expect(201);
    (pair, kid)
}

/// A compact JWS over `header` and the raw `payload` bytes.
fn raw_jws(pair: &aws_lc_rs::signature::Ed25519KeyPair, header: &Value, payload: &[u8]) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let sig = pair.sign(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
}

#[tokio::test]
async fn attack_nested_jwt_is_refused() {
    let srv = Server::start_with_idp().await;
    let support = srv.agent("support-v2");
    let idp = srv.idp.as_ref().unwrap();
    let header = json!({"alg": "EdDSA", "kid": idp.kid, "typ": "JWT", "cty": "JWT"});
    // The inner tokens an attacker would like honoured: unsigned, or genuine but for elsewhere.
    let inners = [
        unsigned(&peek(&srv.idp_token(json!({"sub": "root@test.example"})))),
        srv.idp_token(json!({"aud": "elsewhere"})),
    ];
    for inner in &inners {
        // The outer JWS is validly signed by the trusted IdP; its payload (a JSON string here)
        // is another JWS.
        let outer = idp.sign_with_header(&header, &Value::String(inner.clone()));
        let r = srv.exchange(&support, &outer, SCOPE).await;
        refused(&srv, &r, 400, "invalid_grant").await;
    }

    // A client assertion whose payload is, byte for byte, another JWS, signed by a registered key.
    let (pair, kid) = raw_agent(&srv, "nested-agent").await;
    let now = srv.now();
    let claims = json!({"iss": "nested-agent", "sub": "nested-agent", "aud": srv.url,
                        "iat": now, "exp": now + 60, "jti": unique("inner")});
    let inner_header = json!({"alg": "EdDSA", "kid": kid, "typ": "JWT"});
    let inner = raw_jws(&pair, &inner_header, claims.to_string().as_bytes());
    // Control: the inner assertion alone is good.
    srv.token(&form_with_assertion(&srv.alice(), &inner))
        .await
        .expect(200);
    let claims = json!({"iss": "nested-agent", "sub": "nested-agent", "aud": srv.url,
                        "iat": now, "exp": now + 60, "jti": unique("inner")});
    let inner = raw_jws(&pair, &inner_header, claims.to_string().as_bytes());
    let outer_header = json!({"alg": "EdDSA", "kid": kid, "typ": "JWT", "cty": "JWT"});
    let outer = raw_jws(&pair, &outer_header, inner.as_bytes());
    let r = srv.token(&form_with_assertion(&srv.alice(), &outer)).await;
    refused(&srv, &r, 401, "invalid_client").await;
    srv.shutdown().await;
}

// ---- 7. Huge and deeply nested JSON ----

#[tokio::test]
async fn attack_huge_and_deeply_nested_json_is_refused_cleanly() {
    let srv = Server::start_with_idp().await;
    let support = srv.agent("support-v2");
    let analytics = srv.agent("analytics-v1");
    // Assertion claims with a `deep` claim of `depth` nested arrays, written as text (signed as
    // raw bytes by a registered key).
    let nested_claims = |depth: usize, base: &Value| -> String {
        let mut text = base.to_string();
        text.pop();
        format!(
            "{text},\"deep\":{}1{}}}",
            "[".repeat(depth),
            "]".repeat(depth)
        )
    };
    let idp = srv.idp.as_ref().unwrap();
    let idp_header = json!({"alg": "EdDSA", "kid": idp.kid, "typ": "JWT"});
    let (pair, kid) = raw_agent(&srv, "deep-agent").await;
    let agent_header = json!({"alg": "EdDSA", "kid": kid, "typ": "JWT"});
    let now = srv.now();
    for depth in [10_000, 3_000, 200] {
        // A user token signed by the trusted IdP: signature good, a claim nested deeper than
        // any parser should follow (the harness signs JSON values, so at most a few thousand).
        let claims = peek(&srv.idp_token(json!({})));
        let mut deep = json!(1);
        for _ in 0..depth.min(2_000) {
            deep = Value::Array(vec![deep]);
        }
        let mut with_deep = claims.clone();
        with_deep["groups"] = deep;
        let r = srv
            .exchange(
                &support,
                &idp.sign_with_header(&idp_header, &with_deep),
                SCOPE,
            )
            .await;
        client_error(&format!("user token with nested groups, depth {depth}"), &r);

        // A client assertion whose payload nests `depth` arrays, signed by a registered key.
        let base = json!({"iss": "deep-agent", "sub": "deep-agent", "aud": srv.url,
                          "iat": now, "exp": now + 60, "jti": unique("deep")});
        let assertion = raw_jws(&pair, &agent_header, nested_claims(depth, &base).as_bytes());
        let r = srv
            .token(&form_with_assertion(&srv.alice(), &assertion))
            .await;
        client_error(&format!("assertion nesting {depth}"), &r);
        assert_eq!(r.error(), "invalid_client", "{}", r.body);
    }

    // A Mandate token's claims with a deeply nested `act`, signed by a key Mandate does not hold.
    let real = alice_token(&srv, SCOPE).await;
    let mut act = json!({"sub": "agent:support-v2"});
    for _ in 0..500 {
        act = json!({"sub": "agent:support-v2", "act": act});
    }
    let mut claims = peek(&real);
    claims["act"] = act;
    let forged = idp.sign(&claims);
    let r = srv.hop(&analytics, &forged, SCOPE).await;
    refused(&srv, &r, 400, "invalid_grant").await;

    // Form values: a nested scope, resource and subject token.
    let deep_text = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    for field in [
        "scope",
        "resource",
        "audience",
        "subject_token",
        "task",
        "stage",
        "ttl",
    ] {
        let mut form = without(exchange_form(&srv.alice(), TYPE_JWT, SCOPE, &[]), &[field]);
        form.push((field.to_owned(), deep_text.clone()));
        let r = srv.token_as(&support, form).await;
        client_error(&format!("nested `{field}`"), &r);
    }

    // A 1 MB client assertion, and a 1 MB subject token.
    let huge = format!("{}.{}.{}", "e".repeat(1000), "A".repeat(1024 * 1024), "s");
    let r = srv.token(&form_with_assertion(&srv.alice(), &huge)).await;
    client_error("1 MB assertion", &r);
    let r = srv.exchange(&support, &huge, SCOPE).await;
    client_error("1 MB subject token", &r);
    // Just under the body limit, just over the token limit.
    let big = format!("{}.{}.{}", "e".repeat(10), "A".repeat(40 * 1024), "s");
    let r = srv.token(&form_with_assertion(&srv.alice(), &big)).await;
    refused(&srv, &r, 401, "invalid_client").await;
    let r = srv.exchange(&support, &big, SCOPE).await;
    refused(&srv, &r, 400, "invalid_grant").await;

    // The server keeps answering, and answers well.
    assert!(srv.healthy().await);
    srv.exchange(&support, &srv.alice(), SCOPE)
        .await
        .access_token();
    srv.shutdown().await;
}

// ---- 8. exp / nbf / iat skew ----

#[tokio::test]
async fn attack_clock_skew_beyond_the_leeway_is_refused() {
    let srv = Server::start_with_idp().await;
    let support = srv.agent("support-v2");
    let leeway = mandate_server::Config::default().tokens.leeway;
    assert_eq!(leeway, 30, "the bounds below assume the default leeway");
    let now = srv.now();

    // User tokens: beyond the leeway refused, within it accepted.
    for (what, claims, ok) in [
        (
            "expired long ago",
            json!({"iat": now - 600, "exp": now - 120}),
            false,
        ),
        (
            "expired beyond the leeway",
            json!({"exp": now - leeway - 1}),
            false,
        ),
        ("not valid yet", json!({"nbf": now + leeway + 5}), false),
        (
            "issued in the future",
            json!({"iat": now + 3600, "nbf": now, "exp": now + 4000}),
            false,
        ),
        (
            "nbf within the leeway",
            json!({"nbf": now + leeway - 10}),
            true,
        ),
        (
            "iat within the leeway",
            json!({"iat": now + leeway - 10}),
            true,
        ),
    ] {
        let r = srv.exchange(&support, &srv.idp_token(claims), SCOPE).await;
        if ok {
            assert_eq!(r.status, 200, "{what}: {}", r.body);
        } else {
            assert_eq!(
                (r.status, r.error()),
                (400, "invalid_grant"),
                "{what}: {}",
                r.body
            );
            srv.deny_event(&r).await;
        }
    }

    // Client assertions: the same bounds.
    let assertion = |changes: Value| {
        let mut c = assertion_claims(&srv, &support);
        for (k, v) in changes.as_object().unwrap() {
            c[k] = v.clone();
        }
        support.key.sign(&c)
    };
    for (what, changes, ok) in [
        (
            "expired beyond the leeway",
            json!({"iat": now - 90, "exp": now - leeway - 1}),
            false,
        ),
        (
            "issued in the future",
            json!({"iat": now + 3600, "exp": now + 3660}),
            false,
        ),
        ("not valid yet", json!({"nbf": now + leeway + 5}), false),
        (
            "iat within the leeway",
            json!({"iat": now + leeway - 10, "exp": now + 60}),
            true,
        ),
    ] {
        let r = srv
            .token(&form_with_assertion(&srv.alice(), &assertion(changes)))
            .await;
        if ok {
            assert_eq!(r.status, 200, "{what}: {}", r.body);
        } else {
            assert_eq!(
                (r.status, r.error()),
                (401, "invalid_client"),
                "{what}: {}",
                r.body
            );
            srv.deny_event(&r).await;
        }
    }

    // A Mandate token past its `exp` plus the leeway is dead everywhere.
    let t = alice_token(&srv, SCOPE).await;
    let exp = peek(&t)["exp"].as_i64().unwrap();
    srv.clock.advance(exp - srv.now() + leeway + 1);
    assert!(!srv.active(&t).await);
    let r = srv.hop(&srv.agent("analytics-v1"), &t, SCOPE).await;
    refused(&srv, &r, 400, "invalid_grant").await;
    srv.shutdown().await;
}

// ---- 9. Replayed client assertion ----

#[tokio::test]
async fn attack_replayed_client_assertion_is_refused() {
    let srv = Server::start().await;
    let support = srv.agent("support-v2");
    let assertion = srv.assertion(&support);
    let form = form_with_assertion(&srv.alice(), &assertion);
    srv.token(&form).await.access_token();
    let r = srv.token(&form).await;
    refused(&srv, &r, 401, "invalid_client").await;
    // Replayed at another endpoint that takes client authentication.
    let t = alice_token(&srv, SCOPE).await;
    let r = srv
        .post_form(
            "/oauth2/introspect",
            &[
                ("token".to_owned(), t),
                ("client_assertion_type".to_owned(), JWT_BEARER.to_owned()),
                ("client_assertion".to_owned(), assertion),
            ],
        )
        .await;
    r.expect_oauth_error(401, "invalid_client");
    assert!(r.body.get("active").is_none(), "{}", r.body);
    srv.shutdown().await;
}

// ---- 10. Audience reuse ----

#[tokio::test]
async fn attack_token_reused_for_another_audience_is_refused() {
    let srv = Server::start_configured(|c| {
        c.gateway.listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    })
    .await;
    let support = srv.agent("support-v2");
    let analytics = srv.agent("analytics-v1");
    let gw = super::gateway::gw(&srv);
    let alice = srv.user_token_with(ALICE, &["support"], 3600, json!({"region": "emea"}));
    let gw_get = |token: String| {
        srv.send(
            reqwest::Client::new()
                .get(format!("{gw}/customers/9821"))
                .bearer_auth(token),
        )
    };

    // Control: a token for the gateway is good there.
    let mut form = without(exchange_form(&alice, TYPE_JWT, SCOPE, &[]), &["resource"]);
    form.push(("resource".into(), gw.clone()));
    let for_gateway = srv.token_as(&support, form).await.access_token();
    gw_get(for_gateway).await.expect(200);

    // A token for the CRM, presented at the gateway: refused.
    let for_crm = srv.exchange(&support, &alice, SCOPE).await.access_token();
    let r = gw_get(for_crm.clone()).await;
    r.expect(401);
    assert!(r.header("www-authenticate").contains("invalid_token"));
    // Introspection tells a resource server whom it is for.
    assert_eq!(srv.introspect(&for_crm).await["aud"], CRM);

    // A hop cannot move it to another audience either.
    let mut form = without(
        exchange_form(&for_crm, TYPE_ACCESS_TOKEN, SCOPE, &[]),
        &["resource"],
    );
    form.push(("resource".into(), gw.clone()));
    let r = srv.token_as(&analytics, form).await;
    refused(&srv, &r, 400, "invalid_target").await;

    // An access token is no client assertion (its audience is the CRM, not the issuer).
    let r = srv.token(&form_with_assertion(&alice, &for_crm)).await;
    refused(&srv, &r, 401, "invalid_client").await;
    // A client assertion is no user token.
    let r = srv
        .exchange(&support, &srv.assertion(&support), SCOPE)
        .await;
    refused(&srv, &r, 400, "invalid_grant").await;
    srv.shutdown().await;
}

// ---- 11. Chain forgery ----

#[tokio::test]
async fn attack_forged_delegation_chain_is_refused() {
    let srv = Server::start().await;
    let support = srv.agent("support-v2");
    let analytics = srv.agent("analytics-v1");
    let real = alice_token(&srv, "crm.customers:read tickets:read").await;
    let mandate_kid = jsonwebtoken::decode_header(&real).unwrap().kid.unwrap();

    // A hand-made token with a forged `act` chain (and a wider scope), signed by a key Mandate
    // does not hold, under Mandate's kid and under its own.
    let evil = TestKey::ed25519("evil-k1");
    let mut claims = peek(&real);
    claims["act"] = json!({"sub": "agent:analytics-v1", "sub_profile": "agent",
                           "act": {"sub": "agent:support-v2", "sub_profile": "agent"}});
    claims["scope"] = json!("crm.customers:read tickets:read billing.invoices:read");
    claims["jti"] = json!(unique("forged"));
    for kid in [mandate_kid.as_str(), "evil-k1"] {
        let header = json!({"alg": "EdDSA", "kid": kid, "typ": "at+jwt"});
        let forged = evil.sign_with_header(&header, &claims);
        assert!(!srv.active(&forged).await);
        let r = srv.hop(&analytics, &forged, "billing.invoices:read").await;
        refused(&srv, &r, 400, "invalid_grant").await;
    }

    // An agent the current actor may not delegate to.
    let key = TestKey::ed25519("mallory-k1");
    srv.register_agent("mallory", &[SCOPE], "observe", &[&key])
        .await;
    let mallory = Agent {
        id: "mallory".into(),
        key,
    };
    let r = srv.hop(&mallory, &real, SCOPE).await;
    refused(&srv, &r, 400, "invalid_grant").await;
    assert!(r.description().contains("delegate"), "{}", r.body);

    // An agent already in the chain, taking back a token that names another agent as actor.
    let hop = srv.hop(&analytics, &real, SCOPE).await.access_token();
    let r = srv.hop(&support, &hop, SCOPE).await;
    refused(&srv, &r, 400, "invalid_grant").await;

    // A user token that brings its own `act` claim: the issued chain is Mandate's, not the
    // token's.
    let with_act = srv.user_token_with(
        ALICE,
        &["support"],
        3600,
        json!({"act": {"sub": "agent:analytics-v1", "act": {"sub": "agent:root"}}}),
    );
    let r = srv.exchange(&support, &with_act, SCOPE).await;
    let c = srv.verify(&r.access_token(), CRM).await.unwrap().claims;
    assert_eq!(c["act"]["sub"], "agent:support-v2");
    assert!(c["act"].get("act").is_none(), "{c}");
    let task = c["task"].as_str().unwrap();
    let e = srv
        .audit(&format!("task={task}&decision=allow"))
        .await
        .into_iter()
        .find(|e| e["jti"] == c["jti"])
        .expect("an allow event");
    assert_eq!(e["chain"], json!(["support-v2"]));
    srv.shutdown().await;
}

// ---- 12. Scope escalation ----

/// What Alice (group `support`) may do through support-v2: her rights within its ceiling.
const ALICE_VIA_SUPPORT: &[&str] = &[
    "crm.customers:read",
    "tickets:read",
    "tickets:create",
    "email:send",
    "mcp.crm.lookup_customer:call",
];

#[tokio::test]
async fn attack_scope_escalation_in_every_parameter_is_refused_or_narrowed() {
    let srv = Server::start_configured(|c| {
        c.audiences = vec![CRM.to_owned(), "crm".to_owned()];
    })
    .await;
    let support = srv.agent("support-v2");
    let analytics = srv.agent("analytics-v1");
    let bob = srv.user_token(BOB, &["finance"], 3600);

    // `scope`: beyond the agent's ceiling (Bob may read invoices, support-v2 may not) and beyond
    // the user's rights (analytics-v1 may read invoices, Alice may not).
    let r = srv.exchange(&support, &bob, "billing.invoices:read").await;
    refused(&srv, &r, 400, "invalid_scope").await;
    let r = srv
        .exchange(&analytics, &srv.alice(), "billing.invoices:read")
        .await;
    refused(&srv, &r, 400, "invalid_scope").await;
    // In `intersect` mode the extra scope is dropped, never granted.
    let form = exchange_form(
        &srv.alice(),
        TYPE_JWT,
        "crm.customers:read billing.invoices:read",
        &[("scope_mode", "intersect")],
    );
    let r = srv.token_as(&analytics, form).await;
    assert_eq!(r.body["scope"], "crm.customers:read", "{}", r.body);

    // Wildcards, odd separators, case and NUL: refused (issued scopes are always concrete).
    for scope in [
        "*",
        "*:*",
        "crm.*:read",
        "tickets:*",
        "crm.customers:*",
        "crm.customers:read billing.invoices:read\u{0}",
        "crm.customers:read\tbilling.invoices:read",
        "crm.customers:read,billing.invoices:read",
        "crm.customers:read%20billing.invoices:read",
        "CRM.CUSTOMERS:READ",
    ] {
        let r = srv.exchange(&support, &srv.alice(), scope).await;
        client_error(&format!("scope {scope:?}"), &r);
        assert!(
            ["invalid_scope", "invalid_request"].contains(&r.error()),
            "scope {scope:?}: {}",
            r.body
        );
        srv.deny_event(&r).await;
    }
    // What is issued is exactly what was asked, within the user's rights and the ceiling.
    let r = srv
        .exchange(&support, &srv.alice(), "tickets:read crm.customers:read")
        .await;
    let issued = r.body["scope"].as_str().unwrap().to_owned();
    assert_eq!(scopes(&issued), scopes("crm.customers:read tickets:read"));
    assert!(
        scopes(&issued)
            .iter()
            .all(|s| ALICE_VIA_SUPPORT.contains(&s.as_str()))
    );
    assert_eq!(peek(&r.access_token())["scope"], issued.as_str());

    // `resource` / `audience` not served by this deployment.
    for (field, value) in [
        ("resource", "https://evil.example"),
        ("audience", "evil"),
        ("resource", "https://crm.example.evil.example"),
        ("resource", "https://crm.example/../admin"),
    ] {
        let mut form = without(
            exchange_form(&srv.alice(), TYPE_JWT, SCOPE, &[]),
            &["resource"],
        );
        form.push((field.to_owned(), value.to_owned()));
        let r = srv.token_as(&support, form).await;
        refused(&srv, &r, 400, "invalid_target").await;
    }
    // An allowed resource alongside a forbidden one does not smuggle it in.
    let form = exchange_form(
        &srv.alice(),
        TYPE_JWT,
        SCOPE,
        &[("resource", "https://evil.example")],
    );
    let r = srv.token_as(&support, form).await;
    refused(&srv, &r, 400, "invalid_target").await;

    // `stage` above the agent's maximum: never issued (it waits for a human); garbage refused.
    // (analytics-v1 may reach only `observe`.)
    for stage in ["execute", "EXECUTE", "god", "draft\u{0}execute", ""] {
        let form = exchange_form(&srv.alice(), TYPE_JWT, SCOPE, &[("stage", stage)]);
        let r = srv.token_as(&analytics, form).await;
        if r.status == 200 {
            // An empty `stage` is no stage: the default, never more.
            assert_eq!(r.body["stage"], "observe", "stage {stage:?}: {}", r.body);
            assert_eq!(peek(&r.access_token())["stage"], "observe");
        } else {
            client_error(&format!("stage {stage:?}"), &r);
        }
    }

    // `ttl` beyond the maximum is capped; nonsense refused.
    let form = exchange_form(&srv.alice(), TYPE_JWT, SCOPE, &[("ttl", "31536000")]);
    let c = peek(&srv.token_as(&support, form).await.access_token());
    assert!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap() <= 3600);
    for ttl in ["-1", "0", "99999999999999999999", "3600.5", "1e9"] {
        let form = exchange_form(&srv.alice(), TYPE_JWT, SCOPE, &[("ttl", ttl)]);
        let r = srv.token_as(&support, form).await;
        refused(&srv, &r, 400, "invalid_request").await;
    }

    // A hop asking more than its parent, or a higher stage than its parent's.
    let parent = alice_token(&srv, SCOPE).await;
    for (scope, extra) in [
        ("crm.customers:read billing.invoices:read", vec![]),
        ("billing.invoices:read", vec![]),
        (SCOPE, vec![("stage", "draft")]),
    ] {
        let form = exchange_form(&parent, TYPE_ACCESS_TOKEN, scope, &extra);
        let r = srv.token_as(&analytics, form).await;
        client_error(&format!("hop for {scope:?} {extra:?}"), &r);
        srv.deny_event(&r).await;
    }
    // A hop in `intersect` mode keeps only what the parent had.
    let form = exchange_form(
        &parent,
        TYPE_ACCESS_TOKEN,
        "crm.customers:read billing.invoices:read",
        &[("scope_mode", "intersect")],
    );
    let r = srv.token_as(&analytics, form).await;
    assert_eq!(r.body["scope"], SCOPE, "{}", r.body);
    assert_eq!(peek(&r.access_token())["scope"], SCOPE);

    // Repeated parameters: the second `scope` (or `stage`, `ttl`, `subject_token`) never wins.
    for (field, value) in [
        ("scope", "billing.invoices:read"),
        ("stage", "execute"),
        ("ttl", "86400"),
        ("subject_token", bob.as_str()),
        ("scope_mode", "intersect"),
    ] {
        let mut form = exchange_form(&srv.alice(), TYPE_JWT, SCOPE, &[]);
        if field == "scope_mode" || field == "stage" || field == "ttl" {
            form.push((field.to_owned(), value.to_owned()));
        }
        form.push((field.to_owned(), value.to_owned()));
        let r = srv.token_as(&support, form).await;
        refused(&srv, &r, 400, "invalid_request").await;
    }
    srv.shutdown().await;
}

// ---- 13. SQL injection in list filters ----

/// Values that would widen a query built by string concatenation, or break it.
const INJECTIONS: &[&str] = &[
    "' OR 1=1 --",
    "' OR '1'='1",
    "\" OR \"\"=\"",
    "x' UNION SELECT * FROM agents --",
    "x'; DROP TABLE audit_events; --",
    "%",
    "_",
    "*",
    "\\",
    "alice@example.com' --",
];

/// The rows of a list answer (`{"events": [...]}`, `{"tasks": [...]}`, …).
fn rows(body: &Value) -> usize {
    body.as_object()
        .and_then(|o| o.values().find_map(Value::as_array))
        .map_or(0, Vec::len)
}

#[tokio::test]
async fn attack_sql_injection_in_list_filters_leaks_nothing() {
    let srv = Server::start().await;
    let support = srv.agent("support-v2");
    // Some rows to leak: allowed and denied exchanges by two users, a task.
    alice_token(&srv, SCOPE).await;
    let bob = srv.user_token(BOB, &["finance"], 3600);
    srv.exchange(&support, &bob, SCOPE).await.expect(200);
    srv.exchange(&support, &bob, "billing.invoices:read")
        .await
        .expect(400);
    srv.admin_post(
        "/v1/tasks",
        &json!({"id": "sqli-task", "purpose": "p", "input": "i", "agent": "support-v2"}),
    )
    .await
    .expect(201);
    let events_before = srv.audit("limit=10000").await.len();
    assert!(events_before >= 3);
    let tasks_before = rows(&srv.admin_get("/v1/tasks").await.expect(200).body);
    assert!(tasks_before >= 1);

    let get = |path: &str, field: &str, value: &str| {
        srv.send(
            srv.admin_req(reqwest::Method::GET, path)
                .query(&[(field, value)]),
        )
    };
    let lists: &[(&str, &[&str])] = &[
        (
            "/v1/audit",
            &[
                "user", "agent", "task", "action", "resource", "decision", "kind", "since",
                "until", "on", "format", "order", "after", "limit",
            ],
        ),
        ("/v1/tasks", &["agent", "user", "status", "limit"]),
        (
            "/v1/approvals",
            &["agent", "user", "status", "kind", "limit"],
        ),
    ];
    for (path, fields) in lists {
        for field in *fields {
            for value in INJECTIONS {
                let r = get(path, field, value).await;
                let what = format!("{path}?{field}={value}");
                assert!(
                    r.status == 200 || r.status == 400,
                    "{what}: expected 200 or 400, got {}: {}",
                    r.status,
                    r.body
                );
                if r.status == 200 {
                    assert_eq!(rows(&r.body), 0, "{what} leaked rows: {}", r.body);
                }
            }
        }
    }

    // The tables are intact, and the server serves as before.
    assert_eq!(
        rows(&srv.admin_get("/v1/tasks").await.expect(200).body),
        tasks_before
    );
    let events_after = srv.audit("limit=10000").await;
    assert!(events_after.len() >= events_before);
    assert!(events_after.iter().any(|e| e["user"] == BOB));
    srv.admin_get("/v1/audit/verify").await.expect(200);
    alice_token(&srv, SCOPE).await;
    srv.shutdown().await;
}

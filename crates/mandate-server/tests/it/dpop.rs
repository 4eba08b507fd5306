//! DPoP (RFC 9449) end to end: the token endpoint binds tokens to the key a proof shows
//! (`cnf.jkt`, `token_type: DPoP`), an agent registered with `require_dpop` gets no unbound
//! token, proofs are single-use and bound to the request (method, URL, time, server nonce), and
//! the gateway accepts a bound token only with a fresh proof by the bound key for that very
//! request — so a token copied out of an agent's memory is useless.

use mandate_token::dpop::{key_thumbprint, prove};
use mandate_token::{Alg, SigningKey};
use serde_json::json;

use super::attacks_transport::{Upstream, gateway_events, gw_url, next_gateway_event, start};
use super::harness::*;

const SCOPE: &str = "crm.customers:read";

/// A token request by `support-v2` for the gateway, sending `proof` as `DPoP` when given.
async fn request(s: &Server, proof: Option<String>) -> Reply {
    let mut form = exchange_form(&s.alice(), TYPE_JWT, SCOPE, &[]);
    form.retain(|(k, _)| k != "resource");
    form.push(("resource".into(), gw_url(s)));
    form.extend(s.client_auth(&s.agent("support-v2")));
    let mut req = reqwest::Client::new()
        .post(s.at("/oauth2/token"))
        .form(&form);
    if let Some(p) = proof {
        req = req.header("DPoP", p);
    }
    s.send(req).await
}

fn token_proof(s: &Server, key: &SigningKey, nonce: Option<&str>) -> String {
    prove(key, "POST", &s.at("/oauth2/token"), None, nonce, s.now()).unwrap()
}

#[tokio::test]
async fn a_proof_at_the_token_endpoint_binds_the_token_to_the_key() {
    let up = Upstream::start().await;
    let s = start(&up, |_| {}).await;
    let key = SigningKey::generate(Alg::EdDSA).unwrap();
    let r = request(&s, Some(token_proof(&s, &key, None))).await;
    r.expect(200);
    assert_eq!(r.body["token_type"], "DPoP", "{}", r.body);
    let token = r.access_token();
    let jkt = key_thumbprint(&key).unwrap();
    assert_eq!(peek(&token)["cnf"]["jkt"], json!(jkt));
    let intro = s.introspect(&token).await;
    assert_eq!(intro["cnf"]["jkt"], json!(jkt), "{intro}");
    assert_eq!(intro["token_type"], "DPoP");
    // Without a proof the token is a plain bearer token.
    let plain = request(&s, None).await;
    plain.expect(200);
    assert_eq!(plain.body["token_type"], "Bearer");
    assert!(peek(&plain.access_token()).get("cnf").is_none());
    // The metadata says which proof algorithms are accepted.
    let meta: serde_json::Value = reqwest::get(s.at("/.well-known/oauth-authorization-server"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let algs = meta["dpop_signing_alg_values_supported"]
        .as_array()
        .unwrap();
    assert!(algs.contains(&json!("EdDSA")) && algs.contains(&json!("ES256")));
    s.shutdown().await;
}

#[tokio::test]
async fn an_agent_that_requires_dpop_gets_no_token_without_a_valid_proof() {
    let up = Upstream::start().await;
    let s = start(&up, |_| {}).await;
    s.admin_patch("/v1/agents/support-v2", &json!({"require_dpop": true}))
        .await
        .expect(200);
    let r = request(&s, None).await;
    r.expect_oauth_error(400, "invalid_dpop_proof");
    assert!(r.description().contains("support-v2"), "{}", r.body);
    let e = s.deny_event(&r).await;
    assert!(
        e["reason"].as_str().unwrap().contains("invalid_dpop_proof"),
        "{e}"
    );

    let key = SigningKey::generate(Alg::ES256).unwrap();
    // A proof for another URL or method, or too old, is refused.
    for (what, proof) in [
        (
            "another URL",
            prove(&key, "POST", &gw_url(&s), None, None, s.now()).unwrap(),
        ),
        (
            "another method",
            prove(&key, "GET", &s.at("/oauth2/token"), None, None, s.now()).unwrap(),
        ),
        (
            "too old",
            prove(
                &key,
                "POST",
                &s.at("/oauth2/token"),
                None,
                None,
                s.now() - 600,
            )
            .unwrap(),
        ),
        ("not a JWT", "garbage".to_owned()),
    ] {
        request(&s, Some(proof))
            .await
            .expect_oauth_error(400, "invalid_dpop_proof");
        let _ = what;
    }
    // A good proof works once; replayed, it is refused.
    let proof = token_proof(&s, &key, None);
    let r = request(&s, Some(proof.clone())).await;
    r.expect(200);
    assert_eq!(r.body["token_type"], "DPoP");
    let again = request(&s, Some(proof)).await;
    again.expect_oauth_error(400, "invalid_dpop_proof");
    assert!(
        again.description().contains("already used"),
        "{}",
        again.body
    );
    s.shutdown().await;
}

#[tokio::test]
async fn a_server_nonce_is_asked_for_then_accepted() {
    let up = Upstream::start().await;
    let s = start(&up, |c| c.tokens.dpop_nonce = true).await;
    let key = SigningKey::generate(Alg::EdDSA).unwrap();
    let r = request(&s, Some(token_proof(&s, &key, None))).await;
    r.expect_oauth_error(400, "use_dpop_nonce");
    let nonce = r.header("dpop-nonce").to_owned();
    assert!(!nonce.is_empty(), "{:?}", r.headers);
    let forged = request(
        &s,
        Some(token_proof(&s, &key, Some("1.AAAAAAAAAAAAAAAAAAAAAA"))),
    )
    .await;
    forged.expect_oauth_error(400, "use_dpop_nonce");
    let ok = request(&s, Some(token_proof(&s, &key, Some(&nonce)))).await;
    ok.expect(200);
    assert!(!ok.header("dpop-nonce").is_empty());
    s.shutdown().await;
}

#[tokio::test]
async fn a_bound_token_needs_a_fresh_proof_by_its_key_for_each_gateway_request() {
    let up = Upstream::start().await;
    let s = start(&up, |_| {}).await;
    let key = SigningKey::generate(Alg::EdDSA).unwrap();
    let token = request(&s, Some(token_proof(&s, &key, None)))
        .await
        .access_token();
    let url = format!("{}/customers/1", gw_url(&s));
    let get = |auth: String, proof: Option<String>| {
        let mut req = reqwest::Client::new()
            .get(&url)
            .header("authorization", auth);
        if let Some(p) = proof {
            req = req.header("DPoP", p);
        }
        req
    };
    let proof_for = |k: &SigningKey, method: &str, u: &str, t: &str| {
        prove(k, method, u, Some(t), None, s.now()).unwrap()
    };

    // The stolen token alone, as a bearer token: refused, and the challenge asks for DPoP.
    let denies = gateway_events(&s, "deny").await.len();
    let r = s.send(get(format!("Bearer {token}"), None)).await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(
        r.header("www-authenticate").starts_with("DPoP "),
        "{:?}",
        r.headers
    );
    next_gateway_event(&s, "deny", denies).await;
    // The DPoP scheme without a proof, or with one by another key, for another URL or method,
    // or for another token: refused with invalid_dpop_proof.
    let thief = SigningKey::generate(Alg::EdDSA).unwrap();
    for (what, proof) in [
        ("no proof", None),
        (
            "the thief's key",
            Some(proof_for(&thief, "GET", &url, &token)),
        ),
        (
            "another path",
            Some(proof_for(
                &key,
                "GET",
                &format!("{}/customers/2", gw_url(&s)),
                &token,
            )),
        ),
        (
            "another method",
            Some(proof_for(&key, "POST", &url, &token)),
        ),
        (
            "another token",
            Some(proof_for(&key, "GET", &url, "other-token")),
        ),
    ] {
        let r = s.send(get(format!("DPoP {token}"), proof)).await;
        assert_eq!(r.status, 401, "{what}: {}", r.body);
        assert_eq!(r.body["error"], "invalid_dpop_proof", "{what}: {}", r.body);
        assert!(
            r.header("www-authenticate").contains("invalid_dpop_proof"),
            "{what}"
        );
    }
    assert_eq!(up.count(), 0, "nothing reached the upstream");

    // The agent, with its key: accepted; the proof and token never reach the upstream.
    let proof = proof_for(&key, "GET", &url, &token);
    s.send(get(format!("DPoP {token}"), Some(proof.clone())))
        .await
        .expect(200);
    let seen = up.seen();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].all("dpop").is_empty());
    assert!(
        seen[0]
            .all("authorization")
            .iter()
            .all(|a| !a.contains(&token))
    );
    // The same proof again (a replay): refused.
    let r = s.send(get(format!("DPoP {token}"), Some(proof))).await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.body["error"], "invalid_dpop_proof");
    assert!(
        r.body["error_description"]
            .as_str()
            .unwrap()
            .contains("already used")
    );
    // An unbound token presented with the DPoP scheme: refused.
    let plain = request(&s, None).await.access_token();
    let r = s
        .send(get(
            format!("DPoP {plain}"),
            Some(proof_for(&key, "GET", &url, &plain)),
        ))
        .await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(up.count(), 1);
    s.shutdown().await;
}

//! The `--dev` test IdP as an OpenID Connect provider (authorization code with PKCE): discovery,
//! the sign-in page, codes, the token endpoint, and ID tokens verified the way a relying party
//! would (`jsonwebtoken` with the keys from `jwks_uri`).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use mandate_server::dev_oidc::{CONSOLE_CLIENT_ID, console_redirect_uri};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::harness::{ALICE, CAROL, Reply, Server, peek, unique};

const ADMIN: &str = "admin@example.com";

/// A PKCE pair: a fresh verifier and its S256 challenge.
fn pkce() -> (String, String) {
    let verifier = mandate_token::random_id::<32>().unwrap();
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A valid authorization request of the console.
fn auth_request(s: &Server, challenge: &str, state: &str, nonce: &str) -> Vec<(String, String)> {
    pairs(&[
        ("response_type", "code"),
        ("client_id", CONSOLE_CLIENT_ID),
        ("redirect_uri", &console_redirect_uri(&s.url)),
        ("scope", "openid"),
        ("state", state),
        ("nonce", nonce),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
    ])
}

fn set(form: &mut Vec<(String, String)>, key: &str, value: &str) {
    form.retain(|(k, _)| k != key);
    form.push((key.to_owned(), value.to_owned()));
}

async fn authorize_get(s: &Server, params: &[(String, String)]) -> Reply {
    s.send(s.http.get(s.at("/dev-idp/authorize")).query(params))
        .await
}

async fn authorize_post(s: &Server, params: &[(String, String)], user: &str) -> Reply {
    let mut form = params.to_vec();
    form.push(("user".into(), user.into()));
    s.post_form("/dev-idp/authorize", &form).await
}

/// The query parameters of a redirect's `Location`, after checking where it points.
fn redirected_to(s: &Server, r: &Reply) -> Vec<(String, String)> {
    r.expect(303);
    let location = r.header("location");
    let (base, query) = location.split_once('?').expect("the redirect has a query");
    assert_eq!(base, console_redirect_uri(&s.url));
    form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect()
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Signs in as `user` and returns the code, checking that `state` came back.
async fn code_for(s: &Server, user: &str, challenge: &str, nonce: &str) -> String {
    let state = unique("state");
    let r = authorize_post(s, &auth_request(s, challenge, &state, nonce), user).await;
    let params = redirected_to(s, &r);
    assert_eq!(param(&params, "state"), Some(state.as_str()));
    assert_eq!(param(&params, "error"), None);
    param(&params, "code").expect("a code").to_owned()
}

async fn redeem(s: &Server, code: &str, verifier: &str) -> Reply {
    let form = pairs(&[
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", &console_redirect_uri(&s.url)),
        ("client_id", CONSOLE_CLIENT_ID),
        ("code_verifier", verifier),
    ]);
    s.post_form("/dev-idp/token", &form).await
}

async fn discovery(s: &Server) -> Value {
    let r = s
        .send(
            s.http
                .get(s.at("/dev-idp/.well-known/openid-configuration")),
        )
        .await;
    r.expect(200);
    r.body
}

/// Verifies an ID token as a relying party: keys from the discovery document's `jwks_uri`.
async fn verify_id_token(s: &Server, token: &str) -> Value {
    let config = discovery(s).await;
    let jwks_uri = config["jwks_uri"].as_str().unwrap();
    let r = s.send(s.http.get(jwks_uri)).await;
    r.expect(200);
    let jwks: JwkSet = serde_json::from_value(r.body).unwrap();
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.typ.as_deref(), Some("JWT"));
    let jwk = jwks.find(header.kid.as_deref().unwrap()).unwrap();
    let mut v = Validation::new(Algorithm::EdDSA);
    v.set_audience(&[CONSOLE_CLIENT_ID]);
    v.set_issuer(&[config["issuer"].as_str().unwrap()]);
    v.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
    v.leeway = 5;
    jsonwebtoken::decode::<Value>(token, &DecodingKey::from_jwk(jwk).unwrap(), &v)
        .unwrap()
        .claims
}

fn assert_html_headers(r: &Reply) {
    assert!(r.header("content-type").starts_with("text/html"));
    assert_eq!(
        r.header("content-security-policy"),
        mandate_server::console::CSP
    );
    assert_eq!(r.header("x-content-type-options"), "nosniff");
    assert_eq!(r.header("referrer-policy"), "no-referrer");
    assert_eq!(r.header("cache-control"), "no-store");
}

fn html(r: &Reply) -> &str {
    r.body.as_str().expect("an HTML body")
}

#[tokio::test]
async fn discovery_names_the_endpoints_and_what_they_support() {
    let s = Server::start().await;
    let c = discovery(&s).await;
    let iss = format!("{}/dev-idp", s.url);
    assert_eq!(c["issuer"], iss.as_str());
    assert_eq!(c["authorization_endpoint"], format!("{iss}/authorize"));
    assert_eq!(c["token_endpoint"], format!("{iss}/token"));
    assert_eq!(c["jwks_uri"], format!("{iss}/jwks.json"));
    assert_eq!(c["response_types_supported"], serde_json::json!(["code"]));
    assert_eq!(
        c["grant_types_supported"],
        serde_json::json!(["authorization_code"])
    );
    assert_eq!(c["subject_types_supported"], serde_json::json!(["public"]));
    assert_eq!(
        c["id_token_signing_alg_values_supported"],
        serde_json::json!(["EdDSA"])
    );
    assert_eq!(
        c["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );
    assert_eq!(
        c["token_endpoint_auth_methods_supported"],
        serde_json::json!(["none"])
    );
    assert_eq!(c["scopes_supported"], serde_json::json!(["openid"]));
    for claim in ["sub", "nonce", "groups", "region"] {
        assert!(
            c["claims_supported"]
                .as_array()
                .unwrap()
                .contains(&claim.into()),
            "{claim}"
        );
    }
    // The JWKS it names is served.
    let r = s.send(s.http.get(c["jwks_uri"].as_str().unwrap())).await;
    r.expect(200);
    assert!(!r.body["keys"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn the_sign_in_page_offers_the_demo_users_and_the_operator() {
    let s = Server::start().await;
    let (_, challenge) = pkce();
    let r = authorize_get(&s, &auth_request(&s, &challenge, "st<a>te", "n1")).await;
    r.expect(200);
    assert_html_headers(&r);
    let page = html(&r);
    assert!(page.contains("<html lang=\"en\">"), "{page}");
    assert!(page.contains("<title>Sign in to the demo world</title>"));
    assert!(page.contains("<h1>Sign in to the demo world</h1>"));
    assert!(page.contains("<main>"));
    assert!(page.contains("mandate serve --dev"));
    assert!(
        page.contains(r#"<meta name="viewport" content="width=device-width, initial-scale=1">"#)
    );
    assert!(page.contains(r#"<link rel="stylesheet" href="/console/assets/console.css">"#));
    for button in [
        "Sign in as alice@example.com (support)",
        "Sign in as bob@example.com (finance)",
        "Sign in as carol@example.com (support, approver)",
        "Sign in as admin@example.com (admin)",
    ] {
        assert!(page.contains(button), "{button} in {page}");
    }
    assert_eq!(
        page.matches(r#"<form method="post" action="/dev-idp/authorize">"#)
            .count(),
        4
    );
    assert_eq!(page.matches(r#"<button type="submit">"#).count(), 4);
    // The request's parameters ride along, escaped.
    assert!(page.contains(&format!(
        r#"<input type="hidden" name="code_challenge" value="{challenge}">"#
    )));
    assert!(page.contains(r#"name="state" value="st&lt;a&gt;te""#));
    assert!(page.contains(r#"<input type="hidden" name="user" value="admin@example.com">"#));
}

#[tokio::test]
async fn a_full_sign_in_yields_an_id_token_a_relying_party_accepts() {
    let s = Server::start().await;
    let (verifier, challenge) = pkce();
    let nonce = unique("nonce");
    let code = code_for(&s, CAROL, &challenge, &nonce).await;
    let r = redeem(&s, &code, &verifier).await;
    r.expect(200);
    assert_eq!(r.header("cache-control"), "no-store");
    assert_eq!(r.body["token_type"], "Bearer");
    assert_eq!(r.body["expires_in"], 300);
    assert_eq!(r.body["scope"], "openid");

    let claims = verify_id_token(&s, r.body["id_token"].as_str().unwrap()).await;
    assert_eq!(claims["iss"], format!("{}/dev-idp", s.url));
    assert_eq!(claims["aud"], CONSOLE_CLIENT_ID);
    assert_eq!(claims["sub"], CAROL);
    assert_eq!(claims["nonce"], nonce.as_str());
    assert_eq!(claims["groups"], serde_json::json!(["support", "approver"]));
    assert_eq!(claims["region"], "emea");
    let now = s.now();
    assert!((claims["iat"].as_i64().unwrap() - now).abs() <= 5);
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        300
    );
    assert!(claims["auth_time"].as_i64().unwrap() <= claims["iat"].as_i64().unwrap());

    // The access token is a user token of the test IdP that Mandate itself accepts.
    let access = r.body["access_token"].as_str().unwrap();
    let payload = peek(access);
    assert_eq!(payload["iss"], format!("{}/dev-idp", s.url));
    assert_eq!(payload["sub"], CAROL);
    assert_eq!(payload["region"], "emea");
    let agent = s.agent("support-v2");
    s.exchange(&agent, access, "crm.customers:read")
        .await
        .expect(200);
}

#[tokio::test]
async fn the_operator_signs_in_with_group_admin_and_no_region() {
    let s = Server::start().await;
    let (verifier, challenge) = pkce();
    let code = code_for(&s, ADMIN, &challenge, "n").await;
    let r = redeem(&s, &code, &verifier).await;
    r.expect(200);
    let claims = verify_id_token(&s, r.body["id_token"].as_str().unwrap()).await;
    assert_eq!(claims["sub"], ADMIN);
    assert_eq!(claims["groups"], serde_json::json!(["admin"]));
    assert!(claims.get("region").is_none(), "{claims}");
}

#[tokio::test]
async fn a_code_is_used_once() {
    let s = Server::start().await;
    let (verifier, challenge) = pkce();
    let code = code_for(&s, ALICE, &challenge, "n").await;
    redeem(&s, &code, &verifier).await.expect(200);
    let again = redeem(&s, &code, &verifier).await;
    again.expect_oauth_error(400, "invalid_grant");
    assert_eq!(again.header("cache-control"), "no-store");
}

#[tokio::test]
async fn a_wrong_verifier_is_invalid_grant_and_burns_the_code() {
    let s = Server::start().await;
    let (verifier, challenge) = pkce();
    let (other, _) = pkce();
    let code = code_for(&s, ALICE, &challenge, "n").await;
    redeem(&s, &code, &other)
        .await
        .expect_oauth_error(400, "invalid_grant");
    // Consumed: the right verifier comes too late.
    redeem(&s, &code, &verifier)
        .await
        .expect_oauth_error(400, "invalid_grant");
    // A verifier of the wrong shape.
    let code = code_for(&s, ALICE, &challenge, "n").await;
    redeem(&s, &code, "short")
        .await
        .expect_oauth_error(400, "invalid_grant");
}

#[tokio::test]
async fn an_expired_code_is_invalid_grant() {
    let s = Server::start().await;
    let (verifier, challenge) = pkce();
    let code = code_for(&s, ALICE, &challenge, "n").await;
    s.clock.advance(61);
    redeem(&s, &code, &verifier)
        .await
        .expect_oauth_error(400, "invalid_grant");
}

#[tokio::test]
async fn the_token_endpoint_refuses_what_it_does_not_know() {
    let s = Server::start().await;
    let (verifier, challenge) = pkce();
    let redirect = console_redirect_uri(&s.url);

    let code = code_for(&s, ALICE, &challenge, "n").await;
    let mut form = pairs(&[
        ("grant_type", "authorization_code"),
        ("code", &code),
        ("redirect_uri", &format!("{}/elsewhere", s.url)),
        ("client_id", CONSOLE_CLIENT_ID),
        ("code_verifier", &verifier),
    ]);
    s.post_form("/dev-idp/token", &form)
        .await
        .expect_oauth_error(400, "invalid_grant");

    let code = code_for(&s, ALICE, &challenge, "n").await;
    set(&mut form, "code", &code);
    set(&mut form, "redirect_uri", &redirect);
    set(&mut form, "client_id", "someone-else");
    let r = s.post_form("/dev-idp/token", &form).await;
    r.expect_oauth_error(401, "invalid_client");
    assert_eq!(r.header("cache-control"), "no-store");

    set(&mut form, "client_id", CONSOLE_CLIENT_ID);
    set(&mut form, "grant_type", "client_credentials");
    s.post_form("/dev-idp/token", &form)
        .await
        .expect_oauth_error(400, "unsupported_grant_type");

    set(&mut form, "grant_type", "authorization_code");
    set(&mut form, "code", "no-such-code");
    s.post_form("/dev-idp/token", &form)
        .await
        .expect_oauth_error(400, "invalid_grant");

    form.retain(|(k, _)| k != "code_verifier");
    s.post_form("/dev-idp/token", &form)
        .await
        .expect_oauth_error(400, "invalid_request");

    // Not a form.
    let r = s
        .send(
            s.http
                .post(s.at("/dev-idp/token"))
                .json(&serde_json::json!({"grant_type": "authorization_code"})),
        )
        .await;
    r.expect_oauth_error(400, "invalid_request");
}

#[tokio::test]
async fn a_foreign_redirect_uri_gets_a_page_and_never_a_redirect() {
    let s = Server::start().await;
    let (_, challenge) = pkce();
    let mut req = auth_request(&s, &challenge, "st", "n");
    set(&mut req, "redirect_uri", "https://evil.example/callback");
    // Even with other errors that would otherwise go back to the client.
    set(&mut req, "code_challenge_method", "plain");
    for r in [
        authorize_get(&s, &req).await,
        authorize_post(&s, &req, ALICE).await,
    ] {
        r.expect(400);
        assert!(r.headers.get("location").is_none());
        assert_html_headers(&r);
        assert!(html(&r).contains("https://evil.example/callback"));
        assert!(html(&r).contains("not a registered redirect URI"));
    }
    // A redirect URI of the right origin but another path is no better.
    set(
        &mut req,
        "redirect_uri",
        &format!("{}/console/elsewhere", s.url),
    );
    let r = authorize_get(&s, &req).await;
    r.expect(400);
    assert!(r.headers.get("location").is_none());
    // Nor is an unknown client.
    let mut req = auth_request(&s, &challenge, "st", "n");
    set(&mut req, "client_id", "someone-else");
    let r = authorize_get(&s, &req).await;
    r.expect(400);
    assert!(r.headers.get("location").is_none());
    assert!(html(&r).contains("someone-else"));
}

#[tokio::test]
async fn a_bad_request_of_the_console_goes_back_with_invalid_request() {
    let s = Server::start().await;
    let (_, challenge) = pkce();
    let mut req = auth_request(&s, &challenge, "st-1", "n");
    set(&mut req, "code_challenge_method", "plain");
    for r in [
        authorize_get(&s, &req).await,
        authorize_post(&s, &req, ALICE).await,
    ] {
        let params = redirected_to(&s, &r);
        assert_eq!(param(&params, "error"), Some("invalid_request"));
        assert_eq!(param(&params, "state"), Some("st-1"));
        assert!(param(&params, "code").is_none());
        assert!(
            param(&params, "error_description")
                .unwrap()
                .contains("S256")
        );
    }
    // A challenge of the wrong shape, a missing nonce.
    let mut req = auth_request(&s, "too-short", "st-2", "n");
    let params = redirected_to(&s, &authorize_get(&s, &req).await);
    assert_eq!(param(&params, "error"), Some("invalid_request"));
    set(&mut req, "code_challenge", &challenge);
    req.retain(|(k, _)| k != "nonce");
    let params = redirected_to(&s, &authorize_get(&s, &req).await);
    assert_eq!(param(&params, "error"), Some("invalid_request"));
    assert_eq!(param(&params, "state"), Some("st-2"));
}

#[tokio::test]
async fn an_unknown_user_is_refused_with_a_page() {
    let s = Server::start().await;
    let (_, challenge) = pkce();
    let req = auth_request(&s, &challenge, "st", "n");
    for user in ["mallory@example.com", "alice", ""] {
        let r = authorize_post(&s, &req, user).await;
        r.expect(400);
        assert!(r.headers.get("location").is_none());
        assert_html_headers(&r);
    }
}

#[tokio::test]
async fn a_production_server_has_no_provider() {
    let s = Server::start_production().await;
    let (verifier, challenge) = pkce();
    let req = auth_request(&s, &challenge, "st", "n");
    let get = |path: &str| s.http.get(s.at(path));
    for r in [
        s.send(get("/dev-idp/.well-known/openid-configuration"))
            .await,
        s.send(get("/dev-idp/jwks.json")).await,
        authorize_get(&s, &req).await,
        authorize_post(&s, &req, ALICE).await,
        redeem(&s, "code", &verifier).await,
    ] {
        r.expect(404);
        assert!(r.headers.get("location").is_none());
    }
}

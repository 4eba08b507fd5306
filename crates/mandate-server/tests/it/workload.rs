//! Workload identity of agents (SPEC §3): SPIFFE JWT-SVIDs from a bundle endpoint and a bundle
//! file, and OIDC workload tokens (Kubernetes-style service-account subjects), bound to agents by
//! their `workloads`. SVIDs are minted here with `jsonwebtoken` (EdDSA and ES256) and their
//! bundles served by a real HTTP server on loopback.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair,
};
use axum::response::IntoResponse;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use mandate_server::config::{OidcWorkloadIssuer, SpiffeTrustDomain};
use serde_json::{Value, json};

use super::gateway::gw;
use super::harness::*;

const JWT_SPIFFE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-spiffe";
const PROD: &str = "prod.example";
const FILES: &str = "files.example";
const SUPPORT_ID: &str = "spiffe://prod.example/ns/support/sa/agent";

/// A JWT-SVID signing key of a trust domain (or a workload issuer), signing with `jsonwebtoken`.
struct SvidKey {
    kid: String,
    alg: Algorithm,
    key: EncodingKey,
    jwk: Value,
}

fn b64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

impl SvidKey {
    fn ed25519(kid: &str) -> SvidKey {
        let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(doc.as_ref()).unwrap();
        SvidKey {
            kid: kid.into(),
            alg: Algorithm::EdDSA,
            key: EncodingKey::from_ed_der(doc.as_ref()),
            jwk: json!({"kty": "OKP", "crv": "Ed25519", "x": b64(pair.public_key().as_ref()), "kid": kid}),
        }
    }

    fn p256(kid: &str) -> SvidKey {
        let rng = SystemRandom::new();
        let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, doc.as_ref()).unwrap();
        let point = pair.public_key().as_ref();
        SvidKey {
            kid: kid.into(),
            alg: Algorithm::ES256,
            key: EncodingKey::from_ec_der(doc.as_ref()),
            jwk: json!({"kty": "EC", "crv": "P-256", "x": b64(&point[1..33]), "y": b64(&point[33..65]), "kid": kid}),
        }
    }

    /// The key as a SPIFFE bundle holds it.
    fn bundle_jwk(&self) -> Value {
        let mut k = self.jwk.clone();
        k["use"] = json!("jwt-svid");
        k
    }

    /// The key as a JWKS holds it.
    fn jwks_jwk(&self) -> Value {
        let mut k = self.jwk.clone();
        k["use"] = json!("sig");
        k
    }

    fn sign(&self, claims: &Value) -> String {
        let mut h = Header::new(self.alg);
        h.kid = Some(self.kid.clone());
        h.typ = Some("JWT".into());
        jsonwebtoken::encode(&h, claims, &self.key).unwrap()
    }
}

/// A SPIFFE bundle holding `keys` (with an X.509 root beside them, which must be skipped).
fn bundle(keys: &[&SvidKey]) -> Value {
    let mut list: Vec<Value> = keys.iter().map(|k| k.bundle_jwk()).collect();
    list.push(json!({"kty": "EC", "crv": "P-256", "use": "x509-svid",
        "x": "not-a-point", "y": "not-a-point", "x5c": ["MIIB"]}));
    json!({"keys": list, "spiffe_sequence": 1})
}

/// A real HTTP server on loopback answering `GET <path>` with a swappable document.
struct DocServer {
    docs: Arc<RwLock<std::collections::HashMap<String, Value>>>,
    hits: Arc<AtomicUsize>,
    base: String,
}

impl DocServer {
    async fn start() -> DocServer {
        let docs: Arc<RwLock<std::collections::HashMap<String, Value>>> = Arc::default();
        let hits = Arc::new(AtomicUsize::new(0));
        let (d, h) = (docs.clone(), hits.clone());
        let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
            let (d, h) = (d.clone(), h.clone());
            async move {
                h.fetch_add(1, Ordering::SeqCst);
                match d.read().unwrap().get(uri.path()) {
                    Some(v) => axum::Json(v.clone()).into_response(),
                    None => axum::http::StatusCode::NOT_FOUND.into_response(),
                }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        DocServer {
            docs,
            hits,
            base: format!("http://{addr}"),
        }
    }

    fn set(&self, path: &str, doc: Value) {
        self.docs.write().unwrap().insert(path.to_owned(), doc);
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// A `--dev` server trusting `prod.example` (bundle endpoint, ES256 key) and `files.example`
/// (bundle file, EdDSA key), with the in-process gateway on.
struct World {
    srv: Server,
    endpoint: DocServer,
    prod: SvidKey,
    files: SvidKey,
    bundle_file: PathBuf,
    _dir: tempfile::TempDir,
}

async fn world() -> World {
    let endpoint = DocServer::start().await;
    let prod = SvidKey::p256("prod-k1");
    endpoint.set("/bundle", bundle(&[&prod]));
    let files = SvidKey::ed25519("files-k1");
    let dir = tempfile::tempdir().unwrap();
    let bundle_file = dir.path().join("files.example.bundle.json");
    std::fs::write(&bundle_file, bundle(&[&files]).to_string()).unwrap();
    let (url, path) = (format!("{}/bundle", endpoint.base), bundle_file.clone());
    let srv = Server::start_configured(|c| {
        c.gateway.listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        c.workload.spiffe = vec![
            SpiffeTrustDomain {
                trust_domain: PROD.into(),
                bundle_file: None,
                bundle_endpoint: Some(url),
                x509_bundle_file: None,
            },
            SpiffeTrustDomain {
                trust_domain: FILES.into(),
                bundle_file: Some(path),
                bundle_endpoint: None,
                x509_bundle_file: None,
            },
        ];
    })
    .await;
    srv.admin_patch(
        "/v1/agents/support-v2",
        &json!({"workloads": [
            {"kind": "spiffe", "id": SUPPORT_ID},
            {"kind": "spiffe", "id": "spiffe://files.example/agents/support/**"},
        ]}),
    )
    .await;
    World {
        srv,
        endpoint,
        prod,
        files,
        bundle_file,
        _dir: dir,
    }
}

impl World {
    /// JWT-SVID claims for `sub`, addressed to Mandate, valid for five minutes.
    fn claims(&self, sub: &str) -> Value {
        let now = self.srv.now();
        json!({"sub": sub, "aud": [self.srv.url], "iat": now, "exp": now + 300})
    }

    fn svid(&self, sub: &str) -> String {
        self.prod.sign(&self.claims(sub))
    }
}

fn spiffe_auth(svid: &str, client_id: Option<&str>) -> Vec<(String, String)> {
    let mut f = vec![
        ("client_assertion_type".to_owned(), JWT_SPIFFE.to_owned()),
        ("client_assertion".to_owned(), svid.to_owned()),
    ];
    f.extend(client_id.map(|c| ("client_id".to_owned(), c.to_owned())));
    f
}

fn cc_form(scope: &str) -> Vec<(String, String)> {
    vec![
        ("grant_type".into(), "client_credentials".into()),
        ("scope".into(), scope.into()),
        ("resource".into(), CRM.into()),
    ]
}

/// A client-credentials request for `tickets:read` proved by `svid`.
async fn cc_with(srv: &Server, svid: &str, client_id: Option<&str>) -> Reply {
    let mut form = cc_form("tickets:read");
    form.extend(spiffe_auth(svid, client_id));
    srv.token(&form).await
}

#[track_caller]
fn refused(r: &Reply, why: &str) {
    r.expect_oauth_error(401, "invalid_client");
    assert!(r.description().contains(why), "wanted `{why}`: {}", r.body);
}

#[tokio::test]
async fn a_jwt_svid_proves_its_agent_and_names_the_instance_in_token_and_audit() {
    let w = world().await;
    let srv = &w.srv;
    let credential = format!("spiffe:{SUPPORT_ID}");

    // client_credentials, no client_id: the one agent bound to the SPIFFE ID.
    let svid = w.svid(SUPPORT_ID);
    let r = cc_with(srv, &svid, None).await;
    let token = r.access_token();
    let v = srv.verify(&token, CRM).await.unwrap();
    assert_eq!(v.claims["client_id"], "support-v2");
    assert_eq!(v.claims["credential"], credential.as_str());
    let e = srv.allow_event(&r).await;
    assert_eq!(e["credential"], credential.as_str(), "{e}");
    assert_eq!(e["chain"], json!(["support-v2"]));
    assert_eq!(
        srv.introspect(&token).await["credential"],
        credential.as_str()
    );

    // The same SVID again: SVIDs are reused for their lifetime, not single-use.
    cc_with(srv, &svid, Some("support-v2")).await.expect(200);
    // It authenticates the agent at introspection and revocation too, as often as needed.
    for _ in 0..2 {
        let mut form = spiffe_auth(&svid, None);
        form.push(("token".into(), token.clone()));
        let r = srv.post_form("/oauth2/introspect", &form).await;
        r.expect(200);
        assert_eq!(r.body["active"], true, "{}", r.body);
    }
    let mut form = spiffe_auth(&svid, None);
    form.push(("token".into(), token.clone()));
    srv.post_form("/oauth2/revoke", &form).await.expect(200);
    assert!(
        !srv.active(&token).await,
        "revoked by the agent it was issued to"
    );

    // Token exchange on behalf of Alice, with client_id.
    let mut form = exchange_form(&srv.alice(), TYPE_JWT, "crm.customers:read", &[]);
    form.extend(spiffe_auth(&svid, Some("support-v2")));
    let r = srv.token(&form).await;
    let v = srv.verify(&r.access_token(), CRM).await.unwrap();
    assert_eq!(v.claims["act"]["sub"], "agent:support-v2");
    assert_eq!(v.claims["act"]["credential"], credential.as_str());
    assert_eq!(v.claims["credential"], credential.as_str());
    assert_eq!(srv.allow_event(&r).await["credential"], credential.as_str());

    // A pattern binding (`…/agents/support/**`) from the bundle-file trust domain, EdDSA.
    let pod = "spiffe://files.example/agents/support/pod-7";
    let r = cc_with(srv, &w.files.sign(&w.claims(pod)), None).await;
    let v = srv.verify(&r.access_token(), CRM).await.unwrap();
    assert_eq!(v.claims["credential"], format!("spiffe:{pod}"));
    // `**` needs at least one segment more.
    let bare = "spiffe://files.example/agents/support";
    let r = cc_with(srv, &w.files.sign(&w.claims(bare)), None).await;
    refused(&r, "no active agent is bound to SPIFFE ID");
    // A refusal is audited with the client it claimed, never in `chain`.
    let r = cc_with(srv, &w.files.sign(&w.claims(bare)), Some("support-v2")).await;
    refused(&r, "is not bound to agent `support-v2`");
    let e = srv.deny_event(&r).await;
    assert_eq!(e["chain"], json!([]), "{e}");
    assert!(e["detail"].as_str().unwrap().contains("support-v2"), "{e}");
    w.srv.shutdown().await;
}

#[tokio::test]
async fn forged_misaddressed_and_foreign_svids_are_refused() {
    let w = world().await;
    let srv = &w.srv;
    let now = srv.now();
    let claims = w.claims(SUPPORT_ID);

    // A SPIFFE ID of prod.example signed with files.example's key: the wrong trust domain.
    refused(
        &cc_with(srv, &w.files.sign(&claims), None).await,
        "no key `files-k1` is in the bundle of trust domain `prod.example`",
    );
    // A trust domain that is not configured.
    let foreign = "spiffe://evil.example/ns/support/sa/agent";
    refused(
        &cc_with(srv, &w.prod.sign(&w.claims(foreign)), None).await,
        "trust domain `evil.example` is not trusted",
    );
    // A key that is not in the bundle, even under the bundle key's kid.
    let rogue = SvidKey::p256("prod-k1");
    refused(
        &cc_with(srv, &rogue.sign(&claims), None).await,
        "signature is invalid",
    );
    // Expired (beyond the leeway).
    let mut c = claims.clone();
    c["iat"] = json!(now - 600);
    c["exp"] = json!(now - 120);
    refused(&cc_with(srv, &w.prod.sign(&c), None).await, "expired");
    // No exp.
    let mut c = claims.clone();
    c.as_object_mut().unwrap().remove("exp");
    refused(&cc_with(srv, &w.prod.sign(&c), None).await, "`exp`");
    // Addressed to someone else.
    let mut c = claims.clone();
    c["aud"] = json!(["https://elsewhere.example"]);
    refused(&cc_with(srv, &w.prod.sign(&c), None).await, "audience");
    // The token endpoint is an acceptable audience too.
    let mut c = claims.clone();
    c["aud"] = json!(srv.at("/oauth2/token"));
    cc_with(srv, &w.prod.sign(&c), None).await.expect(200);
    // alg: none, and HS256 keyed with the bundle key's public bytes.
    refused(&cc_with(srv, &unsigned(&claims), None).await, "alg: none");
    let hs = jsonwebtoken::encode(
        &Header {
            kid: Some("prod-k1".into()),
            ..Header::new(Algorithm::HS256)
        },
        &claims,
        &EncodingKey::from_secret(w.prod.jwk["x"].as_str().unwrap().as_bytes()),
    )
    .unwrap();
    refused(
        &cc_with(srv, &hs, None).await,
        "does not match the key's `ES256`",
    );
    // A `sub` that is not a SPIFFE ID.
    refused(
        &cc_with(srv, &w.prod.sign(&w.claims("support-v2")), None).await,
        "is not a SPIFFE ID",
    );
    // Lives longer than `workload.max_token_lifetime` (1 hour by default).
    let mut c = claims.clone();
    c["exp"] = json!(now + 2 * 3600);
    refused(
        &cc_with(srv, &w.prod.sign(&c), None).await,
        "lifetime exceeds 3600",
    );
    let mut c = claims.clone();
    c.as_object_mut().unwrap().remove("iat");
    c["exp"] = json!(now + 2 * 3600);
    refused(
        &cc_with(srv, &w.prod.sign(&c), None).await,
        "lifetime exceeds 3600",
    );
    // Bound to another agent than the one client_id names.
    refused(
        &cc_with(srv, &w.svid(SUPPORT_ID), Some("analytics-v1")).await,
        "SPIFFE ID `spiffe://prod.example/ns/support/sa/agent` is not bound to agent `analytics-v1`",
    );
    refused(
        &cc_with(srv, &w.svid(SUPPORT_ID), Some("nobody")).await,
        "agent `nobody` is not registered",
    );
    // An SVID sent as a private_key_jwt assertion proves nothing.
    let mut form = cc_form("tickets:read");
    form.extend([
        ("client_assertion_type".to_owned(), JWT_BEARER.to_owned()),
        ("client_assertion".to_owned(), w.svid(SUPPORT_ID)),
    ]);
    srv.token(&form)
        .await
        .expect_oauth_error(401, "invalid_client");
    w.srv.shutdown().await;
}

#[tokio::test]
async fn the_agent_is_chosen_by_client_id_when_several_are_bound_and_must_be_active() {
    let w = world().await;
    let srv = &w.srv;
    srv.admin_patch(
        "/v1/agents/analytics-v1",
        &json!({"workloads": [{"kind": "spiffe", "id": "spiffe://prod.example/ns/*/sa/agent"}]}),
    )
    .await;
    let svid = w.svid(SUPPORT_ID);
    refused(
        &cc_with(srv, &svid, None).await,
        "several agents are bound to SPIFFE ID `spiffe://prod.example/ns/support/sa/agent`: send `client_id`",
    );
    let r = cc_with(srv, &svid, Some("support-v2")).await;
    assert_eq!(
        srv.verify(&r.access_token(), CRM).await.unwrap().claims["client_id"],
        "support-v2"
    );
    // The `*` segment pattern: analytics-v1 is proven by another namespace's SVID on its own.
    let other = "spiffe://prod.example/ns/reports/sa/agent";
    let r = cc_with(srv, &w.svid(other), Some("analytics-v1")).await;
    // analytics-v1 has no own rights, but it authenticated: the refusal is about the scope.
    r.expect_oauth_error(400, "invalid_scope");
    assert_eq!(
        srv.deny_event(&r).await["credential"],
        format!("spiffe:{other}")
    );

    // Suspended: refused by name; without client_id the one active agent left is chosen.
    srv.admin_post("/v1/agents/support-v2/suspend", &json!({}))
        .await
        .expect(200);
    refused(
        &cc_with(srv, &svid, Some("support-v2")).await,
        "agent `support-v2` is suspended",
    );
    let r = cc_with(srv, &svid, None).await;
    r.expect_oauth_error(400, "invalid_scope");
    assert_eq!(srv.deny_event(&r).await["chain"], json!(["analytics-v1"]));
    w.srv.shutdown().await;
}

#[tokio::test]
async fn rotated_bundles_are_picked_up_on_an_unknown_kid_without_a_fetch_flood() {
    let w = world().await;
    let srv = &w.srv;
    assert_eq!(
        w.endpoint.hits(),
        1,
        "the bundle endpoint is fetched at start"
    );
    cc_with(srv, &w.svid(SUPPORT_ID), None).await.expect(200);
    assert_eq!(w.endpoint.hits(), 1, "known keys come from the cache");

    // The trust domain rotates: the new key appears at the endpoint.
    let next = SvidKey::ed25519("prod-k2");
    w.endpoint.set("/bundle", bundle(&[&w.prod, &next]));
    let r = cc_with(srv, &next.sign(&w.claims(SUPPORT_ID)), None).await;
    r.expect(200);
    assert_eq!(
        w.endpoint.hits(),
        2,
        "an unknown kid fetches the bundle once"
    );
    // Made-up kids do not become a flood of fetches.
    for i in 0..5 {
        let rogue = SvidKey::ed25519(&format!("rogue-{i}"));
        refused(
            &cc_with(srv, &rogue.sign(&w.claims(SUPPORT_ID)), None).await,
            "is in the bundle of trust domain `prod.example`",
        );
    }
    assert_eq!(w.endpoint.hits(), 2, "unknown-kid fetches are rate-limited");

    // The bundle file is rewritten with a new key: re-read when an SVID names it.
    let pod = "spiffe://files.example/agents/support/pod-1";
    let rotated = SvidKey::p256("files-k2");
    let svid = rotated.sign(&w.claims(pod));
    refused(&cc_with(srv, &svid, None).await, "no key `files-k2`");
    std::fs::write(&w.bundle_file, bundle(&[&rotated]).to_string()).unwrap();
    cc_with(srv, &svid, None).await.expect(200);
    // The old key left the bundle with it.
    refused(
        &cc_with(srv, &w.files.sign(&w.claims(pod)), None).await,
        "no key `files-k1`",
    );
    w.srv.shutdown().await;
}

#[tokio::test]
async fn an_svid_is_never_taken_for_a_mandate_token() {
    let w = world().await;
    let srv = &w.srv;
    let support = srv.agent("support-v2");
    let svid = w.svid(SUPPORT_ID);

    // As the subject token, of either type.
    for kind in [TYPE_JWT, TYPE_ACCESS_TOKEN] {
        let r = srv
            .token_as(&support, exchange_form(&svid, kind, "tickets:read", &[]))
            .await;
        r.expect_oauth_error(400, "invalid_grant");
    }
    // As the actor token.
    let form = exchange_form(
        &srv.alice(),
        TYPE_JWT,
        "tickets:read",
        &[("actor_token", &svid), ("actor_token_type", TYPE_JWT)],
    );
    let r = srv.token_as(&support, form).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.description().contains("actor token refused"),
        "{}",
        r.body
    );
    // To introspection.
    assert!(!srv.active(&svid).await);
    // As a bearer token at the gateway.
    let r = srv
        .send(
            reqwest::Client::new()
                .get(format!("{}/customers/9821", gw(srv)))
                .bearer_auth(&svid),
        )
        .await;
    r.expect(401);
    assert!(r.header("www-authenticate").contains("invalid_token"));
    w.srv.shutdown().await;
}

/// An OIDC workload issuer on loopback: discovery document and JWKS.
async fn oidc_issuer(key: &SvidKey) -> DocServer {
    let s = DocServer::start().await;
    s.set(
        "/.well-known/openid-configuration",
        json!({"issuer": s.base, "jwks_uri": format!("{}/keys", s.base)}),
    );
    s.set("/keys", json!({"keys": [key.jwks_jwk()]}));
    s
}

#[tokio::test]
async fn oidc_workload_tokens_are_bound_by_issuer_and_subject() {
    let k8s_key = SvidKey::p256("k8s-1");
    let k8s = oidc_issuer(&k8s_key).await;
    let ci_key = SvidKey::ed25519("ci-1");
    let ci = oidc_issuer(&ci_key).await;
    let (k8s_iss, ci_iss) = (k8s.base.clone(), ci.base.clone());
    let (a, b) = (k8s_iss.clone(), ci_iss.clone());
    let srv = Server::start_configured(move |c| {
        c.workload.oidc = vec![
            // Discovery, with an audience of its own (as a projected token is made for).
            OidcWorkloadIssuer {
                issuer: a,
                jwks_uri: None,
                audience: Some("mandate".into()),
            },
            // The JWKS named directly, Mandate's issuer as the audience.
            OidcWorkloadIssuer {
                issuer: b.clone(),
                jwks_uri: Some(format!("{b}/keys")),
                audience: None,
            },
        ];
    })
    .await;
    assert!(
        k8s.hits() >= 2,
        "discovery then the JWKS it names are fetched at start"
    );
    let sa = "system:serviceaccount:support:agent";
    srv.admin_patch(
        "/v1/agents/support-v2",
        &json!({"workloads": [
            {"kind": "oidc", "issuer": k8s_iss, "subject": sa},
            {"kind": "oidc", "issuer": ci_iss, "subject": "repo:acme/support:*"},
        ]}),
    )
    .await;
    let now = srv.now();
    let k8s_token = |sub: &str, aud: &str| {
        k8s_key.sign(
            &json!({"iss": k8s_iss, "sub": sub, "aud": [aud], "iat": now,
            "exp": now + 600, "kubernetes.io": {"namespace": "support"}}),
        )
    };
    let form = |token: &str, client_id: Option<&str>| {
        let mut f = cc_form("tickets:read");
        f.extend([
            ("client_assertion_type".to_owned(), JWT_BEARER.to_owned()),
            ("client_assertion".to_owned(), token.to_owned()),
        ]);
        f.extend(client_id.map(|c| ("client_id".to_owned(), c.to_owned())));
        f
    };

    let good = k8s_token(sa, "mandate");
    let r = srv.token(&form(&good, Some("support-v2"))).await;
    let v = srv.verify(&r.access_token(), CRM).await.unwrap();
    let credential = format!("oidc:{k8s_iss}#{sa}");
    assert_eq!(v.claims["credential"], credential.as_str());
    assert_eq!(srv.allow_event(&r).await["credential"], credential.as_str());
    // Reusable for its lifetime.
    srv.token(&form(&good, Some("support-v2")))
        .await
        .expect(200);
    // client_id is required.
    refused(&srv.token(&form(&good, None)).await, "send `client_id`");
    // Another service account of the same issuer.
    refused(
        &srv.token(&form(
            &k8s_token("system:serviceaccount:support:other", "mandate"),
            Some("support-v2"),
        ))
        .await,
        "is not bound to agent `support-v2`",
    );
    // The issuer's configured audience, not Mandate's.
    refused(
        &srv.token(&form(&k8s_token(sa, &srv.url), Some("support-v2")))
            .await,
        "audience",
    );
    // Signed by a key the issuer does not publish.
    let forged = SvidKey::p256("k8s-1").sign(&json!({"iss": k8s_iss, "sub": sa,
        "aud": "mandate", "iat": now, "exp": now + 600}));
    refused(
        &srv.token(&form(&forged, Some("support-v2"))).await,
        "signature is invalid",
    );
    // A CI job's token under the subject pattern; Mandate's issuer is the default audience.
    let ci_token = |sub: &str| {
        ci_key.sign(
            &json!({"iss": ci_iss, "sub": sub, "aud": srv.url, "iat": now,
            "exp": now + 300}),
        )
    };
    let job = "repo:acme/support:ref:refs/heads/main";
    let r = srv.token(&form(&ci_token(job), Some("support-v2"))).await;
    let v = srv.verify(&r.access_token(), CRM).await.unwrap();
    assert_eq!(v.claims["credential"], format!("oidc:{ci_iss}#{job}"));
    refused(
        &srv.token(&form(
            &ci_token("repo:acme/supporter:ref:x"),
            Some("support-v2"),
        ))
        .await,
        "is not bound",
    );
    // Too long-lived.
    let long = ci_key.sign(
        &json!({"iss": ci_iss, "sub": job, "aud": srv.url, "iat": now,
        "exp": now + 7200}),
    );
    refused(
        &srv.token(&form(&long, Some("support-v2"))).await,
        "lifetime exceeds 3600",
    );
    srv.shutdown().await;
}

#[test]
fn workload_configuration_is_checked_at_start() {
    let load = |pairs: &[(&str, &str)]| {
        mandate_server::Config::load(
            None,
            pairs
                .iter()
                .map(|(a, b)| ((*a).to_owned(), (*b).to_owned())),
        )
    };
    let ok = load(&[(
        "MANDATE_WORKLOAD__SPIFFE",
        r#"[{trust_domain = "prod.example", bundle_endpoint = "https://spire.example/bundle"}]"#,
    )])
    .unwrap();
    assert_eq!(ok.workload.spiffe[0].trust_domain, "prod.example");
    assert_eq!(ok.workload.max_token_lifetime, 3600);
    for (value, why) in [
        (
            r#"[{trust_domain = "prod.example"}]"#,
            "needs one of `bundle_file` and `bundle_endpoint`",
        ),
        (
            r#"[{trust_domain = "prod.example", bundle_file = "b.json", bundle_endpoint = "https://spire.example/b"}]"#,
            "needs one of `bundle_file` and `bundle_endpoint`",
        ),
        (
            r#"[{trust_domain = "spiffe://prod.example", bundle_file = "b.json"}]"#,
            "not a `spiffe://` URL",
        ),
        (
            r#"[{trust_domain = "prod.example", bundle_endpoint = "http://spire.example/b"}]"#,
            "`http` only on loopback",
        ),
        (
            r#"[{trust_domain = "a", bundle_file = "x"}, {trust_domain = "a", bundle_file = "y"}]"#,
            "twice",
        ),
    ] {
        let err = load(&[("MANDATE_WORKLOAD__SPIFFE", value)])
            .unwrap_err()
            .to_string();
        assert!(err.contains(why), "{value}: {err}");
    }
    let err = load(&[(
        "MANDATE_WORKLOAD__OIDC",
        r#"[{issuer = "http://k8s.example"}]"#,
    )])
    .unwrap_err()
    .to_string();
    assert!(err.contains("`http` only on loopback"), "{err}");
    let err = load(&[("MANDATE_WORKLOAD__MAX_TOKEN_LIFETIME", "0")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("workload.max_token_lifetime"), "{err}");
}

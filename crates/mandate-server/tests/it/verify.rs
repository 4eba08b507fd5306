//! `mandate-verify` against the real server: a protected test service behind `VerifyLayer`,
//! called by an agent loop as fast as it can while revocations happen (SPEC §5: "revoke a
//! user's access and immediately terminate all agent actions … regardless of which agent").

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Extension;
use axum::routing::get;
use mandate_server::clock::Clock;
use mandate_verify::{Principal, Refusal, Verifier, VerifyLayer, WhenNotCurrent};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::harness::*;

const WAIT: Duration = Duration::from_secs(10);

/// A credential with the `verifier` role.
async fn verifier_credential(srv: &Server) -> String {
    let r = srv
        .admin_post(
            "/v1/credentials",
            &json!({"id": unique("rs"), "role": "verifier"}),
        )
        .await;
    r.expect(201);
    r.body["secret"].as_str().unwrap().to_owned()
}

/// A verifier of `srv`'s tokens for [`CRM`], on the server's (test) clock.
async fn verifier(srv: &Server, mode: WhenNotCurrent, events_url: Option<String>) -> Verifier {
    let clock = srv.clock.clone();
    let mut b = Verifier::builder(&srv.url)
        .credential(verifier_credential(srv).await)
        .audience(CRM)
        .when_not_current(mode)
        .jwks_refresh_interval(Duration::from_millis(100))
        .clock(Arc::new(move || clock.now()));
    if let Some(u) = events_url {
        b = b.events_url(u);
    }
    b.start().await.unwrap()
}

/// The protected test service: `GET /customers/{id}` answers who called, behind `VerifyLayer`.
async fn protected_service(v: &Verifier) -> String {
    async fn customer(Extension(p): Extension<Principal>) -> axum::Json<Value> {
        axum::Json(json!({
            "user": p.user(), "agents": p.chain.agent_ids(), "task": p.task(),
            "scope": p.claims.scope,
        }))
    }
    let app = Router::new()
        .route("/customers/{id}", get(customer))
        .layer(VerifyLayer::new(v.clone()));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// One call of the agent loop: when it started, the status, the body.
struct Call {
    started: Instant,
    status: u16,
    body: Value,
}

/// Calls the service with `token` as fast as it can until `stop`.
fn agent_loop(
    service: String,
    token: String,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<Call>> {
    tokio::spawn(async move {
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let mut calls = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            let started = Instant::now();
            let r = http
                .get(format!("{service}/customers/9821"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let body = r.json().await.unwrap_or(Value::Null);
            calls.push(Call {
                started,
                status,
                body,
            });
        }
        calls
    })
}

/// alice → support-v2 → analytics-v1 → relay-1: the three hops' tokens, earliest first.
async fn three_hops(srv: &Server) -> [String; 3] {
    let relay_key = TestKey::ed25519("relay-1-k1");
    srv.register_agent("relay-1", &["crm.customers:read"], "observe", &[&relay_key])
        .await;
    srv.add_policy(
        "relay.cedar",
        r#"permit(principal == Agent::"analytics-v1", action == Action::"delegate", resource == Agent::"relay-1");"#,
    )
    .await;
    let relay = Agent {
        id: "relay-1".into(),
        key: relay_key,
    };
    let t1 = srv
        .exchange(&srv.agent("support-v2"), &srv.alice(), "crm.customers:read")
        .await
        .access_token();
    let t2 = srv
        .hop(&srv.agent("analytics-v1"), &t1, "crm.customers:read")
        .await
        .access_token();
    let t3 = srv
        .hop(&relay, &t2, "crm.customers:read")
        .await
        .access_token();
    [t1, t2, t3]
}

fn claim(token: &str, name: &str) -> String {
    peek(token)[name].as_str().unwrap().to_owned()
}

/// The mid-task test for one kind of revocation: the loop runs on the third hop's token; after
/// the revocation event reaches the verifier, no call that starts succeeds.
async fn mid_task(kind: &str, target: impl FnOnce(&[String; 3]) -> String) {
    let srv = Server::start().await;
    let tokens = three_hops(&srv).await;
    let v = verifier(&srv, WhenNotCurrent::Refuse, None).await;
    assert!(v.wait_for(0, WAIT).await, "the verifier becomes current");
    let service = protected_service(&v).await;
    let stop = Arc::new(AtomicBool::new(false));
    let calls = agent_loop(service, tokens[2].clone(), stop.clone());

    // Let the agent work a little.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let r = srv.revoke(kind, &target(&tokens)).await;
    r.expect(201);
    let seq = r.body["seq"].as_i64().unwrap();
    let returned = Instant::now();
    assert!(
        v.wait_for(seq, WAIT).await,
        "the revocation reaches the verifier"
    );
    let delivered = Instant::now();
    tokio::time::sleep(Duration::from_millis(150)).await;
    stop.store(true, Ordering::SeqCst);
    let calls = calls.await.unwrap();

    let before: Vec<&Call> = calls.iter().filter(|c| c.started < returned).collect();
    assert!(
        before.iter().filter(|c| c.status == 200).count() >= 5,
        "the agent worked before the revocation"
    );
    assert_eq!(before[0].body["user"], ALICE);
    assert_eq!(
        before[0].body["agents"],
        json!(["support-v2", "analytics-v1", "relay-1"])
    );
    let after: Vec<&Call> = calls.iter().filter(|c| c.started >= delivered).collect();
    assert!(
        after.len() >= 5,
        "the agent kept trying after the revocation"
    );
    for c in &after {
        assert_eq!(
            c.status, 401,
            "a call after the revocation succeeded: {}",
            c.body
        );
        assert_eq!(c.body["error"], "invalid_token");
        let why = c.body["error_description"].as_str().unwrap();
        assert!(why.contains("revoked"), "{why}");
    }
    assert!(
        delivered - returned < Duration::from_secs(1),
        "delivered {:?} after the revoke call returned",
        delivered - returned
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn revoking_the_user_stops_the_agent_loop_mid_task() {
    mid_task("user", |_| ALICE.to_owned()).await;
}

#[tokio::test]
async fn revoking_an_agent_of_the_chain_stops_the_agent_loop_mid_task() {
    mid_task("agent", |_| "analytics-v1".to_owned()).await;
}

#[tokio::test]
async fn revoking_the_task_stops_the_agent_loop_mid_task() {
    mid_task("task", |t| claim(&t[2], "task")).await;
}

#[tokio::test]
async fn revoking_the_root_token_of_a_three_hop_chain_stops_the_agent_loop_mid_task() {
    mid_task("token", |t| claim(&t[0], "jti")).await;
}

/// A TCP relay that can be cut: while down, it drops every connection and refuses new ones.
struct Cable {
    addr: SocketAddr,
    up: watch::Sender<bool>,
}

impl Cable {
    async fn to(target: SocketAddr) -> Cable {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (up, rx) = watch::channel(true);
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                let mut rx = rx.clone();
                if !*rx.borrow() {
                    continue;
                }
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = rx.wait_for(|up| !up) => {}
                    }
                });
            }
        });
        Cable { addr, up }
    }

    fn set(&self, up: bool) {
        self.up.send_replace(up);
    }

    fn events_url(&self) -> String {
        format!("http://{}/v1/revocations/events", self.addr)
    }
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_verifier_disconnected_during_revocations_catches_up_on_reconnect() {
    let srv = Server::start().await;
    let cable = Cable::to(srv.addr).await;
    let v = verifier(&srv, WhenNotCurrent::Refuse, Some(cable.events_url())).await;
    assert!(v.wait_for(0, WAIT).await);
    let support = srv.agent("support-v2");
    let carol = srv.user_token(CAROL, &["support"], 3600);
    let t_alice = srv
        .exchange(&support, &srv.alice(), "crm.customers:read")
        .await
        .access_token();
    let t_carol = srv
        .exchange(&support, &carol, "crm.customers:read")
        .await
        .access_token();
    let t_task = srv
        .exchange(&support, &carol, "tickets:read")
        .await
        .access_token();
    let t_kept = srv
        .exchange(&support, &carol, "crm.customers:read")
        .await
        .access_token();
    for t in [&t_alice, &t_carol, &t_task, &t_kept] {
        v.verify(t).await.unwrap();
    }

    cable.set(false);
    until("the verifier notices", || !v.status().current).await;
    srv.revoke("user", ALICE).await.expect(201);
    srv.revoke("token", &claim(&t_carol, "jti"))
        .await
        .expect(201);
    let last = srv.revoke("task", &claim(&t_task, "task")).await;
    last.expect(201);
    // Meanwhile, fail closed: nothing is accepted that cannot be checked.
    let r = v.verify(&t_kept).await.unwrap_err();
    assert!(matches!(r, Refusal::Unavailable(_)), "{r}");
    assert!(r.to_string().contains("revocation stream"), "{r}");

    cable.set(true);
    let seq = last.body["seq"].as_i64().unwrap();
    assert!(v.wait_for(seq, WAIT).await, "caught up");
    for (t, why) in [
        (&t_alice, "user `alice@example.com`"),
        (&t_carol, "token `"),
        (&t_task, "task `"),
    ] {
        let r = v.verify(t).await.unwrap_err();
        assert!(matches!(r, Refusal::Revoked(_)), "{r}");
        assert!(r.to_string().contains(why), "{r}");
    }
    // `t_task` shares carol's first token's task only if the ids collide; `t_kept` has its own.
    if claim(&t_kept, "task") != claim(&t_task, "task") {
        v.verify(&t_kept).await.unwrap();
    }
    srv.shutdown().await;
}

#[tokio::test]
async fn while_disconnected_a_verifier_introspects_and_fails_closed_if_it_cannot() {
    let srv = Server::start().await;
    let cable = Cable::to(srv.addr).await;
    cable.set(false);
    let v = verifier(&srv, WhenNotCurrent::Introspect, Some(cable.events_url())).await;
    let support = srv.agent("support-v2");
    let t = srv
        .exchange(&support, &srv.alice(), "crm.customers:read")
        .await
        .access_token();
    assert!(!v.status().current);
    let p = v.verify(&t).await.unwrap();
    assert_eq!(p.user(), Some(ALICE));
    srv.revoke("token", &claim(&t, "jti")).await.expect(201);
    assert_eq!(v.verify(&t).await.unwrap_err(), Refusal::Inactive);

    // Introspection unreachable too: refused, never allowed because unknown.
    let cut = Verifier::builder(&srv.url)
        .audience(CRM)
        .events_url(cable.events_url())
        .introspection_url(format!("http://{}/oauth2/introspect", cable.addr))
        .start()
        .await
        .unwrap();
    let t2 = srv
        .exchange(&support, &srv.alice(), "crm.customers:read")
        .await
        .access_token();
    let r = cut.verify(&t2).await.unwrap_err();
    assert!(r.is_transient(), "{r}");
    srv.shutdown().await;
}

#[tokio::test]
async fn revocations_survive_a_restart_and_a_new_verifier_learns_them_all() {
    let mut srv = Server::start().await;
    let [t1, t2, t3] = three_hops(&srv).await;
    let v = verifier(&srv, WhenNotCurrent::Refuse, None).await;
    assert!(v.wait_for(0, WAIT).await);
    srv.revoke("token", &claim(&t2, "jti")).await.expect(201);

    srv.restart().await;
    // The verifier that was following reconnects by itself.
    let r = srv.revoke("user", CAROL).await;
    r.expect(201);
    assert!(v.wait_for(r.body["seq"].as_i64().unwrap(), WAIT).await);
    assert!(v.verify(&t3).await.is_err());
    v.verify(&t1).await.unwrap();

    // A verifier started after the restart, from nothing.
    let fresh = verifier(&srv, WhenNotCurrent::Refuse, None).await;
    assert!(fresh.wait_for(2, WAIT).await);
    for t in [&t2, &t3] {
        let r = fresh.verify(t).await.unwrap_err();
        assert!(matches!(r, Refusal::Revoked(_)), "{r}");
    }
    fresh.verify(&t1).await.unwrap();
    assert!(srv.introspect(&t3).await["active"] == false);
    srv.shutdown().await;
}

#[tokio::test]
async fn the_layer_refuses_garbage_missing_and_foreign_tokens_and_follows_key_rotation() {
    let srv = Server::start().await;
    let v = verifier(&srv, WhenNotCurrent::Refuse, None).await;
    assert!(v.wait_for(0, WAIT).await);
    let service = protected_service(&v).await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let call = |token: Option<String>| {
        let mut req = http.get(format!("{service}/customers/1"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            let www = r
                .headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            (status, www, r.json::<Value>().await.unwrap())
        }
    };
    let (status, www, _) = call(None).await;
    assert_eq!((status, www.as_str()), (401, "Bearer"));
    let (status, www, body) = call(Some("not.a.token".into())).await;
    assert_eq!(status, 401);
    assert!(www.starts_with("Bearer error=\"invalid_token\""), "{www}");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("malformed")
    );

    // A token for another audience.
    let support = srv.agent("support-v2");
    let mut form = without(
        exchange_form(&srv.alice(), TYPE_JWT, "crm.customers:read", &[]),
        &["resource"],
    );
    form.push(("resource".into(), "https://billing.example".into()));
    let other = srv.token_as(&support, form).await.access_token();
    assert_eq!(peek(&other)["aud"], "https://billing.example");
    let (status, _, body) = call(Some(other)).await;
    assert_eq!(status, 401);
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("audience")
    );

    // The user's own IdP token is not a Mandate token.
    let (status, _, _) = call(Some(srv.alice())).await;
    assert_eq!(status, 401);

    // After a key rotation, tokens signed with the new key verify (JWKS refetched on the new
    // `kid`), and the old key's tokens still do.
    let before = srv
        .exchange(&support, &srv.alice(), "crm.customers:read")
        .await
        .access_token();
    srv.admin_post("/v1/keys/rotate", &json!({}))
        .await
        .expect(200);
    let after = srv
        .exchange(&support, &srv.alice(), "crm.customers:read")
        .await
        .access_token();
    assert_ne!(
        jsonwebtoken::decode_header(&before).unwrap().kid,
        jsonwebtoken::decode_header(&after).unwrap().kid
    );
    // The IdP token above already made the verifier look for an unknown `kid`; refetches are
    // at most one per `jwks_refresh_interval` (100 ms here).
    tokio::time::sleep(Duration::from_millis(150)).await;
    let (status, _, body) = call(Some(after)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"], ALICE);
    assert_eq!(call(Some(before)).await.0, 200);
    srv.shutdown().await;
}

#[tokio::test]
async fn the_verifier_checks_the_chain_depth_it_accepts() {
    let srv = Server::start().await;
    let [_, t2, t3] = three_hops(&srv).await;
    let clock = srv.clock.clone();
    let v = Verifier::builder(&srv.url)
        .credential(verifier_credential(&srv).await)
        .audience(CRM)
        .max_chain_depth(2)
        .clock(Arc::new(move || clock.now()))
        .start()
        .await
        .unwrap();
    assert!(v.wait_for(0, WAIT).await);
    let p = v.verify(&t2).await.unwrap();
    assert_eq!(
        p.describe(),
        "user:alice@example.com via agent:support-v2 > agent:analytics-v1"
    );
    let r = v.verify(&t3).await.unwrap_err();
    assert!(r.to_string().contains("at most 2"), "{r}");
    srv.shutdown().await;
}

#[tokio::test]
async fn the_revocation_stream_needs_a_credential_and_resumes_from_last_event_id() {
    let srv = Server::start().await;
    let url = format!("{}/v1/revocations/events", srv.url);
    let r = srv.http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let secret = verifier_credential(&srv).await;
    // A verifier credential reaches the stream but no other admin route.
    let r = srv
        .http
        .get(format!("{}/v1/agents", srv.url))
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = srv
        .http
        .get(&url)
        .bearer_auth(&secret)
        .header("last-event-id", "x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    srv.revoke("user", "u1@example.com").await.expect(201);
    srv.revoke("user", "u2@example.com").await.expect(201);
    srv.revoke("user", "u3@example.com").await.expect(201);
    let mut r = srv
        .http
        .get(&url)
        .bearer_auth(&secret)
        .header("last-event-id", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut reader = mandate_verify::sse::SseReader::default();
    let mut events = Vec::new();
    while !events
        .iter()
        .any(|e: &mandate_verify::sse::SseEvent| e.event == "ready")
    {
        let chunk = tokio::time::timeout(WAIT, r.chunk())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        events.extend(reader.push(&chunk).unwrap());
    }
    let ids: Vec<Option<&str>> = events.iter().map(|e| e.id.as_deref()).collect();
    assert_eq!(ids, [Some("2"), Some("3"), None]);
    let entry: Value = serde_json::from_str(&events[0].data).unwrap();
    assert_eq!(entry["seq"], 2);
    assert_eq!(entry["record"]["kind"], "user");
    assert_eq!(entry["record"]["target"], "u2@example.com");
    assert_eq!(events[2].data, r#"{"seq":3}"#);
    srv.shutdown().await;
}

#[tokio::test]
async fn the_layer_accepts_a_dpop_bound_token_only_with_a_fresh_proof_by_its_key() {
    use mandate_token::dpop::prove;
    use mandate_token::{Alg, SigningKey};
    let srv = Server::start().await;
    let v = verifier(&srv, WhenNotCurrent::Refuse, None).await;
    assert!(v.wait_for(0, WAIT).await);
    let service = protected_service(&v).await;
    let key = SigningKey::generate(Alg::EdDSA).unwrap();
    let mut form = exchange_form(&srv.alice(), TYPE_JWT, "crm.customers:read", &[]);
    form.extend(srv.client_auth(&srv.agent("support-v2")));
    let proof = prove(
        &key,
        "POST",
        &srv.at("/oauth2/token"),
        None,
        None,
        srv.now(),
    )
    .unwrap();
    let r = srv
        .send(
            reqwest::Client::new()
                .post(srv.at("/oauth2/token"))
                .header("DPoP", proof)
                .form(&form),
        )
        .await;
    r.expect(200);
    let token = r.access_token();
    let url = format!("{service}/customers/1");
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let call = |auth: String, proof: Option<String>| {
        let mut req = http.get(&url).header("authorization", auth);
        if let Some(p) = proof {
            req = req.header("DPoP", p);
        }
        async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            let www = r
                .headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            (status, www, r.json::<Value>().await.unwrap())
        }
    };
    let good = |k: &SigningKey| prove(k, "GET", &url, Some(&token), None, srv.now()).unwrap();
    // As a bearer token (a copied token without the key): refused, and told to use DPoP.
    let (status, www, _) = call(format!("Bearer {token}"), None).await;
    assert_eq!(status, 401);
    assert!(www.starts_with("DPoP "), "{www}");
    // With another key's proof, or none: refused with invalid_dpop_proof.
    let thief = SigningKey::generate(Alg::EdDSA).unwrap();
    for proof in [None, Some(good(&thief))] {
        let (status, www, body) = call(format!("DPoP {token}"), proof).await;
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["error"], "invalid_dpop_proof", "{body}");
        assert!(
            www.starts_with("DPoP error=\"invalid_dpop_proof\""),
            "{www}"
        );
    }
    // With the agent's proof: served, once.
    let proof = good(&key);
    let (status, _, body) = call(format!("DPoP {token}"), Some(proof.clone())).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"], "alice@example.com");
    let (status, _, body) = call(format!("DPoP {token}"), Some(proof)).await;
    assert_eq!(status, 401);
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("already used"),
        "{body}"
    );
    srv.shutdown().await;
}

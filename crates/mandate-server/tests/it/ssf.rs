//! The OpenID Shared Signals transmitter (SPEC §5): every revocation reaches SSF receivers as a
//! signed Security Event Token with a CAEP event type, by poll (RFC 8936) and push (RFC 8935),
//! in order, without loss, across restarts. SETs are verified the way a receiver would: with
//! `jsonwebtoken` and the published JWKS.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};
use reqwest::Method;
use serde_json::{Value, json};

use super::harness::*;

const PUSH: &str = "urn:ietf:rfc:8935";
const POLL: &str = "urn:ietf:rfc:8936";
const SESSION_REVOKED: &str = "https://schemas.openid.net/secevent/caep/event-type/session-revoked";
const CREDENTIAL_CHANGE: &str =
    "https://schemas.openid.net/secevent/caep/event-type/credential-change";
const VERIFICATION: &str = "https://schemas.openid.net/secevent/ssf/event-type/verification";
const STREAM_UPDATED: &str = "https://schemas.openid.net/secevent/ssf/event-type/stream-updated";
const DETAIL: &str = "urn:mandate:secevent:revocation";
const RX_AUD: &str = "https://receiver.example/caep";

/// How long a test waits for something asynchronous before failing.
const PATIENCE: Duration = Duration::from_secs(15);

fn jti(token: &str) -> String {
    peek(token)["jti"].as_str().unwrap().to_owned()
}

async fn request(srv: &Server, method: Method, path: &str, body: Option<&Value>) -> Reply {
    let mut req = srv.admin_req(method, path);
    if let Some(b) = body {
        req = req.json(b);
    }
    srv.send(req).await
}

/// Creates a stream with `body`; asserts 201 and returns the configuration.
async fn create_stream(srv: &Server, body: Value) -> Value {
    let r = srv.admin_post("/ssf/streams", &body).await;
    r.expect(201);
    assert_eq!(r.header("cache-control"), "no-store");
    r.body
}

fn stream_id(config: &Value) -> String {
    config["stream_id"].as_str().unwrap().to_owned()
}

/// One poll of `stream`: `(sets by jti, moreAvailable)`.
async fn poll(srv: &Server, stream: &str, body: Value) -> (Vec<(String, String)>, bool) {
    let r = srv.admin_post(&format!("/ssf/poll/{stream}"), &body).await;
    r.expect(200);
    let sets = r.body["sets"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect();
    (sets, r.body["moreAvailable"].as_bool().unwrap())
}

/// Polls (without acknowledging) until `n` SETs are waiting; returns them.
async fn wait_for_sets(srv: &Server, stream: &str, n: usize) -> Vec<(String, String)> {
    let start = Instant::now();
    loop {
        let (sets, _) = poll(srv, stream, json!({"returnImmediately": true})).await;
        if sets.len() >= n {
            assert_eq!(sets.len(), n, "more SETs than expected");
            return sets;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "only {} of {n} SETs arrived",
            sets.len()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Acknowledges `jtis`; asserts nothing more is waiting.
async fn ack_all(srv: &Server, stream: &str, jtis: Vec<String>) {
    let (sets, more) = poll(srv, stream, json!({"ack": jtis, "returnImmediately": true})).await;
    assert!(sets.is_empty(), "{sets:?}");
    assert!(!more);
}

/// Verifies a SET as an outside receiver would: signature by the JWKS key named in `kid`,
/// `typ: secevent+jwt`, `iss`, `aud`, `iat`; no `sub`, no `exp`.
async fn verify_set(srv: &Server, set: &str, aud: &str) -> (Header, Value) {
    let header = jsonwebtoken::decode_header(set).unwrap();
    assert_eq!(header.typ.as_deref(), Some("secevent+jwt"));
    let kid = header.kid.clone().expect("a SET names its key");
    let jwks = srv.jwks().await;
    let jwk = jwks.find(&kid).expect("the SET's key is in the JWKS");
    let key = DecodingKey::from_jwk(jwk).unwrap();
    let mut v = Validation::new(Algorithm::EdDSA);
    v.set_audience(&[aud]);
    v.set_issuer(&[&srv.url]);
    v.set_required_spec_claims(&["iss", "aud", "iat"]);
    v.validate_exp = false;
    let data = jsonwebtoken::decode::<Value>(set, &key, &v).expect("the SET verifies");
    let c = data.claims;
    assert!(c.get("sub").is_none(), "a SET has no `sub`: {c}");
    assert!(c.get("exp").is_none(), "a SET has no `exp`: {c}");
    let iat = c["iat"].as_i64().unwrap();
    assert!((iat - srv.now()).abs() < 60, "{c}");
    assert!(c["sub_id"]["format"].is_string(), "{c}");
    assert_eq!(c["events"].as_object().unwrap().len(), 1, "{c}");
    (data.header, c)
}

/// The one event of a SET: `(type, body)`.
fn event(claims: &Value) -> (String, Value) {
    let (t, b) = claims["events"].as_object().unwrap().iter().next().unwrap();
    (t.clone(), b.clone())
}

async fn status(srv: &Server, stream: &str) -> Value {
    let r = srv
        .admin_get(&format!("/ssf/status?stream_id={stream}"))
        .await;
    r.expect(200);
    r.body
}

async fn set_status(srv: &Server, stream: &str, to: &str) {
    let r = srv
        .admin_post(
            "/ssf/status",
            &json!({"stream_id": stream, "status": to, "reason": format!("test sets {to}")}),
        )
        .await;
    r.expect(200);
    assert_eq!(r.body["status"], to);
}

#[tokio::test]
async fn ssf_configuration_is_published_with_every_required_field() {
    let srv = Server::start().await;
    let r = srv
        .send(srv.http.get(srv.at("/.well-known/ssf-configuration")))
        .await;
    r.expect(200);
    assert!(r.header("content-type").starts_with("application/json"));
    let m = &r.body;
    assert_eq!(m["issuer"], srv.url.as_str());
    assert_eq!(m["spec_version"], "1_0");
    assert_eq!(m["jwks_uri"], srv.at("/.well-known/jwks.json").as_str());
    let methods: Vec<&str> = m["delivery_methods_supported"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(methods.contains(&PUSH) && methods.contains(&POLL), "{m}");
    for (field, path) in [
        ("configuration_endpoint", "/ssf/streams"),
        ("status_endpoint", "/ssf/status"),
        ("verification_endpoint", "/ssf/verify"),
        ("add_subject_endpoint", "/ssf/subjects:add"),
        ("remove_subject_endpoint", "/ssf/subjects:remove"),
    ] {
        assert_eq!(m[field], srv.at(path).as_str(), "{field}");
    }
    assert_eq!(
        m["authorization_schemes"][0]["spec_urn"],
        "urn:ietf:rfc:6750"
    );
    assert_eq!(m["default_subjects"], "ALL");
    // The JWKS it names serves the keys SETs are signed with.
    srv.send(srv.http.get(m["jwks_uri"].as_str().unwrap()))
        .await
        .expect(200);
    srv.shutdown().await;
}

#[tokio::test]
async fn a_poll_stream_gets_a_signed_caep_event_for_every_kind_of_revocation() {
    let srv = Server::start().await;
    let support = srv.agent("support-v2");
    let analytics = srv.agent("analytics-v1");
    // Revoked before the stream exists: not sent (a stream starts at the feed's end).
    srv.revoke("user", "before@example.com").await.expect(201);

    let config = create_stream(&srv, json!({"aud": RX_AUD, "description": "caep receiver"})).await;
    let id = stream_id(&config);
    assert_eq!(config["iss"], srv.url.as_str());
    assert_eq!(config["aud"], RX_AUD);
    assert_eq!(config["delivery"]["method"], POLL);
    assert_eq!(
        config["delivery"]["endpoint_url"],
        srv.at(&format!("/ssf/poll/{id}")).as_str()
    );
    assert_eq!(
        config["events_delivered"],
        json!([SESSION_REVOKED, CREDENTIAL_CHANGE])
    );
    assert_eq!(config["description"], "caep receiver");
    assert!(config["min_verification_interval"].as_i64().unwrap() > 0);

    let alice = srv.alice();
    let a1 = srv
        .exchange(&support, &alice, "crm.customers:read")
        .await
        .access_token();
    let carol = srv.user_token(CAROL, &["support"], 3600);
    let c1 = srv
        .exchange(&support, &carol, "crm.customers:read")
        .await
        .access_token();
    let c2 = srv
        .exchange(&support, &carol, "crm.customers:read")
        .await
        .access_token();
    let task = peek(&c2)["task"].as_str().unwrap().to_owned();
    let bob = srv.user_token(BOB, &["finance"], 3600);
    srv.exchange(&analytics, &bob, "billing.invoices:read")
        .await
        .access_token();

    let mut revs = Vec::new();
    for (kind, target) in [
        ("user", ALICE.to_owned()),
        ("token", jti(&c1)),
        ("task", task.clone()),
        ("agent", "support-v2".to_owned()),
        ("key", "analytics-v1-k1".to_owned()),
    ] {
        let r = srv.revoke(kind, &target).await;
        r.expect(201);
        revs.push((kind, target, r.body["id"].as_str().unwrap().to_owned()));
    }

    let sets = wait_for_sets(&srv, &id, revs.len()).await;
    // maxEvents bounds the answer and says there is more.
    let (two, more) = poll(
        &srv,
        &id,
        json!({"maxEvents": 2, "returnImmediately": true}),
    )
    .await;
    assert_eq!(two.len(), 2);
    assert!(more);

    let mut seen = Vec::new();
    for (set_jti, set) in &sets {
        let (header, c) = verify_set(&srv, set, RX_AUD).await;
        assert_eq!(header.alg, Algorithm::EdDSA);
        assert_eq!(&c["jti"], set_jti.as_str());
        let (etype, body) = event(&c);
        let d = &body[DETAIL];
        let kind = d["kind"].as_str().unwrap();
        let (_, target, rev) = revs.iter().find(|(k, _, _)| *k == kind).unwrap();
        assert_eq!(&d["target"], target.as_str());
        assert_eq!(&d["revocation_id"], rev.as_str());
        assert_eq!(&c["txn"], rev.as_str());
        assert_eq!(body["initiating_entity"], "admin");
        assert!(body["event_timestamp"].as_i64().unwrap() > 0);
        assert!(body["reason_admin"]["en"].is_string());
        let expected_type = if kind == "key" {
            CREDENTIAL_CHANGE
        } else {
            SESSION_REVOKED
        };
        assert_eq!(etype, expected_type, "{kind}");
        let sub = &c["sub_id"];
        match kind {
            "user" => {
                assert_eq!(sub["format"], "iss_sub");
                assert_eq!(sub["iss"], srv.at("/dev-idp").as_str());
                assert_eq!(sub["sub"], ALICE);
                assert!(d["jtis"].as_array().unwrap().contains(&json!(jti(&a1))));
            }
            "token" => {
                assert_eq!(
                    sub,
                    &json!({"format": "jwt_id", "iss": srv.url, "jti": jti(&c1)})
                );
                assert_eq!(d["jtis"], json!([jti(&c1)]));
            }
            "task" => {
                assert_eq!(sub["format"], "complex");
                assert_eq!(sub["session"], json!({"format": "opaque", "id": task}));
                assert_eq!(sub["user"]["sub"], CAROL);
                assert_eq!(sub["application"]["sub"], "agent:support-v2");
            }
            "agent" => assert_eq!(
                sub,
                &json!({"format": "iss_sub", "iss": srv.url, "sub": "agent:support-v2"})
            ),
            "key" => {
                assert_eq!(body["change_type"], "revoke");
                assert_eq!(body["friendly_name"], "analytics-v1-k1");
                assert!(body["credential_type"].is_string());
                assert_eq!(sub["sub"], "agent:analytics-v1");
            }
            other => panic!("unexpected kind {other}"),
        }
        seen.push(d["seq"].as_i64().unwrap());
        assert_ne!(d["target"], "before@example.com");
    }
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), revs.len(), "one SET per revocation");

    // Acknowledged SETs are gone.
    ack_all(&srv, &id, sets.iter().map(|(j, _)| j.clone()).collect()).await;
    let (sets, more) = poll(&srv, &id, json!({"returnImmediately": true})).await;
    assert!(sets.is_empty() && !more);
    srv.shutdown().await;
}

/// A push receiver: records what it accepts; refuses with an RFC 8935 error while `failing`.
#[derive(Clone, Default)]
struct Receiver {
    accepted: Arc<Mutex<Vec<(HeaderMap, String)>>>,
    failing: Arc<AtomicBool>,
    attempts: Arc<AtomicUsize>,
}

async fn receive(State(rx): State<Receiver>, headers: HeaderMap, body: String) -> Response {
    rx.attempts.fetch_add(1, Ordering::SeqCst);
    if rx.failing.load(Ordering::SeqCst) {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"err": "invalid_key", "description": "key not trusted yet"})),
        )
            .into_response();
    }
    rx.accepted.lock().unwrap().push((headers, body));
    StatusCode::ACCEPTED.into_response()
}

impl Receiver {
    /// Serves on `addr` (an ephemeral port if `None`); returns the events URL.
    async fn serve(&self, addr: Option<SocketAddr>) -> String {
        let listener = tokio::net::TcpListener::bind(
            addr.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0))),
        )
        .await
        .unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new()
            .route("/events", post(receive))
            .with_state(self.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        format!("http://{addr}/events")
    }

    fn bodies(&self) -> Vec<String> {
        self.accepted
            .lock()
            .unwrap()
            .iter()
            .map(|(_, b)| b.clone())
            .collect()
    }

    async fn wait_for(&self, n: usize) -> Vec<String> {
        let start = Instant::now();
        loop {
            let b = self.bodies();
            if b.len() >= n {
                return b;
            }
            assert!(
                start.elapsed() < PATIENCE,
                "only {} of {n} SETs were pushed",
                b.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn wait_for_attempts(&self, n: usize) {
        let start = Instant::now();
        while self.attempts.load(Ordering::SeqCst) < n {
            assert!(start.elapsed() < PATIENCE, "too few push attempts");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The revocation ids carried by pushed SETs, in arrival order; each SET verified.
async fn pushed_revocations(srv: &Server, bodies: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for b in bodies {
        let (_, c) = verify_set(srv, b, RX_AUD).await;
        let (t, body) = event(&c);
        assert_eq!(t, SESSION_REVOKED);
        out.push(body[DETAIL]["revocation_id"].as_str().unwrap().to_owned());
    }
    out
}

#[tokio::test]
async fn a_push_stream_delivers_in_order_and_retries_a_refusing_receiver_without_loss() {
    let srv = Server::start().await;
    let rx = Receiver::default();
    let url = rx.serve(None).await;
    let config = create_stream(
        &srv,
        json!({
            "aud": RX_AUD,
            "delivery": {"method": PUSH, "endpoint_url": url, "authorization_header": "Bearer rx-secret"},
        }),
    )
    .await;
    let id = stream_id(&config);
    assert_eq!(config["delivery"]["method"], PUSH);
    assert_eq!(config["delivery"]["endpoint_url"], url.as_str());
    assert!(
        config["delivery"].get("authorization_header").is_none(),
        "the receiver's secret is never shown again"
    );

    let mut revs = Vec::new();
    let r = srv.revoke("user", "first@example.com").await;
    revs.push(r.body["id"].as_str().unwrap().to_owned());
    let bodies = rx.wait_for(1).await;
    {
        let accepted = rx.accepted.lock().unwrap();
        let (headers, _) = &accepted[0];
        assert_eq!(headers["authorization"], "Bearer rx-secret");
        assert_eq!(headers["content-type"], "application/secevent+jwt");
    }
    assert_eq!(pushed_revocations(&srv, &bodies).await, revs);
    let st = status(&srv, &id).await;
    assert_eq!(st["status"], "enabled");
    assert_eq!(st["queued"], 0);
    assert!(st.get("last_error").is_none(), "{st}");

    // The receiver refuses for a while: the transmitter retries and says why it is stuck.
    rx.failing.store(true, Ordering::SeqCst);
    let before = rx.attempts.load(Ordering::SeqCst);
    for i in 0..3 {
        let r = srv.revoke("user", &format!("later-{i}@example.com")).await;
        r.expect(201);
        revs.push(r.body["id"].as_str().unwrap().to_owned());
    }
    rx.wait_for_attempts(before + 3).await;
    let start = Instant::now();
    let st = loop {
        let st = status(&srv, &id).await;
        if st["queued"] == 3 && st["last_error"].is_object() {
            break st;
        }
        assert!(start.elapsed() < PATIENCE, "{st}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(st["last_error"]["err"], "invalid_key", "{st}");
    assert_eq!(st["last_error"]["description"], "key not trusted yet");
    assert_eq!(st["last_error"]["http_status"], 400);
    assert!(st["last_error"]["at"].is_i64());
    assert_eq!(rx.bodies().len(), 1, "nothing is accepted while refusing");

    // It recovers: every SET arrives, in revocation order, once.
    rx.failing.store(false, Ordering::SeqCst);
    let bodies = rx.wait_for(4).await;
    assert_eq!(pushed_revocations(&srv, &bodies).await, revs);
    let jtis: HashSet<String> = bodies
        .iter()
        .map(|b| peek(b)["jti"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(jtis.len(), 4);
    let start = Instant::now();
    loop {
        let st = status(&srv, &id).await;
        if st["queued"] == 0 && st.get("last_error").is_none() {
            break;
        }
        assert!(start.elapsed() < PATIENCE, "{st}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(rx.bodies().len(), 4, "no duplicates");
    // Polling a push stream is refused: its SETs go to the receiver.
    let r = srv.admin_post(&format!("/ssf/poll/{id}"), &json!({})).await;
    r.expect(400);
    assert_eq!(r.body["err"], "invalid_request");
    srv.shutdown().await;
}

#[tokio::test]
async fn streams_and_their_undelivered_sets_survive_a_restart_without_duplicates() {
    let mut srv = Server::start().await;
    let rx = Receiver::default();
    rx.failing.store(true, Ordering::SeqCst);
    let url = rx.serve(None).await;
    let push_id = stream_id(
        &create_stream(
            &srv,
            json!({"aud": RX_AUD, "delivery": {"method": PUSH, "endpoint_url": url}}),
        )
        .await,
    );
    let poll_id = stream_id(&create_stream(&srv, json!({"aud": RX_AUD})).await);

    let mut revs = Vec::new();
    for who in ["r1@example.com", "r2@example.com"] {
        let r = srv.revoke("user", who).await;
        r.expect(201);
        revs.push(r.body["id"].as_str().unwrap().to_owned());
    }
    let sets = wait_for_sets(&srv, &poll_id, 2).await;
    let by_rev = |sets: &[(String, String)], rev: &str| -> Option<String> {
        sets.iter()
            .find(|(_, s)| peek(s)["txn"] == rev)
            .map(|(j, _)| j.clone())
    };
    let first = by_rev(&sets, &revs[0]).unwrap();
    let second = by_rev(&sets, &revs[1]).unwrap();
    // The first is acknowledged; the second is not.
    let (_, _) = poll(
        &srv,
        &poll_id,
        json!({"ack": [first], "maxEvents": 0, "returnImmediately": true}),
    )
    .await;
    rx.wait_for_attempts(1).await;

    srv.restart().await;
    rx.failing.store(false, Ordering::SeqCst);

    // Both streams are still configured.
    let r = srv.admin_get("/ssf/streams").await;
    r.expect(200);
    let ids: Vec<&str> = r
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["stream_id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&push_id.as_str()) && ids.contains(&poll_id.as_str()));

    // A revocation after the restart joins the queue behind the ones held.
    let r = srv.revoke("user", "r3@example.com").await;
    r.expect(201);
    revs.push(r.body["id"].as_str().unwrap().to_owned());

    // Push: everything that was refused before the restart, then the new one, in order.
    let bodies = rx.wait_for(3).await;
    assert_eq!(pushed_revocations(&srv, &bodies).await, revs);

    // Poll: the unacknowledged SET is the same one (same jti), the acknowledged one is gone.
    let sets = wait_for_sets(&srv, &poll_id, 2).await;
    let jtis: Vec<&String> = sets.iter().map(|(j, _)| j).collect();
    assert!(jtis.contains(&&second), "{jtis:?}");
    assert!(
        by_rev(&sets, &revs[0]).is_none(),
        "acknowledged before the restart"
    );
    assert!(by_rev(&sets, &revs[2]).is_some());
    for (_, s) in &sets {
        verify_set(&srv, s, RX_AUD).await;
    }
    ack_all(&srv, &poll_id, sets.into_iter().map(|(j, _)| j).collect()).await;

    // Nothing is queued twice after a second restart either.
    srv.restart().await;
    let (sets, more) = poll(&srv, &poll_id, json!({"returnImmediately": true})).await;
    assert!(sets.is_empty() && !more, "{sets:?}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rx.bodies().len(), 3);
    srv.shutdown().await;
}

#[tokio::test]
async fn stream_status_verification_subjects_and_refusals() {
    let srv = Server::start().await;
    let s = stream_id(&create_stream(&srv, json!({"aud": RX_AUD})).await);
    let t = stream_id(&create_stream(&srv, json!({"aud": RX_AUD})).await);

    // Verification: the receiver's state comes back in a verification event about the stream.
    let r = srv
        .admin_post("/ssf/verify", &json!({"stream_id": s, "state": "c3RhdGU"}))
        .await;
    r.expect(204);
    let again = srv
        .admin_post("/ssf/verify", &json!({"stream_id": s, "state": "x"}))
        .await;
    again.expect(429);
    assert!(!again.header("retry-after").is_empty());
    let sets = wait_for_sets(&srv, &s, 1).await;
    let (_, c) = verify_set(&srv, &sets[0].1, RX_AUD).await;
    assert_eq!(c["sub_id"], json!({"format": "opaque", "id": s}));
    let (etype, body) = event(&c);
    assert_eq!(etype, VERIFICATION);
    assert_eq!(body["state"], "c3RhdGU");
    ack_all(&srv, &s, vec![sets[0].0.clone()]).await;

    // Paused: SETs are held, not sent.
    set_status(&srv, &s, "paused").await;
    let st = status(&srv, &s).await;
    assert_eq!(st["status"], "paused");
    assert_eq!(st["reason"], "test sets paused");
    srv.revoke("user", "held@example.com").await.expect(201);
    wait_for_sets(&srv, &t, 1).await; // the other stream has it, so the dispatcher ran
    let (sets, more) = poll(&srv, &s, json!({"returnImmediately": true})).await;
    assert!(sets.is_empty() && !more);
    assert_eq!(
        status(&srv, &s).await["queued"],
        2,
        "stream-updated and the revocation"
    );

    // Enabled again: the held SETs and the status changes arrive.
    set_status(&srv, &s, "enabled").await;
    let sets = wait_for_sets(&srv, &s, 3).await;
    let mut kinds = Vec::new();
    for (_, set) in &sets {
        let (_, c) = verify_set(&srv, set, RX_AUD).await;
        let (etype, body) = event(&c);
        if etype == STREAM_UPDATED {
            assert_eq!(c["sub_id"], json!({"format": "opaque", "id": s}));
            kinds.push(format!("updated:{}", body["status"].as_str().unwrap()));
        } else {
            assert_eq!(etype, SESSION_REVOKED);
            assert_eq!(c["sub_id"]["sub"], "held@example.com");
            kinds.push("revocation".into());
        }
    }
    kinds.sort();
    assert_eq!(kinds, ["revocation", "updated:enabled", "updated:paused"]);
    ack_all(&srv, &s, sets.into_iter().map(|(j, _)| j).collect()).await;

    // Disabled: nothing is held; what happens meanwhile is never sent.
    set_status(&srv, &s, "disabled").await;
    let t_sets = wait_for_sets(&srv, &t, 1).await;
    ack_all(&srv, &t, t_sets.into_iter().map(|(j, _)| j).collect()).await;
    srv.revoke("user", "dropped@example.com").await.expect(201);
    wait_for_sets(&srv, &t, 1).await;
    srv.admin_post("/ssf/verify", &json!({"stream_id": s}))
        .await
        .expect(400);
    set_status(&srv, &s, "enabled").await;
    let sets = wait_for_sets(&srv, &s, 1).await;
    let (etype, body) = event(&peek(&sets[0].1));
    assert_eq!(
        (etype.as_str(), &body["status"]),
        (STREAM_UPDATED, &json!("enabled"))
    );
    ack_all(&srv, &s, vec![sets[0].0.clone()]).await;

    // Subjects: removing one stops its events; adding it back restores them.
    let t_sets = wait_for_sets(&srv, &t, 1).await;
    ack_all(&srv, &t, t_sets.into_iter().map(|(j, _)| j).collect()).await;
    let gone = json!({"format": "iss_sub", "iss": srv.at("/dev-idp"), "sub": "gone@example.com"});
    srv.admin_post(
        "/ssf/subjects:remove",
        &json!({"stream_id": s, "subject": gone}),
    )
    .await
    .expect(204);
    srv.revoke("user", "gone@example.com").await.expect(201);
    srv.revoke("user", "kept@example.com").await.expect(201);
    wait_for_sets(&srv, &t, 2).await;
    let sets = wait_for_sets(&srv, &s, 1).await;
    assert_eq!(peek(&sets[0].1)["sub_id"]["sub"], "kept@example.com");
    ack_all(&srv, &s, vec![sets[0].0.clone()]).await;
    let r = srv
        .admin_post(
            "/ssf/subjects:add",
            &json!({"stream_id": s, "subject": gone, "verified": true}),
        )
        .await;
    r.expect(200);
    srv.revoke("user", "gone@example.com").await.expect(201);
    let sets = wait_for_sets(&srv, &s, 1).await;
    assert_eq!(peek(&sets[0].1)["sub_id"]["sub"], "gone@example.com");

    // Updates: receiver-supplied fields change; transmitter-supplied ones must match.
    let r = request(
        &srv,
        Method::PATCH,
        "/ssf/streams",
        Some(&json!({"stream_id": s, "events_requested": [CREDENTIAL_CHANGE], "description": "keys only"})),
    )
    .await;
    r.expect(200);
    assert_eq!(r.body["events_delivered"], json!([CREDENTIAL_CHANGE]));
    assert_eq!(r.body["description"], "keys only");
    assert_eq!(r.body["aud"], RX_AUD);
    let before = srv.admin_get(&format!("/ssf/streams?stream_id={s}")).await;
    for bad in [
        json!({"stream_id": s, "iss": "https://elsewhere.example"}),
        json!({"stream_id": s, "aud": "someone-else"}),
        json!({"stream_id": s, "events_delivered": [SESSION_REVOKED]}),
        json!({"stream_id": s, "delivery": {"method": PUSH, "endpoint_url": "gopher://x"}}),
        json!({"stream_id": s, "bogus": 1}),
        json!({"description": "no stream id"}),
    ] {
        request(&srv, Method::PATCH, "/ssf/streams", Some(&bad))
            .await
            .expect(400);
    }
    let after = srv.admin_get(&format!("/ssf/streams?stream_id={s}")).await;
    assert_eq!(before.body, after.body, "a refused update changes nothing");
    let r = request(
        &srv,
        Method::PUT,
        "/ssf/streams",
        Some(&json!({"stream_id": s, "delivery": {"method": POLL}})),
    )
    .await;
    r.expect(200);
    assert!(
        r.body.get("description").is_none(),
        "PUT removes what it omits"
    );
    assert!(r.body.get("events_requested").is_none());

    // Bad bodies are refused and create nothing.
    let count = |r: &Reply| r.body.as_array().unwrap().len();
    let listed = count(&srv.admin_get("/ssf/streams").await);
    for bad in [
        json!({"stream_id": "mine"}),
        json!({"delivery": {"method": PUSH}}),
        json!({"delivery": {"method": PUSH, "endpoint_url": "ftp://rx.example/x"}}),
        json!({"delivery": {"method": PUSH, "endpoint_url": "http://rx.example/x", "authorization_header": "a\nb"}}),
        json!({"delivery": {"method": "urn:example:pigeon"}}),
        json!({"delivery": {"method": POLL, "endpoint_url": "https://rx.example/poll"}}),
        json!({"iss": "https://elsewhere.example"}),
        json!({"aud": []}),
        json!({"events_requested": "not-a-list"}),
        json!({"unknown": true}),
        json!([1, 2]),
    ] {
        let r = srv.admin_post("/ssf/streams", &bad).await;
        r.expect(400);
        assert!(!r.description().is_empty(), "{bad}: {}", r.body);
    }
    let r = srv
        .send(
            srv.admin_req(Method::POST, "/ssf/streams")
                .header("content-type", "application/json")
                .body("{not json"),
        )
        .await;
    r.expect(400);
    for (path, bad) in [
        ("/ssf/status", json!({"stream_id": s, "status": "asleep"})),
        ("/ssf/status", json!({"stream_id": s})),
        (
            "/ssf/subjects:remove",
            json!({"stream_id": s, "subject": "alice"}),
        ),
        (
            "/ssf/subjects:add",
            json!({"stream_id": s, "subject": {"format": "complex"}}),
        ),
        ("/ssf/verify", json!({"state": "x"})),
    ] {
        srv.admin_post(path, &bad).await.expect(400);
    }
    for bad in [json!({"maxEvents": -1}), json!({"ack": "x"})] {
        let r = srv.admin_post(&format!("/ssf/poll/{s}"), &bad).await;
        r.expect(400);
        assert_eq!(r.body["err"], "invalid_request");
    }
    assert_eq!(count(&srv.admin_get("/ssf/streams").await), listed);
    assert_eq!(status(&srv, &s).await["status"], "enabled");

    // Unknown streams are 404 everywhere.
    let nope = "no-such-stream";
    srv.admin_get(&format!("/ssf/streams?stream_id={nope}"))
        .await
        .expect(404);
    srv.admin_get(&format!("/ssf/status?stream_id={nope}"))
        .await
        .expect(404);
    request(
        &srv,
        Method::DELETE,
        &format!("/ssf/streams?stream_id={nope}"),
        None,
    )
    .await
    .expect(404);
    request(
        &srv,
        Method::PATCH,
        "/ssf/streams",
        Some(&json!({"stream_id": nope, "description": "x"})),
    )
    .await
    .expect(404);
    for (path, body) in [
        (
            "/ssf/status",
            json!({"stream_id": nope, "status": "paused"}),
        ),
        ("/ssf/verify", json!({"stream_id": nope})),
        (
            "/ssf/subjects:add",
            json!({"stream_id": nope, "subject": {"format": "opaque", "id": "x"}}),
        ),
        (&format!("/ssf/poll/{nope}"), json!({})),
    ] {
        srv.admin_post(path, &body).await.expect(404);
    }

    // Without a credential: 401; an auditor reads and polls but cannot manage; a verifier
    // credential reaches nothing here.
    for (method, path) in [
        (Method::GET, "/ssf/streams".to_owned()),
        (Method::POST, "/ssf/streams".to_owned()),
        (Method::GET, format!("/ssf/status?stream_id={s}")),
        (Method::POST, "/ssf/verify".to_owned()),
        (Method::POST, format!("/ssf/poll/{s}")),
    ] {
        let r = srv
            .send(
                srv.http
                    .request(method.clone(), srv.at(&path))
                    .json(&json!({})),
            )
            .await;
        r.expect(401);
        let r = srv
            .send(
                srv.http
                    .request(method, srv.at(&path))
                    .bearer_auth("mnd_admin_not-a-real-one")
                    .json(&json!({})),
            )
            .await;
        r.expect(401);
    }
    let make = |role: &str| json!({"id": format!("ssf-{role}"), "role": role});
    let auditor = srv.admin_post("/v1/credentials", &make("auditor")).await;
    auditor.expect(201);
    let auditor = auditor.body["secret"].as_str().unwrap().to_owned();
    let verifier = srv.admin_post("/v1/credentials", &make("verifier")).await;
    verifier.expect(201);
    let verifier = verifier.body["secret"].as_str().unwrap().to_owned();
    let as_ = |secret: &str, method: Method, path: &str| {
        srv.http
            .request(method, srv.at(path))
            .bearer_auth(secret)
            .json(&json!({"returnImmediately": true}))
    };
    srv.send(as_(&auditor, Method::GET, "/ssf/streams"))
        .await
        .expect(200);
    srv.send(as_(&auditor, Method::POST, &format!("/ssf/poll/{t}")))
        .await
        .expect(200);
    srv.send(as_(&auditor, Method::POST, "/ssf/streams"))
        .await
        .expect(403);
    srv.send(as_(&verifier, Method::POST, &format!("/ssf/poll/{t}")))
        .await
        .expect(403);

    // Deleting a stream removes it and what it held.
    request(
        &srv,
        Method::DELETE,
        &format!("/ssf/streams?stream_id={s}"),
        None,
    )
    .await
    .expect(204);
    srv.admin_get(&format!("/ssf/streams?stream_id={s}"))
        .await
        .expect(404);
    srv.admin_post(&format!("/ssf/poll/{s}"), &json!({}))
        .await
        .expect(404);
    // Stream changes are audited.
    let events = srv.audit("kind=ssf.stream&limit=1000").await;
    let actions: HashSet<&str> = events
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for a in [
        "ssf.stream.create",
        "ssf.stream.status",
        "ssf.stream.update",
        "ssf.stream.replace",
        "ssf.subject.remove",
        "ssf.subject.add",
        "ssf.stream.delete",
    ] {
        assert!(actions.contains(a), "{a} in {actions:?}");
    }
    srv.shutdown().await;
}

#[tokio::test]
async fn a_long_poll_wakes_when_a_set_is_queued() {
    let srv = Server::start().await;
    let id = stream_id(&create_stream(&srv, json!({"aud": RX_AUD})).await);
    let start = Instant::now();
    let waiting = {
        let http = srv.http.clone();
        let url = srv.at(&format!("/ssf/poll/{id}"));
        let admin = srv.admin.clone();
        tokio::spawn(async move {
            http.post(url)
                .bearer_auth(admin)
                .json(&json!({"returnImmediately": false}))
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiting.is_finished(), "a long poll waits for SETs");
    srv.revoke("user", "wake@example.com").await.expect(201);
    let body = waiting.await.unwrap();
    assert_eq!(body["sets"].as_object().unwrap().len(), 1, "{body}");
    assert!(start.elapsed() < Duration::from_secs(5));
    srv.shutdown().await;
}

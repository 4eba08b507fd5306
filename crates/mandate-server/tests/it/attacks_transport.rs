//! The attack catalogue, continued (see attacks.rs): attacks on the transport — the gateway's and
//! `mandate serve`'s HTTP listeners, the gateway's header and path handling, and the JWKS
//! fetches — plus two token attacks. One test each, named after the attack, against the real
//! server and gateway over real TCP (raw bytes on a socket where a client library would refuse
//! or normalize the request), in front of a real upstream that records every request it gets.
//!
//! 14. Header injection at the gateway: CR, NUL, obs-fold and malformed names refused before
//!     anything is forwarded; agent-sent `X-Forwarded-*`, `Forwarded`, `X-Real-IP`,
//!     `X-Mandate-*`, `Txn-Token`, method/path overrides, a second `Authorization`, hop-by-hop
//!     headers named in `Connection`, and the agent's own credential never reach the upstream.
//! 15. Request smuggling at the gateway: `Content-Length` with `Transfer-Encoding`, differing
//!     `Content-Length`s, obfuscated `Transfer-Encoding`, a request hidden in a body, a pipelined
//!     request without a token: refused (400) or re-framed; the upstream sees at most the one
//!     legitimate request and never an unauthenticated one.
//! 16. Path traversal and ambiguous spellings (`..%2F`, `%2e%2e`, `//`, `/../`, `%00`, overlong
//!     UTF-8, `;` parameters, backslashes, absolute-form targets, a foreign `Host`): no other
//!     route matches, the audited resource is the literal one, the upstream never gets a path
//!     outside the route's nor the agent's `Host`.
//! 17. JWKS redirects: a trusted IdP's JWKS URL, and Mandate's JWKS as a verifier fetches it,
//!     answering 302 to an attacker's listener: never followed, attacker-signed tokens refused.
//! 18. Slow clients and floods: headers sent a byte at a time cut after the header timeout, a
//!     slow body cut by the request timeout (server) or the body timeout (gateway), hundreds of
//!     idle connections do not starve a legitimate client, and `max_connections` bounds what is
//!     served at once — at the gateway and at `mandate serve`'s own listener.
//! 19. A user token just past its `exp`: within `tokens.leeway` (clock skew) it verifies, but an
//!     issued token never outlives its subject (SPEC §3), so nothing is issued; beyond the
//!     leeway verification refuses it. Both `invalid_grant` with a deny event.
//! 20. A forged `act` chain at the gateway (signed by a key Mandate does not hold, or edited under
//!     Mandate's signature): 401 `invalid_token`, the upstream never called, a deny event.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::harness::*;

const SCOPE: &str = "crm.customers:read";
const SECRET: &str = "crm-real-key";

/// A request as the upstream received it.
#[derive(Debug, Clone)]
pub(super) struct Seen {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Seen {
    pub(super) fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// A real HTTP upstream (axum) that records every request and answers 200.
pub(super) struct Upstream {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Upstream {
    pub(super) async fn start() -> Upstream {
        let seen = Arc::new(Mutex::new(Vec::<Seen>::new()));
        let keep = seen.clone();
        let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
            let keep = keep.clone();
            async move {
                let (parts, body) = req.into_parts();
                let body = axum::body::to_bytes(body, 1 << 20)
                    .await
                    .unwrap_or_default();
                keep.lock().unwrap().push(Seen {
                    method: parts.method.to_string(),
                    target: parts.uri.to_string(),
                    headers: parts
                        .headers
                        .iter()
                        .map(|(n, v)| {
                            (
                                n.as_str().to_owned(),
                                String::from_utf8_lossy(v.as_bytes()).into_owned(),
                            )
                        })
                        .collect(),
                    body: body.to_vec(),
                });
                axum::Json(json!({"ok": true}))
            }
        });
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, app).await });
        Upstream {
            url: format!("http://{addr}"),
            seen,
        }
    }

    pub(super) fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub(super) fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

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

/// A `--dev` server with a gateway in front of `up` (credential: `x-api-key`), `tune`d.
pub(super) async fn start(up: &Upstream, tune: impl FnOnce(&mut mandate_server::Config)) -> Server {
    let url = up.url.clone();
    let s = Server::start_configured(move |c| {
        c.gateway.listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        c.gateway.upstreams = vec![mandate_gateway::config::UpstreamConfig {
            name: "crm".into(),
            url,
            secret: Some("crm-key".into()),
            credential: Some(mandate_gateway::forward::Injection::Header {
                name: "x-api-key".into(),
                format: None,
            }),
            timeout_secs: Some(2),
            audience: None,
        }];
        c.gateway.routes = vec![
            route("GET", "/customers/{id}", SCOPE, "customers/{id}"),
            route(
                "GET",
                "/customers/{id}/notes",
                SCOPE,
                "customers/{id}/notes",
            ),
            route("GET", "/tickets/{id}", "tickets:read", "tickets/{id}"),
            route("POST", "/echo", SCOPE, "echo"),
        ];
        tune(c);
    })
    .await;
    s.send(
        s.admin_req(reqwest::Method::PUT, "/v1/secrets/crm-key")
            .json(&json!({"value": SECRET})),
    )
    .await
    .expect(201);
    s
}

fn gw_addr(s: &Server) -> SocketAddr {
    s.running().gateway.as_ref().expect("the gateway runs").addr
}

pub(super) fn gw_url(s: &Server) -> String {
    format!("http://{}", gw_addr(s))
}

/// A token for the gateway: Alice through `support-v2`, holding `scope`.
async fn token(s: &Server, scope: &str) -> String {
    let mut form = exchange_form(&s.alice(), TYPE_JWT, scope, &[]);
    form.retain(|(k, _)| k != "resource");
    form.push(("resource".into(), gw_url(s)));
    s.token_as(&s.agent("support-v2"), form)
        .await
        .access_token()
}

/// Writes `request` on a new connection and reads until the peer closes (or 5 s pass).
async fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The status of the first answer in `reply`, or 0 when there is none (the connection closed).
fn status(reply: &str) -> u16 {
    reply
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// How many answers `reply` holds.
fn answers(reply: &str) -> usize {
    reply.matches("HTTP/1.1 ").count()
}

/// The gateway's audit events (`gateway.request`) with `decision`, oldest first.
pub(super) async fn gateway_events(s: &Server, decision: &str) -> Vec<Value> {
    s.audit(&format!("decision={decision}&limit=10000"))
        .await
        .into_iter()
        .filter(|e| e["kind"] == "gateway.request")
        .collect()
}

/// Waits (up to 2 s) until there are more than `before` such events; returns the newest.
pub(super) async fn next_gateway_event(s: &Server, decision: &str, before: usize) -> Value {
    for _ in 0..100 {
        let events = gateway_events(s, decision).await;
        if events.len() > before {
            return events.last().unwrap().clone();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no new `{decision}` gateway audit event");
}

// ---- 14. Header injection ----

#[tokio::test]
async fn attack_header_injection_with_cr_nul_obs_fold_or_bad_names_is_refused_at_the_gateway() {
    let up = Upstream::start().await;
    let s = start(&up, |_| {}).await;
    let t = token(&s, SCOPE).await;
    let addr = gw_addr(&s);
    let head = format!("GET /customers/1 HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {t}\r\n");
    for (what, bad) in [
        ("bare CR in a value", "x-a: a\rx-injected: 1\r\n"),
        ("NUL in a value", "x-a: a\0b\r\n"),
        ("obs-fold", "x-a: a\r\n x-injected: 1\r\n"),
        ("obs-fold with a tab", "x-a: a\r\n\tb\r\n"),
        ("NUL in a name", "x-\0a: 1\r\n"),
        ("space in a name", "x a: 1\r\n"),
        ("space before the colon", "x-a : 1\r\n"),
        ("no colon", "x-injected\r\n"),
    ] {
        let reply = raw(
            addr,
            format!("{head}{bad}connection: close\r\n\r\n").as_bytes(),
        )
        .await;
        assert!(matches!(status(&reply), 0 | 400), "{what}: {reply:?}");
    }
    assert_eq!(up.count(), 0, "nothing was forwarded: {:?}", up.seen());
    // The gateway still serves the same request without the bad header.
    let reply = raw(addr, format!("{head}connection: close\r\n\r\n").as_bytes()).await;
    assert_eq!(status(&reply), 200, "{reply}");
    assert_eq!(up.count(), 1);
    s.shutdown().await;
}

#[tokio::test]
async fn attack_agent_sent_gateway_headers_and_credentials_never_reach_the_upstream() {
    let up = Upstream::start().await;
    let s = start(&up, |_| {}).await;
    let t = token(&s, SCOPE).await;
    let forged_txn = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJyb290In0.";
    let r = s
        .send(
            reqwest::Client::new()
                .get(format!("{}/customers/7", gw_url(&s)))
                .bearer_auth(&t)
                .header("authorization", "Basic YWRtaW46YWRtaW4=")
                .header("x-forwarded-for", "10.0.0.1")
                .header("x-forwarded-host", "admin.internal")
                .header("x-forwarded-proto", "https")
                .header("forwarded", "for=10.0.0.1;by=mandate")
                .header("x-real-ip", "10.0.0.1")
                .header("true-client-ip", "10.0.0.1")
                .header("x-mandate-user", "root@example.com")
                .header("x-mandate-scope", "crm.*:*")
                .header("txn-token", forged_txn)
                .header("x-original-url", "/admin")
                .header("x-rewrite-url", "/admin")
                .header("x-http-method-override", "DELETE")
                .header("x-api-key", "attacker-key")
                .header("cookie", "session=agent")
                .header("dpop", "proof")
                .header("proxy-authorization", "Basic eDp5")
                .header("connection", "x-hop-secret, keep-alive")
                .header("x-hop-secret", "1")
                .header("keep-alive", "timeout=5")
                .header("x-ordinary", "kept"),
        )
        .await;
    r.expect(200);
    let seen = up.seen();
    let [got] = seen.as_slice() else {
        panic!("one request upstream: {seen:?}");
    };
    assert_eq!(
        (got.method.as_str(), got.target.as_str()),
        ("GET", "/customers/7")
    );
    for (name, value) in &got.headers {
        assert!(!value.contains(&t), "`{name}` carries the agent's token");
        assert!(
            !name.starts_with("x-forwarded-") && !name.starts_with("x-mandate-"),
            "`{name}` reached the upstream"
        );
    }
    for gone in [
        "authorization",
        "x-real-ip",
        "true-client-ip",
        "x-original-url",
        "x-rewrite-url",
        "x-http-method-override",
        "cookie",
        "dpop",
        "proxy-authorization",
        "x-hop-secret",
        "keep-alive",
    ] {
        assert!(
            got.all(gone).is_empty(),
            "`{gone}` reached the upstream: {got:?}"
        );
    }
    assert_eq!(got.all("x-api-key"), [SECRET], "only the real credential");
    assert_eq!(got.all("forwarded"), ["for=\"127.0.0.1\""]);
    assert_eq!(got.all("x-ordinary"), ["kept"]);
    // The Transaction Token is Mandate's, not the forged one.
    let txn = got.all("txn-token");
    assert_eq!(txn.len(), 1, "{got:?}");
    assert_ne!(txn[0], forged_txn);
    let header = jsonwebtoken::decode_header(txn[0]).unwrap();
    assert!(
        s.jwks()
            .await
            .find(header.kid.as_deref().unwrap())
            .is_some()
    );
    assert_eq!(peek(txn[0])["sub"], ALICE);
    s.shutdown().await;
}

// ---- 15. Request smuggling ----

#[tokio::test]
async fn attack_request_smuggling_at_the_gateway_is_refused_or_reframed() {
    let up = Upstream::start().await;
    let s = start(&up, |_| {}).await;
    let t = token(&s, SCOPE).await;
    let addr = gw_addr(&s);
    let auth = format!("authorization: Bearer {t}\r\n");
    let smuggled = "GET /customers/666 HTTP/1.1\r\nhost: x\r\n\r\n";

    // Framing the gateway cannot read one way only: 400, nothing forwarded.
    for (what, headers, body) in [
        (
            "two differing lengths",
            "content-length: 4\r\ncontent-length: 5\r\n",
            "abcde",
        ),
        ("a list of lengths", "content-length: 4, 5\r\n", "abcde"),
        ("a signed length", "content-length: +5\r\n", "abcde"),
        (
            "chunked, then identity",
            "transfer-encoding: chunked, identity\r\n",
            "0\r\n\r\n",
        ),
        (
            "identity alone",
            "transfer-encoding: identity\r\n",
            "0\r\n\r\n",
        ),
        (
            "a look-alike coding",
            "transfer-encoding: xchunked\r\n",
            "0\r\n\r\n",
        ),
        (
            "chunked overridden by a second line",
            "transfer-encoding: chunked\r\ntransfer-encoding: x\r\n",
            "0\r\n\r\n",
        ),
        (
            "space before the colon",
            "transfer-encoding : chunked\r\n",
            "0\r\n\r\n",
        ),
        (
            "folded coding",
            "transfer-encoding:\r\n chunked\r\n",
            "0\r\n\r\n",
        ),
    ] {
        let req = format!("POST /echo HTTP/1.1\r\nhost: x\r\n{auth}{headers}\r\n{body}{smuggled}");
        let reply = raw(addr, req.as_bytes()).await;
        assert!(matches!(status(&reply), 0 | 400), "{what}: {reply:?}");
        assert!(answers(&reply) <= 1, "{what}: {reply:?}");
    }
    let req = format!(
        "POST /echo HTTP/1.0\r\nhost: x\r\n{auth}transfer-encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"
    );
    assert!(matches!(status(&raw(addr, req.as_bytes()).await), 0 | 400));
    assert_eq!(up.count(), 0, "{:?}", up.seen());

    // Both lengths: chunked wins, the connection closes, the rest is never read as a request.
    for order in [
        "content-length: 40\r\ntransfer-encoding: chunked\r\n",
        "transfer-encoding: chunked\r\ncontent-length: 40\r\n",
    ] {
        let req = format!("POST /echo HTTP/1.1\r\nhost: x\r\n{auth}{order}\r\n0\r\n\r\n{smuggled}");
        let reply = raw(addr, req.as_bytes()).await;
        assert!(matches!(status(&reply), 0 | 200 | 400), "{reply:?}");
        assert!(answers(&reply) <= 1, "{reply:?}");
    }
    // A request hidden in a body stays a body.
    let req = format!(
        "POST /echo HTTP/1.1\r\nhost: x\r\n{auth}content-length: {}\r\nconnection: close\r\n\r\n{smuggled}",
        smuggled.len()
    );
    let reply = raw(addr, req.as_bytes()).await;
    assert_eq!((status(&reply), answers(&reply)), (200, 1), "{reply}");
    // A pipelined second request without a token is refused by the gateway itself.
    let req = format!(
        "GET /customers/1 HTTP/1.1\r\nhost: x\r\n{auth}\r\nGET /customers/2 HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    );
    let reply = raw(addr, req.as_bytes()).await;
    assert_eq!(answers(&reply), 2, "{reply}");
    assert!(reply.contains("HTTP/1.1 401"), "{reply}");

    let seen = up.seen();
    assert!(
        seen.iter()
            .all(|r| r.target != "/customers/666" && r.target != "/customers/2"),
        "a smuggled or unauthenticated request reached the upstream: {seen:?}"
    );
    let posts: Vec<&Seen> = seen.iter().filter(|r| r.method == "POST").collect();
    assert!(posts.len() <= 3, "{seen:?}");
    assert!(
        posts.iter().any(|r| r.body == smuggled.as_bytes()),
        "the hidden request arrived as the body it was: {seen:?}"
    );
    assert_eq!(
        seen.iter().filter(|r| r.method == "GET").count(),
        1,
        "{seen:?}"
    );
    for r in &seen {
        assert_eq!(r.all("x-api-key"), [SECRET], "{r:?}");
    }
    s.shutdown().await;
}

// ---- 16. Path traversal ----

#[tokio::test]
async fn attack_path_traversal_and_encoded_slashes_never_reach_another_route() {
    let up = Upstream::start().await;
    let s = start(&up, |_| {}).await;
    // A token for the customers routes only: any path reaching `tickets` would be a leak.
    let t = token(&s, SCOPE).await;
    let addr = gw_addr(&s);
    let get = |target: &str, host: &str| {
        format!(
            "GET {target} HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer {t}\r\nconnection: close\r\n\r\n"
        )
    };
    let denies = gateway_events(&s, "deny").await.len();
    let mut refused = 0;
    for target in [
        "/customers/..%2Ftickets%2F1",
        "/customers/..%2fadmin",
        "/customers/%2e%2e/tickets/1",
        "/customers/%2e%2e",
        "/customers/.%2E/notes",
        "//customers/1",
        "/customers//1",
        "/customers/1%2F..%2F2",
        "/customers/1/../2",
        "/customers/1/./notes",
        "/customers/../tickets/1",
        "/customers/%00",
        "/customers/1%00",
        "/customers/%c0%ae%c0%ae/tickets/1",
        "/customers/1%c0%af..%c0%af2",
        "/customers/..;/tickets/1",
        "/customers/1;jsessionid=x",
        "/customers/1%5C..%5C2",
        "/customers/%31",
        "/customers/1/notes/",
    ] {
        let reply = raw(addr, get(target, "x").as_bytes()).await;
        let code = status(&reply);
        assert!(matches!(code, 400 | 404), "{target}: {reply}");
        if code == 404 {
            refused += 1;
        }
    }
    // Raw backslashes and controls in the target are refused by the parser already.
    for target in ["/customers/1\\..\\2", "/customers/1\x00", "/customers/1\t2"] {
        let reply = raw(addr, get(target, "x").as_bytes()).await;
        assert!(
            matches!(status(&reply), 0 | 400 | 404),
            "{target:?}: {reply}"
        );
    }
    assert_eq!(up.count(), 0, "{:?}", up.seen());
    // Each routed refusal left a deny event naming the literal path.
    for _ in 0..100 {
        if gateway_events(&s, "deny").await.len() >= denies + refused {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(gateway_events(&s, "deny").await.len() >= denies + refused);

    // Absolute-form target and a foreign Host: the path is routed, the upstream gets its own
    // host, and the audited resource is the literal segment.
    let allows = gateway_events(&s, "allow").await.len();
    let reply = raw(
        addr,
        get("http://evil.example/customers/7", "evil.example").as_bytes(),
    )
    .await;
    assert_eq!(status(&reply), 200, "{reply}");
    let reply = raw(
        addr,
        get("/customers/caf%C3%A9", "admin.internal").as_bytes(),
    )
    .await;
    assert_eq!(status(&reply), 200, "{reply}");
    let seen = up.seen();
    let targets: Vec<&str> = seen.iter().map(|r| r.target.as_str()).collect();
    assert_eq!(targets, ["/customers/7", "/customers/caf%C3%A9"]);
    let upstream_host = up.url.trim_start_matches("http://");
    for r in &seen {
        assert_eq!(r.all("host"), [upstream_host], "{r:?}");
    }
    next_gateway_event(&s, "allow", allows + 1).await;
    let events = gateway_events(&s, "allow").await;
    let resources: Vec<&str> = events[allows..]
        .iter()
        .map(|e| e["resource"].as_str().unwrap())
        .collect();
    assert_eq!(resources, ["customers/7", "customers/caf%C3%A9"]);
    s.shutdown().await;
}

// ---- 17. JWKS redirects ----

/// A listener that counts requests and answers each with `answer(n)` (n from 0).
async fn counting(
    answer: impl Fn(usize) -> axum::response::Response + Clone + Send + Sync + 'static,
) -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let keep = hits.clone();
    let app = axum::Router::new().fallback(move || {
        let n = keep.fetch_add(1, Ordering::SeqCst);
        let answer = answer.clone();
        async move { answer(n) }
    });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await });
    (format!("http://{addr}"), hits)
}

fn redirect_to(url: &str) -> axum::response::Response {
    axum::response::Response::builder()
        .status(302)
        .header("location", url)
        .body(axum::body::Body::empty())
        .unwrap()
}

fn json_answer(v: &Value) -> axum::response::Response {
    axum::response::Response::builder()
        .header("content-type", "application/json")
        .body(axum::body::Body::from(v.to_string()))
        .unwrap()
}

#[tokio::test]
async fn attack_idp_jwks_redirect_to_an_attacker_host_is_never_followed() {
    let attacker = TestKey::ed25519("attacker-k1");
    let doc = json!({"keys": [attacker.public_jwk()]});
    let (evil, evil_hits) = counting(move |_| json_answer(&doc)).await;
    let target = format!("{evil}/jwks");
    let (jwks_url, redirects) = counting(move |_| redirect_to(&target)).await;
    let s = Server::start_configured(|c| {
        c.issuers.push(mandate_server::config::TrustedIssuerConfig {
            name: "corp".into(),
            issuer: "https://login.corp.example".into(),
            audiences: vec!["mandate".into()],
            jwks_url: Some(format!("{jwks_url}/jwks")),
            jwks_file: None,
            user_claim: "sub".into(),
            groups_claim: "groups".into(),
        });
    })
    .await;
    let now = s.now();
    let forged = attacker.sign(&json!({
        "iss": "https://login.corp.example", "aud": "mandate", "sub": "mallory@corp.example",
        "groups": ["support"], "iat": now, "exp": now + 300, "jti": unique("idp"),
    }));
    let r = s.exchange(&s.agent("support-v2"), &forged, SCOPE).await;
    r.expect_oauth_error(400, "invalid_grant");
    assert!(r.body.get("access_token").is_none());
    assert_eq!(s.deny_event(&r).await["decision"], "deny");
    assert!(
        redirects.load(Ordering::SeqCst) >= 1,
        "the JWKS URL was asked"
    );
    assert_eq!(
        evil_hits.load(Ordering::SeqCst),
        0,
        "the redirect was followed"
    );
    s.shutdown().await;
}

#[tokio::test]
async fn attack_mandate_jwks_redirect_to_an_attacker_host_is_never_followed_by_a_verifier() {
    let s = Server::start().await;
    let attacker = TestKey::ed25519("attacker-k1");
    let doc = json!({"keys": [attacker.public_jwk()]});
    let (evil, evil_hits) = counting(move |_| json_answer(&doc)).await;
    let target = format!("{evil}/jwks");

    // Redirected from the start: the verifier does not start.
    let redirect = target.clone();
    let (always, _) = counting(move |_| redirect_to(&redirect)).await;
    let e = mandate_verify::Verifier::builder(&s.url)
        .audience(CRM)
        .jwks_url(format!("{always}/jwks"))
        .start()
        .await
        .unwrap_err();
    assert!(e.to_string().contains("302"), "{e}");

    // Redirected when it refetches for an unknown `kid`: the attacker's token is refused.
    let real = serde_json::to_value(s.jwks().await).unwrap();
    let (later, asked) = counting(move |n| {
        if n == 0 {
            json_answer(&real)
        } else {
            redirect_to(&target)
        }
    })
    .await;
    let v = mandate_verify::Verifier::builder(&s.url)
        .audience(CRM)
        .jwks_url(format!("{later}/jwks"))
        .jwks_refresh_interval(Duration::from_millis(1))
        .start()
        .await
        .unwrap();
    let genuine = s
        .exchange(&s.agent("support-v2"), &s.alice(), SCOPE)
        .await
        .access_token();
    let header = json!({"alg": "EdDSA", "kid": attacker.kid, "typ": "at+jwt"});
    let forged = attacker.sign_with_header(&header, &peek(&genuine));
    tokio::time::sleep(Duration::from_millis(10)).await;
    let refused = v.verify(&forged).await;
    assert!(
        matches!(refused, Err(mandate_verify::Refusal::Invalid(_))),
        "{refused:?}"
    );
    assert!(asked.load(Ordering::SeqCst) >= 2, "the verifier refetched");
    assert_eq!(
        evil_hits.load(Ordering::SeqCst),
        0,
        "the redirect was followed"
    );
    s.shutdown().await;
}

// ---- 18. Slow clients and floods ----

/// Sends `head` a byte at a time every `every`, until the peer cuts the connection; how long
/// that took, or `None` if all was sent without a cut.
async fn drip(addr: SocketAddr, head: &[u8], every: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut c = TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = c.split();
    let mut buf = [0u8; 512];
    let send = async {
        for b in head {
            if wr.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(every).await;
        }
        std::future::pending::<()>().await;
    };
    let cut = async {
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::select! {
        () = cut => Some(started.elapsed()),
        () = send => None,
    }
}

#[tokio::test]
async fn attack_slowloris_headers_are_cut_after_the_header_timeout() {
    let up = Upstream::start().await;
    let s = start(&up, |c| {
        c.gateway.header_timeout_secs = Some(1);
        c.limits.header_timeout_secs = 1;
    })
    .await;
    let head = b"GET /customers/1 HTTP/1.1\r\nhost: x\r\nx-slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
    let every = Duration::from_millis(200);
    let (gw, srv) = tokio::join!(drip(gw_addr(&s), head, every), drip(s.addr, head, every));
    for (what, cut) in [("gateway", gw), ("server", srv)] {
        let cut = cut.unwrap_or_else(|| panic!("{what}: the slow client was never cut"));
        assert!(
            cut >= Duration::from_millis(900) && cut < Duration::from_secs(3),
            "{what}: cut after {cut:?}"
        );
    }
    assert_eq!(up.count(), 0);
    s.shutdown().await;
}

#[tokio::test]
async fn attack_slow_body_is_cut_by_the_request_and_body_timeouts() {
    let up = Upstream::start().await;
    let s = start(&up, |c| {
        c.limits.request_timeout_secs = 1;
        // The body limit cuts it, long before the upstream's timeout would.
        c.gateway.body_timeout_secs = Some(1);
        c.gateway.upstreams[0].timeout_secs = Some(10);
    })
    .await;
    let t = token(&s, SCOPE).await;
    let slow = |addr: SocketAddr, head: String| async move {
        let started = Instant::now();
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(head.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 1024];
        // One body byte every 200 ms, far fewer than promised, until an answer or a cut.
        loop {
            tokio::select! {
                r = c.read(&mut buf) => match r {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        out.extend_from_slice(&buf[..n]);
                        if out.windows(4).any(|w| w == b"\r\n\r\n") {
                            break;
                        }
                    }
                },
                () = tokio::time::sleep(Duration::from_millis(200)) => {
                    let _ = c.write_all(b"a").await;
                    assert!(started.elapsed() < Duration::from_secs(6), "never bounded");
                }
            }
        }
        (
            started.elapsed(),
            String::from_utf8_lossy(&out).into_owned(),
        )
    };
    let (took, reply) = slow(
        s.addr,
        "POST /oauth2/token HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: 10000\r\n\r\n".into(),
    )
    .await;
    assert!(matches!(status(&reply), 0 | 408), "{reply}");
    assert!(took < Duration::from_secs(3), "server: {took:?}");
    let (took, reply) = slow(
        gw_addr(&s),
        format!("POST /echo HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {t}\r\ncontent-length: 10000\r\n\r\n"),
    )
    .await;
    assert!(matches!(status(&reply), 0 | 400 | 502), "{reply}");
    assert!(took < Duration::from_secs(3), "gateway: {took:?}");
    s.shutdown().await;
}

#[tokio::test]
async fn attack_connection_flood_of_idle_connections_does_not_starve_a_legitimate_client() {
    let up = Upstream::start().await;
    let s = start(&up, |c| {
        c.gateway.header_timeout_secs = Some(1);
        c.limits.header_timeout_secs = 1;
    })
    .await;
    let t = token(&s, SCOPE).await;
    let mut idle = Vec::new();
    for addr in [gw_addr(&s), s.addr] {
        for _ in 0..300 {
            idle.push(TcpStream::connect(addr).await.unwrap());
        }
    }
    let started = Instant::now();
    let r = s
        .send(
            reqwest::Client::new()
                .get(format!("{}/customers/1", gw_url(&s)))
                .bearer_auth(&t),
        )
        .await;
    r.expect(200);
    assert!(s.healthy().await);
    assert!(
        started.elapsed() < Duration::from_millis(800),
        "served only after {:?}",
        started.elapsed()
    );
    // The idle connections are closed after the header timeout.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for c in idle.iter_mut().step_by(25) {
        let mut b = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(2), c.read(&mut b))
            .await
            .expect("an idle connection is closed");
        assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    }
    s.shutdown().await;
}

#[tokio::test]
async fn attack_connection_flood_beyond_max_connections_waits_for_a_free_place() {
    let up = Upstream::start().await;
    let s = start(&up, |c| {
        c.gateway.header_timeout_secs = Some(1);
        c.gateway.max_connections = Some(4);
        c.limits.header_timeout_secs = 1;
        c.limits.max_connections = 4;
    })
    .await;
    // (The token is fetched before the server's places are taken.)
    let t = token(&s, SCOPE).await;
    let gw = gw_addr(&s);
    for (what, addr, req) in [
        (
            "gateway",
            gw,
            format!(
                "GET /customers/1 HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {t}\r\nconnection: close\r\n\r\n"
            ),
        ),
        (
            "server",
            s.addr,
            "GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".to_owned(),
        ),
    ] {
        let mut idle = Vec::new();
        for _ in 0..4 {
            idle.push(TcpStream::connect(addr).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = Instant::now();
        let reply = raw(addr, req.as_bytes()).await;
        let took = started.elapsed();
        assert_eq!(status(&reply), 200, "{what}: {reply}");
        // Served once the idle ones were cut (header timeout 1 s), not before, not much after.
        assert!(
            took >= Duration::from_millis(600) && took < Duration::from_secs(3),
            "{what}: served after {took:?}"
        );
        drop(idle);
    }
    s.shutdown().await;
}

// ---- 19. exp within the leeway ----

#[tokio::test]
async fn attack_user_token_just_past_exp_within_the_leeway_gets_no_token_that_outlives_it() {
    // SPEC §2: an issued token lives at most its subject's remaining life. The leeway
    // (`tokens.leeway`, for clock skew) lets the signature and claims check pass, but a token
    // past its `exp` has no life left: nothing is issued.
    let s = Server::start_with_idp().await;
    let leeway = mandate_server::Config::default().tokens.leeway;
    let support = s.agent("support-v2");
    let now = s.now();
    let at = |exp: i64| json!({"iat": now - 300, "nbf": now - 300, "exp": exp});

    // About to expire: accepted, and the issued token ends with it.
    let issued = s
        .exchange(&support, &s.idp_token(at(now + 5)), SCOPE)
        .await
        .access_token();
    assert!(peek(&issued)["exp"].as_i64().unwrap() <= now + 5);

    // Expired 10 s ago, within the leeway: verified, but refused for having no life left.
    let r = s
        .exchange(&support, &s.idp_token(at(now - 10)), SCOPE)
        .await;
    r.expect_oauth_error(400, "invalid_grant");
    assert_eq!(r.description(), "the subject token has expired");
    assert!(r.body.get("access_token").is_none());
    assert_eq!(s.deny_event(&r).await["decision"], "deny");

    // Beyond the leeway: refused by verification already.
    let r = s
        .exchange(&support, &s.idp_token(at(now - leeway - 1)), SCOPE)
        .await;
    r.expect_oauth_error(400, "invalid_grant");
    assert_ne!(
        r.description(),
        "the subject token has expired",
        "{}",
        r.body
    );
    assert!(r.body.get("access_token").is_none());
    assert_eq!(s.deny_event(&r).await["decision"], "deny");
    s.shutdown().await;
}

// ---- 20. Forged chain at the gateway ----

#[tokio::test]
async fn attack_forged_act_chain_at_the_gateway_is_refused() {
    let up = Upstream::start().await;
    let s = start(&up, |_| {}).await;
    let genuine = token(&s, SCOPE).await;
    let mut claims = peek(&genuine);
    claims["act"] = json!({"sub": "admin-agent", "act": {"sub": "support-v2"}});
    let mandate_kid = jsonwebtoken::decode_header(&genuine).unwrap().kid.unwrap();
    let attacker = TestKey::ed25519(&mandate_kid);
    let other = TestKey::ed25519("attacker-k1");
    // The genuine token with its chain edited under Mandate's signature.
    let mut parts = genuine.split('.');
    let (h, _, sig) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    let edited = format!(
        "{h}.{}.{sig}",
        URL_SAFE_NO_PAD.encode(claims.to_string().as_bytes())
    );
    let typ = |kid: &str| json!({"alg": "EdDSA", "kid": kid, "typ": "at+jwt"});
    for (what, forged) in [
        (
            "signed by a key Mandate does not hold, under Mandate's kid",
            attacker.sign_with_header(&typ(&mandate_kid), &claims),
        ),
        (
            "signed by a key Mandate does not hold, its own kid",
            other.sign_with_header(&typ(&other.kid), &claims),
        ),
        ("edited under Mandate's signature", edited),
    ] {
        let denies = gateway_events(&s, "deny").await.len();
        let r = s
            .send(
                reqwest::Client::new()
                    .get(format!("{}/customers/1", gw_url(&s)))
                    .bearer_auth(&forged),
            )
            .await;
        assert_eq!(r.status, 401, "{what}: {}", r.body);
        assert!(
            r.header("www-authenticate").contains("invalid_token"),
            "{what}: {:?}",
            r.headers
        );
        let e = next_gateway_event(&s, "deny", denies).await;
        assert_eq!(e["decision"], "deny", "{what}");
    }
    assert_eq!(up.count(), 0, "{:?}", up.seen());
    // The genuine token still works.
    let r = s
        .send(
            reqwest::Client::new()
                .get(format!("{}/customers/1", gw_url(&s)))
                .bearer_auth(&genuine),
        )
        .await;
    r.expect(200);
    s.shutdown().await;
}

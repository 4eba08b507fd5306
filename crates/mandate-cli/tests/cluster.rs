//! Several Mandate nodes on one PostgreSQL database (SPEC §9, issue 8), as real processes: two or
//! three `mandate serve` nodes behind a small load balancer whose URL is the issuer, and a
//! standalone `mandate gateway` that follows one node.
//!
//! * A token issued by node A works through a gateway subscribed to node B; a revocation made on
//!   node A is refused at that gateway within 100 ms.
//! * Concurrent issuance on both nodes: no duplicate `jti`, and `mandate audit verify` passes.
//! * Killing a node mid-load (SIGKILL) loses no audit event for any token a client received.
//!
//! These need PostgreSQL: they run when `MANDATE_TEST_DATABASE_URL` is set (CI sets it) and say
//! they were skipped otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mandate_store::testing::{ScratchDatabase, postgres_url};
use mandate_token::sign::sign_jwt;
use mandate_token::{Alg, MasterKey, SigningKey};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const BIN: &str = env!("CARGO_BIN_EXE_mandate");
const IDP: &str = "https://idp.cluster.test";
const IDP_AUDIENCE: &str = "mandate";
const AGENT: &str = "support-v2";
const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const TYPE_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// A `mandate serve` or `mandate gateway` child process, killed on drop.
struct Proc {
    child: Child,
    /// The address it serves on (a node: its own address, not the issuer's).
    url: String,
    /// The bootstrap admin credential, if it printed one.
    credential: Option<String>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// Kills the process at once (SIGKILL): no graceful shutdown, no flush.
    fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

/// Starts `mandate ARGS` with `env` and reads its banner until `Press Ctrl-C`.
fn spawn(args: &[&str], env: &[(&str, &str)], url_prefix: &str) -> Proc {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("MANDATE_URL")
        .env_remove("MANDATE_TOKEN")
        .env_remove("MANDATE_DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("start mandate");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut url, mut credential) = (None, None);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(
            Instant::now() < deadline,
            "no banner from `mandate {args:?}`"
        );
        let line = lines.next().expect("mandate exited early").unwrap();
        if let Some(rest) = line.trim().strip_prefix(url_prefix) {
            url = rest.split_whitespace().next().map(str::to_owned);
        }
        if let Some(t) = line
            .split_whitespace()
            .find(|w| w.starts_with("mnd_admin_"))
        {
            credential = Some(t.to_owned());
        }
        if line.starts_with("Press Ctrl-C to stop") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    Proc {
        child,
        url: url.unwrap_or_else(|| panic!("`mandate {args:?}` did not print `{url_prefix}`")),
        credential,
    }
}

/// A round-robin TCP load balancer: the issuer URL every node shares. A backend that refuses
/// the connection is skipped.
struct Balancer {
    url: String,
    backends: Arc<Mutex<Vec<SocketAddr>>>,
}

impl Balancer {
    async fn start() -> Balancer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let backends: Arc<Mutex<Vec<SocketAddr>>> = Arc::default();
        let pool = backends.clone();
        tokio::spawn(async move {
            let mut next = 0usize;
            while let Ok((mut inbound, _)) = listener.accept().await {
                let candidates = pool.lock().unwrap().clone();
                next = next.wrapping_add(1);
                tokio::spawn(async move {
                    for i in 0..candidates.len() {
                        let addr = candidates[(next + i) % candidates.len()];
                        if let Ok(mut outbound) = TcpStream::connect(addr).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                            return;
                        }
                    }
                });
            }
        });
        Balancer { url, backends }
    }

    fn add(&self, node_url: &str) {
        let addr = node_url.trim_start_matches("http://").parse().unwrap();
        self.backends.lock().unwrap().push(addr);
    }
}

/// A tiny upstream API behind the gateway: answers every request `200 {"served": path}`.
async fn upstream() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                let mut got = 0;
                while !buf[..got].windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf[got..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got += n,
                    }
                }
                let head = String::from_utf8_lossy(&buf[..got]).into_owned();
                let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
                let body = json!({ "served": path }).to_string();
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    url
}

/// Two nodes (more with [`Cluster::add_node`]) on one scratch database, a balancer, a test IdP
/// and a registered agent.
struct Cluster {
    db: ScratchDatabase,
    dir: tempfile::TempDir,
    config: PathBuf,
    master: String,
    lb: Balancer,
    nodes: Vec<Proc>,
    admin: String,
    client: Arc<ClientSide>,
    http: reqwest::Client,
}

impl Cluster {
    async fn start(base: &str, nodes: usize) -> Cluster {
        let db = ScratchDatabase::create(base).await;
        let dir = tempfile::tempdir().unwrap();
        let idp = SigningKey::generate(Alg::EdDSA).unwrap().with_kid("idp-1");
        let jwks = dir.path().join("idp-jwks.json");
        std::fs::write(&jwks, json!({"keys": [idp.public_jwk()]}).to_string()).unwrap();
        let lb = Balancer::start().await;
        let lb_url = lb.url.clone();
        let config = dir.path().join("mandate.toml");
        std::fs::write(
            &config,
            format!(
                r#"issuer = "{issuer}"
audit_checkpoint_secs = 1

[[issuers]]
name = "test"
issuer = "{IDP}"
audiences = ["{IDP_AUDIENCE}"]
jwks_file = "{jwks}"

[rights.groups]
support = ["crm.customers:read", "tickets:*"]
"#,
                issuer = lb.url,
                jwks = jwks.display(),
            ),
        )
        .unwrap();
        let master = MasterKey::generate().unwrap().to_base64().to_string();
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        let mut cluster = Cluster {
            db,
            dir,
            config,
            master,
            lb,
            nodes: Vec::new(),
            admin: String::new(),
            client: Arc::new(ClientSide {
                http: http.clone(),
                lb: lb_url,
                agent: SigningKey::generate(Alg::EdDSA)
                    .unwrap()
                    .with_kid("support-v2-k1"),
                idp,
            }),
            http,
        };
        // The nodes start together on the empty database: one of them makes the first signing
        // key and the bootstrap credential, the others find them.
        let started: Vec<Proc> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..nodes)
                .map(|i| {
                    let c = &cluster;
                    s.spawn(move || c.spawn_node(i))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for node in started {
            cluster.lb.add(&node.url);
            cluster.nodes.push(node);
        }
        let shown: Vec<&String> = cluster
            .nodes
            .iter()
            .filter_map(|n| n.credential.as_ref())
            .collect();
        assert_eq!(
            shown.len(),
            1,
            "exactly one node makes the bootstrap credential"
        );
        cluster.admin = shown[0].clone();
        let mut jwk = cluster.client.agent.public_jwk().clone();
        jwk["kid"] = json!("support-v2-k1");
        let reply = cluster
            .admin_post(
                0,
                "/v1/agents",
                &json!({
                    "id": AGENT, "name": "Support", "owner": "alice@example.com",
                    "description": "answers tickets", "ceiling": ["crm.customers:read", "tickets:*"],
                    "max_stage": "execute", "keys": [jwk],
                }),
            )
            .await;
        assert_eq!(reply.0, 201, "{}", reply.1);
        cluster
    }

    /// Starts one more node on the shared database, configuration and master key.
    fn add_node(&mut self) {
        let node = self.spawn_node(self.nodes.len());
        self.lb.add(&node.url);
        self.nodes.push(node);
    }

    /// Starts node number `i` (its own data directory; the shared database and master key).
    fn spawn_node(&self, i: usize) -> Proc {
        let data = self.dir.path().join(format!("node{i}"));
        spawn(
            &[
                "serve",
                "--config",
                self.config.to_str().unwrap(),
                "--data",
                data.to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
            ],
            &[
                ("MANDATE_DATABASE_URL", self.db.url()),
                ("MANDATE_MASTER_KEY", &self.master),
            ],
            "this node: ",
        )
    }

    async fn admin_post(&self, node: usize, path: &str, body: &Value) -> (u16, Value) {
        let resp = self
            .http
            .post(format!("{}{path}", self.nodes[node].url))
            .bearer_auth(&self.admin)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn admin_get(&self, node: usize, path: &str) -> Value {
        let resp = self
            .http
            .get(format!("{}{path}", self.nodes[node].url))
            .bearer_auth(&self.admin)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "GET {path}: {}", resp.status());
        resp.json().await.unwrap()
    }

    /// Whether node `node` has the agent in its directory yet.
    async fn knows_agent(&self, node: usize) -> bool {
        let resp = self
            .http
            .get(format!("{}/v1/agents/{AGENT}", self.nodes[node].url))
            .bearer_auth(&self.admin)
            .send()
            .await
            .unwrap();
        resp.status() == 200
    }

    /// Exchanges a fresh user token through the agent at `base` (a node or the balancer).
    async fn exchange(&self, base: &str, resource: &str) -> Result<(u16, Value), reqwest::Error> {
        self.client.exchange(base, resource).await
    }

    /// Every audit event in the shared database, read directly.
    async fn audit_events(&self) -> Vec<mandate_core::audit::AuditEvent> {
        use mandate_store::Store;
        let store = mandate_store::PostgresStore::connect_read_only(self.db.url())
            .await
            .unwrap();
        let mut all = Vec::new();
        loop {
            let after = all
                .last()
                .map_or(0, |e: &mandate_core::audit::AuditEvent| e.seq);
            let page = store.audit_after(after, 5000).await.unwrap();
            if page.is_empty() {
                break;
            }
            all.extend(page);
        }
        store.close().await;
        all
    }

    /// `mandate audit verify --database-url URL --json`, offline.
    fn verify_offline(&self) -> Value {
        let out = Command::new(BIN)
            .args(["audit", "verify", "--json", "--database-url", self.db.url()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn random(prefix: &str) -> String {
    format!("{prefix}-{}", mandate_token::random_id::<12>().unwrap())
}

fn jti(access_token: &str) -> String {
    let claims = mandate_token::verify::peek_claims(access_token).unwrap();
    claims["jti"].as_str().unwrap().to_owned()
}

/// The PostgreSQL server to use, or `None` (and a note) when the tests are to be skipped.
fn postgres() -> Option<String> {
    let url = postgres_url();
    if url.is_none() {
        eprintln!("skipped: set MANDATE_TEST_DATABASE_URL to run the several-node tests");
    }
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_on_one_node_is_refused_at_a_gateway_following_another_within_100_ms() {
    let Some(base) = postgres() else { return };
    let c = Cluster::start(&base, 2).await;
    let (a, b) = (c.nodes[0].url.clone(), c.nodes[1].url.clone());

    // The agent was registered on node A; node B hears of it.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !c.knows_agent(1).await {
        assert!(Instant::now() < deadline, "node B never heard of the agent");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A gateway following node B, accepting tokens of the shared issuer.
    let (status, cred) = c
        .admin_post(
            0,
            "/v1/credentials",
            &json!({"id": "gw1", "role": "gateway"}),
        )
        .await;
    assert_eq!(status, 201, "{cred}");
    let up = upstream().await;
    let gw_config = c.dir.path().join("gateway.toml");
    std::fs::write(
        &gw_config,
        format!(
            r#"[gateway]
[[gateway.upstreams]]
name = "crm"
url = "{up}"

[[gateway.routes]]
method = "GET"
path = "/customers/{{id}}"
action = "crm.customers:read"
resource = "customers/{{id}}"
"#
        ),
    )
    .unwrap();
    let gw = spawn(
        &[
            "gateway",
            "--config",
            gw_config.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--mandate-url",
            &b,
            "--issuer",
            &c.lb.url,
        ],
        &[(
            "MANDATE_GATEWAY_CREDENTIAL",
            cred["secret"].as_str().unwrap(),
        )],
        "Gateway is listening on ",
    );

    // Issued by node A.
    let (status, body) = c.exchange(&a, &gw.url).await.unwrap();
    assert_eq!(status, 200, "{body}");
    let token = body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        mandate_token::verify::peek_claims(&token).unwrap()["iss"],
        c.lb.url.as_str()
    );
    let call = || {
        c.http
            .get(format!("{}/customers/9821", gw.url))
            .bearer_auth(&token)
            .send()
    };
    let resp = call().await.unwrap();
    assert_eq!(
        resp.status(),
        200,
        "the gateway following B takes A's token"
    );
    assert_eq!(
        resp.json::<Value>().await.unwrap()["served"],
        "/customers/9821"
    );

    // Revoked on node A.
    let (status, body) = c
        .admin_post(
            0,
            "/v1/revocations",
            &json!({"kind": "token", "id": jti(&token)}),
        )
        .await;
    assert!(status == 200 || status == 201, "{status} {body}");
    let revoked_at = Instant::now();
    let refused_after = loop {
        let status = call().await.unwrap().status();
        if status == 401 || status == 403 {
            break revoked_at.elapsed();
        }
        assert_eq!(status, 200);
        assert!(
            revoked_at.elapsed() < Duration::from_secs(5),
            "the gateway never refused the revoked token"
        );
    };
    eprintln!("refused at the gateway {refused_after:?} after node A answered the revocation");
    assert!(
        refused_after < Duration::from_millis(100),
        "refused only after {refused_after:?}"
    );
    drop(gw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_issuance_on_two_nodes_gives_unique_jtis_and_one_verifiable_chain() {
    let Some(base) = postgres() else { return };
    let c = Arc::new(Cluster::start(&base, 2).await);
    // Let node B hear of the agent.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let per_node = 60;
    let mut tasks = Vec::new();
    for node in 0..2 {
        for worker in 0..4 {
            let c = c.clone();
            tasks.push(tokio::spawn(async move {
                let mut jtis = Vec::new();
                for _ in 0..per_node / 4 {
                    let url = c.nodes[node].url.clone();
                    let (status, body) = c.exchange(&url, "https://crm.example.com").await.unwrap();
                    assert_eq!(status, 200, "node {node} worker {worker}: {body}");
                    jtis.push(jti(body["access_token"].as_str().unwrap()));
                }
                jtis
            }));
        }
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let unique: HashSet<&String> = all.iter().collect();
    assert_eq!(all.len(), 2 * per_node);
    assert_eq!(unique.len(), all.len(), "a jti was issued twice");

    // Every token has its issuance event, once, in one chain written by both nodes.
    let events = c.audit_events().await;
    let issued: Vec<&str> = events
        .iter()
        .filter(|e| e.kind == "token.exchange" && e.decision.as_str() == "allow")
        .filter_map(|e| e.jti.as_deref())
        .collect();
    for j in &all {
        assert_eq!(
            issued.iter().filter(|i| **i == j.as_str()).count(),
            1,
            "token `{j}` has no single issuance event"
        );
    }
    for w in events.windows(2) {
        assert_eq!(w[1].seq, w[0].seq + 1, "the chain has a gap");
        assert_eq!(w[1].prev_hash, w[0].hash, "the chain is not linked");
    }

    // Verified through a node and offline.
    let online = c.admin_get(1, "/v1/audit/verify").await;
    assert_eq!(online["ok"], true, "{online}");
    let offline = c.verify_offline();
    assert_eq!(offline["ok"], true, "{offline}");
    assert!(offline["checked"].as_i64().unwrap() >= events.len() as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_node_mid_load_loses_no_audit_event_of_a_token_a_client_received() {
    let Some(base) = postgres() else { return };
    let mut c = Cluster::start(&base, 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let victim = c.nodes[0].url.clone();

    // Clients hammer the node that will die until it stops answering.
    let received = Arc::new(Mutex::new(Vec::<String>::new()));
    let shared = c.client.clone();
    let mut load = Vec::new();
    for _ in 0..6 {
        let (shared, received, victim) = (shared.clone(), received.clone(), victim.clone());
        load.push(tokio::spawn(async move {
            let mut failures = 0;
            while failures < 3 {
                match shared.exchange(&victim, "https://crm.example.com").await {
                    Ok((200, body)) => {
                        let t = body["access_token"].as_str().unwrap();
                        received.lock().unwrap().push(jti(t));
                    }
                    Ok((status, body)) => panic!("refused before the kill: {status} {body}"),
                    Err(_) => failures += 1,
                }
            }
        }));
    }
    // Let the load run, then kill the node without warning.
    let start = Instant::now();
    while received.lock().unwrap().len() < 40 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the load never got going"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    c.nodes[0].kill();
    for t in load {
        t.await.unwrap();
    }
    let received = received.lock().unwrap().clone();
    eprintln!("{} tokens received before the kill", received.len());

    // The surviving node still issues.
    let survivor = c.nodes[1].url.clone();
    let (status, body) = c
        .exchange(&survivor, "https://crm.example.com")
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");

    let events = c.audit_events().await;
    let issued: HashSet<&str> = events
        .iter()
        .filter(|e| e.kind == "token.exchange" && e.decision.as_str() == "allow")
        .filter_map(|e| e.jti.as_deref())
        .collect();
    let lost: Vec<&String> = received
        .iter()
        .filter(|j| !issued.contains(j.as_str()))
        .collect();
    assert!(
        lost.is_empty(),
        "tokens without their audit event: {lost:?}"
    );
    let offline = c.verify_offline();
    assert_eq!(offline["ok"], true, "{offline}");

    // A node started after the crash joins the same chain.
    c.add_node();
    let third = c.nodes[2].url.clone();
    let (status, body) = c.exchange(&third, "https://crm.example.com").await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(c.verify_offline()["ok"], true);
}

/// What the load clients need, shareable across tasks.
struct ClientSide {
    http: reqwest::Client,
    lb: String,
    agent: SigningKey,
    idp: SigningKey,
}

impl ClientSide {
    /// Exchanges a fresh user token (alice, group `support`) through the agent at `base` for
    /// `crm.customers:read` on `resource`: the status and the body.
    async fn exchange(&self, base: &str, resource: &str) -> Result<(u16, Value), reqwest::Error> {
        let now = now();
        let assertion = sign_jwt(
            &self.agent,
            "JWT",
            &json!({"iss": AGENT, "sub": AGENT, "aud": self.lb, "iat": now, "exp": now + 60, "jti": random("a")}),
        )
        .unwrap();
        let user = sign_jwt(
            &self.idp,
            "JWT",
            &json!({"iss": IDP, "aud": IDP_AUDIENCE, "sub": "alice", "groups": ["support"], "iat": now, "exp": now + 600, "jti": random("u")}),
        )
        .unwrap();
        let resp = self
            .http
            .post(format!("{base}/oauth2/token"))
            .form(&[
                ("grant_type", TOKEN_EXCHANGE),
                ("subject_token", &user),
                ("subject_token_type", TYPE_JWT),
                ("scope", "crm.customers:read"),
                ("resource", resource),
                ("client_assertion_type", JWT_BEARER),
                ("client_assertion", &assertion),
            ])
            .timeout(Duration::from_secs(5))
            .send()
            .await?;
        let status = resp.status().as_u16();
        Ok((status, resp.json().await.unwrap_or(Value::Null)))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_share_one_signing_key_and_a_rotation_on_one_reaches_the_other() {
    let Some(base) = postgres() else { return };
    let c = Cluster::start(&base, 2).await;
    let kids = |jwks: &Value| -> Vec<String> {
        let mut k: Vec<String> = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_owned())
            .collect();
        k.sort();
        k
    };
    let jwks = |node: usize| {
        let url = format!("{}/.well-known/jwks.json", c.nodes[node].url);
        let http = c.http.clone();
        async move {
            http.get(url)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let before = kids(&jwks(0).await);
    assert_eq!(
        before.len(),
        1,
        "nodes starting together made one key: {before:?}"
    );
    assert_eq!(kids(&jwks(1).await), before);

    // Rotated on node A; node B publishes and signs with the new key.
    let (status, body) = c.admin_post(0, "/v1/keys/rotate", &json!({})).await;
    assert!(status == 200 || status == 201, "{status} {body}");
    let deadline = Instant::now() + Duration::from_secs(5);
    let after = loop {
        let k = kids(&jwks(1).await);
        if k.len() == 2 {
            break k;
        }
        assert!(
            Instant::now() < deadline,
            "node B never published the new key"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let new_kid = after.iter().find(|k| !before.contains(k)).unwrap().clone();
    assert_eq!(kids(&jwks(0).await), after);
    let b = c.nodes[1].url.clone();
    let (status, body) = c.exchange(&b, "https://crm.example.com").await.unwrap();
    assert_eq!(status, 200, "{body}");
    let token = body["access_token"].as_str().unwrap();
    let header = token.split('.').next().unwrap();
    use base64::Engine;
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .unwrap();
    let header: Value = serde_json::from_slice(&header).unwrap();
    assert_eq!(
        header["kid"],
        new_kid.as_str(),
        "node B signs with the new key"
    );
}

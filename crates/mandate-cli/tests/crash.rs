//! Crash safety of a single `mandate serve --dev` node, as a real process on SQLite or (with
//! `MANDATE_TEST_DATABASE_URL`) PostgreSQL: the server is killed without warning (SIGKILL)
//! several times while clients exchange tokens, and restarted on the same state and address.
//! Afterwards:
//!
//! * every token a client received has exactly one durable `token.exchange` allow event;
//! * no `jti` was issued twice (neither among the tokens received nor among the allow events);
//! * every revocation answered before a kill (of single tokens, and of a user) still holds:
//!   introspection calls those tokens inactive, and the revoked user's sign-in from before the
//!   revocation is not exchanged again;
//! * `mandate audit verify` passes, against the restarted server and offline once it is gone.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{SERVE_DATABASE_URL_ENV, Storage, command};
use mandate_token::SigningKey;
use mandate_token::sign::sign_jwt;
use serde_json::{Value, json};

/// The `--dev` agent every client acts as.
const AGENT: &str = "support-v2";
/// The demo user whose token the load exchanges.
const USER: &str = "alice@example.com";
/// A second demo user (group `support`), revoked as a whole in the first round.
const REVOKED_USER: &str = "carol@example.com";
/// The resource every token is asked for.
const RESOURCE: &str = "https://crm.example.com";
const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const TYPE_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// How many times the server is killed under load.
const ROUNDS: usize = 4;
/// Concurrent clients per round.
const CLIENTS: usize = 6;
/// Tokens received in a round before its token revocation.
const BEFORE_REVOKE: usize = 15;
/// Tokens received in a round before the kill.
const BEFORE_KILL: usize = 60;

/// A `mandate serve --dev` child on a fixed address, killed on drop.
///
/// (`common::serve_on` always passes `--listen 127.0.0.1:0`, and `serve` refuses a second
/// `--listen`; a restart must keep the address, since the issuer is named after it.)
struct Node {
    child: Child,
}

impl Node {
    /// Starts `mandate serve --dev --data DATA --listen 127.0.0.1:PORT` on `storage` and reads its
    /// banner until `Press Ctrl-C`.
    fn start(storage: &Storage, data: &Path, port: u16) -> Node {
        let mut cmd = command();
        cmd.args(["serve", "--dev", "--data"])
            .arg(data)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env_remove("MANDATE_URL")
            .env_remove("MANDATE_TOKEN")
            .env_remove("MANDATE_USER_TOKEN")
            .env_remove(SERVE_DATABASE_URL_ENV)
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if let Some(url) = storage.url() {
            cmd.env(SERVE_DATABASE_URL_ENV, url);
        }
        let mut child = cmd.spawn().expect("start mandate serve");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            assert!(Instant::now() < deadline, "server did not print its banner");
            let line = lines.next().expect("server exited early").unwrap();
            if line.starts_with("Press Ctrl-C to stop") {
                break;
            }
        }
        std::thread::spawn(move || for _ in lines {});
        Node { child }
    }

    /// Kills the process at once (SIGKILL): no graceful shutdown, no flush.
    fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a client needs: the server's URL (= its issuer), the admin credential and the agent's
/// key, all of which survive a restart.
struct Client {
    http: reqwest::Client,
    url: String,
    admin: String,
    agent: SigningKey,
}

impl Client {
    /// Reads the admin credential and the agent key that `--dev` wrote into `data`.
    fn new(data: &Path, url: String) -> Client {
        let admin = std::fs::read_to_string(data.join("admin.token"))
            .unwrap()
            .trim()
            .to_owned();
        let jwk: Value = serde_json::from_str(
            &std::fs::read_to_string(data.join("agents").join(format!("{AGENT}.jwk"))).unwrap(),
        )
        .unwrap();
        Client {
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap(),
            url,
            admin,
            agent: SigningKey::from_private_jwk(&jwk).unwrap(),
        }
    }

    /// A user token for `sub` from the `--dev` test IdP.
    async fn user_token(&self, sub: &str) -> String {
        let (status, body) = self
            .admin_post("/v1/dev/user-token", &json!({ "sub": sub }))
            .await;
        assert_eq!(status, 200, "{body}");
        body["token"].as_str().unwrap().to_owned()
    }

    /// Exchanges `subject` (a user token) through the agent for `crm.customers:read`: the status
    /// and the body, or the transport error (the server is gone).
    async fn exchange(&self, subject: &str) -> Result<(u16, Value), reqwest::Error> {
        let now = now();
        let assertion = sign_jwt(
            &self.agent,
            "JWT",
            &json!({
                "iss": AGENT, "sub": AGENT, "aud": self.url, "iat": now, "exp": now + 60,
                "jti": mandate_token::random_id::<16>().unwrap(),
            }),
        )
        .unwrap();
        let resp = self
            .http
            .post(format!("{}/oauth2/token", self.url))
            .form(&[
                ("grant_type", TOKEN_EXCHANGE),
                ("subject_token", subject),
                ("subject_token_type", TYPE_JWT),
                ("scope", "crm.customers:read"),
                ("resource", RESOURCE),
                ("client_assertion_type", JWT_BEARER),
                ("client_assertion", &assertion),
            ])
            .send()
            .await?;
        let status = resp.status().as_u16();
        Ok((status, resp.json().await.unwrap_or(Value::Null)))
    }

    /// `POST` an admin path with a JSON body: the status and the body.
    async fn admin_post(&self, path: &str, body: &Value) -> (u16, Value) {
        let resp = self
            .http
            .post(format!("{}{path}", self.url))
            .bearer_auth(&self.admin)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Revokes `kind` `id` (`POST /v1/revocations`); the server must accept it.
    async fn revoke(&self, kind: &str, id: &str) {
        let (status, body) = self
            .admin_post(
                "/v1/revocations",
                &json!({ "kind": kind, "id": id, "reason": "crash test" }),
            )
            .await;
        assert!(
            (200..300).contains(&status),
            "revoke {kind} {id}: {status} {body}"
        );
    }

    /// Whether introspection (`POST /oauth2/introspect`) calls `token` active.
    async fn active(&self, token: &str) -> bool {
        let resp = self
            .http
            .post(format!("{}/oauth2/introspect", self.url))
            .bearer_auth(&self.admin)
            .form(&[("token", token)])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let body: Value = resp.json().await.unwrap();
        body["active"].as_bool().unwrap()
    }

    /// Every `token.exchange` allow event, paged through `GET /v1/audit` by `seq`.
    async fn allow_events(&self) -> Vec<Value> {
        let mut all: Vec<Value> = Vec::new();
        loop {
            let after = all.last().map_or(0, |e| e["seq"].as_i64().unwrap());
            let resp = self
                .http
                .get(format!("{}/v1/audit", self.url))
                .bearer_auth(&self.admin)
                .query(&[
                    ("kind", "token.exchange"),
                    ("decision", "allow"),
                    ("after", &after.to_string()),
                    ("limit", "500"),
                ])
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            let body: Value = resp.json().await.unwrap();
            let page = body["events"].as_array().unwrap().clone();
            if page.is_empty() {
                return all;
            }
            all.extend(page);
        }
    }
}

/// Seconds since the Unix epoch.
fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The `jti` of an access token.
fn jti(token: &str) -> String {
    let claims = mandate_token::verify::peek_claims(token).unwrap();
    claims["jti"].as_str().unwrap().to_owned()
}

/// A free loopback port (bound, read and released), kept for every restart.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// `mandate audit verify --json ARGS` (with `MANDATE_URL`/`MANDATE_TOKEN` from `env`): the
/// report; the command must exit 0 and say `"ok": true`.
fn audit_verify(env: &[(&str, &str)], args: &[std::ffi::OsString]) -> Value {
    let mut cmd = command();
    cmd.env_remove("MANDATE_URL")
        .env_remove("MANDATE_TOKEN")
        .args(["audit", "verify", "--json"])
        .args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], true, "{report}");
    report
}

/// Runs `CLIENTS` exchange loops against `client` with `subject`, pushing each received token
/// into `received`; a loop ends at its first transport error, which must come after `killed`.
fn load(
    client: &Arc<Client>,
    subject: &str,
    received: &Arc<Mutex<Vec<String>>>,
    killed: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..CLIENTS)
        .map(|_| {
            let (client, received, killed) = (client.clone(), received.clone(), killed.clone());
            let subject = subject.to_owned();
            tokio::spawn(async move {
                loop {
                    match client.exchange(&subject).await {
                        Ok((200, body)) => {
                            let token = body["access_token"].as_str().unwrap().to_owned();
                            received.lock().unwrap().push(token);
                        }
                        Ok((status, body)) => {
                            // A request cut by the kill can only fail in transport.
                            panic!("exchange refused: {status} {body}")
                        }
                        Err(e) => {
                            assert!(killed.load(Ordering::SeqCst), "failed before the kill: {e}");
                            return;
                        }
                    }
                }
            })
        })
        .collect()
}

/// Waits until `received` holds at least `n` tokens.
async fn wait_for(received: &Mutex<Vec<String>>, n: usize) {
    let start = Instant::now();
    while received.lock().unwrap().len() < n {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the load never reached {n} tokens"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_server_under_load_loses_no_audit_event_duplicates_no_jti_and_keeps_revocations()
 {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let data: PathBuf = dir.path().to_owned();
    let storage = Storage::new(&data);
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");

    // Every token a client received, and the tokens revoked (answered) before some kill.
    let mut received_all: Vec<String> = Vec::new();
    let mut revoked: Vec<String> = Vec::new();
    let mut client: Option<Arc<Client>> = None;
    // The revoked user's sign-in (a user token from before the revocation).
    let mut revoked_subject = String::new();

    for round in 0..ROUNDS {
        let mut node = Node::start(&storage, &data, port);
        let c = client
            .get_or_insert_with(|| Arc::new(Client::new(&data, url.clone())))
            .clone();
        let subject = c.user_token(USER).await;
        if round == 0 {
            // A token of another user, and then that whole user, revoked before the first kill.
            let carol = c.user_token(REVOKED_USER).await;
            revoked_subject = carol.clone();
            let (status, body) = c.exchange(&carol).await.unwrap();
            assert_eq!(status, 200, "{body}");
            let token = body["access_token"].as_str().unwrap().to_owned();
            assert!(c.active(&token).await);
            c.revoke("user", REVOKED_USER).await;
            received_all.push(token.clone());
            revoked.push(token);
        }

        let received = Arc::new(Mutex::new(Vec::<String>::new()));
        let killed = Arc::new(AtomicBool::new(false));
        let clients = load(&c, &subject, &received, &killed);

        // Mid-load: revoke one token of this round's (and, later, one of an earlier round's).
        wait_for(&received, BEFORE_REVOKE).await;
        let victim = received.lock().unwrap()[BEFORE_REVOKE / 2].clone();
        c.revoke("token", &jti(&victim)).await;
        revoked.push(victim);
        if let Some(old) = received_all.last().cloned()
            && !revoked.contains(&old)
        {
            c.revoke("token", &jti(&old)).await;
            revoked.push(old);
        }

        // Kill while the load is still running; the clients stop at their first failure.
        wait_for(&received, BEFORE_KILL).await;
        killed.store(true, Ordering::SeqCst);
        node.kill();
        for t in clients {
            t.await.unwrap();
        }
        let got = received.lock().unwrap().clone();
        eprintln!("round {round}: {} tokens received, then SIGKILL", got.len());
        received_all.extend(got);
    }

    // Restart once more on the same state and look.
    let mut node = Node::start(&storage, &data, port);
    let c = client.unwrap();

    // No jti was handed out twice.
    let jtis: Vec<String> = received_all.iter().map(|t| jti(t)).collect();
    let distinct: HashSet<&String> = jtis.iter().collect();
    assert_eq!(distinct.len(), jtis.len(), "a jti was received twice");

    // Every received token has exactly one allow event; no allow event repeats a jti.
    let events = c.allow_events().await;
    let mut per_jti: HashMap<&str, usize> = HashMap::new();
    for e in &events {
        let j = e["jti"]
            .as_str()
            .unwrap_or_else(|| panic!("allow event without a jti: {e}"));
        *per_jti.entry(j).or_default() += 1;
    }
    let repeated: Vec<(&&str, &usize)> = per_jti.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        repeated.is_empty(),
        "allow events repeat a jti: {repeated:?}"
    );
    let lost: Vec<&String> = jtis
        .iter()
        .filter(|j| !per_jti.contains_key(j.as_str()))
        .collect();
    assert!(
        lost.is_empty(),
        "tokens received without their audit event: {lost:?}"
    );
    eprintln!(
        "{} tokens received, {} allow events (the rest were cut by a kill before the answer)",
        jtis.len(),
        events.len()
    );

    // Revocations answered before a kill still hold; an unrevoked token is still active.
    for token in &revoked {
        assert!(
            !c.active(token).await,
            "revoked before a kill, active after a restart: {}",
            jti(token)
        );
    }
    let (status, body) = c.exchange(&revoked_subject).await.unwrap();
    assert_eq!(
        status, 400,
        "the revoked user's earlier sign-in is exchanged again: {body}"
    );
    let alive = received_all
        .iter()
        .rev()
        .find(|t| !revoked.contains(t))
        .unwrap();
    assert!(c.active(alive).await, "an unrevoked token is inactive");

    // The audit chain verifies, online and (after one more kill) offline.
    audit_verify(&[("MANDATE_URL", &url), ("MANDATE_TOKEN", &c.admin)], &[]);
    node.kill();
    audit_verify(&[], &storage.offline_args());

    let elapsed = started.elapsed();
    eprintln!("crash test took {elapsed:?}");
    assert!(elapsed < Duration::from_secs(60), "took {elapsed:?}");
}

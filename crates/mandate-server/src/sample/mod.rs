//! The built-in sample upstream that the gateway fronts in `--dev` (SPEC §10): a small CRM REST
//! API ([`crm`]) and a small MCP server at `/mcp` ([`mcp`], server name `crm`).
//!
//! It is also the "real upstream" integration tests start: it records every request it receives
//! (method, path, query, all headers) so a test can check what the gateway forwarded — that the
//! agent's token was stripped, that the real API key and a Transaction Token were injected.
//!
//! * Every request must carry the API key, as `x-api-key: <key>` or `Authorization: Bearer <key>`
//!   (compared in constant time); otherwise `401 {"error": "missing or wrong API key"}`.
//! * With a [`TxnVerifier`], a `Txn-Token` header is verified and the transaction context of its
//!   claims (`tctx.user`, `tctx.agents`, `tctx.task`) is echoed as `served_for` in the REST API's
//!   JSON answers and in MCP tool results; a token that fails verification gets
//!   `401 {"error": "bad transaction token: …"}`. Without a verifier the header is ignored.
//! * State lives in memory and starts from the same seed data every time.

pub mod crm;
pub mod mcp;

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Verifies a Transaction Token (the `Txn-Token` header) and returns its claims, or why not.
pub type TxnVerifier = Arc<dyn Fn(&str) -> Result<Value, String> + Send + Sync>;

/// The largest request body the JSON endpoints accept (`/echo` streams and has no limit).
pub const MAX_BODY: usize = 64 * 1024;

/// How many received requests [`Sample::seen`] keeps.
pub const SEEN_CAPACITY: usize = 256;

/// The header that carries a Transaction Token.
pub const TXN_TOKEN_HEADER: &str = "txn-token";

/// One request as the sample upstream received it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Seen {
    /// The HTTP method, e.g. `GET`.
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The raw query string, if any.
    pub query: Option<String>,
    /// Every header as received, in order, names lowercase (values lossily decoded as UTF-8).
    pub headers: Vec<(String, String)>,
    /// Whether the request carried the right API key.
    pub api_key_ok: bool,
    /// The verified claims of its Transaction Token, when one was sent with the right API key
    /// and a verifier is set.
    pub txn: Option<Value>,
}

impl Seen {
    /// The first value of header `name` (case-insensitive), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A customer of the sample CRM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Customer {
    /// Its id, e.g. `9821`.
    pub id: String,
    /// Its name, e.g. `Acme Corp`.
    pub name: String,
    /// Its region: `emea` or `amer`.
    pub region: String,
    /// Its contact address.
    pub email: String,
}

/// A support ticket of the sample CRM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ticket {
    /// Its id, e.g. `12847`.
    pub id: String,
    /// The customer it is about.
    pub customer: String,
    /// Its subject.
    pub subject: String,
    /// `open` or `closed`.
    pub status: String,
}

/// An email queued through `POST /email/send`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Email {
    /// Its id, e.g. `msg-1`.
    pub id: String,
    /// The recipient.
    pub to: String,
    /// The subject.
    pub subject: String,
    /// The body.
    pub body: String,
}

/// The sample's data.
#[derive(Debug, Default)]
pub(crate) struct Data {
    pub(crate) customers: BTreeMap<String, Customer>,
    pub(crate) tickets: BTreeMap<String, Ticket>,
    pub(crate) emails: Vec<Email>,
}

impl Data {
    fn seed() -> Data {
        let mut data = Data::default();
        for (id, name, region, email) in [
            ("9821", "Acme Corp", "emea", "ops@acme.example"),
            ("4410", "Globex", "amer", "it@globex.example"),
            ("7702", "Initech", "emea", "help@initech.example"),
        ] {
            data.customers.insert(
                id.to_owned(),
                Customer {
                    id: id.to_owned(),
                    name: name.to_owned(),
                    region: region.to_owned(),
                    email: email.to_owned(),
                },
            );
        }
        for (id, customer, subject) in [
            ("12847", "9821", "invoice shows the wrong VAT number"),
            ("12848", "4410", "cannot reset password"),
        ] {
            data.tickets.insert(
                id.to_owned(),
                Ticket {
                    id: id.to_owned(),
                    customer: customer.to_owned(),
                    subject: subject.to_owned(),
                    status: "open".to_owned(),
                },
            );
        }
        data
    }
}

struct Inner {
    key_digest: [u8; 32],
    txn_verifier: Option<TxnVerifier>,
    data: Mutex<Data>,
    seen: Mutex<VecDeque<Seen>>,
    sessions: Mutex<VecDeque<String>>,
    next_id: AtomicU64,
}

/// The sample upstream: its data, its request log and its MCP sessions. Cheap to clone; clones
/// share state.
#[derive(Clone)]
pub struct Sample {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Sample {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sample")
            .field("txn_verifier", &self.inner.txn_verifier.is_some())
            .finish_non_exhaustive()
    }
}

/// What the auth layer learned about a request, for the handlers: the `served_for` object, when
/// the request carried a verified Transaction Token.
#[derive(Debug, Clone, Default)]
pub(crate) struct ServedFor(pub(crate) Option<Value>);

impl ServedFor {
    /// Adds `served_for` to a JSON object answer.
    pub(crate) fn add_to(&self, mut body: Value) -> Value {
        if let (Some(served), Some(obj)) = (&self.0, body.as_object_mut()) {
            obj.insert("served_for".to_owned(), served.clone());
        }
        body
    }
}

impl Sample {
    /// A sample upstream with the seed data that accepts `api_key`, verifying `Txn-Token`
    /// headers with `txn_verifier` when one is given.
    pub fn new(api_key: impl Into<String>, txn_verifier: Option<TxnVerifier>) -> Sample {
        Sample {
            inner: Arc::new(Inner {
                key_digest: digest(&api_key.into()),
                txn_verifier,
                data: Mutex::new(Data::seed()),
                seen: Mutex::new(VecDeque::with_capacity(SEEN_CAPACITY)),
                sessions: Mutex::new(VecDeque::new()),
                next_id: AtomicU64::new(1),
            }),
        }
    }

    /// The REST API and the MCP server at `/mcp`, behind the API-key check and the request log.
    pub fn router(&self) -> Router {
        Router::new()
            .merge(crm::routes())
            .merge(mcp::routes())
            .fallback(|| async { error(StatusCode::NOT_FOUND, "no such route") })
            .layer(DefaultBodyLimit::max(MAX_BODY))
            .layer(middleware::from_fn_with_state(self.clone(), guard))
            .with_state(self.clone())
    }

    /// Serves [`Sample::router`] on `listener` in a background task until the handle is shut
    /// down or dropped.
    pub async fn serve(self, listener: TcpListener) -> std::io::Result<SampleHandle> {
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let app = self.router();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
        });
        Ok(SampleHandle {
            addr,
            sample: self,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The last [`SEEN_CAPACITY`] requests received, oldest first, whether or not they were
    /// authorized.
    pub fn seen(&self) -> Vec<Seen> {
        lock(&self.inner.seen).iter().cloned().collect()
    }

    /// Forgets the requests received so far.
    pub fn clear_seen(&self) {
        lock(&self.inner.seen).clear();
    }

    /// The customer `id`, if it exists (it may have been deleted through MCP).
    pub fn customer(&self, id: &str) -> Option<Customer> {
        self.data().customers.get(id).cloned()
    }

    /// Every ticket, by id.
    pub fn tickets(&self) -> Vec<Ticket> {
        self.data().tickets.values().cloned().collect()
    }

    /// Every email queued so far, oldest first.
    pub fn emails(&self) -> Vec<Email> {
        self.data().emails.clone()
    }

    pub(crate) fn data(&self) -> MutexGuard<'_, Data> {
        lock(&self.inner.data)
    }

    pub(crate) fn next_id(&self) -> u64 {
        self.inner.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The open MCP sessions, oldest first.
    pub(crate) fn sessions(&self) -> MutexGuard<'_, VecDeque<String>> {
        lock(&self.inner.sessions)
    }

    fn record(&self, seen: Seen) {
        let mut log = lock(&self.inner.seen);
        while log.len() >= SEEN_CAPACITY {
            log.pop_front();
        }
        log.push_back(seen);
    }

    fn key_ok(&self, headers: &HeaderMap) -> bool {
        let from_header = headers.get("x-api-key").and_then(|v| v.to_str().ok());
        let from_bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        // Both are checked whichever matches, so timing tells nothing about which was tried.
        let a = from_header.is_some_and(|k| same_digest(&digest(k), &self.inner.key_digest));
        let b = from_bearer.is_some_and(|k| same_digest(&digest(k), &self.inner.key_digest));
        a | b
    }
}

/// A running sample upstream. Dropping it stops the server.
#[derive(Debug)]
pub struct SampleHandle {
    addr: SocketAddr,
    sample: Sample,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl SampleHandle {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its base URL, `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The sample it serves: its request log and data.
    pub fn sample(&self) -> &Sample {
        &self.sample
    }

    /// Stops accepting connections and waits (up to five seconds) for open ones to finish.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }
}

impl Drop for SampleHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Records the request, checks the API key and the Transaction Token, and hands the handlers
/// what they need to say whom they served.
async fn guard(State(sample): State<Sample>, mut req: Request, next: Next) -> Response {
    let headers = req.headers();
    let api_key_ok = sample.key_ok(headers);
    let txn_header = headers
        .get(TXN_TOKEN_HEADER)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let verified = match (&sample.inner.txn_verifier, &txn_header) {
        (Some(verify), Some(token)) if api_key_ok => Some(verify(token.as_str())),
        _ => None,
    };
    sample.record(Seen {
        method: req.method().as_str().to_owned(),
        path: req.uri().path().to_owned(),
        query: req.uri().query().map(str::to_owned),
        headers: headers
            .iter()
            .map(|(n, v)| {
                let value = String::from_utf8_lossy(v.as_bytes()).into_owned();
                (n.as_str().to_owned(), value)
            })
            .collect(),
        api_key_ok,
        txn: verified.as_ref().and_then(|r| r.as_ref().ok()).cloned(),
    });
    if !api_key_ok {
        return error(StatusCode::UNAUTHORIZED, "missing or wrong API key");
    }
    let served = match verified {
        None => ServedFor(None),
        Some(Ok(claims)) => ServedFor(Some(served_for(&claims))),
        Some(Err(why)) => {
            return error(
                StatusCode::UNAUTHORIZED,
                &format!("bad transaction token: {why}"),
            );
        }
    };
    req.extensions_mut().insert(served);
    next.run(req).await
}

/// `{"user", "agents", "task"}` from a Transaction Token's `tctx`.
fn served_for(claims: &Value) -> Value {
    let tctx = claims.get("tctx").cloned().unwrap_or(Value::Null);
    let field = |name: &str| tctx.get(name).cloned().unwrap_or(Value::Null);
    json!({"user": field("user"), "agents": field("agents"), "task": field("task")})
}

/// A JSON error answer: `{"error": message}`.
pub(crate) fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

/// Compares two digests in constant time.
fn same_digest(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a
        .iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_compare() {
        assert!(same_digest(&digest("k"), &digest("k")));
        assert!(!same_digest(&digest("k"), &digest("K")));
    }

    #[test]
    fn served_for_takes_tctx() {
        let claims = json!({"tctx": {"user": "alice", "agents": ["a"], "task": "t", "x": 1}});
        assert_eq!(
            served_for(&claims),
            json!({"user": "alice", "agents": ["a"], "task": "t"})
        );
        assert_eq!(
            served_for(&json!({})),
            json!({"user": null, "agents": null, "task": null})
        );
    }
}

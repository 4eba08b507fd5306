//! The built-in sample upstream (SPEC §10): its CRM REST API, its request log, Transaction
//! Tokens, and its streaming endpoints. Its MCP server is tested in `sample_mcp`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mandate_server::sample::{Sample, SampleHandle, TxnVerifier};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The API key the sample upstream is started with.
pub(super) const KEY: &str = "sample-api-key";

/// Starts a sample upstream on an ephemeral loopback port.
pub(super) async fn start(verifier: Option<TxnVerifier>) -> SampleHandle {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    Sample::new(KEY, verifier).serve(listener).await.unwrap()
}

/// A plain HTTP client.
pub(super) fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// Sends a request with the API key in `x-api-key`; returns status and JSON body (or null).
async fn call(
    h: &SampleHandle,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut rb = http()
        .request(method, format!("{}{path}", h.url()))
        .header("x-api-key", KEY);
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let resp = rb.send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_crm_answers_with_its_seed_data() {
    let h = start(None).await;
    let (s, c) = call(&h, Method::GET, "/customers/9821", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(c["name"], "Acme Corp");
    assert_eq!(c["region"], "emea");
    assert!(c.get("served_for").is_none(), "no Txn-Token, no served_for");

    // The bearer form of the key works too.
    let resp = http()
        .get(format!("{}/customers/4410", h.url()))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.json::<Value>().await.unwrap()["name"], "Globex");

    let (s, c) = call(&h, Method::GET, "/regions/emea/customers/7702", None).await;
    assert_eq!((s, c["name"].clone()), (StatusCode::OK, json!("Initech")));
    let (s, e) = call(&h, Method::GET, "/regions/amer/customers/9821", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(e["error"], "no customer 9821 in region amer");

    let (s, t) = call(&h, Method::GET, "/tickets/12847", None).await;
    assert_eq!((s, t["customer"].clone()), (StatusCode::OK, json!("9821")));
    let (s, t) = call(&h, Method::GET, "/tickets/12848", None).await;
    assert_eq!((s, t["customer"].clone()), (StatusCode::OK, json!("4410")));

    let new = json!({"customer": "9821", "subject": "printer on fire"});
    let (s, t) = call(&h, Method::POST, "/tickets", Some(new)).await;
    assert_eq!(s, StatusCode::CREATED);
    let id = t["id"].as_str().unwrap().to_owned();
    assert_ne!(id, "12847");
    let (s, fetched) = call(&h, Method::GET, &format!("/tickets/{id}"), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(fetched["subject"], "printer on fire");
    // A numeric customer id is accepted as well; an unknown one is not.
    let (s, _) = call(
        &h,
        Method::POST,
        "/tickets",
        Some(json!({"customer": 4410, "subject": "x"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, e) = call(
        &h,
        Method::POST,
        "/tickets",
        Some(json!({"customer": "1", "subject": "x"})),
    )
    .await;
    assert_eq!(
        (s, e["error"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("no customer 1"))
    );

    let mail = json!({"to": "ops@acme.example", "subject": "hello", "body": "hi there"});
    let (s, q) = call(&h, Method::POST, "/email/send", Some(mail)).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    assert_eq!(q["queued"], true);
    let emails = h.sample().emails();
    assert_eq!(emails.len(), 1);
    assert_eq!(
        (emails[0].id.as_str(), emails[0].to.as_str()),
        (q["id"].as_str().unwrap(), "ops@acme.example")
    );
    h.shutdown().await;
}

#[tokio::test]
async fn bad_requests_get_clear_errors() {
    let h = start(None).await;
    let url = h.url();
    // No key, a wrong key, a key under another scheme.
    for rb in [
        http().get(format!("{url}/customers/9821")),
        http()
            .get(format!("{url}/customers/9821"))
            .header("x-api-key", "nope"),
        http()
            .get(format!("{url}/customers/9821"))
            .bearer_auth("nope"),
        http()
            .get(format!("{url}/customers/9821"))
            .header("authorization", format!("Basic {KEY}")),
        http().post(format!("{url}/mcp")).body("{}"),
    ] {
        let resp = rb.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            resp.json::<Value>().await.unwrap(),
            json!({"error": "missing or wrong API key"})
        );
    }

    let (s, e) = call(&h, Method::GET, "/customers/1", None).await;
    assert_eq!(
        (s, e["error"].clone()),
        (StatusCode::NOT_FOUND, json!("no customer 1"))
    );
    let (s, _) = call(&h, Method::GET, "/tickets/1", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, e) = call(&h, Method::GET, "/nowhere", None).await;
    assert_eq!(
        (s, e["error"].clone()),
        (StatusCode::NOT_FOUND, json!("no such route"))
    );

    let bad = |body: &'static str| {
        http()
            .post(format!("{url}/tickets"))
            .header("x-api-key", KEY)
            .header("content-type", "application/json")
            .body(body)
    };
    for (body, says) in [
        ("{not json", "bad JSON body"),
        ("{\"customer\": \"9821\"}", "missing field `subject`"),
        ("{\"customer\": true, \"subject\": \"x\"}", "bad JSON body"),
        ("[]", "bad JSON body"),
    ] {
        let resp = bad(body).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{body}");
        let e = resp.json::<Value>().await.unwrap();
        assert!(e["error"].as_str().unwrap().contains(says), "{body}: {e}");
    }
    let big = "x".repeat(65 * 1024);
    let resp = http()
        .post(format!("{url}/email/send"))
        .header("x-api-key", KEY)
        .body(format!(
            "{{\"to\": \"a@b\", \"subject\": \"s\", \"body\": \"{big}\"}}"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let e = resp.json::<Value>().await.unwrap();
    assert_eq!(
        e["error"],
        "request body too large: the limit is 65536 bytes"
    );
    let mail = json!({"to": "nobody", "subject": "s", "body": "b"});
    let (s, _) = call(&h, Method::POST, "/email/send", Some(mail)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    for q in [
        "chunks=1001",
        "delay_ms=5000",
        "chunks=-1",
        "chunks=x",
        "other=1",
    ] {
        let (s, e) = call(&h, Method::GET, &format!("/stream?{q}"), None).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{q}");
        assert!(e["error"].is_string(), "{q}");
    }
    assert!(
        h.sample().emails().is_empty(),
        "nothing bad changed anything"
    );
}

#[tokio::test]
async fn the_request_log_records_every_header() {
    let h = start(None).await;
    let resp = http()
        .get(format!("{}/customers/9821?fields=name&x=1", h.url()))
        .header("X-Api-Key", KEY)
        .header("X-Custom", "one")
        .header("Txn-Token", "ignored-without-a-verifier")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.json::<Value>()
            .await
            .unwrap()
            .get("served_for")
            .is_none()
    );
    let resp = http()
        .delete(format!("{}/customers/9821", h.url()))
        .header("authorization", "Bearer stolen-agent-token")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    let seen = h.sample().seen();
    assert_eq!(seen.len(), 2);
    let first = &seen[0];
    assert_eq!(
        (first.method.as_str(), first.path.as_str()),
        ("GET", "/customers/9821")
    );
    assert_eq!(first.query.as_deref(), Some("fields=name&x=1"));
    assert!(first.api_key_ok);
    assert_eq!(first.header("x-api-key"), Some(KEY));
    assert!(
        first
            .headers
            .iter()
            .any(|(n, v)| n == "x-custom" && v == "one")
    );
    assert!(first.headers.iter().any(|(n, _)| n == "host"));
    assert!(first.headers.iter().all(|(n, _)| *n == n.to_lowercase()));
    assert_eq!(
        first.header("txn-token"),
        Some("ignored-without-a-verifier")
    );
    assert_eq!(first.txn, None);
    let second = &seen[1];
    assert_eq!(
        (second.method.as_str(), second.query.clone()),
        ("DELETE", None)
    );
    assert!(!second.api_key_ok, "recorded even though refused");
    assert_eq!(
        second.header("authorization"),
        Some("Bearer stolen-agent-token")
    );

    // Only the last 256 are kept.
    h.sample().clear_seen();
    let client = http();
    for i in 0..260 {
        client
            .get(format!("{}/tickets/{i}", h.url()))
            .send()
            .await
            .unwrap();
    }
    let seen = h.sample().seen();
    assert_eq!(seen.len(), 256);
    assert_eq!(seen[0].path, "/tickets/4");
    assert_eq!(seen[255].path, "/tickets/259");
}

#[tokio::test]
async fn a_verified_transaction_token_says_whom_the_answer_serves() {
    let verifier: TxnVerifier = Arc::new(|token: &str| match token {
        "good" => Ok(json!({"sub": "alice@example.com", "tctx": {
            "user": "alice@example.com", "agents": ["support-v2"], "task": "t-1", "stage": "execute"
        }})),
        _ => Err("signature does not verify".to_owned()),
    });
    let h = start(Some(verifier)).await;
    let get = |txn: Option<&'static str>| {
        let mut rb = http()
            .get(format!("{}/customers/9821", h.url()))
            .header("x-api-key", KEY);
        if let Some(t) = txn {
            rb = rb.header("txn-token", t);
        }
        rb.send()
    };
    let resp = get(Some("good")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let c = resp.json::<Value>().await.unwrap();
    assert_eq!(c["name"], "Acme Corp");
    assert_eq!(
        c["served_for"],
        json!({"user": "alice@example.com", "agents": ["support-v2"], "task": "t-1"})
    );
    let resp = get(Some("forged")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"error": "bad transaction token: signature does not verify"})
    );
    let resp = get(None).await.unwrap();
    assert!(
        resp.json::<Value>()
            .await
            .unwrap()
            .get("served_for")
            .is_none()
    );

    let seen = h.sample().seen();
    assert_eq!(seen[0].txn.as_ref().unwrap()["tctx"]["task"], "t-1");
    assert_eq!(seen[1].txn, None);

    // MCP answers say it too.
    let resp = http()
        .post(format!("{}/mcp", h.url()))
        .header("x-api-key", KEY)
        .header("txn-token", "good")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "lookup_customer", "arguments": {"id": "9821"}}}))
        .send()
        .await
        .unwrap();
    let r = resp.json::<Value>().await.unwrap();
    assert_eq!(
        r["result"]["_meta"]["served_for"]["agents"],
        json!(["support-v2"])
    );
    assert_eq!(
        r["result"]["structuredContent"]["served_for"]["user"],
        "alice@example.com"
    );
}

#[tokio::test]
async fn the_stream_endpoint_sends_each_line_when_it_is_made() {
    let h = start(None).await;
    let started = Instant::now();
    let mut resp = http()
        .get(format!("{}/stream?chunks=5&delay_ms=200", h.url()))
        .header("x-api-key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut arrivals = Vec::new();
    let mut body = String::new();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        arrivals.push(started.elapsed());
        body.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert_eq!(body, "chunk 0\nchunk 1\nchunk 2\nchunk 3\nchunk 4\n");
    let last_made = Duration::from_millis(4 * 200);
    assert!(started.elapsed() >= last_made, "lines are spaced out");
    assert!(
        arrivals[0] < Duration::from_millis(400),
        "the first line arrived at {:?}, long before the last was made ({last_made:?})",
        arrivals[0]
    );
    assert!(arrivals.len() >= 3, "arrived in pieces: {arrivals:?}");
}

#[tokio::test]
async fn echo_streams_the_request_body_back_as_it_arrives() {
    let h = start(None).await;
    let mut conn = TcpStream::connect(h.addr()).await.unwrap();
    let head = format!(
        "POST /echo HTTP/1.1\r\nhost: {}\r\nx-api-key: {KEY}\r\ncontent-type: text/plain\r\n\
         transfer-encoding: chunked\r\n\r\n5\r\nhello\r\n",
        h.addr()
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    // The first piece comes back while the request body is still open.
    let got = read_until(&mut conn, "hello").await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert!(
        got.to_lowercase().contains("content-type: text/plain"),
        "{got}"
    );
    conn.write_all(b"6\r\n world\r\n0\r\n\r\n").await.unwrap();
    read_until(&mut conn, " world").await;
}

async fn read_until(conn: &mut TcpStream, needle: &str) -> String {
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !String::from_utf8_lossy(&got).contains(needle) {
        let mut buf = [0u8; 1024];
        let left = deadline.saturating_duration_since(Instant::now());
        let n = tokio::time::timeout(left, conn.read(&mut buf))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no {needle:?} within 5s; got {:?}",
                    String::from_utf8_lossy(&got)
                )
            })
            .unwrap();
        assert!(n > 0, "connection closed before {needle:?}");
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

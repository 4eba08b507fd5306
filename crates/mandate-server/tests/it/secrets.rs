//! `/v1/secrets`: the gateway's encrypted store of upstream credentials. Values go in and are
//! never shown back — not in answers, not in the audit log, not in clear in the database — and
//! only `reveal` opens them, under the name they were sealed for.

use mandate_server::admin::secrets::{RevealError, reveal};
use mandate_store::testing::Backend;
use reqwest::Method;
use serde_json::{Value, json};

use super::harness::*;

/// A value distinctive enough that finding its bytes anywhere means it leaked.
fn distinctive(tag: &str) -> String {
    format!("sk_live_{tag}_Zq8rW3xYv9Kp2Lm7Tn4Hb6Jd")
}

async fn put(srv: &Server, name: &str, body: &Value) -> Reply {
    srv.send(
        srv.admin_req(Method::PUT, &format!("/v1/secrets/{name}"))
            .json(body),
    )
    .await
}

async fn list(srv: &Server) -> Value {
    let r = srv.admin_get("/v1/secrets").await;
    r.expect(200);
    r.body["secrets"].clone()
}

/// The whole audit log as text.
async fn audit_text(srv: &Server) -> String {
    Value::Array(srv.audit("limit=10000").await).to_string()
}

#[tokio::test]
async fn set_replace_list_delete_never_show_the_value() {
    let srv = Server::start().await;
    let value = distinctive("crm");
    let newer = distinctive("crm2");
    let mut answers = Vec::new();

    let r = put(
        &srv,
        "crm-api",
        &json!({"value": value, "description": "the crm's api key"}),
    )
    .await;
    r.expect(201);
    assert_eq!(r.body["name"], "crm-api");
    assert_eq!(r.body["description"], "the crm's api key");
    let created_at = r.body["created_at"].as_i64().unwrap();
    assert_eq!(r.body["updated_at"].as_i64(), Some(created_at));
    let mut keys: Vec<&String> = r.body.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["created_at", "description", "name", "updated_at"]);
    answers.push(r.body.to_string());

    let state = srv.running().state.clone();
    assert_eq!(reveal(&state, "crm-api").await.unwrap().expose(), value);

    srv.clock.advance(10);
    let r = put(&srv, "crm-api", &json!({"value": newer})).await;
    r.expect(200);
    assert_eq!(r.body["created_at"].as_i64(), Some(created_at));
    assert_eq!(r.body["updated_at"].as_i64(), Some(created_at + 10));
    assert_eq!(r.body["description"], Value::Null);
    answers.push(r.body.to_string());
    assert_eq!(reveal(&state, "crm-api").await.unwrap().expose(), newer);

    put(&srv, "billing.v2", &json!({"value": "another-one"}))
        .await
        .expect(201);
    let listed = list(&srv).await;
    answers.push(listed.to_string());
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["billing.v2", "crm-api"]);
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s.get("value").is_none())
    );

    let r = srv
        .send(srv.admin_req(Method::DELETE, "/v1/secrets/crm-api"))
        .await;
    r.expect(204);
    let r = srv
        .send(srv.admin_req(Method::DELETE, "/v1/secrets/crm-api"))
        .await;
    r.expect(404);
    assert_eq!(r.body["message"], "secret `crm-api` not found");
    assert!(matches!(
        reveal(&state, "crm-api").await,
        Err(RevealError::NotFound(_))
    ));
    assert_eq!(list(&srv).await.as_array().unwrap().len(), 1);

    // Audited: set twice, delete once, each naming the secret and never the value.
    let sets = srv.audit("kind=secret.set&limit=100").await;
    let deletes = srv.audit("kind=secret.delete&limit=100").await;
    assert_eq!(sets.len(), 3);
    assert_eq!(deletes.len(), 1);
    assert_eq!(sets[0]["resource"], "secret:crm-api");
    assert_eq!(deletes[0]["resource"], "secret:crm-api");
    let log = audit_text(&srv).await;
    for secret in [&value, &newer] {
        assert!(
            !log.contains(secret.as_str()),
            "the audit log holds a value"
        );
        for a in &answers {
            assert!(!a.contains(secret.as_str()), "an answer holds a value: {a}");
        }
    }
    srv.shutdown().await;
}

#[tokio::test]
async fn the_database_holds_no_plaintext() {
    let mut srv = Server::start().await;
    let value = distinctive("db");
    put(&srv, "crm-api", &json!({"value": value}))
        .await
        .expect(201);
    put(&srv, "crm-api", &json!({"value": value}))
        .await
        .expect(200);
    srv.stop().await;
    match srv.database().backend() {
        Backend::Sqlite => {
            // Every file of the database (WAL and journal included), byte for byte.
            let mut checked = 0;
            for entry in std::fs::read_dir(srv.data_dir()).unwrap() {
                let path = entry.unwrap().path();
                let is_db = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("mandate.db"));
                if !is_db {
                    continue;
                }
                let bytes = std::fs::read(&path).unwrap();
                assert!(
                    !bytes.windows(value.len()).any(|w| w == value.as_bytes()),
                    "{} holds the value in clear",
                    path.display()
                );
                checked += 1;
            }
            assert!(checked >= 1, "the database file was checked");
        }
        Backend::Postgres => {
            // The server's files are not ours to read: every row of every table instead, as
            // text (binary columns as hex, so the value's hex is looked for too).
            let db = srv.database();
            let hex_value = hex::encode(value.as_bytes());
            let tables = db
                .texts(
                    "SELECT CAST(table_name AS TEXT) FROM information_schema.tables \
                     WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'",
                )
                .await;
            let tables: Vec<String> = tables.into_iter().flatten().collect();
            assert!(tables.iter().any(|t| t == "secrets"), "{tables:?}");
            let mut secrets_rows = 0;
            for table in &tables {
                let rows = db
                    .texts(&format!("SELECT CAST(t AS TEXT) FROM \"{table}\" AS t"))
                    .await;
                for row in rows.into_iter().flatten() {
                    assert!(
                        !row.contains(&value) && !row.contains(&hex_value),
                        "table `{table}` holds the value in clear: {row}"
                    );
                    if table == "secrets" {
                        secrets_rows += 1;
                    }
                }
            }
            assert!(secrets_rows >= 1, "the sealed value was checked");
        }
    }
    srv.start_again().await;
    let state = srv.running().state.clone();
    assert_eq!(
        reveal(&state, "crm-api").await.unwrap().expose(),
        value,
        "the value survives a restart"
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn a_sealed_value_does_not_open_under_another_name() {
    let mut srv = Server::start().await;
    put(&srv, "alpha", &json!({"value": distinctive("alpha")}))
        .await
        .expect(201);
    put(&srv, "beta", &json!({"value": distinctive("beta")}))
        .await
        .expect(201);
    srv.stop().await;

    let db = srv.database();
    let alpha = db
        .bytes("SELECT sealed FROM secrets WHERE name = 'alpha'")
        .await;
    let beta = db
        .bytes("SELECT sealed FROM secrets WHERE name = 'beta'")
        .await;
    assert_ne!(alpha, beta);
    for (name, bytes) in [("alpha", &beta), ("beta", &alpha)] {
        let changed = db
            .sql(&format!(
                "UPDATE secrets SET sealed = {} WHERE name = '{name}'",
                db.bytes_literal(bytes)
            ))
            .await;
        assert_eq!(changed, 1);
    }

    srv.start_again().await;
    let state = srv.running().state.clone();
    for name in ["alpha", "beta"] {
        match reveal(&state, name).await {
            Err(RevealError::Unseal(n)) => assert_eq!(n, name),
            Err(other) => panic!("`{name}`: unexpected error {other}"),
            Ok(v) => panic!("`{name}` opened a value moved from another name: {v:?}"),
        }
    }
    srv.shutdown().await;
}

#[tokio::test]
async fn bad_names_and_values_are_refused_and_nothing_is_written() {
    let srv = Server::start().await;
    let before = srv.audit("limit=10000").await.len();
    let long_name = "a".repeat(64);
    let long_value = "v".repeat(8193);
    let cases: Vec<(&str, Value, &str)> = vec![
        ("Upper", json!({"value": "x"}), "secret name `Upper`"),
        ("-lead", json!({"value": "x"}), "secret name `-lead`"),
        (".lead", json!({"value": "x"}), "secret name `.lead`"),
        ("sp%20ace", json!({"value": "x"}), "secret name `sp ace`"),
        ("sla%2Fsh", json!({"value": "x"}), "secret name `sla/sh`"),
        (&long_name, json!({"value": "x"}), "must be 1–63 characters"),
        ("ok", json!({"value": ""}), "`value` must be 1–8192 bytes"),
        (
            "ok",
            json!({"value": long_value}),
            "`value` must be 1–8192 bytes",
        ),
        ("ok", json!({}), "value"),
        ("ok", json!({"value": 7}), "request body does not fit"),
        (
            "ok",
            json!({"value": "x", "extra": true}),
            "request body does not fit",
        ),
        (
            "ok",
            json!({"value": "x", "description": "a\nb"}),
            "`description`",
        ),
    ];
    for (name, body, needle) in cases {
        let r = put(&srv, name, &body).await;
        assert_eq!(r.status, 400, "PUT {name} {body}: {}", r.body);
        assert_eq!(r.body["error"], "bad_request");
        let msg = r.body["message"].as_str().unwrap();
        assert!(msg.contains(needle), "PUT {name}: {msg}");
        let outside_backticks: String = msg.split('`').step_by(2).collect();
        assert_eq!(outside_backticks, outside_backticks.to_lowercase(), "{msg}");
    }
    // The 8192-byte edge is accepted.
    put(&srv, "edge", &json!({"value": "v".repeat(8192)}))
        .await
        .expect(201);
    srv.send(srv.admin_req(Method::DELETE, "/v1/secrets/edge"))
        .await
        .expect(204);
    let r = srv
        .send(srv.admin_req(Method::DELETE, "/v1/secrets/Bad%20Name"))
        .await;
    r.expect(400);

    let after = srv.audit("limit=10000").await;
    let secret_events: Vec<&Value> = after
        .iter()
        .filter(|e| e["kind"].as_str().is_some_and(|k| k.starts_with("secret.")))
        .collect();
    assert_eq!(after.len(), before + 2, "only the edge set and delete");
    assert_eq!(secret_events.len(), 2);
    assert_eq!(list(&srv).await, json!([]));
    srv.shutdown().await;
}

#[tokio::test]
async fn an_auditor_lists_but_cannot_write() {
    let srv = Server::start().await;
    put(&srv, "crm-api", &json!({"value": distinctive("aud")}))
        .await
        .expect(201);
    let r = srv
        .admin_post("/v1/credentials", &json!({"id": "aud1", "role": "auditor"}))
        .await;
    r.expect(201);
    let auditor = r.body["secret"].as_str().unwrap().to_owned();
    let as_auditor =
        |method: Method, path: &str| srv.http.request(method, srv.at(path)).bearer_auth(&auditor);

    let r = srv.send(as_auditor(Method::GET, "/v1/secrets")).await;
    r.expect(200);
    assert_eq!(r.body["secrets"][0]["name"], "crm-api");

    let r = srv
        .send(as_auditor(Method::PUT, "/v1/secrets/crm-api").json(&json!({"value": "mine"})))
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    let r = srv
        .send(as_auditor(Method::PUT, "/v1/secrets/new-one").json(&json!({"value": "mine"})))
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    let r = srv
        .send(as_auditor(Method::DELETE, "/v1/secrets/crm-api"))
        .await;
    assert_eq!(r.status, 403, "{}", r.body);

    let state = srv.running().state.clone();
    assert_eq!(
        reveal(&state, "crm-api").await.unwrap().expose(),
        distinctive("aud")
    );
    assert!(matches!(
        reveal(&state, "new-one").await,
        Err(RevealError::NotFound(_))
    ));
    srv.shutdown().await;
}

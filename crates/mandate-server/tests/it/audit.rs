//! The audit log (SPEC §7): queryable, hash-chained, and verifiable — altering one row in the
//! database is detected and the first bad `seq` named.

use serde_json::{Value, json};

use super::harness::*;

/// Sets `column` of the audit event `seq` to `value`, directly in the stopped server's database
/// (SQLite or PostgreSQL).
pub(super) async fn tamper(db: &Database, column: &str, value: &str, seq: i64) {
    let value = value.replace('\'', "''");
    let changed = db
        .sql(&format!(
            "UPDATE audit_events SET {column} = '{value}' WHERE seq = {seq}"
        ))
        .await;
    assert_eq!(changed, 1);
}

pub(super) async fn verify_report(srv: &Server) -> Value {
    let r = srv.admin_get("/v1/audit/verify").await;
    r.expect(200);
    r.body
}

/// Some activity of every kind: allows, denies, a revocation, an agent change.
pub(super) async fn activity(srv: &Server) -> (i64, i64) {
    let support = srv.agent("support-v2");
    let analytics = srv.agent("analytics-v1");
    let t1 = srv
        .exchange(&support, &srv.alice(), "crm.customers:read tickets:read")
        .await
        .access_token();
    let early = srv.hop(&analytics, &t1, "billing.invoices:read").await;
    early.expect_oauth_error(400, "invalid_scope");
    let early_seq = srv.deny_event(&early).await["seq"].as_i64().unwrap();
    srv.hop(&analytics, &t1, "crm.customers:read")
        .await
        .access_token();
    let bob = srv.user_token(BOB, &["finance"], 3600);
    let late = srv.exchange(&support, &bob, "tickets:read").await;
    late.expect_oauth_error(400, "invalid_scope");
    let late_seq = srv.deny_event(&late).await["seq"].as_i64().unwrap();
    let jti = peek(&t1)["jti"].as_str().unwrap().to_owned();
    srv.revoke("token", &jti).await.expect(201);
    srv.admin_post("/v1/agents/analytics-v1/suspend", &json!({}))
        .await
        .expect(200);
    srv.exchange(&support, &srv.alice(), "email:send")
        .await
        .access_token();
    assert!(early_seq < late_seq);
    (early_seq, late_seq)
}

#[tokio::test]
async fn audit_verify_passes_intact_and_names_the_first_altered_seq() {
    let mut srv = Server::start().await;
    let (early, late) = activity(&srv).await;
    let report = verify_report(&srv).await;
    assert_eq!(report["ok"], true, "{report}");
    assert!(report["first_break"].is_null());
    let total = srv.audit("limit=10000").await.len() as u64;
    assert_eq!(report["checked"].as_u64().unwrap(), total);
    assert!(total > late as u64, "events follow the altered ones");
    let db = srv.database().clone();

    // Someone rewrites why a request was refused.
    srv.stop().await;
    tamper(&db, "reason", "nothing to see here", late).await;
    srv.start_again().await;
    let report = verify_report(&srv).await;
    assert_eq!(report["ok"], false, "{report}");
    assert_eq!(
        report["first_break"]["seq"].as_i64(),
        Some(late),
        "{report}"
    );
    assert_eq!(report["checked"].as_i64(), Some(late - 1));

    // Then turns an earlier denial into an allow: the earlier row is now the first break.
    srv.stop().await;
    tamper(&db, "decision", "allow", early).await;
    srv.start_again().await;
    let report = verify_report(&srv).await;
    assert_eq!(report["ok"], false, "{report}");
    assert_eq!(
        report["first_break"]["seq"].as_i64(),
        Some(early),
        "{report}"
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn audit_events_are_chained_and_filterable() {
    let srv = Server::start().await;
    activity(&srv).await;
    let all = srv.audit("limit=10000").await;
    // A hash chain in seq order.
    for (i, e) in all.iter().enumerate() {
        assert_eq!(e["seq"].as_u64(), Some(i as u64 + 1));
        if i > 0 {
            assert_eq!(e["prev_hash"], all[i - 1]["hash"]);
        }
        for field in [
            "time",
            "kind",
            "user",
            "chain",
            "task",
            "action",
            "resource",
            "decision",
            "reason",
            "hash",
            "prev_hash",
        ] {
            assert!(e.get(field).is_some(), "event lacks `{field}`: {e}");
        }
    }

    let alice = srv.audit(&format!("user={ALICE}")).await;
    assert!(!alice.is_empty());
    assert!(alice.iter().all(|e| e["user"] == ALICE));
    let bob = srv.audit(&format!("user={BOB}&decision=deny")).await;
    assert_eq!(bob.len(), 1, "{bob:?}");
    assert!(bob[0]["reason"].as_str().unwrap().contains("tickets:read"));

    let via_analytics = srv.audit("agent=analytics-v1").await;
    assert!(!via_analytics.is_empty());
    assert!(via_analytics.iter().all(|e| {
        e["chain"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "analytics-v1")
    }));
    let denies = srv.audit("decision=deny").await;
    assert!(denies.iter().all(|e| e["decision"] == "deny"));
    assert_eq!(denies.len(), 2);
    let limited = srv.audit("limit=2&order=desc").await;
    assert_eq!(limited.len(), 2);
    assert_eq!(limited[0]["seq"], all.last().unwrap()["seq"]);
    // The token revocation names alice; the suspension is a revocation of the agent.
    let revocations = srv.audit("kind=revocation").await;
    assert_eq!(revocations.len(), 2);
    assert_eq!(revocations[0]["user"], ALICE);
    assert_eq!(revocations[1]["action"], "agent.suspend");
    assert_eq!(revocations[1]["resource"], "agent:analytics-v1");

    // Time bounds: everything is after 2020 and nothing after 2100.
    assert_eq!(
        srv.audit("since=2020-01-01&limit=10000").await.len(),
        all.len()
    );
    assert!(srv.audit("since=2100-01-01").await.is_empty());
    srv.shutdown().await;
}

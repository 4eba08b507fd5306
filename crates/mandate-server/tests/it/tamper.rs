//! Tampering with the audit log on the stopped server's database, and what `GET
//! /v1/audit/verify` (after a restart) and the offline check behind `mandate audit verify
//! --data` (SQLite) or `--database-url` (PostgreSQL) name: an altered, deleted or reordered row
//! by its `seq`; a cut tail or a recomputed chain through the signed checkpoints; a checkpoint
//! signed with a foreign key.

use mandate_core::audit::AuditEvent;
use mandate_server::admin::audit as verify;
use serde_json::{Value, json};

use super::audit::{activity, tamper, verify_report};
use super::harness::*;

/// The audit columns but `seq` (`user` quoted: a reserved word in PostgreSQL).
const COLUMNS: &str = "time, kind, \"user\", chain, task, action, resource, decision, reason, \
                       policy_ids, request_id, credential, jti, detail, prev_hash, hash";

/// A server with activity, a checkpoint, and more activity after it.
struct Scene {
    srv: Server,
    db: Database,
    /// Two denials before the checkpoint.
    early: i64,
    late: i64,
    /// The checkpointed seq.
    cp: i64,
    /// The last seq.
    last: i64,
}

async fn scene() -> Scene {
    let srv = Server::start().await;
    let (early, late) = activity(&srv).await;
    let r = srv.admin_post("/v1/audit/checkpoint", &json!({})).await;
    r.expect(200);
    let cp = r.body["checkpoint"]["seq"].as_i64().expect("a checkpoint");
    assert!(cp > late);
    let support = srv.agent("support-v2");
    for _ in 0..3 {
        srv.exchange(&support, &srv.alice(), "tickets:read")
            .await
            .access_token();
    }
    let report = verify_report(&srv).await;
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["checkpoints_checked"].as_u64(), Some(1), "{report}");
    assert_eq!(report["latest_checkpoint"]["seq"].as_i64(), Some(cp));
    let last = srv.audit("limit=1&order=desc").await[0]["seq"]
        .as_i64()
        .unwrap();
    assert!(last > cp + 2);
    let db = srv.database().clone();
    Scene {
        srv,
        db,
        early,
        late,
        cp,
        last,
    }
}

/// Runs `sql` (several statements allowed) on the stopped server's database.
async fn exec(db: &Database, sql: &str) {
    // Test-only text built from integers and hashes this test computed.
    db.sql(sql).await;
}

/// What `mandate audit verify --data` (or `--database-url`) computes, on the stopped server's
/// database.
async fn offline(db: &Database) -> Value {
    let store = db.open_read_only().await;
    let keys = verify::stored_key_set(&store.signing_keys().await.unwrap());
    let (report, latest) = verify::verify_store(&*store, &keys).await.unwrap();
    store.close().await;
    verify::report_json(&report, latest.as_ref())
}

/// Both reports (offline on the stopped database, then the restarted server's), each checked
/// by `check`.
async fn both(scene: &mut Scene, check: impl Fn(&Value)) {
    let report = offline(&scene.db).await;
    assert_eq!(report["ok"], false, "{report}");
    check(&report);
    scene.srv.start_again().await;
    let report = verify_report(&scene.srv).await;
    assert_eq!(report["ok"], false, "{report}");
    check(&report);
}

fn finding<'a>(report: &'a Value, kind: &str, seq: i64) -> &'a Value {
    report["checkpoint_findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == kind && f["seq"].as_i64() == Some(seq))
        .unwrap_or_else(|| panic!("no `{kind}` finding at seq {seq}: {report}"))
}

#[tokio::test]
async fn an_altered_row_is_named_by_its_seq() {
    let mut s = scene().await;
    s.srv.stop().await;
    tamper(&s.db, "reason", "nothing to see here", s.late).await;
    let late = s.late;
    both(&mut s, |r| {
        assert_eq!(r["first_break"]["seq"].as_i64(), Some(late), "{r}");
        assert!(
            r["first_break"]["problem"]
                .as_str()
                .unwrap()
                .contains("the event was altered")
        );
        assert_eq!(
            r["checkpoint_findings"],
            json!([]),
            "stored hashes are intact"
        );
    })
    .await;
    s.srv.shutdown().await;
}

#[tokio::test]
async fn a_deleted_row_is_named_by_the_missing_seq() {
    let mut s = scene().await;
    s.srv.stop().await;
    let k = s.late;
    exec(
        &s.db,
        &format!(
            "DELETE FROM audit_event_agents WHERE seq = {k}; DELETE FROM audit_events WHERE seq = {k};"
        ),
    )
    .await;
    both(&mut s, |r| {
        assert_eq!(r["first_break"]["seq"].as_i64(), Some(k), "{r}");
        assert!(
            r["first_break"]["problem"]
                .as_str()
                .unwrap()
                .starts_with(&format!("expected seq {k}, found {}", k + 1)),
            "{r}"
        );
    })
    .await;
    s.srv.shutdown().await;
}

#[tokio::test]
async fn a_cut_tail_is_named_by_the_checkpoint() {
    let mut s = scene().await;
    s.srv.stop().await;
    // Everything from just before the checkpointed event on is deleted: the rest of the chain
    // is consistent, only the signed checkpoints show what is gone.
    let from = s.cp - 1;
    exec(
        &s.db,
        &format!(
            "DELETE FROM audit_event_agents WHERE seq >= {from}; DELETE FROM audit_events WHERE seq >= {from};"
        ),
    )
    .await;
    let (cp, last) = (s.cp, s.last);
    both(&mut s, |r| {
        assert!(r["first_break"].is_null(), "{r}");
        let f = finding(r, "truncated", cp);
        let problem = f["problem"].as_str().unwrap();
        assert!(
            problem.starts_with(&format!(
                "events after seq {} are missing: checkpoint of seq {cp} (signed at ",
                cp - 2
            )),
            "{problem}"
        );
        // The checkpoint written at shutdown names the true end.
        finding(r, "truncated", last);
    })
    .await;
    s.srv.shutdown().await;
}

#[tokio::test]
async fn reordered_rows_are_named_by_the_first_moved_seq() {
    let mut s = scene().await;
    s.srv.stop().await;
    let (a, b) = (s.early, s.early + 1);
    exec(
        &s.db,
        &format!(
            "CREATE TEMP TABLE swap AS SELECT * FROM audit_events WHERE seq IN ({a}, {b});
             UPDATE audit_events SET ({COLUMNS}) = (SELECT {COLUMNS} FROM swap WHERE swap.seq = {b}) WHERE seq = {a};
             UPDATE audit_events SET ({COLUMNS}) = (SELECT {COLUMNS} FROM swap WHERE swap.seq = {a}) WHERE seq = {b};"
        ),
    )
    .await;
    both(&mut s, |r| {
        assert_eq!(r["first_break"]["seq"].as_i64(), Some(a), "{r}");
        assert!(
            r["first_break"]["problem"]
                .as_str()
                .unwrap()
                .contains("prev_hash"),
            "{r}"
        );
    })
    .await;
    s.srv.shutdown().await;
}

#[tokio::test]
async fn a_recomputed_chain_is_named_by_the_checkpoint() {
    let mut s = scene().await;
    let events: Vec<AuditEvent> = s
        .srv
        .audit("limit=10000")
        .await
        .into_iter()
        .map(|e| serde_json::from_value(e).unwrap())
        .collect();
    s.srv.stop().await;
    // The forger rewrites a denial's reason and recomputes every hash after it: the chain is
    // consistent again.
    let mut sql = String::new();
    let mut prev = String::new();
    for mut e in events.into_iter().filter(|e| e.seq >= s.late) {
        if e.seq == s.late {
            e.reason = "nothing to see here".into();
        } else {
            e.prev_hash = prev.clone();
        }
        e.hash = e.compute_hash();
        prev = e.hash.clone();
        sql.push_str(&format!(
            "UPDATE audit_events SET reason = '{}', prev_hash = '{}', hash = '{}' WHERE seq = {};\n",
            e.reason.replace('\'', "''"),
            e.prev_hash,
            e.hash,
            e.seq
        ));
    }
    exec(&s.db, &sql).await;
    let cp = s.cp;
    both(&mut s, |r| {
        assert!(
            r["first_break"].is_null(),
            "the forged chain is consistent: {r}"
        );
        let f = finding(r, "rewritten", cp);
        assert!(
            f["problem"].as_str().unwrap().starts_with(&format!(
                "the chain was rewritten at or before seq {cp}: checkpoint of seq {cp} (signed at "
            )),
            "{f}"
        );
    })
    .await;
    s.srv.shutdown().await;
}

#[tokio::test]
async fn a_checkpoint_signed_with_another_key_is_reported() {
    let mut s = scene().await;
    s.srv.stop().await;
    let foreign = mandate_token::SigningKey::generate(mandate_token::Alg::EdDSA).unwrap();
    let jws = mandate_token::sign::sign_jwt(
        &foreign,
        "audit-checkpoint+jwt",
        &json!({"iss": "https://forger.example", "iat": 1_800_000_000, "seq": s.last + 5, "hash": "00"}),
    )
    .unwrap();
    exec(
        &s.db,
        &format!(
            "INSERT INTO audit_checkpoints (seq, hash, time, jws) VALUES ({}, '00', '2027-01-15T08:00:00.000Z', '{jws}');",
            s.last + 5
        ),
    )
    .await;
    let seq = s.last + 5;
    both(&mut s, |r| {
        assert!(r["first_break"].is_null(), "{r}");
        let findings = r["checkpoint_findings"].as_array().unwrap();
        assert_eq!(findings.len(), 1, "only the forged checkpoint: {r}");
        let f = finding(r, "signature", seq);
        assert!(
            f["problem"].as_str().unwrap().starts_with(&format!(
                "checkpoint of seq {seq} (stored as signed at 2027-01-15T08:00:00.000Z) does not verify: "
            )),
            "{f}"
        );
    })
    .await;
    s.srv.shutdown().await;
}

#[tokio::test]
async fn the_server_checkpoints_the_head_on_its_own_when_it_moved() {
    let srv = Server::start_configured(|c| c.audit_checkpoint_secs = 1).await;
    let support = srv.agent("support-v2");
    srv.exchange(&support, &srv.alice(), "tickets:read")
        .await
        .access_token();
    let head = srv.audit("limit=1&order=desc").await[0]["seq"]
        .as_i64()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let report = verify_report(&srv).await;
        if report["latest_checkpoint"]["seq"].as_i64() == Some(head) {
            assert_eq!(report["ok"], true, "{report}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint: {report}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // The head did not move: no further checkpoint.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(
        verify_report(&srv).await["checkpoints_checked"].as_u64(),
        Some(1)
    );
    srv.shutdown().await;
}

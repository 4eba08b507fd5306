//! Revocations: which tokens each kind of root reaches.

use mandate_core::agent::AgentStatus;
use mandate_core::revocation::{RevocationKind, RevocationRecord};
use mandate_core::task::{TaskStatus, TokenRecord};
use mandate_store::{Op, OpOutput, RevokedToken, Store};

use super::{agent, commit1, fresh, now, task, token};

fn record(id: &str, kind: RevocationKind, target: &str, at: i64) -> RevocationRecord {
    RevocationRecord {
        id: id.to_owned(),
        kind,
        target: target.to_owned(),
        by: "admin:root".to_owned(),
        reason: "test".to_owned(),
        at,
    }
}

fn revoke_op(record: RevocationRecord) -> Op {
    Op::Revoke {
        record,
        audit: None,
    }
}

/// Revokes and returns the jtis the revocation ended, sorted.
async fn revoke(store: &dyn Store, rec: RevocationRecord) -> Vec<String> {
    match commit1(store, revoke_op(rec)).await {
        OpOutput::Revoked(entry) => {
            let mut jtis: Vec<String> = entry.tokens.into_iter().map(|t| t.jti).collect();
            jtis.sort();
            jtis
        }
        other => panic!("expected revoked tokens, got {other:?}"),
    }
}

async fn revoked_at(store: &dyn Store, jti: &str) -> Option<i64> {
    store.token(jti).await.unwrap().unwrap().revoked_at
}

#[tokio::test]
async fn revoking_a_token_reaches_its_descendants_not_its_siblings() {
    let mut store = fresh().await;
    // root ─┬─ a ── b ── c
    //       │    └─ expired
    //       └─ sibling
    let at = now();
    let mut expired = token("expired", Some("a"), "t1");
    expired.exp = at - 1;
    let mut c = token("c", Some("b"), "t1");
    c.exp = at + 7200;
    for t in [
        token("root", None, "t1"),
        token("a", Some("root"), "t1"),
        token("b", Some("a"), "t1"),
        c.clone(),
        expired,
        token("sibling", Some("root"), "t1"),
    ] {
        commit1(&*store, Op::InsertToken(t)).await;
    }

    let out = commit1(
        &*store,
        revoke_op(record("r1", RevocationKind::Token, "a", at)),
    )
    .await;
    let OpOutput::Revoked(entry) = out else {
        panic!("expected revoked tokens, got {out:?}");
    };
    let mut ended = entry.tokens;
    ended.sort_by(|x, y| x.jti.cmp(&y.jti));
    let a_exp = store.token("a").await.unwrap().unwrap().exp;
    let b_exp = store.token("b").await.unwrap().unwrap().exp;
    assert_eq!(
        ended,
        vec![
            RevokedToken {
                jti: "a".to_owned(),
                exp: a_exp
            },
            RevokedToken {
                jti: "b".to_owned(),
                exp: b_exp
            },
            RevokedToken {
                jti: "c".to_owned(),
                exp: c.exp
            },
        ]
    );

    // Revoking an ancestor ends only what is still live below it.
    assert_eq!(
        revoke(&*store, record("r2", RevocationKind::Token, "root", at + 1)).await,
        ["root", "sibling"]
    );

    // It survives a restart.
    store.reopen().await;
    for jti in ["a", "b", "c"] {
        assert_eq!(revoked_at(&*store, jti).await, Some(at), "{jti}");
    }
    assert_eq!(revoked_at(&*store, "expired").await, None);
    assert_eq!(revoked_at(&*store, "root").await, Some(at + 1));
    assert_eq!(revoked_at(&*store, "sibling").await, Some(at + 1));
    let revoked_tokens = |now: i64| {
        let store = &store;
        async move {
            let mut jtis = Vec::new();
            store
                .revoked_tokens(now, &mut |t| jtis.push(t.jti))
                .await
                .unwrap();
            jtis.sort();
            jtis
        }
    };
    assert_eq!(revoked_tokens(at).await, ["a", "b", "c", "root", "sibling"]);
    // After every token expired, none is listed.
    assert!(revoked_tokens(at + 100_000).await.is_empty());
    let records = store.revocations().await.unwrap();
    assert_eq!(
        records,
        vec![
            record("r1", RevocationKind::Token, "a", at),
            record("r2", RevocationKind::Token, "root", at + 1),
        ]
    );
}

/// Tokens with different tasks, users, agents and keys.
fn population() -> Vec<TokenRecord> {
    let mut t1 = token("t1-alice", None, "task-1");
    t1.chain = vec!["support-v2".into(), "analytics-v1".into()];
    t1.credentials = vec!["kid:s1".into(), "kid:a1".into()];

    let mut t2 = token("t2-bob", None, "task-2");
    t2.sub = "bob".into();
    t2.credentials = vec!["kid:s2".into()];

    let mut t3 = token("t3-agent", None, "task-2");
    t3.sub = "agent:analytics-v1".into();
    t3.sub_profile = "agent".into();
    t3.sub_iss = None;
    t3.chain = vec!["analytics-v1".into()];
    t3.credentials = vec!["kid:a1".into()];

    let mut t4 = token("t4-alice", None, "task-3");
    t4.chain = vec!["billing-v1".into()];
    t4.credentials = vec!["mtls:billing".into()];

    // A user named like an agent subject must not be confused with the agent token t3.
    let mut t5 = token("t5-odd-user", None, "task-4");
    t5.sub = "agent:analytics-v1".into();
    t5.chain = vec!["billing-v1".into()];
    t5.credentials = vec!["kid:b1".into()];
    vec![t1, t2, t3, t4, t5]
}

#[tokio::test]
async fn each_kind_of_revocation_reaches_the_right_tokens() {
    let cases: &[(RevocationKind, &str, &[&str])] = &[
        (RevocationKind::Task, "task-2", &["t2-bob", "t3-agent"]),
        (RevocationKind::User, "alice", &["t1-alice", "t4-alice"]),
        (RevocationKind::User, "agent:analytics-v1", &["t5-odd-user"]),
        (
            RevocationKind::Agent,
            "analytics-v1",
            &["t1-alice", "t3-agent"],
        ),
        (
            RevocationKind::Agent,
            "billing-v1",
            &["t4-alice", "t5-odd-user"],
        ),
        (RevocationKind::Key, "a1", &["t1-alice", "t3-agent"]),
        (RevocationKind::Key, "s2", &["t2-bob"]),
        (RevocationKind::Key, "billing", &[]),
        (RevocationKind::Task, "no-such-task", &[]),
    ];
    for (kind, target, expected) in cases {
        let store = fresh().await;
        for t in population() {
            commit1(&*store, Op::InsertToken(t)).await;
        }
        let at = now();
        let ended = revoke(&*store, record("r", *kind, target, at)).await;
        assert_eq!(ended, *expected, "{kind:?} {target}");
        for t in population() {
            let want = expected.contains(&t.jti.as_str()).then_some(at);
            assert_eq!(
                revoked_at(&*store, &t.jti).await,
                want,
                "{kind:?} {target} {}",
                t.jti
            );
        }
        // The root is recorded even when it reached nothing.
        assert_eq!(store.revocations().await.unwrap().len(), 1);
    }
}

#[tokio::test]
async fn task_revocation_marks_the_task_revoked() {
    let store = fresh().await;
    commit1(&*store, Op::EnsureTask(task("task-1"))).await;
    commit1(&*store, Op::InsertToken(token("j1", None, "task-1"))).await;
    let at = now();
    assert_eq!(
        revoke(&*store, record("r", RevocationKind::Task, "task-1", at)).await,
        ["j1"]
    );
    let t = store.task("task-1").await.unwrap().unwrap();
    assert_eq!(t.status, TaskStatus::Revoked);
    assert_eq!(t.updated_at, at);
}

#[tokio::test]
async fn agent_and_key_revocations_leave_the_agent_record_alone() {
    let store = fresh().await;
    commit1(&*store, Op::InsertAgent(agent("support-v2", &["s1"]))).await;
    commit1(&*store, Op::InsertToken(token("j1", None, "task-1"))).await;
    assert_eq!(
        revoke(&*store, record("r1", RevocationKind::Key, "s1", now())).await,
        ["j1"]
    );
    revoke(
        &*store,
        record("r2", RevocationKind::Agent, "support-v2", now()),
    )
    .await;
    let a = store.agent("support-v2").await.unwrap().unwrap();
    assert_eq!(
        a.status,
        AgentStatus::Active,
        "the caller suspends the agent"
    );
    assert_eq!(a.keys[0].revoked_at, None, "the caller revokes the key");
}

#[tokio::test]
async fn a_duplicate_revocation_id_is_a_conflict_and_revokes_nothing() {
    let store = fresh().await;
    commit1(&*store, Op::InsertToken(token("j1", None, "task-1"))).await;
    commit1(&*store, Op::InsertToken(token("j2", None, "task-2"))).await;
    revoke(&*store, record("r1", RevocationKind::Token, "j1", now())).await;
    let r = store
        .commit(vec![revoke_op(record(
            "r1",
            RevocationKind::Token,
            "j2",
            now(),
        ))])
        .await;
    assert!(
        matches!(r, Err(mandate_store::StoreError::Conflict(_))),
        "{r:?}"
    );
    assert_eq!(revoked_at(&*store, "j2").await, None);
}

#[tokio::test]
async fn the_feed_numbers_revocations_gaplessly_and_keeps_what_each_ended_across_reopen() {
    let mut store = fresh().await;
    for (jti, parent) in [("a", None), ("b", Some("a")), ("c", None)] {
        commit1(&*store, Op::InsertToken(token(jti, parent, "task-1"))).await;
    }
    revoke(&*store, record("r1", RevocationKind::Token, "a", now())).await;
    revoke(&*store, record("r2", RevocationKind::User, "nobody", now())).await;
    // A failed unit takes no sequence number.
    let dup = store
        .commit(vec![revoke_op(record(
            "r1",
            RevocationKind::Token,
            "c",
            now(),
        ))])
        .await;
    assert!(dup.is_err());
    revoke(&*store, record("r3", RevocationKind::Token, "c", now())).await;
    assert_eq!(store.revocation_head().await.unwrap(), 3);

    store.reopen().await;
    let feed = store.revocation_feed(0, 100, now()).await.unwrap();
    let seqs: Vec<i64> = feed.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [1, 2, 3]);
    let ids: Vec<&str> = feed.iter().map(|e| e.record.id.as_str()).collect();
    assert_eq!(ids, ["r1", "r2", "r3"]);
    let ended: Vec<&str> = feed[0].tokens.iter().map(|t| t.jti.as_str()).collect();
    assert_eq!(ended, ["a", "b"]);
    assert!(feed[1].tokens.is_empty());
    let after_one = store.revocation_feed(1, 1, now()).await.unwrap();
    assert_eq!(after_one.len(), 1);
    assert_eq!(after_one[0].seq, 2);
    // Tokens that have expired by the time of reading are left out.
    let later = store
        .revocation_feed(0, 100, now() + 100_000)
        .await
        .unwrap();
    assert!(later.iter().all(|e| e.tokens.is_empty()));
}

#[tokio::test]
async fn a_revocation_and_its_audit_event_land_in_one_unit() {
    let store = fresh().await;
    commit1(&*store, Op::InsertToken(token("a", None, "task-1"))).await;
    let mut event = super::event("revocation");
    event.detail = r#"{"note":"kept"}"#.to_owned();
    let out = commit1(
        &*store,
        Op::Revoke {
            record: record("r1", RevocationKind::Task, "task-1", now()),
            audit: Some(event),
        },
    )
    .await;
    let OpOutput::Revoked(entry) = out else {
        panic!("expected a revocation, got {out:?}");
    };
    assert_eq!(entry.seq, 1);
    let events = super::all_events(&*store).await;
    let last = events.last().unwrap();
    assert_eq!(last.kind, "revocation");
    let detail: serde_json::Value = serde_json::from_str(&last.detail).unwrap();
    assert_eq!(detail["revocation"], "r1");
    assert_eq!(detail["tokens_ended"], 1);
    assert_eq!(detail["jtis"], serde_json::json!(["a"]));
    assert_eq!(detail["note"], "kept");

    // If the unit fails, neither lands.
    let before = super::all_events(&*store).await.len();
    let r = store
        .commit(vec![Op::Revoke {
            record: record("r1", RevocationKind::Task, "task-1", now()),
            audit: Some(super::event("revocation")),
        }])
        .await;
    assert!(r.is_err());
    assert_eq!(super::all_events(&*store).await.len(), before);
}

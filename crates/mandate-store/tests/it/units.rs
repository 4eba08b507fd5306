//! Units: all or nothing, independent of each other, and the audit chain they build.

use std::collections::BTreeSet;
use std::sync::Arc;

use mandate_core::audit::{AuditEvent, GENESIS_HASH, verify_chain};
use mandate_store::{Op, OpOutput, StoreError};

use super::{agent, all_events, append, commit1, event, fresh, now, task, token};

#[tokio::test]
async fn a_unit_whose_later_op_fails_leaves_nothing() {
    let store = fresh().await;
    commit1(&*store, Op::InsertAgent(agent("support-v2", &["s1"]))).await;
    let first = append(&*store, event("agent.register")).await;

    let r = store
        .commit(vec![
            Op::Audit(event("doomed")),
            Op::EnsureTask(task("t-doomed")),
            Op::InsertToken(token("j-doomed", None, "t-doomed")),
            Op::InsertAgent(agent("support-v2", &[])),
        ])
        .await;
    assert!(matches!(r, Err(StoreError::Conflict(_))), "{r:?}");
    assert_eq!(store.task("t-doomed").await.unwrap(), None);
    assert_eq!(store.token("j-doomed").await.unwrap(), None);

    // The next event takes the place the failed unit's event would have had.
    let next = append(&*store, event("after")).await;
    assert_eq!(next.seq, 2);
    assert_eq!(next.prev_hash, first.hash);
    let events = all_events(&*store).await;
    assert_eq!(
        events.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
        ["agent.register", "after"]
    );
    assert!(verify_chain(events).first_break.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_units_do_not_disturb_concurrent_ones() {
    // The database lives as long as `fixture`; the tasks share its store.
    let fixture = fresh().await;
    let store = fixture.shared();
    commit1(
        &*store,
        Op::UseOnce {
            key: "taken".to_owned(),
            exp: now() + 600,
        },
    )
    .await;

    let mut handles = Vec::new();
    for i in 0..40 {
        let store = Arc::clone(&store);
        handles.push(tokio::spawn(async move {
            if i % 2 == 0 {
                let ops = vec![
                    Op::EnsureTask(task(&format!("good-{i}"))),
                    Op::Audit(event(&format!("good-{i}"))),
                ];
                (i, store.commit(ops).await)
            } else {
                // The audit event comes first, then the replayed value fails the unit.
                let ops = vec![
                    Op::EnsureTask(task(&format!("bad-{i}"))),
                    Op::Audit(event(&format!("bad-{i}"))),
                    Op::UseOnce {
                        key: "taken".to_owned(),
                        exp: now() + 600,
                    },
                ];
                (i, store.commit(ops).await)
            }
        }));
    }
    for h in handles {
        let (i, r) = h.await.unwrap();
        if i % 2 == 0 {
            let out = r.unwrap();
            assert!(matches!(&out[1], OpOutput::Audit(e) if e.kind == format!("good-{i}")));
            assert!(store.task(&format!("good-{i}")).await.unwrap().is_some());
        } else {
            assert!(
                matches!(&r, Err(StoreError::Replay(k)) if k == "taken"),
                "{r:?}"
            );
            assert_eq!(store.task(&format!("bad-{i}")).await.unwrap(), None);
        }
    }
    let events = all_events(&*store).await;
    assert_eq!(events.len(), 20);
    assert!(events.iter().all(|e| e.kind.starts_with("good-")));
    let report = verify_chain(events);
    assert_eq!(report.checked, 20);
    assert!(report.first_break.is_none(), "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commits_build_one_gapless_verifiable_chain() {
    // The database lives as long as `fixture`; the tasks share its store.
    let fixture = fresh().await;
    let store = fixture.shared();
    let mut handles = Vec::new();
    for t in 0..20 {
        let store = Arc::clone(&store);
        handles.push(tokio::spawn(async move {
            let mut sealed = Vec::new();
            for n in 0..10 {
                let mut e = event("token.exchange");
                e.request_id = Some(format!("req-{t}-{n}"));
                e.chain = vec![format!("agent-{t}"), "analytics-v1".to_owned()];
                e.detail = format!("{{\"n\":{n}}}");
                for out in store.commit(vec![Op::Audit(e)]).await.unwrap() {
                    match out {
                        OpOutput::Audit(e) => sealed.push(e),
                        other => panic!("unexpected {other:?}"),
                    }
                }
            }
            sealed
        }));
    }
    let mut returned: Vec<AuditEvent> = Vec::new();
    for h in handles {
        returned.extend(h.await.unwrap());
    }
    returned.sort_by_key(|e| e.seq);

    let stored = all_events(&*store).await;
    assert_eq!(stored.len(), 200);
    assert_eq!(
        stored.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=200).collect::<Vec<_>>()
    );
    // What commit returned is exactly what was stored, field for field.
    assert_eq!(returned, stored);
    assert_eq!(stored[0].prev_hash, GENESIS_HASH);
    assert!(stored.windows(2).all(|w| w[0].time <= w[1].time));
    let ids: BTreeSet<_> = stored.iter().map(|e| e.request_id.clone()).collect();
    assert_eq!(ids.len(), 200);
    let report = verify_chain(stored);
    assert_eq!(report.checked, 200);
    assert!(report.first_break.is_none(), "{report:?}");
}

#[tokio::test]
async fn single_use_values_refuse_replay_until_they_expire() {
    let store = fresh().await;
    let use_once = |key: &str, exp: i64| Op::UseOnce {
        key: key.to_owned(),
        exp,
    };
    commit1(&*store, use_once("support-v2|a1", now() + 60)).await;
    let again = store
        .commit(vec![use_once("support-v2|a1", now() + 60)])
        .await;
    assert!(
        matches!(&again, Err(StoreError::Replay(k)) if k == "support-v2|a1"),
        "{again:?}"
    );
    // A different value is independent.
    commit1(&*store, use_once("support-v2|a2", now() + 60)).await;

    // Once its expiry has passed, the value may be used again (and is then held again).
    commit1(&*store, use_once("support-v2|old", now() - 10)).await;
    commit1(&*store, use_once("support-v2|old", now() + 60)).await;
    let held = store
        .commit(vec![use_once("support-v2|old", now() + 60)])
        .await;
    assert!(matches!(held, Err(StoreError::Replay(_))), "{held:?}");
}

#[tokio::test]
async fn tasks_are_ensured_once_and_change_status() {
    let store = fresh().await;
    let t = task("ticket-12847");
    commit1(&*store, Op::EnsureTask(t.clone())).await;
    let mut other = task("ticket-12847");
    other.purpose = "something else".to_owned();
    commit1(&*store, Op::EnsureTask(other)).await;
    assert_eq!(store.task("ticket-12847").await.unwrap(), Some(t));

    commit1(
        &*store,
        Op::SetTaskStatus {
            id: "ticket-12847".to_owned(),
            status: mandate_core::task::TaskStatus::Completed,
            at: 900,
        },
    )
    .await;
    let got = store.task("ticket-12847").await.unwrap().unwrap();
    assert_eq!(got.status, mandate_core::task::TaskStatus::Completed);
    assert_eq!(got.updated_at, 900);

    let missing = store
        .commit(vec![Op::SetTaskStatus {
            id: "ghost".to_owned(),
            status: mandate_core::task::TaskStatus::Completed,
            at: 900,
        }])
        .await;
    assert!(
        matches!(missing, Err(StoreError::NotFound(_))),
        "{missing:?}"
    );
}

#[tokio::test]
async fn tokens_round_trip_and_list_by_task() {
    let store = fresh().await;
    let mut a = token("j-a", None, "t1");
    a.iat = 1000;
    a.chain = vec!["support-v2".to_owned(), "analytics-v1".to_owned()];
    a.credentials = vec!["kid:s1".to_owned(), "kid:a1".to_owned()];
    a.aud = vec!["https://crm.example.com".to_owned(), "tickets".to_owned()];
    let mut b = token("j-b", Some("j-a"), "t1");
    b.iat = 1001;
    b.sub_iss = None;
    let c = token("j-c", None, "t2");
    commit1(&*store, Op::InsertToken(b.clone())).await;
    commit1(&*store, Op::InsertToken(a.clone())).await;
    commit1(&*store, Op::InsertToken(c)).await;

    assert_eq!(store.token("j-a").await.unwrap(), Some(a.clone()));
    assert_eq!(store.token("nope").await.unwrap(), None);
    assert_eq!(store.tokens_of_task("t1").await.unwrap(), vec![a, b]);

    let dup = store
        .commit(vec![Op::InsertToken(token("j-a", None, "t9"))])
        .await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");
}

#[tokio::test]
async fn a_token_under_a_revoked_parent_is_refused_with_its_unit() {
    let store = fresh().await;
    commit1(&*store, Op::InsertToken(token("parent", None, "t1"))).await;
    commit1(
        &*store,
        Op::InsertToken(token("live-child", Some("parent"), "t1")),
    )
    .await;
    commit1(
        &*store,
        Op::Revoke {
            record: mandate_core::revocation::RevocationRecord {
                id: "r1".to_owned(),
                kind: mandate_core::revocation::RevocationKind::Token,
                target: "parent".to_owned(),
                by: "admin:root".to_owned(),
                reason: "leaked".to_owned(),
                at: now(),
            },
            audit: None,
        },
    )
    .await;
    let events_before = all_events(&*store).await.len();

    let r = store
        .commit(vec![
            Op::Audit(event("token.exchange")),
            Op::InsertToken(token("late-child", Some("parent"), "t1")),
        ])
        .await;
    assert!(
        matches!(&r, Err(StoreError::ParentRevoked(p)) if p == "parent"),
        "{r:?}"
    );
    assert_eq!(store.token("late-child").await.unwrap(), None);
    assert_eq!(all_events(&*store).await.len(), events_before);
}

/// The ops of one token issuance, as the token endpoint commits them.
fn issuance(i: usize, assertion: &str, jti: &str, parent: Option<&str>) -> Vec<Op> {
    let task_id = format!("task-{}", i % 7);
    let mut t = token(jti, parent, &task_id);
    t.chain = vec!["support-v2".to_owned(), format!("relay-{}", i % 3)];
    t.credentials = vec!["kid:s1".to_owned(), format!("kid:r{}", i % 3)];
    let mut e = event("token.exchange");
    e.jti = Some(jti.to_owned());
    e.chain = t.chain.clone();
    e.request_id = Some(format!("req-{i}"));
    vec![
        Op::UseOnce {
            key: assertion.to_owned(),
            exp: now() + 600,
        },
        Op::EnsureTask(task(&task_id)),
        Op::InsertToken(t),
        Op::Audit(e),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_issuances_store_exactly_what_one_by_one_would() {
    // Issuance units arrive together, so the writer batches them (and stores a batch with one
    // statement per table when it can). Among them: replayed assertions, a duplicate `jti` and a
    // child of a revoked token, which must fail alone with their own errors.
    let fixture = fresh().await;
    let store = fixture.shared();
    commit1(&*store, Op::InsertToken(token("dead-parent", None, "t0"))).await;
    commit1(&*store, Op::InsertToken(token("taken-jti", None, "t0"))).await;
    commit1(
        &*store,
        Op::Revoke {
            record: mandate_core::revocation::RevocationRecord {
                id: "r1".to_owned(),
                kind: mandate_core::revocation::RevocationKind::Token,
                target: "dead-parent".to_owned(),
                by: "admin:root".to_owned(),
                reason: "leaked".to_owned(),
                at: now(),
            },
            audit: None,
        },
    )
    .await;
    let before = all_events(&*store).await.len();

    let mut handles = Vec::new();
    for i in 0..120 {
        let store = Arc::clone(&store);
        handles.push(tokio::spawn(async move {
            let (assertion, jti, parent) = match i % 20 {
                // Two units share this assertion: exactly one may win.
                3 | 4 => (format!("shared-{}", i / 20), format!("j-{i}"), None),
                7 => (format!("a-{i}"), "taken-jti".to_owned(), None),
                11 => (format!("a-{i}"), format!("j-{i}"), Some("dead-parent")),
                _ => (format!("a-{i}"), format!("j-{i}"), None),
            };
            let r = store.commit(issuance(i, &assertion, &jti, parent)).await;
            (i, jti, r)
        }));
    }
    let mut stored_events = Vec::new();
    let mut shared_wins = BTreeSet::new();
    for h in handles {
        let (i, jti, r) = h.await.unwrap();
        match i % 20 {
            7 => assert!(matches!(&r, Err(StoreError::Conflict(_))), "{i}: {r:?}"),
            11 => assert!(
                matches!(&r, Err(StoreError::ParentRevoked(p)) if p == "dead-parent"),
                "{i}: {r:?}"
            ),
            3 | 4 => match &r {
                Ok(_) => assert!(shared_wins.insert(i / 20), "both uses of one assertion won"),
                Err(StoreError::Replay(k)) => assert_eq!(k, &format!("shared-{}", i / 20)),
                other => panic!("{i}: {other:?}"),
            },
            _ => {}
        }
        let Ok(out) = r else {
            assert_eq!(
                store.token(&jti).await.unwrap().filter(|t| t.task != "t0"),
                None
            );
            continue;
        };
        assert_eq!(out.len(), 4);
        assert!(out[..3].iter().all(|o| matches!(o, OpOutput::Done)));
        let OpOutput::Audit(e) = &out[3] else {
            panic!("{i}: {out:?}")
        };
        assert_eq!(e.request_id.as_deref(), Some(format!("req-{i}").as_str()));
        stored_events.push(e.clone());
        // The record reads back field for field as it was sent.
        let Op::InsertToken(sent) = &issuance(i, "", &jti, None)[2] else {
            unreachable!()
        };
        let got = store.token(&jti).await.unwrap().unwrap();
        assert_eq!(
            (&got.chain, &got.credentials, &got.task),
            (&sent.chain, &sent.credentials, &sent.task)
        );
        assert!(store.task(&sent.task).await.unwrap().is_some());
    }
    assert_eq!(shared_wins.len(), 6, "one use of each shared assertion won");
    // 120 units: 6 duplicate jtis, 6 under a revoked parent, 6 replays.
    assert_eq!(stored_events.len(), 102);

    stored_events.sort_by_key(|e| e.seq);
    let events = all_events(&*store).await;
    assert_eq!(events.len(), before + 102);
    assert_eq!(&events[before..], &stored_events[..]);
    assert!(verify_chain(events).first_break.is_none());

    // The actor rows were written: revoking an agent of the chain reaches its tokens.
    let ended = match commit1(
        &*store,
        Op::Revoke {
            record: mandate_core::revocation::RevocationRecord {
                id: "r2".to_owned(),
                kind: mandate_core::revocation::RevocationKind::Agent,
                target: "relay-1".to_owned(),
                by: "admin:root".to_owned(),
                reason: "compromised".to_owned(),
                at: now(),
            },
            audit: None,
        },
    )
    .await
    {
        OpOutput::Revoked(entry) => entry.tokens.len(),
        other => panic!("{other:?}"),
    };
    let expected = stored_events
        .iter()
        .filter(|e| e.chain.iter().any(|a| a == "relay-1"))
        .count();
    assert_eq!(ended, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_task_whose_id_exists_fails_alone() {
    // `InsertTask` (a generated task id) must be new: a collision fails that unit with a
    // conflict, never binds its token to the existing task, and leaves its neighbours alone.
    let fixture = fresh().await;
    let store = fixture.shared();
    commit1(&*store, Op::InsertTask(task("task-taken"))).await;
    let mut handles = Vec::new();
    for i in 0..30 {
        let store = Arc::clone(&store);
        handles.push(tokio::spawn(async move {
            let id = if i == 17 {
                "task-taken".to_owned()
            } else {
                format!("task-new-{i}")
            };
            let mut t = task(&id);
            t.purpose = format!("purpose {i}");
            let ops = vec![
                Op::InsertTask(t),
                Op::InsertToken(token(&format!("j-{i}"), None, &id)),
                Op::Audit(event("token.client_credentials")),
            ];
            (i, id, store.commit(ops).await)
        }));
    }
    for h in handles {
        let (i, id, r) = h.await.unwrap();
        if i == 17 {
            assert!(matches!(&r, Err(StoreError::Conflict(_))), "{r:?}");
            assert_eq!(store.token("j-17").await.unwrap(), None);
            assert_eq!(store.task(&id).await.unwrap().unwrap().purpose, "refund");
        } else {
            assert!(r.is_ok(), "{i}: {r:?}");
            let got = store.task(&id).await.unwrap().unwrap();
            assert_eq!(got.purpose, format!("purpose {i}"));
        }
    }
    assert_eq!(all_events(&*store).await.len(), 29);
}

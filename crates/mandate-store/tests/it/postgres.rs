//! PostgreSQL only: several Mandate nodes (several `PostgresStore`s) sharing one database.
//!
//! Each test gets its own scratch database on the server named by `MANDATE_TEST_DATABASE_URL`
//! and returns at once, saying so, when it is unset; with it set, failures fail. The one test
//! that needs no server (error messages never show the URL's password) always runs.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use mandate_core::audit::{AuditEvent, GENESIS_HASH, NewEvent, verify_chain};
use mandate_core::revocation::{RevocationEntry, RevocationKind, RevocationRecord};
use mandate_store::testing::{self, DATABASE_URL_ENV, ScratchDatabase};
use mandate_store::{Change, Op, OpOutput, PostgresStore, Store, StoreError};
use sqlx::{Connection, PgConnection};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

use super::{agent, all_events, append, commit1, event, key, now, token};

/// How long a change may take to reach another node, a released lock to be granted, a
/// connection attempt to fail.
const PATIENCE: Duration = Duration::from_secs(15);

/// A scratch database for `test`, or `None` (said on stderr) when the run has no server.
async fn database(test: &str) -> Option<ScratchDatabase> {
    match testing::postgres_url() {
        Some(url) => Some(ScratchDatabase::create(&url).await),
        None => {
            eprintln!("{test}: skipped, {DATABASE_URL_ENV} is not set (PostgreSQL only)");
            None
        }
    }
}

/// Two nodes on one database.
async fn two_nodes(db: &ScratchDatabase) -> (Arc<PostgresStore>, Arc<PostgresStore>) {
    let a = PostgresStore::connect(db.url()).await.unwrap();
    let b = PostgresStore::connect(db.url()).await.unwrap();
    (Arc::new(a), Arc::new(b))
}

/// A raw connection to the database, beside the stores.
async fn raw(db: &ScratchDatabase) -> PgConnection {
    PgConnection::connect(db.url()).await.unwrap()
}

/// The versions recorded in `schema_migrations`, in the order they were recorded.
async fn recorded_versions(db: &ScratchDatabase) -> Vec<i64> {
    let mut conn = raw(db).await;
    let v = sqlx::query_scalar("SELECT CAST(version AS BIGINT) FROM schema_migrations")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    v
}

/// One version per file of `migrations/postgres`.
fn migration_versions() -> Vec<i64> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres");
    let files = std::fs::read_dir(dir)
        .unwrap()
        .filter(|f| {
            f.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".sql")
        })
        .count();
    (1..=files as i64).collect()
}

fn revocation(id: &str, kind: RevocationKind, target: &str) -> RevocationRecord {
    RevocationRecord {
        id: id.to_owned(),
        kind,
        target: target.to_owned(),
        by: "admin:root".to_owned(),
        reason: "test".to_owned(),
        at: now(),
    }
}

fn tagged(kind: &str, tag: &str) -> NewEvent {
    let mut e = event(kind);
    e.request_id = Some(tag.to_owned());
    e
}

/// Waits until `want` is heard on `rx`, passing over other changes.
async fn hear(rx: &mut broadcast::Receiver<Change>, want: &Change, who: &str) {
    let mut heard = Vec::new();
    let found = tokio::time::timeout(PATIENCE, async {
        loop {
            match rx.recv().await {
                Ok(c) if &c == want => return,
                Ok(c) => heard.push(format!("{c:?}")),
                Err(RecvError::Lagged(n)) => heard.push(format!("({n} lost)")),
                Err(RecvError::Closed) => panic!("{who}: the change stream closed"),
            }
        }
    })
    .await;
    assert!(
        found.is_ok(),
        "{who} did not hear {want:?} within {PATIENCE:?}; heard {heard:?}"
    );
}

/// What one worker committed and got back.
#[derive(Default)]
struct Committed {
    events: Vec<AuditEvent>,
    revocations: Vec<RevocationEntry>,
    /// How many audit events its units wrote (those of revocations are not returned).
    written: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_committing_at_once_build_one_gapless_chain_and_feed() {
    let Some(db) = database("two_nodes_committing_at_once_build_one_gapless_chain_and_feed").await
    else {
        return;
    };
    let (a, b) = two_nodes(&db).await;
    const WORKERS: usize = 8; // per node
    const UNITS: usize = 30; // per worker: 480 units in all, and the duplicates below
    const DUPLICATES: usize = 20;

    let mut workers = Vec::new();
    for (node, store) in [("a", &a), ("b", &b)] {
        for w in 0..WORKERS {
            let store = Arc::clone(store);
            workers.push(tokio::spawn(async move {
                let mut done = Committed::default();
                for n in 0..UNITS {
                    let tag = format!("{node}-{w}-{n}");
                    let task = format!("task-{node}-{w}");
                    let ops = match n % 3 {
                        // A token and its exchange's event.
                        0 => vec![
                            Op::InsertToken(token(&format!("j-{tag}"), None, &task)),
                            Op::Audit(tagged("token.exchange", &tag)),
                        ],
                        // The revocation of the token of the unit before, with its event.
                        1 => vec![Op::Revoke {
                            record: revocation(
                                &format!("r-{tag}"),
                                RevocationKind::Token,
                                &format!("j-{node}-{w}-{}", n - 1),
                            ),
                            audit: Some(tagged("revocation", &tag)),
                        }],
                        // Two events.
                        _ => vec![
                            Op::Audit(tagged("gateway.request", &tag)),
                            Op::Audit(tagged("gateway.request", &format!("{tag}-2"))),
                        ],
                    };
                    done.written += if n % 3 == 2 { 2 } else { 1 };
                    let out = store
                        .commit(ops)
                        .await
                        .unwrap_or_else(|e| panic!("unit {tag}: {e}"));
                    for o in out {
                        match o {
                            OpOutput::Audit(e) => done.events.push(e),
                            OpOutput::Revoked(entry) => done.revocations.push(entry),
                            OpOutput::Done => {}
                            other => panic!("unit {tag}: unexpected {other:?}"),
                        }
                    }
                }
                done
            }));
        }
    }
    // Meanwhile both nodes insert the same jtis, each in a unit whose event comes first.
    let mut duplicates = Vec::new();
    for i in 0..DUPLICATES {
        for (node, store) in [("a", &a), ("b", &b)] {
            let store = Arc::clone(store);
            duplicates.push(tokio::spawn(async move {
                let r = store
                    .commit(vec![
                        Op::Audit(tagged("token.exchange", &format!("dup-{i}-{node}"))),
                        Op::InsertToken(token(&format!("dup-{i}"), None, "task-dup")),
                    ])
                    .await;
                (i, node, r)
            }));
        }
    }

    let mut returned = Vec::new();
    let mut entries = Vec::new();
    let mut written = 0;
    for w in workers {
        let done = w.await.unwrap();
        returned.extend(done.events);
        entries.extend(done.revocations);
        written += done.written;
    }
    let mut landed = vec![Vec::new(); DUPLICATES];
    for d in duplicates {
        let (i, node, r) = d.await.unwrap();
        match r {
            Ok(out) => {
                match &out[..] {
                    [OpOutput::Audit(e), OpOutput::Done] => returned.push(e.clone()),
                    other => panic!("dup-{i} on {node}: unexpected {other:?}"),
                }
                written += 1;
                landed[i].push(node);
            }
            Err(StoreError::Conflict(_)) => {}
            Err(e) => panic!("dup-{i} on {node}: expected a conflict, got {e:?}"),
        }
    }
    for (i, nodes) in landed.iter().enumerate() {
        assert_eq!(
            nodes.len(),
            1,
            "dup-{i} must land exactly once (refused exactly once), landed on {nodes:?}"
        );
        assert!(a.token(&format!("dup-{i}")).await.unwrap().is_some());
    }

    // One gapless chain, whichever node wrote each event, and the same from both nodes.
    let stored = all_events(&*a).await;
    assert_eq!(stored.len(), written);
    assert_eq!(
        stored.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=written as i64).collect::<Vec<_>>()
    );
    assert_eq!(stored[0].prev_hash, GENESIS_HASH);
    assert!(stored.windows(2).all(|w| w[0].time <= w[1].time));
    let report = verify_chain(stored.clone());
    assert_eq!(report.checked, written as u64);
    assert!(report.first_break.is_none(), "{report:?}");
    assert_eq!(all_events(&*b).await, stored);
    // What commit returned is what was stored; refused units left no event.
    for e in &returned {
        assert_eq!(&stored[(e.seq - 1) as usize], e);
    }
    let ids: BTreeSet<_> = stored.iter().map(|e| e.request_id.clone()).collect();
    assert_eq!(ids.len(), written, "every event landed once");
    assert_eq!(
        stored.iter().filter(|e| e.kind == "revocation").count(),
        entries.len()
    );

    // One gapless revocation feed, each entry with the token it ended.
    let revocations = entries.len() as i64;
    assert_eq!(revocations, (2 * WORKERS * UNITS / 3) as i64);
    let mut seqs: Vec<i64> = entries.iter().map(|e| e.seq).collect();
    seqs.sort();
    assert_eq!(seqs, (1..=revocations).collect::<Vec<_>>());
    for e in &entries {
        let ended: Vec<&str> = e.tokens.iter().map(|t| t.jti.as_str()).collect();
        assert_eq!(ended, [e.record.target.as_str()], "{}", e.record.id);
    }
    for store in [&a, &b] {
        assert_eq!(store.revocation_head().await.unwrap(), revocations);
        let feed = store.revocation_feed(0, 10_000, now()).await.unwrap();
        assert_eq!(
            feed.iter().map(|e| e.seq).collect::<Vec<_>>(),
            (1..=revocations).collect::<Vec<_>>()
        );
        let mut by_seq = entries.clone();
        by_seq.sort_by_key(|e| e.seq);
        assert_eq!(
            feed.iter().map(|e| &e.record.id).collect::<Vec<_>>(),
            by_seq.iter().map(|e| &e.record.id).collect::<Vec<_>>()
        );
    }
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_and_agent_changes_reach_the_other_node() {
    let Some(db) = database("revocations_and_agent_changes_reach_the_other_node").await else {
        return;
    };
    let (a, b) = two_nodes(&db).await;
    let mut heard_by_a = a.changes().expect("PostgreSQL announces changes");
    let mut heard_by_b = b.changes().expect("PostgreSQL announces changes");

    // A revocation on a reaches b, with its feed number (and a itself hears it too).
    commit1(&*a, Op::InsertToken(token("j1", None, "task-1"))).await;
    let out = commit1(
        &*a,
        Op::Revoke {
            record: revocation("r1", RevocationKind::Token, "j1"),
            audit: None,
        },
    )
    .await;
    let OpOutput::Revoked(entry) = out else {
        panic!("expected a revocation, got {out:?}");
    };
    hear(&mut heard_by_b, &Change::Revocation(entry.seq), "b").await;
    hear(&mut heard_by_a, &Change::Revocation(entry.seq), "a").await;
    let feed = b.revocation_feed(entry.seq - 1, 10, now()).await.unwrap();
    assert_eq!(feed.first().map(|e| &e.record.id), Some(&entry.record.id));

    // Agent changes on either node reach the other.
    commit1(&*a, Op::InsertAgent(agent("support-v2", &["s1"]))).await;
    hear(&mut heard_by_b, &Change::Agents, "b").await;
    hear(&mut heard_by_a, &Change::Agents, "a").await;
    commit1(
        &*b,
        Op::AddAgentKey {
            agent: "support-v2".into(),
            key: key("s2"),
        },
    )
    .await;
    hear(&mut heard_by_a, &Change::Agents, "a").await;
    hear(&mut heard_by_b, &Change::Agents, "b").await;
    commit1(
        &*b,
        Op::SetAgentStatus {
            id: "support-v2".into(),
            status: mandate_core::agent::AgentStatus::Suspended,
            at: now(),
        },
    )
    .await;
    hear(&mut heard_by_a, &Change::Agents, "a").await;
    let seen = a.agent("support-v2").await.unwrap().unwrap();
    assert_eq!(seen.status, mandate_core::agent::AgentStatus::Suspended);
    assert_eq!(seen.keys.len(), 2);

    // And a revocation on b reaches a.
    let out = commit1(
        &*b,
        Op::Revoke {
            record: revocation("r2", RevocationKind::Agent, "support-v2"),
            audit: Some(event("revocation")),
        },
    )
    .await;
    let OpOutput::Revoked(second) = out else {
        panic!("expected a revocation, got {out:?}");
    };
    assert_eq!(second.seq, entry.seq + 1);
    hear(&mut heard_by_a, &Change::Revocation(second.seq), "a").await;
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_is_held_by_one_node_at_a_time() {
    let Some(db) = database("a_lock_is_held_by_one_node_at_a_time").await else {
        return;
    };
    let (a, b) = two_nodes(&db).await;

    let lease = a
        .try_lock("x")
        .await
        .unwrap()
        .expect("granted to the first");
    for _ in 0..3 {
        assert!(
            b.try_lock("x").await.unwrap().is_none(),
            "refused to the other node while held"
        );
    }
    let other = b.try_lock("y").await.unwrap();
    assert!(other.is_some(), "another name is another lock");
    drop(other);

    // Once dropped, the other node gets it (the server ends the holding session as soon as it
    // sees its connection closed).
    drop(lease);
    let held_by_b = tokio::time::timeout(PATIENCE, async {
        loop {
            if let Some(lease) = b.try_lock("x").await.unwrap() {
                return lease;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("granted once the lease was dropped");
    assert!(a.try_lock("x").await.unwrap().is_none());

    // `lock` waits for it.
    let waiter = {
        let a = Arc::clone(&a);
        tokio::spawn(async move { a.lock("x").await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiter.is_finished(),
        "`lock` waits while another node holds it"
    );
    drop(held_by_b);
    let lease = tokio::time::timeout(PATIENCE, waiter)
        .await
        .expect("`lock` returns once the lease is dropped")
        .unwrap()
        .unwrap();
    assert!(b.try_lock("x").await.unwrap().is_none());
    drop(lease);
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_starting_together_on_a_fresh_database_migrate_once() {
    for round in 0..3 {
        let Some(db) = database("nodes_starting_together_on_a_fresh_database_migrate_once").await
        else {
            return;
        };
        let connect = |url: String| tokio::spawn(async move { PostgresStore::connect(&url).await });
        let (x, y) = tokio::join!(connect(db.url().to_owned()), connect(db.url().to_owned()));
        let x = x
            .unwrap()
            .unwrap_or_else(|e| panic!("round {round}: the first node: {e}"));
        let y = y
            .unwrap()
            .unwrap_or_else(|e| panic!("round {round}: the second node: {e}"));
        assert_eq!(
            recorded_versions(&db).await,
            migration_versions(),
            "round {round}: each migration applied exactly once"
        );
        let e1 = append(&x, event("from-x")).await;
        let e2 = append(&y, event("from-y")).await;
        assert_eq!((e1.seq, e2.seq), (1, 2));
        assert_eq!(e2.prev_hash, e1.hash);
        x.close().await;
        y.close().await;
        // A node started later finds nothing to do.
        let z = PostgresStore::connect(db.url()).await.unwrap();
        assert_eq!(recorded_versions(&db).await, migration_versions());
        assert_eq!(verify_chain(all_events(&z).await).checked, 2);
        z.close().await;
    }
}

#[tokio::test]
async fn read_only_needs_the_schema_and_then_reads_events() {
    let Some(db) = database("read_only_needs_the_schema_and_then_reads_events").await else {
        return;
    };
    match PostgresStore::connect_read_only(db.url()).await {
        Err(StoreError::Database(m)) => {
            let said = m.to_lowercase();
            assert!(
                said.contains("schema") || said.contains("migrat"),
                "the error should say the schema is missing: {m}"
            );
        }
        other => panic!("a database without the schema must be refused, got {other:?}"),
    }
    let mut conn = raw(&db).await;
    let tables: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'public'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
    assert_eq!(tables, 0, "a read-only connection never creates the schema");

    let rw = PostgresStore::connect(db.url()).await.unwrap();
    commit1(&rw, Op::InsertAgent(agent("support-v2", &["s1"]))).await;
    let mut written = Vec::new();
    for i in 0..5 {
        written.push(append(&rw, event(&format!("e{i}"))).await);
    }
    // While the writing node runs…
    let ro = PostgresStore::connect_read_only(db.url()).await.unwrap();
    assert_eq!(all_events(&ro).await, written);
    let r = ro.commit(vec![Op::Audit(event("forged"))]).await;
    assert!(matches!(r, Err(StoreError::Closed)), "{r:?}");
    // …and after it stopped.
    rw.close().await;
    ro.ping().await.unwrap();
    assert!(ro.agent("support-v2").await.unwrap().is_some());
    let events = all_events(&ro).await;
    assert_eq!(events, written);
    assert!(verify_chain(events).is_ok());
    ro.close().await;
}

/// Needs no server: the URLs lead nowhere or are malformed, so this always runs. (A read-only
/// connection retries an unreachable server until its pool gives up, so the attempts run at
/// once.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_errors_never_show_the_password() {
    let mut attempts = Vec::new();
    for url in [
        "postgres://u:s3cret@127.0.0.1:1/x",
        "postgres://u:s3cret@127.0.0.1:1/x?sslmode=require",
        "postgresql://u:s3cret%21@127.0.0.1:1/x",
        "postgres://u:s3cret@127.0.0.1:notaport/x",
        "postgres://u:s3cret@127.0.0.1:1/x?sslmode=bogus",
        "postgres://u:s3cret@[::1/x",
        "mysql://u:s3cret@127.0.0.1:1/x",
    ] {
        for read_only in [false, true] {
            attempts.push(tokio::spawn(async move {
                let attempt = async {
                    if read_only {
                        PostgresStore::connect_read_only(url).await
                    } else {
                        PostgresStore::connect(url).await
                    }
                };
                let r = tokio::time::timeout(PATIENCE, attempt)
                    .await
                    .unwrap_or_else(|_| panic!("{url}: no answer within {PATIENCE:?}"));
                (url, read_only, r.err())
            }));
        }
    }
    for a in attempts {
        let (url, read_only, e) = a.await.unwrap();
        let e = e.unwrap_or_else(|| panic!("{url}: connected (read_only: {read_only})"));
        for text in [e.to_string(), format!("{e:?}")] {
            assert!(
                !text.contains("s3cret"),
                "{url} (read_only: {read_only}): the error shows the password: {text}"
            );
        }
    }
}

#[tokio::test]
async fn nul_characters_never_break_a_write_or_a_read() {
    let Some(db) = database("nul_characters_never_break_a_write_or_a_read").await else {
        return;
    };
    let store = PostgresStore::connect(db.url()).await.unwrap();
    // An audit event records what a client sent, whatever it was: NUL becomes U+FFFD, and the
    // chain covers what was stored.
    let mut e = event("token.request");
    e.reason = "scope `a\0b` is not a scope".into();
    e.resource = Some("customers/\0".into());
    let stored = append(&store, e).await;
    assert_eq!(stored.reason, "scope `a\u{fffd}b` is not a scope");
    assert_eq!(stored.resource.as_deref(), Some("customers/\u{fffd}"));
    let events = all_events(&store).await;
    assert_eq!(
        events.last().map(|e| e.reason.as_str()),
        Some(stored.reason.as_str())
    );
    assert!(verify_chain(events.clone()).is_ok());
    // Other records refuse it, clearly, and the unit leaves nothing behind.
    let mut bad = agent("nul-agent", &["k1"]);
    bad.name = "Agent \0".into();
    let err = store.commit(vec![Op::InsertAgent(bad)]).await.unwrap_err();
    assert!(matches!(err, StoreError::Unstorable(_)), "{err:?}");
    assert!(store.agent("nul-agent").await.unwrap().is_none());
    // A lookup by a key holding NUL finds nothing.
    assert!(store.agent("a\0").await.unwrap().is_none());
    assert!(store.approval("\0").await.unwrap().is_none());
    assert!(store.ssf_stream("\0\u{1}").await.unwrap().is_none());
    store.close().await;
}

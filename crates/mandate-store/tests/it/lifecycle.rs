//! Opening, migrating, reopening, read-only access and shutdown.
//!
//! Two tests here are SQLite-only and run on SQLite whatever the backend of the run (see
//! `fresh_sqlite`): opening a missing file read-only, and a database file left by a build from
//! before SQLite migration 7. Neither has a PostgreSQL counterpart in this file: a PostgreSQL
//! database has no file to be missing (a database without the schema is refused, see
//! `postgres::read_only_needs_the_schema_and_then_reads_events`), and its schema history starts
//! after that migration.

use std::sync::Arc;

use mandate_core::audit::verify_chain;
use mandate_store::testing::Backend;
use mandate_store::{Op, OpOutput, SqliteStore, Store, StoreError};
use sqlx::{Connection, Row};

use super::{agent, all_events, append, commit1, event, fresh, fresh_sqlite, sqlite_connection};

/// The versions a fully migrated database of `backend` records: one per migration file.
fn migration_versions(backend: Backend) -> Vec<i64> {
    match backend {
        Backend::Sqlite => (1..=12).collect(),
        Backend::Postgres => {
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
    }
}

#[tokio::test]
async fn migrations_apply_once_and_data_and_chain_survive_reopen() {
    let mut store = fresh().await;
    store.ping().await.unwrap();
    commit1(&*store, Op::InsertAgent(agent("support-v2", &["s1"]))).await;
    let first = append(&*store, event("agent.register")).await;
    assert_eq!(first.seq, 1);

    for round in 2..=3 {
        store.reopen().await;
        assert_eq!(
            store.agent("support-v2").await.unwrap(),
            Some(agent("support-v2", &["s1"]))
        );
        // The chain head is reloaded: the next event links to the last stored one.
        let e = append(&*store, event("reopened")).await;
        assert_eq!(e.seq, round);
        assert!(e.time >= first.time);
    }
    store.close().await;

    let versions = store
        .integers("SELECT CAST(version AS BIGINT) FROM schema_migrations".to_owned())
        .await;
    assert_eq!(
        versions,
        migration_versions(store.backend()),
        "each migration applied exactly once"
    );
    if let Some(path) = store.sqlite_path() {
        let mut conn = sqlite_connection(path).await;
        let mode: String = sqlx::query("PRAGMA journal_mode")
            .fetch_one(&mut conn)
            .await
            .unwrap()
            .get(0);
        assert_eq!(mode, "wal");
        conn.close().await.unwrap();
    }

    store.reopen().await;
    let events = all_events(&*store).await;
    assert_eq!(events.len(), 3);
    assert_eq!(events[1].prev_hash, first.hash);
    assert!(verify_chain(events).first_break.is_none());
    store.close().await;
}

#[tokio::test]
async fn a_schema_newer_than_the_build_is_refused() {
    let store = fresh().await;
    store.close().await;
    store
        .execute("INSERT INTO schema_migrations (version, applied_at) VALUES (999, 0)".to_owned())
        .await;
    let rw = store.open_again().await.err();
    assert!(matches!(rw, Some(StoreError::Database(_))), "{rw:?}");
    let ro = store.open_read_only().await.err();
    assert!(matches!(ro, Some(StoreError::Database(_))), "{ro:?}");
}

#[tokio::test]
async fn read_only_sees_the_data_and_refuses_writes() {
    let store = fresh().await;
    commit1(&*store, Op::InsertAgent(agent("support-v2", &["s1"]))).await;
    for i in 0..5 {
        append(&*store, event(&format!("e{i}"))).await;
    }

    // While the server still has it open…
    let ro = store.open_read_only().await.unwrap();
    assert_eq!(all_events(&*ro).await.len(), 5);
    let r = ro.commit(vec![Op::Audit(event("forged"))]).await;
    assert!(matches!(r, Err(StoreError::Closed)), "{r:?}");
    ro.close().await;

    // …and after it closed.
    store.close().await;
    let ro = store.open_read_only().await.unwrap();
    ro.ping().await.unwrap();
    assert!(ro.agent("support-v2").await.unwrap().is_some());
    let events = all_events(&*ro).await;
    assert_eq!(events.len(), 5);
    assert_eq!(verify_chain(events).checked, 5);
    let r = ro
        .commit(vec![Op::InsertAgent(agent("intruder", &[]))])
        .await;
    assert!(matches!(r, Err(StoreError::Closed)), "{r:?}");
    ro.close().await;
}

/// SQLite-only: a PostgreSQL database is not a file that could be missing.
#[tokio::test]
async fn read_only_opening_never_creates_a_missing_file() {
    let store = fresh_sqlite().await;
    let missing = store.sqlite_path().unwrap().with_file_name("missing.db");
    let r = SqliteStore::open_read_only(&missing).await;
    assert!(matches!(r, Err(StoreError::NotFound(_))), "{r:?}");
    assert!(!missing.exists(), "a read-only open never creates the file");
}

/// SQLite-only: migration 7 is of SQLite's schema history; PostgreSQL's schema began with
/// checkpoints.
#[tokio::test]
async fn a_database_from_before_checkpoints_reads_read_only_with_none() {
    let store = fresh_sqlite().await;
    let path = store.sqlite_path().unwrap();
    append(&*store, event("e0")).await;
    store.close().await;
    // As a build from before migration 7 left it (read-only opens never migrate).
    let mut conn = sqlite_connection(path).await;
    sqlx::query("DROP TABLE audit_checkpoints")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("DELETE FROM schema_migrations WHERE version >= 7")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let ro = SqliteStore::open_read_only(path).await.unwrap();
    assert!(ro.checkpoints().await.unwrap().is_empty());
    assert_eq!(verify_chain(all_events(&ro).await).checked, 1);
    ro.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_lands_queued_units_and_then_refuses() {
    let mut store = fresh().await;
    let shared = store.shared();
    let mut handles = Vec::new();
    for i in 0..100 {
        let store = Arc::clone(&shared);
        handles.push(tokio::spawn(async move {
            store.commit(vec![Op::Audit(event(&format!("e{i}")))]).await
        }));
    }
    tokio::task::yield_now().await;
    shared.close().await;
    shared.close().await;

    let mut acknowledged = Vec::new();
    for h in handles {
        match h.await.unwrap() {
            Ok(out) => match &out[..] {
                [OpOutput::Audit(e)] => acknowledged.push(e.seq),
                other => panic!("unexpected {other:?}"),
            },
            Err(StoreError::Closed) => {}
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    let r = store.commit(vec![Op::Audit(event("late"))]).await;
    assert!(matches!(r, Err(StoreError::Closed)), "{r:?}");

    // Every acknowledged event is durable, and nothing else was written.
    store.reopen().await;
    let events = all_events(&*store).await;
    acknowledged.sort();
    assert_eq!(
        events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        acknowledged
    );
    assert!(verify_chain(events).first_break.is_none());
    store.close().await;
}

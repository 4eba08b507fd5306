//! Opening, migrating, reopening, read-only access and shutdown.

use std::path::Path;
use std::sync::Arc;

use mandate_core::audit::verify_chain;
use mandate_store::{Op, OpOutput, SqliteStore, Store, StoreError};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, Row, SqliteConnection};

use super::{agent, all_events, append, commit1, event, fresh};

async fn raw(path: &Path) -> SqliteConnection {
    SqliteConnectOptions::new()
        .filename(path)
        .connect()
        .await
        .unwrap()
}

#[tokio::test]
async fn migrations_apply_once_and_data_and_chain_survive_reopen() {
    let (_dir, path, store) = fresh().await;
    store.ping().await.unwrap();
    commit1(&store, Op::InsertAgent(agent("support-v2", &["s1"]))).await;
    let first = append(&store, event("agent.register")).await;
    assert_eq!(first.seq, 1);
    store.close().await;

    for round in 2..=3 {
        let store = SqliteStore::open(&path).await.unwrap();
        assert_eq!(
            store.agent("support-v2").await.unwrap(),
            Some(agent("support-v2", &["s1"]))
        );
        // The chain head is reloaded: the next event links to the last stored one.
        let e = append(&store, event("reopened")).await;
        assert_eq!(e.seq, round);
        assert!(e.time >= first.time);
        store.close().await;
    }

    let mut conn = raw(&path).await;
    let rows = sqlx::query("SELECT version FROM schema_migrations")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    let versions: Vec<i64> = rows.iter().map(|r| r.get("version")).collect();
    assert_eq!(
        versions,
        [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
        "each migration applied exactly once"
    );
    let mode: String = sqlx::query("PRAGMA journal_mode")
        .fetch_one(&mut conn)
        .await
        .unwrap()
        .get(0);
    assert_eq!(mode, "wal");
    conn.close().await.unwrap();

    let store = SqliteStore::open(&path).await.unwrap();
    let events = all_events(&store).await;
    assert_eq!(events.len(), 3);
    assert_eq!(events[1].prev_hash, first.hash);
    assert!(verify_chain(events).first_break.is_none());
    store.close().await;
}

#[tokio::test]
async fn a_schema_newer_than_the_build_is_refused() {
    let (_dir, path, store) = fresh().await;
    store.close().await;
    let mut conn = raw(&path).await;
    sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES (999, 0)")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let rw = SqliteStore::open(&path).await;
    assert!(matches!(rw, Err(StoreError::Database(_))), "{rw:?}");
    let ro = SqliteStore::open_read_only(&path).await;
    assert!(matches!(ro, Err(StoreError::Database(_))), "{ro:?}");
}

#[tokio::test]
async fn read_only_sees_the_data_and_refuses_writes() {
    let (dir, path, store) = fresh().await;
    commit1(&store, Op::InsertAgent(agent("support-v2", &["s1"]))).await;
    for i in 0..5 {
        append(&store, event(&format!("e{i}"))).await;
    }

    // While the server still has it open…
    let ro = SqliteStore::open_read_only(&path).await.unwrap();
    assert_eq!(all_events(&ro).await.len(), 5);
    let r = ro.commit(vec![Op::Audit(event("forged"))]).await;
    assert!(matches!(r, Err(StoreError::Closed)), "{r:?}");
    ro.close().await;

    // …and after it closed.
    store.close().await;
    let ro = SqliteStore::open_read_only(&path).await.unwrap();
    ro.ping().await.unwrap();
    assert!(ro.agent("support-v2").await.unwrap().is_some());
    let events = all_events(&ro).await;
    assert_eq!(events.len(), 5);
    assert_eq!(verify_chain(events).checked, 5);
    let r = ro
        .commit(vec![Op::InsertAgent(agent("intruder", &[]))])
        .await;
    assert!(matches!(r, Err(StoreError::Closed)), "{r:?}");
    ro.close().await;

    let missing = dir.path().join("missing.db");
    let r = SqliteStore::open_read_only(&missing).await;
    assert!(matches!(r, Err(StoreError::NotFound(_))), "{r:?}");
    assert!(!missing.exists(), "a read-only open never creates the file");
}

#[tokio::test]
async fn a_database_from_before_checkpoints_reads_read_only_with_none() {
    let (_dir, path, store) = fresh().await;
    append(&store, event("e0")).await;
    store.close().await;
    // As a build from before migration 7 left it (read-only opens never migrate).
    let mut conn = raw(&path).await;
    sqlx::query("DROP TABLE audit_checkpoints")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("DELETE FROM schema_migrations WHERE version >= 7")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let ro = SqliteStore::open_read_only(&path).await.unwrap();
    assert!(ro.checkpoints().await.unwrap().is_empty());
    assert_eq!(verify_chain(all_events(&ro).await).checked, 1);
    ro.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_lands_queued_units_and_then_refuses() {
    let (_dir, path, store) = fresh().await;
    let store = Arc::new(store);
    let mut handles = Vec::new();
    for i in 0..100 {
        let store = Arc::clone(&store);
        handles.push(tokio::spawn(async move {
            store.commit(vec![Op::Audit(event(&format!("e{i}")))]).await
        }));
    }
    tokio::task::yield_now().await;
    store.close().await;
    store.close().await;

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
    let reopened = SqliteStore::open(&path).await.unwrap();
    let events = all_events(&reopened).await;
    acknowledged.sort();
    assert_eq!(
        events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        acknowledged
    );
    assert!(verify_chain(events).first_break.is_none());
    reopened.close().await;
}

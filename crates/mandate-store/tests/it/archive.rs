//! Audit retention: `Op::ArchiveAudit` deletes a stretch of the oldest events and records the
//! segment anchor in one unit; the chain head stays, so a restart keeps appending in order.

use super::{TestStore, all_events, append, event, fresh, now};
use mandate_core::audit::{AuditEvent, ChainVerifier, GENESIS_HASH};
use mandate_store::{AuditFilter, Op, SegmentRecord, Store, StoreError};

/// `n` events, the odd ones through two agents.
async fn log(store: &dyn Store, n: usize) -> Vec<AuditEvent> {
    let mut out = Vec::new();
    for i in 0..n {
        let mut e = event(&format!("e{i}"));
        if i % 2 == 1 {
            e.chain = vec!["support-v2".into(), "analytics-v1".into()];
        }
        out.push(append(store, e).await);
    }
    out
}

/// The record of archiving `events` (consecutive, as stored).
fn record(events: &[AuditEvent]) -> SegmentRecord {
    let (first, last) = (&events[0], &events[events.len() - 1]);
    SegmentRecord {
        first_seq: first.seq,
        last_seq: last.seq,
        first_prev_hash: first.prev_hash.clone(),
        last_hash: last.hash.clone(),
        count: events.len() as i64,
        sha256: "ab".repeat(32),
        file_name: format!("audit-{}-{}.jsonl", first.seq, last.seq),
        checkpoint: "a.b.c".into(),
        archived_at: now(),
    }
}

async fn archive(store: &dyn Store, through: i64, seg: SegmentRecord) -> Result<(), StoreError> {
    store
        .commit(vec![Op::ArchiveAudit {
            through_seq: through,
            segment: Box::new(seg),
        }])
        .await
        .map(|_| ())
}

fn refused(r: Result<(), StoreError>, words: &str) {
    match r {
        Err(StoreError::ArchiveRefused(m)) => assert!(m.contains(words), "{m}"),
        other => panic!("expected a refusal naming `{words}`, got {other:?}"),
    }
}

/// Rows of the audit events' agent index with `seq <= upto`, counted beside the store.
async fn agent_index_rows(store: &TestStore, upto: i64) -> i64 {
    store
        .scalar(format!(
            "SELECT COUNT(*) FROM audit_event_agents WHERE seq <= {upto}"
        ))
        .await
}

#[tokio::test]
async fn archiving_deletes_the_range_keeps_the_rest_and_a_restart_still_chains() {
    let mut store = fresh().await;
    let events = log(&*store, 6).await;
    // One record, compared with what is read back (`archived_at` is the second it was made).
    let segment = record(&events[..3]);
    archive(&*store, 3, segment.clone()).await.unwrap();

    let kept = all_events(&*store).await;
    assert_eq!(
        kept.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [4, 5, 6],
        "seq 1–3 left the database"
    );
    assert_eq!(store.audit_segments().await.unwrap(), [segment]);
    assert_eq!(
        agent_index_rows(&store, 3).await,
        0,
        "their agent index rows too"
    );
    // Queries answer for the kept events, by agent too.
    let by_agent = store
        .audit(&AuditFilter {
            agent: Some("analytics-v1".into()),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(by_agent.iter().map(|e| e.seq).collect::<Vec<_>>(), [4, 6]);
    // The kept log verifies from the anchor.
    let mut v = ChainVerifier::after_anchor(3, events[2].hash.clone(), Vec::new());
    for e in &kept {
        v.push(e);
    }
    assert!(v.report().is_ok());

    // The writer's head is untouched, and a restart reads it back from the last event.
    let e7 = append(&*store, event("after-archive")).await;
    assert_eq!(
        (e7.seq, e7.prev_hash.as_str()),
        (7, events[5].hash.as_str())
    );
    store.reopen().await;
    let e8 = append(&*store, event("after-restart")).await;
    assert_eq!((e8.seq, e8.prev_hash.as_str()), (8, e7.hash.as_str()));
    assert_eq!(store.audit_segments().await.unwrap().len(), 1);

    // The next segment continues the first.
    let kept = all_events(&*store).await;
    archive(&*store, 5, record(&kept[..2])).await.unwrap();
    let segs = store.audit_segments().await.unwrap();
    assert_eq!(
        segs.iter()
            .map(|s| (s.first_seq, s.last_seq))
            .collect::<Vec<_>>(),
        [(1, 3), (4, 5)]
    );
    assert_eq!(segs[1].first_prev_hash, segs[0].last_hash);
    store.close().await;
}

#[tokio::test]
async fn the_head_the_archived_and_mismatched_segments_are_refused_and_change_nothing() {
    let store = fresh().await;
    refused(
        archive(&*store, 1, record(&[append(&*store, event("only")).await])).await,
        "not before the chain head",
    );
    let events = {
        let mut all = vec![all_events(&*store).await.remove(0)];
        all.extend(log(&*store, 5).await);
        all
    };
    // The head (seq 6) and beyond.
    refused(
        archive(&*store, 6, record(&events)).await,
        "not before the chain head (seq 6)",
    );
    refused(archive(&*store, 9, record(&events)).await, "seq 6");
    // A segment that is not exactly the next stretch of the stored chain.
    refused(
        archive(&*store, 3, record(&events[1..3])).await,
        "the next events to archive are seq 1–3",
    );
    let mut wrong = record(&events[..3]);
    wrong.last_hash = events[3].hash.clone();
    refused(archive(&*store, 3, wrong).await, "hashes do not match");
    let mut wrong = record(&events[..3]);
    wrong.first_prev_hash = "f".repeat(64);
    refused(
        archive(&*store, 3, wrong).await,
        "does not continue the archive",
    );
    let mut wrong = record(&events[..3]);
    wrong.count = 4;
    refused(archive(&*store, 3, wrong).await, "the segment counts 4");
    assert_eq!(all_events(&*store).await, events, "nothing was deleted");
    assert!(store.audit_segments().await.unwrap().is_empty());

    // Once archived, the same range again is refused.
    archive(&*store, 3, record(&events[..3])).await.unwrap();
    refused(
        archive(&*store, 3, record(&events[..3])).await,
        "already archived",
    );
    refused(
        archive(&*store, 2, record(&events[..2])).await,
        "the archive ends at seq 3",
    );
    assert_eq!(all_events(&*store).await, events[3..]);
    store.close().await;
}

#[tokio::test]
async fn a_refused_archive_rolls_back_with_its_unit() {
    let store = fresh().await;
    let events = log(&*store, 4).await;
    // The archive lands, then a later op of the unit fails: nothing of the unit stays.
    let r = store
        .commit(vec![
            Op::ArchiveAudit {
                through_seq: 2,
                segment: Box::new(record(&events[..2])),
            },
            Op::SetTaskStatus {
                id: "no-such-task".into(),
                status: mandate_core::task::TaskStatus::Completed,
                at: now(),
            },
        ])
        .await;
    assert!(matches!(r, Err(StoreError::NotFound(_))), "{r:?}");
    assert_eq!(all_events(&*store).await, events);
    assert!(store.audit_segments().await.unwrap().is_empty());
    store.close().await;
}

#[tokio::test]
async fn an_agent_index_row_its_event_does_not_name_is_cleared_too() {
    let mut store = fresh().await;
    let events = log(&*store, 4).await;
    store.close().await;
    store
        .execute("INSERT INTO audit_event_agents (agent, seq) VALUES ('ghost', 2)".to_owned())
        .await;
    store.reopen().await;
    archive(&*store, 2, record(&events[..2])).await.unwrap();
    assert_eq!(agent_index_rows(&store, 2).await, 0);
    assert_eq!(all_events(&*store).await, events[2..]);
    store.close().await;
}

#[tokio::test]
async fn the_first_segment_starts_from_the_genesis_hash() {
    let store = fresh().await;
    let events = log(&*store, 3).await;
    assert_eq!(events[0].prev_hash, GENESIS_HASH);
    let mut seg = record(&events[..1]);
    seg.first_prev_hash = events[1].prev_hash.clone();
    refused(
        archive(&*store, 1, seg).await,
        "does not continue the archive",
    );
    archive(&*store, 1, record(&events[..1])).await.unwrap();
    // The newest stored event before a time is found among those that are left.
    let later = "9999-01-01T00:00:00.000Z";
    assert_eq!(store.audit_seq_before(later).await.unwrap(), Some(3));
    assert_eq!(
        store
            .audit_seq_before("2000-01-01T00:00:00.000Z")
            .await
            .unwrap(),
        None
    );
    store.close().await;
}

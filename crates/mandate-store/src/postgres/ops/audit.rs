//! The audit log's ops on PostgreSQL: appending events to the hash chain, checkpoints and
//! archiving a segment.

use mandate_core::audit::{AuditEvent, NewEvent};
use sqlx::{PgConnection, Row};

use crate::shared_ops::{self, ChainHead, json, now_rfc3339};
use crate::{Checkpoint, SegmentRecord, StoreError};

/// Seals `events` one after another onto the head and stores them with two statements whatever
/// their number (the events, then the agent index), each row set passed as arrays: a round trip
/// per row would be most of an append's cost. The writer uses it for a unit's consecutive audit
/// events (the gateway's batches); the outputs are the sealed events, in order.
pub(crate) async fn append_audits(
    conn: &mut PgConnection,
    head: &mut ChainHead,
    events: Vec<NewEvent>,
) -> Result<Vec<AuditEvent>, StoreError> {
    let sealed = head.seal_all(events.into_iter().map(storable).collect());
    store(conn, &sealed).await?;
    Ok(sealed)
}

/// Seals `new` after the head, stores it, and advances the head.
pub(super) async fn append_audit(
    conn: &mut PgConnection,
    head: &mut ChainHead,
    new: NewEvent,
) -> Result<AuditEvent, StoreError> {
    // Advancing the head first is safe: on error the writer restores the unit's starting head.
    let e = head.seal(storable(new), &now_rfc3339());
    store(conn, std::slice::from_ref(&e)).await?;
    Ok(e)
}

/// `new` with every NUL character of its text replaced by U+FFFD, before it is sealed: PostgreSQL
/// text cannot hold NUL, and an audit event must be written whatever a client sent (the hash
/// covers what is stored). JSON text (`detail`) already escapes it.
fn storable(mut new: NewEvent) -> NewEvent {
    fn clean(s: &mut String) {
        if s.contains('\0') {
            *s = s.replace('\0', "\u{fffd}");
        }
    }
    for s in [&mut new.kind, &mut new.reason, &mut new.detail] {
        clean(s);
    }
    for s in [
        &mut new.user,
        &mut new.task,
        &mut new.action,
        &mut new.resource,
        &mut new.request_id,
        &mut new.credential,
        &mut new.jti,
    ]
    .into_iter()
    .flatten()
    {
        clean(s);
    }
    new.chain
        .iter_mut()
        .chain(new.policy_ids.iter_mut())
        .for_each(clean);
    new
}

/// One column of a set of events, as the array bound for it.
fn column<'e, T>(events: &'e [AuditEvent], f: impl Fn(&'e AuditEvent) -> T) -> Vec<T> {
    events.iter().map(f).collect()
}

/// Inserts sealed events and their agent index rows.
async fn store(conn: &mut PgConnection, events: &[AuditEvent]) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let chains = events
        .iter()
        .map(|e| json(&e.chain))
        .collect::<Result<Vec<_>, _>>()?;
    let policy_ids = events
        .iter()
        .map(|e| json(&e.policy_ids))
        .collect::<Result<Vec<_>, _>>()?;
    sqlx::query(
        "INSERT INTO audit_events (seq, time, kind, \"user\", chain, task, action, resource,
            decision, reason, policy_ids, request_id, credential, jti, detail, prev_hash, hash)
         SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[],
            $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[],
            $13::text[], $14::text[], $15::text[], $16::text[], $17::text[])",
    )
    .bind(column(events, |e| e.seq))
    .bind(column(events, |e| e.time.as_str()))
    .bind(column(events, |e| e.kind.as_str()))
    .bind(column(events, |e| e.user.as_deref()))
    .bind(chains)
    .bind(column(events, |e| e.task.as_deref()))
    .bind(column(events, |e| e.action.as_deref()))
    .bind(column(events, |e| e.resource.as_deref()))
    .bind(column(events, |e| e.decision.as_str()))
    .bind(column(events, |e| e.reason.as_str()))
    .bind(policy_ids)
    .bind(column(events, |e| e.request_id.as_deref()))
    .bind(column(events, |e| e.credential.as_deref()))
    .bind(column(events, |e| e.jti.as_deref()))
    .bind(column(events, |e| e.detail.as_str()))
    .bind(column(events, |e| e.prev_hash.as_str()))
    .bind(column(events, |e| e.hash.as_str()))
    .execute(&mut *conn)
    .await?;
    let rows = shared_ops::agent_rows(events);
    if !rows.is_empty() {
        let (agents, seqs): (Vec<&str>, Vec<i64>) = rows.into_iter().unzip();
        sqlx::query(
            "INSERT INTO audit_event_agents (agent, seq)
             SELECT * FROM UNNEST($1::text[], $2::bigint[])",
        )
        .bind(agents)
        .bind(seqs)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Stores a signed checkpoint of the chain head.
pub(super) async fn insert_checkpoint(
    conn: &mut PgConnection,
    cp: &Checkpoint,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO audit_checkpoints (seq, hash, time, jws) VALUES ($1, $2, $3, $4)")
        .bind(cp.seq)
        .bind(&cp.hash)
        .bind(&cp.time)
        .bind(&cp.jws)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Deletes events `segment.first_seq..=through_seq` and records the segment, after checking
/// that the segment is exactly the next stretch of the stored chain (see
/// [`shared_ops::archive_start`]). The chain head is never archived, so the next batch's head,
/// read from the last stored event, stays.
pub(super) async fn archive_audit(
    conn: &mut PgConnection,
    head: &ChainHead,
    through_seq: i64,
    seg: &SegmentRecord,
) -> Result<(), StoreError> {
    let previous = sqlx::query(
        "SELECT last_seq, last_hash FROM audit_segments ORDER BY last_seq DESC LIMIT 1",
    )
    .fetch_optional(&mut *conn)
    .await?
    .map(|r| Ok::<_, sqlx::Error>((r.try_get("last_seq")?, r.try_get("last_hash")?)))
    .transpose()?;
    let start = shared_ops::archive_start(head.seq, previous, through_seq, seg)?;
    let ends = sqlx::query(
        "SELECT (SELECT prev_hash FROM audit_events WHERE seq = $1) AS first_prev,
                (SELECT hash FROM audit_events WHERE seq = $2) AS last",
    )
    .bind(start)
    .bind(through_seq)
    .fetch_one(&mut *conn)
    .await?;
    let first_prev: Option<String> = ends.try_get("first_prev")?;
    let last: Option<String> = ends.try_get("last")?;
    shared_ops::check_archive_hashes(
        start,
        through_seq,
        seg,
        first_prev.as_deref(),
        last.as_deref(),
    )?;
    // The agent index first (its rows reference the events), found by its `seq` index.
    sqlx::query("DELETE FROM audit_event_agents WHERE seq BETWEEN $1 AND $2")
        .bind(start)
        .bind(through_seq)
        .execute(&mut *conn)
        .await?;
    let deleted = sqlx::query("DELETE FROM audit_events WHERE seq BETWEEN $1 AND $2")
        .bind(start)
        .bind(through_seq)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    shared_ops::check_archive_count(start, through_seq, deleted, seg)?;
    sqlx::query(
        "INSERT INTO audit_segments (first_seq, last_seq, first_prev_hash, last_hash, count,
            sha256, file_name, checkpoint, archived_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(seg.first_seq)
    .bind(seg.last_seq)
    .bind(&seg.first_prev_hash)
    .bind(&seg.last_hash)
    .bind(seg.count)
    .bind(&seg.sha256)
    .bind(&seg.file_name)
    .bind(&seg.checkpoint)
    .bind(seg.archived_at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

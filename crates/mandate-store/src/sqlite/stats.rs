//! Aggregate reads for reports (`mandate compliance`): counts over a window, computed by SQLite
//! instead of reading every event.

use mandate_core::compliance::{ApprovalCount, AuditCounts};
use sqlx::SqliteConnection;
use sqlx::sqlite::SqlitePool;

use crate::StoreError;
use crate::rows::{self, count};

/// Audit events with `time` ≥ `since`, grouped by kind, decision and refusal code, plus the
/// distinct users and agents they name and the extent of the whole log.
///
/// A refusal's code is the start of its reason up to the first `:` when that is a lowercase
/// word of at most 40 characters (`invalid_scope: …` → `invalid_scope`).
pub async fn audit_counts(pool: &SqlitePool, since: &str) -> Result<AuditCounts, StoreError> {
    // One read transaction: every number describes the same log.
    let mut tx = pool.begin().await?;
    let conn: &mut SqliteConnection = &mut tx;
    // Times never go backwards along the chain (the writer stamps each event no earlier than the
    // one before it), so the window is the seq range from its first event.
    // (`ORDER BY time, seq LIMIT 1` is one step into the time index; `MIN(seq)` would scan.)
    let first_seq: Option<i64> = sqlx::query_scalar(
        "SELECT seq FROM audit_events WHERE time >= ? ORDER BY time, seq LIMIT 1",
    )
    .bind(since)
    .fetch_optional(&mut *conn)
    .await?;
    let first_seq = first_seq.unwrap_or(i64::MAX);
    let groups = sqlx::query(
        "SELECT kind, decision, code, COUNT(*) AS n, COUNT(task) AS with_task,
                SUM(CASE WHEN user IS NOT NULL OR chain <> '[]' THEN 1 ELSE 0 END) AS with_principal
         FROM (
             SELECT kind, decision, task, user, chain,
                    CASE WHEN decision = 'deny'
                              AND instr(reason, ':') BETWEEN 2 AND 41
                              AND substr(reason, 1, instr(reason, ':') - 1) NOT GLOB '*[^a-z_]*'
                         THEN substr(reason, 1, instr(reason, ':') - 1) END AS code
             FROM audit_events WHERE seq >= ?
         )
         GROUP BY kind, decision, code
         ORDER BY kind, decision, code",
    )
    .bind(first_seq)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(rows::event_count)
    .collect::<Result<Vec<_>, StoreError>>()?;
    let distinct_users: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM (SELECT DISTINCT user FROM audit_events
                               WHERE seq >= ? AND user IS NOT NULL)",
    )
    .bind(first_seq)
    .fetch_one(&mut *conn)
    .await?;
    // Chains only ever name agents that proved themselves, i.e. registered ones: one index
    // lookup per agent instead of a walk over every (agent, event) pair.
    let distinct_agents: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM agents a WHERE EXISTS (
             SELECT 1 FROM audit_event_agents x WHERE x.agent = a.id AND x.seq >= ?)",
    )
    .bind(first_seq)
    .fetch_one(&mut *conn)
    .await?;
    let first_time: Option<String> =
        sqlx::query_scalar("SELECT time FROM audit_events ORDER BY seq LIMIT 1")
            .fetch_optional(&mut *conn)
            .await?;
    let last_seq: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM audit_events")
        .fetch_one(&mut *conn)
        .await?;
    let checkpoints: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_checkpoints")
        .fetch_one(&mut *conn)
        .await?;
    let latest_checkpoint =
        sqlx::query("SELECT seq, time FROM audit_checkpoints ORDER BY id DESC LIMIT 1")
            .fetch_optional(&mut *conn)
            .await?
            .as_ref()
            .map(rows::checkpoint_fact)
            .transpose()?;
    tx.commit().await?;
    Ok(AuditCounts {
        groups,
        distinct_users: count(distinct_users),
        distinct_agents: count(distinct_agents),
        first_time,
        last_seq,
        checkpoints: count(checkpoints),
        latest_checkpoint,
    })
}

/// Approvals created at or after `since` (seconds), by kind and status; a pending approval
/// whose expiry is at or before `now` counts as `expired`.
pub async fn approval_counts(
    pool: &SqlitePool,
    since: i64,
    now: i64,
) -> Result<Vec<ApprovalCount>, StoreError> {
    sqlx::query(
        "SELECT kind,
                CASE WHEN status = 'pending' AND expires_at <= ?2 THEN 'expired' ELSE status END
                    AS st,
                COUNT(*) AS n
         FROM approvals WHERE created_at >= ?1
         GROUP BY kind, st ORDER BY kind, st",
    )
    .bind(since)
    .bind(now)
    .fetch_all(pool)
    .await?
    .iter()
    .map(rows::approval_count)
    .collect()
}

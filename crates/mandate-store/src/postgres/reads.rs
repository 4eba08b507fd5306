//! Reads: one function per read method of [`crate::Store`], on the pool, answering exactly as
//! the SQLite store does (same order, filters, limits and omissions).
//!
//! Text is ordered `COLLATE "C"` (byte order, as SQLite's `BINARY`), whatever the database's
//! default collation. SQLite breaks ties of equal times by `rowid` (insertion order), which
//! PostgreSQL tables do not have: ties are broken by the primary key instead, or by the
//! insertion-ordered column where there is one (`seq`, `ord`, `id` of a `BIGSERIAL`).
//!
//! A read made of several statements that must agree (an agent and its keys) runs in one
//! `REPEATABLE READ READ ONLY` transaction: one snapshot for all its statements.

use futures_util::TryStreamExt;
use mandate_core::agent::Agent;
use mandate_core::audit::AuditEvent;
use mandate_core::revocation::RevocationRecord;
use mandate_core::task::{Task, TaskStep, TokenRecord};
use sqlx::postgres::{PgPool, PgRow};
use sqlx::{Postgres, QueryBuilder, Transaction};

use super::rows;
use crate::{
    AdminCredential, ApprovalFilter, AuditFilter, Checkpoint, RevocationEntry, RevokedToken,
    SecretInfo, SegmentRecord, SsfQueued, SsfStream, StoreError, StoredApproval, StoredSecret,
    StoredSigningKey, TaskFilter, limits,
};

pub(super) use super::posture::{justifications, review, reviews, usage};
pub(super) use super::stats::{approval_counts, audit_counts};

/// A read-only transaction whose statements all see one snapshot of the database.
pub(super) async fn snapshot(pool: &PgPool) -> Result<Transaction<'static, Postgres>, StoreError> {
    Ok(pool
        .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await?)
}

/// Runs `sql` with at most one text parameter (`$1`) and decodes every row.
async fn fetch_all_by<T>(
    pool: &PgPool,
    sql: &'static str,
    param: Option<&str>,
    decode: fn(&PgRow) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let mut q = sqlx::query(sql);
    if let Some(p) = param {
        q = q.bind(p);
    }
    q.fetch_all(pool).await?.iter().map(decode).collect()
}

/// Runs `sql` with one text parameter (`$1`) and decodes the row, if there is one.
async fn fetch_one_by<T>(
    pool: &PgPool,
    sql: &'static str,
    param: &str,
    decode: fn(&PgRow) -> Result<T, StoreError>,
) -> Result<Option<T>, StoreError> {
    sqlx::query(sql)
        .bind(param)
        .fetch_optional(pool)
        .await?
        .as_ref()
        .map(decode)
        .transpose()
}

/// Every agent with its keys, ordered by id.
pub(crate) async fn agents(pool: &PgPool) -> Result<Vec<Agent>, StoreError> {
    let mut tx = snapshot(pool).await?;
    let agents = sqlx::query(r#"SELECT * FROM agents ORDER BY id COLLATE "C""#)
        .fetch_all(&mut *tx)
        .await?;
    let keys = sqlx::query("SELECT * FROM agent_keys ORDER BY agent_id, ord")
        .fetch_all(&mut *tx)
        .await?;
    tx.commit().await?;
    // The agents are in byte order, as the merge expects; each agent's keys in `ord` order.
    rows::agents_with_keys(&agents, &keys)
}

/// One agent with its keys.
pub(crate) async fn agent(pool: &PgPool, id: &str) -> Result<Option<Agent>, StoreError> {
    let mut tx = snapshot(pool).await?;
    let row = sqlx::query("SELECT * FROM agents WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
    let Some(row) = row else {
        tx.commit().await?;
        return Ok(None);
    };
    let keys = sqlx::query("SELECT * FROM agent_keys WHERE agent_id = $1 ORDER BY ord")
        .bind(id)
        .fetch_all(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(rows::agents_with_keys(&[row], &keys)?.pop())
}

/// One task.
pub(crate) async fn task(pool: &PgPool, id: &str) -> Result<Option<Task>, StoreError> {
    fetch_one_by(pool, "SELECT * FROM tasks WHERE id = $1", id, rows::task).await
}

/// One token record.
pub(crate) async fn token(pool: &PgPool, jti: &str) -> Result<Option<TokenRecord>, StoreError> {
    fetch_one_by(
        pool,
        "SELECT * FROM tokens WHERE jti = $1",
        jti,
        rows::token,
    )
    .await
}

/// Tokens of a task, oldest first.
pub(crate) async fn tokens_of_task(
    pool: &PgPool,
    task: &str,
) -> Result<Vec<TokenRecord>, StoreError> {
    fetch_all_by(
        pool,
        r#"SELECT * FROM tokens WHERE task = $1 ORDER BY iat, jti COLLATE "C""#,
        Some(task),
        rows::token,
    )
    .await
}

/// Every signing key, oldest first.
pub(crate) async fn signing_keys(pool: &PgPool) -> Result<Vec<StoredSigningKey>, StoreError> {
    fetch_all_by(
        pool,
        r#"SELECT * FROM signing_keys ORDER BY created_at, kid COLLATE "C""#,
        None,
        rows::signing_key,
    )
    .await
}

/// Every admin credential, oldest first.
pub(crate) async fn admin_credentials(pool: &PgPool) -> Result<Vec<AdminCredential>, StoreError> {
    fetch_all_by(
        pool,
        r#"SELECT * FROM admin_credentials ORDER BY created_at, id COLLATE "C""#,
        None,
        rows::admin_credential,
    )
    .await
}

/// Every revocation root, oldest first (`seq` is their insertion order).
pub(crate) async fn revocations(pool: &PgPool) -> Result<Vec<RevocationRecord>, StoreError> {
    fetch_all_by(
        pool,
        "SELECT * FROM revocations ORDER BY at, seq",
        None,
        rows::revocation,
    )
    .await
}

/// Revocation feed entries after `after`, leaving out tokens expired before `now`.
pub(crate) async fn revocation_feed(
    pool: &PgPool,
    after: i64,
    limit: u32,
    now: i64,
) -> Result<Vec<RevocationEntry>, StoreError> {
    sqlx::query("SELECT * FROM revocations WHERE seq > $1 ORDER BY seq LIMIT $2")
        .bind(after)
        .bind(limits::batch(limit))
        .fetch_all(pool)
        .await?
        .iter()
        .map(|row| rows::revocation_entry(row, now))
        .collect()
}

/// The highest revocation feed sequence number (0 if there is none).
pub(crate) async fn revocation_head(pool: &PgPool) -> Result<i64, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM revocations")
            .fetch_one(pool)
            .await?,
    )
}

/// Calls `each` with every revoked token not expired at `now`, streamed.
pub(crate) async fn revoked_tokens(
    pool: &PgPool,
    now: i64,
    each: &mut (dyn FnMut(RevokedToken) + Send),
) -> Result<(), StoreError> {
    let mut rows =
        sqlx::query("SELECT jti, exp FROM tokens WHERE revoked_at IS NOT NULL AND exp >= $1")
            .bind(now)
            .fetch(pool);
    while let Some(row) = rows.try_next().await? {
        each(rows::revoked_token(&row)?);
    }
    Ok(())
}

/// Audit events matching `filter`.
pub(crate) async fn audit(
    pool: &PgPool,
    filter: &AuditFilter,
) -> Result<Vec<AuditEvent>, StoreError> {
    audit_query(filter)
        .build()
        .fetch_all(pool)
        .await?
        .iter()
        .map(rows::event)
        .collect()
}

/// Audit events after `after`, ascending, at most `limit`.
pub(crate) async fn audit_after(
    pool: &PgPool,
    after: i64,
    limit: u32,
) -> Result<Vec<AuditEvent>, StoreError> {
    sqlx::query("SELECT * FROM audit_events WHERE seq > $1 ORDER BY seq LIMIT $2")
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await?
        .iter()
        .map(rows::event)
        .collect()
}

/// Whether the database answers.
pub(crate) async fn ping(pool: &PgPool) -> Result<(), StoreError> {
    sqlx::query("SELECT 1").fetch_one(pool).await?;
    Ok(())
}

// Shared Signals streams

/// Every Shared Signals stream, oldest first.
pub(crate) async fn ssf_streams(pool: &PgPool) -> Result<Vec<SsfStream>, StoreError> {
    fetch_all_by(
        pool,
        r#"SELECT * FROM ssf_streams ORDER BY created_at, id COLLATE "C""#,
        None,
        rows::ssf_stream,
    )
    .await
}

/// One Shared Signals stream.
pub(crate) async fn ssf_stream(pool: &PgPool, id: &str) -> Result<Option<SsfStream>, StoreError> {
    fetch_one_by(
        pool,
        "SELECT * FROM ssf_streams WHERE id = $1",
        id,
        rows::ssf_stream,
    )
    .await
}

/// The first `limit` SETs of a stream's outbox.
pub(crate) async fn ssf_outbox(
    pool: &PgPool,
    stream: &str,
    limit: u32,
) -> Result<Vec<SsfQueued>, StoreError> {
    sqlx::query("SELECT * FROM ssf_outbox WHERE stream_id = $1 ORDER BY seq LIMIT $2")
        .bind(stream)
        .bind(limits::batch(limit))
        .fetch_all(pool)
        .await?
        .iter()
        .map(rows::ssf_queued)
        .collect()
}

/// How many SETs wait in a stream's outbox.
pub(crate) async fn ssf_outbox_len(pool: &PgPool, stream: &str) -> Result<i64, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT COUNT(*) FROM ssf_outbox WHERE stream_id = $1")
            .bind(stream)
            .fetch_one(pool)
            .await?,
    )
}

// Task steps and outcomes

/// The steps of a task, by number.
pub(crate) async fn task_steps(pool: &PgPool, task: &str) -> Result<Vec<TaskStep>, StoreError> {
    fetch_all_by(
        pool,
        "SELECT * FROM task_steps WHERE task = $1 ORDER BY seq",
        Some(task),
        rows::task_step,
    )
    .await
}

/// Tasks matching `filter`, newest first.
pub(crate) async fn tasks(pool: &PgPool, filter: &TaskFilter) -> Result<Vec<Task>, StoreError> {
    let mut q = QueryBuilder::<Postgres>::new("SELECT * FROM tasks WHERE TRUE");
    if let Some(agent) = &filter.agent {
        q.push(" AND agent = ").push_bind(agent.clone());
    }
    if let Some(user) = &filter.user {
        q.push(r#" AND "user" = "#).push_bind(user.clone());
    }
    if let Some(status) = filter.status {
        q.push(" AND status = ").push_bind(status.as_str());
    }
    q.push(r#" ORDER BY created_at DESC, id COLLATE "C" DESC LIMIT "#)
        .push_bind(limits::tasks(filter));
    q.build()
        .fetch_all(pool)
        .await?
        .iter()
        .map(rows::task)
        .collect()
}

/// Every revocation that reached a task, oldest first, each with its whole list of tokens.
pub(crate) async fn task_revocations(
    pool: &PgPool,
    task: &str,
) -> Result<Vec<RevocationEntry>, StoreError> {
    sqlx::query(
        "SELECT r.* FROM revocations r
         WHERE (r.kind = 'task' AND r.target = $1)
            OR (r.kind = 'token' AND r.target IN (SELECT jti FROM tokens WHERE task = $1))
            OR EXISTS (
                SELECT 1 FROM jsonb_array_elements(r.ended::jsonb) e
                JOIN tokens t ON t.jti = e ->> 'jti'
                WHERE t.task = $1
            )
         ORDER BY r.seq",
    )
    .bind(task)
    .fetch_all(pool)
    .await?
    .iter()
    .map(|row| rows::revocation_entry(row, i64::MIN))
    .collect()
}

// Gateway secrets

/// Every gateway secret, without its sealed value, ordered by name.
pub(crate) async fn secrets(pool: &PgPool) -> Result<Vec<SecretInfo>, StoreError> {
    fetch_all_by(
        pool,
        r#"SELECT name, description, created_at, updated_at, created_by
           FROM secrets ORDER BY name COLLATE "C""#,
        None,
        rows::secret_info,
    )
    .await
}

/// One gateway secret, with its sealed value.
pub(crate) async fn secret(pool: &PgPool, name: &str) -> Result<Option<StoredSecret>, StoreError> {
    fetch_one_by(
        pool,
        "SELECT * FROM secrets WHERE name = $1",
        name,
        rows::secret,
    )
    .await
}

// Audit checkpoints

/// Every audit checkpoint, in the order they were written.
pub(crate) async fn checkpoints(pool: &PgPool) -> Result<Vec<Checkpoint>, StoreError> {
    fetch_all_by(
        pool,
        "SELECT seq, hash, time, jws FROM audit_checkpoints ORDER BY id",
        None,
        rows::checkpoint,
    )
    .await
}

// Audit retention

/// Every archived segment of the audit log, oldest first.
pub(crate) async fn audit_segments(pool: &PgPool) -> Result<Vec<SegmentRecord>, StoreError> {
    fetch_all_by(
        pool,
        "SELECT * FROM audit_segments ORDER BY first_seq",
        None,
        rows::segment,
    )
    .await
}

/// The `seq` of the newest stored audit event whose `time` is before `time`.
pub(crate) async fn audit_seq_before(pool: &PgPool, time: &str) -> Result<Option<i64>, StoreError> {
    // Times never go backwards along the chain, so the newest by time is the newest by seq.
    Ok(sqlx::query_scalar(
        "SELECT seq FROM audit_events WHERE time < $1 ORDER BY time DESC, seq DESC LIMIT 1",
    )
    .bind(time)
    .fetch_optional(pool)
    .await?)
}

// Approvals

/// One approval, with its payload.
pub(crate) async fn approval(
    pool: &PgPool,
    id: &str,
) -> Result<Option<StoredApproval>, StoreError> {
    fetch_one_by(
        pool,
        "SELECT * FROM approvals WHERE id = $1",
        id,
        rows::approval,
    )
    .await
}

/// Approvals matching `filter`, newest first, without their payloads.
pub(crate) async fn approvals(
    pool: &PgPool,
    filter: &ApprovalFilter,
) -> Result<Vec<StoredApproval>, StoreError> {
    // Not the payload: a held write's is its whole request, body included.
    let mut q = QueryBuilder::<Postgres>::new(
        r#"SELECT id, kind, agent, "user", status, created_at, expires_at, record,
                  '' AS payload, dispatch, outcome, last_poll, poll_interval
           FROM approvals WHERE TRUE"#,
    );
    if let Some(status) = filter.status {
        q.push(" AND status = ").push_bind(status.as_str());
    }
    if let Some(agent) = &filter.agent {
        q.push(" AND agent = ").push_bind(agent.clone());
    }
    if let Some(user) = &filter.user {
        q.push(r#" AND "user" = "#).push_bind(user.clone());
    }
    if let Some(kind) = &filter.kind {
        q.push(" AND kind = ").push_bind(kind.clone());
    }
    if filter.undispatched {
        q.push(" AND status = 'approved' AND dispatch = 'not_sent'");
    }
    q.push(r#" ORDER BY created_at DESC, id COLLATE "C" DESC LIMIT "#)
        .push_bind(limits::approvals(filter));
    q.build()
        .fetch_all(pool)
        .await?
        .iter()
        .map(rows::approval)
        .collect()
}

/// The first stored event at or after a time: one step into the time index (`ORDER BY time,
/// seq LIMIT 1`; `MIN(seq) … WHERE time >= $n` would scan the range), or past every event.
const FIRST_SEQ_AT: &str = "COALESCE((SELECT seq FROM audit_events WHERE time >= ";
/// The end of [`FIRST_SEQ_AT`], after its bound time.
const FIRST_SEQ_AT_END: &str = " ORDER BY time, seq LIMIT 1), 9223372036854775807)";

/// The SQL of an audit query. Only fixed fragments are written into the text; every value is a
/// bound parameter.
///
/// The writer never stamps an event earlier than the one before it, so times are ordered by seq
/// and a time range is a seq range. SQLite uses that for the agent filter; PostgreSQL needs it
/// for the other time filters too: its plans for a prepared statement are made without the
/// bound times, and a bare `time >= $n … ORDER BY seq LIMIT $m` is then walked along the primary
/// key from the first event of the log. Not with a user, resource or task filter: their indexes
/// find the events directly (the first two by time), and a seq range next to them only tempts
/// the planner into intersecting it. The time comparisons stay, so the answer is SQLite's.
fn audit_query(filter: &AuditFilter) -> QueryBuilder<Postgres> {
    let mut q = QueryBuilder::<Postgres>::new("SELECT * FROM audit_events WHERE TRUE");
    let equals: [(&'static str, &Option<String>); 6] = [
        (r#" AND "user" = "#, &filter.user),
        (" AND task = ", &filter.task),
        (" AND action = ", &filter.action),
        (" AND resource = ", &filter.resource),
        (" AND decision = ", &filter.decision),
        (" AND kind = ", &filter.kind),
    ];
    for (clause, value) in equals {
        if let Some(v) = value {
            q.push(clause).push_bind(v.clone());
        }
    }
    let seq_range = |q: &mut QueryBuilder<Postgres>| {
        if let Some(since) = &filter.since {
            q.push(" AND seq >= ")
                .push(FIRST_SEQ_AT)
                .push_bind(since.clone())
                .push(FIRST_SEQ_AT_END);
        }
        if let Some(until) = &filter.until {
            q.push(" AND seq < ")
                .push(FIRST_SEQ_AT)
                .push_bind(until.clone())
                .push(FIRST_SEQ_AT_END);
        }
    };
    if let Some(agent) = &filter.agent {
        // An agent appears in a large share of the log: walk only its seqs of the time range,
        // in the (agent, seq) key. PostgreSQL does not carry a range on the outer `seq` into
        // the subquery: `after_seq` is said there too.
        q.push(" AND seq IN (SELECT seq FROM audit_event_agents WHERE agent = ")
            .push_bind(agent.clone());
        seq_range(&mut q);
        if let Some(after) = filter.after_seq {
            q.push(" AND seq > ").push_bind(after);
        }
        q.push(")");
    } else if filter.user.is_none() && filter.resource.is_none() && filter.task.is_none() {
        seq_range(&mut q);
    }
    // With an agent, the times are checked event by event (`IS TRUE` keeps the planner from
    // walking the time index's whole range instead of the agent's seqs); without, the time
    // index is one way in.
    let (open, close) = if filter.agent.is_some() {
        ("(", ") IS TRUE")
    } else {
        ("", "")
    };
    if let Some(since) = &filter.since {
        q.push(" AND ")
            .push(open)
            .push("time >= ")
            .push_bind(since.clone())
            .push(close);
    }
    if let Some(until) = &filter.until {
        q.push(" AND ")
            .push(open)
            .push("time < ")
            .push_bind(until.clone())
            .push(close);
    }
    if let Some(after) = filter.after_seq {
        q.push(" AND seq > ").push_bind(after);
    }
    q.push(if filter.newest_first {
        " ORDER BY seq DESC"
    } else {
        " ORDER BY seq ASC"
    });
    q.push(" LIMIT ").push_bind(limits::audit(filter));
    q
}

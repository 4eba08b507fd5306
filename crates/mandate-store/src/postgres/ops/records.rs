//! The ops on PostgreSQL that keep records beside the token path: Shared Signals streams and
//! their outboxes, gateway secrets, approvals, justifications and access reviews.

use mandate_core::approval::Decided;
use mandate_core::posture::{Review, ReviewStatus};
use sqlx::PgConnection;

use crate::shared_ops::{self, conflict, done, found, json};
use crate::{Op, OpOutput, SsfSet, SsfStream, StoreError, StoredApproval, StoredSecret};

/// Applies the ops [`super::apply`] hands over (those not about tokens, tasks, agents, keys or
/// the audit log).
pub(super) async fn apply(conn: &mut PgConnection, op: Op) -> Result<OpOutput, StoreError> {
    match op {
        // Shared Signals streams
        Op::InsertSsfStream(st) => insert_ssf_stream(conn, &st).await.map(done),
        Op::UpdateSsfStream(st) => update_ssf_stream(conn, &st).await,
        Op::DeleteSsfStream { id } => {
            sqlx::query("DELETE FROM ssf_outbox WHERE stream_id = $1")
                .bind(&id)
                .execute(&mut *conn)
                .await?;
            let r = sqlx::query("DELETE FROM ssf_streams WHERE id = $1")
                .bind(&id)
                .execute(&mut *conn)
                .await?;
            found(r.rows_affected(), || format!("stream `{id}`"))
        }
        Op::EnqueueSsf {
            stream,
            sets,
            cursor,
            at,
        } => enqueue_ssf(conn, &stream, &sets, cursor, at)
            .await
            .map(done),
        Op::AckSsf { stream, jtis } => {
            if !jtis.is_empty() {
                sqlx::query("DELETE FROM ssf_outbox WHERE stream_id = $1 AND jti = ANY($2)")
                    .bind(&stream)
                    .bind(&jtis)
                    .execute(&mut *conn)
                    .await?;
            }
            Ok(OpOutput::Done)
        }
        Op::PurgeSsfOutbox { stream } => {
            sqlx::query("DELETE FROM ssf_outbox WHERE stream_id = $1")
                .bind(&stream)
                .execute(&mut *conn)
                .await?;
            Ok(OpOutput::Done)
        }
        Op::SetSsfError { stream, error, at } => {
            sqlx::query("UPDATE ssf_streams SET last_error = $1, last_error_at = $2 WHERE id = $3")
                .bind(&error)
                .bind(error.as_ref().map(|_| at))
                .bind(&stream)
                .execute(&mut *conn)
                .await?;
            Ok(OpOutput::Done)
        }
        // Gateway secrets
        Op::PutSecret(secret) => put_secret(conn, &secret).await,
        Op::DeleteSecret { name } => {
            let r = sqlx::query("DELETE FROM secrets WHERE name = $1")
                .bind(&name)
                .execute(&mut *conn)
                .await?;
            found(r.rows_affected(), || format!("secret `{name}`"))
        }
        // Approvals
        Op::InsertApproval(a) => insert_approval(conn, &a).await.map(done),
        Op::DecideApproval { id, decided } => decide_approval(conn, &id, decided).await.map(done),
        Op::ClaimApproval { id } => claim_approval(conn, &id).await.map(OpOutput::Claimed),
        Op::FinishApproval { id, outcome } => {
            let r =
                sqlx::query("UPDATE approvals SET dispatch = 'sent', outcome = $1 WHERE id = $2")
                    .bind(&outcome)
                    .bind(&id)
                    .execute(&mut *conn)
                    .await?;
            found(r.rows_affected(), || format!("approval `{id}`"))
        }
        Op::PollApproval { id, at, interval } => {
            let r = sqlx::query(
                "UPDATE approvals SET last_poll = $1, poll_interval = $2 WHERE id = $3",
            )
            .bind(at)
            .bind(interval)
            .bind(&id)
            .execute(&mut *conn)
            .await?;
            found(r.rows_affected(), || format!("approval `{id}`"))
        }
        // Posture and access reviews
        Op::SetJustification {
            agent,
            pattern,
            text,
            by,
            at,
        } => set_justification(conn, &agent, &pattern, text.as_deref(), &by, at).await,
        Op::InsertReview(r) => insert_review(conn, &r).await,
        Op::DecideReview {
            id,
            status,
            by,
            at,
            removed,
            note,
        } => {
            let answer = Answer {
                id: &id,
                status,
                by: &by,
                at,
                removed: &removed,
                note: note.as_deref(),
            };
            decide_review(conn, answer).await
        }
        // The rest is applied by `super::apply` and never handed over.
        _ => Err(StoreError::Database(
            "an op was handed to the wrong PostgreSQL applier".to_owned(),
        )),
    }
}

// Shared Signals streams

async fn insert_ssf_stream(conn: &mut PgConnection, st: &SsfStream) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO ssf_streams (id, aud, method, endpoint_url, authorization_header,
            events_requested, description, status, reason, removed_subjects, cursor, last_error,
            last_error_at, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
    )
    .bind(&st.id)
    .bind(json(&st.aud)?)
    .bind(&st.method)
    .bind(&st.endpoint_url)
    .bind(&st.authorization_header)
    .bind(st.events_requested.as_ref().map(json).transpose()?)
    .bind(&st.description)
    .bind(&st.status)
    .bind(&st.reason)
    .bind(json(&st.removed_subjects)?)
    .bind(st.cursor)
    .bind(&st.last_error)
    .bind(st.last_error_at)
    .bind(st.created_at)
    .bind(st.updated_at)
    .execute(&mut *conn)
    .await
    .map_err(conflict(|| format!("stream `{}`", st.id)))?;
    Ok(())
}

/// Replaces what the receiver and the status endpoint control; the cursor and the delivery
/// record belong to the dispatcher.
async fn update_ssf_stream(
    conn: &mut PgConnection,
    st: &SsfStream,
) -> Result<OpOutput, StoreError> {
    let r = sqlx::query(
        "UPDATE ssf_streams SET aud = $1, method = $2, endpoint_url = $3,
            authorization_header = $4, events_requested = $5, description = $6, status = $7,
            reason = $8, removed_subjects = $9, updated_at = $10
         WHERE id = $11",
    )
    .bind(json(&st.aud)?)
    .bind(&st.method)
    .bind(&st.endpoint_url)
    .bind(&st.authorization_header)
    .bind(st.events_requested.as_ref().map(json).transpose()?)
    .bind(&st.description)
    .bind(&st.status)
    .bind(&st.reason)
    .bind(json(&st.removed_subjects)?)
    .bind(st.updated_at)
    .bind(&st.id)
    .execute(&mut *conn)
    .await?;
    found(r.rows_affected(), || format!("stream `{}`", st.id))
}

/// Appends `sets` to the outbox of `stream` and moves its cursor forward to `cursor`.
async fn enqueue_ssf(
    conn: &mut PgConnection,
    stream: &str,
    sets: &[SsfSet],
    cursor: Option<i64>,
    at: i64,
) -> Result<(), StoreError> {
    let exists = sqlx::query("SELECT 1 FROM ssf_streams WHERE id = $1")
        .bind(stream)
        .fetch_optional(&mut *conn)
        .await?
        .is_some();
    if !exists {
        return Err(StoreError::NotFound(format!("stream `{stream}`")));
    }
    // One statement per SET, so that a duplicate is named in the conflict.
    for set in sets {
        sqlx::query(
            "INSERT INTO ssf_outbox (stream_id, jti, claims, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(stream)
        .bind(&set.jti)
        .bind(&set.claims)
        .bind(at)
        .execute(&mut *conn)
        .await
        .map_err(conflict(|| {
            format!("SET `{}` of stream `{stream}`", set.jti)
        }))?;
    }
    if let Some(cursor) = cursor {
        sqlx::query("UPDATE ssf_streams SET cursor = GREATEST(cursor, $1) WHERE id = $2")
            .bind(cursor)
            .bind(stream)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

// Gateway secrets

async fn put_secret(conn: &mut PgConnection, s: &StoredSecret) -> Result<OpOutput, StoreError> {
    let replaced = sqlx::query("SELECT 1 FROM secrets WHERE name = $1")
        .bind(&s.name)
        .fetch_optional(&mut *conn)
        .await?
        .is_some();
    sqlx::query(
        "INSERT INTO secrets (name, sealed, description, created_at, updated_at, created_by)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (name) DO UPDATE SET
             sealed = EXCLUDED.sealed,
             description = EXCLUDED.description,
             updated_at = EXCLUDED.updated_at",
    )
    .bind(&s.name)
    .bind(&s.sealed)
    .bind(&s.description)
    .bind(s.created_at)
    .bind(s.updated_at)
    .bind(&s.created_by)
    .execute(&mut *conn)
    .await?;
    Ok(OpOutput::SecretPut { replaced })
}

// Approvals

async fn insert_approval(conn: &mut PgConnection, a: &StoredApproval) -> Result<(), StoreError> {
    let id = &a.approval.id;
    sqlx::query(
        "INSERT INTO approvals (id, kind, agent, \"user\", status, created_at, expires_at, record,
                                payload, dispatch, outcome, last_poll, poll_interval)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )
    .bind(id)
    .bind(a.approval.ask.kind())
    .bind(&a.approval.agent)
    .bind(&a.approval.user)
    .bind(a.approval.status().as_str())
    .bind(a.approval.created_at)
    .bind(a.approval.expires_at)
    .bind(json(&a.approval)?)
    .bind(&a.payload)
    .bind(a.dispatch.as_str())
    .bind(&a.outcome)
    .bind(a.last_poll)
    .bind(a.poll_interval)
    .execute(&mut *conn)
    .await
    .map_err(conflict(|| format!("approval `{id}`")))?;
    Ok(())
}

async fn decide_approval(
    conn: &mut PgConnection,
    id: &str,
    decided: Decided,
) -> Result<(), StoreError> {
    let row: Option<(String, String)> =
        sqlx::query_as("SELECT status, record FROM approvals WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
    let Some((status, record)) = row else {
        return Err(StoreError::NotFound(format!("approval `{id}`")));
    };
    let approval = shared_ops::decide_record(id, status, &record, decided)?;
    sqlx::query("UPDATE approvals SET status = $1, record = $2 WHERE id = $3")
        .bind(approval.status().as_str())
        .bind(json(&approval)?)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

async fn claim_approval(conn: &mut PgConnection, id: &str) -> Result<bool, StoreError> {
    let r = sqlx::query(
        "UPDATE approvals SET dispatch = 'sending'
         WHERE id = $1 AND status = 'approved' AND dispatch = 'not_sent'",
    )
    .bind(id)
    .execute(&mut *conn)
    .await?;
    if r.rows_affected() == 1 {
        return Ok(true);
    }
    let exists = sqlx::query("SELECT 1 FROM approvals WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .is_some();
    shared_ops::unclaimed(id, exists)
}

// Posture and access reviews

async fn set_justification(
    conn: &mut PgConnection,
    agent: &str,
    pattern: &str,
    text: Option<&str>,
    by: &str,
    at: i64,
) -> Result<OpOutput, StoreError> {
    if !super::agent_exists(conn, agent).await? {
        return Err(StoreError::NotFound(format!("agent `{agent}`")));
    }
    match text {
        Some(text) => {
            sqlx::query(
                "INSERT INTO agent_justifications (agent_id, pattern, text, set_by, set_at)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (agent_id, pattern)
                 DO UPDATE SET text = EXCLUDED.text, set_by = EXCLUDED.set_by,
                               set_at = EXCLUDED.set_at",
            )
            .bind(agent)
            .bind(pattern)
            .bind(text)
            .bind(by)
            .bind(at)
            .execute(&mut *conn)
            .await?;
        }
        None => {
            sqlx::query("DELETE FROM agent_justifications WHERE agent_id = $1 AND pattern = $2")
                .bind(agent)
                .bind(pattern)
                .execute(&mut *conn)
                .await?;
        }
    }
    Ok(OpOutput::Done)
}

async fn insert_review(conn: &mut PgConnection, r: &Review) -> Result<OpOutput, StoreError> {
    sqlx::query(
        "INSERT INTO reviews (id, campaign, agent, owner, ceiling, status, opened_by, created_at,
            due_at, decided_by, decided_at, removed, note)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )
    .bind(&r.id)
    .bind(&r.campaign)
    .bind(&r.agent)
    .bind(&r.owner)
    .bind(json(&r.ceiling)?)
    .bind(r.status.as_str())
    .bind(&r.opened_by)
    .bind(r.created_at)
    .bind(r.due_at)
    .bind(&r.decided_by)
    .bind(r.decided_at)
    .bind(json(&r.removed)?)
    .bind(&r.note)
    .execute(&mut *conn)
    .await
    .map_err(conflict(|| format!("review `{}`", r.id)))?;
    Ok(OpOutput::Done)
}

/// The owner's answer, arguments of [`Op::DecideReview`].
struct Answer<'a> {
    id: &'a str,
    status: ReviewStatus,
    by: &'a str,
    at: i64,
    removed: &'a [String],
    note: Option<&'a str>,
}

async fn decide_review(conn: &mut PgConnection, a: Answer<'_>) -> Result<OpOutput, StoreError> {
    let r = sqlx::query(
        "UPDATE reviews SET status = $1, decided_by = $2, decided_at = $3, removed = $4,
            note = $5
         WHERE id = $6 AND status = 'open'",
    )
    .bind(a.status.as_str())
    .bind(a.by)
    .bind(a.at)
    .bind(json(a.removed)?)
    .bind(a.note)
    .bind(a.id)
    .execute(&mut *conn)
    .await?;
    if r.rows_affected() == 1 {
        return Ok(OpOutput::Done);
    }
    let status: Option<String> = sqlx::query_scalar("SELECT status FROM reviews WHERE id = $1")
        .bind(a.id)
        .fetch_optional(&mut *conn)
        .await?;
    Err(shared_ops::review_unanswerable(a.id, status))
}

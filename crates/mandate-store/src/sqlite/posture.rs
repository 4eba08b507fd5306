//! Posture and access reviews: the aggregate reads behind `GET /v1/posture` (usage per
//! credential, per scope set, busiest minute — counted by the database), recorded
//! justifications, and access review items with their ops.

use mandate_core::posture::{Justification, Review, ReviewStatus, Usage};
use sqlx::sqlite::SqlitePool;
use sqlx::{QueryBuilder, Sqlite, SqliteConnection};

use super::json;
use crate::{OpOutput, ReviewFilter, StoreError, rows};

pub(super) async fn usage(read: &SqlitePool, since: i64) -> Result<Usage, StoreError> {
    // One read transaction: the three aggregates are of the same snapshot. Each joins a token to
    // its current actor (the last agent of its chain) and that actor's credential.
    let mut tx = read.begin().await?;
    let credentials = sqlx::query(
        "SELECT ta.agent AS agent, ta.credential AS credential, MAX(t.iat) AS last_used
         FROM tokens t JOIN token_actors ta
           ON ta.jti = t.jti AND ta.pos = json_array_length(t.chain) - 1
         WHERE ta.agent IS NOT NULL AND ta.credential IS NOT NULL
         GROUP BY ta.agent, ta.credential ORDER BY ta.agent, ta.credential",
    )
    .fetch_all(&mut *tx)
    .await?
    .iter()
    .map(rows::credential_use)
    .collect::<Result<Vec<_>, StoreError>>()?;
    let scopes = sqlx::query(
        "SELECT ta.agent AS agent, t.scope AS scopes, MAX(t.iat) AS last_used
         FROM tokens t JOIN token_actors ta
           ON ta.jti = t.jti AND ta.pos = json_array_length(t.chain) - 1
         WHERE ta.agent IS NOT NULL
         GROUP BY ta.agent, t.scope ORDER BY ta.agent, t.scope",
    )
    .fetch_all(&mut *tx)
    .await?
    .iter()
    .map(rows::scope_use)
    .collect::<Result<Vec<_>, StoreError>>()?;
    let peaks = sqlx::query(
        "SELECT agent, MAX(n) AS per_minute FROM (
             SELECT ta.agent AS agent, t.iat / 60 AS minute, COUNT(*) AS n
             FROM tokens t JOIN token_actors ta
           ON ta.jti = t.jti AND ta.pos = json_array_length(t.chain) - 1
         WHERE ta.agent IS NOT NULL AND t.iat >= ?
             GROUP BY ta.agent, minute
         ) GROUP BY agent ORDER BY agent",
    )
    .bind(since)
    .fetch_all(&mut *tx)
    .await?
    .iter()
    .map(rows::rate_peak)
    .collect::<Result<Vec<_>, StoreError>>()?;
    tx.commit().await?;
    Ok(Usage {
        credentials,
        scopes,
        peaks,
    })
}

pub(super) async fn justifications(read: &SqlitePool) -> Result<Vec<Justification>, StoreError> {
    sqlx::query(
        "SELECT agent_id, pattern, text, set_by, set_at FROM agent_justifications
         ORDER BY agent_id, pattern",
    )
    .fetch_all(read)
    .await?
    .iter()
    .map(rows::justification)
    .collect()
}

pub(super) async fn review(read: &SqlitePool, id: &str) -> Result<Option<Review>, StoreError> {
    sqlx::query("SELECT * FROM reviews WHERE id = ?")
        .bind(id)
        .fetch_optional(read)
        .await?
        .as_ref()
        .map(rows::review)
        .transpose()
}

pub(super) async fn reviews(
    read: &SqlitePool,
    filter: &ReviewFilter,
) -> Result<Vec<Review>, StoreError> {
    let mut q = QueryBuilder::<Sqlite>::new("SELECT * FROM reviews WHERE 1 = 1");
    if let Some(status) = filter.status {
        q.push(" AND status = ").push_bind(status.as_str());
    }
    if let Some(agent) = &filter.agent {
        q.push(" AND agent = ").push_bind(agent.clone());
    }
    if let Some(owner) = &filter.owner {
        q.push(" AND owner = ").push_bind(owner.clone());
    }
    if let Some(campaign) = &filter.campaign {
        q.push(" AND campaign = ").push_bind(campaign.clone());
    }
    q.push(" ORDER BY created_at DESC, rowid DESC LIMIT ")
        .push_bind(crate::limits::reviews(filter));
    q.build()
        .fetch_all(read)
        .await?
        .iter()
        .map(rows::review)
        .collect()
}

// Ops, inside the writer's transaction.

pub(super) async fn set_justification(
    conn: &mut SqliteConnection,
    agent: &str,
    pattern: &str,
    text: Option<&str>,
    by: &str,
    at: i64,
) -> Result<OpOutput, StoreError> {
    let exists = sqlx::query("SELECT 1 FROM agents WHERE id = ?")
        .bind(agent)
        .fetch_optional(&mut *conn)
        .await?
        .is_some();
    if !exists {
        return Err(StoreError::NotFound(format!("agent `{agent}`")));
    }
    match text {
        Some(text) => {
            sqlx::query(
                "INSERT INTO agent_justifications (agent_id, pattern, text, set_by, set_at)
                 VALUES (?, ?, ?, ?, ?)
                 ON CONFLICT (agent_id, pattern)
                 DO UPDATE SET text = excluded.text, set_by = excluded.set_by,
                               set_at = excluded.set_at",
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
            sqlx::query("DELETE FROM agent_justifications WHERE agent_id = ? AND pattern = ?")
                .bind(agent)
                .bind(pattern)
                .execute(&mut *conn)
                .await?;
        }
    }
    Ok(OpOutput::Done)
}

pub(super) async fn insert_review(
    conn: &mut SqliteConnection,
    r: &Review,
) -> Result<OpOutput, StoreError> {
    let exists = sqlx::query("SELECT 1 FROM reviews WHERE id = ?")
        .bind(&r.id)
        .fetch_optional(&mut *conn)
        .await?
        .is_some();
    if exists {
        return Err(StoreError::Conflict(format!("review `{}`", r.id)));
    }
    sqlx::query(
        "INSERT INTO reviews (id, campaign, agent, owner, ceiling, status, opened_by, created_at,
            due_at, decided_by, decided_at, removed, note)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
    .await?;
    Ok(OpOutput::Done)
}

/// The owner's answer, arguments of [`crate::Op::DecideReview`].
pub(super) struct Answer<'a> {
    pub id: &'a str,
    pub status: ReviewStatus,
    pub by: &'a str,
    pub at: i64,
    pub removed: &'a [String],
    pub note: Option<&'a str>,
}

pub(super) async fn decide_review(
    conn: &mut SqliteConnection,
    a: Answer<'_>,
) -> Result<OpOutput, StoreError> {
    let r = sqlx::query(
        "UPDATE reviews SET status = ?, decided_by = ?, decided_at = ?, removed = ?, note = ?
         WHERE id = ? AND status = 'open'",
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
    let status: Option<String> = sqlx::query_scalar("SELECT status FROM reviews WHERE id = ?")
        .bind(a.id)
        .fetch_optional(&mut *conn)
        .await?;
    match status {
        None => Err(StoreError::NotFound(format!("review `{}`", a.id))),
        Some(status) => Err(StoreError::ReviewClosed {
            id: a.id.to_owned(),
            status,
        }),
    }
}

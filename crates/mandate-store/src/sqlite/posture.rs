//! Posture and access reviews: the aggregate reads behind `GET /v1/posture` (usage per
//! credential, per scope set, busiest minute — counted by the database), recorded
//! justifications, and access review items with their ops.

use mandate_core::posture::{
    CredentialUse, Justification, RatePeak, Review, ReviewStatus, ScopeUse, Usage,
};
use sqlx::sqlite::{SqlitePool, SqliteRow};
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection};

use super::json;
use crate::{OpOutput, ReviewFilter, StoreError};

/// Reviews returned when a filter names no limit.
const DEFAULT_REVIEW_LIMIT: u32 = 100;
/// The most reviews one listing returns.
const MAX_REVIEW_LIMIT: u32 = 1_000;

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
    .map(|r| {
        let credential: String = r.try_get("credential")?;
        Ok(CredentialUse {
            agent: r.try_get("agent")?,
            credential: credential
                .strip_prefix("kid:")
                .map(str::to_owned)
                .unwrap_or(credential),
            last_used: r.try_get("last_used")?,
        })
    })
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
    .map(|r| {
        Ok(ScopeUse {
            agent: r.try_get("agent")?,
            scopes: r.try_get("scopes")?,
            last_used: r.try_get("last_used")?,
        })
    })
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
    .map(|r| {
        Ok(RatePeak {
            agent: r.try_get("agent")?,
            per_minute: r.try_get("per_minute")?,
        })
    })
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
    .map(|r| {
        Ok(Justification {
            agent: r.try_get("agent_id")?,
            pattern: r.try_get("pattern")?,
            text: r.try_get("text")?,
            by: r.try_get("set_by")?,
            at: r.try_get("set_at")?,
        })
    })
    .collect()
}

fn list(row: &SqliteRow, column: &str) -> Result<Vec<String>, StoreError> {
    let text: String = row.try_get(column)?;
    serde_json::from_str(&text)
        .map_err(|e| StoreError::Database(format!("reviews.{column} is not a JSON list: {e}")))
}

fn review_row(row: &SqliteRow) -> Result<Review, StoreError> {
    let status: String = row.try_get("status")?;
    Ok(Review {
        id: row.try_get("id")?,
        campaign: row.try_get("campaign")?,
        agent: row.try_get("agent")?,
        owner: row.try_get("owner")?,
        ceiling: list(row, "ceiling")?,
        status: ReviewStatus::parse(&status)
            .ok_or_else(|| StoreError::Database(format!("unknown review status `{status}`")))?,
        opened_by: row.try_get("opened_by")?,
        created_at: row.try_get("created_at")?,
        due_at: row.try_get("due_at")?,
        decided_by: row.try_get("decided_by")?,
        decided_at: row.try_get("decided_at")?,
        removed: list(row, "removed")?,
        note: row.try_get("note")?,
    })
}

pub(super) async fn review(read: &SqlitePool, id: &str) -> Result<Option<Review>, StoreError> {
    sqlx::query("SELECT * FROM reviews WHERE id = ?")
        .bind(id)
        .fetch_optional(read)
        .await?
        .as_ref()
        .map(review_row)
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
    let limit = filter
        .limit
        .unwrap_or(DEFAULT_REVIEW_LIMIT)
        .min(MAX_REVIEW_LIMIT);
    q.push(" ORDER BY created_at DESC, rowid DESC LIMIT ")
        .push_bind(i64::from(limit));
    q.build()
        .fetch_all(read)
        .await?
        .iter()
        .map(review_row)
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

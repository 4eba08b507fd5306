//! Posture and access reviews, read side: the aggregates behind `GET /v1/posture` (usage per
//! credential, per scope set, busiest minute — counted by the database), recorded
//! justifications, and access review items. The same questions as SQLite's, in PostgreSQL.

use mandate_core::posture::{Justification, Review, Usage};
use sqlx::postgres::PgPool;
use sqlx::{Postgres, QueryBuilder};

use super::reads::snapshot;
use super::rows;
use crate::{ReviewFilter, StoreError, limits};

/// What was used when: last use per (agent, credential) and per (agent, scope set), and each
/// agent's busiest minute since `since`.
pub(crate) async fn usage(pool: &PgPool, since: i64) -> Result<Usage, StoreError> {
    // One snapshot: the three aggregates describe the same tokens. Each joins a token to its
    // current actor (the last agent of its chain) and that actor's credential.
    let mut tx = snapshot(pool).await?;
    let credentials = sqlx::query(
        r#"SELECT ta.agent AS agent, ta.credential AS credential, MAX(t.iat) AS last_used
           FROM tokens t JOIN token_actors ta
             ON ta.jti = t.jti AND ta.pos = jsonb_array_length(t.chain::jsonb) - 1
           WHERE ta.agent IS NOT NULL AND ta.credential IS NOT NULL
           GROUP BY ta.agent, ta.credential
           ORDER BY ta.agent COLLATE "C", ta.credential COLLATE "C""#,
    )
    .fetch_all(&mut *tx)
    .await?
    .iter()
    .map(rows::credential_use)
    .collect::<Result<Vec<_>, StoreError>>()?;
    let scopes = sqlx::query(
        r#"SELECT ta.agent AS agent, t.scope AS scopes, MAX(t.iat) AS last_used
           FROM tokens t JOIN token_actors ta
             ON ta.jti = t.jti AND ta.pos = jsonb_array_length(t.chain::jsonb) - 1
           WHERE ta.agent IS NOT NULL
           GROUP BY ta.agent, t.scope
           ORDER BY ta.agent COLLATE "C", t.scope COLLATE "C""#,
    )
    .fetch_all(&mut *tx)
    .await?
    .iter()
    .map(rows::scope_use)
    .collect::<Result<Vec<_>, StoreError>>()?;
    // `iat / 60` is integer division of BIGINTs (truncating, as SQLite's).
    let peaks = sqlx::query(
        r#"SELECT agent, MAX(n) AS per_minute FROM (
               SELECT ta.agent AS agent, t.iat / 60 AS minute, COUNT(*) AS n
               FROM tokens t JOIN token_actors ta
                 ON ta.jti = t.jti AND ta.pos = jsonb_array_length(t.chain::jsonb) - 1
               WHERE ta.agent IS NOT NULL AND t.iat >= $1
               GROUP BY ta.agent, t.iat / 60
           ) per_minute
           GROUP BY agent ORDER BY agent COLLATE "C""#,
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

/// Every recorded justification, by agent and pattern.
pub(crate) async fn justifications(pool: &PgPool) -> Result<Vec<Justification>, StoreError> {
    sqlx::query(
        r#"SELECT agent_id, pattern, text, set_by, set_at FROM agent_justifications
           ORDER BY agent_id COLLATE "C", pattern COLLATE "C""#,
    )
    .fetch_all(pool)
    .await?
    .iter()
    .map(rows::justification)
    .collect()
}

/// One access review.
pub(crate) async fn review(pool: &PgPool, id: &str) -> Result<Option<Review>, StoreError> {
    sqlx::query("SELECT * FROM reviews WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await?
        .as_ref()
        .map(rows::review)
        .transpose()
}

/// Access reviews matching `filter`, newest first.
pub(crate) async fn reviews(
    pool: &PgPool,
    filter: &ReviewFilter,
) -> Result<Vec<Review>, StoreError> {
    let mut q = QueryBuilder::<Postgres>::new("SELECT * FROM reviews WHERE TRUE");
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
    q.push(r#" ORDER BY created_at DESC, id COLLATE "C" DESC LIMIT "#)
        .push_bind(limits::reviews(filter));
    q.build()
        .fetch_all(pool)
        .await?
        .iter()
        .map(rows::review)
        .collect()
}

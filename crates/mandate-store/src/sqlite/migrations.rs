//! The schema's migrations and their runner.
//!
//! Each migration is embedded in the binary and applied once, in order, inside its own
//! transaction, and recorded in `schema_migrations`. A database whose schema is newer than this
//! build knows is refused rather than written with assumptions that no longer hold.

use sqlx::{Connection, Row, SqliteConnection};

use crate::StoreError;

/// One schema change.
struct Migration {
    version: i64,
    sql: &'static str,
}

/// Every migration, in order. Append only: never edit one that has shipped.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        sql: include_str!("../../migrations/sqlite/0001_initial.sql"),
    },
    Migration {
        version: 2,
        sql: include_str!("../../migrations/sqlite/0002_agent_tags.sql"),
    },
    Migration {
        version: 3,
        sql: include_str!("../../migrations/sqlite/0003_revocation_feed.sql"),
    },
    Migration {
        version: 4,
        sql: include_str!("../../migrations/sqlite/0004_ssf.sql"),
    },
    Migration {
        version: 5,
        sql: include_str!("../../migrations/sqlite/0005_task_steps.sql"),
    },
    // Gateway secrets
    Migration {
        version: 6,
        sql: include_str!("../../migrations/sqlite/0006_secrets.sql"),
    },
    // Audit checkpoints
    Migration {
        version: 7,
        sql: include_str!("../../migrations/sqlite/0007_audit_checkpoints.sql"),
    },
    // Approvals
    Migration {
        version: 8,
        sql: include_str!("../../migrations/sqlite/0008_approvals.sql"),
    },
    // Audit retention: archived segments
    Migration {
        version: 9,
        sql: include_str!("../../migrations/sqlite/0009_audit_segments.sql"),
    },
    // Posture and access reviews
    Migration {
        version: 10,
        sql: include_str!("../../migrations/sqlite/0010_posture.sql"),
    },
    // Audit queries by user and time
    Migration {
        version: 11,
        sql: include_str!("../../migrations/sqlite/0011_audit_user_time.sql"),
    },
    // Workload identities and DPoP per agent
    Migration {
        version: 12,
        sql: include_str!("../../migrations/sqlite/0012_agent_proofs.sql"),
    },
];

/// The schema version this build writes.
pub(crate) fn latest_version() -> i64 {
    MIGRATIONS.iter().map(|m| m.version).max().unwrap_or(0)
}

/// Brings the database up to [`latest_version`]. Safe to run on every start.
pub(crate) async fn run(conn: &mut SqliteConnection) -> Result<(), StoreError> {
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version    INTEGER PRIMARY KEY NOT NULL,
            applied_at INTEGER NOT NULL
        )",
    )
    .execute(&mut *conn)
    .await?;

    let newest: Option<i64> = sqlx::query("SELECT MAX(version) AS v FROM schema_migrations")
        .fetch_one(&mut *conn)
        .await?
        .try_get("v")?;
    if let Some(newest) = newest
        && newest > latest_version()
    {
        return Err(StoreError::Database(format!(
            "the database has schema version {newest}, newer than this build's {}; \
             upgrade Mandate before opening it",
            latest_version()
        )));
    }

    for m in MIGRATIONS {
        apply(conn, m).await?;
    }
    Ok(())
}

/// Applies one migration unless it already was, in one `BEGIN IMMEDIATE` transaction (so two
/// processes starting at once cannot both apply it).
async fn apply(conn: &mut SqliteConnection, m: &Migration) -> Result<(), StoreError> {
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    let done = sqlx::query("SELECT 1 FROM schema_migrations WHERE version = ?")
        .bind(m.version)
        .fetch_optional(&mut *tx)
        .await?
        .is_some();
    if done {
        tx.rollback().await?;
        return Ok(());
    }
    sqlx::raw_sql(m.sql)
        .execute(&mut *tx)
        .await
        .map_err(|e| StoreError::Database(format!("migration {} failed: {e}", m.version)))?;
    sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)")
        .bind(m.version)
        .bind(super::unix_now())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    tracing::info!(version = m.version, "applied schema migration");
    Ok(())
}

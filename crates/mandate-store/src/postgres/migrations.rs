//! The PostgreSQL schema's migrations and their runner.
//!
//! Each migration is embedded in the binary and applied once, in order, inside its own
//! transaction, and recorded in `schema_migrations`. The runner holds a session advisory lock
//! ([`MIGRATION_LOCK`]) for its whole run, so nodes starting together migrate once: the others
//! wait, then find every migration applied. A database whose schema is newer than this build
//! knows is refused rather than written with assumptions that no longer hold.

use sqlx::postgres::PgPool;
use sqlx::{Connection, PgConnection};

use crate::StoreError;
use crate::shared_ops::unix_now;

/// The advisory lock key held while migrating.
pub(crate) const MIGRATION_LOCK: i64 = 0x6d61_6e64_6174_6501;

/// One schema change.
struct Migration {
    version: i64,
    sql: &'static str,
}

/// Every migration, in order. Append only: never edit one that has shipped.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        sql: include_str!("../../migrations/postgres/0001_initial.sql"),
    },
    // Workload identities and DPoP per agent
    Migration {
        version: 2,
        sql: include_str!("../../migrations/postgres/0002_agent_proofs.sql"),
    },
];

/// The schema version this build writes.
fn latest_version() -> i64 {
    MIGRATIONS.iter().map(|m| m.version).max().unwrap_or(0)
}

/// The refusal of a schema newer than this build.
fn too_new(version: i64) -> StoreError {
    StoreError::Database(format!(
        "the database has schema version {version}, newer than this build's {}; upgrade \
         Mandate before opening it",
        latest_version()
    ))
}

/// Brings the schema up to [`latest_version`], under [`MIGRATION_LOCK`]. Safe to run on every
/// start, by several nodes at once.
pub(crate) async fn run(conn: &mut PgConnection) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *conn)
        .await
        .map_err(|e| StoreError::Database(format!("could not take the migration lock: {e}")))?;
    let migrated = migrate(conn).await;
    let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *conn)
        .await;
    migrated?;
    // The lock is the session's: if releasing it failed, closing the connection releases it.
    unlocked
        .map_err(|e| StoreError::Database(format!("could not release the migration lock: {e}")))?;
    Ok(())
}

/// The runner's work, with the lock held.
async fn migrate(conn: &mut PgConnection) -> Result<(), StoreError> {
    // Quiet when it exists already (the usual case): no NOTICE in the server log each start.
    if !has_migrations_table(&mut *conn).await? {
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version    BIGINT PRIMARY KEY,
                applied_at BIGINT NOT NULL
            )",
        )
        .execute(&mut *conn)
        .await?;
    }
    let newest = newest_version(&mut *conn).await?;
    if let Some(newest) = newest
        && newest > latest_version()
    {
        return Err(too_new(newest));
    }
    for m in MIGRATIONS {
        apply(conn, m).await?;
    }
    Ok(())
}

/// Whether `schema_migrations` exists in the connection's search path.
async fn has_migrations_table<'c, E>(conn: E) -> Result<bool, StoreError>
where
    E: sqlx::PgExecutor<'c>,
{
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('schema_migrations') IS NOT NULL")
        .fetch_one(conn)
        .await?;
    Ok(exists)
}

/// The highest applied version (`None` when none is).
async fn newest_version<'c, E>(conn: E) -> Result<Option<i64>, StoreError>
where
    E: sqlx::PgExecutor<'c>,
{
    let newest: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM schema_migrations")
        .fetch_one(conn)
        .await?;
    Ok(newest)
}

/// Applies one migration unless it already was, in one transaction with its record.
async fn apply(conn: &mut PgConnection, m: &Migration) -> Result<(), StoreError> {
    let mut tx = conn.begin().await?;
    let done = sqlx::query("SELECT 1 FROM schema_migrations WHERE version = $1")
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
    sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)")
        .bind(m.version)
        .bind(unix_now())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    tracing::info!(version = m.version, "applied schema migration");
    Ok(())
}

/// Checks the schema is one this build reads, without changing anything: the database must be a
/// Mandate database (it has `schema_migrations` with at least one migration applied) whose
/// version this build knows.
pub(crate) async fn check(pool: &PgPool) -> Result<(), StoreError> {
    if !has_migrations_table(pool).await? {
        return Err(StoreError::Database(
            "the database is not a Mandate database: it has no `schema_migrations` table"
                .to_owned(),
        ));
    }
    match newest_version(pool).await? {
        None => Err(StoreError::Database(
            "the database holds no Mandate schema yet: no migration was applied".to_owned(),
        )),
        Some(newest) if newest > latest_version() => Err(too_new(newest)),
        Some(_) => Ok(()),
    }
}

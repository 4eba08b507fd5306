//! The embedded SQLite implementation of [`Store`].
//!
//! One database file in WAL mode. Reads use a small pool of read-only (`query_only`)
//! connections and never wait on writes. Writes go through one group-commit writer task that
//! owns its own connection (see [`writer`]); the schema is brought up to date by an embedded
//! migration runner at open (see [`migrations`]).

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use futures_util::TryStreamExt;
use mandate_core::agent::Agent;
use mandate_core::audit::AuditEvent;
use mandate_core::revocation::RevocationRecord;
use mandate_core::task::{Task, TokenRecord};
use serde::Serialize;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{ConnectOptions, QueryBuilder, Row, Sqlite, SqliteConnection};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::{
    AdminCredential, AuditFilter, Checkpoint, Op, OpOutput, RevocationEntry, RevokedToken,
    SecretInfo, SsfQueued, SsfStream, Store, StoreError, StoredSecret, StoredSigningKey,
};
// Task steps and outcomes
use crate::TaskFilter;
use task_cache::TaskCache;
// Approvals
use crate::{ApprovalFilter, StoredApproval};
// Posture and access reviews
use crate::{Justification, Review, ReviewFilter, Usage};
// Audit retention
use crate::SegmentRecord;
use mandate_core::task::TaskStep;

mod grouped;
mod migrations;
mod ops;
// Posture and access reviews
mod posture;
mod rows;
mod stats;
mod task_cache;
mod writer;

use writer::{Unit, Writer};

/// How long a connection waits for a lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Prepared statements the writer's connection keeps: every table's multi-row `INSERT` for each
/// row count up to 64, plus the rest.
const WRITER_STATEMENTS: usize = 640;
/// Read connections of a read-write store.
const READ_POOL_SIZE: u32 = 4;
/// Read connections of a read-only store.
const READ_ONLY_POOL_SIZE: u32 = 2;
/// Units that may wait for the writer before `commit` itself waits (back-pressure).
const QUEUE_DEPTH: usize = 4 * writer::MAX_BATCH;

/// Mandate's store on one SQLite file.
///
/// Cheap to share behind an `Arc`. Call [`SqliteStore::close`] on shutdown so queued writes
/// land before the process exits. One process writes a database file at a time: the writer keeps
/// the audit chain head in memory.
///
/// Whether a single-use value ([`Op::UseOnce`]) has expired is judged by the system clock, as
/// are audit event times.
pub struct SqliteStore {
    /// Read connections.
    read: SqlitePool,
    /// The writer's queue; `None` once closed (or for a read-only store).
    queue: Mutex<Option<mpsc::Sender<Unit>>>,
    /// The writer task, until [`SqliteStore::close`] has waited for it.
    writer: tokio::sync::Mutex<Option<JoinHandle<()>>>,
    /// Tasks found by [`Store::task`], emptied by the writer when a task may have changed.
    /// `None` for a read-only store, whose file another process may be writing.
    tasks: Option<Arc<TaskCache>>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("writable", &self.sender().is_some())
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating it if missing) the database at `path` for reading and writing: WAL
    /// journal, `synchronous=FULL`, foreign keys on, a 5 s busy timeout. Brings the schema up to
    /// date and starts the writer task, so it must be called inside a Tokio runtime.
    pub async fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let write_options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT)
            // The grouped writes prepare one statement per table and row count.
            .statement_cache_capacity(WRITER_STATEMENTS);
        let mut conn: SqliteConnection = write_options.connect().await?;
        migrations::run(&mut conn).await?;
        let tasks = Arc::new(TaskCache::default());
        let writer = Writer::new(conn, Arc::clone(&tasks)).await?;

        let read_options = SqliteConnectOptions::new()
            .filename(path)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT)
            .pragma("query_only", "ON");
        let read = SqlitePoolOptions::new()
            .max_connections(READ_POOL_SIZE)
            // A local file does not hang up: pinging each connection before use would only add
            // a hand-off to its thread per read.
            .test_before_acquire(false)
            .connect_with(read_options)
            .await?;

        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let handle = tokio::spawn(writer.run(rx));
        Ok(SqliteStore {
            read,
            queue: Mutex::new(Some(tx)),
            writer: tokio::sync::Mutex::new(Some(handle)),
            tasks: Some(tasks),
        })
    }

    /// Opens an existing database read-only (`mode=ro`), e.g. for offline `mandate audit verify`:
    /// no migrations, no writer; [`Store::commit`] returns [`StoreError::Closed`]. Fails with
    /// [`StoreError::NotFound`] if the file does not exist, and with [`StoreError::Database`] if
    /// it is not a Mandate database or its schema is newer than this build.
    pub async fn open_read_only(path: &Path) -> Result<SqliteStore, StoreError> {
        if !path.is_file() {
            return Err(StoreError::NotFound(format!(
                "database file `{}`",
                path.display()
            )));
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .read_only(true)
            .busy_timeout(BUSY_TIMEOUT);
        let read = SqlitePoolOptions::new()
            .max_connections(READ_ONLY_POOL_SIZE)
            .connect_with(options)
            .await?;
        let version: Option<i64> = sqlx::query("SELECT MAX(version) AS v FROM schema_migrations")
            .fetch_one(&read)
            .await
            .map_err(|e| {
                StoreError::Database(format!(
                    "`{}` is not a Mandate database: {e}",
                    path.display()
                ))
            })?
            .try_get("v")?;
        if version.unwrap_or(0) > migrations::latest_version() {
            read.close().await;
            return Err(StoreError::Database(format!(
                "`{}` has a schema newer than this build; upgrade Mandate to read it",
                path.display()
            )));
        }
        Ok(SqliteStore {
            read,
            queue: Mutex::new(None),
            writer: tokio::sync::Mutex::new(None),
            tasks: None,
        })
    }

    /// Stops accepting commits, lets the writer commit every unit already queued, waits for it,
    /// and closes the connections. Later calls return at once; later commits get
    /// [`StoreError::Closed`].
    pub async fn close(&self) {
        drop(
            self.queue
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        let handle = self.writer.lock().await.take();
        if let Some(handle) = handle
            && let Err(e) = handle.await
        {
            tracing::error!(error = %e, "the store writer task failed");
        }
        self.read.close().await;
    }

    /// The writer's queue, if the store still accepts commits.
    fn sender(&self) -> Option<mpsc::Sender<Unit>> {
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Runs `sql` with one text parameter and decodes every row.
    async fn fetch_all_by<T>(
        &self,
        sql: &'static str,
        param: Option<&str>,
        decode: fn(&SqliteRow) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let mut q = sqlx::query(sql);
        if let Some(p) = param {
            q = q.bind(p);
        }
        q.fetch_all(&self.read).await?.iter().map(decode).collect()
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    // One process writes the file (the writer keeps the chain head in memory), so there is
    // nobody to exclude and nobody else's changes to hear of.
    async fn lock(&self, _name: &str) -> Result<crate::Lease, StoreError> {
        Ok(crate::Lease::local())
    }

    async fn try_lock(&self, _name: &str) -> Result<Option<crate::Lease>, StoreError> {
        Ok(Some(crate::Lease::local()))
    }

    async fn close(&self) {
        SqliteStore::close(self).await;
    }

    async fn commit(&self, ops: Vec<Op>) -> Result<Vec<OpOutput>, StoreError> {
        let queue = self.sender().ok_or(StoreError::Closed)?;
        let (reply, outcome) = oneshot::channel();
        queue
            .send(Unit { ops, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        drop(queue);
        outcome.await.map_err(|_| StoreError::Closed)?
    }

    async fn agents(&self) -> Result<Vec<Agent>, StoreError> {
        // One read transaction, so the agents and their keys are the same snapshot.
        let mut tx = self.read.begin().await?;
        let agents = sqlx::query("SELECT * FROM agents ORDER BY id")
            .fetch_all(&mut *tx)
            .await?;
        let keys = sqlx::query("SELECT * FROM agent_keys ORDER BY agent_id, rowid")
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        // Both lists are sorted by agent id.
        rows::agents_with_keys(&agents, &keys)
    }

    async fn agent(&self, id: &str) -> Result<Option<Agent>, StoreError> {
        let mut tx = self.read.begin().await?;
        let row = sqlx::query("SELECT * FROM agents WHERE id = ?")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            tx.commit().await?;
            return Ok(None);
        };
        let mut agent = rows::agent(&row)?;
        agent.keys = sqlx::query("SELECT * FROM agent_keys WHERE agent_id = ? ORDER BY rowid")
            .bind(id)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(rows::agent_key)
            .collect::<Result<_, _>>()?;
        tx.commit().await?;
        Ok(Some(agent))
    }

    async fn task(&self, id: &str) -> Result<Option<Task>, StoreError> {
        let miss = match self.tasks.as_ref().map(|c| c.get(id)) {
            Some(Ok(task)) => return Ok(Some(task)),
            Some(Err(miss)) => Some(miss),
            None => None,
        };
        let row = sqlx::query("SELECT * FROM tasks WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.read)
            .await?;
        let task = row.as_ref().map(rows::task).transpose()?;
        if let (Some(cache), Some(miss), Some(t)) = (&self.tasks, miss, &task) {
            cache.put(miss, t);
        }
        Ok(task)
    }

    async fn token(&self, jti: &str) -> Result<Option<TokenRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM tokens WHERE jti = ?")
            .bind(jti)
            .fetch_optional(&self.read)
            .await?;
        row.as_ref().map(rows::token).transpose()
    }

    async fn tokens_of_task(&self, task: &str) -> Result<Vec<TokenRecord>, StoreError> {
        self.fetch_all_by(
            "SELECT * FROM tokens WHERE task = ? ORDER BY iat, rowid",
            Some(task),
            rows::token,
        )
        .await
    }

    async fn signing_keys(&self) -> Result<Vec<StoredSigningKey>, StoreError> {
        self.fetch_all_by(
            "SELECT * FROM signing_keys ORDER BY created_at, rowid",
            None,
            rows::signing_key,
        )
        .await
    }

    async fn admin_credentials(&self) -> Result<Vec<AdminCredential>, StoreError> {
        self.fetch_all_by(
            "SELECT * FROM admin_credentials ORDER BY created_at, rowid",
            None,
            rows::admin_credential,
        )
        .await
    }

    async fn revocations(&self) -> Result<Vec<RevocationRecord>, StoreError> {
        self.fetch_all_by(
            "SELECT * FROM revocations ORDER BY at, rowid",
            None,
            rows::revocation,
        )
        .await
    }

    async fn revocation_feed(
        &self,
        after: i64,
        limit: u32,
        now: i64,
    ) -> Result<Vec<RevocationEntry>, StoreError> {
        sqlx::query("SELECT * FROM revocations WHERE seq > ? ORDER BY seq LIMIT ?")
            .bind(after)
            .bind(crate::limits::batch(limit))
            .fetch_all(&self.read)
            .await?
            .iter()
            .map(|row| rows::revocation_entry(row, now))
            .collect()
    }

    async fn revocation_head(&self) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM revocations")
                .fetch_one(&self.read)
                .await?,
        )
    }

    async fn revoked_tokens(
        &self,
        now: i64,
        each: &mut (dyn FnMut(RevokedToken) + Send),
    ) -> Result<(), StoreError> {
        let mut rows =
            sqlx::query("SELECT jti, exp FROM tokens WHERE revoked_at IS NOT NULL AND exp >= ?")
                .bind(now)
                .fetch(&self.read);
        while let Some(row) = rows.try_next().await? {
            each(rows::revoked_token(&row)?);
        }
        Ok(())
    }

    async fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>, StoreError> {
        audit_query(filter)
            .build()
            .fetch_all(&self.read)
            .await?
            .iter()
            .map(rows::event)
            .collect()
    }

    async fn audit_after(&self, after: i64, limit: u32) -> Result<Vec<AuditEvent>, StoreError> {
        sqlx::query("SELECT * FROM audit_events WHERE seq > ? ORDER BY seq LIMIT ?")
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&self.read)
            .await?
            .iter()
            .map(rows::event)
            .collect()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").fetch_one(&self.read).await?;
        Ok(())
    }

    // Shared Signals streams
    async fn ssf_streams(&self) -> Result<Vec<SsfStream>, StoreError> {
        self.fetch_all_by(
            "SELECT * FROM ssf_streams ORDER BY created_at, rowid",
            None,
            rows::ssf_stream,
        )
        .await
    }

    async fn ssf_stream(&self, id: &str) -> Result<Option<SsfStream>, StoreError> {
        let row = sqlx::query("SELECT * FROM ssf_streams WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.read)
            .await?;
        row.as_ref().map(rows::ssf_stream).transpose()
    }

    async fn ssf_outbox(&self, stream: &str, limit: u32) -> Result<Vec<SsfQueued>, StoreError> {
        sqlx::query("SELECT * FROM ssf_outbox WHERE stream_id = ? ORDER BY seq LIMIT ?")
            .bind(stream)
            .bind(crate::limits::batch(limit))
            .fetch_all(&self.read)
            .await?
            .iter()
            .map(rows::ssf_queued)
            .collect()
    }

    async fn ssf_outbox_len(&self, stream: &str) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM ssf_outbox WHERE stream_id = ?")
                .bind(stream)
                .fetch_one(&self.read)
                .await?,
        )
    }
    // Task steps and outcomes
    async fn task_steps(&self, task: &str) -> Result<Vec<TaskStep>, StoreError> {
        self.fetch_all_by(
            "SELECT * FROM task_steps WHERE task = ? ORDER BY seq",
            Some(task),
            rows::task_step,
        )
        .await
    }

    async fn tasks(&self, filter: &TaskFilter) -> Result<Vec<Task>, StoreError> {
        let mut q = QueryBuilder::<Sqlite>::new("SELECT * FROM tasks WHERE 1 = 1");
        if let Some(agent) = &filter.agent {
            q.push(" AND agent = ").push_bind(agent.clone());
        }
        if let Some(user) = &filter.user {
            q.push(" AND user = ").push_bind(user.clone());
        }
        if let Some(status) = filter.status {
            q.push(" AND status = ").push_bind(status.as_str());
        }
        q.push(" ORDER BY created_at DESC, rowid DESC LIMIT ")
            .push_bind(crate::limits::tasks(filter));
        q.build()
            .fetch_all(&self.read)
            .await?
            .iter()
            .map(rows::task)
            .collect()
    }

    async fn task_revocations(&self, task: &str) -> Result<Vec<RevocationEntry>, StoreError> {
        sqlx::query(
            "SELECT r.* FROM revocations r
             WHERE (r.kind = 'task' AND r.target = ?1)
                OR (r.kind = 'token' AND r.target IN (SELECT jti FROM tokens WHERE task = ?1))
                OR EXISTS (
                    SELECT 1 FROM json_each(r.ended) e
                    JOIN tokens t ON t.jti = json_extract(e.value, '$.jti')
                    WHERE t.task = ?1
                )
             ORDER BY r.seq",
        )
        .bind(task)
        .fetch_all(&self.read)
        .await?
        .iter()
        .map(|row| rows::revocation_entry(row, i64::MIN))
        .collect()
    }

    // Gateway secrets
    async fn secrets(&self) -> Result<Vec<SecretInfo>, StoreError> {
        sqlx::query(
            "SELECT name, description, created_at, updated_at, created_by
             FROM secrets ORDER BY name",
        )
        .fetch_all(&self.read)
        .await?
        .iter()
        .map(rows::secret_info)
        .collect()
    }

    async fn secret(&self, name: &str) -> Result<Option<StoredSecret>, StoreError> {
        let row = sqlx::query("SELECT * FROM secrets WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.read)
            .await?;
        row.as_ref().map(rows::secret).transpose()
    }

    // Audit checkpoints
    async fn checkpoints(&self) -> Result<Vec<Checkpoint>, StoreError> {
        // A database from before checkpoints, opened read-only (offline `audit verify`), is not
        // migrated: it simply has none.
        let exists = sqlx::query(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'audit_checkpoints'",
        )
        .fetch_optional(&self.read)
        .await?
        .is_some();
        if !exists {
            return Ok(Vec::new());
        }
        sqlx::query("SELECT seq, hash, time, jws FROM audit_checkpoints ORDER BY id")
            .fetch_all(&self.read)
            .await?
            .iter()
            .map(rows::checkpoint)
            .collect()
    }

    // Audit retention
    async fn audit_segments(&self) -> Result<Vec<SegmentRecord>, StoreError> {
        // A database from before retention, opened read-only, is not migrated: it has none.
        let exists = sqlx::query(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'audit_segments'",
        )
        .fetch_optional(&self.read)
        .await?
        .is_some();
        if !exists {
            return Ok(Vec::new());
        }
        sqlx::query("SELECT * FROM audit_segments ORDER BY first_seq")
            .fetch_all(&self.read)
            .await?
            .iter()
            .map(rows::segment)
            .collect()
    }

    async fn audit_seq_before(&self, time: &str) -> Result<Option<i64>, StoreError> {
        // Times never go backwards along the chain, so the newest by time is the newest by seq.
        Ok(sqlx::query_scalar(
            "SELECT seq FROM audit_events WHERE time < ? ORDER BY time DESC, seq DESC LIMIT 1",
        )
        .bind(time)
        .fetch_optional(&self.read)
        .await?)
    }

    // Approvals
    async fn approval(&self, id: &str) -> Result<Option<StoredApproval>, StoreError> {
        let row = sqlx::query("SELECT * FROM approvals WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.read)
            .await?;
        row.as_ref().map(rows::approval).transpose()
    }

    async fn approvals(&self, filter: &ApprovalFilter) -> Result<Vec<StoredApproval>, StoreError> {
        // Not the payload: a held write's is its whole request, body included.
        let mut q = QueryBuilder::<Sqlite>::new(
            "SELECT id, kind, agent, user, status, created_at, expires_at, record, '' AS payload,
                    dispatch, outcome, last_poll, poll_interval
             FROM approvals WHERE 1 = 1",
        );
        if let Some(status) = filter.status {
            q.push(" AND status = ").push_bind(status.as_str());
        }
        if let Some(agent) = &filter.agent {
            q.push(" AND agent = ").push_bind(agent.clone());
        }
        if let Some(user) = &filter.user {
            q.push(" AND user = ").push_bind(user.clone());
        }
        if let Some(kind) = &filter.kind {
            q.push(" AND kind = ").push_bind(kind.clone());
        }
        if filter.undispatched {
            q.push(" AND status = 'approved' AND dispatch = 'not_sent'");
        }
        q.push(" ORDER BY created_at DESC, rowid DESC LIMIT ")
            .push_bind(crate::limits::approvals(filter));
        q.build()
            .fetch_all(&self.read)
            .await?
            .iter()
            .map(rows::approval)
            .collect()
    }

    // Posture and access reviews
    async fn usage(&self, since: i64) -> Result<Usage, StoreError> {
        posture::usage(&self.read, since).await
    }

    async fn justifications(&self) -> Result<Vec<Justification>, StoreError> {
        posture::justifications(&self.read).await
    }

    async fn review(&self, id: &str) -> Result<Option<Review>, StoreError> {
        posture::review(&self.read, id).await
    }

    async fn reviews(&self, filter: &ReviewFilter) -> Result<Vec<Review>, StoreError> {
        posture::reviews(&self.read, filter).await
    }

    // Compliance reports (aggregate reads)
    async fn audit_counts(
        &self,
        since: &str,
    ) -> Result<mandate_core::compliance::AuditCounts, StoreError> {
        stats::audit_counts(&self.read, since).await
    }

    async fn approval_counts(
        &self,
        since: i64,
        now: i64,
    ) -> Result<Vec<mandate_core::compliance::ApprovalCount>, StoreError> {
        stats::approval_counts(&self.read, since, now).await
    }
}

/// The SQL of an audit query. Only fixed fragments are written into the text; every value is a
/// bound parameter.
fn audit_query(filter: &AuditFilter) -> QueryBuilder<Sqlite> {
    let mut q = QueryBuilder::<Sqlite>::new("SELECT * FROM audit_events WHERE 1 = 1");
    let equals: [(&'static str, &Option<String>); 6] = [
        (" AND user = ", &filter.user),
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
    if let Some(agent) = &filter.agent {
        q.push(" AND seq IN (SELECT seq FROM audit_event_agents WHERE agent = ")
            .push_bind(agent.clone());
        // An agent appears in a large share of the log: walk only the seqs of the time range.
        // The writer never stamps an event earlier than the one before it, so times are ordered
        // by seq and a time range is a seq range, found with one step into the time index each
        // (`ORDER BY time, seq LIMIT 1`: `MIN(seq) … WHERE time >= ?` would scan the range).
        if let Some(since) = &filter.since {
            q.push(" AND seq >= IFNULL((SELECT seq FROM audit_events WHERE time >= ")
                .push_bind(since.clone())
                .push(" ORDER BY time, seq LIMIT 1), 9223372036854775807)");
        }
        if let Some(until) = &filter.until {
            q.push(" AND seq < IFNULL((SELECT seq FROM audit_events WHERE time >= ")
                .push_bind(until.clone())
                .push(" ORDER BY time, seq LIMIT 1), 9223372036854775807)");
        }
        q.push(")");
    }
    if let Some(since) = &filter.since {
        q.push(" AND time >= ").push_bind(since.clone());
    }
    if let Some(until) = &filter.until {
        q.push(" AND time < ").push_bind(until.clone());
    }
    if let Some(after) = filter.after_seq {
        q.push(" AND seq > ").push_bind(after);
    }
    q.push(if filter.newest_first {
        " ORDER BY seq DESC"
    } else {
        " ORDER BY seq ASC"
    });
    q.push(" LIMIT ").push_bind(crate::limits::audit(filter));
    q
}

/// JSON text of a value (lists of strings, JWKs, pattern sets).
fn json<T: Serialize + ?Sized>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value)
        .map_err(|e| StoreError::Database(format!("could not encode a value as JSON: {e}")))
}

/// Seconds since the epoch, by the system clock.
fn unix_now() -> i64 {
    unix_now_ms().div_euclid(1000)
}

/// Milliseconds since the epoch, by the system clock (0 if the clock is before 1970).
fn unix_now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

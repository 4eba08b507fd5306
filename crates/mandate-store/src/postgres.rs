//! The PostgreSQL implementation of [`Store`], for several Mandate nodes on one database.
//!
//! Reads use a connection pool. Writes go through a group-commit writer task per process that
//! owns its own connection (see [`writer`]), like SQLite's; every write transaction first takes
//! one transaction-scoped advisory lock ([`writer::WRITE_LOCK`]), so writes from all nodes
//! commit one batch at a time and the audit chain, the revocation feed and task steps stay
//! gapless and linked whoever writes them. Each transaction also announces what it changed on
//! the `mandate_changes` channel (`NOTIFY`, delivered on commit); every process listens on it
//! and passes what it hears to [`Store::changes`] (see [`listen`]).
//!
//! Store-wide locks ([`Store::lock`], [`Store::try_lock`]) are session advisory locks held by a
//! connection of their own: dropping the [`Lease`] closes it, and a node that dies releases its
//! locks with its connections.
//!
//! The schema is brought up to date at connect by an embedded migration runner (see
//! [`migrations`]), under an advisory lock so that nodes starting together migrate once.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use mandate_core::agent::Agent;
use mandate_core::audit::AuditEvent;
use mandate_core::revocation::RevocationRecord;
use mandate_core::task::{Task, TaskStep, TokenRecord};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::{
    AdminCredential, ApprovalFilter, AuditFilter, Change, Checkpoint, Justification, Lease, Op,
    OpOutput, Review, ReviewFilter, RevocationEntry, RevokedToken, SecretInfo, SegmentRecord,
    SsfQueued, SsfStream, Store, StoreError, StoredApproval, StoredSecret, StoredSigningKey,
    TaskFilter, Usage,
};

mod listen;
mod migrations;
mod ops;
mod posture;
mod reads;
mod rows;
mod stats;
mod writer;

use writer::{Unit, Writer};

/// Read connections per process.
const POOL_SIZE: u32 = 8;
/// How long a read waits for a free connection.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// Units that may wait for the writer before `commit` itself waits (back-pressure).
const QUEUE_DEPTH: usize = 4 * writer::MAX_BATCH;
/// Changes buffered for a slow subscriber before it is told to resync.
const CHANGES_CAPACITY: usize = 1024;

/// Mandate's store on a PostgreSQL database that several processes may share.
///
/// Cheap to share behind an `Arc`. Call [`PostgresStore::close`] on shutdown so queued writes
/// land before the process exits. Whether a single-use value ([`Op::UseOnce`]) has expired,
/// and audit event times, are judged by this process's clock: keep the nodes' clocks in sync.
pub struct PostgresStore {
    /// Read connections.
    pool: PgPool,
    /// How to open a connection of one's own (the writer's, a lock's).
    options: PgConnectOptions,
    /// The writer's queue; `None` once closed (or for a read-only store).
    queue: Mutex<Option<mpsc::Sender<Unit>>>,
    /// The writer task, until [`PostgresStore::close`] has waited for it.
    writer: tokio::sync::Mutex<Option<JoinHandle<()>>>,
    /// Where heard changes go.
    changes: broadcast::Sender<Change>,
    /// The listening task; `None` for a read-only store.
    listener: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the URL: it may hold a password.
        f.debug_struct("PostgresStore")
            .field("writable", &self.sender().is_some())
            .finish_non_exhaustive()
    }
}

/// Parses a `postgres://` URL. The error never repeats the URL (it may hold a password).
fn parse_url(url: &str) -> Result<PgConnectOptions, StoreError> {
    url.parse::<PgConnectOptions>().map_err(|e| {
        StoreError::Database(format!(
            "`database_url` is not a PostgreSQL URL ({})",
            redact(&e.to_string(), url)
        ))
    })
}

/// `text` with every occurrence of `secret` replaced.
fn redact(text: &str, secret: &str) -> String {
    if secret.is_empty() {
        text.to_owned()
    } else {
        text.replace(secret, "<database_url>")
    }
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/db?sslmode=…`)
    /// for reading and writing: brings the schema up to date, starts the writer and starts
    /// listening for changes, so it must be called inside a Tokio runtime.
    pub async fn connect(url: &str) -> Result<PostgresStore, StoreError> {
        let options = parse_url(url)?.log_statements(tracing::log::LevelFilter::Trace);
        let mut conn = options
            .connect()
            .await
            .map_err(|e| connect_error(&e, url))?;
        migrations::run(&mut conn).await?;
        conn.close().await?;

        let writer = Writer::new(options.clone()).await?;
        let pool = pool(&options, url).await?;
        let (changes, _) = broadcast::channel(CHANGES_CAPACITY);
        let listener = listen::spawn(pool.clone(), changes.clone()).await?;
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let handle = tokio::spawn(writer.run(rx));
        Ok(PostgresStore {
            pool,
            options,
            queue: Mutex::new(Some(tx)),
            writer: tokio::sync::Mutex::new(Some(handle)),
            changes,
            listener: Mutex::new(Some(listener)),
        })
    }

    /// Connects for reading only, e.g. for offline `mandate audit verify`: no migrations, no
    /// writer, no listening; [`Store::commit`] returns [`StoreError::Closed`]. Fails with
    /// [`StoreError::Database`] if the database holds no Mandate schema or a newer one than
    /// this build knows.
    pub async fn connect_read_only(url: &str) -> Result<PostgresStore, StoreError> {
        let options = parse_url(url)?.log_statements(tracing::log::LevelFilter::Trace);
        let pool = pool(&options, url).await?;
        migrations::check(&pool).await?;
        let (changes, _) = broadcast::channel(1);
        Ok(PostgresStore {
            pool,
            options,
            queue: Mutex::new(None),
            writer: tokio::sync::Mutex::new(None),
            changes,
            listener: Mutex::new(None),
        })
    }

    /// Stops accepting commits, lets the writer commit every unit already queued, waits for it,
    /// stops listening and closes the connections. Later calls return at once; later commits
    /// get [`StoreError::Closed`].
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
        let listener = self
            .listener
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(listener) = listener {
            listener.abort();
        }
        self.pool.close().await;
    }

    /// The writer's queue, if the store still accepts commits.
    fn sender(&self) -> Option<mpsc::Sender<Unit>> {
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// A connection of its own holding the session advisory lock `name`, waiting for it when
    /// `wait`; `None` when not waiting and someone else holds it.
    async fn advisory(&self, name: &str, wait: bool) -> Result<Option<Lease>, StoreError> {
        let mut conn = self.options.connect().await?;
        let key = lock_key(name);
        let got = if wait {
            sqlx::query("SELECT pg_advisory_lock($1)")
                .bind(key)
                .execute(&mut conn)
                .await?;
            true
        } else {
            sqlx::query_scalar::<_, bool>("SELECT pg_try_advisory_lock($1)")
                .bind(key)
                .fetch_one(&mut conn)
                .await?
        };
        if !got {
            conn.close().await?;
            return Ok(None);
        }
        // Dropping the connection ends its session, which releases the lock.
        Ok(Some(Lease::holding(Box::new(Mutex::new(conn)))))
    }
}

/// Whether `text` could be stored: PostgreSQL text cannot hold a NUL character, so a lookup by
/// one finds nothing (and must not reach the database, which would refuse the query).
fn storable(text: &str) -> bool {
    !text.contains('\0')
}

/// A read pool on `options`.
async fn pool(options: &PgConnectOptions, url: &str) -> Result<PgPool, StoreError> {
    PgPoolOptions::new()
        .max_connections(POOL_SIZE)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options.clone())
        .await
        .map_err(|e| connect_error(&e, url))
}

/// A connection failure, said without the URL.
fn connect_error(e: &sqlx::Error, url: &str) -> StoreError {
    StoreError::Database(format!(
        "cannot connect to PostgreSQL: {}",
        redact(&e.to_string(), url)
    ))
}

/// The advisory lock key of a store-wide lock name: FNV-1a of `mandate:<name>`, so it cannot
/// meet [`writer::WRITE_LOCK`] or [`migrations::MIGRATION_LOCK`] by accident of a small number.
fn lock_key(name: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in b"mandate:".iter().chain(name.as_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    i64::from_ne_bytes(h.to_ne_bytes())
}

#[async_trait]
impl Store for PostgresStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    fn changes(&self) -> Option<broadcast::Receiver<Change>> {
        Some(self.changes.subscribe())
    }

    async fn lock(&self, name: &str) -> Result<Lease, StoreError> {
        self.advisory(name, true)
            .await?
            .ok_or_else(|| StoreError::Database(format!("lock `{name}` was not granted")))
    }

    async fn try_lock(&self, name: &str) -> Result<Option<Lease>, StoreError> {
        self.advisory(name, false).await
    }

    async fn close(&self) {
        PostgresStore::close(self).await;
    }

    async fn commit(&self, ops: Vec<Op>) -> Result<Vec<OpOutput>, StoreError> {
        let queue = self.sender().ok_or(StoreError::Closed)?;
        let (reply, outcome) = oneshot::channel();
        queue
            .send(Unit { ops, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        outcome.await.map_err(|_| StoreError::Closed)?
    }

    async fn agents(&self) -> Result<Vec<Agent>, StoreError> {
        reads::agents(&self.pool).await
    }

    async fn agent(&self, id: &str) -> Result<Option<Agent>, StoreError> {
        if !storable(id) {
            // No stored key holds a NUL character (PostgreSQL text cannot).
            return Ok(None);
        }
        reads::agent(&self.pool, id).await
    }

    async fn task(&self, id: &str) -> Result<Option<Task>, StoreError> {
        if !storable(id) {
            // No stored key holds a NUL character (PostgreSQL text cannot).
            return Ok(None);
        }
        reads::task(&self.pool, id).await
    }

    async fn token(&self, jti: &str) -> Result<Option<TokenRecord>, StoreError> {
        if !storable(jti) {
            // No stored key holds a NUL character (PostgreSQL text cannot).
            return Ok(None);
        }
        reads::token(&self.pool, jti).await
    }

    async fn tokens_of_task(&self, task: &str) -> Result<Vec<TokenRecord>, StoreError> {
        if !storable(task) {
            // No stored key holds a NUL character (PostgreSQL text cannot).
            return Ok(Vec::new());
        }
        reads::tokens_of_task(&self.pool, task).await
    }

    async fn signing_keys(&self) -> Result<Vec<StoredSigningKey>, StoreError> {
        reads::signing_keys(&self.pool).await
    }

    async fn admin_credentials(&self) -> Result<Vec<AdminCredential>, StoreError> {
        reads::admin_credentials(&self.pool).await
    }

    async fn revocations(&self) -> Result<Vec<RevocationRecord>, StoreError> {
        reads::revocations(&self.pool).await
    }

    async fn revocation_feed(
        &self,
        after: i64,
        limit: u32,
        now: i64,
    ) -> Result<Vec<RevocationEntry>, StoreError> {
        reads::revocation_feed(&self.pool, after, limit, now).await
    }

    async fn revocation_head(&self) -> Result<i64, StoreError> {
        reads::revocation_head(&self.pool).await
    }

    async fn revoked_tokens(
        &self,
        now: i64,
        each: &mut (dyn FnMut(RevokedToken) + Send),
    ) -> Result<(), StoreError> {
        reads::revoked_tokens(&self.pool, now, each).await
    }

    async fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>, StoreError> {
        if [
            &filter.user,
            &filter.agent,
            &filter.task,
            &filter.action,
            &filter.resource,
            &filter.decision,
            &filter.kind,
            &filter.since,
            &filter.until,
        ]
        .into_iter()
        .flatten()
        .any(|v| !storable(v))
        {
            return Ok(Vec::new());
        }
        reads::audit(&self.pool, filter).await
    }

    async fn audit_after(&self, after: i64, limit: u32) -> Result<Vec<AuditEvent>, StoreError> {
        reads::audit_after(&self.pool, after, limit).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        reads::ping(&self.pool).await
    }

    async fn ssf_streams(&self) -> Result<Vec<SsfStream>, StoreError> {
        reads::ssf_streams(&self.pool).await
    }

    async fn ssf_stream(&self, id: &str) -> Result<Option<SsfStream>, StoreError> {
        if !storable(id) {
            // No stored key holds a NUL character (PostgreSQL text cannot).
            return Ok(None);
        }
        reads::ssf_stream(&self.pool, id).await
    }

    async fn ssf_outbox(&self, stream: &str, limit: u32) -> Result<Vec<SsfQueued>, StoreError> {
        if !storable(stream) {
            // No stored key holds a NUL character (PostgreSQL text cannot).
            return Ok(Vec::new());
        }
        reads::ssf_outbox(&self.pool, stream, limit).await
    }

    async fn ssf_outbox_len(&self, stream: &str) -> Result<i64, StoreError> {
        if !storable(stream) {
            // No stored key holds a NUL character (PostgreSQL text cannot).
            return Ok(0);
        }
        reads::ssf_outbox_len(&self.pool, stream).await
    }

    async fn task_steps(&self, task: &str) -> Result<Vec<TaskStep>, StoreError> {
        if !storable(task) {
            // No stored key holds a NUL character (PostgreSQL text cannot).
            return Ok(Vec::new());
        }
        reads::task_steps(&self.pool, task).await
    }

    async fn tasks(&self, filter: &TaskFilter) -> Result<Vec<Task>, StoreError> {
        if [&filter.agent, &filter.user]
            .into_iter()
            .flatten()
            .any(|v| !storable(v))
        {
            return Ok(Vec::new());
        }
        reads::tasks(&self.pool, filter).await
    }

    async fn task_revocations(&self, task: &str) -> Result<Vec<RevocationEntry>, StoreError> {
        if !storable(task) {
            // No stored key holds a NUL character (PostgreSQL text cannot).
            return Ok(Vec::new());
        }
        reads::task_revocations(&self.pool, task).await
    }

    async fn secrets(&self) -> Result<Vec<SecretInfo>, StoreError> {
        reads::secrets(&self.pool).await
    }

    async fn secret(&self, name: &str) -> Result<Option<StoredSecret>, StoreError> {
        if !storable(name) {
            // No stored key holds a NUL character (PostgreSQL text cannot).
            return Ok(None);
        }
        reads::secret(&self.pool, name).await
    }

    async fn checkpoints(&self) -> Result<Vec<Checkpoint>, StoreError> {
        reads::checkpoints(&self.pool).await
    }

    async fn audit_segments(&self) -> Result<Vec<SegmentRecord>, StoreError> {
        reads::audit_segments(&self.pool).await
    }

    async fn audit_seq_before(&self, time: &str) -> Result<Option<i64>, StoreError> {
        if !storable(time) {
            // No stored key holds a NUL character (PostgreSQL text cannot).
            return Ok(None);
        }
        reads::audit_seq_before(&self.pool, time).await
    }

    async fn approval(&self, id: &str) -> Result<Option<StoredApproval>, StoreError> {
        if !storable(id) {
            // No stored key holds a NUL character (PostgreSQL text cannot).
            return Ok(None);
        }
        reads::approval(&self.pool, id).await
    }

    async fn approvals(&self, filter: &ApprovalFilter) -> Result<Vec<StoredApproval>, StoreError> {
        if [&filter.agent, &filter.user, &filter.kind]
            .into_iter()
            .flatten()
            .any(|v| !storable(v))
        {
            return Ok(Vec::new());
        }
        reads::approvals(&self.pool, filter).await
    }

    async fn usage(&self, since: i64) -> Result<Usage, StoreError> {
        reads::usage(&self.pool, since).await
    }

    async fn justifications(&self) -> Result<Vec<Justification>, StoreError> {
        reads::justifications(&self.pool).await
    }

    async fn review(&self, id: &str) -> Result<Option<Review>, StoreError> {
        if !storable(id) {
            // No stored key holds a NUL character (PostgreSQL text cannot).
            return Ok(None);
        }
        reads::review(&self.pool, id).await
    }

    async fn reviews(&self, filter: &ReviewFilter) -> Result<Vec<Review>, StoreError> {
        if [&filter.agent, &filter.owner, &filter.campaign]
            .into_iter()
            .flatten()
            .any(|v| !storable(v))
        {
            return Ok(Vec::new());
        }
        reads::reviews(&self.pool, filter).await
    }

    async fn audit_counts(
        &self,
        since: &str,
    ) -> Result<mandate_core::compliance::AuditCounts, StoreError> {
        reads::audit_counts(&self.pool, since).await
    }

    async fn approval_counts(
        &self,
        since: i64,
        now: i64,
    ) -> Result<Vec<mandate_core::compliance::ApprovalCount>, StoreError> {
        reads::approval_counts(&self.pool, since, now).await
    }
}

//! The group-commit writer: the only code that writes to the database.
//!
//! One task owns one connection. It takes a unit (one request's ops), drains whatever other units
//! are already queued, and commits them all in one `BEGIN IMMEDIATE … COMMIT` transaction: one
//! fsync for the batch. Each unit runs inside its own savepoint, so a unit that fails is rolled
//! back alone and the others proceed. Replies go out only after `COMMIT` succeeded, so a caller
//! that awaits its reply never acts on a write that could still be lost.
//!
//! A batch of token issuances (single-use values, tasks, tokens, audit events and nothing else)
//! is first stored grouped, one multi-row statement per table ([`grouped`]); if any of its units
//! would fail, the batch is rolled back and replayed unit by unit as above.
//!
//! The audit chain head (last `seq`, `hash` and `time`) lives here, in memory; it is restored
//! whenever a unit or a batch is rolled back, so the chain stays gapless and linked.

use std::time::{Duration, Instant};

use sqlx::{Connection, Row, SqliteConnection};
use tokio::sync::{mpsc, oneshot};

use std::sync::Arc;

use super::task_cache::{TaskCache, changes_tasks};
use super::{grouped, ops};
pub(crate) use crate::shared_ops::Unit;
use crate::shared_ops::{ChainHead, Reply, Step, fail_batch, next_batch, steps};
use crate::{Op, OpOutput, StoreError};

/// The most units committed in one transaction.
pub(crate) const MAX_BATCH: usize = 256;

/// How often expired single-use values are purged.
const PURGE_EVERY: Duration = Duration::from_secs(60);

/// Reads the chain head from the last stored event.
async fn load_head(conn: &mut SqliteConnection) -> Result<ChainHead, StoreError> {
    let row = sqlx::query("SELECT seq, hash, time FROM audit_events ORDER BY seq DESC LIMIT 1")
        .fetch_optional(&mut *conn)
        .await?;
    match row {
        Some(r) => Ok(ChainHead {
            seq: r.try_get("seq")?,
            hash: r.try_get("hash")?,
            time: r.try_get("time")?,
        }),
        None => Ok(ChainHead::genesis()),
    }
}

/// The writer task's state.
pub(crate) struct Writer {
    conn: SqliteConnection,
    head: ChainHead,
    last_purge: Option<Instant>,
    /// The readers' task cache, emptied after a batch that may have changed a task.
    tasks: Arc<TaskCache>,
}

impl Writer {
    /// A writer over `conn`, whose chain head is read from the database.
    pub(crate) async fn new(
        mut conn: SqliteConnection,
        tasks: Arc<TaskCache>,
    ) -> Result<Writer, StoreError> {
        let head = load_head(&mut conn).await?;
        Ok(Writer {
            conn,
            head,
            last_purge: None,
            tasks,
        })
    }

    /// Commits units until every sender is gone and the queue is empty, then closes the
    /// connection.
    pub(crate) async fn run(mut self, mut rx: mpsc::Receiver<Unit>) {
        while let Some(batch) = next_batch(&mut rx, MAX_BATCH).await {
            self.commit_batch(batch).await;
        }
        if let Err(e) = self.conn.close().await {
            tracing::warn!(error = %e, "closing the writer connection failed");
        }
    }

    /// Commits one batch and answers each of its units.
    async fn commit_batch(&mut self, batch: Vec<Unit>) {
        let start_head = self.head.clone();
        let touches_tasks = batch.iter().any(|unit| changes_tasks(&unit.ops));
        if let Err(msg) = self.begin().await {
            tracing::error!(error = %msg, units = batch.len(), "write batch failed");
            fail_batch(Vec::new(), batch.into_iter().map(|unit| unit.reply), &msg);
            return;
        }

        self.maybe_purge().await;

        let mut outcomes: Vec<(oneshot::Sender<Reply>, Reply)> = Vec::with_capacity(batch.len());
        let mut fatal: Option<String> = None;
        let mut rest = Vec::new().into_iter();
        if grouped::eligible(&batch) {
            match grouped::apply(&mut self.conn, &mut self.head, &batch).await {
                Ok(outputs) => {
                    for (unit, out) in batch.into_iter().zip(outputs) {
                        outcomes.push((unit.reply, Ok(out)));
                    }
                }
                Err(why) => {
                    // Some unit would fail on its own: start over unit by unit.
                    tracing::debug!(reason = %why, units = batch.len(), "grouped write fell back");
                    self.head = start_head.clone();
                    if let Err(e) = exec(&mut self.conn, "ROLLBACK").await {
                        fatal = Some(format!("could not roll back a grouped write: {e}"));
                    } else if let Err(msg) = self.begin().await {
                        fatal = Some(msg);
                    }
                    rest = batch.into_iter();
                }
            }
        } else {
            rest = batch.into_iter();
        }

        if fatal.is_none() {
            for unit in rest.by_ref() {
                match self.apply_unit(unit.ops).await {
                    Ok(result) => outcomes.push((unit.reply, result)),
                    Err(msg) => {
                        let _ = unit.reply.send(Err(StoreError::Database(msg.clone())));
                        fatal = Some(msg);
                        break;
                    }
                }
            }
        }

        if fatal.is_none()
            && let Err(e) = exec(&mut self.conn, "COMMIT").await
        {
            fatal = Some(format!("commit failed: {e}"));
        }
        if touches_tasks {
            // After the commit (a read from before it must not refill the cache) and before
            // any answer (no caller learns of the change while the cache still has the old row).
            self.tasks.invalidate();
        }

        match fatal {
            None => {
                for (reply, result) in outcomes {
                    let _ = reply.send(result);
                }
            }
            Some(msg) => {
                tracing::error!(error = %msg, "write batch rolled back");
                let _ = exec(&mut self.conn, "ROLLBACK").await;
                self.head = match load_head(&mut self.conn).await {
                    Ok(h) => h,
                    Err(_) => start_head,
                };
                fail_batch(outcomes, rest.map(|unit| unit.reply), &msg);
            }
        }
    }

    /// Opens the batch's write transaction.
    async fn begin(&mut self) -> Result<(), String> {
        exec(&mut self.conn, "BEGIN IMMEDIATE")
            .await
            .map_err(|e| format!("could not start a write transaction: {e}"))
    }

    /// Runs one unit inside a savepoint. `Ok` carries the unit's own outcome (its ops' outputs,
    /// or the error that rolled it back alone); `Err` means the transaction itself is broken and
    /// the whole batch must be abandoned.
    async fn apply_unit(&mut self, unit_ops: Vec<Op>) -> Result<Reply, String> {
        exec(&mut self.conn, "SAVEPOINT unit")
            .await
            .map_err(|e| format!("could not open a savepoint: {e}"))?;
        let before = self.head.clone();
        let mut outputs = Vec::with_capacity(unit_ops.len());
        let mut failure = None;
        for step in steps(unit_ops) {
            let applied = match step {
                // Consecutive audit events (a gateway's batch) are stored together.
                Step::Audits(events) => ops::append_audits(&mut self.conn, &mut self.head, events)
                    .await
                    .map(|events| outputs.extend(events.into_iter().map(OpOutput::Audit))),
                Step::One(op) => ops::apply(&mut self.conn, &mut self.head, op)
                    .await
                    .map(|out| outputs.push(out)),
            };
            if let Err(e) = applied {
                failure = Some(e);
                break;
            }
        }
        match failure {
            None => {
                exec(&mut self.conn, "RELEASE unit")
                    .await
                    .map_err(|e| format!("could not release a savepoint: {e}"))?;
                Ok(Ok(outputs))
            }
            Some(e) => {
                self.head = before;
                exec(&mut self.conn, "ROLLBACK TO unit")
                    .await
                    .map_err(|re| format!("could not roll back a failed unit ({e}): {re}"))?;
                exec(&mut self.conn, "RELEASE unit")
                    .await
                    .map_err(|re| format!("could not release a savepoint: {re}"))?;
                Ok(Err(e))
            }
        }
    }

    /// Deletes expired single-use values, at most once per [`PURGE_EVERY`]. Runs inside the
    /// batch's transaction; a failure only delays the purge.
    async fn maybe_purge(&mut self) {
        if self.last_purge.is_some_and(|t| t.elapsed() < PURGE_EVERY) {
            return;
        }
        self.last_purge = Some(Instant::now());
        let purged = sqlx::query("DELETE FROM used_once WHERE exp < ?")
            .bind(super::unix_now())
            .execute(&mut self.conn)
            .await;
        match purged {
            Ok(r) if r.rows_affected() > 0 => {
                tracing::debug!(rows = r.rows_affected(), "purged expired single-use values");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "purging expired single-use values failed"),
        }
    }
}

/// Runs one statement without parameters.
async fn exec(conn: &mut SqliteConnection, sql: &'static str) -> Result<(), sqlx::Error> {
    sqlx::query(sql).execute(conn).await.map(|_| ())
}

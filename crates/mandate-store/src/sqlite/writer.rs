//! The group-commit writer: the only code that writes to the database.
//!
//! One task owns one connection. It takes a unit (one request's ops), drains whatever other units
//! are already queued, and commits them all in one `BEGIN IMMEDIATE … COMMIT` transaction: one
//! fsync for the batch. Each unit runs inside its own savepoint, so a unit that fails is rolled
//! back alone and the others proceed. Replies go out only after `COMMIT` succeeded, so a caller
//! that awaits its reply never acts on a write that could still be lost.
//!
//! The audit chain head (last `seq`, `hash` and `time`) lives here, in memory; it is restored
//! whenever a unit or a batch is rolled back, so the chain stays gapless and linked.

use std::time::{Duration, Instant};

use mandate_core::audit::GENESIS_HASH;
use sqlx::{Connection, Row, SqliteConnection};
use tokio::sync::{mpsc, oneshot};

use super::ops;
use crate::{Op, OpOutput, StoreError};

/// The most units committed in one transaction.
pub(crate) const MAX_BATCH: usize = 256;

/// How often expired single-use values are purged.
const PURGE_EVERY: Duration = Duration::from_secs(60);

/// What a caller gets back for its unit.
pub(crate) type Reply = Result<Vec<OpOutput>, StoreError>;

/// One request's writes and where to send the outcome.
pub(crate) struct Unit {
    /// The ops, applied in order.
    pub(crate) ops: Vec<Op>,
    /// Where the outcome goes once it is durable (or failed).
    pub(crate) reply: oneshot::Sender<Reply>,
}

/// The end of the audit chain: where the next event attaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChainHead {
    /// `seq` of the last event (0 when the log is empty).
    pub(crate) seq: i64,
    /// `hash` of the last event ([`GENESIS_HASH`] when the log is empty).
    pub(crate) hash: String,
    /// `time` of the last event (empty when the log is empty). RFC 3339 UTC with milliseconds
    /// in a fixed width, so text order is time order.
    pub(crate) time: String,
}

impl ChainHead {
    /// Reads the head from the last stored event.
    pub(crate) async fn load(conn: &mut SqliteConnection) -> Result<ChainHead, StoreError> {
        let row = sqlx::query("SELECT seq, hash, time FROM audit_events ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut *conn)
            .await?;
        match row {
            Some(r) => Ok(ChainHead {
                seq: r.try_get("seq")?,
                hash: r.try_get("hash")?,
                time: r.try_get("time")?,
            }),
            None => Ok(ChainHead {
                seq: 0,
                hash: GENESIS_HASH.to_owned(),
                time: String::new(),
            }),
        }
    }
}

/// The writer task's state.
pub(crate) struct Writer {
    conn: SqliteConnection,
    head: ChainHead,
    last_purge: Option<Instant>,
}

impl Writer {
    /// A writer over `conn`, whose chain head is read from the database.
    pub(crate) async fn new(mut conn: SqliteConnection) -> Result<Writer, StoreError> {
        let head = ChainHead::load(&mut conn).await?;
        Ok(Writer {
            conn,
            head,
            last_purge: None,
        })
    }

    /// Commits units until every sender is gone and the queue is empty, then closes the
    /// connection.
    pub(crate) async fn run(mut self, mut rx: mpsc::Receiver<Unit>) {
        while let Some(first) = rx.recv().await {
            let mut batch = Vec::with_capacity(8);
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(unit) => batch.push(unit),
                    Err(_) => break,
                }
            }
            self.commit_batch(batch).await;
        }
        if let Err(e) = self.conn.close().await {
            tracing::warn!(error = %e, "closing the writer connection failed");
        }
    }

    /// Commits one batch and answers each of its units.
    async fn commit_batch(&mut self, batch: Vec<Unit>) {
        let start_head = self.head.clone();
        if let Err(e) = exec(&mut self.conn, "BEGIN IMMEDIATE").await {
            let msg = format!("could not start a write transaction: {e}");
            tracing::error!(error = %msg, units = batch.len(), "write batch failed");
            for unit in batch {
                let _ = unit.reply.send(Err(StoreError::Database(msg.clone())));
            }
            return;
        }

        self.maybe_purge().await;

        let mut outcomes: Vec<(oneshot::Sender<Reply>, Reply)> = Vec::with_capacity(batch.len());
        let mut fatal: Option<String> = None;
        let mut units = batch.into_iter();
        for unit in units.by_ref() {
            match self.apply_unit(unit.ops).await {
                Ok(result) => outcomes.push((unit.reply, result)),
                Err(msg) => {
                    let _ = unit.reply.send(Err(StoreError::Database(msg.clone())));
                    fatal = Some(msg);
                    break;
                }
            }
        }

        if fatal.is_none()
            && let Err(e) = exec(&mut self.conn, "COMMIT").await
        {
            fatal = Some(format!("commit failed: {e}"));
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
                self.head = match ChainHead::load(&mut self.conn).await {
                    Ok(h) => h,
                    Err(_) => start_head,
                };
                let err = || StoreError::Database(msg.clone());
                for (reply, result) in outcomes {
                    // A unit that failed on its own keeps its own error: it is still the reason
                    // it did not happen.
                    let _ = reply.send(match result {
                        Ok(_) => Err(err()),
                        Err(own) => Err(own),
                    });
                }
                for unit in units {
                    let _ = unit.reply.send(Err(err()));
                }
            }
        }
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
        let mut pending = unit_ops.into_iter().peekable();
        while let Some(op) = pending.next() {
            // Consecutive audit events (a gateway's batch) are stored together.
            if let Op::Audit(first) = op {
                let mut batch = vec![first];
                while let Some(Op::Audit(_)) = pending.peek() {
                    if let Some(Op::Audit(next)) = pending.next() {
                        batch.push(next);
                    }
                }
                match ops::append_audits(&mut self.conn, &mut self.head, batch).await {
                    Ok(events) => outputs.extend(events.into_iter().map(OpOutput::Audit)),
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
                continue;
            }
            match ops::apply(&mut self.conn, &mut self.head, op).await {
                Ok(out) => outputs.push(out),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
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

//! The group-commit writer for PostgreSQL: the only code that writes to the database.
//!
//! One task per process owns one connection. It takes a unit (one request's ops), drains
//! whatever other units are already queued, and commits them all in one transaction. Each unit
//! runs inside its own savepoint, so a unit that fails is rolled back alone and the others
//! proceed. Replies go out only after `COMMIT` succeeded, so a caller that awaits its reply never
//! acts on a write that could still be lost.
//!
//! Several processes may write the same database. Every batch transaction first takes the
//! transaction-scoped advisory lock [`WRITE_LOCK`], and only then reads the audit chain head
//! (another node may have appended since this one's last batch): every number handed out in the
//! transaction — audit `seq`, revocation feed `seq`, task step numbers — follows the last
//! committed one, and commit order is number order across nodes.
//!
//! Just before `COMMIT`, the transaction announces what its successful units changed on the
//! [`CHANNEL`] (`pg_notify`, delivered to every listening process when, and only if, it commits).
//!
//! A broken connection (PostgreSQL restarted, network down) fails the batch it broke; the writer
//! connects again, with a short backoff, when the next batch comes. It stops only once every
//! sender is gone and the queue is empty.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection, Row};
use tokio::sync::{mpsc, oneshot};

use super::listen::CHANNEL;
use super::ops;
use crate::shared_ops::{ChainHead, Step, fail_batch, fill_batch, steps, unix_now};
pub(crate) use crate::shared_ops::{Reply, Unit};
use crate::{Change, Op, OpOutput, StoreError};

/// The most units committed in one transaction.
pub(crate) const MAX_BATCH: usize = 256;

/// The transaction-scoped advisory lock every write transaction takes first.
pub(crate) const WRITE_LOCK: i64 = 0x6d61_6e64_6174_6500;

/// How often expired single-use values are purged.
const PURGE_EVERY: Duration = Duration::from_secs(60);
/// The longest a batch may take, waiting for the write lock included, before its connection is
/// given up as unresponsive (a network that drops packets without resetting the connection).
const BATCH_TIMEOUT: Duration = Duration::from_secs(120);
/// The longest a statement that waits for nothing (`BEGIN`, `ROLLBACK`) may take before the
/// connection is given up.
const QUICK_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a batch waits for the connection to come back before it fails.
const RECONNECT_PATIENCE: Duration = Duration::from_secs(5);
/// The first pause between connection attempts; it doubles up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(100);
/// The longest pause between connection attempts.
const RETRY_MAX: Duration = Duration::from_secs(1);

/// The writer task's state.
pub(crate) struct Writer {
    /// How to connect (again).
    options: PgConnectOptions,
    /// The connection; `None` after it broke, until the next batch connects again.
    conn: Option<PgConnection>,
    /// No connection attempt before this instant (a backoff after a failure).
    retry_at: Option<Instant>,
    /// When expired single-use values were last purged.
    last_purge: Option<Instant>,
}

/// A batch that did not commit.
struct Failed {
    /// Why, for every unit that did not fail on its own.
    msg: String,
    /// The outcomes of the units applied before the failure, in order.
    applied: Vec<Reply>,
    /// A unit failed on its own in a batch run without savepoints: run the batch again with
    /// them, so that only that unit fails.
    again_with_savepoints: bool,
}

impl Failed {
    fn new(msg: String, applied: Vec<Reply>) -> Failed {
        Failed {
            msg,
            applied,
            again_with_savepoints: false,
        }
    }
}

/// How a batch's units are kept apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Isolation {
    /// No savepoints: two round trips fewer per unit. A unit that fails abandons the attempt,
    /// which is then made again with [`Isolation::Savepoints`]. Units rarely fail (a replayed
    /// assertion, a duplicate id), so this is the first attempt of every batch.
    Optimistic,
    /// Each unit in its own savepoint: a unit that fails is rolled back alone.
    Savepoints,
}

impl Writer {
    /// A writer that connects with `options`; the first connection is made now, so a database
    /// that cannot be reached is reported at start.
    pub(crate) async fn new(options: PgConnectOptions) -> Result<Writer, StoreError> {
        let conn = connect(&options).await.map_err(StoreError::Database)?;
        Ok(Writer {
            options,
            conn: Some(conn),
            retry_at: None,
            last_purge: None,
        })
    }

    /// Commits units until every sender is gone and the queue is empty, then closes the
    /// connection.
    pub(crate) async fn run(mut self, mut rx: mpsc::Receiver<Unit>) {
        while let Some(first) = rx.recv().await {
            // Start the transaction first (connecting if needed): what is queued meanwhile
            // joins this batch.
            let began = self.begin().await;
            let batch = fill_batch(first, &mut rx, MAX_BATCH);
            match began {
                Ok(()) => self.commit_batch(batch).await,
                Err(msg) => {
                    tracing::error!(error = %msg, units = batch.len(), "write batch failed");
                    fail_batch(Vec::new(), batch.into_iter().map(|u| u.reply), &msg);
                }
            }
        }
        if let Some(conn) = self.conn.take()
            && let Err(e) = conn.close().await
        {
            tracing::warn!(error = %e, "closing the writer connection failed");
        }
    }

    /// Makes sure there is a connection, trying again with a growing pause for at most
    /// [`RECONNECT_PATIENCE`]. The error says why the database cannot be reached.
    async fn reconnect(&mut self) -> Result<(), String> {
        if self.conn.is_some() {
            return Ok(());
        }
        let give_up = Instant::now() + RECONNECT_PATIENCE;
        let mut pause = RETRY_FIRST;
        loop {
            if let Some(at) = self.retry_at.take() {
                tokio::time::sleep_until(at.into()).await;
            }
            match connect(&self.options).await {
                Ok(conn) => {
                    tracing::info!("the store writer is connected to PostgreSQL again");
                    self.conn = Some(conn);
                    return Ok(());
                }
                Err(msg) => {
                    let next = Instant::now() + pause;
                    self.retry_at = Some(next);
                    pause = (pause * 2).min(RETRY_MAX);
                    if next >= give_up {
                        return Err(msg);
                    }
                    tracing::warn!(error = %msg, "the writer cannot reach PostgreSQL; retrying");
                }
            }
        }
    }

    /// Starts the batch's transaction, on a connection made again if there is none. A connection
    /// that broke while idle (PostgreSQL restarted, the network was down) is only found out now:
    /// nothing was written yet, so it is replaced and `BEGIN` tried once more.
    async fn begin(&mut self) -> Result<(), String> {
        let mut retried = false;
        loop {
            self.reconnect().await?;
            let Some(conn) = self.conn.as_mut() else {
                return Err("the store writer has no connection".to_owned());
            };
            // Read committed: each statement sees what other nodes committed before it, so the
            // chain head read after the lock is the committed one, whatever the default level.
            let began = tokio::time::timeout(
                QUICK_TIMEOUT,
                exec(conn, "BEGIN ISOLATION LEVEL READ COMMITTED"),
            )
            .await;
            let why = match began {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("no answer within {} s", QUICK_TIMEOUT.as_secs()),
            };
            self.drop_connection();
            if retried {
                return Err(format!("could not start a write transaction: {why}"));
            }
            tracing::warn!(error = %why, "the writer connection is broken; reconnecting");
            retried = true;
        }
    }

    /// Gives the connection up (it broke, or its state is unknown); the next batch connects
    /// again after a short pause.
    fn drop_connection(&mut self) {
        self.conn = None;
        self.retry_at = Some(Instant::now() + RETRY_FIRST);
    }

    /// Commits one batch, whose transaction [`Writer::begin`] started, and answers each of its
    /// units.
    async fn commit_batch(&mut self, batch: Vec<Unit>) {
        let purge = self.last_purge.is_none_or(|t| t.elapsed() >= PURGE_EVERY);
        if purge {
            self.last_purge = Some(Instant::now());
        }
        let (units, replies): (Vec<Vec<Op>>, Vec<oneshot::Sender<Reply>>) =
            batch.into_iter().map(|u| (u.ops, u.reply)).unzip();
        // First without savepoints; if a unit fails on its own, once more with them.
        let mut outcome = self
            .attempt(units.clone(), purge, Isolation::Optimistic)
            .await;
        if outcome
            .as_ref()
            .is_err_and(|failed| failed.again_with_savepoints)
        {
            self.roll_back().await;
            outcome = match self.begin().await {
                Ok(()) => self.attempt(units, purge, Isolation::Savepoints).await,
                Err(msg) => Err(Failed::new(msg, Vec::new())),
            };
        }
        self.answer(outcome, replies).await;
    }

    /// Runs the batch once in the transaction already begun, within [`BATCH_TIMEOUT`].
    async fn attempt(
        &mut self,
        units: Vec<Vec<Op>>,
        purge: bool,
        isolation: Isolation,
    ) -> Result<Vec<Reply>, Failed> {
        let Some(conn) = self.conn.as_mut() else {
            return Err(Failed::new(
                "the store writer has no connection".to_owned(),
                Vec::new(),
            ));
        };
        match tokio::time::timeout(BATCH_TIMEOUT, transact(conn, units, purge, isolation)).await {
            Ok(outcome) => outcome,
            Err(_) => {
                // The connection is mid-statement: its state is unknown. PostgreSQL rolls the
                // transaction back when it notices the session is gone.
                self.drop_connection();
                Err(Failed::new(
                    format!(
                        "the write transaction took longer than {} s; its connection was dropped",
                        BATCH_TIMEOUT.as_secs()
                    ),
                    Vec::new(),
                ))
            }
        }
    }

    /// Answers each unit of a batch: its own outcome once committed, or the batch's failure
    /// (after rolling back).
    async fn answer(
        &mut self,
        outcome: Result<Vec<Reply>, Failed>,
        replies: Vec<oneshot::Sender<Reply>>,
    ) {
        match outcome {
            Ok(results) => {
                for (reply, result) in replies.into_iter().zip(results) {
                    let _ = reply.send(result);
                }
            }
            Err(failed) => {
                let units = replies.len();
                tracing::error!(error = %failed.msg, units, "write batch rolled back");
                self.roll_back().await;
                let mut replies = replies.into_iter();
                let outcomes: Vec<_> = replies.by_ref().zip(failed.applied).collect();
                fail_batch(outcomes, replies, &failed.msg);
            }
        }
    }

    /// Ends a failed batch's transaction; a connection that cannot even do that is given up.
    async fn roll_back(&mut self) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        match tokio::time::timeout(QUICK_TIMEOUT, exec(conn, "ROLLBACK")).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "the writer connection is broken; reconnecting");
                self.drop_connection();
            }
            Err(_) => {
                tracing::warn!("the writer connection does not answer; reconnecting");
                self.drop_connection();
            }
        }
    }
}

/// Opens the writer's connection.
async fn connect(options: &PgConnectOptions) -> Result<PgConnection, String> {
    match tokio::time::timeout(CONNECT_TIMEOUT, options.connect()).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(format!("cannot connect to PostgreSQL: {e}")),
        Err(_) => Err(format!(
            "cannot connect to PostgreSQL: no answer within {} s",
            CONNECT_TIMEOUT.as_secs()
        )),
    }
}

/// Runs one batch in the transaction [`Writer::begin`] started: lock, chain head, purge (if
/// due), each unit in its savepoint, announcements, `COMMIT`. `Ok` carries each unit's outcome,
/// in order, once committed; `Err` means nothing of the batch was committed (the caller rolls
/// back).
async fn transact(
    conn: &mut PgConnection,
    units: Vec<Vec<Op>>,
    purge: bool,
    isolation: Isolation,
) -> Result<Vec<Reply>, Failed> {
    let fail = |what: &str, e: &dyn std::fmt::Display| Failed::new(format!("{what}: {e}"), vec![]);
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(WRITE_LOCK)
        .execute(&mut *conn)
        .await
        .map_err(|e| fail("could not take the write lock", &e))?;
    let mut head = load_head(conn)
        .await
        .map_err(|e| fail("could not read the audit chain head", &e))?;
    if purge {
        purge_used_once(conn)
            .await
            .map_err(|e| fail("could not purge single-use values", &e))?;
    }

    let mut results = Vec::with_capacity(units.len());
    let mut changes = Changes::default();
    for unit in units {
        match apply_unit(conn, &mut head, unit, &mut changes, isolation).await {
            Ok(Err(_)) if isolation == Isolation::Optimistic => {
                let mut failed = Failed::new("a unit failed; trying again".to_owned(), Vec::new());
                failed.again_with_savepoints = true;
                return Err(failed);
            }
            Ok(result) => results.push(result),
            Err(msg) => return Err(Failed::new(msg, results)),
        }
    }
    if let Err(e) = changes.announce(conn).await {
        return Err(Failed::new(
            format!("could not announce the changes: {e}"),
            results,
        ));
    }
    if let Err(e) = exec(conn, "COMMIT").await {
        return Err(Failed::new(format!("commit failed: {e}"), results));
    }
    Ok(results)
}

/// Runs one unit inside a savepoint. `Ok` carries the unit's own outcome (its ops' outputs, or
/// the error that rolled it back alone, with `head` restored); `Err` means the transaction itself
/// is broken and the whole batch must be abandoned. The unit's changes join `changes` only if
/// it succeeded.
async fn apply_unit(
    conn: &mut PgConnection,
    head: &mut ChainHead,
    unit: Vec<Op>,
    changes: &mut Changes,
    isolation: Isolation,
) -> Result<Reply, String> {
    let savepoint = isolation == Isolation::Savepoints;
    if savepoint {
        exec(conn, "SAVEPOINT unit")
            .await
            .map_err(|e| format!("could not open a savepoint: {e}"))?;
    }
    let before = head.clone();
    let mut outputs = Vec::with_capacity(unit.len());
    let mut announced = Vec::new();
    let mut failure = None;
    for step in steps(unit) {
        let applied = match step {
            // Consecutive audit events (a gateway's batch) are stored together.
            Step::Audits(events) => ops::append_audits(conn, head, events)
                .await
                .map(|events| outputs.extend(events.into_iter().map(OpOutput::Audit))),
            Step::One(op) => {
                let announce = Announce::of(&op);
                ops::apply(conn, head, op).await.map(|out| {
                    announced.extend(announce.with(&out));
                    outputs.push(out);
                })
            }
        };
        if let Err(e) = applied {
            failure = Some(e);
            break;
        }
    }
    match failure {
        None => {
            if savepoint {
                exec(conn, "RELEASE SAVEPOINT unit")
                    .await
                    .map_err(|e| format!("could not release a savepoint: {e}"))?;
            }
            changes.extend(announced);
            Ok(Ok(outputs))
        }
        // Without a savepoint the transaction is spoilt: the caller starts the batch again.
        Some(e) if !savepoint => Ok(Err(e)),
        Some(e) => {
            *head = before;
            exec(conn, "ROLLBACK TO SAVEPOINT unit")
                .await
                .map_err(|re| format!("could not roll back a failed unit ({e}): {re}"))?;
            exec(conn, "RELEASE SAVEPOINT unit")
                .await
                .map_err(|re| format!("could not release a savepoint: {re}"))?;
            Ok(Err(e))
        }
    }
}

/// Reads the chain head from the last stored event (the newest event is never archived).
async fn load_head(conn: &mut PgConnection) -> Result<ChainHead, StoreError> {
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

/// Deletes expired single-use values inside the batch's transaction, in a savepoint of its own:
/// a failed purge is only logged (it is tried again next time). `Err` only if the transaction
/// itself is broken.
async fn purge_used_once(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    exec(conn, "SAVEPOINT purge").await?;
    let purged = sqlx::query("DELETE FROM used_once WHERE exp < $1")
        .bind(unix_now())
        .execute(&mut *conn)
        .await;
    match purged {
        Ok(r) => {
            if r.rows_affected() > 0 {
                tracing::debug!(rows = r.rows_affected(), "purged expired single-use values");
            }
            exec(conn, "RELEASE SAVEPOINT purge").await
        }
        Err(e) => {
            tracing::warn!(error = %e, "purging expired single-use values failed");
            exec(conn, "ROLLBACK TO SAVEPOINT purge").await?;
            exec(conn, "RELEASE SAVEPOINT purge").await
        }
    }
}

/// What an op announces once committed, known before it runs (it is consumed by running) and
/// completed with its output.
enum Announce {
    /// Nothing other processes need to know.
    Nothing,
    /// This change.
    Change(Change),
    /// The revocation the op records, by the feed sequence number in its output.
    Revocation,
    /// The approval, if the op claimed it.
    IfClaimed(String),
}

impl Announce {
    fn of(op: &Op) -> Announce {
        match op {
            Op::Revoke { .. } => Announce::Revocation,
            Op::InsertAgent(_)
            | Op::UpdateAgent(_)
            | Op::SetAgentStatus { .. }
            | Op::AddAgentKey { .. }
            | Op::RemoveAgentKey { .. }
            | Op::RevokeAgentKey { .. } => Announce::Change(Change::Agents),
            Op::InsertSigningKey(_) | Op::RetireSigningKey { .. } => {
                Announce::Change(Change::SigningKeys)
            }
            Op::InsertAdminCredential(_) => Announce::Change(Change::AdminCredentials),
            Op::InsertApproval(a) => Announce::Change(Change::Approval(a.approval.id.clone())),
            Op::DecideApproval { id, .. } | Op::FinishApproval { id, .. } => {
                Announce::Change(Change::Approval(id.clone()))
            }
            Op::ClaimApproval { id } => Announce::IfClaimed(id.clone()),
            Op::PutSecret(_) | Op::DeleteSecret { .. } => Announce::Change(Change::Secrets),
            _ => Announce::Nothing,
        }
    }

    /// The change to announce, given what the op produced.
    fn with(self, output: &OpOutput) -> Option<Change> {
        match (self, output) {
            (Announce::Nothing, _) => None,
            (Announce::Change(change), _) => Some(change),
            (Announce::Revocation, OpOutput::Revoked(entry)) => Some(Change::Revocation(entry.seq)),
            (Announce::IfClaimed(id), OpOutput::Claimed(true)) => Some(Change::Approval(id)),
            _ => None,
        }
    }
}

/// The distinct changes of a batch's successful units, in the order they happened.
#[derive(Default)]
struct Changes {
    texts: Vec<String>,
    seen: HashSet<String>,
}

impl Changes {
    fn extend(&mut self, changes: impl IntoIterator<Item = Change>) {
        for change in changes {
            let text = change.to_text();
            if self.seen.insert(text.clone()) {
                self.texts.push(text);
            }
        }
    }

    /// Sends every change on [`CHANNEL`], inside the transaction (delivered on commit).
    async fn announce(self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        match self.texts.as_slice() {
            [] => Ok(()),
            [one] => {
                sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(CHANNEL)
                    .bind(one)
                    .execute(&mut *conn)
                    .await?;
                Ok(())
            }
            _ => {
                // One round trip for all, in order.
                sqlx::query(
                    "SELECT pg_notify($1, c) FROM unnest($2::text[]) WITH ORDINALITY AS u (c, n) \
                     ORDER BY n",
                )
                .bind(CHANNEL)
                .bind(&self.texts)
                .execute(&mut *conn)
                .await?;
                Ok(())
            }
        }
    }
}

/// Runs one statement without parameters.
async fn exec(conn: &mut PgConnection, sql: &'static str) -> Result<(), sqlx::Error> {
    sqlx::query(sql).execute(conn).await.map(|_| ())
}

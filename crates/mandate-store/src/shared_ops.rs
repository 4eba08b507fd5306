//! What both backends' writers share, with no SQL in it: the unit and batch plumbing of the
//! group-commit writer, sealing audit events onto the chain head, the audit events a revocation
//! or a task step carries, and the decisions an op makes from what it read (is the task still
//! active, may this segment be archived, what does a decision do to an approval record).
//!
//! Each backend runs the statements; this module decides what they mean, so SQLite and
//! PostgreSQL answer an op the same way.

use std::collections::BTreeSet;
use std::time::{SystemTime, UNIX_EPOCH};

use mandate_core::approval::{Approval, Decided};
use mandate_core::audit::{AuditEvent, GENESIS_HASH, NewEvent};
use mandate_core::task::TokenRecord;
use mandate_core::time::rfc3339_millis;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::{Op, OpOutput, RevocationEntry, RevokedToken, SegmentRecord, StoreError};

// The writer's units and batches

/// What a caller gets back for its unit.
pub(crate) type Reply = Result<Vec<OpOutput>, StoreError>;

/// One request's writes and where to send the outcome.
pub(crate) struct Unit {
    /// The ops, applied in order.
    pub(crate) ops: Vec<Op>,
    /// Where the outcome goes once it is durable (or failed).
    pub(crate) reply: oneshot::Sender<Reply>,
}

/// Waits for a unit, then takes whatever other units are already queued, up to `max` in all.
/// `None` once every sender is gone and the queue is empty.
pub(crate) async fn next_batch(rx: &mut mpsc::Receiver<Unit>, max: usize) -> Option<Vec<Unit>> {
    let first = rx.recv().await?;
    Some(fill_batch(first, rx, max))
}

/// A batch of `first` and whatever other units are already queued, up to `max` in all.
pub(crate) fn fill_batch(first: Unit, rx: &mut mpsc::Receiver<Unit>, max: usize) -> Vec<Unit> {
    let mut batch = Vec::with_capacity(8);
    batch.push(first);
    while batch.len() < max {
        match rx.try_recv() {
            Ok(unit) => batch.push(unit),
            Err(_) => break,
        }
    }
    batch
}

/// Answers every unit of a batch that did not commit. A unit that had failed on its own keeps
/// its own error (it is still the reason it did not happen); every other one, including those
/// not reached (`rest`), gets `StoreError::Database(msg)`.
pub(crate) fn fail_batch(
    outcomes: Vec<(oneshot::Sender<Reply>, Reply)>,
    rest: impl IntoIterator<Item = oneshot::Sender<Reply>>,
    msg: &str,
) {
    let err = || StoreError::Database(msg.to_owned());
    for (reply, result) in outcomes {
        let _ = reply.send(match result {
            Ok(_) => Err(err()),
            Err(own) => Err(own),
        });
    }
    for reply in rest {
        let _ = reply.send(Err(err()));
    }
}

/// One step of a unit: an op on its own, or a run of consecutive audit events stored together
/// (a gateway's batch).
#[allow(
    clippy::large_enum_variant,
    reason = "a step lives while one op is applied; boxing the op would only add an allocation"
)]
pub(crate) enum Step {
    /// Consecutive [`Op::Audit`]s, in order.
    Audits(Vec<NewEvent>),
    /// Any other op.
    One(Op),
}

/// A unit's ops as [`Step`]s: each run of consecutive [`Op::Audit`]s becomes one step.
pub(crate) fn steps(ops: Vec<Op>) -> impl Iterator<Item = Step> {
    let mut pending = ops.into_iter().peekable();
    std::iter::from_fn(move || {
        let op = pending.next()?;
        let Op::Audit(first) = op else {
            return Some(Step::One(op));
        };
        let mut events = vec![first];
        while let Some(Op::Audit(_)) = pending.peek() {
            if let Some(Op::Audit(next)) = pending.next() {
                events.push(next);
            }
        }
        Some(Step::Audits(events))
    })
}

// The audit chain

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
    /// The head of an empty log.
    pub(crate) fn genesis() -> ChainHead {
        ChainHead {
            seq: 0,
            hash: GENESIS_HASH.to_owned(),
            time: String::new(),
        }
    }

    /// Seals `new` as the next event, stamped `now` (RFC 3339, as stored) — or the previous
    /// event's time if the system clock stepped back — and advances the head past it.
    pub(crate) fn seal(&mut self, new: NewEvent, now: &str) -> AuditEvent {
        // Never earlier than the previous event, even if the system clock stepped back.
        let time = if now < self.time.as_str() {
            self.time.clone()
        } else {
            now.to_owned()
        };
        let e = AuditEvent::seal(new, self.seq + 1, time, self.hash.clone());
        self.seq = e.seq;
        self.hash = e.hash.clone();
        self.time = e.time.clone();
        e
    }

    /// Seals `events` one after another onto the head, all stamped with the current time.
    pub(crate) fn seal_all(&mut self, events: Vec<NewEvent>) -> Vec<AuditEvent> {
        let now = now_rfc3339();
        events.into_iter().map(|new| self.seal(new, &now)).collect()
    }
}

/// The current time as audit events store it.
pub(crate) fn now_rfc3339() -> String {
    rfc3339_millis(unix_now_ms())
}

/// The agent index rows of `events`: each distinct agent of an event's chain with its `seq`.
pub(crate) fn agent_rows(events: &[AuditEvent]) -> Vec<(&str, i64)> {
    events
        .iter()
        .flat_map(|e| {
            let agents: BTreeSet<&str> = e.chain.iter().map(String::as_str).collect();
            agents.into_iter().map(move |a| (a, e.seq))
        })
        .collect()
}

/// `detail` (a JSON object, as text) with `facts` merged in; a detail that is not an object is
/// replaced by one holding only the facts.
fn merged_detail(detail: &str, facts: Vec<(&str, serde_json::Value)>) -> String {
    let mut map = match serde_json::from_str::<serde_json::Value>(detail) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    for (key, value) in facts {
        map.insert(key.to_owned(), value);
    }
    serde_json::Value::Object(map).to_string()
}

/// The revocation's audit event with what it ended merged into `detail`: the revocation id,
/// its feed sequence number, how many tokens it ended and the first 100 of their `jti`s.
pub(crate) fn revocation_event(mut event: NewEvent, entry: &RevocationEntry) -> NewEvent {
    let jtis: Vec<&str> = entry
        .tokens
        .iter()
        .take(100)
        .map(|t| t.jti.as_str())
        .collect();
    event.detail = merged_detail(
        &event.detail,
        vec![
            ("revocation", entry.record.id.clone().into()),
            ("feed_seq", entry.seq.into()),
            ("tokens_ended", entry.tokens.len().into()),
            ("jtis", jtis.into()),
        ],
    );
    event
}

/// A task step's audit event with the step number merged into `detail` (`"step": n`).
pub(crate) fn step_event(mut event: NewEvent, step: i64) -> NewEvent {
    event.detail = merged_detail(&event.detail, vec![("step", step.into())]);
    event
}

// Tokens and revocations

/// The `token_actors` rows of a token: one per position of its chain or credentials, with the
/// agent and the credential at that position (either may be missing).
pub(crate) fn token_actors(t: &TokenRecord) -> Vec<(i64, Option<&str>, Option<&str>)> {
    let actors = t.chain.len().max(t.credentials.len());
    (0..actors)
        .map(|pos| {
            (
                i64::try_from(pos).unwrap_or(i64::MAX),
                t.chain.get(pos).map(String::as_str),
                t.credentials.get(pos).map(String::as_str),
            )
        })
        .collect()
}

/// The tokens a revocation ended, ordered by `jti`, and their JSON text (the `ended` column).
pub(crate) fn ended_tokens(
    mut ended: Vec<RevokedToken>,
) -> Result<(Vec<RevokedToken>, String), StoreError> {
    ended.sort_by(|a, b| a.jti.cmp(&b.jti));
    let text = serde_json::to_string(&ended).map_err(|e| StoreError::Database(e.to_string()))?;
    Ok((ended, text))
}

// Tasks

/// Refuses a step on a task that is not `active`.
pub(crate) fn check_step(task: &str, status: String) -> Result<(), StoreError> {
    if status == "active" {
        Ok(())
    } else {
        Err(StoreError::TaskNotActive {
            id: task.to_owned(),
            status,
        })
    }
}

/// Whether a task may be completed: it was active before this unit, so it is either still
/// `active` or `revoked` by exactly one task revocation (the one that, in this unit, ended its
/// tokens) and was never completed.
pub(crate) fn check_completion(
    id: &str,
    status: String,
    completed_at: Option<i64>,
    task_revocations: i64,
) -> Result<(), StoreError> {
    let was_active = completed_at.is_none()
        && match status.as_str() {
            "active" => true,
            "revoked" => task_revocations == 1,
            _ => false,
        };
    if was_active {
        return Ok(());
    }
    let status = if completed_at.is_some() {
        "completed".to_owned()
    } else {
        status
    };
    Err(StoreError::TaskNotActive {
        id: id.to_owned(),
        status,
    })
}

// Approvals and reviews

/// The approval record (`status`, `record` as stored) with `decided` applied; refused with
/// [`StoreError::AlreadyDecided`] unless it is pending.
pub(crate) fn decide_record(
    id: &str,
    status: String,
    record: &str,
    decided: Decided,
) -> Result<Approval, StoreError> {
    if status != "pending" {
        return Err(StoreError::AlreadyDecided {
            id: id.to_owned(),
            status,
        });
    }
    let mut approval: Approval = serde_json::from_str(record)
        .map_err(|e| StoreError::Database(format!("approval `{id}` record: {e}")))?;
    approval.decided = Some(decided);
    Ok(approval)
}

/// The outcome of a claim that moved nothing: `false` if the approval exists (not approved, or
/// claimed before), else [`StoreError::NotFound`].
pub(crate) fn unclaimed(id: &str, exists: bool) -> Result<bool, StoreError> {
    if exists {
        Ok(false)
    } else {
        Err(StoreError::NotFound(format!("approval `{id}`")))
    }
}

/// Why an answer to review `id` changed nothing, given its stored status (`None`: no such
/// review).
pub(crate) fn review_unanswerable(id: &str, status: Option<String>) -> StoreError {
    match status {
        None => StoreError::NotFound(format!("review `{id}`")),
        Some(status) => StoreError::ReviewClosed {
            id: id.to_owned(),
            status,
        },
    }
}

// Audit retention

fn refuse(why: String) -> StoreError {
    StoreError::ArchiveRefused(why)
}

/// Checks that `seg` is exactly the next stretch of the chain to archive, given the chain head's
/// `seq` and the last archived segment's `last_seq`/`last_hash` (`None` when nothing was
/// archived). Returns the first `seq` to archive.
pub(crate) fn archive_start(
    head_seq: i64,
    previous: Option<(i64, String)>,
    through_seq: i64,
    seg: &SegmentRecord,
) -> Result<i64, StoreError> {
    if through_seq >= head_seq {
        return Err(refuse(if head_seq == 0 {
            "the audit log is empty: there is nothing to archive".to_owned()
        } else {
            format!(
                "seq {through_seq} is not before the chain head (seq {head_seq}): the newest event \
                 always stays in the database"
            )
        }));
    }
    let (start, link) = match previous {
        Some((last_seq, last_hash)) => (last_seq.saturating_add(1), last_hash),
        None => (1, GENESIS_HASH.to_owned()),
    };
    if through_seq < start {
        return Err(refuse(if start == 1 {
            format!("seq {through_seq} is before the first event: there is nothing to archive")
        } else {
            format!(
                "events through seq {through_seq} are already archived: the archive ends at seq {}",
                start - 1
            )
        }));
    }
    if seg.first_seq != start || seg.last_seq != through_seq {
        return Err(refuse(format!(
            "the segment covers seq {}–{}, but the next events to archive are seq {start}–{through_seq}",
            seg.first_seq, seg.last_seq
        )));
    }
    if seg.first_prev_hash != link {
        return Err(refuse(format!(
            "the segment's first prev_hash does not continue the archive: seq {start} must link \
             to {link}"
        )));
    }
    Ok(start)
}

/// Checks the segment's hashes against the stored `prev_hash` of its first event and `hash` of
/// its last (`None`: the event is missing).
pub(crate) fn check_archive_hashes(
    start: i64,
    through_seq: i64,
    seg: &SegmentRecord,
    first_prev_hash: Option<&str>,
    last_hash: Option<&str>,
) -> Result<(), StoreError> {
    if first_prev_hash != Some(seg.first_prev_hash.as_str())
        || last_hash != Some(seg.last_hash.as_str())
    {
        return Err(refuse(format!(
            "the segment's hashes do not match the stored events seq {start} and {through_seq}"
        )));
    }
    Ok(())
}

/// Checks that `deleted` events were archived, as many as the range and the segment count.
pub(crate) fn check_archive_count(
    start: i64,
    through_seq: i64,
    deleted: u64,
    seg: &SegmentRecord,
) -> Result<(), StoreError> {
    let expected = through_seq - start + 1;
    if i64::try_from(deleted).ok() != Some(expected) || seg.count != expected {
        return Err(refuse(format!(
            "seq {start}–{through_seq} should hold {expected} events, the log has {deleted} and \
             the segment counts {}: events are missing",
            seg.count
        )));
    }
    Ok(())
}

// Small helpers

/// The output of an op that reports nothing.
pub(crate) fn done(_: ()) -> OpOutput {
    OpOutput::Done
}

/// `Done` if a row was touched, else `NotFound(what)`.
pub(crate) fn found(rows: u64, what: impl FnOnce() -> String) -> Result<OpOutput, StoreError> {
    if rows == 0 {
        Err(StoreError::NotFound(what()))
    } else {
        Ok(OpOutput::Done)
    }
}

/// Whether `e` is a unique-key violation (SQLite's constraint error, PostgreSQL's SQLSTATE
/// 23505).
pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            db.is_unique_violation() || db.code().as_deref() == Some("23505")
        }
        _ => false,
    }
}

/// Maps a unique-key violation to [`StoreError::Conflict`] naming `what`.
pub(crate) fn conflict(what: impl FnOnce() -> String) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |e| {
        if is_unique_violation(&e) {
            StoreError::Conflict(what())
        } else {
            StoreError::from(e)
        }
    }
}

/// JSON text of a value (lists of strings, JWKs, pattern sets).
pub(crate) fn json<T: Serialize + ?Sized>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value)
        .map_err(|e| StoreError::Database(format!("could not encode a value as JSON: {e}")))
}

/// Seconds since the epoch, by the system clock.
pub(crate) fn unix_now() -> i64 {
    unix_now_ms().div_euclid(1000)
}

/// Milliseconds since the epoch, by the system clock (0 if the clock is before 1970).
pub(crate) fn unix_now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

//! Turning rows back into domain values, once for both backends: every decoder reads its row
//! through [`Columns`], which SQLite's and PostgreSQL's rows both provide. A row that does not
//! decode is reported as a database error naming the column, never unwrapped.

use mandate_core::agent::{Agent, AgentKey, AgentStatus, WorkloadBinding};
use mandate_core::approval::Dispatch;
use mandate_core::audit::{AuditEvent, Decision};
use mandate_core::compliance::{ApprovalCount, CheckpointFact, EventCount};
use mandate_core::ids::AgentId;
use mandate_core::posture::{
    CredentialUse, Justification, RatePeak, Review, ReviewStatus, ScopeUse,
};
use mandate_core::revocation::{RevocationKind, RevocationRecord};
use mandate_core::scope::PatternSet;
use mandate_core::stage::Stage;
use mandate_core::task::{Task, TaskStatus, TaskStep, TokenRecord, ToolCall};
use serde::de::DeserializeOwned;
use sqlx::{ColumnIndex, Decode, Row, Type};

use crate::{
    AdminCredential, Checkpoint, RevocationEntry, RevokedToken, SecretInfo, SegmentRecord,
    SsfQueued, SsfStream, StoreError, StoredApproval, StoredSecret, StoredSigningKey,
};

/// A result row's columns by name, in the few shapes the schema stores: text, 64-bit integers
/// and bytes, each possibly NULL.
pub(crate) trait Columns {
    /// A non-NULL text column.
    fn text(&self, column: &str) -> Result<String, StoreError>;
    /// A text column that may be NULL.
    fn opt_text(&self, column: &str) -> Result<Option<String>, StoreError>;
    /// A non-NULL integer column.
    fn int(&self, column: &str) -> Result<i64, StoreError>;
    /// An integer column that may be NULL.
    fn opt_int(&self, column: &str) -> Result<Option<i64>, StoreError>;
    /// A non-NULL blob column.
    fn bytes(&self, column: &str) -> Result<Vec<u8>, StoreError>;
    /// A blob column that may be NULL.
    fn opt_bytes(&self, column: &str) -> Result<Option<Vec<u8>>, StoreError>;
}

/// Every sqlx row whose database decodes text, 64-bit integers and bytes (SQLite's and
/// PostgreSQL's) reads its columns with `try_get`.
impl<R> Columns for R
where
    R: Row,
    for<'c> &'c str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
{
    fn text(&self, column: &str) -> Result<String, StoreError> {
        Ok(self.try_get(column)?)
    }

    fn opt_text(&self, column: &str) -> Result<Option<String>, StoreError> {
        Ok(self.try_get(column)?)
    }

    fn int(&self, column: &str) -> Result<i64, StoreError> {
        Ok(self.try_get(column)?)
    }

    fn opt_int(&self, column: &str) -> Result<Option<i64>, StoreError> {
        Ok(self.try_get(column)?)
    }

    fn bytes(&self, column: &str) -> Result<Vec<u8>, StoreError> {
        Ok(self.try_get(column)?)
    }

    fn opt_bytes(&self, column: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.try_get(column)?)
    }
}

/// A stored value that is not what it should be.
fn corrupt(column: &str, problem: impl std::fmt::Display) -> StoreError {
    StoreError::Database(format!("stored `{column}` does not decode: {problem}"))
}

/// A JSON column.
fn json_col<T: DeserializeOwned>(row: &impl Columns, column: &str) -> Result<T, StoreError> {
    serde_json::from_str(&row.text(column)?).map_err(|e| corrupt(column, e))
}

/// A JSON column that may be NULL.
fn opt_json_col<T: DeserializeOwned>(
    row: &impl Columns,
    column: &str,
) -> Result<Option<T>, StoreError> {
    row.opt_text(column)?
        .map(|t| serde_json::from_str(&t).map_err(|e| corrupt(column, e)))
        .transpose()
}

/// An agent row, without its keys.
pub(crate) fn agent(row: &impl Columns) -> Result<Agent, StoreError> {
    let id = row.text("id")?;
    let stage = row.text("max_stage")?;
    let status = row.text("status")?;
    Ok(Agent {
        id: AgentId::parse(&id).map_err(|e| corrupt("id", e))?,
        name: row.text("name")?,
        owner: row.text("owner")?,
        description: row.text("description")?,
        ceiling: json_col::<PatternSet>(row, "ceiling")?,
        tags: json_col::<Vec<String>>(row, "tags")?,
        max_stage: stage
            .parse::<Stage>()
            .map_err(|e| corrupt("max_stage", e))?,
        status: AgentStatus::parse(&status).ok_or_else(|| corrupt("status", &status))?,
        keys: Vec::new(),
        workloads: json_col::<Vec<WorkloadBinding>>(row, "workloads")?,
        require_dpop: row.int("require_dpop")? != 0,
        created_at: row.int("created_at")?,
        updated_at: row.int("updated_at")?,
    })
}

/// An agent key row.
pub(crate) fn agent_key(row: &impl Columns) -> Result<AgentKey, StoreError> {
    Ok(AgentKey {
        kid: row.text("kid")?,
        jwk: json_col(row, "jwk")?,
        expires_at: row.opt_int("expires_at")?,
        created_at: row.int("created_at")?,
        revoked_at: row.opt_int("revoked_at")?,
    })
}

/// Agents with their keys, from agent rows sorted by id (byte order) and key rows (with their
/// `agent_id`) in registration order per agent. A key whose agent is not among the rows is
/// left out.
pub(crate) fn agents_with_keys<R: Columns>(
    agent_rows: &[R],
    key_rows: &[R],
) -> Result<Vec<Agent>, StoreError> {
    let mut agents = agent_rows
        .iter()
        .map(agent)
        .collect::<Result<Vec<_>, _>>()?;
    for row in key_rows {
        let agent_id = row.text("agent_id")?;
        if let Ok(i) = agents.binary_search_by(|a| a.id.as_str().cmp(&agent_id))
            && let Some(a) = agents.get_mut(i)
        {
            a.keys.push(agent_key(row)?);
        }
    }
    Ok(agents)
}

/// A task row.
pub(crate) fn task(row: &impl Columns) -> Result<Task, StoreError> {
    let status = row.text("status")?;
    Ok(Task {
        id: row.text("id")?,
        agent: row.text("agent")?,
        user: row.opt_text("user")?,
        user_issuer: row.opt_text("user_issuer")?,
        purpose: row.text("purpose")?,
        input: row.text("input")?,
        status: TaskStatus::parse(&status).ok_or_else(|| corrupt("status", &status))?,
        created_at: row.int("created_at")?,
        updated_at: row.int("updated_at")?,
        outcome: row.opt_text("outcome")?,
        completed_at: row.opt_int("completed_at")?,
    })
}

/// A token row.
pub(crate) fn token(row: &impl Columns) -> Result<TokenRecord, StoreError> {
    Ok(TokenRecord {
        jti: row.text("jti")?,
        parent_jti: row.opt_text("parent_jti")?,
        task: row.text("task")?,
        sub: row.text("sub")?,
        sub_profile: row.text("sub_profile")?,
        sub_iss: row.opt_text("sub_iss")?,
        chain: json_col(row, "chain")?,
        credentials: json_col(row, "credentials")?,
        scope: row.text("scope")?,
        aud: json_col(row, "aud")?,
        stage: row.text("stage")?,
        iat: row.int("iat")?,
        exp: row.int("exp")?,
        revoked_at: row.opt_int("revoked_at")?,
    })
}

/// A signing key row.
pub(crate) fn signing_key(row: &impl Columns) -> Result<StoredSigningKey, StoreError> {
    Ok(StoredSigningKey {
        kid: row.text("kid")?,
        alg: row.text("alg")?,
        public_jwk: row.text("public_jwk")?,
        sealed_private: row.bytes("sealed_private")?,
        created_at: row.int("created_at")?,
        retired_at: row.opt_int("retired_at")?,
        publish_until: row.opt_int("publish_until")?,
    })
}

/// An admin credential row.
pub(crate) fn admin_credential(row: &impl Columns) -> Result<AdminCredential, StoreError> {
    Ok(AdminCredential {
        id: row.text("id")?,
        role: row.text("role")?,
        secret_hash: row.text("secret_hash")?,
        created_at: row.int("created_at")?,
        disabled_at: row.opt_int("disabled_at")?,
    })
}

/// A revocation row.
pub(crate) fn revocation(row: &impl Columns) -> Result<RevocationRecord, StoreError> {
    let kind = row.text("kind")?;
    Ok(RevocationRecord {
        id: row.text("id")?,
        kind: RevocationKind::parse(&kind).ok_or_else(|| corrupt("kind", &kind))?,
        target: row.text("target")?,
        by: row.text("revoked_by")?,
        reason: row.text("reason")?,
        at: row.int("at")?,
    })
}

/// A revocation row as a feed entry, leaving out tokens that expired before `now` (`i64::MIN`
/// keeps them all).
pub(crate) fn revocation_entry(
    row: &impl Columns,
    now: i64,
) -> Result<RevocationEntry, StoreError> {
    let mut tokens: Vec<RevokedToken> = json_col(row, "ended")?;
    tokens.retain(|t| t.exp >= now);
    Ok(RevocationEntry {
        seq: row.int("seq")?,
        record: revocation(row)?,
        tokens,
    })
}

/// A `(jti, exp)` row.
pub(crate) fn revoked_token(row: &impl Columns) -> Result<RevokedToken, StoreError> {
    Ok(RevokedToken {
        jti: row.text("jti")?,
        exp: row.int("exp")?,
    })
}

/// An audit event row: exactly the event that was sealed, so its hash verifies.
pub(crate) fn event(row: &impl Columns) -> Result<AuditEvent, StoreError> {
    let decision = row.text("decision")?;
    Ok(AuditEvent {
        seq: row.int("seq")?,
        time: row.text("time")?,
        kind: row.text("kind")?,
        user: row.opt_text("user")?,
        chain: json_col(row, "chain")?,
        task: row.opt_text("task")?,
        action: row.opt_text("action")?,
        resource: row.opt_text("resource")?,
        decision: Decision::parse(&decision).ok_or_else(|| corrupt("decision", &decision))?,
        reason: row.text("reason")?,
        policy_ids: json_col(row, "policy_ids")?,
        request_id: row.opt_text("request_id")?,
        credential: row.opt_text("credential")?,
        jti: row.opt_text("jti")?,
        detail: row.text("detail")?,
        prev_hash: row.text("prev_hash")?,
        hash: row.text("hash")?,
    })
}

// Shared Signals streams

/// A Shared Signals stream row.
pub(crate) fn ssf_stream(row: &impl Columns) -> Result<SsfStream, StoreError> {
    Ok(SsfStream {
        id: row.text("id")?,
        aud: json_col(row, "aud")?,
        method: row.text("method")?,
        endpoint_url: row.opt_text("endpoint_url")?,
        authorization_header: row.opt_bytes("authorization_header")?,
        events_requested: opt_json_col(row, "events_requested")?,
        description: row.opt_text("description")?,
        status: row.text("status")?,
        reason: row.opt_text("reason")?,
        removed_subjects: json_col(row, "removed_subjects")?,
        cursor: row.int("cursor")?,
        last_error: row.opt_text("last_error")?,
        last_error_at: row.opt_int("last_error_at")?,
        created_at: row.int("created_at")?,
        updated_at: row.int("updated_at")?,
    })
}

/// A Shared Signals outbox row.
pub(crate) fn ssf_queued(row: &impl Columns) -> Result<SsfQueued, StoreError> {
    Ok(SsfQueued {
        seq: row.int("seq")?,
        jti: row.text("jti")?,
        claims: row.text("claims")?,
        created_at: row.int("created_at")?,
    })
}

// Task steps and outcomes

/// A task step row.
pub(crate) fn task_step(row: &impl Columns) -> Result<TaskStep, StoreError> {
    Ok(TaskStep {
        task: row.text("task")?,
        seq: row.int("seq")?,
        time: row.text("time")?,
        by: row.text("recorded_by")?,
        decision: row.text("decision")?,
        summary: row.text("summary")?,
        tool_call: opt_json_col::<ToolCall>(row, "tool_call")?,
        anomaly: row.opt_text("anomaly")?,
    })
}

// Gateway secrets

/// A secret row, without its sealed value.
pub(crate) fn secret_info(row: &impl Columns) -> Result<SecretInfo, StoreError> {
    Ok(SecretInfo {
        name: row.text("name")?,
        description: row.opt_text("description")?,
        created_at: row.int("created_at")?,
        updated_at: row.int("updated_at")?,
        created_by: row.text("created_by")?,
    })
}

/// A secret row, with its sealed value.
pub(crate) fn secret(row: &impl Columns) -> Result<StoredSecret, StoreError> {
    Ok(StoredSecret {
        name: row.text("name")?,
        sealed: row.bytes("sealed")?,
        description: row.opt_text("description")?,
        created_at: row.int("created_at")?,
        updated_at: row.int("updated_at")?,
        created_by: row.text("created_by")?,
    })
}

// Audit checkpoints

/// An audit checkpoint row.
pub(crate) fn checkpoint(row: &impl Columns) -> Result<Checkpoint, StoreError> {
    Ok(Checkpoint {
        seq: row.int("seq")?,
        hash: row.text("hash")?,
        time: row.text("time")?,
        jws: row.text("jws")?,
    })
}

// Audit retention

/// An archived segment row.
pub(crate) fn segment(row: &impl Columns) -> Result<SegmentRecord, StoreError> {
    Ok(SegmentRecord {
        first_seq: row.int("first_seq")?,
        last_seq: row.int("last_seq")?,
        first_prev_hash: row.text("first_prev_hash")?,
        last_hash: row.text("last_hash")?,
        count: row.int("count")?,
        sha256: row.text("sha256")?,
        file_name: row.text("file_name")?,
        checkpoint: row.text("checkpoint")?,
        archived_at: row.int("archived_at")?,
    })
}

// Approvals

/// An approval row (a listing's rows carry an empty `payload`).
pub(crate) fn approval(row: &impl Columns) -> Result<StoredApproval, StoreError> {
    let dispatch = row.text("dispatch")?;
    Ok(StoredApproval {
        approval: json_col(row, "record")?,
        payload: row.text("payload")?,
        dispatch: Dispatch::parse(&dispatch)
            .ok_or_else(|| StoreError::Database(format!("unknown dispatch state `{dispatch}`")))?,
        outcome: row.opt_text("outcome")?,
        last_poll: row.opt_int("last_poll")?,
        poll_interval: row.int("poll_interval")?,
    })
}

// Posture and access reviews

/// A `(agent, credential, last_used)` usage row; a `kid:<kid>` credential is reported as its
/// key id.
pub(crate) fn credential_use(row: &impl Columns) -> Result<CredentialUse, StoreError> {
    let credential = row.text("credential")?;
    Ok(CredentialUse {
        agent: row.text("agent")?,
        credential: credential
            .strip_prefix("kid:")
            .map(str::to_owned)
            .unwrap_or(credential),
        last_used: row.int("last_used")?,
    })
}

/// A `(agent, scopes, last_used)` usage row.
pub(crate) fn scope_use(row: &impl Columns) -> Result<ScopeUse, StoreError> {
    Ok(ScopeUse {
        agent: row.text("agent")?,
        scopes: row.text("scopes")?,
        last_used: row.int("last_used")?,
    })
}

/// A `(agent, per_minute)` busiest-minute row.
pub(crate) fn rate_peak(row: &impl Columns) -> Result<RatePeak, StoreError> {
    Ok(RatePeak {
        agent: row.text("agent")?,
        per_minute: row.int("per_minute")?,
    })
}

/// A justification row.
pub(crate) fn justification(row: &impl Columns) -> Result<Justification, StoreError> {
    Ok(Justification {
        agent: row.text("agent_id")?,
        pattern: row.text("pattern")?,
        text: row.text("text")?,
        by: row.text("set_by")?,
        at: row.int("set_at")?,
    })
}

/// A review's JSON list column.
fn list(row: &impl Columns, column: &str) -> Result<Vec<String>, StoreError> {
    serde_json::from_str(&row.text(column)?)
        .map_err(|e| StoreError::Database(format!("reviews.{column} is not a JSON list: {e}")))
}

/// An access review row.
pub(crate) fn review(row: &impl Columns) -> Result<Review, StoreError> {
    let status = row.text("status")?;
    Ok(Review {
        id: row.text("id")?,
        campaign: row.text("campaign")?,
        agent: row.text("agent")?,
        owner: row.text("owner")?,
        ceiling: list(row, "ceiling")?,
        status: ReviewStatus::parse(&status)
            .ok_or_else(|| StoreError::Database(format!("unknown review status `{status}`")))?,
        opened_by: row.text("opened_by")?,
        created_at: row.int("created_at")?,
        due_at: row.int("due_at")?,
        decided_by: row.opt_text("decided_by")?,
        decided_at: row.opt_int("decided_at")?,
        removed: list(row, "removed")?,
        note: row.opt_text("note")?,
    })
}

// Compliance reports (aggregate reads)

/// A count from the database (never negative).
pub(crate) fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// A `(kind, decision, code, n, with_task, with_principal)` audit group row.
pub(crate) fn event_count(row: &impl Columns) -> Result<EventCount, StoreError> {
    Ok(EventCount {
        kind: row.text("kind")?,
        decision: row.text("decision")?,
        code: row.opt_text("code")?,
        count: count(row.int("n")?),
        with_task: count(row.int("with_task")?),
        with_principal: count(row.opt_int("with_principal")?.unwrap_or(0)),
    })
}

/// A `(seq, time)` checkpoint row.
pub(crate) fn checkpoint_fact(row: &impl Columns) -> Result<CheckpointFact, StoreError> {
    Ok(CheckpointFact {
        seq: row.int("seq")?,
        time: row.text("time")?,
    })
}

/// A `(kind, st, n)` approval group row.
pub(crate) fn approval_count(row: &impl Columns) -> Result<ApprovalCount, StoreError> {
    Ok(ApprovalCount {
        kind: row.text("kind")?,
        status: row.text("st")?,
        count: count(row.int("n")?),
    })
}

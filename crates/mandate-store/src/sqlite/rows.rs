//! Turning rows back into domain values. A row that does not decode is reported as a database
//! error naming the column, never unwrapped.

use mandate_core::agent::{Agent, AgentKey, AgentStatus};
use mandate_core::approval::Dispatch;
use mandate_core::audit::{AuditEvent, Decision};
use mandate_core::ids::AgentId;
use mandate_core::revocation::{RevocationKind, RevocationRecord};
use mandate_core::scope::PatternSet;
use mandate_core::stage::Stage;
use mandate_core::task::{Task, TaskStatus, TaskStep, TokenRecord, ToolCall};
use serde::de::DeserializeOwned;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use crate::{
    AdminCredential, Checkpoint, RevocationEntry, RevokedToken, SecretInfo, SsfQueued, SsfStream,
    StoreError, StoredApproval, StoredSecret, StoredSigningKey,
};

fn corrupt(column: &str, problem: impl std::fmt::Display) -> StoreError {
    StoreError::Database(format!("stored `{column}` does not decode: {problem}"))
}

/// A JSON column.
fn json_col<T: DeserializeOwned>(row: &SqliteRow, column: &str) -> Result<T, StoreError> {
    let text: String = row.try_get(column)?;
    serde_json::from_str(&text).map_err(|e| corrupt(column, e))
}

/// An agent row, without its keys.
pub(crate) fn agent(row: &SqliteRow) -> Result<Agent, StoreError> {
    let id: String = row.try_get("id")?;
    let stage: String = row.try_get("max_stage")?;
    let status: String = row.try_get("status")?;
    Ok(Agent {
        id: AgentId::parse(&id).map_err(|e| corrupt("id", e))?,
        name: row.try_get("name")?,
        owner: row.try_get("owner")?,
        description: row.try_get("description")?,
        ceiling: json_col::<PatternSet>(row, "ceiling")?,
        tags: json_col::<Vec<String>>(row, "tags")?,
        max_stage: stage
            .parse::<Stage>()
            .map_err(|e| corrupt("max_stage", e))?,
        status: AgentStatus::parse(&status).ok_or_else(|| corrupt("status", &status))?,
        keys: Vec::new(),
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// An agent key row.
pub(crate) fn agent_key(row: &SqliteRow) -> Result<AgentKey, StoreError> {
    Ok(AgentKey {
        kid: row.try_get("kid")?,
        jwk: json_col(row, "jwk")?,
        expires_at: row.try_get("expires_at")?,
        created_at: row.try_get("created_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

/// A task row.
pub(crate) fn task(row: &SqliteRow) -> Result<Task, StoreError> {
    let status: String = row.try_get("status")?;
    Ok(Task {
        id: row.try_get("id")?,
        agent: row.try_get("agent")?,
        user: row.try_get("user")?,
        user_issuer: row.try_get("user_issuer")?,
        purpose: row.try_get("purpose")?,
        input: row.try_get("input")?,
        status: TaskStatus::parse(&status).ok_or_else(|| corrupt("status", &status))?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        outcome: row.try_get("outcome")?,
        completed_at: row.try_get("completed_at")?,
    })
}

/// A token row.
pub(crate) fn token(row: &SqliteRow) -> Result<TokenRecord, StoreError> {
    Ok(TokenRecord {
        jti: row.try_get("jti")?,
        parent_jti: row.try_get("parent_jti")?,
        task: row.try_get("task")?,
        sub: row.try_get("sub")?,
        sub_profile: row.try_get("sub_profile")?,
        sub_iss: row.try_get("sub_iss")?,
        chain: json_col(row, "chain")?,
        credentials: json_col(row, "credentials")?,
        scope: row.try_get("scope")?,
        aud: json_col(row, "aud")?,
        stage: row.try_get("stage")?,
        iat: row.try_get("iat")?,
        exp: row.try_get("exp")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

/// A signing key row.
pub(crate) fn signing_key(row: &SqliteRow) -> Result<StoredSigningKey, StoreError> {
    Ok(StoredSigningKey {
        kid: row.try_get("kid")?,
        alg: row.try_get("alg")?,
        public_jwk: row.try_get("public_jwk")?,
        sealed_private: row.try_get("sealed_private")?,
        created_at: row.try_get("created_at")?,
        retired_at: row.try_get("retired_at")?,
        publish_until: row.try_get("publish_until")?,
    })
}

/// An admin credential row.
pub(crate) fn admin_credential(row: &SqliteRow) -> Result<AdminCredential, StoreError> {
    Ok(AdminCredential {
        id: row.try_get("id")?,
        role: row.try_get("role")?,
        secret_hash: row.try_get("secret_hash")?,
        created_at: row.try_get("created_at")?,
        disabled_at: row.try_get("disabled_at")?,
    })
}

/// A revocation row.
pub(crate) fn revocation(row: &SqliteRow) -> Result<RevocationRecord, StoreError> {
    let kind: String = row.try_get("kind")?;
    Ok(RevocationRecord {
        id: row.try_get("id")?,
        kind: RevocationKind::parse(&kind).ok_or_else(|| corrupt("kind", &kind))?,
        target: row.try_get("target")?,
        by: row.try_get("revoked_by")?,
        reason: row.try_get("reason")?,
        at: row.try_get("at")?,
    })
}

/// A revocation row as a feed entry, leaving out tokens that expired before `now`.
pub(crate) fn revocation_entry(row: &SqliteRow, now: i64) -> Result<RevocationEntry, StoreError> {
    let mut tokens: Vec<RevokedToken> = json_col(row, "ended")?;
    tokens.retain(|t| t.exp >= now);
    Ok(RevocationEntry {
        seq: row.try_get("seq")?,
        record: revocation(row)?,
        tokens,
    })
}

/// A `(jti, exp)` row.
pub(crate) fn revoked_token(row: &SqliteRow) -> Result<RevokedToken, StoreError> {
    Ok(RevokedToken {
        jti: row.try_get("jti")?,
        exp: row.try_get("exp")?,
    })
}

/// An audit event row: exactly the event that was sealed, so its hash
/// verifies.
pub(crate) fn event(row: &SqliteRow) -> Result<AuditEvent, StoreError> {
    let decision: String = row.try_get("decision")?;
    Ok(AuditEvent {
        seq: row.try_get("seq")?,
        time: row.try_get("time")?,
        kind: row.try_get("kind")?,
        user: row.try_get("user")?,
        chain: json_col(row, "chain")?,
        task: row.try_get("task")?,
        action: row.try_get("action")?,
        resource: row.try_get("resource")?,
        decision: Decision::parse(&decision).ok_or_else(|| corrupt("decision", &decision))?,
        reason: row.try_get("reason")?,
        policy_ids: json_col(row, "policy_ids")?,
        request_id: row.try_get("request_id")?,
        credential: row.try_get("credential")?,
        jti: row.try_get("jti")?,
        detail: row.try_get("detail")?,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}

// Shared Signals streams

/// A Shared Signals stream row.
pub(crate) fn ssf_stream(row: &SqliteRow) -> Result<SsfStream, StoreError> {
    let requested: Option<String> = row.try_get("events_requested")?;
    Ok(SsfStream {
        id: row.try_get("id")?,
        aud: json_col(row, "aud")?,
        method: row.try_get("method")?,
        endpoint_url: row.try_get("endpoint_url")?,
        authorization_header: row.try_get("authorization_header")?,
        events_requested: requested
            .map(|t| serde_json::from_str(&t).map_err(|e| corrupt("events_requested", e)))
            .transpose()?,
        description: row.try_get("description")?,
        status: row.try_get("status")?,
        reason: row.try_get("reason")?,
        removed_subjects: json_col(row, "removed_subjects")?,
        cursor: row.try_get("cursor")?,
        last_error: row.try_get("last_error")?,
        last_error_at: row.try_get("last_error_at")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// A Shared Signals outbox row.
pub(crate) fn ssf_queued(row: &SqliteRow) -> Result<SsfQueued, StoreError> {
    Ok(SsfQueued {
        seq: row.try_get("seq")?,
        jti: row.try_get("jti")?,
        claims: row.try_get("claims")?,
        created_at: row.try_get("created_at")?,
    })
}

// Task steps and outcomes

/// A task step row.
pub(crate) fn task_step(row: &SqliteRow) -> Result<TaskStep, StoreError> {
    let tool_call: Option<String> = row.try_get("tool_call")?;
    Ok(TaskStep {
        task: row.try_get("task")?,
        seq: row.try_get("seq")?,
        time: row.try_get("time")?,
        by: row.try_get("recorded_by")?,
        decision: row.try_get("decision")?,
        summary: row.try_get("summary")?,
        tool_call: tool_call
            .map(|t| serde_json::from_str::<ToolCall>(&t).map_err(|e| corrupt("tool_call", e)))
            .transpose()?,
        anomaly: row.try_get("anomaly")?,
    })
}

// Gateway secrets

/// A secret row, without its sealed value.
pub(crate) fn secret_info(row: &SqliteRow) -> Result<SecretInfo, StoreError> {
    Ok(SecretInfo {
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        created_by: row.try_get("created_by")?,
    })
}

/// A secret row, with its sealed value.
pub(crate) fn secret(row: &SqliteRow) -> Result<StoredSecret, StoreError> {
    Ok(StoredSecret {
        name: row.try_get("name")?,
        sealed: row.try_get("sealed")?,
        description: row.try_get("description")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        created_by: row.try_get("created_by")?,
    })
}

// Audit checkpoints

/// An audit checkpoint row.
pub(crate) fn checkpoint(row: &SqliteRow) -> Result<Checkpoint, StoreError> {
    Ok(Checkpoint {
        seq: row.try_get("seq")?,
        hash: row.try_get("hash")?,
        time: row.try_get("time")?,
        jws: row.try_get("jws")?,
    })
}

// Audit retention

/// An archived segment row.
pub(crate) fn segment(row: &SqliteRow) -> Result<crate::SegmentRecord, StoreError> {
    Ok(crate::SegmentRecord {
        first_seq: row.try_get("first_seq")?,
        last_seq: row.try_get("last_seq")?,
        first_prev_hash: row.try_get("first_prev_hash")?,
        last_hash: row.try_get("last_hash")?,
        count: row.try_get("count")?,
        sha256: row.try_get("sha256")?,
        file_name: row.try_get("file_name")?,
        checkpoint: row.try_get("checkpoint")?,
        archived_at: row.try_get("archived_at")?,
    })
}

// Approvals

/// An approval row.
pub(crate) fn approval(row: &SqliteRow) -> Result<StoredApproval, StoreError> {
    let dispatch: String = row.try_get("dispatch")?;
    Ok(StoredApproval {
        approval: json_col(row, "record")?,
        payload: row.try_get("payload")?,
        dispatch: Dispatch::parse(&dispatch)
            .ok_or_else(|| StoreError::Database(format!("unknown dispatch state `{dispatch}`")))?,
        outcome: row.try_get("outcome")?,
        last_poll: row.try_get("last_poll")?,
        poll_interval: row.try_get("poll_interval")?,
    })
}

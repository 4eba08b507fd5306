//! Making a revocation: validate what is named, record it with everything it ends and its audit
//! event in one commit, then update the in-memory index and publish it on the feed, so the next
//! request here — and every subscribed verifier — refuses what it ended.

use mandate_core::agent::AgentStatus;
use mandate_core::audit::{Decision, NewEvent};
use mandate_core::revocation::{RevocationKind, RevocationRecord};
use mandate_store::{Op, OpOutput, RevocationEntry, RevokedToken};
use serde::Serialize;

use crate::error::ApiError;
use crate::state::AppState;

/// What to revoke, by whom and why.
#[derive(Debug, Clone)]
pub struct Request {
    /// What kind of thing.
    pub kind: RevocationKind,
    /// Its bare id.
    pub target: String,
    /// Who asks (`admin:<id>`, `agent:<id>`, `system`).
    pub by: String,
    /// Why, for the audit log and the Shared Signals event.
    pub reason: String,
    /// The request id, for the audit event.
    pub request_id: Option<String>,
    /// The audit event's `action` (default `revoke.<kind>`).
    pub action: Option<String>,
    /// Writes that belong to the same change and land in the same unit, after the revocation
    /// (e.g. the agent's new status, the task's completion).
    pub ops: Vec<Op>,
}

impl Request {
    /// A revocation of `kind` `target` by `by`.
    pub fn new(kind: RevocationKind, target: &str, by: &str) -> Request {
        Request {
            kind,
            target: target.trim().to_owned(),
            by: by.to_owned(),
            reason: String::new(),
            request_id: None,
            action: None,
            ops: Vec::new(),
        }
    }
}

/// The result of a revocation.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// The recorded revocation.
    pub revocation: RevocationRecord,
    /// Its place in the revocation feed.
    pub seq: i64,
    /// The tokens it ended that were still live.
    pub tokens: Vec<RevokedToken>,
}

/// Revokes what `req` names. The work runs to its end even if the caller goes away, so a
/// durable revocation is always also in the index and on the feed.
pub async fn revoke(state: &std::sync::Arc<AppState>, req: Request) -> Result<Outcome, ApiError> {
    let state = state.clone();
    match tokio::spawn(async move { revoke_now(&state, req).await }).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "revocation task failed");
            Err(ApiError::server_error())
        }
    }
}

async fn revoke_now(state: &AppState, req: Request) -> Result<Outcome, ApiError> {
    let Request {
        kind,
        target,
        by,
        reason,
        request_id,
        action,
        ops: after,
    } = req;
    let target = target.as_str();
    if target.is_empty() || target.len() > 256 {
        return Err(ApiError::bad_request("`id` must be 1–256 characters"));
    }
    let now = state.clock.now();
    let mut before = Vec::new();
    let mut user = None;
    let mut chain = Vec::new();
    let mut task = None;
    match kind {
        RevocationKind::Token => {
            let t = state
                .store
                .token(target)
                .await?
                .ok_or_else(|| ApiError::not_found(format!("token `{target}` not found")))?;
            if t.sub_profile == "user" {
                user = Some(t.sub.clone());
            }
            chain = t.chain.clone();
            task = Some(t.task.clone());
        }
        RevocationKind::Task => {
            let t = state
                .store
                .task(target)
                .await?
                .ok_or_else(|| ApiError::not_found(format!("task `{target}` not found")))?;
            user = t.user.clone();
            chain = vec![t.agent.clone()];
            task = Some(t.id.clone());
        }
        RevocationKind::Agent => {
            let a = state
                .directory
                .get(target)
                .ok_or_else(|| ApiError::not_found(format!("agent `{target}` not found")))?;
            chain = vec![a.id.as_str().to_owned()];
            let sets_status = after
                .iter()
                .any(|op| matches!(op, Op::SetAgentStatus { .. }));
            if a.status == AgentStatus::Active && !sets_status {
                before.push(Op::SetAgentStatus {
                    id: target.to_owned(),
                    status: AgentStatus::Suspended,
                    at: now,
                });
            }
        }
        RevocationKind::User => {
            user = Some(target.to_owned());
        }
        RevocationKind::Key => {
            let owners: Vec<String> = state
                .directory
                .all()
                .iter()
                .filter(|a| a.keys.iter().any(|k| k.kid == target))
                .map(|a| a.id.as_str().to_owned())
                .collect();
            if owners.is_empty() {
                return Err(ApiError::not_found(format!(
                    "no agent has a key `{target}`"
                )));
            }
            chain = owners;
            before.push(Op::RevokeAgentKey {
                kid: target.to_owned(),
                at: now,
            });
        }
    }
    let id = mandate_token::random_id::<9>().map_err(|_| ApiError::server_error())?;
    let record = RevocationRecord {
        id: format!("rev-{id}"),
        kind,
        target: target.to_owned(),
        by: by.clone(),
        reason: reason.chars().take(500).collect(),
        at: now,
    };
    let event = NewEvent {
        kind: "revocation".into(),
        user,
        chain: chain.clone(),
        task,
        action: Some(action.unwrap_or_else(|| format!("revoke.{}", kind.as_str()))),
        resource: Some(format!("{}:{target}", kind.as_str())),
        decision: Some(Decision::Info),
        reason: if record.reason.is_empty() {
            format!("revoked by {by}")
        } else {
            format!("revoked by {by}: {}", record.reason)
        },
        request_id,
        ..Default::default()
    };
    let mut ops = vec![Op::Revoke {
        record,
        audit: Some(event),
    }];
    ops.extend(before);
    ops.extend(after);
    let outputs = state.store.commit(ops).await?;
    let Some(entry) = outputs.into_iter().find_map(|o| match o {
        OpOutput::Revoked(e) => Some(e),
        _ => None,
    }) else {
        tracing::error!("the store answered a revocation without its entry");
        return Err(ApiError::server_error());
    };
    apply(state, &entry);
    if matches!(kind, RevocationKind::Agent | RevocationKind::Key) {
        for a in &chain {
            state.directory.refresh(state.store.as_ref(), a).await?;
        }
    }
    state.feed.publish(entry.clone());
    Ok(Outcome {
        revocation: entry.record,
        seq: entry.seq,
        tokens: entry.tokens,
    })
}

/// Puts a durable revocation into the in-memory index.
pub fn apply(state: &AppState, entry: &RevocationEntry) {
    state.revocations.update(|idx| idx.apply(entry));
}

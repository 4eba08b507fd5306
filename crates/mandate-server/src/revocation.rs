//! Making a revocation: validate what is named, record it with everything it ends in one commit
//! (with its audit event), then update the in-memory index so the next request sees it.

use mandate_core::agent::AgentStatus;
use mandate_core::audit::{Decision, NewEvent};
use mandate_core::revocation::{RevocationKind, RevocationRecord};
use mandate_store::{Op, OpOutput, RevokedToken};
use serde::Serialize;
use serde_json::json;

use crate::error::ApiError;
use crate::state::AppState;

/// The result of a revocation.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// The recorded revocation.
    pub revocation: RevocationRecord,
    /// The tokens it ended that were still live.
    pub tokens: Vec<RevokedToken>,
}

/// Revokes `kind` `target` on behalf of `by`.
pub async fn revoke(
    state: &AppState,
    kind: RevocationKind,
    target: &str,
    by: &str,
    reason: &str,
    request_id: Option<String>,
) -> Result<Outcome, ApiError> {
    let target = target.trim();
    if target.is_empty() || target.len() > 256 {
        return Err(ApiError::bad_request("`id` must be 1–256 characters"));
    }
    let now = state.clock.now();
    let mut extra = Vec::new();
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
            if a.status == AgentStatus::Active {
                extra.push(Op::SetAgentStatus {
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
            extra.push(Op::RevokeAgentKey {
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
        by: by.to_owned(),
        reason: reason.chars().take(500).collect(),
        at: now,
    };
    let mut ops = vec![Op::Revoke(record.clone())];
    ops.extend(extra);
    let outputs = state.store.commit(ops).await?;
    let tokens: Vec<RevokedToken> = outputs
        .into_iter()
        .find_map(|o| match o {
            OpOutput::Revoked(t) => Some(t),
            _ => None,
        })
        .unwrap_or_default();
    state.revocations.update(|idx| {
        if kind != RevocationKind::Token {
            idx.insert(kind, target, now);
        }
        for t in &tokens {
            idx.insert(RevocationKind::Token, &t.jti, t.exp);
        }
    });
    if matches!(kind, RevocationKind::Agent | RevocationKind::Key) {
        for a in &chain {
            state.directory.refresh(state.store.as_ref(), a).await?;
        }
    }
    let listed: Vec<&str> = tokens.iter().take(100).map(|t| t.jti.as_str()).collect();
    // The audit event follows the durable revocation; if it failed the revocation would still
    // stand (fail closed), so it is written separately and its failure only logged.
    let event = NewEvent {
        kind: "revocation".into(),
        user,
        chain,
        task,
        action: Some(format!("revoke.{}", kind.as_str())),
        resource: Some(format!("{}:{target}", kind.as_str())),
        decision: Some(Decision::Info),
        reason: if reason.is_empty() {
            format!("revoked by {by}")
        } else {
            format!("revoked by {by}: {}", record.reason)
        },
        request_id,
        detail: json!({"revocation": record.id, "tokens_ended": tokens.len(), "jtis": listed})
            .to_string(),
        ..Default::default()
    };
    if let Err(e) = state.store.commit(vec![Op::Audit(event)]).await {
        tracing::error!(error = %e, "revocation audit event could not be written");
        return Err(ApiError::server_error());
    }
    Ok(Outcome {
        revocation: record,
        tokens,
    })
}

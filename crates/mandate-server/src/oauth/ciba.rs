//! Escalation before issuance in OpenID CIBA poll mode (SPEC §6, issue 6).
//!
//! A token request (token exchange or client credentials) that needs a human first — a stage
//! above the agent's `max_stage` while `approvals.escalation` is on, or a scope matching
//! `approvals.scopes` — is decided as if the agent could reach that stage (every other term still
//! applies), and nothing is issued: [`hold`] burns the client assertion, opens an approval whose
//! payload is a [`PendingToken`] (what to mint once approved; never the user's token or the
//! assertion) and answers `400 authorization_pending` with the approval's id as `auth_req_id`,
//! its `expires_in` and the poll `interval`.
//!
//! The agent then polls the token endpoint with `grant_type=urn:openid:params:grant-type:ciba`
//! and `auth_req_id`, authenticated as always ([`poll`]). Only the agent that asked may poll.
//! Until a human decides it hears `authorization_pending`, or `slow_down` when it polls sooner
//! than the interval (which then grows by 5 s); `expired_token` once the request expired
//! undecided, `access_denied` once denied. Once approved, the first poll claims the approval
//! (exactly once, with its assertion burned in the same unit), checks again that nothing was
//! revoked and every agent is still active, mints the token at the approved stage with a fresh
//! expiry (never beyond the subject's), and records the token, its `token.ciba` event naming the
//! approver and the approval's outcome in one unit before answering. Every poll is audited.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use mandate_core::agent::AgentStatus;
use mandate_core::approval::{self, Ask, Dispatch, PollAnswer};
use mandate_core::audit::{Decision, NewEvent};
use mandate_core::chain::{Actor, DelegationChain};
use mandate_core::claims::SubProfile;
use mandate_core::grant::Grant;
use mandate_core::ids::TaskId;
use mandate_core::revocation::TokenFacts;
use mandate_core::scope::ScopeSet;
use mandate_core::stage::Stage;
use mandate_core::task::{Task, TaskStatus};
use mandate_store::{Op, OpOutput, StoreError, StoredApproval};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::app::RequestId;
use crate::error::OAuthError;
use crate::oauth::client_auth::AuthenticatedAgent;
use crate::oauth::form::Form;
use crate::oauth::issue::{Escalation, Subject, allow_event, mint, refuse_if_revoked};
use crate::oauth::token::{Attempt, TYPE_ACCESS_TOKEN, deny, store_failure, token_response};
use crate::state::AppState;

/// OpenID CIBA grant type.
pub const CIBA: &str = "urn:openid:params:grant-type:ciba";

/// How much `slow_down` adds to the poll interval, seconds (CIBA §11, RFC 8628 §3.5).
pub const SLOW_DOWN_STEP: i64 = 5;

/// The audit kind of every poll.
const KIND: &str = "token.ciba";

/// The longest `auth_req_id` looked up.
const MAX_ID_LEN: usize = 128;

/// What to mint once a held token request is approved: the decided grant and everything it is
/// bound to. Never holds the subject token or the client assertion.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingToken {
    /// Who the token is about.
    pub subject: Subject,
    /// The delegation chain, the requesting agent last (with the credential that asked).
    pub chain: DelegationChain,
    /// The decided scopes, space-separated.
    pub scope: String,
    /// The decided (escalated) stage.
    pub stage: Stage,
    /// The audiences.
    pub aud: Vec<String>,
    /// The task id.
    pub task: String,
    /// The task to create if nobody has created it by then.
    pub new_task: Option<Task>,
    /// The parent token's `jti`, for a hop.
    pub parent_jti: Option<String>,
    /// The decided lifetime, seconds, counted from issuance.
    pub lifetime: i64,
    /// The token never lives beyond this: the subject token's (and parent's) expiry.
    pub subject_exp: i64,
    /// When the subject token was issued (for revocation checks).
    pub subject_iat: i64,
    /// The credential that made the request.
    pub credential: String,
    /// The policies that allowed the grant.
    pub policy_ids: Vec<String>,
    /// Scopes dropped in intersect mode, with reasons.
    pub dropped: Value,
    /// Why a human had to decide.
    pub why: String,
}

impl PendingToken {
    /// What the approver is shown: exactly what will be issued if they approve.
    pub fn binding_message(&self) -> String {
        let ids = self.chain.agent_ids();
        let (agent, earlier) = match ids.split_last() {
            Some((last, rest)) => (last.as_str(), rest),
            None => ("", &[][..]),
        };
        let via = if earlier.is_empty() {
            String::new()
        } else {
            let list: Vec<String> = earlier.iter().map(|a| format!("`{a}`")).collect();
            format!(" (delegated by {})", list.join(" → "))
        };
        let whom = match self.subject.profile {
            SubProfile::User => format!("acting for {}", self.subject.sub),
            SubProfile::Agent => "acting on its own".to_owned(),
        };
        format!(
            "agent `{agent}`{via} {whom} gets `{}` at stage `{}` for {} for {} s (task `{}`)",
            self.scope,
            self.stage,
            self.aud.join(" "),
            self.lifetime,
            self.task
        )
    }
}

fn oauth_error(error: &'static str, description: impl Into<String>) -> OAuthError {
    OAuthError {
        status: StatusCode::BAD_REQUEST,
        error,
        description: description.into(),
        retry_after: None,
        dpop_nonce: None,
    }
}

/// A CIBA error answer with extra fields (`auth_req_id`, `expires_in`, `interval`).
fn waiting_response(error: &'static str, description: String, extra: Value) -> Response {
    let mut body = json!({"error": error, "error_description": description});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    let mut resp = (StatusCode::BAD_REQUEST, Json(body)).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// Answers a token request that needs a human's approval: burns the assertion, opens the
/// approval (with its `approval.requested` event and webhook), records the request's own event,
/// and answers `authorization_pending` with the `auth_req_id` to poll.
pub async fn hold(
    state: &AppState,
    rid: &RequestId,
    kind: &str,
    client: &AuthenticatedAgent,
    esc: Escalation,
    attempt: &Attempt,
) -> Response {
    // The assertion is burned before anything is opened: a replayed assertion never reaches a
    // human.
    match state
        .store
        .commit(client.use_once().into_iter().collect())
        .await
    {
        Ok(_) => {}
        Err(StoreError::Replay(_)) => {
            let e = OAuthError::invalid_client("client assertion was already used");
            return deny(state, rid, kind, attempt, None, e).await;
        }
        Err(e) => return store_failure(e),
    }
    let mut request = esc.request;
    request.request_id = Some(rid.0.clone());
    let stored = match crate::approvals::open(state, request).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "could not open an approval for a held token request");
            return deny(state, rid, kind, attempt, None, OAuthError::server_error()).await;
        }
    };
    let a = &stored.approval;
    let (scope, stage, audience) = match &a.ask {
        Ask::Escalation {
            scope,
            stage,
            audience,
        } => (scope.clone(), Some(*stage), audience.clone()),
        _ => (String::new(), None, String::new()),
    };
    // Counted from the approval's own creation (it reads the clock after `now`, so `now` could
    // make a 900 s approval look like 901 s).
    let expires_in = (a.expires_at - a.created_at).max(0);
    let interval = stored.poll_interval;
    let event = NewEvent {
        kind: kind.to_owned(),
        user: a.user.clone(),
        chain: a.chain.clone(),
        task: attempt.task.clone(),
        action: Some(scope),
        resource: Some(audience),
        decision: Some(Decision::Info),
        reason: format!(
            "held for a human's approval: {}; approval `{}` (`auth_req_id`)",
            esc.why, a.id
        ),
        policy_ids: Vec::new(),
        request_id: Some(rid.0.clone()),
        credential: Some(client.credential.clone()),
        jti: None,
        detail: json!({
            "approval": a.id,
            "stage": stage,
            "expires_at": a.expires_at,
            "interval": interval,
            "binding_message": a.binding_message,
        })
        .to_string(),
    };
    if let Err(e) = state.store.commit(vec![Op::Audit(event)]).await {
        return store_failure(e);
    }
    waiting_response(
        "authorization_pending",
        format!(
            "{}: the request needs a human's approval; poll the token endpoint with `grant_type={CIBA}` and this `auth_req_id`",
            esc.why
        ),
        json!({"auth_req_id": a.id, "expires_in": expires_in, "interval": interval}),
    )
}

/// Handles `grant_type=urn:openid:params:grant-type:ciba`: one poll for a held token request.
/// `proof_burn` burns the poll's DPoP proof (see [`crate::oauth::dpop::use_once`]) in the
/// commit that claims the approval, so a proof that got a token is never accepted again.
pub async fn poll(
    state: &AppState,
    rid: &RequestId,
    form: &Form,
    client: &AuthenticatedAgent,
    proof_burn: Option<Op>,
    now: i64,
    mut attempt: Attempt,
) -> Response {
    let burn = client.use_once();
    let Some(id) = form.get("auth_req_id") else {
        let e = OAuthError::invalid_request("`auth_req_id` is missing");
        return deny(state, rid, KIND, &attempt, burn, e).await;
    };
    let shown: String = id.chars().take(64).collect();
    let unknown = || OAuthError::invalid_grant(format!("unknown `auth_req_id` `{shown}`"));
    let found = if id.len() > MAX_ID_LEN {
        None
    } else {
        match state.store.approval(id).await {
            Ok(found) => found,
            Err(e) => {
                tracing::error!(error = %e, "approval lookup failed");
                let e = OAuthError::server_error();
                return deny(state, rid, KIND, &attempt, burn, e).await;
            }
        }
    };
    let Some(stored) = found.filter(|s| matches!(s.approval.ask, Ask::Escalation { .. })) else {
        return deny(state, rid, KIND, &attempt, burn, unknown()).await;
    };
    let a = &stored.approval;
    if a.agent != client.agent.id.as_str() {
        let e = OAuthError::invalid_grant(format!(
            "`auth_req_id` `{shown}` was not issued to agent `{}`",
            client.agent.id
        ));
        return deny(state, rid, KIND, &attempt, burn, e).await;
    }
    attempt.user = a.user.clone();
    attempt.chain = a.chain.clone();
    if let Ask::Escalation {
        scope, audience, ..
    } = &a.ask
    {
        attempt.scope = Some(scope.clone());
        attempt.audience = Some(audience.clone());
    }
    let pending: Option<PendingToken> = serde_json::from_str(&stored.payload).ok();
    attempt.task = pending.as_ref().map(|p| p.task.clone());
    attempt.parent_jti = pending.as_ref().and_then(|p| p.parent_jti.clone());
    if stored.dispatch != Dispatch::NotSent {
        let e = used(&stored, &shown);
        return deny(state, rid, KIND, &attempt, burn, e).await;
    }
    let answer = approval::poll(a, stored.last_poll, stored.poll_interval, now);
    match answer {
        PollAnswer::Ready => {
            let Some(pending) = pending else {
                tracing::error!(approval = %a.id, "an approved escalation has an unreadable payload");
                let e = OAuthError::invalid_grant(format!(
                    "approval `{shown}` does not describe a token request"
                ));
                return deny(state, rid, KIND, &attempt, burn, e).await;
            };
            issue_approved(
                state, rid, client, proof_burn, &stored, pending, now, &attempt,
            )
            .await
        }
        PollAnswer::AuthorizationPending | PollAnswer::SlowDown => {
            let slow = answer == PollAnswer::SlowDown;
            let interval = if slow {
                stored.poll_interval.saturating_add(SLOW_DOWN_STEP)
            } else {
                stored.poll_interval
            };
            let (error, description) = if slow {
                (
                    "slow_down",
                    format!(
                        "polling too fast: wait at least {interval} s between polls for `auth_req_id` `{shown}`"
                    ),
                )
            } else {
                (
                    "authorization_pending",
                    format!(
                        "approval `{shown}` is waiting for a human's decision; poll again in {interval} s"
                    ),
                )
            };
            let mut event =
                attempt.event(KIND, Decision::Info, format!("{error}: {description}"), rid);
            event.detail = json!({"approval": a.id, "interval": interval}).to_string();
            let mut ops: Vec<Op> = client.use_once().into_iter().collect();
            ops.extend([
                Op::PollApproval {
                    id: a.id.clone(),
                    at: now,
                    interval,
                },
                Op::Audit(event),
            ]);
            match state.store.commit(ops).await {
                Ok(_) => {}
                Err(StoreError::Replay(_)) => {
                    let e = OAuthError::invalid_client("client assertion was already used");
                    return deny(state, rid, KIND, &attempt, None, e).await;
                }
                Err(e) => return store_failure(e),
            }
            waiting_response(
                error,
                description,
                json!({"auth_req_id": a.id, "expires_in": (a.expires_at - now).max(0), "interval": interval}),
            )
        }
        PollAnswer::ExpiredToken => {
            let e = oauth_error(
                "expired_token",
                format!("approval `{shown}` expired before a human decided; ask again"),
            );
            deny(state, rid, KIND, &attempt, burn, e).await
        }
        PollAnswer::AccessDenied => {
            let (by, reason) = a
                .decided
                .as_ref()
                .map(|d| (d.by.clone(), d.reason.clone()))
                .unwrap_or_default();
            let why = if reason.is_empty() {
                String::new()
            } else {
                format!(": {reason}")
            };
            let e = oauth_error(
                "access_denied",
                format!("approval `{shown}` was denied by {by}{why}"),
            );
            deny(state, rid, KIND, &attempt, burn, e).await
        }
    }
}

/// The refusal for an `auth_req_id` that was already carried out (or refused once approved).
fn used(stored: &StoredApproval, shown: &str) -> OAuthError {
    let refused = stored
        .outcome
        .as_deref()
        .and_then(|o| serde_json::from_str::<Value>(o).ok())
        .and_then(|o| o.get("refused").and_then(Value::as_str).map(str::to_owned));
    match refused {
        Some(why) => OAuthError::invalid_grant(format!(
            "`auth_req_id` `{shown}` was already used: it was approved, but the token was refused ({why})"
        )),
        None => OAuthError::invalid_grant(format!("`auth_req_id` `{shown}` was already used")),
    }
}

/// The chain of the token to mint: the stored one, with the current actor proven by the
/// credential that polls (the instance that will hold the token).
fn poller_chain(chain: &DelegationChain, client: &AuthenticatedAgent) -> DelegationChain {
    let mut actors = chain.actors().to_vec();
    actors.pop();
    actors.push(Actor {
        agent: client.agent.id.clone(),
        credential: client.credential.clone(),
    });
    DelegationChain::new(actors)
}

/// What may have changed while a human decided: revocations, agents' status, the task, the
/// agent's ceiling, the subject's expiry. Returns the new token's expiry.
async fn recheck(
    state: &AppState,
    client: &AuthenticatedAgent,
    p: &PendingToken,
    chain: &DelegationChain,
    scope: &ScopeSet,
    now: i64,
) -> Result<i64, OAuthError> {
    let user = (p.subject.profile == SubProfile::User).then_some(p.subject.sub.as_str());
    for c in [&p.chain, chain] {
        refuse_if_revoked(
            state,
            &TokenFacts {
                jti: p.parent_jti.as_deref().unwrap_or_default(),
                task: &p.task,
                user,
                chain: c,
                iat: p.subject_iat,
            },
        )?;
    }
    for a in chain.actors() {
        let status = state.directory.get(a.agent.as_str()).map(|a| a.status);
        if status != Some(AgentStatus::Active) {
            return Err(OAuthError::invalid_grant(format!(
                "agent `{}` of the delegation chain is no longer active",
                a.agent
            )));
        }
    }
    if let Some(bad) = scope.iter().find(|s| !client.agent.ceiling.allows(s)) {
        return Err(OAuthError::invalid_grant(format!(
            "agent `{}`'s ceiling no longer allows `{bad}`",
            client.agent.id
        )));
    }
    let task = state.store.task(&p.task).await.map_err(|e| {
        tracing::error!(error = %e, "task lookup failed");
        OAuthError::server_error()
    })?;
    match (task, &p.new_task) {
        (Some(t), _) if t.status != TaskStatus::Active => {
            return Err(OAuthError::invalid_grant(format!(
                "task `{}` is {}",
                p.task,
                t.status.as_str()
            )));
        }
        (Some(t), Some(new)) if t.agent != new.agent || t.user != new.user => {
            return Err(OAuthError::invalid_grant(format!(
                "task `{}` was meanwhile started by another agent or for another user",
                p.task
            )));
        }
        (None, None) => {
            return Err(OAuthError::invalid_grant(format!(
                "task `{}` no longer exists",
                p.task
            )));
        }
        _ => {}
    }
    let exp = now.saturating_add(p.lifetime).min(p.subject_exp);
    if exp <= now {
        return Err(OAuthError::invalid_grant(
            "the subject token expired while the request waited for approval; ask again with a fresh one",
        ));
    }
    Ok(exp)
}

/// Records that an approved request ended without a token, and answers `error`.
async fn refuse_approved(
    state: &AppState,
    rid: &RequestId,
    attempt: &Attempt,
    id: &str,
    error: OAuthError,
) -> Response {
    let outcome = json!({"refused": error.description}).to_string();
    let finish = Op::FinishApproval {
        id: id.to_owned(),
        outcome,
    };
    deny(state, rid, KIND, attempt, Some(finish), error).await
}

/// The first poll after approval: claim once, check again, mint, record, answer.
#[allow(clippy::too_many_arguments)]
async fn issue_approved(
    state: &AppState,
    rid: &RequestId,
    client: &AuthenticatedAgent,
    proof_burn: Option<Op>,
    stored: &StoredApproval,
    pending: PendingToken,
    now: i64,
    attempt: &Attempt,
) -> Response {
    let a = &stored.approval;
    // Claim it, burning the assertion in the same unit: of two polls, exactly one goes on, and a
    // replayed assertion claims nothing.
    match state
        .store
        .commit(
            client
                .use_once()
                .into_iter()
                .chain(proof_burn.clone())
                .chain([Op::ClaimApproval { id: a.id.clone() }])
                .collect(),
        )
        .await
    {
        Ok(out) if out.last() == Some(&OpOutput::Claimed(true)) => {}
        Ok(_) => {
            let e = OAuthError::invalid_grant(format!("`auth_req_id` `{}` was already used", a.id));
            return deny(state, rid, KIND, attempt, None, e).await;
        }
        Err(StoreError::Replay(key))
            if proof_burn
                .as_ref()
                .is_some_and(|op| matches!(op, Op::UseOnce { key: k, .. } if *k == key)) =>
        {
            let e = OAuthError::invalid_dpop_proof("the DPoP proof was already used");
            return deny(state, rid, KIND, attempt, None, e).await;
        }
        Err(StoreError::Replay(_)) => {
            let e = OAuthError::invalid_client("client assertion was already used");
            return deny(state, rid, KIND, attempt, None, e).await;
        }
        Err(e) => return store_failure(e),
    }
    let chain = poller_chain(&pending.chain, client);
    let Ok(scope) = ScopeSet::parse_oauth(&pending.scope) else {
        tracing::error!(approval = %a.id, "an approved escalation has a malformed scope");
        return refuse_approved(state, rid, attempt, &a.id, OAuthError::server_error()).await;
    };
    let Ok(task) = TaskId::parse(&pending.task) else {
        tracing::error!(approval = %a.id, "an approved escalation has a malformed task");
        return refuse_approved(state, rid, attempt, &a.id, OAuthError::server_error()).await;
    };
    let exp = match recheck(state, client, &pending, &chain, &scope, now).await {
        Ok(exp) => exp,
        Err(e) => return refuse_approved(state, rid, attempt, &a.id, e).await,
    };
    let g = Grant {
        scope,
        stage: pending.stage,
        exp,
        dropped: Vec::new(),
    };
    let minted = mint(
        state,
        client,
        &pending.subject,
        &chain,
        &g,
        &pending.aud,
        &task,
        pending.parent_jti.clone(),
        now,
    );
    let (token, claims, record) = match minted {
        Ok(m) => m,
        Err(e) => return refuse_approved(state, rid, attempt, &a.id, e).await,
    };
    let (approver, decided_at) = a
        .decided
        .as_ref()
        .map(|d| (d.by.clone(), d.at))
        .unwrap_or_default();
    let mut event = allow_event(
        &claims,
        &chain,
        &g,
        record.parent_jti.as_deref(),
        pending.policy_ids.clone(),
    );
    event.kind = KIND.to_owned();
    event.request_id = Some(rid.0.clone());
    event.reason = format!(
        "issued at stage `{}` until {} after approval `{}` by {approver}",
        g.stage, claims.exp, a.id
    );
    let mut detail: Value = serde_json::from_str(&event.detail).unwrap_or_else(|_| json!({}));
    if let Some(d) = detail.as_object_mut() {
        d.insert("approval".into(), json!(a.id));
        d.insert("approver".into(), json!(approver));
        d.insert("approved_at".into(), json!(decided_at));
        d.insert("requested_with".into(), json!(pending.credential));
        d.insert("dropped".into(), pending.dropped.clone());
    }
    event.detail = detail.to_string();
    let outcome = json!({"jti": claims.jti, "exp": claims.exp, "issued_at": now}).to_string();
    let mut ops = Vec::new();
    ops.extend(pending.new_task.clone().map(Op::EnsureTask));
    ops.push(Op::InsertToken(record));
    ops.push(Op::Audit(event));
    ops.push(Op::FinishApproval {
        id: a.id.clone(),
        outcome,
    });
    match state.store.commit(ops).await {
        Ok(_) => {}
        Err(StoreError::ParentRevoked(_)) => {
            let e = OAuthError::invalid_grant("subject token has been revoked");
            return refuse_approved(state, rid, attempt, &a.id, e).await;
        }
        Err(e) => return store_failure(e),
    }
    token_response(state, &token, TYPE_ACCESS_TOKEN, &claims, now)
}

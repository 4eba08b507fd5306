//! Approvals (SPEC §6, issue 6): opening a request for a human decision, deciding it under
//! separation of duties, and telling whoever carries it out.
//!
//! The rules are `mandate_core::approval`'s; this module adds the store, the audit events and the
//! notifications:
//!
//! * [`open`] records a new request and its `approval.requested` event in one unit, then posts
//!   the webhook (`approvals.webhook`) in the background.
//! * [`decide`] checks the decider against the agent's approver rule (its owner, or a member of
//!   `approvals.approver_groups`; never the user the request is for), records the decision and
//!   its event in one unit (of two racing decisions exactly one lands), and publishes the id on
//!   the [`Hub`] so the gateway sends an approved held write at once. A refused attempt is
//!   audited too (`approval.refused`).
//! * An approved agent change is applied in the decision's own unit.

use mandate_core::agent::Agent;
use mandate_core::approval::{Approval, ApproverRule, Ask, Dispatch, Refusal, Status};
use mandate_core::audit::{Decision, NewEvent};
use mandate_core::ids::UserPrincipal;
use mandate_store::{Op, StoreError, StoredApproval};
use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::error::ApiError;
use crate::state::AppState;

/// Where decisions are announced, and the HTTP client for webhooks.
pub struct Hub {
    decided: broadcast::Sender<String>,
    http: reqwest::Client,
}

impl Default for Hub {
    fn default() -> Self {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Hub {
            decided: broadcast::channel(256).0,
            http,
        }
    }
}

impl Hub {
    /// The ids of approvals as they are decided (approved or denied). A receiver that lags
    /// should look in the store for approved ones not yet carried out.
    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.decided.subscribe()
    }

    fn publish(&self, id: &str) {
        let _ = self.decided.send(id.to_owned());
    }

    /// Announces a decision made on another node (see [`crate::cluster`]).
    pub fn announce(&self, id: &str) {
        self.publish(id);
    }
}

/// A request for a decision, before it is stored.
#[derive(Debug, Clone)]
pub struct Request {
    /// What is asked.
    pub ask: Ask,
    /// The user on whose behalf, if any.
    pub user: Option<String>,
    /// The agent chain, earliest first.
    pub chain: Vec<String>,
    /// The agent the approval concerns.
    pub agent: String,
    /// The task the request belongs to, if any.
    pub task: Option<String>,
    /// The requester's justification.
    pub justification: String,
    /// What exactly will happen if approved.
    pub binding_message: String,
    /// What to carry out once approved.
    pub payload: Value,
    /// The request id, for the audit event.
    pub request_id: Option<String>,
    /// Who asked, for the audit event (`admin:<id>`, an agent's credential, a gateway).
    pub requested_by: String,
}

/// The most bytes of a justification or decision reason.
pub const MAX_REASON_BYTES: usize = 1000;

/// An approval's action and resource, as audit events name them.
pub fn action_and_resource(ask: &Ask) -> (String, String) {
    match ask {
        Ask::Escalation {
            scope, audience, ..
        } => (scope.clone(), audience.clone()),
        Ask::HeldWrite {
            action, resource, ..
        } => (action.clone(), resource.clone()),
        Ask::AgentChange { agent, .. } => ("agent.update".to_owned(), format!("agent:{agent}")),
    }
}

fn new_id() -> Result<String, StoreError> {
    mandate_token::random_id::<12>()
        .map(|r| format!("ap-{r}"))
        .map_err(|e| StoreError::Database(format!("no randomness for an approval id: {e}")))
}

/// Records a new approval request with its audit event, then notifies the webhook.
pub async fn open(state: &AppState, req: Request) -> Result<StoredApproval, StoreError> {
    let now = state.clock.now();
    let approval = Approval {
        id: new_id()?,
        ask: req.ask,
        user: req.user,
        chain: req.chain,
        agent: req.agent,
        task: req.task,
        justification: req.justification,
        binding_message: req.binding_message,
        created_at: now,
        expires_at: now + state.config.approvals.ttl,
        decided: None,
    };
    let stored = StoredApproval {
        approval,
        payload: req.payload.to_string(),
        dispatch: Dispatch::NotSent,
        outcome: None,
        last_poll: None,
        poll_interval: state.config.approvals.poll_interval,
    };
    let a = &stored.approval;
    let (action, resource) = action_and_resource(&a.ask);
    let event = NewEvent {
        kind: "approval.requested".into(),
        user: a.user.clone(),
        chain: a.chain.clone(),
        task: a.task.clone(),
        action: Some(action),
        resource: Some(resource),
        decision: Some(Decision::Info),
        reason: a.binding_message.clone(),
        request_id: req.request_id,
        detail: json!({
            "approval": a.id,
            "kind": a.ask.kind(),
            "justification": a.justification,
            "expires_at": a.expires_at,
            "requested_by": req.requested_by,
        })
        .to_string(),
        ..Default::default()
    };
    state
        .store
        .commit(vec![
            Op::InsertApproval(Box::new(stored.clone())),
            Op::Audit(event),
        ])
        .await?;
    notify(state, &stored);
    Ok(stored)
}

/// The approver rule for `agent`: its owner and the configured approver groups.
pub fn rule_for(state: &AppState, agent: Option<&Agent>) -> ApproverRule {
    ApproverRule {
        owner: agent.map(|a| a.owner.clone()).unwrap_or_default(),
        groups: state.config.approvals.approver_groups.clone(),
    }
}

/// Whether `who` could decide approvals for `agent` (ignoring expiry and the request's user).
pub fn is_approver_for(state: &AppState, agent: &str, who: &UserPrincipal) -> bool {
    let a = state.directory.get(agent);
    let rule = rule_for(state, a.as_deref());
    (!rule.owner.is_empty() && rule.owner == who.subject)
        || who.groups.iter().any(|g| rule.groups.contains(g))
}

/// A decision on an approval.
#[derive(Debug, Clone)]
pub struct Ruling {
    /// Approve or deny.
    pub approved: bool,
    /// Why, in the decider's words.
    pub reason: String,
    /// The request id, for the audit event.
    pub request_id: Option<String>,
}

fn refusal_error(r: &Refusal) -> ApiError {
    match r {
        Refusal::SelfApproval(_) | Refusal::NoRights { .. } => ApiError::forbidden(r.to_string()),
        Refusal::Expired(_) | Refusal::AlreadyDecided { .. } => ApiError::conflict(r.to_string()),
    }
}

/// Decides approval `id` as `who`: separation of duties, one decision, audited either way.
pub async fn decide(
    state: &AppState,
    id: &str,
    who: &UserPrincipal,
    decision: Ruling,
) -> Result<StoredApproval, ApiError> {
    let now = state.clock.now();
    let stored = state
        .store
        .approval(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no approval `{id}`")))?;
    let agent = state.directory.get(&stored.approval.agent);
    let rule = rule_for(state, agent.as_deref());
    let approver = mandate_core::approval::Approver {
        subject: &who.subject,
        groups: &who.groups,
    };
    let mut approval = stored.approval.clone();
    let (action, resource) = action_and_resource(&approval.ask);
    let verb = if decision.approved { "approve" } else { "deny" };
    let base = |kind: &str, d: Decision, reason: String, detail: Value| NewEvent {
        kind: kind.to_owned(),
        user: stored.approval.user.clone(),
        chain: stored.approval.chain.clone(),
        task: stored.approval.task.clone(),
        action: Some(action.clone()),
        resource: Some(resource.clone()),
        decision: Some(d),
        reason,
        request_id: decision.request_id.clone(),
        detail: detail.to_string(),
        ..Default::default()
    };
    if let Err(refusal) =
        approval.decide(&approver, &rule, decision.approved, &decision.reason, now)
    {
        let ev = base(
            "approval.refused",
            Decision::Deny,
            format!("`{}` may not {verb}: {refusal}", who.subject),
            json!({"approval": id, "decider": who.subject, "decider_issuer": who.issuer, "wanted": verb}),
        );
        state.store.commit(vec![Op::Audit(ev)]).await?;
        return Err(refusal_error(&refusal));
    }
    let Some(decided) = approval.decided.clone() else {
        return Err(ApiError::server_error());
    };
    let (kind, d) = if decided.approved {
        ("approval.approved", Decision::Allow)
    } else {
        ("approval.denied", Decision::Deny)
    };
    let done = if decided.approved {
        "approved"
    } else {
        "denied"
    };
    let reason = if decided.reason.is_empty() {
        format!("{done} by {}", who.subject)
    } else {
        format!("{done} by {}: {}", who.subject, decided.reason)
    };
    let mut ops = vec![
        Op::DecideApproval {
            id: id.to_owned(),
            decided: decided.clone(),
        },
        Op::Audit(base(
            kind,
            d,
            reason,
            json!({"approval": id, "kind": approval.ask.kind(), "approver": who.subject,
                   "approver_issuer": who.issuer, "binding_message": approval.binding_message}),
        )),
    ];
    let mut changed_agent = None;
    if decided.approved
        && let Ask::AgentChange { .. } = &approval.ask
    {
        let (apply, agent_id) =
            crate::admin::agents::apply_approved_change(state, &stored, &who.subject, now).await?;
        ops.extend(apply);
        changed_agent = Some(agent_id);
    }
    match state.store.commit(ops).await {
        Ok(_) => {}
        Err(StoreError::AlreadyDecided { id, status }) => {
            // Another decision landed between the check and the commit: this one is refused,
            // and audited like any other refusal.
            let message = format!("approval `{id}` was already {status}");
            let ev = base(
                "approval.refused",
                Decision::Deny,
                format!("`{}` may not {verb}: {message}", who.subject),
                json!({"approval": id, "decider": who.subject, "decider_issuer": who.issuer, "wanted": verb}),
            );
            state.store.commit(vec![Op::Audit(ev)]).await?;
            return Err(ApiError::conflict(message));
        }
        Err(e) => return Err(e.into()),
    }
    if let Some(agent) = changed_agent {
        state
            .directory
            .refresh(state.store.as_ref(), &agent)
            .await?;
    }
    state.approvals.publish(id);
    state
        .store
        .approval(id)
        .await?
        .ok_or_else(ApiError::server_error)
}

/// Records that an admin credential (`by`, e.g. `admin:bootstrap`) tried to decide approval
/// `id`: refused whatever its role, because a decision needs a human. Nothing is recorded for
/// an id that does not exist.
pub async fn refuse_credential(
    state: &AppState,
    id: &str,
    by: &str,
    verb: &str,
    request_id: Option<String>,
) -> Result<(), ApiError> {
    let Some(stored) = state.store.approval(id).await? else {
        return Ok(());
    };
    let (action, resource) = action_and_resource(&stored.approval.ask);
    let ev = NewEvent {
        kind: "approval.refused".to_owned(),
        user: stored.approval.user.clone(),
        chain: stored.approval.chain.clone(),
        task: stored.approval.task.clone(),
        action: Some(action),
        resource: Some(resource),
        decision: Some(Decision::Deny),
        reason: format!("`{by}` may not {verb}: an admin credential cannot decide an approval"),
        request_id,
        detail: json!({"approval": id, "decider": by, "wanted": verb}).to_string(),
        ..Default::default()
    };
    state.store.commit(vec![Op::Audit(ev)]).await?;
    Ok(())
}

/// The JSON an approval is shown as (admin API, CLI, console).
pub fn view(state: &AppState, s: &StoredApproval, now: i64) -> Value {
    let a = &s.approval;
    let rule = rule_for(state, state.directory.get(&a.agent).as_deref());
    let status = match a.status() {
        Status::Pending if a.is_expired(now) => "expired",
        other => other.as_str(),
    };
    let outcome = s
        .outcome
        .as_deref()
        .and_then(|o| serde_json::from_str::<Value>(o).ok());
    json!({
        "id": a.id,
        "kind": a.ask.kind(),
        "status": status,
        "ask": a.ask,
        "user": a.user,
        "chain": a.chain,
        "agent": a.agent,
        "task": a.task,
        "approvers": {"owner": rule.owner, "groups": rule.groups,
                      "never": a.user},
        "justification": a.justification,
        "binding_message": a.binding_message,
        "created_at": a.created_at,
        "expires_at": a.expires_at,
        "decided": a.decided,
        "dispatch": s.dispatch.as_str(),
        "outcome": outcome.map(summary),
    })
}

/// What of an outcome is shown outside the agent's own poll: never a held write's response
/// body (it is the upstream's data, for the agent), only its status.
fn summary(outcome: Value) -> Value {
    match outcome.get("status") {
        Some(status) => json!({"status": status, "sent_at": outcome.get("sent_at")}),
        None => outcome,
    }
}

/// The one line a chat tool shows for a new request.
pub fn headline(a: &Approval) -> String {
    let who = match &a.user {
        Some(u) => format!("agent `{}` for {u}", a.agent),
        None => format!("agent `{}`", a.agent),
    };
    format!(
        "approval needed ({}): {who} — {}. Decide with `mandate approvals approve {}` or `deny`.",
        a.ask.kind(),
        a.binding_message,
        a.id
    )
}

/// Posts the new request to `approvals.webhook`, in the background, up to three attempts.
fn notify(state: &AppState, stored: &StoredApproval) {
    let Some(url) = state.config.approvals.webhook.clone() else {
        return;
    };
    let a = &stored.approval;
    let payload = json!({
        "text": headline(a),
        "approval": view(state, stored, a.created_at),
        "links": {"self": format!("{}/v1/approvals/{}", state.issuer, a.id)},
    });
    let http = state.approvals.http.clone();
    tokio::spawn(async move {
        for attempt in 0..3u32 {
            if attempt > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(500 << attempt)).await;
            }
            match http.post(&url).json(&payload).send().await {
                Ok(r) if r.status().is_success() => return,
                Ok(r) => {
                    tracing::warn!(status = %r.status(), "approval webhook refused the notice")
                }
                // Without the URL: a chat webhook's URL is itself a secret.
                Err(e) => tracing::warn!(
                    error = %e.without_url(),
                    "approval webhook could not be reached"
                ),
            }
        }
    });
}

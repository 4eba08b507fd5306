//! Issuing a token, whichever grant asked for it: the pure issuance decision
//! (`mandate_core::grant::decide`), then minting the JWT, its lineage record and its audit event.
//! Nothing is written here: the endpoint commits it all in one unit before answering.
//!
//! A request that needs a human first — a stage above the agent's `max_stage` (with
//! `approvals.escalation` on), or a scope matching `approvals.scopes` — is decided as if the agent
//! could reach that stage (every other term still applies) and comes back as an [`Escalation`]:
//! what to ask, and everything needed to mint the token once approved (OpenID CIBA poll mode,
//! see [`crate::oauth::ciba`]).

use std::collections::BTreeMap;

use mandate_core::approval::Ask;
use mandate_core::audit::{Decision, NewEvent};
use mandate_core::chain::DelegationChain;
use mandate_core::claims::{AccessClaims, Audience, SubProfile};
use mandate_core::grant::Permits;
use mandate_core::grant::{self, Grant, GrantDenial, GrantRequest, Parent, TtlPolicy};
use mandate_core::ids::{TaskId, UserPrincipal};
use mandate_core::revocation::TokenFacts;
use mandate_core::scope::PatternSet;
use mandate_core::task::{Task, TaskStatus, TokenRecord};
use mandate_token::sign::sign_jwt;
use serde_json::json;

use mandate_store::Op;

use crate::approvals::Request as ApprovalRequest;
use crate::error::OAuthError;
use crate::oauth::ciba::PendingToken;
use crate::oauth::client_auth::AuthenticatedAgent;
use crate::oauth::request::TokenParams;
use crate::oauth::token::{Attempt, TYPE_ACCESS_TOKEN};
use crate::state::AppState;

/// A token ready to be recorded and sent.
pub struct Issued {
    /// The signed JWT.
    pub token: String,
    /// Its claims.
    pub claims: AccessClaims,
    /// Its lineage record.
    pub record: TokenRecord,
    /// The task to create, when this token starts one.
    pub new_task: Option<NewTask>,
    /// The allow event (kind and request id are filled in by the endpoint).
    pub event: NewEvent,
    /// RFC 8693 `issued_token_type`.
    pub issued_token_type: &'static str,
}

/// What a token request comes to: a token, or a question for a human first.
pub enum Outcome {
    /// Decided and minted.
    Issued(Box<Issued>),
    /// Needs a human's approval before anything is issued.
    Escalate(Box<Escalation>),
}

/// A token request held for a human's approval (OpenID CIBA poll mode).
pub struct Escalation {
    /// The approval to open (`request_id` is filled in by the endpoint). Its payload is a
    /// [`PendingToken`]: what to mint once approved, never the subject token.
    pub request: ApprovalRequest,
    /// Why a human must decide, in words.
    pub why: String,
}

/// Who the token is about.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Subject {
    /// `sub`.
    pub sub: String,
    /// `sub_profile`.
    pub profile: SubProfile,
    /// The user's IdP, for user tokens.
    pub issuer: Option<String>,
    /// The user's groups (`groups`): from the user's token at a first hop, the parent's at a
    /// later one; none for an agent's own token.
    pub groups: Vec<String>,
    /// The user's carried claims (`user_tags`, `tokens.carry_claims`): from the user's token at
    /// a first hop, the parent's at a later one; none for an agent's own token.
    pub user_tags: BTreeMap<String, String>,
}

/// `rights(U)` of an issuance: Cedar decisions for a first hop or an agent's own token, or the
/// parent's scopes for a later hop (with the policies that allowed the delegation).
pub enum IssuanceRights<'a> {
    /// Decided by policy, scope by scope.
    Policy(crate::policy::PolicyRights<'a>),
    /// Bounded by the parent token.
    Parent {
        /// The parent's scopes.
        scopes: PatternSet,
        /// The policies that allowed the delegation.
        policy_ids: Vec<String>,
    },
}

impl IssuanceRights<'_> {
    fn permits(&self) -> &dyn Permits {
        match self {
            IssuanceRights::Policy(p) => p,
            IssuanceRights::Parent { scopes, .. } => scopes,
        }
    }

    fn policy_ids(&self) -> Vec<String> {
        match self {
            IssuanceRights::Policy(p) => p.policy_ids(),
            IssuanceRights::Parent { policy_ids, .. } => policy_ids.clone(),
        }
    }
}

/// Everything the issuance needs besides the request's own parameters.
pub struct Issuance<'a> {
    /// Who the token is about.
    pub subject: Subject,
    /// The chain, this agent included (last).
    pub chain: DelegationChain,
    /// What the principal may do directly.
    pub rights: IssuanceRights<'a>,
    /// The parent token and its `jti`, for hops.
    pub parent: Option<(Parent, String)>,
    /// The subject token's expiry.
    pub subject_exp: i64,
    /// When the subject token was issued (revocations of its user, agents and keys made at or
    /// after it reach it): checked again before a held request is issued.
    pub subject_iat: i64,
    /// The task, and whether it must be created.
    pub task: (TaskId, Option<NewTask>),
}

fn ttl_policy(state: &AppState) -> TtlPolicy {
    let t = &state.config.tokens;
    TtlPolicy {
        default_ttl: t.default_ttl,
        max_ttl: t.max_ttl,
        execute_write_ttl: t.execute_write_ttl,
        stage_max: [
            t.stage_max_ttl.observe,
            t.stage_max_ttl.draft,
            t.stage_max_ttl.execute,
        ],
    }
}

fn denial(d: GrantDenial) -> OAuthError {
    match d.oauth_error() {
        "invalid_scope" => OAuthError::invalid_scope(d.to_string()),
        "invalid_grant" => OAuthError::invalid_grant(d.to_string()),
        "invalid_target" => OAuthError::invalid_target(d.to_string()),
        _ => OAuthError::invalid_request(d.to_string()),
    }
}

/// Refuses when a revocation reaches `facts` (the subject, its task, user, agents or keys).
pub fn refuse_if_revoked(state: &AppState, facts: &TokenFacts<'_>) -> Result<(), OAuthError> {
    match state.revocations.with(|idx| idx.check(facts)) {
        Some(r) => Err(OAuthError::invalid_grant(format!(
            "{} `{}` has been revoked",
            r.kind.as_str(),
            r.id
        ))),
        None => Ok(()),
    }
}

/// The scope patterns that always need a human's approval (`approvals.scopes`; validated at
/// start).
fn approval_only(state: &AppState) -> PatternSet {
    PatternSet::parse(state.config.approvals.scopes.iter().map(String::as_str)).unwrap_or_else(
        |e| {
            tracing::error!(error = %e, "`approvals.scopes` does not parse; no scope is gated");
            PatternSet::default()
        },
    )
}

/// Decides, mints and describes the token — or, when a human must approve first, says what to
/// ask. Pure apart from reading the signing key.
pub fn issue(
    state: &AppState,
    client: &AuthenticatedAgent,
    params: &TokenParams,
    iss: Issuance<'_>,
    now: i64,
) -> Result<Outcome, OAuthError> {
    let req = GrantRequest {
        requested: &params.scopes,
        aud: &params.aud,
        mode: params.mode,
        rights: iss.rights.permits(),
        ceiling: &client.agent.ceiling,
        max_stage: client.agent.max_stage,
        parent: iss.parent.as_ref().map(|(p, _)| p),
        stage: params.stage,
        ttl: params.ttl,
        subject_exp: iss.subject_exp,
        now,
        ttl_policy: ttl_policy(state),
        catalog: &state.config.catalog,
    };
    let refuse = |d: GrantDenial| {
        let e = denial(d);
        if iss.subject.profile == SubProfile::Agent {
            e.own_rights()
        } else {
            e
        }
    };
    // A stage above the agent's maximum is a question for a human, not a refusal: decide as if
    // the agent could reach it; anything else that refuses still refuses.
    let (g, above_max) = match grant::decide(&req) {
        Ok(g) => (g, None),
        Err(GrantDenial::StageAboveMax { requested, max }) if state.config.approvals.escalation => {
            let raised = GrantRequest {
                max_stage: requested,
                ..req
            };
            (grant::decide(&raised).map_err(refuse)?, Some(max))
        }
        Err(d) => return Err(refuse(d)),
    };
    let gated = approval_only(state);
    let gated: Vec<String> = g
        .scope
        .iter()
        .filter(|s| gated.allows(s))
        .map(|s| s.as_str().to_owned())
        .collect();
    if above_max.is_some() || !gated.is_empty() {
        let mut why = Vec::new();
        if let Some(max) = above_max {
            why.push(format!(
                "stage `{}` is above agent `{}`'s max stage `{max}`",
                g.stage, client.agent.id
            ));
        }
        if !gated.is_empty() {
            let list: Vec<String> = gated.iter().map(|s| format!("`{s}`")).collect();
            why.push(format!(
                "{} {} a human's approval (`approvals.scopes`)",
                list.join(", "),
                if gated.len() == 1 { "needs" } else { "need" }
            ));
        }
        let why = why.join("; ");
        let esc = escalation(client, params, iss, &g, why, now)?;
        return Ok(Outcome::Escalate(Box::new(esc)));
    }
    let parent_jti = iss.parent.map(|(_, jti)| jti);
    let (token, claims, record) = mint(
        state,
        client,
        &iss.subject,
        &iss.chain,
        &g,
        &params.aud,
        &iss.task.0,
        parent_jti,
        now,
    )?;
    let event = allow_event(
        &claims,
        &iss.chain,
        &g,
        record.parent_jti.as_deref(),
        iss.rights.policy_ids(),
    );
    Ok(Outcome::Issued(Box::new(Issued {
        token,
        claims,
        record,
        new_task: iss.task.1,
        event,
        issued_token_type: TYPE_ACCESS_TOKEN,
    })))
}

/// The approval to open for a request held for a human, with what to mint once approved.
fn escalation(
    client: &AuthenticatedAgent,
    params: &TokenParams,
    iss: Issuance<'_>,
    g: &Grant,
    why: String,
    now: i64,
) -> Result<Escalation, OAuthError> {
    let scope = g.scope.to_oauth();
    let lifetime = g.exp - now;
    let policy_ids = iss.rights.policy_ids();
    let subject_exp = iss
        .parent
        .as_ref()
        .map_or(iss.subject_exp, |(p, _)| iss.subject_exp.min(p.exp));
    let pending = PendingToken {
        subject: iss.subject,
        chain: iss.chain.clone(),
        scope: scope.clone(),
        stage: g.stage,
        aud: params.aud.clone(),
        task: iss.task.0.as_str().to_owned(),
        new_task: iss.task.1.map(|n| n.task),
        parent_jti: iss.parent.map(|(_, jti)| jti),
        lifetime,
        subject_exp,
        subject_iat: iss.subject_iat,
        credential: client.credential.clone(),
        policy_ids,
        dropped: serde_json::to_value(&g.dropped).unwrap_or_default(),
        why: why.clone(),
    };
    let user = (pending.subject.profile == SubProfile::User).then(|| pending.subject.sub.clone());
    let request = ApprovalRequest {
        ask: Ask::Escalation {
            scope,
            stage: g.stage,
            audience: params.aud.join(" "),
        },
        user,
        chain: iss.chain.agent_ids(),
        agent: client.agent.id.as_str().to_owned(),
        task: Some(pending.task.clone()),
        justification: params.justification.clone().unwrap_or_default(),
        binding_message: pending.binding_message(),
        payload: serde_json::to_value(&pending).map_err(|e| {
            tracing::error!(error = %e, "a held token request could not be recorded");
            OAuthError::server_error()
        })?,
        request_id: None,
        requested_by: format!("agent:{} ({})", client.agent.id, client.credential),
    };
    Ok(Escalation { request, why })
}

/// Signs the token `g` describes and its lineage record.
#[allow(clippy::too_many_arguments)]
pub fn mint(
    state: &AppState,
    client: &AuthenticatedAgent,
    subject: &Subject,
    chain: &DelegationChain,
    g: &Grant,
    aud: &[String],
    task: &TaskId,
    parent_jti: Option<String>,
    now: i64,
) -> Result<(String, AccessClaims, TokenRecord), OAuthError> {
    let jti = mandate_token::ordered_id().map_err(|_| OAuthError::server_error())?;
    let claims = AccessClaims {
        iss: state.issuer.clone(),
        sub: subject.sub.clone(),
        sub_profile: subject.profile,
        sub_iss: subject.issuer.clone(),
        groups: subject.groups.clone(),
        user_tags: subject.user_tags.clone(),
        aud: Audience::from_vec(aud.to_vec()),
        client_id: client.agent.id.as_str().to_owned(),
        iat: now,
        nbf: now,
        exp: g.exp,
        jti: jti.clone(),
        scope: g.scope.to_oauth(),
        act: match subject.profile {
            SubProfile::User => chain.to_act_claim(),
            SubProfile::Agent => None,
        },
        task: task.as_str().to_owned(),
        stage: g.stage,
        credential: client.credential.clone(),
        cnf: client
            .dpop_jkt
            .as_ref()
            .map(|jkt| serde_json::json!({ "jkt": jkt })),
    };
    let keys = state.keys.keys();
    let token = sign_jwt(&keys.current, "at+jwt", &claims).map_err(|e| {
        tracing::error!(error = %e, "signing failed");
        OAuthError::server_error()
    })?;
    let record = TokenRecord {
        jti,
        parent_jti,
        task: task.as_str().to_owned(),
        sub: subject.sub.clone(),
        sub_profile: match subject.profile {
            SubProfile::User => "user".into(),
            SubProfile::Agent => "agent".into(),
        },
        sub_iss: subject.issuer.clone(),
        chain: chain.agent_ids(),
        credentials: chain
            .actors()
            .iter()
            .map(|a| a.credential.clone())
            .collect(),
        scope: claims.scope.clone(),
        aud: aud.to_vec(),
        stage: g.stage.as_str().to_owned(),
        iat: now,
        exp: g.exp,
        revoked_at: None,
    };
    Ok((token, claims, record))
}

/// The `allow` event of an issued token (kind and request id are filled in by the caller).
pub fn allow_event(
    claims: &AccessClaims,
    chain: &DelegationChain,
    g: &Grant,
    parent: Option<&str>,
    policy_ids: Vec<String>,
) -> NewEvent {
    NewEvent {
        kind: String::new(),
        user: (claims.sub_profile == SubProfile::User).then(|| claims.sub.clone()),
        chain: chain.agent_ids(),
        task: Some(claims.task.clone()),
        action: Some(claims.scope.clone()),
        resource: Some(claims.aud.to_vec().join(" ")),
        decision: Some(Decision::Allow),
        reason: format!("issued at stage `{}` until {}", g.stage, claims.exp),
        policy_ids,
        request_id: None,
        credential: Some(claims.credential.clone()),
        jti: Some(claims.jti.clone()),
        detail:
            json!({"stage": g.stage, "exp": claims.exp, "parent_jti": parent, "dropped": g.dropped})
                .to_string(),
    }
}

/// A task that a token starts.
#[derive(Debug, Clone)]
pub struct NewTask {
    /// The task.
    pub task: Task,
    /// Whether its id was generated here (the request named none), rather than chosen by the
    /// caller.
    pub id_generated: bool,
}

impl NewTask {
    /// The op that creates it. A generated id is new by construction, so it is inserted — a
    /// collision fails the request instead of binding the token to someone else's task — and
    /// never looked up first. A named task may be started by two requests at once: it is
    /// created by whichever commits first.
    pub fn op(self) -> Op {
        if self.id_generated {
            Op::InsertTask(self.task)
        } else {
            Op::EnsureTask(self.task)
        }
    }
}

fn generated_task_id() -> Result<TaskId, OAuthError> {
    let id = mandate_token::random_id::<9>().map_err(|_| OAuthError::server_error())?;
    TaskId::parse(&format!("task-{}", id.replace('_', "x"))).map_err(|_| OAuthError::server_error())
}

/// Finds or creates the task of a first hop: an existing task must be active and belong to this
/// agent and user. Returns the id and, when new, the task to create.
pub async fn resolve_task(
    state: &AppState,
    params: &TokenParams,
    client: &AuthenticatedAgent,
    user: Option<&UserPrincipal>,
    now: i64,
    attempt: &mut Attempt,
) -> Result<(TaskId, Option<NewTask>), OAuthError> {
    let (id, id_generated) = match &params.task {
        Some(id) => (id.clone(), false),
        None => (generated_task_id()?, true),
    };
    attempt.task = Some(id.as_str().to_owned());
    let existing = if id_generated {
        None
    } else {
        state.store.task(id.as_str()).await.map_err(|e| {
            tracing::error!(error = %e, "task lookup failed");
            OAuthError::server_error()
        })?
    };
    let Some(t) = existing else {
        let task = Task {
            id: id.as_str().to_owned(),
            agent: client.agent.id.as_str().to_owned(),
            user: user.map(|u| u.subject.clone()),
            user_issuer: user.map(|u| u.issuer.clone()),
            purpose: params.purpose.clone().unwrap_or_default(),
            input: params.input.clone().unwrap_or_default(),
            status: TaskStatus::Active,
            created_at: now,
            updated_at: now,
            outcome: None,
            completed_at: None,
        };
        return Ok((id, Some(NewTask { task, id_generated })));
    };
    if t.status != TaskStatus::Active {
        return Err(OAuthError::invalid_grant(format!(
            "task `{id}` is {}",
            t.status.as_str()
        )));
    }
    if t.agent != client.agent.id.as_str() {
        return Err(OAuthError::invalid_grant(format!(
            "task `{id}` belongs to another agent"
        )));
    }
    if t.user.as_deref() != user.map(|u| u.subject.as_str()) {
        return Err(OAuthError::invalid_grant(format!(
            "task `{id}` belongs to another user"
        )));
    }
    Ok((id, None))
}

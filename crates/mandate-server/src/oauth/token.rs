//! `POST /oauth2/token`: token exchange (RFC 8693) and client credentials, issuing RFC 9068 JWTs.
//!
//! Every answer — token or error — is preceded by a durable audit event. The client assertion's
//! `jti` is burned in the same commit, so a replay loses even when it races the original.

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use mandate_core::audit::{Decision, NewEvent};
use mandate_core::chain::{Actor, DelegationChain};
use mandate_core::claims::{AccessClaims, Audience, SubProfile};
use mandate_core::grant::{self, GrantRequest, Parent, ScopeMode, TtlPolicy};
use mandate_core::ids::TaskId;
use mandate_core::revocation::TokenFacts;
use mandate_core::scope::{PatternSet, ScopeSet};
use mandate_core::stage::Stage;
use mandate_core::task::{Task, TaskStatus, TokenRecord};
use mandate_store::{Op, StoreError};
use mandate_token::sign::sign_jwt;
use mandate_token::verify::{AudCheck, ClaimChecks, peek_claims, verify};
use serde_json::{Value, json};
use std::sync::Arc;

use crate::app::RequestId;
use crate::error::OAuthError;
use crate::oauth::client_auth::{AuthenticatedAgent, agent_keys, authenticate};
use crate::oauth::form::{Form, read_form};
use crate::state::AppState;

/// RFC 8693 grant type.
pub const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// RFC 8693 token type of a JWT.
pub const TYPE_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
/// RFC 8693 token type of an access token.
pub const TYPE_ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";

/// What is known about a request so far, for its audit event.
#[derive(Debug, Default, Clone)]
pub struct Attempt {
    /// The user.
    pub user: Option<String>,
    /// Agent ids, earliest first.
    pub chain: Vec<String>,
    /// The task.
    pub task: Option<String>,
    /// The requested scope.
    pub scope: Option<String>,
    /// The requested audiences.
    pub audience: Option<String>,
    /// The credential of the current actor.
    pub credential: Option<String>,
    /// The parent token's `jti`, for hops.
    pub parent_jti: Option<String>,
}

impl Attempt {
    fn event(&self, kind: &str, decision: Decision, reason: String, rid: &RequestId) -> NewEvent {
        NewEvent {
            kind: kind.to_owned(),
            user: self.user.clone(),
            chain: self.chain.clone(),
            task: self.task.clone(),
            action: self.scope.clone(),
            resource: self.audience.clone(),
            decision: Some(decision),
            reason,
            policy_ids: Vec::new(),
            request_id: Some(rid.0.clone()),
            credential: self.credential.clone(),
            jti: None,
            detail: String::new(),
        }
    }
}

/// A token ready to be recorded and sent.
struct Issued {
    token: String,
    claims: AccessClaims,
    record: TokenRecord,
    new_task: Option<Task>,
    event: NewEvent,
    issued_token_type: &'static str,
}

/// Writes a deny event (burning the assertion if there was one) and answers with `error`.
async fn deny(
    state: &AppState,
    rid: &RequestId,
    kind: &str,
    attempt: &Attempt,
    burn: Option<Op>,
    error: OAuthError,
) -> Response {
    let event = attempt.event(
        kind,
        Decision::Deny,
        format!("{}: {}", error.error, error.description),
        rid,
    );
    let mut ops = Vec::new();
    ops.extend(burn);
    ops.push(Op::Audit(event.clone()));
    match state.store.commit(ops).await {
        Ok(_) => error.into_response(),
        Err(StoreError::Replay(_)) => {
            let replay = OAuthError::invalid_client("client assertion was already used");
            let event = attempt.event(
                kind,
                Decision::Deny,
                format!("invalid_client: {}", replay.description),
                rid,
            );
            match state.store.commit(vec![Op::Audit(event)]).await {
                Ok(_) => replay.into_response(),
                Err(e) => store_failure(e),
            }
        }
        Err(e) => store_failure(e),
    }
}

fn store_failure(e: StoreError) -> Response {
    tracing::error!(error = %e, "audit write failed; answering server_error");
    OAuthError::server_error().into_response()
}

/// The token endpoint.
pub async fn token(
    State(state): State<Arc<AppState>>,
    Extension(rid): Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let now = state.clock.now();
    let mut attempt = Attempt::default();
    let form = match read_form(&headers, body, state.config.limits.body_bytes).await {
        Ok(f) => f,
        Err(e) => return deny(&state, &rid, "token.request", &attempt, None, e).await,
    };
    let grant_type = form.get("grant_type");
    let kind = match grant_type {
        Some(TOKEN_EXCHANGE) => "token.exchange",
        Some("client_credentials") => "token.client_credentials",
        _ => "token.request",
    };
    attempt.scope = form.get("scope").map(|s| s.chars().take(500).collect());
    let auds: Vec<&str> = form
        .all("resource")
        .into_iter()
        .chain(form.all("audience"))
        .collect();
    if !auds.is_empty() {
        attempt.audience = Some(auds.join(" ").chars().take(500).collect());
    }
    attempt.task = form.get("task").map(|t| t.chars().take(128).collect());
    let client = match authenticate(&state, &form, now) {
        Ok(c) => c,
        Err(f) => {
            attempt
                .chain
                .extend(f.claimed.map(|c| c.chars().take(64).collect()));
            return deny(&state, &rid, kind, &attempt, None, f.error).await;
        }
    };
    attempt.chain = vec![client.agent.id.as_str().to_owned()];
    attempt.credential = Some(client.credential.clone());
    let result = match grant_type {
        Some(TOKEN_EXCHANGE) => exchange(&state, &form, &client, now, &mut attempt).await,
        Some("client_credentials") => {
            client_credentials(&state, &form, &client, now, &mut attempt).await
        }
        None => Err(OAuthError::invalid_request("`grant_type` is missing")),
        Some(other) => Err(OAuthError::unsupported_grant_type(format!(
            "grant type `{}` is not supported",
            other.chars().take(80).collect::<String>()
        ))),
    };
    let issued = match result {
        Ok(i) => i,
        Err(e) => return deny(&state, &rid, kind, &attempt, Some(client.use_once()), e).await,
    };
    let mut event = issued.event;
    event.kind = kind.to_owned();
    event.request_id = Some(rid.0.clone());
    let mut ops = vec![client.use_once()];
    ops.extend(issued.new_task.map(Op::EnsureTask));
    ops.push(Op::InsertToken(issued.record));
    ops.push(Op::Audit(event));
    match state.store.commit(ops).await {
        Ok(_) => {}
        Err(StoreError::Replay(_)) => {
            return deny(
                &state,
                &rid,
                kind,
                &attempt,
                None,
                OAuthError::invalid_client("client assertion was already used"),
            )
            .await;
        }
        Err(StoreError::ParentRevoked(_)) => {
            return deny(
                &state,
                &rid,
                kind,
                &attempt,
                None,
                OAuthError::invalid_grant("subject token has been revoked"),
            )
            .await;
        }
        Err(e) => return store_failure(e),
    }
    let c = &issued.claims;
    let mut resp = axum::Json(json!({
        "access_token": issued.token,
        "issued_token_type": issued.issued_token_type,
        "token_type": "Bearer",
        "expires_in": c.exp - now,
        "scope": c.scope,
        "task": c.task,
        "stage": c.stage,
    }))
    .into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// Target audiences from `resource` (RFC 8707) and `audience` (RFC 8693).
fn audiences(state: &AppState, form: &Form) -> Result<Vec<String>, OAuthError> {
    let mut out: Vec<String> = Vec::new();
    for r in form.all("resource") {
        let ok = r.len() <= 512
            && r.split_once("://").is_some_and(|(scheme, rest)| {
                !scheme.is_empty()
                    && scheme
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'-' || b == b'.')
                    && !rest.is_empty()
            })
            && !r.contains('#');
        if !ok {
            return Err(OAuthError::invalid_target(
                "`resource` must be an absolute URI without a fragment (RFC 8707)",
            ));
        }
        out.push(r.to_owned());
    }
    for a in form.all("audience") {
        if a.len() > 512 {
            return Err(OAuthError::invalid_target("`audience` is too long"));
        }
        out.push(a.to_owned());
    }
    if out.is_empty() {
        return Err(OAuthError::invalid_request(
            "`resource` or `audience` is required: name where the token will be used (RFC 8707)",
        ));
    }
    out.sort();
    out.dedup();
    if out.len() > 8 {
        return Err(OAuthError::invalid_target("at most 8 audiences per token"));
    }
    let allowed = &state.config.audiences;
    if !allowed.is_empty()
        && let Some(bad) = out.iter().find(|a| !allowed.contains(a))
    {
        return Err(OAuthError::invalid_target(format!(
            "audience `{}` is not served by this deployment",
            bad.chars().take(100).collect::<String>()
        )));
    }
    Ok(out)
}

struct Common {
    scopes: ScopeSet,
    mode: ScopeMode,
    stage: Option<Stage>,
    ttl: Option<i64>,
    aud: Vec<String>,
}

fn common(state: &AppState, form: &Form) -> Result<Common, OAuthError> {
    let aud = audiences(state, form)?;
    let scopes = ScopeSet::parse_oauth(form.get("scope").unwrap_or_default())
        .map_err(|e| OAuthError::invalid_scope(e.to_string()))?;
    let mode = match form.get("scope_mode") {
        None | Some("strict") => ScopeMode::Strict,
        Some("intersect") => ScopeMode::Intersect,
        Some(_) => {
            return Err(OAuthError::invalid_request(
                "`scope_mode` must be `strict` or `intersect`",
            ));
        }
    };
    let stage = form
        .get("stage")
        .map(|s| s.parse::<Stage>())
        .transpose()
        .map_err(OAuthError::invalid_request)?;
    let ttl = form
        .get("ttl")
        .map(|t| t.parse::<i64>())
        .transpose()
        .map_err(|_| OAuthError::invalid_request("`ttl` must be a whole number of seconds"))?;
    Ok(Common {
        scopes,
        mode,
        stage,
        ttl,
        aud,
    })
}

fn ttl_policy(state: &AppState) -> TtlPolicy {
    let t = &state.config.tokens;
    TtlPolicy {
        default_ttl: t.default_ttl,
        max_ttl: t.max_ttl,
        execute_write_ttl: t.execute_write_ttl,
    }
}

fn task_id(form: &Form) -> Result<Option<TaskId>, OAuthError> {
    form.get("task")
        .map(TaskId::parse)
        .transpose()
        .map_err(|e| OAuthError::invalid_request(e.to_string()))
}

fn generated_task_id() -> Result<TaskId, OAuthError> {
    let id = mandate_token::random_id::<9>().map_err(|_| OAuthError::server_error())?;
    TaskId::parse(&format!("task-{}", id.replace('_', "x"))).map_err(|_| OAuthError::server_error())
}

#[allow(clippy::too_many_arguments)]
fn mint(
    state: &AppState,
    client: &AuthenticatedAgent,
    sub: String,
    sub_profile: SubProfile,
    sub_iss: Option<String>,
    chain: &DelegationChain,
    g: &grant::Grant,
    aud: Vec<String>,
    task: &TaskId,
    parent_jti: Option<String>,
    now: i64,
) -> Result<(String, AccessClaims, TokenRecord), OAuthError> {
    let jti = mandate_token::random_id::<16>().map_err(|_| OAuthError::server_error())?;
    let claims = AccessClaims {
        iss: state.issuer.clone(),
        sub: sub.clone(),
        sub_profile,
        sub_iss: sub_iss.clone(),
        aud: Audience::from_vec(aud.clone()),
        client_id: client.agent.id.as_str().to_owned(),
        iat: now,
        nbf: now,
        exp: g.exp,
        jti: jti.clone(),
        scope: g.scope.to_oauth(),
        act: match sub_profile {
            SubProfile::User => chain.to_act_claim(),
            SubProfile::Agent => None,
        },
        task: task.as_str().to_owned(),
        stage: g.stage,
        credential: client.credential.clone(),
        cnf: None,
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
        sub,
        sub_profile: match sub_profile {
            SubProfile::User => "user".into(),
            SubProfile::Agent => "agent".into(),
        },
        sub_iss,
        chain: chain.agent_ids(),
        credentials: chain
            .actors()
            .iter()
            .map(|a| a.credential.clone())
            .collect(),
        scope: claims.scope.clone(),
        aud,
        stage: g.stage.as_str().to_owned(),
        iat: now,
        exp: g.exp,
        revoked_at: None,
    };
    Ok((token, claims, record))
}

fn allow_event(
    claims: &AccessClaims,
    chain: &DelegationChain,
    g: &grant::Grant,
    state: &AppState,
    parent: Option<&str>,
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
        policy_ids: vec![state.rights.policy_id().to_owned()],
        request_id: None,
        credential: Some(claims.credential.clone()),
        jti: Some(claims.jti.clone()),
        detail: json!({
            "stage": g.stage, "exp": claims.exp, "parent_jti": parent,
            "dropped": g.dropped,
        })
        .to_string(),
    }
}

/// Checks `actor_token`, if sent: it must prove the same agent as the client assertion.
fn check_actor_token(
    state: &AppState,
    form: &Form,
    client: &AuthenticatedAgent,
    now: i64,
) -> Result<(), OAuthError> {
    let Some(actor) = form.get("actor_token") else {
        return Ok(());
    };
    match form.get("actor_token_type") {
        Some(TYPE_JWT) | Some(TYPE_ACCESS_TOKEN) => {}
        _ => {
            return Err(OAuthError::invalid_request(format!(
                "`actor_token_type` must be `{TYPE_JWT}` or `{TYPE_ACCESS_TOKEN}`"
            )));
        }
    }
    let agent = client.agent.id.as_str();
    let checks = ClaimChecks {
        now,
        leeway: state.config.tokens.leeway,
        issuer: None,
        audience: AudCheck::Any,
        typ: None,
        max_lifetime: None,
        require_iat: false,
    };
    let peeked = peek_claims(actor)
        .map_err(|e| OAuthError::invalid_request(format!("actor token refused: {e}")))?;
    let verified = if peeked.get("iss").and_then(Value::as_str) == Some(state.issuer.as_str()) {
        verify(actor, &state.keys.keys().verify, &checks)
    } else {
        verify(actor, &agent_keys(&client.agent, now), &checks)
    }
    .map_err(|e| OAuthError::invalid_request(format!("actor token refused: {e}")))?;
    let sub = verified
        .claims
        .get("sub")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if sub != agent && sub != format!("agent:{agent}") {
        return Err(OAuthError::invalid_request(
            "actor token does not name the agent that authenticated",
        ));
    }
    Ok(())
}

async fn exchange(
    state: &AppState,
    form: &Form,
    client: &AuthenticatedAgent,
    now: i64,
    attempt: &mut Attempt,
) -> Result<Issued, OAuthError> {
    let subject = form
        .get("subject_token")
        .ok_or_else(|| OAuthError::invalid_request("`subject_token` is missing"))?;
    match form.get("subject_token_type") {
        Some(TYPE_JWT) | Some(TYPE_ACCESS_TOKEN) => {}
        None => {
            return Err(OAuthError::invalid_request(
                "`subject_token_type` is missing",
            ));
        }
        Some(_) => {
            return Err(OAuthError::invalid_request(format!(
                "`subject_token_type` must be `{TYPE_JWT}` or `{TYPE_ACCESS_TOKEN}`"
            )));
        }
    }
    check_actor_token(state, form, client, now)?;
    let c = common(state, form)?;
    let requested_task = task_id(form)?;
    let me = Actor {
        agent: client.agent.id.clone(),
        credential: client.credential.clone(),
    };
    let leeway = state.config.tokens.leeway;
    // The path is chosen by what the subject token is: Mandate's own token is a hop.
    let peeked = peek_claims(subject)
        .map_err(|e| OAuthError::invalid_grant(format!("subject token refused: {e}")))?;
    let is_mandate = peeked.get("iss").and_then(Value::as_str) == Some(state.issuer.as_str());
    if is_mandate {
        let live = crate::live::check(state, subject, now)
            .map_err(|e| OAuthError::invalid_grant(format!("subject token refused: {e}")))?;
        let parent = live.claims;
        let parent_chain = live.chain;
        attempt.user = (parent.sub_profile == SubProfile::User).then(|| parent.sub.clone());
        attempt.chain = parent_chain.extended(me.clone()).agent_ids();
        attempt.task = Some(parent.task.clone());
        attempt.parent_jti = Some(parent.jti.clone());
        if parent_chain.contains(&client.agent.id) {
            return Err(OAuthError::invalid_grant(format!(
                "agent `{}` is already in the delegation chain",
                client.agent.id
            )));
        }
        if parent_chain.depth() >= state.config.tokens.max_chain_depth {
            return Err(OAuthError::invalid_grant(format!(
                "delegation chain would exceed the maximum depth of {}",
                state.config.tokens.max_chain_depth
            )));
        }
        if let Some(t) = &requested_task
            && t.as_str() != parent.task
        {
            return Err(OAuthError::invalid_request(format!(
                "`task` `{t}` differs from the subject token's task `{}`",
                parent.task
            )));
        }
        let parent_aud = parent.aud.to_vec();
        if let Some(bad) = c.aud.iter().find(|a| !parent_aud.contains(a)) {
            return Err(OAuthError::invalid_target(format!(
                "audience `{}` is not among the subject token's audiences",
                bad.chars().take(100).collect::<String>()
            )));
        }
        let parent_scopes = parent
            .scopes()
            .map_err(|_| OAuthError::invalid_grant("subject token has a malformed scope"))?;
        let rights = PatternSet(parent_scopes.iter().cloned().map(Into::into).collect());
        let p = Parent {
            scope: parent_scopes,
            stage: parent.stage,
            exp: parent.exp,
        };
        let g = grant::decide(&GrantRequest {
            requested: &c.scopes,
            mode: c.mode,
            rights: &rights,
            ceiling: &client.agent.ceiling,
            max_stage: client.agent.max_stage,
            parent: Some(&p),
            stage: c.stage,
            ttl: c.ttl,
            subject_exp: parent.exp,
            now,
            ttl_policy: ttl_policy(state),
        })
        .map_err(denial)?;
        let chain = parent_chain.extended(me);
        let task = TaskId::parse(&parent.task)
            .map_err(|_| OAuthError::invalid_grant("subject token has a malformed task"))?;
        let (token, claims, record) = mint(
            state,
            client,
            parent.sub.clone(),
            parent.sub_profile,
            parent.sub_iss.clone(),
            &chain,
            &g,
            c.aud,
            &task,
            Some(parent.jti.clone()),
            now,
        )?;
        let event = allow_event(&claims, &chain, &g, state, Some(&parent.jti));
        return Ok(Issued {
            token,
            claims,
            record,
            new_task: None,
            event,
            issued_token_type: TYPE_ACCESS_TOKEN,
        });
    }

    // A user's token from a trusted IdP: the first hop.
    let (user, user_claims) = state
        .idps
        .verify_user(subject, now, leeway)
        .await
        .map_err(|e| OAuthError::invalid_grant(e.to_string()))?;
    attempt.user = Some(user.subject.clone());
    let user_iat = user_claims
        .get("iat")
        .and_then(Value::as_i64)
        .unwrap_or(now);
    let user_exp = user_claims
        .get("exp")
        .and_then(Value::as_i64)
        .unwrap_or(now);
    let chain = DelegationChain::new(vec![me]);
    let task = resolve_task(
        state,
        requested_task,
        client,
        Some(&user),
        form.get("task_purpose"),
        now,
        attempt,
    )
    .await?;
    let facts = TokenFacts {
        jti: "",
        task: task.0.as_str(),
        user: Some(&user.subject),
        chain: &chain,
        iat: user_iat,
    };
    if let Some(r) = state.revocations.with(|idx| idx.check(&facts)) {
        return Err(OAuthError::invalid_grant(format!(
            "{} `{}` has been revoked",
            r.kind.as_str(),
            r.id
        )));
    }
    let rights = state.rights.user_rights(&user);
    let g = grant::decide(&GrantRequest {
        requested: &c.scopes,
        mode: c.mode,
        rights: &rights,
        ceiling: &client.agent.ceiling,
        max_stage: client.agent.max_stage,
        parent: None,
        stage: c.stage,
        ttl: c.ttl,
        subject_exp: user_exp,
        now,
        ttl_policy: ttl_policy(state),
    })
    .map_err(denial)?;
    let (token, claims, record) = mint(
        state,
        client,
        user.subject.clone(),
        SubProfile::User,
        Some(user.issuer.clone()),
        &chain,
        &g,
        c.aud,
        &task.0,
        None,
        now,
    )?;
    let event = allow_event(&claims, &chain, &g, state, None);
    Ok(Issued {
        token,
        claims,
        record,
        new_task: task.1,
        event,
        issued_token_type: TYPE_ACCESS_TOKEN,
    })
}

fn denial(d: grant::GrantDenial) -> OAuthError {
    match d.oauth_error() {
        "invalid_scope" => OAuthError::invalid_scope(d.to_string()),
        "invalid_grant" => OAuthError::invalid_grant(d.to_string()),
        _ => OAuthError::invalid_request(d.to_string()),
    }
}

/// Finds or creates the task for a first hop: an existing task must be active and belong to this
/// agent and user. Returns the id and, when new, the task to create.
async fn resolve_task(
    state: &AppState,
    requested: Option<TaskId>,
    client: &AuthenticatedAgent,
    user: Option<&mandate_core::ids::UserPrincipal>,
    purpose: Option<&str>,
    now: i64,
    attempt: &mut Attempt,
) -> Result<(TaskId, Option<Task>), OAuthError> {
    let id = match requested {
        Some(id) => id,
        None => generated_task_id()?,
    };
    attempt.task = Some(id.as_str().to_owned());
    let existing = state.store.task(id.as_str()).await.map_err(|e| {
        tracing::error!(error = %e, "task lookup failed");
        OAuthError::server_error()
    })?;
    match existing {
        Some(t) => {
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
        None => {
            let task = Task {
                id: id.as_str().to_owned(),
                agent: client.agent.id.as_str().to_owned(),
                user: user.map(|u| u.subject.clone()),
                user_issuer: user.map(|u| u.issuer.clone()),
                purpose: purpose.unwrap_or_default().chars().take(1000).collect(),
                input: String::new(),
                status: TaskStatus::Active,
                created_at: now,
                updated_at: now,
            };
            Ok((id, Some(task)))
        }
    }
}

async fn client_credentials(
    state: &AppState,
    form: &Form,
    client: &AuthenticatedAgent,
    now: i64,
    attempt: &mut Attempt,
) -> Result<Issued, OAuthError> {
    if form.get("subject_token").is_some() {
        return Err(OAuthError::invalid_request(
            "`subject_token` belongs to token exchange, not `client_credentials`",
        ));
    }
    let c = common(state, form)?;
    let requested_task = task_id(form)?;
    let chain = DelegationChain::new(vec![Actor {
        agent: client.agent.id.clone(),
        credential: client.credential.clone(),
    }]);
    let task = resolve_task(
        state,
        requested_task,
        client,
        None,
        form.get("task_purpose"),
        now,
        attempt,
    )
    .await?;
    let facts = TokenFacts {
        jti: "",
        task: task.0.as_str(),
        user: None,
        chain: &chain,
        iat: now,
    };
    if let Some(r) = state.revocations.with(|idx| idx.check(&facts)) {
        return Err(OAuthError::invalid_grant(format!(
            "{} `{}` has been revoked",
            r.kind.as_str(),
            r.id
        )));
    }
    let rights = state.rights.agent_rights(&client.agent.id);
    let g = grant::decide(&GrantRequest {
        requested: &c.scopes,
        mode: c.mode,
        rights: &rights,
        ceiling: &client.agent.ceiling,
        max_stage: client.agent.max_stage,
        parent: None,
        stage: c.stage,
        ttl: c.ttl,
        subject_exp: i64::MAX,
        now,
        ttl_policy: ttl_policy(state),
    })
    .map_err(|d| denial(d).own_rights())?;
    let (token, claims, record) = mint(
        state,
        client,
        client.agent.id.subject(),
        SubProfile::Agent,
        None,
        &chain,
        &g,
        c.aud,
        &task.0,
        None,
        now,
    )?;
    let event = allow_event(&claims, &chain, &g, state, None);
    Ok(Issued {
        token,
        claims,
        record,
        new_task: task.1,
        event,
        issued_token_type: TYPE_ACCESS_TOKEN,
    })
}

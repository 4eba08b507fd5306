//! Token exchange (RFC 8693): a user's token from a trusted IdP (the first hop), or a Mandate
//! token (the next hop of a delegation chain). The path is chosen by what the subject token *is*
//! (its issuer), never by which parameters are present.

use mandate_core::chain::{Actor, DelegationChain};
use mandate_core::claims::SubProfile;
use mandate_core::grant::Parent;
use mandate_core::revocation::TokenFacts;
use mandate_core::scope::PatternSet;
use mandate_token::verify::{AudCheck, ClaimChecks, peek_claims, verify};
use serde_json::Value;

use crate::error::OAuthError;
use crate::oauth::client_auth::{AuthenticatedAgent, agent_keys};
use crate::oauth::form::Form;
use crate::oauth::issue::{
    Issuance, IssuanceRights, Outcome, Subject, issue, refuse_if_revoked, resolve_task,
};
use crate::oauth::request::{self, TokenParams};
use crate::oauth::token::{Attempt, TYPE_ACCESS_TOKEN, TYPE_JWT};
use crate::policy::{PolicyRights, Who, carried_tags, claim_tags};
use crate::state::AppState;
use mandate_core::ids::TaskId;
use mandate_policy::{
    DecisionContext, Principal, Request as PolicyRequest, Subject as PolicySubject,
};

/// Handles `grant_type=urn:ietf:params:oauth:grant-type:token-exchange`.
pub async fn exchange(
    state: &AppState,
    form: &Form,
    client: &AuthenticatedAgent,
    now: i64,
    attempt: &mut Attempt,
) -> Result<Outcome, OAuthError> {
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
    let params = request::parse(state, form)?;
    let peeked = peek_claims(subject)
        .map_err(|e| OAuthError::invalid_grant(format!("subject token refused: {e}")))?;
    if peeked.get("iss").and_then(Value::as_str) == Some(state.issuer.as_str()) {
        next_hop(state, subject, &params, client, now, attempt)
    } else {
        first_hop(state, subject, &params, client, now, attempt).await
    }
}

/// The Cedar context of an issuance (the stage is set per decision).
pub fn decision_context(
    params: &TokenParams,
    task: &TaskId,
    chain: &DelegationChain,
    now: i64,
) -> DecisionContext {
    DecisionContext {
        stage: params.stage.unwrap_or(mandate_core::stage::Stage::Observe),
        task: task.as_str().to_owned(),
        purpose: params.purpose.clone().unwrap_or_default(),
        delegation_depth: i64::try_from(chain.depth()).unwrap_or(i64::MAX),
        chain: chain.agent_ids(),
        now,
        usage: mandate_policy::Usage::default(),
    }
}

fn me(client: &AuthenticatedAgent) -> Actor {
    Actor {
        agent: client.agent.id.clone(),
        credential: client.credential.clone(),
    }
}

/// A user's token from a trusted identity provider.
async fn first_hop(
    state: &AppState,
    subject: &str,
    params: &TokenParams,
    client: &AuthenticatedAgent,
    now: i64,
    attempt: &mut Attempt,
) -> Result<Outcome, OAuthError> {
    let (user, user_claims) = state
        .idps
        .verify_user(subject, now, state.config.tokens.leeway)
        .await
        .map_err(|e| OAuthError::invalid_grant(e.to_string()))?;
    attempt.user = Some(user.subject.clone());
    if let Err(wait) = state.user_limit.check(&user.subject, state.clock.now_ms()) {
        return Err(OAuthError::slow_down(
            format!(
                "too many tokens for user `{}`; retry in {wait} s",
                user.subject
            ),
            wait,
        ));
    }
    // Without `iat` (or `nbf`) the token's age is unknown: a user revocation then applies to it.
    let user_iat = ["iat", "nbf"]
        .iter()
        .find_map(|c| user_claims.get(*c).and_then(Value::as_i64))
        .unwrap_or(i64::MIN);
    let user_exp = user_claims
        .get("exp")
        .and_then(Value::as_i64)
        .unwrap_or(now);
    let chain = DelegationChain::new(vec![me(client)]);
    let task = resolve_task(state, params, client, Some(&user), now, attempt).await?;
    // A user revoked after their IdP token was issued cannot use that token any more.
    refuse_if_revoked(
        state,
        &TokenFacts {
            jti: "",
            task: task.0.as_str(),
            user: Some(&user.subject),
            chain: &chain,
            iat: user_iat,
        },
    )?;
    let tags = claim_tags(&user_claims);
    let context = decision_context(params, &task.0, &chain, now);
    let rights = IssuanceRights::Policy(
        PolicyRights::new(
            state.policy.engine(),
            Who::User(&user, &tags),
            &params.aud,
            context,
        )
        .with_usage(&state.usage),
    );
    let issuance = Issuance {
        subject: Subject {
            sub: user.subject.clone(),
            profile: SubProfile::User,
            issuer: Some(user.issuer.clone()),
            groups: user.groups.clone(),
            user_tags: carried_tags(&tags, &state.config.tokens.carry_claims),
        },
        chain,
        rights,
        parent: None,
        subject_exp: user_exp,
        subject_iat: user_iat,
        task,
    };
    issue(state, client, params, issuance, now)
}

/// A Mandate token: the next hop of a chain. Every earlier hop bounds this one.
fn next_hop(
    state: &AppState,
    subject: &str,
    params: &TokenParams,
    client: &AuthenticatedAgent,
    now: i64,
    attempt: &mut Attempt,
) -> Result<Outcome, OAuthError> {
    let live = crate::live::check(state, subject, now)
        .map_err(|e| OAuthError::invalid_grant(format!("subject token refused: {e}")))?;
    let parent = live.claims;
    let chain = live.chain.extended(me(client));
    attempt.user = (parent.sub_profile == SubProfile::User).then(|| parent.sub.clone());
    attempt.chain = chain.agent_ids();
    attempt.task = Some(parent.task.clone());
    attempt.parent_jti = Some(parent.jti.clone());
    if parent.sub_profile == SubProfile::User
        && let Err(wait) = state.user_limit.check(&parent.sub, state.clock.now_ms())
    {
        return Err(OAuthError::slow_down(
            format!(
                "too many tokens for user `{}`; retry in {wait} s",
                parent.sub
            ),
            wait,
        ));
    }
    // Token exchange acts for a user. An agent's own token (client credentials) names no user
    // and carries no `act`, so a token derived from it could not name its new holder: refuse.
    if parent.sub_profile != SubProfile::User {
        return Err(OAuthError::invalid_grant(
            "the subject token is an agent's own token (client credentials); only tokens that act for a user can be exchanged",
        ));
    }
    if live.chain.contains(&client.agent.id) {
        return Err(OAuthError::invalid_grant(format!(
            "agent `{}` is already in the delegation chain",
            client.agent.id
        )));
    }
    let max_depth = state.config.tokens.max_chain_depth;
    if chain.depth() > max_depth {
        return Err(OAuthError::invalid_grant(format!(
            "delegation chain would exceed the maximum depth of {max_depth}"
        )));
    }
    if let Some(t) = &params.task
        && t.as_str() != parent.task
    {
        return Err(OAuthError::invalid_request(format!(
            "`task` `{t}` differs from the subject token's task `{}`",
            parent.task
        )));
    }
    let parent_scopes = parent
        .scopes()
        .map_err(|_| OAuthError::invalid_grant("subject token has a malformed scope"))?;
    let task = mandate_core::ids::TaskId::parse(&parent.task)
        .map_err(|_| OAuthError::invalid_grant("subject token has a malformed task"))?;
    // Who may hand the delegation on to whom is a policy decision.
    let from_id = live.chain.current().map(|a| a.agent.clone());
    let from = from_id
        .as_ref()
        .and_then(|id| state.directory.get(id.as_str()))
        .ok_or_else(|| OAuthError::invalid_grant("the subject token names no current agent"))?;
    let delegation = state.policy.engine().decide(&PolicyRequest {
        principal: Principal::Agent(&from),
        subject: PolicySubject::Delegate { to: &client.agent },
        context: &decision_context(params, &task, &chain, now),
    });
    if !delegation.allowed {
        let why = if delegation.policies.is_empty() {
            "no policy permits it".to_owned()
        } else {
            format!("forbidden by {}", delegation.policies.join(", "))
        };
        return Err(OAuthError::invalid_grant(format!(
            "agent `{}` may not delegate to agent `{}`: {why}",
            from.id, client.agent.id
        )));
    }
    // The user's rights were applied at the first hop; the parent's scopes already hold them.
    let rights = IssuanceRights::Parent {
        scopes: PatternSet(parent_scopes.iter().cloned().map(Into::into).collect()),
        policy_ids: delegation.policies,
    };
    let issuance = Issuance {
        subject: Subject {
            sub: parent.sub.clone(),
            profile: parent.sub_profile,
            issuer: parent.sub_iss.clone(),
            // A later hop never adds to what the first hop carried.
            groups: parent.groups.clone(),
            user_tags: parent.user_tags.clone(),
        },
        chain,
        rights,
        parent: Some((
            Parent {
                scope: parent_scopes,
                stage: parent.stage,
                exp: parent.exp,
                aud: parent.aud.to_vec(),
            },
            parent.jti.clone(),
        )),
        subject_exp: parent.exp,
        subject_iat: parent.iat,
        task: (task, None),
    };
    issue(state, client, params, issuance, now)
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

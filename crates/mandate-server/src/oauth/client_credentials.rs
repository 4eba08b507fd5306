//! `client_credentials`: an agent's own, autonomous work. The token has `sub = agent:<id>`, no
//! `act`, and a scope within the agent's ceiling and its own rights; it is bound to a task like
//! any other.

use mandate_core::chain::{Actor, DelegationChain};
use mandate_core::claims::SubProfile;
use mandate_core::revocation::TokenFacts;

use crate::error::OAuthError;
use crate::oauth::client_auth::AuthenticatedAgent;
use crate::oauth::exchange::decision_context;
use crate::oauth::form::Form;
use crate::oauth::issue::{
    Issuance, IssuanceRights, Outcome, Subject, issue, refuse_if_revoked, resolve_task,
};
use crate::oauth::request;
use crate::oauth::token::Attempt;
use crate::policy::{PolicyRights, Who};
use crate::state::AppState;

/// Handles `grant_type=client_credentials`.
pub async fn client_credentials(
    state: &AppState,
    form: &Form,
    client: &AuthenticatedAgent,
    now: i64,
    attempt: &mut Attempt,
) -> Result<Outcome, OAuthError> {
    if form.get("subject_token").is_some() {
        return Err(OAuthError::invalid_request(
            "`subject_token` belongs to token exchange, not `client_credentials`",
        ));
    }
    let params = request::parse(state, form)?;
    let chain = DelegationChain::new(vec![Actor {
        agent: client.agent.id.clone(),
        credential: client.credential.clone(),
    }]);
    let task = resolve_task(state, &params, client, None, now, attempt).await?;
    refuse_if_revoked(
        state,
        &TokenFacts {
            jti: "",
            task: task.0.as_str(),
            user: None,
            chain: &chain,
            iat: now,
        },
    )?;
    let context = decision_context(&params, &task.0, &chain, now);
    let rights = IssuanceRights::Policy(
        PolicyRights::new(
            state.policy.engine(),
            Who::Agent(&client.agent),
            &params.aud,
            context,
        )
        .with_usage(&state.usage),
    );
    let issuance = Issuance {
        subject: Subject {
            sub: client.agent.id.subject(),
            profile: SubProfile::Agent,
            issuer: None,
            groups: Vec::new(),
            user_tags: Default::default(),
        },
        chain,
        rights,
        parent: None,
        subject_exp: i64::MAX,
        subject_iat: now,
        task,
    };
    issue(state, client, &params, issuance, now)
}

//! Agent client authentication: `private_key_jwt` client assertions (RFC 7523 §2.2, RFC 7521).
//!
//! `iss` = `sub` = the agent id, `aud` = Mandate's issuer or token endpoint, `exp` at most a few
//! minutes ahead, `jti` single-use (the caller burns it in the same commit as its answer, see
//! [`AuthenticatedAgent::use_once`]). The assertion must be signed by a key registered for the
//! agent, with that key's algorithm. No static client secrets exist for agents.

use std::sync::Arc;

use mandate_core::agent::{Agent, AgentStatus};
use mandate_core::ids::AgentId;
use mandate_store::Op;
use mandate_token::verify::{AudCheck, ClaimChecks, VerifyingKey, peek_claims, verify};
use mandate_token::{KeySet, VerifyError};
use serde_json::Value;

use crate::error::OAuthError;
use crate::oauth::form::Form;
use crate::state::AppState;

/// `client_assertion_type` for private_key_jwt.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// `client_assertion_type` for SPIFFE JWT-SVIDs.
pub const JWT_SPIFFE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-spiffe";

/// An agent that proved itself for this request.
#[derive(Debug, Clone)]
pub struct AuthenticatedAgent {
    /// The agent.
    pub agent: Arc<Agent>,
    /// What proved it: `kid:<kid>`.
    pub credential: String,
    /// The assertion's `jti`.
    pub assertion_jti: String,
    /// The assertion's `exp`.
    pub assertion_exp: i64,
    /// The thumbprint of the key this request proved possession of with a DPoP proof (set by
    /// the token endpoint after [`authenticate`]): the issued token is bound to it (`cnf.jkt`).
    pub dpop_jkt: Option<String>,
}

impl AuthenticatedAgent {
    /// The op that burns the assertion's `jti`; include it in the request's commit.
    pub fn use_once(&self) -> Op {
        Op::UseOnce {
            key: format!("assertion|{}|{}", self.agent.id, self.assertion_jti),
            exp: self.assertion_exp,
        }
    }
}

/// A failed authentication: the error, and the agent id the assertion claimed (for audit).
#[derive(Debug, Clone)]
pub struct AuthFailure {
    /// What to answer.
    pub error: OAuthError,
    /// The agent the request claimed to be, when it could be read.
    pub claimed: Option<String>,
}

fn fail(claimed: Option<&str>, error: OAuthError) -> AuthFailure {
    AuthFailure {
        error,
        claimed: claimed.map(str::to_owned),
    }
}

/// The public keys of `agent` usable at `now`.
pub fn agent_keys(agent: &Agent, now: i64) -> KeySet {
    KeySet::new(
        agent
            .keys
            .iter()
            .filter(|k| k.usable_at(now))
            .filter_map(|k| VerifyingKey::from_jwk(&k.jwk).ok())
            .collect(),
    )
}

/// Authenticates the agent making a request to the token, introspection or revocation endpoint.
pub fn authenticate(
    state: &AppState,
    form: &Form,
    now: i64,
) -> Result<AuthenticatedAgent, AuthFailure> {
    let client_id = form.get("client_id");
    let Some(kind) = form.get("client_assertion_type") else {
        return Err(fail(
            client_id,
            OAuthError::invalid_client(
                "client authentication required: send `client_assertion_type` and `client_assertion` (private_key_jwt)",
            ),
        ));
    };
    if kind == JWT_SPIFFE {
        return Err(fail(
            client_id,
            OAuthError::invalid_client("no SPIFFE trust domain is configured"),
        ));
    }
    if kind != JWT_BEARER {
        return Err(fail(
            client_id,
            OAuthError::invalid_client(format!("`client_assertion_type` must be `{JWT_BEARER}`")),
        ));
    }
    let Some(assertion) = form.get("client_assertion") else {
        return Err(fail(
            client_id,
            OAuthError::invalid_client("`client_assertion` is missing"),
        ));
    };
    let peeked = peek_claims(assertion).map_err(|e| {
        fail(
            client_id,
            OAuthError::invalid_client(format!("client assertion refused: {e}")),
        )
    })?;
    let iss = peeked
        .get("iss")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let claimed = Some(iss).filter(|s| !s.is_empty()).or(client_id);
    let Ok(agent_id) = AgentId::parse(iss) else {
        return Err(fail(
            claimed,
            OAuthError::invalid_client("client assertion `iss` must be a registered agent id"),
        ));
    };
    if client_id.is_some_and(|c| c != iss) {
        return Err(fail(
            claimed,
            OAuthError::invalid_client("`client_id` does not match the client assertion's `iss`"),
        ));
    }
    let Some(agent) = state.directory.get(agent_id.as_str()) else {
        return Err(fail(
            claimed,
            OAuthError::invalid_client(format!("agent `{agent_id}` is not registered")),
        ));
    };
    if agent.status != AgentStatus::Active {
        return Err(fail(
            claimed,
            OAuthError::invalid_client(format!("agent `{agent_id}` is {}", agent.status.as_str())),
        ));
    }
    let audiences = [state.issuer.clone(), state.token_endpoint()];
    let checks = ClaimChecks {
        now,
        leeway: state.config.tokens.leeway,
        issuer: Some(agent_id.as_str()),
        audience: AudCheck::OneOf(&audiences),
        typ: None,
        max_lifetime: Some(state.config.tokens.assertion_max_lifetime),
        require_iat: false,
    };
    let verified = verify(assertion, &agent_keys(&agent, now), &checks).map_err(|e| {
        let why = match e {
            VerifyError::UnknownKid(kid) => {
                format!("no usable key `{kid}` is registered for agent `{agent_id}`")
            }
            other => other.to_string(),
        };
        fail(
            claimed,
            OAuthError::invalid_client(format!("client assertion refused: {why}")),
        )
    })?;
    let claims = &verified.claims;
    if claims.get("sub").and_then(Value::as_str) != Some(agent_id.as_str()) {
        return Err(fail(
            claimed,
            OAuthError::invalid_client("client assertion `sub` must equal its `iss`"),
        ));
    }
    let jti = claims
        .get("jti")
        .and_then(Value::as_str)
        .filter(|j| !j.is_empty() && j.len() <= 256)
        .ok_or_else(|| {
            fail(
                claimed,
                OAuthError::invalid_client("client assertion has no `jti`"),
            )
        })?;
    let exp = claims.get("exp").and_then(Value::as_i64).unwrap_or(now);
    let kid = verified.header.kid.clone().unwrap_or_else(|| {
        agent
            .keys
            .iter()
            .find(|k| k.usable_at(now))
            .map(|k| k.kid.clone())
            .unwrap_or_default()
    });
    Ok(AuthenticatedAgent {
        agent,
        credential: format!("kid:{kid}"),
        assertion_jti: jti.to_owned(),
        assertion_exp: exp.saturating_add(state.config.tokens.leeway),
        dpop_jkt: None,
    })
}

//! Agent client authentication: `private_key_jwt` client assertions (RFC 7523 §2.2, RFC 7521),
//! and workload identity (SPEC §3, [`crate::oauth::workload`]).
//!
//! `private_key_jwt`: `iss` = `sub` = the agent id, `aud` = Mandate's issuer or token endpoint,
//! `exp` at most a few minutes ahead, `jti` single-use (the caller burns it in the same commit as
//! its answer, see [`AuthenticatedAgent::use_once`]). The assertion must be signed by a key
//! registered for the agent, with that key's algorithm. No static client secrets exist for agents.
//!
//! Workload identity: a SPIFFE JWT-SVID (`client_assertion_type` [`JWT_SPIFFE`]), a
//! `jwt-bearer` assertion whose `iss` is a configured OIDC workload issuer, or an X.509-SVID
//! presented in mutual TLS with no assertion at all (`tls_client_auth`, [`crate::tls`]). The
//! agent is the one `client_id` names (required for OIDC workload tokens; for an SVID, when absent, the one active
//! agent bound to its SPIFFE ID), and one of its `workloads` bindings must match. These tokens
//! are reused for their lifetime by design, so they are not single-use.

use std::sync::Arc;

use crate::oauth::workload::Proven;
use mandate_core::agent::{Agent, AgentStatus};
use mandate_core::ids::AgentId;
use mandate_store::Op;
use mandate_token::verify::{AudCheck, ClaimChecks, VerifyingKey, peek_claims, verify};
use mandate_token::{KeySet, VerifyError};
use serde_json::Value;

use crate::error::OAuthError;
use crate::oauth::form::Form;
use crate::state::AppState;
use crate::tls::ClientCertificates;

/// `client_assertion_type` for private_key_jwt.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// `client_assertion_type` for SPIFFE JWT-SVIDs.
pub const JWT_SPIFFE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-spiffe";

/// An agent that proved itself for this request.
#[derive(Debug, Clone)]
pub struct AuthenticatedAgent {
    /// The agent.
    pub agent: Arc<Agent>,
    /// What proved it: `kid:<kid>` (a registered key), `spiffe:<SPIFFE ID>` (a JWT- or
    /// X.509-SVID) or `oidc:<iss>#<sub>` (an OIDC workload token).
    pub credential: String,
    /// The assertion's `jti`, burned by [`AuthenticatedAgent::use_once`]; `None` for a workload
    /// identity, which is reused for its lifetime by design.
    pub assertion_jti: Option<String>,
    /// The assertion's `exp`.
    pub assertion_exp: i64,
    /// The thumbprint of the key this request proved possession of with a DPoP proof (set by
    /// the token endpoint after [`authenticate`]): the issued token is bound to it (`cnf.jkt`).
    pub dpop_jkt: Option<String>,
}

impl AuthenticatedAgent {
    /// The op that burns the assertion's `jti`; include it in the request's commit. `None` for
    /// a workload identity (an SVID or workload token is not single-use).
    pub fn use_once(&self) -> Option<Op> {
        self.assertion_jti.as_ref().map(|jti| Op::UseOnce {
            key: format!("assertion|{}|{jti}", self.agent.id),
            exp: self.assertion_exp,
        })
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
///
/// `certs` are the client's certificates from a mutual-TLS handshake (already verified as
/// X.509-SVIDs of a configured trust domain, see [`crate::tls`]): they prove the agent when the
/// request sends no client assertion (`tls_client_auth`, RFC 8705 §2.1).
pub async fn authenticate(
    state: &AppState,
    form: &Form,
    certs: Option<&ClientCertificates>,
    now: i64,
) -> Result<AuthenticatedAgent, AuthFailure> {
    let client_id = form.get("client_id");
    let Some(kind) = form.get("client_assertion_type") else {
        if form.get("client_assertion").is_none()
            && let Some(leaf) = certs.and_then(ClientCertificates::leaf)
        {
            let id = crate::tls::spiffe_id(leaf)
                .map_err(|e| fail(client_id, OAuthError::invalid_client(e)))?;
            return bind_workload(state, client_id, Proven::Spiffe { id }, false);
        }
        return Err(fail(
            client_id,
            OAuthError::invalid_client(
                "client authentication required: send `client_assertion_type` and `client_assertion` (private_key_jwt, or a workload identity), or present an X.509-SVID in mutual TLS",
            ),
        ));
    };
    if kind != JWT_BEARER && kind != JWT_SPIFFE {
        return Err(fail(
            client_id,
            OAuthError::invalid_client(format!(
                "`client_assertion_type` must be `{JWT_BEARER}` or `{JWT_SPIFFE}`"
            )),
        ));
    }
    let Some(assertion) = form.get("client_assertion") else {
        return Err(fail(
            client_id,
            OAuthError::invalid_client("`client_assertion` is missing"),
        ));
    };
    let audiences = [state.issuer.clone(), state.token_endpoint()];
    let leeway = state.config.tokens.leeway;
    if kind == JWT_SPIFFE {
        if !state.workloads.has_trust_domains() {
            return Err(fail(
                client_id,
                OAuthError::invalid_client("no SPIFFE trust domain is configured"),
            ));
        }
        let proven = state
            .workloads
            .verify_svid(assertion, now, leeway, &audiences)
            .await
            .map_err(|e| fail(client_id, OAuthError::invalid_client(e)))?;
        return bind_workload(state, client_id, proven, false);
    }
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
    if state.workloads.is_oidc_issuer(iss) {
        let proven = state
            .workloads
            .verify_oidc(assertion, iss, now, leeway, &audiences)
            .await
            .map_err(|e| fail(client_id, OAuthError::invalid_client(e)))?;
        return bind_workload(state, client_id, proven, true);
    }
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
    let checks = ClaimChecks {
        now,
        leeway,
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
        assertion_jti: Some(jti.to_owned()),
        assertion_exp: exp.saturating_add(state.config.tokens.leeway),
        dpop_jkt: None,
    })
}

/// The agent a verified workload identity proves: the one `client_id` names (required when
/// `client_id_required`), or else the one active agent bound to it; one of its bindings must
/// match.
fn bind_workload(
    state: &AppState,
    client_id: Option<&str>,
    proven: Proven,
    client_id_required: bool,
) -> Result<AuthenticatedAgent, AuthFailure> {
    let who = proven.describe();
    let agent = match client_id {
        Some(id) => {
            let shown: String = id.chars().take(64).collect();
            let Some(agent) = state.directory.get(id) else {
                return Err(fail(
                    client_id,
                    OAuthError::invalid_client(format!("agent `{shown}` is not registered")),
                ));
            };
            if !agent.workloads.iter().any(|b| proven.matches(b)) {
                return Err(fail(
                    client_id,
                    OAuthError::invalid_client(format!("{who} is not bound to agent `{shown}`")),
                ));
            }
            if agent.status != AgentStatus::Active {
                return Err(fail(
                    client_id,
                    OAuthError::invalid_client(format!(
                        "agent `{shown}` is {}",
                        agent.status.as_str()
                    )),
                ));
            }
            agent
        }
        None if client_id_required => {
            return Err(fail(
                None,
                OAuthError::invalid_client(format!(
                    "send `client_id` naming the agent that {who} proves"
                )),
            ));
        }
        None => {
            let mut bound = state.directory.all().into_iter().filter(|a| {
                a.status == AgentStatus::Active && a.workloads.iter().any(|b| proven.matches(b))
            });
            match (bound.next(), bound.next()) {
                (Some(agent), None) => agent,
                (None, _) => {
                    return Err(fail(
                        None,
                        OAuthError::invalid_client(format!("no active agent is bound to {who}")),
                    ));
                }
                (Some(_), Some(_)) => {
                    return Err(fail(
                        None,
                        OAuthError::invalid_client(format!(
                            "several agents are bound to {who}: send `client_id` naming one"
                        )),
                    ));
                }
            }
        }
    };
    Ok(AuthenticatedAgent {
        agent,
        credential: proven.credential(),
        assertion_jti: None,
        assertion_exp: 0,
        dpop_jkt: None,
    })
}
